"""``digits``: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), upsampled to 32x32.

The offline default: the images ship with scikit-learn, so nothing is
downloaded. The train/test split is stratified and fixed (``split_seed``), so
every run of every loss sees the same test images.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustcam.data.base import DatasetInfo, TensorImageDataset, channel_stats
from robustcam.data.registry import register_dataset

DIGIT_CLASS_NAMES = tuple(str(d) for d in range(10))


@lru_cache(maxsize=4)
def digits_split(test_fraction: float = 0.2, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) into scikit-learn's digits: stratified, deterministic."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    indices = np.arange(len(labels))
    train, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=split_seed)
    return np.sort(train), np.sort(test)


def digit_images(size: int = 32) -> tuple[Tensor, Tensor]:
    """All 1,797 digits as float (N, 1, size, size) images in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp_(0.0, 1.0), torch.from_numpy(bunch.target.astype(np.int64))


@register_dataset("digits")
def digits(
    split: str,
    *,
    root: Path,
    download: bool = False,
    size: int = 32,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> TensorImageDataset:
    """scikit-learn digits upsampled to ``size`` x ``size`` (bilinear)."""
    del root, download  # shipped with scikit-learn
    images, labels = digit_images(size)
    train_idx, test_idx = digits_split(test_fraction, split_seed)
    mean, std = channel_stats(images[torch.from_numpy(train_idx)])
    info = DatasetInfo("digits", 10, DIGIT_CLASS_NAMES, mean, std, (1, size, size))
    chosen = torch.from_numpy(train_idx if split == "train" else test_idx)
    return TensorImageDataset(images[chosen], labels[chosen], info)
