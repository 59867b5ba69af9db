"""Fixtures for the dataset tests: tiny files in their real formats, written into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .written_files import (
    Writer,
    write_cifar10,
    write_cifar100,
    write_mnist_like,
    write_png_classes,
    write_svhn,
)


@pytest.fixture
def mnist_writer() -> Writer:
    return lambda root: write_mnist_like(root, "MNIST", compress=False)


@pytest.fixture
def fashion_mnist_writer() -> Writer:
    # The .gz files torchvision keeps next to the extracted ones; only those are written here.
    return lambda root: write_mnist_like(root, "FashionMNIST", compress=True)


@pytest.fixture
def cifar10_writer() -> Writer:
    return write_cifar10


@pytest.fixture
def cifar100_writer() -> Writer:
    return write_cifar100


@pytest.fixture
def svhn_writer() -> Writer:
    return write_svhn


@pytest.fixture
def written_datasets(tmp_path: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """(root, options) that make every registered dataset loadable offline."""
    write_mnist_like(tmp_path, "MNIST", compress=False)
    write_mnist_like(tmp_path, "FashionMNIST", compress=True)
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_svhn(tmp_path)
    write_png_classes(tmp_path / "folder", {"cat": 4, "dog": 3})
    return {
        "digits": (tmp_path, {}),
        "digits_scene": (tmp_path, {}),
        "mnist": (tmp_path, {}),
        "fashion_mnist": (tmp_path, {}),
        "cifar10": (tmp_path, {}),
        "cifar100": (tmp_path, {}),
        "svhn": (tmp_path, {}),
        "imagefolder": (tmp_path, {"path": tmp_path / "folder", "image_size": 16}),
    }
