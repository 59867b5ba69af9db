"""Writers of tiny dataset files in their real on-disk formats (used by ``conftest.py`` and the tests).

Each writer returns what it wrote (uint8 images in (N, C, H, W), the labels a
loader must return, class names), so tests compare the loaders against the
written pixels rather than against another reader.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class WrittenSplit:
    images: np.ndarray  # uint8 (N, C, H, W): the loader must return images / 255
    labels: np.ndarray  # int64 (N,): the labels the loader must return
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenDataset:
    root: Path
    splits: dict[str, WrittenSplit]
    class_names: tuple[str, ...]
    coarse_class_names: tuple[str, ...] = ()


Writer = Callable[[Path], WrittenDataset]


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(name.encode()))


# --------------------------------------------------------------------------- idx (MNIST)


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    """An unsigned-byte idx file: magic 0x0000_08_<ndim>, big-endian int32 sizes, row-major bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_mnist_like(
    root: Path, folder: str, *, compress: bool, num_train: int = 12, num_test: int = 6
) -> WrittenDataset:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = _rng(folder)
    splits = {}
    for split, prefix, count in (("train", "train", num_train), ("test", "t10k", num_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress=compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress=compress)
        splits[split] = WrittenSplit(images[:, None], labels.astype(np.int64))
    return WrittenDataset(root, splits, FASHION_NAMES if folder == "FashionMNIST" else DIGIT_NAMES)


def write_mnist_processed(root: Path, folder: str, *, num_train: int = 12, num_test: int = 6) -> WrittenDataset:
    """torchvision's layout before 0.8 (and of copies made with it): ``<folder>/processed/training.pt``
    and ``test.pt``, each ``torch.save((images uint8 (N, 28, 28), labels int64 (N,)))``, no raw files."""
    import torch

    processed = root / folder / "processed"
    processed.mkdir(parents=True)
    rng = _rng(f"{folder}-processed")
    splits = {}
    for split, filename, count in (("train", "training.pt", num_train), ("test", "test.pt", num_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) * 3 % 10).astype(np.int64)
        torch.save((torch.from_numpy(images), torch.from_numpy(labels)), processed / filename)
        splits[split] = WrittenSplit(images[:, None], labels)
    return WrittenDataset(root, splits, FASHION_NAMES if folder == "FashionMNIST" else DIGIT_NAMES)


# --------------------------------------------------------------------------- CIFAR


def _cifar_images(rng: np.random.Generator, count: int) -> np.ndarray:
    images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    # A layout marker: the first 1024 bytes of a row are the red plane, so image 0 is pure red.
    images[0] = 0
    images[0, 0] = 255
    return images


def write_cifar10(root: Path, *, per_batch: int = 4, protocol: int = 2) -> WrittenDataset:
    """Five training batches and a test batch as the Python 2 pickles of the real archive (bytes keys)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng("cifar10")
    meta = {
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for split, filename in [("train", f"data_batch_{i}") for i in range(1, 6)] + [("test", "test_batch")]:
        images = _cifar_images(rng, per_batch)
        labels = rng.integers(0, 10, size=per_batch)
        batch = {
            b"batch_label": f"{filename} of 5".encode(),
            b"labels": [int(v) for v in labels],
            b"data": images.reshape(per_batch, 3072),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / filename).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[split].append((images, labels))
    splits = {
        split: WrittenSplit(np.concatenate([i for i, _ in parts]), np.concatenate([lab for _, lab in parts]))
        for split, parts in written.items()
    }
    return WrittenDataset(root, splits, CIFAR10_NAMES)


def write_cifar100(root: Path, *, num_train: int = 20, num_test: int = 10) -> WrittenDataset:
    """``train``, ``test`` and ``meta`` pickles; meta written with ``str`` keys, as latin1 loading yields."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = _rng("cifar100")
    fine_names = tuple(f"fine_{i:02d}" for i in range(100))
    coarse_names = tuple(f"coarse_{i:02d}" for i in range(20))
    (folder / "meta").write_bytes(
        pickle.dumps({"fine_label_names": list(fine_names), "coarse_label_names": list(coarse_names)})
    )
    splits = {}
    for split, count in (("train", num_train), ("test", num_test)):
        images = _cifar_images(rng, count)
        fine = rng.integers(0, 100, size=count)
        coarse = fine // 5  # any fixed fine -> coarse map will do for the reader
        batch = {
            b"filenames": [f"img_{i}.png".encode() for i in range(count)],
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) for v in coarse],
            b"data": images.reshape(count, 3072),
        }
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
        splits[split] = WrittenSplit(images, fine, {"coarse_targets": coarse})
    return WrittenDataset(root, splits, fine_names, coarse_names)


# --------------------------------------------------------------------------- SVHN


def write_svhn(root: Path, *, num_train: int = 12, num_test: int = 7) -> WrittenDataset:
    """``svhn/{train,test}_32x32.mat``: X of shape (32, 32, 3, N) = (H, W, C, N), y (N, 1) in 1..10."""
    folder = root / "svhn"
    folder.mkdir(parents=True)
    rng = _rng("svhn")
    splits = {}
    for split, count in (("train", num_train), ("test", num_test)):
        images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
        digits = np.arange(count) % 10
        stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(count, 1)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": stored})
        splits[split] = WrittenSplit(images, digits.astype(np.int64))
    return WrittenDataset(root, splits, DIGIT_NAMES)


# --------------------------------------------------------------------------- image folders


def write_png_classes(
    folder: Path, classes: dict[str, int], *, size: tuple[int, int] = (8, 6), seed: int = 0
) -> dict[Path, np.ndarray]:
    """``folder/<class>/img_<i>.png`` with random RGB pixels of (height, width) ``size``; returns HWC arrays."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            path = folder / name / f"img_{i}.png"
            Image.fromarray(pixels, mode="RGB").save(path)
            written[path] = pixels
    return written


# --------------------------------------------------------------------------- every file-backed dataset
