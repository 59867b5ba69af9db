"""``digits_scene``: placed digits with ground-truth boxes and faint distractors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robustcam.data import TensorImageDataset, load_dataset, render_digit_scenes
from robustcam.data.digits_scene import ink_box


def _scene(split: str = "test", **options: Any) -> TensorImageDataset:
    dataset = load_dataset("digits_scene", split, root=Path("unused"), **options)
    assert isinstance(dataset, TensorImageDataset)
    return dataset


def _inside(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size) bool masks of the boxes (x0, y0, x1, y1), exclusive upper corner."""
    coords = torch.arange(size)
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    in_x = (coords >= x0) & (coords < x1)
    in_y = (coords >= y0) & (coords < y1)
    return in_y[:, :, None] & in_x[:, None, :]


def test_shapes_info_and_range() -> None:
    dataset = _scene()
    assert dataset.info.has_boxes and dataset.info.input_shape == (1, 48, 48)
    assert dataset.images.shape == (len(dataset), 1, 48, 48)
    assert dataset.images.min() >= 0.0 and dataset.images.max() <= 1.0
    assert dataset.boxes is not None and dataset.boxes.dtype == torch.float32
    assert dataset.boxes.shape == (len(dataset), 4)
    assert dataset.extras["distractor_class"].shape == (len(dataset),)
    image, label = dataset[0]
    assert image.shape == (1, 48, 48) and 0 <= label < 10


def test_same_seed_same_scenes_other_seed_other_scenes() -> None:
    first, again, other = _scene(seed=0), _scene(seed=0), _scene(seed=1)
    assert torch.equal(first.images, again.images)
    assert first.boxes is not None and again.boxes is not None and other.boxes is not None
    assert torch.equal(first.boxes, again.boxes)
    assert torch.equal(first.extras["distractor_class"], again.extras["distractor_class"])
    assert not torch.equal(first.images, other.images)
    assert not torch.equal(first.boxes, other.boxes)
    assert torch.equal(first.targets, other.targets)  # the seed moves digits, not the split


def test_train_and_test_scenes_differ_but_share_statistics() -> None:
    train, test = _scene("train"), _scene("test")
    assert len(train) > len(test)
    assert train.info == test.info  # normalisation comes from the training split for both


def test_uses_the_digits_split() -> None:
    for split in ("train", "test"):
        plain = load_dataset("digits", split, root=Path("unused"))
        assert torch.equal(_scene(split).targets, plain.targets)


def test_box_is_the_tight_box_of_the_true_digit_ink() -> None:
    dataset = _scene(distractor=False, canvas=40, digit_size=(10, 30))
    assert dataset.boxes is not None
    ink = dataset.images[:, 0] > 0
    inside = _inside(dataset.boxes.long(), 40)
    assert not (ink & ~inside).any()  # no ink outside the box
    for i in range(0, len(dataset), 37):  # and the box is tight
        x0, y0, x1, y1 = (int(v) for v in dataset.boxes[i])
        assert ink[i, y0, x0:x1].any() and ink[i, y1 - 1, x0:x1].any()
        assert ink[i, y0:y1, x0].any() and ink[i, y0:y1, x1 - 1].any()
    assert (dataset.extras["distractor_class"] == -1).all()


def test_true_digit_is_bright_inside_its_box_and_distractor_is_faint() -> None:
    dataset = _scene(distractor_prob=1.0, distractor_intensity=(0.3, 0.5))
    assert dataset.boxes is not None
    images = dataset.images[:, 0]
    inside = _inside(dataset.boxes.long(), 48)
    brightest_inside = torch.where(inside, images, torch.zeros(())).amax(dim=(1, 2))
    brightest_outside = torch.where(inside, torch.zeros(()), images).amax(dim=(1, 2))
    assert (brightest_inside >= 0.75).all()
    assert (brightest_outside <= 0.5 + 1e-6).all()
    # Every image has a distractor, of another class, faint but present outside the true box.
    distractor = dataset.extras["distractor_class"]
    assert (distractor >= 0).all() and (distractor != dataset.targets).all()
    assert (brightest_outside > 0).float().mean() > 0.5


def test_distractor_avoids_the_true_box_when_it_can() -> None:
    dataset = _scene(distractor_prob=1.0, canvas=64, digit_size=(14, 20))
    assert dataset.boxes is not None
    true_boxes, other_boxes = dataset.boxes, dataset.extras["distractor_boxes"]
    overlap_x = torch.minimum(true_boxes[:, 2], other_boxes[:, 2]) - torch.maximum(true_boxes[:, 0], other_boxes[:, 0])
    overlap_y = torch.minimum(true_boxes[:, 3], other_boxes[:, 3]) - torch.maximum(true_boxes[:, 1], other_boxes[:, 1])
    # With a 64-pixel canvas and digits of at most 20 there is always room beside the true digit.
    assert ((overlap_x <= 0) | (overlap_y <= 0)).all()


def test_distractor_probability_and_switch() -> None:
    dataset = _scene("train", distractor_prob=0.5)
    rate = float((dataset.extras["distractor_class"] >= 0).float().mean())
    assert 0.4 < rate < 0.6
    assert (_scene(distractor=False).extras["distractor_class"] == -1).all()
    without = _scene(distractor_prob=0.0)
    assert (without.extras["distractor_boxes"] == -1).all()


def test_render_matches_the_loader() -> None:
    scenes = render_digit_scenes("test", seed=3)
    dataset = _scene(seed=3)
    assert torch.equal(scenes.images, dataset.images)
    assert torch.equal(scenes.distractor_classes, dataset.extras["distractor_class"])


def test_ink_box_is_exclusive_at_the_upper_corner() -> None:
    pixels = np.zeros((6, 7))
    pixels[2, 3] = pixels[4, 5] = 0.1
    assert ink_box(pixels).tolist() == [3, 2, 6, 5]


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"canvas": 3}, "canvas"),
        ({"digit_size": (14, 60)}, "digit_size"),
        ({"digit_size": "big"}, "digit_size"),
        ({"distractor_prob": 1.5}, "distractor_prob"),
        ({"distractor_intensity": (0.0, 0.5)}, "distractor_intensity"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_name_the_argument(options: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        _scene(**options)
