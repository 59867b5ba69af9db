"""``digits_scene``: scikit-learn digits placed in a larger canvas, with a ground-truth box per image.

An offline localisation benchmark for class activation maps. CAM localisation
(Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR
2016) needs a box per image; ``digits`` fills its whole frame, so a box there
says nothing. Here each image holds its digit at a random position and scale,
and with probability ``distractor_prob`` a faint digit of *another* class,
placed to overlap the true digit's box as little as possible: a place where a
negative CAM (the map of a class that is not the label) can peak for a reason
that is known, which is what the negative-CAM statistics are meant to detect.

The train/test split is the one of ``digits`` (stratified, ``split_seed``), and
distractors are drawn from the same split, so no test digit appears in a
training image. The scenes are a pure function of the options, ``seed`` and the
split (a ``numpy.random.Generator`` seeded from both; global RNG is never used).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustcam.data.base import SPLITS, DatasetInfo, TensorImageDataset, channel_stats
from robustcam.data.digits import DIGIT_CLASS_NAMES, digit_images, digits_split
from robustcam.data.registry import register_dataset
from robustcam.errors import InputError

# The 8x8 source digits are bilinearly resized; anything below this size loses the strokes.
MIN_DIGIT_SIDE = 6


class DigitScenes(NamedTuple):
    """Rendered scenes of one split.

    images: float (N, 1, canvas, canvas) in [0, 1].
    targets: (N,) long, the class of the true digit.
    boxes: float (N, 4), the tight box ``(x0, y0, x1, y1)`` of the true digit's ink
        (pixels > 0), pixel coordinates, exclusive upper corner.
    distractor_classes: (N,) long, the distractor's class, -1 where there is none.
    distractor_boxes: float (N, 4), the distractor's ink box, all -1 where there is none.
    """

    images: Tensor
    targets: Tensor
    boxes: Tensor
    distractor_classes: Tensor
    distractor_boxes: Tensor


def _pair(value: float | Sequence[float], argument: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    numbers = isinstance(value, Sequence) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if numbers and not isinstance(value, str) and len(value) == 2:
        low, high = (float(v) for v in value)
        return low, high
    raise InputError(f"{argument} must be a number or a (low, high) pair, got {value!r}")


def ink_box(pixels: np.ndarray) -> np.ndarray:
    """The tight box ``(x0, y0, x1, y1)`` of the nonzero pixels of a 2-D image (exclusive x1, y1)."""
    rows = np.flatnonzero(pixels.any(axis=1))
    cols = np.flatnonzero(pixels.any(axis=0))
    if len(rows) == 0:
        raise ValueError("image has no ink")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])


class _ResizedDigits:
    """Digits resized to a side length on first use (bilinear, as ``digit_images``), with their ink boxes."""

    def __init__(self, small: Tensor) -> None:
        self.small = small
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, index: int, side: int) -> tuple[np.ndarray, np.ndarray]:
        key = (index, side)
        if key not in self._cache:
            resized = F.interpolate(
                self.small[index : index + 1], size=(side, side), mode="bilinear", align_corners=False
            )
            pixels = resized[0, 0].clamp_(0.0, 1.0).numpy()
            self._cache[key] = (pixels, ink_box(pixels))
        return self._cache[key]


def _least_overlap_position(
    rng: np.random.Generator, canvas: int, side: int, box: np.ndarray, avoid: np.ndarray
) -> tuple[int, int]:
    """A top-left corner for a ``side``-pixel digit whose ink ``box`` overlaps ``avoid`` least (ties at random)."""
    offsets = np.arange(canvas - side + 1)
    # Overlap of the ink's x-extent and y-extent with the box to avoid, for every offset.
    overlap_x = np.clip(np.minimum(offsets + box[2], avoid[2]) - np.maximum(offsets + box[0], avoid[0]), 0, None)
    overlap_y = np.clip(np.minimum(offsets + box[3], avoid[3]) - np.maximum(offsets + box[1], avoid[1]), 0, None)
    area = overlap_y[:, None] * overlap_x[None, :]
    candidates = np.argwhere(area == area.min())
    y, x = candidates[rng.integers(len(candidates))]
    return int(x), int(y)


def render_digit_scenes(
    split: str,
    *,
    canvas: int = 48,
    digit_size: int | Sequence[int] = (14, 28),
    distractor: bool = True,
    distractor_prob: float = 0.5,
    distractor_intensity: float | Sequence[float] = (0.3, 0.5),
    seed: int = 0,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> DigitScenes:
    """Render split ``split`` of ``digits_scene`` (see the module docstring).

    Args:
        canvas: side of the square image in pixels.
        digit_size: side of the true digit's (square) frame, an int or an inclusive
            (low, high) range drawn uniformly per image; the distractor uses the same range.
        distractor: whether to add distractors at all.
        distractor_prob: probability that an image gets a distractor.
        distractor_intensity: the distractor's pixels are scaled by a factor drawn
            uniformly from this (low, high) range (the true digit is at full intensity).
        seed: seeds the placement; the generator is seeded from ``(seed, split)``.
        test_fraction, split_seed: the ``digits`` split.

    The two digits are combined with a pixel-wise max, so the true digit keeps its
    full intensity where they touch.

    Example: ``render_digit_scenes("test", canvas=48).boxes[0]`` -> ``tensor([x0, y0, x1, y1])``.
    """
    sizes, intensities = _checked_options(
        split,
        canvas=canvas,
        digit_size=digit_size,
        distractor_prob=distractor_prob,
        distractor_intensity=distractor_intensity,
        seed=seed,
    )
    small, labels = digit_images(8)  # the untouched 8x8 originals, scaled to [0, 1]
    train_idx, test_idx = digits_split(test_fraction, split_seed)
    pool = train_idx if split == "train" else test_idx
    pool_labels = labels.numpy()[pool]
    by_class = {c: pool[pool_labels == c] for c in range(len(DIGIT_CLASS_NAMES))}
    resized = _ResizedDigits(small)
    rng = np.random.default_rng([seed, SPLITS.index(split)])

    scenes = _SceneArrays.empty(len(pool), canvas)
    for i, (source, label) in enumerate(zip(pool, pool_labels)):
        side = int(rng.integers(sizes[0], sizes[1] + 1))
        pixels, ink = resized(int(source), side)
        x, y = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
        scenes.images[i, y : y + side, x : x + side] = pixels
        scenes.boxes[i] = ink + np.array([x, y, x, y])
        if distractor and rng.random() < distractor_prob:
            _add_distractor(scenes, i, int(label), rng, by_class, resized, sizes=sizes, intensities=intensities)
    return scenes.to_scenes(pool_labels)


def _checked_options(
    split: str,
    *,
    canvas: int,
    digit_size: int | Sequence[int],
    distractor_prob: float,
    distractor_intensity: float | Sequence[float],
    seed: int,
) -> tuple[tuple[int, int], tuple[float, float]]:
    """The checked options of ``render_digit_scenes``: the digit sides and distractor intensities
    as (low, high) ranges; a bad option is an ``InputError`` (a bad split a ``ValueError``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(canvas, int) or isinstance(canvas, bool) or canvas < MIN_DIGIT_SIDE:
        raise InputError(f"canvas must be an int >= {MIN_DIGIT_SIDE}, got {canvas!r}")
    size_low, size_high = _pair(digit_size, "digit_size")
    if not (size_low.is_integer() and size_high.is_integer() and MIN_DIGIT_SIDE <= size_low <= size_high <= canvas):
        raise InputError(
            f"digit_size must be whole numbers with {MIN_DIGIT_SIDE} <= low <= high <= canvas ({canvas}), "
            f"got {digit_size!r}"
        )
    if not 0.0 <= distractor_prob <= 1.0:
        raise InputError(f"distractor_prob must lie in [0, 1], got {distractor_prob!r}")
    intensity_low, intensity_high = _pair(distractor_intensity, "distractor_intensity")
    if not 0.0 < intensity_low <= intensity_high <= 1.0:
        raise InputError(f"distractor_intensity must satisfy 0 < low <= high <= 1, got {distractor_intensity!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    return (int(size_low), int(size_high)), (intensity_low, intensity_high)


class _SceneArrays(NamedTuple):
    """The arrays of ``DigitScenes`` while they are drawn into (see there)."""

    images: np.ndarray
    boxes: np.ndarray
    distractor_classes: np.ndarray
    distractor_boxes: np.ndarray

    @classmethod
    def empty(cls, count: int, canvas: int) -> _SceneArrays:
        return cls(
            np.zeros((count, canvas, canvas), dtype=np.float32),
            np.zeros((count, 4), dtype=np.float32),
            np.full(count, -1, dtype=np.int64),
            np.full((count, 4), -1.0, dtype=np.float32),
        )

    def to_scenes(self, labels: np.ndarray) -> DigitScenes:
        return DigitScenes(
            torch.from_numpy(self.images).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)),
            torch.from_numpy(self.boxes),
            torch.from_numpy(self.distractor_classes),
            torch.from_numpy(self.distractor_boxes),
        )


def _add_distractor(
    scenes: _SceneArrays,
    i: int,
    label: int,
    rng: np.random.Generator,
    by_class: dict[int, np.ndarray],
    resized: _ResizedDigits,
    *,
    sizes: tuple[int, int],
    intensities: tuple[float, float],
) -> None:
    """Draw a faint digit of another class than ``label`` into scene ``i``, where it overlaps the
    true digit's box least; nothing where the split has no other class."""
    other_classes = [c for c in by_class if c != label and len(by_class[c])]
    if not other_classes:
        return
    other = int(rng.choice(other_classes))
    other_source = int(rng.choice(by_class[other]))
    other_side = int(rng.integers(sizes[0], sizes[1] + 1))
    other_pixels, other_ink = resized(other_source, other_side)
    intensity = rng.uniform(intensities[0], intensities[1])
    canvas = scenes.images.shape[1]
    ox, oy = _least_overlap_position(rng, canvas, other_side, other_ink, scenes.boxes[i])
    region = scenes.images[i, oy : oy + other_side, ox : ox + other_side]
    np.maximum(region, intensity * other_pixels, out=region)
    scenes.distractor_classes[i] = other
    scenes.distractor_boxes[i] = other_ink + np.array([ox, oy, ox, oy])


@lru_cache(maxsize=8)
def _train_stats(
    canvas: int,
    digit_size: tuple[float, float],
    distractor: bool,
    distractor_prob: float,
    distractor_intensity: tuple[float, float],
    seed: int,
    test_fraction: float,
    split_seed: int,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Both splits report the training split's statistics, so a model's normalisation does not
    # depend on which split it was built from; cached because the test split needs them too.
    scenes = render_digit_scenes(
        "train",
        canvas=canvas,
        digit_size=(int(digit_size[0]), int(digit_size[1])),
        distractor=distractor,
        distractor_prob=distractor_prob,
        distractor_intensity=distractor_intensity,
        seed=seed,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )
    return channel_stats(scenes.images)


@register_dataset("digits_scene")
def digits_scene(
    split: str,
    *,
    root: Path,
    download: bool = False,
    canvas: int = 48,
    digit_size: int | Sequence[int] = (14, 28),
    distractor: bool = True,
    distractor_prob: float = 0.5,
    distractor_intensity: float | Sequence[float] = (0.3, 0.5),
    seed: int = 0,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> TensorImageDataset:
    """scikit-learn digits at a random position and scale in a ``canvas`` x ``canvas`` image, with boxes.

    ``dataset.boxes`` holds the true digit's ink box; ``extras["distractor_class"]``
    the distractor's class (-1 where none) and ``extras["distractor_boxes"]`` its
    box (all -1 where none). Options as in ``render_digit_scenes``.
    """
    del root, download  # generated from data shipped with scikit-learn
    scenes = render_digit_scenes(
        split,
        canvas=canvas,
        digit_size=digit_size,
        distractor=distractor,
        distractor_prob=distractor_prob,
        distractor_intensity=distractor_intensity,
        seed=seed,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )
    mean, std = _train_stats(
        canvas,
        _pair(digit_size, "digit_size"),
        bool(distractor),
        float(distractor_prob),
        _pair(distractor_intensity, "distractor_intensity"),
        seed,
        float(test_fraction),
        split_seed,
    )
    info = DatasetInfo("digits_scene", 10, DIGIT_CLASS_NAMES, mean, std, (1, canvas, canvas), has_boxes=True)
    return TensorImageDataset(
        scenes.images,
        scenes.targets,
        info,
        boxes=scenes.boxes,
        extras={"distractor_class": scenes.distractor_classes, "distractor_boxes": scenes.distractor_boxes},
    )
