"""Stream a dataset as batches of (images, labels, indices).

In-memory datasets are sliced directly (no per-item Python overhead); other
datasets go through a ``DataLoader`` with the same sample order. Either way
only one batch of images is materialised at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robustcam.data.base import ImageDataset, TensorImageDataset


class Batch(NamedTuple):
    images: Tensor  # (B, C, H, W) float in [0, 1]
    labels: Tensor  # (B,) long
    indices: Tensor  # (B,) long: positions in the dataset


class _Indexed(Dataset[tuple[Tensor, int, int]]):
    def __init__(self, dataset: ImageDataset, order: Tensor) -> None:
        self.dataset = dataset
        self.order = order

    def __len__(self) -> int:
        return int(self.order.numel())

    def __getitem__(self, position: int) -> tuple[Tensor, int, int]:
        index = int(self.order[position])
        return self.dataset.image(index), int(self.dataset.targets[index]), index


def iterate_batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    order: Tensor | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """Yield batches in ``order`` (default: dataset order), moved to ``device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if order is None:
        order = torch.arange(len(dataset))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    if isinstance(dataset, TensorImageDataset):
        for start in range(0, stop, batch_size):
            indices = order[start : min(start + batch_size, stop)]
            yield Batch(
                dataset.batch(indices).to(device, non_blocking=True),
                dataset.targets[indices].to(device, non_blocking=True),
                indices,
            )
        return
    loader = DataLoader(
        _Indexed(dataset, order[:stop]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )
    for images, labels, indices in loader:
        yield Batch(images.to(device, non_blocking=True), labels.to(device, non_blocking=True), indices)


def num_batches(length: int, batch_size: int, *, drop_last: bool = False) -> int:
    return length // batch_size if drop_last else -(-length // batch_size)
