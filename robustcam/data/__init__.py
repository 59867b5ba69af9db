"""Datasets: built-in offline ones, torchvision-backed ones from a local root, image folders."""

from robustcam.data import digits as _digits  # noqa: F401  (fills the registry)
from robustcam.data.base import DatasetInfo, ImageDataset, TensorImageDataset, check_pixel_range, default_data_root
from robustcam.data.registry import DATASETS, list_datasets, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageDataset",
    "TensorImageDataset",
    "check_pixel_range",
    "default_data_root",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
