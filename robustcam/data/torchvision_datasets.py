"""torchvision's classic datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN) read from a local root.

The files are the ones ``torchvision.datasets`` downloads, in the same layout
under ``root``::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
        (or torchvision's older MNIST/processed/{training,test}.pt)
    FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]  (or processed/ likewise)
    cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    cifar-100-python/{train,test,meta}
    svhn/{train,test}_32x32.mat

robustcam reads them itself instead of going through the torchvision classes:
those verify md5 sums (so they refuse the tiny files the tests write) and
unpickle CIFAR batches with plain ``pickle``, which runs whatever a file asks
for. Here CIFAR pickles go through ``RestrictedUnpickler``, which only rebuilds
numpy arrays and plain containers. ``download=True`` hands fetching to the
torchvision class (it knows the mirrors and checksums) and only when a file is
missing; the files are then read with the readers below.

Images are kept as uint8 (N, C, H, W) and turned into floats in [0, 1] per
batch. mean/std are the per-channel statistics usually published for each
training set.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustcam.data.base import SPLITS, DatasetInfo, TensorImageDataset
from robustcam.data.digits import DIGIT_CLASS_NAMES
from robustcam.data.registry import register_dataset
from robustcam.errors import DatasetNotFoundError

FASHION_MNIST_CLASS_NAMES = (
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

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# what torchvision before 0.8 wrote next to raw/ (and older copies of the datasets still hold)
PROCESSED_FILES = {"train": "training.pt", "test": "test.pt"}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = {"train": ("train",), "test": ("test",)}
SVHN_FOLDER = "svhn"
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}

# The idx magic number is 0x0000 <type> <ndim>; MNIST-style files only use type 0x08 (unsigned byte).
IDX_UBYTE = 0x08


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def missing_dataset_error(
    name: str, path: Path, *, alternative: Path | None = None, processed: Path | None = None
) -> DatasetNotFoundError:
    """The one-line error for a dataset file or folder that is not at ``path`` (nor at ``alternative``,
    nor in torchvision's older ``processed`` layout)."""
    looked = f"{path} (or {alternative})" if alternative is not None else str(path)
    if processed is not None:
        looked += f", or {processed}"
    return DatasetNotFoundError(
        f"{name} not found: looked for {looked}; run with --download (download=True) to fetch it, "
        f"put the files at that path, or point ROBUSTCAM_DATA / --data-root at a folder that holds them"
    )


def corrupt_file_error(name: str, path: Path, reason: object) -> DatasetNotFoundError:
    """The one-line error for a dataset file that exists but cannot be read."""
    return DatasetNotFoundError(
        f"{name} file {path} is corrupt or truncated ({_one_line(reason)}); "
        f"delete it and run with --download (download=True) again, or replace it"
    )


def _download(name: str, root: Path, fetch: Callable[[], object]) -> None:
    """Run a torchvision download, turning its multi-line failures into one line."""
    try:
        fetch()
    except Exception as exc:  # network, checksum and archive errors all mean "could not fetch"
        raise DatasetNotFoundError(
            f"downloading {name} into {root} failed ({type(exc).__name__}: {_one_line(exc)}); "
            f"check the connection, or put the files there by hand"
        ) from exc


# --------------------------------------------------------------------------- idx (MNIST, Fashion-MNIST)


def read_idx_file(path: Path, *, ndim: int, name: str = "dataset") -> np.ndarray:
    """Read an unsigned-byte idx file (the MNIST format; ``path`` may end in ``.gz``).

    Layout: a big-endian int32 magic ``0x000008<ndim>``, ``ndim`` big-endian
    int32 sizes, then the bytes in row-major order. Returns a uint8 array of
    those sizes; anything else raises ``DatasetNotFoundError`` naming the file.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt_file_error(name, path, exc) from exc
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise corrupt_file_error(name, path, f"{len(raw)} bytes, shorter than the idx header")
    magic = int.from_bytes(raw[:4], "big")
    expected_magic = (IDX_UBYTE << 8) | ndim
    if magic != expected_magic:
        raise corrupt_file_error(name, path, f"idx magic number {magic:#010x}, expected {expected_magic:#010x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(shape))
    if len(raw) != expected_size:
        raise corrupt_file_error(name, path, f"{len(raw)} bytes, the header {shape} implies {expected_size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _idx_path(raw_dir: Path, filename: str) -> Path | None:
    for candidate in (raw_dir / filename, raw_dir / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def check_labels(name: str, path: Path, labels: np.ndarray, num_classes: int, *, what: str = "label") -> None:
    """Raise the corrupt-file error naming ``path`` and the first label outside [0, num_classes)."""
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        first = int(outside[0])
        raise corrupt_file_error(
            name, path, f"{what} {int(labels[first])} at position {first} outside [0, {num_classes - 1}]"
        )


def read_processed_file(path: Path, *, name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """Read torchvision's legacy ``processed/{training,test}.pt``: a ``torch.save`` of the pair
    (uint8 images (N, H, W), integer labels (N,)). Loaded with ``weights_only=True``, so the file
    can hold tensors and containers only and runs no code."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, truncated zips, ... all mean "not a processed file"
        raise corrupt_file_error(name, path, f"{type(exc).__name__}: {exc}") from exc
    pair = isinstance(content, (tuple, list)) and len(content) == 2
    if not pair or not all(isinstance(part, torch.Tensor) for part in content):
        raise corrupt_file_error(
            name, path, f"holds a {type(content).__name__}, expected an (images, labels) pair of tensors"
        )
    images, labels = content
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise corrupt_file_error(
            name, path, f"images are {images.dtype} {tuple(images.shape)}, expected uint8 (N, H, W)"
        )
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise corrupt_file_error(name, path, f"labels are {labels.dtype} {tuple(labels.shape)}, expected integers (N,)")
    return images.numpy(), labels.numpy().astype(np.int64)


def _read_mnist_files(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, Path, Path] | None:
    """(images, labels, image file, label file) from ``raw/`` idx files, else from ``processed/``;
    None when neither layout has this split."""
    raw_dir = folder / "raw"
    image_path, label_path = (_idx_path(raw_dir, filename) for filename in IDX_FILES[split])
    if image_path is not None and label_path is not None:
        images = read_idx_file(image_path, ndim=3, name=name)
        return images, read_idx_file(label_path, ndim=1, name=name).astype(np.int64), image_path, label_path
    processed = folder / "processed" / PROCESSED_FILES[split]
    if processed.is_file():
        images, labels = read_processed_file(processed, name=name)
        return images, labels, processed, processed
    return None


def _idx_dataset(
    name: str,
    folder: str,
    split: str,
    root: Path,
    download: bool,
    info: DatasetInfo,
    torchvision_class: str,
) -> TensorImageDataset:
    _check_split(split)
    found = _read_mnist_files(name, root / folder, split)
    if found is None and download:

        def fetch() -> object:
            import torchvision.datasets

            return getattr(torchvision.datasets, torchvision_class)(str(root), train=split == "train", download=True)

        _download(name, root, fetch)
        found = _read_mnist_files(name, root / folder, split)
    if found is None:
        raw_dir, (image_name, _) = root / folder / "raw", IDX_FILES[split]
        raise missing_dataset_error(
            name,
            raw_dir / image_name,
            alternative=raw_dir / f"{image_name}.gz",
            processed=root / folder / "processed" / PROCESSED_FILES[split],
        )
    images, labels, image_path, label_path = found
    if images.shape[0] != labels.shape[0]:
        raise corrupt_file_error(name, label_path, f"{labels.shape[0]} labels for {images.shape[0]} images")
    if images.shape[1:] != info.input_shape[1:]:
        raise corrupt_file_error(
            name, image_path, f"images of size {images.shape[1:]}, expected {info.input_shape[1:]}"
        )
    check_labels(name, label_path, labels, info.num_classes)
    return TensorImageDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels), info)


@register_dataset("mnist")
def mnist(split: str, *, root: Path, download: bool = False) -> TensorImageDataset:
    """MNIST (LeCun et al. 1998): 28x28 grey digits, from ``<root>/MNIST/raw``."""
    info = DatasetInfo("mnist", 10, DIGIT_CLASS_NAMES, MNIST_MEAN, MNIST_STD, (1, 28, 28))
    return _idx_dataset("mnist", "MNIST", split, root, download, info, "MNIST")


@register_dataset("fashion_mnist")
def fashion_mnist(split: str, *, root: Path, download: bool = False) -> TensorImageDataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey clothing, from ``<root>/FashionMNIST/raw``."""
    info = DatasetInfo(
        "fashion_mnist", 10, FASHION_MNIST_CLASS_NAMES, FASHION_MNIST_MEAN, FASHION_MNIST_STD, (1, 28, 28)
    )
    return _idx_dataset("fashion_mnist", "FashionMNIST", split, root, download, info, "FashionMNIST")


# --------------------------------------------------------------------------- CIFAR pickles


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for a global outside ``RestrictedUnpickler``'s allow-list."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1");
    # only that spelling is honoured, not arbitrary codecs.
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_core(submodule: str, attribute: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; old pickles name the former, new ones the latter,
    # and both resolve to the same function (without going through numpy.core's deprecation shim).
    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        found = getattr(module, attribute, None)
        if found is not None:
            return found
    raise ImportError(f"numpy has no {submodule}.{attribute}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _numpy_core("multiarray", "_reconstruct")
        allowed[(f"{package}.multiarray", "scalar")] = _numpy_core("multiarray", "scalar")
        allowed[(f"{package}.numeric", "_frombuffer")] = _numpy_core("numeric", "_frombuffer")
    plain_types = (dict, list, tuple, set, frozenset, bytes, bytearray, str, int, float, bool, complex)
    for module in ("builtins", "__builtin__"):  # __builtin__: how Python 2 pickles spell builtins
        for plain in plain_types:
            allowed[(module, plain.__name__)] = plain
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR batches: numpy arrays, dtypes and plain builtin containers only.

    A CIFAR batch is a dict of a uint8 ndarray, lists of ints and strings; the
    only globals it needs are numpy's array reconstruction helpers and
    ``numpy.dtype``. Any other global (``os.system``, ``builtins.eval``, ...) is
    refused with ``UnsafePickleError`` before it is called, so loading data never
    runs code the file asks for.
    """

    ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        allowed = self.ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"it references the global {module}.{name}, which a CIFAR file never contains "
                f"(allowed: numpy array reconstruction, numpy.dtype, builtin containers)"
            )
        return allowed


def read_cifar_pickle(path: Path, *, name: str = "cifar") -> dict[str, Any]:
    """Unpickle one CIFAR file with ``RestrictedUnpickler``; keys come back as ``str``.

    The official files are Python 2 pickles (``str`` keys under
    ``encoding="latin1"``); Python 3 rewrites of them carry ``bytes`` keys. Both
    are accepted.
    """
    try:
        with open(path, "rb") as handle:
            content = RestrictedUnpickler(handle, encoding="latin1").load()
    except UnsafePickleError as exc:
        raise DatasetNotFoundError(
            f"refusing to load {name} file {path}: {_one_line(exc)}; it is not a genuine CIFAR file, "
            f"delete it and download again"
        ) from exc
    except Exception as exc:  # a truncated or garbled pickle fails in many ways, all meaning "corrupt"
        raise corrupt_file_error(name, path, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(content, dict):
        raise corrupt_file_error(name, path, f"holds a {type(content).__name__}, expected a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def _names(content: dict[str, Any], key: str, path: Path, name: str, count: int) -> tuple[str, ...]:
    values = content.get(key)
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise corrupt_file_error(name, path, f"{key!r} is not a list of {count} class names")
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def _labels(content: dict[str, Any], key: str, path: Path, name: str, count: int, num_classes: int) -> np.ndarray:
    values = content.get(key)
    if values is None:
        raise corrupt_file_error(name, path, f"no {key!r} entry")
    labels = np.asarray(values, dtype=np.int64).reshape(-1)
    if labels.shape[0] != count:
        raise corrupt_file_error(name, path, f"{labels.shape[0]} {key} for {count} images")
    check_labels(name, path, labels, num_classes, what=key)
    return labels


def _cifar_data(content: dict[str, Any], path: Path, name: str) -> np.ndarray:
    data = content.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupt_file_error(name, path, f"'data' is {described}, expected uint8 (N, 3072)")
    # Each row is the 1024 red, then green, then blue values of a 32x32 image, row-major: CHW.
    return data.reshape(-1, 3, 32, 32)


def _cifar_files(name: str, folder: Path, filenames: Sequence[str], meta: str) -> list[Path]:
    if not folder.is_dir():
        raise missing_dataset_error(name, folder)
    paths = [folder / filename for filename in (*filenames, meta)]
    for path in paths:
        if not path.is_file():
            raise missing_dataset_error(name, path)
    return paths


def _cifar_missing(folder: Path, filenames: Sequence[str], meta: str) -> bool:
    return not all((folder / filename).is_file() for filename in (*filenames, meta))


@register_dataset("cifar10")
def cifar10(split: str, *, root: Path, download: bool = False) -> TensorImageDataset:
    """CIFAR-10 (Krizhevsky 2009): 32x32 RGB, 10 classes, from ``<root>/cifar-10-batches-py``."""
    _check_split(split)
    folder = root / CIFAR10_FOLDER
    if download and _cifar_missing(folder, CIFAR10_FILES[split], "batches.meta"):

        def fetch() -> object:
            import torchvision.datasets

            return torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)

        _download("cifar10", root, fetch)
    *batch_paths, meta_path = _cifar_files("cifar10", folder, CIFAR10_FILES[split], "batches.meta")
    class_names = _names(read_cifar_pickle(meta_path, name="cifar10"), "label_names", meta_path, "cifar10", 10)
    images, labels = [], []
    for path in batch_paths:
        content = read_cifar_pickle(path, name="cifar10")
        data = _cifar_data(content, path, "cifar10")
        images.append(data)
        labels.append(_labels(content, "labels", path, "cifar10", data.shape[0], 10))
    info = DatasetInfo("cifar10", 10, class_names, CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32))
    return TensorImageDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), info)


class CIFAR100Dataset(TensorImageDataset):
    """CIFAR-100 with its superclasses: ``extras["coarse_targets"]`` and ``coarse_class_names``.

    The 20 superclasses (5 fine classes each) are what class-dependent label
    noise on CIFAR-100 flips within (Patrini et al., CVPR 2017).
    """

    coarse_class_names: tuple[str, ...]

    def fine_to_coarse(self) -> torch.Tensor:
        """(100,) long tensor: the superclass of each fine class (-1 for a class with no sample)."""
        mapping = torch.full((self.info.num_classes,), -1, dtype=torch.long)
        mapping[self.targets] = self.extras["coarse_targets"]
        return mapping


@register_dataset("cifar100")
def cifar100(split: str, *, root: Path, download: bool = False) -> CIFAR100Dataset:
    """CIFAR-100 (Krizhevsky 2009): 32x32 RGB, 100 fine classes in 20 superclasses, from ``<root>/cifar-100-python``."""
    _check_split(split)
    folder = root / CIFAR100_FOLDER
    if download and _cifar_missing(folder, CIFAR100_FILES[split], "meta"):

        def fetch() -> object:
            import torchvision.datasets

            return torchvision.datasets.CIFAR100(str(root), train=split == "train", download=True)

        _download("cifar100", root, fetch)
    data_path, meta_path = _cifar_files("cifar100", folder, CIFAR100_FILES[split], "meta")
    meta = read_cifar_pickle(meta_path, name="cifar100")
    class_names = _names(meta, "fine_label_names", meta_path, "cifar100", 100)
    coarse_names = _names(meta, "coarse_label_names", meta_path, "cifar100", 20)
    content = read_cifar_pickle(data_path, name="cifar100")
    data = _cifar_data(content, data_path, "cifar100")
    fine = _labels(content, "fine_labels", data_path, "cifar100", data.shape[0], 100)
    coarse = _labels(content, "coarse_labels", data_path, "cifar100", data.shape[0], 20)
    info = DatasetInfo("cifar100", 100, class_names, CIFAR100_MEAN, CIFAR100_STD, (3, 32, 32))
    dataset = CIFAR100Dataset(
        torch.from_numpy(data.copy()),
        torch.from_numpy(fine),
        info,
        extras={"coarse_targets": torch.from_numpy(coarse)},
    )
    dataset.coarse_class_names = coarse_names
    return dataset


# --------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: Path, *, name: str = "svhn") -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat``: uint8 images (N, 3, 32, 32) and labels 0..9.

    The file stores ``X`` as (32, 32, 3, N), i.e. (H, W, C, N), and ``y`` as
    (N, 1) with the digit 0 written as 10.
    """
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for a damaged file
        raise corrupt_file_error(name, path, f"{type(exc).__name__}: {exc}") from exc
    images, labels = content.get("X"), content.get("y")
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        described = images.shape if isinstance(images, np.ndarray) else "missing"
        raise corrupt_file_error(name, path, f"'X' is {described}, expected (32, 32, 3, N)")
    if not isinstance(labels, np.ndarray) or labels.size != images.shape[3]:
        described = labels.shape if isinstance(labels, np.ndarray) else "missing"
        raise corrupt_file_error(name, path, f"'y' is {described}, expected ({images.shape[3]}, 1)")
    targets = labels.astype(np.int64).reshape(-1)
    outside = np.flatnonzero((targets < 1) | (targets > 10))
    if outside.size:  # SVHN writes the digit 0 as 10
        first = int(outside[0])
        raise corrupt_file_error(name, path, f"label {int(targets[first])} at position {first} outside 1..10")
    if images.dtype != np.uint8:
        raise corrupt_file_error(name, path, f"'X' has dtype {images.dtype}, expected uint8")
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), targets % 10


@register_dataset("svhn")
def svhn(split: str, *, root: Path, download: bool = False) -> TensorImageDataset:
    """SVHN cropped digits (Netzer et al. 2011): 32x32 RGB house numbers, from ``<root>/svhn``."""
    _check_split(split)
    folder = root / SVHN_FOLDER
    path = folder / SVHN_FILES[split]
    if download and not path.is_file():

        def fetch() -> object:
            import torchvision.datasets

            return torchvision.datasets.SVHN(str(folder), split=split, download=True)

        _download("svhn", folder, fetch)
    if not path.is_file():
        raise missing_dataset_error("svhn", path)
    images, labels = read_svhn_mat(path)
    info = DatasetInfo("svhn", 10, DIGIT_CLASS_NAMES, SVHN_MEAN, SVHN_STD, (3, 32, 32))
    return TensorImageDataset(torch.from_numpy(images), torch.from_numpy(labels), info)
