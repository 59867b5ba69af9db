"""Dataset value types shared by every loader.

Every dataset yields float images in [0, 1] of shape (C, H, W) and integer
labels, and carries a ``DatasetInfo`` (class count and names, the per-channel
mean/std the model will normalise with, the input shape). Images cross module
boundaries in pixel space; normalisation lives in the model.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from robustcam.errors import InputError

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    has_boxes: bool = False

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "input_shape": list(self.input_shape),
            "has_boxes": self.has_boxes,
        }


def check_pixel_range(images: Tensor, *, what: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is floating point and inside [0, 1]."""
    if not images.is_floating_point():
        raise ValueError(f"{what} must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.numel() == 0:
        return
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{what} must lie in [0, 1] (pixel units; normalisation lives in the model), "
            f"got values in [{low:.4g}, {high:.4g}]"
        )


def check_label_range(labels: Tensor, num_classes: int, *, source: str) -> None:
    """Raise ``InputError`` naming ``source`` and the first label outside [0, num_classes)."""
    outside = (labels < 0) | (labels >= num_classes)
    if labels.numel() and bool(outside.any()):
        position = int(outside.nonzero()[0, 0])
        raise InputError(
            f"{source}: label {int(labels[position])} at position {position} is outside [0, {num_classes - 1}] "
            f"for {num_classes} classes"
        )


class ImageDataset(Dataset[tuple[Tensor, int]], ABC):
    """Base class: ``dataset[i] -> (image (C, H, W) float in [0, 1], label)``.

    Attributes:
        info: the dataset's ``DatasetInfo``.
        targets: (N,) long tensor of labels (what ``__getitem__`` returns).
        boxes: optional (N, 4) float tensor of ground-truth boxes ``(x0, y0, x1, y1)``
            in pixel coordinates, exclusive upper corner (for CAM localisation).
        extras: per-sample side information, e.g. CIFAR-100's ``coarse_targets``.
    """

    info: DatasetInfo
    targets: Tensor
    boxes: Tensor | None
    extras: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.targets.numel())

    @abstractmethod
    def image(self, index: int) -> Tensor:
        """Image ``index`` as a float (C, H, W) tensor in [0, 1]."""

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.image(index), int(self.targets[index])

    def with_targets(self, targets: Tensor | Sequence[int]) -> ImageDataset:
        """The same images with other labels (a per-sample label override, e.g. noisy labels)."""
        new_targets = torch.as_tensor(targets, dtype=torch.long)
        if new_targets.shape != self.targets.shape:
            raise InputError(
                f"label override has shape {tuple(new_targets.shape)}, dataset has {tuple(self.targets.shape)}"
            )
        check_label_range(new_targets, self.info.num_classes, source=f"label override for {self.info.name}")
        clone = copy_dataset(self)
        clone.targets = new_targets
        return clone


def copy_dataset(dataset: ImageDataset) -> ImageDataset:
    clone = object.__new__(type(dataset))
    clone.__dict__.update(dataset.__dict__)
    return clone


class TensorImageDataset(ImageDataset):
    """An in-memory dataset: images stored as uint8 (0..255) or float ([0, 1]) tensors."""

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        info: DatasetInfo,
        *,
        boxes: Tensor | None = None,
        extras: dict[str, Tensor] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if images.shape[0] != targets.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.shape[0]} labels")
        if images.dtype != torch.uint8:
            check_pixel_range(images, what=f"{info.name} images")
        self.images = images
        self.targets = targets.long()
        self.info = info
        self.boxes = boxes
        self.extras = dict(extras or {})

    def image(self, index: int) -> Tensor:
        return self.batch(torch.tensor([index]))[0]

    def batch(self, indices: Tensor) -> Tensor:
        """Images at ``indices`` as one float (N, C, H, W) tensor in [0, 1]."""
        images = self.images[indices]
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.float()


def default_data_root() -> Path:
    """``$ROBUSTCAM_DATA`` if set, else ``~/.robustcam/data``."""
    env = os.environ.get("ROBUSTCAM_DATA")
    return Path(env).expanduser() if env else Path.home() / ".robustcam" / "data"


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of float images (N, C, H, W) in [0, 1]."""
    flat = images.float().transpose(0, 1).reshape(images.shape[1], -1)
    if images.dtype == torch.uint8:
        flat = flat / 255.0
    std = flat.std(dim=1).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in flat.mean(dim=1)), tuple(round(float(v), 6) for v in std)
