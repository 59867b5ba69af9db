"""The dataset registry and ``load_dataset``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustcam.data.base import SPLITS, ImageDataset, default_data_root
from robustcam.registry import Registry, build_checked

DatasetFactory = Callable[..., ImageDataset]

DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register a loader ``(split, *, root: Path, download: bool, **options) -> ImageDataset``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    **options: Any,
) -> ImageDataset:
    """Load split ``train`` or ``test`` of a registered dataset.

    ``root`` is where file-backed datasets live (default: ``$ROBUSTCAM_DATA`` or
    ``~/.robustcam/data``); ``download`` fetches missing files only when asked. ``options``
    are typed against the loader's keyword-only arguments: an unknown one or a value of the
    wrong type is an ``InputError`` naming it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    factory = DATASETS.get(name)
    data_root = Path(root).expanduser() if root is not None else default_data_root()
    fixed = {"root": data_root, "download": download}
    return build_checked(factory, options, what=f"dataset {name!r}", key="data.options", args=(split,), fixed=fixed)
