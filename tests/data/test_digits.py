"""``digits``: scikit-learn's digits, upsampled, with a fixed stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from robustcam.data import TensorImageDataset, load_dataset
from robustcam.data.digits import digit_images, digits_split


def test_split_is_stratified_disjoint_and_complete() -> None:
    labels = load_digits().target
    train, test = digits_split(0.2, 0)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert abs(len(test) - 0.2 * len(labels)) <= 1
    overall = np.bincount(labels, minlength=10) / len(labels)
    for part in (train, test):
        share = np.bincount(labels[part], minlength=10) / len(part)
        # Stratified: each class's share matches the whole set to within one image.
        assert np.all(np.abs(share - overall) <= 1.0 / len(part) + 1e-9)


def test_split_is_deterministic_and_moves_with_the_seed() -> None:
    assert np.array_equal(digits_split(0.2, 0)[1], digits_split(0.2, 0)[1])
    assert not np.array_equal(digits_split(0.2, 0)[1], digits_split(0.2, 1)[1])


def test_images_are_the_upsampled_digits() -> None:
    small, labels = digit_images(8)
    original = load_digits()
    torch.testing.assert_close(small[:, 0], torch.from_numpy(original.images).float() / 16.0)
    assert labels.tolist() == original.target.tolist()


def test_loader_shapes_range_and_split() -> None:
    train = load_dataset("digits", "train", root=Path("unused"), size=16)
    test = load_dataset("digits", "test", root=Path("unused"), size=16)
    assert isinstance(train, TensorImageDataset) and isinstance(test, TensorImageDataset)
    assert train.images.shape[1:] == (1, 16, 16) and train.info.input_shape == (1, 16, 16)
    assert len(train) + len(test) == 1797
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.info.class_names == tuple(str(d) for d in range(10))
    assert not train.info.has_boxes and train.boxes is None
