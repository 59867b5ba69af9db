"""Datasets: built-in offline ones, torchvision-backed ones from a local root, image folders."""

from robustcam.data import digits as _digits  # noqa: F401  (fills the registry)
from robustcam.data import digits_scene as _digits_scene  # noqa: F401
from robustcam.data import imagefolder as _imagefolder  # noqa: F401
from robustcam.data import torchvision_datasets as _torchvision_datasets  # noqa: F401
from robustcam.data.base import (
    DatasetInfo,
    ImageDataset,
    TensorImageDataset,
    check_pixel_range,
    default_data_root,
)
from robustcam.data.digits_scene import DigitScenes, render_digit_scenes
from robustcam.data.imagefolder import ImageFolderDataset
from robustcam.data.registry import DATASETS, list_datasets, load_dataset, register_dataset
from robustcam.data.torchvision_datasets import CIFAR100Dataset, RestrictedUnpickler

__all__ = [
    "DATASETS",
    "CIFAR100Dataset",
    "DatasetInfo",
    "DigitScenes",
    "ImageDataset",
    "ImageFolderDataset",
    "RestrictedUnpickler",
    "TensorImageDataset",
    "check_pixel_range",
    "default_data_root",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "render_digit_scenes",
]
