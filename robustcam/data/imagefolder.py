"""``imagefolder``: a folder of class subfolders of images, loaded lazily with PIL.

Follows the layout of ``torchvision.datasets.ImageFolder`` (``path/<class>/<image>``,
class names = sorted subfolder names, the same image extensions), so a folder
prepared for torchvision works unchanged. Two layouts are understood:

- ``path/train/<class>/...`` and ``path/test/<class>/...`` (or ``path/val/...``):
  the folders are the splits; the class list comes from ``train``.
- ``path/<class>/...`` (or only ``path/train/<class>/...``): a deterministic
  stratified split, ``test_fraction`` of every class (at least one image of any
  class with two or more) goes to test, chosen with ``split_seed``.

Images are decoded on access, converted to RGB (or L with ``grayscale``) and
resized to ``image_size`` with bilinear filtering (no crop, no augmentation:
evaluation must see the same pixels every time). mean/std are ImageNet's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from robustcam.data.base import SPLITS, DatasetInfo, ImageDataset
from robustcam.data.registry import register_dataset
from robustcam.errors import DatasetNotFoundError, InputError

# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The channel average of ImageNet's statistics, the usual choice for grey images.
IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = (0.449,), (0.226,)
TEST_FOLDER_NAMES = ("test", "val")


def _image_size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise InputError(f"image_size must be a positive int or a (height, width) pair of them, got {value!r}")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _scan(folder: Path, class_names: Sequence[str] | None = None) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """(class names, image paths, labels) of ``folder/<class>/...``; images found recursively per class."""
    if not folder.is_dir():
        raise DatasetNotFoundError(f"imagefolder: {folder} is not a folder")
    found = _visible_dirs(folder)
    names = tuple(p.name for p in found) if class_names is None else tuple(class_names)
    if not names:
        raise DatasetNotFoundError(f"imagefolder: {folder} has no class subfolders (expected {folder}/<class>/<image>)")
    unknown = sorted({p.name for p in found} - set(names))
    if unknown:
        raise DatasetNotFoundError(
            f"imagefolder: {folder} has class folders {', '.join(unknown)} that the training split does not have"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        class_dir = folder / name
        images = _images_in(class_dir) if class_dir.is_dir() else []
        if not images and class_names is None:
            raise DatasetNotFoundError(
                f"imagefolder: class folder {class_dir} has no images (extensions: {', '.join(IMAGE_EXTENSIONS)})"
            )
        paths.extend(images)
        labels.extend([label] * len(images))
    return names, paths, labels


def stratified_split(labels: Sequence[int], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted index arrays (train, test): per class, ``round(test_fraction * n)`` images go to test.

    A class with two or more images keeps at least one on each side; a class of one
    image goes to train. Deterministic for a given ``seed`` and label order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    label_array = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(label_array):
        members = rng.permutation(np.flatnonzero(label_array == label))
        n_test = round(test_fraction * len(members))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        else:
            n_test = 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(train or [empty])), np.sort(np.concatenate(test or [empty]))


class ImageFolderDataset(ImageDataset):
    """Images decoded from ``paths`` on access; ``dataset.paths[i]`` is the file of sample ``i``."""

    def __init__(
        self,
        paths: Sequence[Path],
        targets: Tensor,
        info: DatasetInfo,
        *,
        image_size: tuple[int, int],
        grayscale: bool = False,
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} labels")
        self.paths = list(paths)
        self.targets = targets.long()
        self.info = info
        self.boxes = None
        self.extras = {}
        self.image_size = image_size
        self.mode = "L" if grayscale else "RGB"

    def image(self, index: int) -> Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as opened:
                height, width = self.image_size
                picture = opened.convert(self.mode).resize((width, height), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetNotFoundError(f"imagefolder: cannot read image {path} ({exc})") from exc
        array = np.asarray(picture, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _resolve(path: str | Path, root: Path) -> Path:
    # A relative path is taken from the working directory first, then from the data root.
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists() or not (root / given).exists():
        return given
    return root / given


@register_dataset("imagefolder")
def imagefolder(
    split: str,
    *,
    root: Path,
    download: bool = False,
    path: str | Path | None = None,
    image_size: int | Sequence[int] = 224,
    grayscale: bool = False,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> ImageFolderDataset:
    """Images from ``path`` (``<class>/<image>``, or ``train/`` and ``test/``/``val/`` of those).

    Options:
        path: the folder (required); relative paths are looked up in the working
            directory, then under ``root``.
        image_size: int or (height, width) every image is resized to.
        grayscale: decode as one grey channel instead of RGB.
        test_fraction, split_seed: the stratified split of a folder without split subfolders.
    """
    del download  # a local folder: nothing to fetch
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if path is None:
        raise InputError(
            "imagefolder needs the option path (a folder of class subfolders of images): set data.options.path"
        )
    size = _image_size(image_size)
    folder = _resolve(path, root)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"imagefolder: {folder} is not a folder (option path={str(path)!r})")

    test_dirs = [folder / name for name in TEST_FOLDER_NAMES if (folder / name).is_dir()]
    if (folder / "train").is_dir() and test_dirs:
        class_names, train_paths, train_labels = _scan(folder / "train")
        if split == "train":
            paths, labels = train_paths, train_labels
        else:
            _, paths, labels = _scan(test_dirs[0], class_names)
            if not paths:
                raise DatasetNotFoundError(f"imagefolder: {test_dirs[0]} has no images")
    else:
        class_names, all_paths, all_labels = _scan(folder / "train" if (folder / "train").is_dir() else folder)
        train_idx, test_idx = stratified_split(all_labels, test_fraction, split_seed)
        chosen = train_idx if split == "train" else test_idx
        paths = [all_paths[i] for i in chosen]
        labels = [all_labels[i] for i in chosen]

    channels = 1 if grayscale else 3
    mean, std = (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD) if grayscale else (IMAGENET_MEAN, IMAGENET_STD)
    info = DatasetInfo("imagefolder", len(class_names), class_names, mean, std, (channels, *size))
    return ImageFolderDataset(paths, torch.tensor(labels, dtype=torch.long), info, image_size=size, grayscale=grayscale)
