"""``imagefolder``: class subfolders of PNGs, loaded lazily, split by folder or stratified."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from robustcam.data import ImageFolderDataset, load_dataset
from robustcam.data.imagefolder import IMAGENET_MEAN, stratified_split
from robustcam.errors import DatasetNotFoundError

from .written_files import write_png_classes

CLASSES = {"zebra": 5, "ant": 5, "moth": 6}


def _folder(split: str, **options: Any) -> ImageFolderDataset:
    dataset = load_dataset("imagefolder", split, root=Path("unused"), **options)
    assert isinstance(dataset, ImageFolderDataset)
    return dataset


def test_images_labels_and_class_names(tmp_path: Path) -> None:
    written = write_png_classes(tmp_path, CLASSES, size=(8, 6))
    train = _folder("train", path=tmp_path, image_size=(8, 6))
    test = _folder("test", path=tmp_path, image_size=(8, 6))
    assert train.info.class_names == ("ant", "moth", "zebra")  # sorted subfolder names
    assert train.info.input_shape == (3, 8, 6) and train.info.mean == IMAGENET_MEAN
    assert len(train) + len(test) == sum(CLASSES.values())
    for dataset in (train, test):
        for index, path in enumerate(dataset.paths):
            image, label = dataset[index]
            # Same size, so no resampling: the pixels are the written ones, HWC -> CHW.
            torch.testing.assert_close(image, torch.from_numpy(written[path]).permute(2, 0, 1).float() / 255.0)
            assert dataset.info.class_names[label] == path.parent.name


def test_stratified_split_is_disjoint_deterministic_and_seeded(tmp_path: Path) -> None:
    write_png_classes(tmp_path, CLASSES)
    train = _folder("train", path=tmp_path, image_size=4)
    test = _folder("test", path=tmp_path, image_size=4)
    assert not set(train.paths) & set(test.paths)
    # round(0.2 * n) of every class goes to test.
    assert sorted(test.targets.tolist()) == [0, 1, 2]
    assert _folder("test", path=tmp_path, image_size=4).paths == test.paths
    other = _folder("test", path=tmp_path, image_size=4, split_seed=1)
    assert other.paths != test.paths
    half = _folder("test", path=tmp_path, image_size=4, test_fraction=0.5)
    assert torch.bincount(half.targets).tolist() == [2, 3, 2]  # round(2.5) = 2, round(3) = 3


def test_stratified_split_keeps_one_of_each_side() -> None:
    train, test = stratified_split([0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2], 0.05, seed=0)
    labels = np.array([0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    assert sorted(labels[test].tolist()) == [0, 2]  # at least one test image per class of two or more
    assert 1 in labels[train].tolist()  # a single image stays in train
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split([0, 1], 1.0, seed=0)


@pytest.mark.parametrize("test_folder", ["test", "val"])
def test_split_folders_are_used_as_splits(tmp_path: Path, test_folder: str) -> None:
    write_png_classes(tmp_path / "train", {"a": 3, "b": 2}, seed=1)
    write_png_classes(tmp_path / test_folder, {"b": 2}, seed=2)  # a test split may lack a class
    train = _folder("train", path=tmp_path, image_size=4)
    test = _folder("test", path=tmp_path, image_size=4)
    assert train.info.class_names == test.info.class_names == ("a", "b")
    assert len(train) == 5 and all(p.parts[-3] == "train" for p in train.paths)
    assert test.targets.tolist() == [1, 1] and all(p.parts[-3] == test_folder for p in test.paths)


def test_test_folder_with_an_unknown_class_is_refused(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "train", {"a": 2})
    write_png_classes(tmp_path / "test", {"z": 1})
    with pytest.raises(DatasetNotFoundError, match="z"):
        _folder("test", path=tmp_path, image_size=4)


def test_resize_and_grayscale(tmp_path: Path) -> None:
    written = write_png_classes(tmp_path, {"a": 2, "b": 2}, size=(10, 14))
    resized = _folder("train", path=tmp_path, image_size=(5, 7))
    image, _ = resized[0]
    assert image.shape == (3, 5, 7) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    square = _folder("train", path=tmp_path)
    assert square.info.input_shape == (3, 224, 224) and square[0][0].shape == (3, 224, 224)

    grey = _folder("train", path=tmp_path, image_size=(10, 14), grayscale=True)
    assert grey.info.input_shape == (1, 10, 14) and len(grey.info.mean) == 1
    image, _ = grey[0]
    expected = np.asarray(Image.fromarray(written[grey.paths[0]]).convert("L"))
    torch.testing.assert_close(image[0], torch.from_numpy(expected.copy()).float() / 255.0)


def test_relative_path_is_found_under_the_data_root(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "pets", {"a": 2, "b": 2})
    dataset = load_dataset("imagefolder", "train", root=tmp_path, path="pets", image_size=4)
    assert len(dataset) == 2


def test_with_targets_on_the_lazy_dataset(tmp_path: Path) -> None:
    write_png_classes(tmp_path, {"a": 2, "b": 2})
    dataset = _folder("train", path=tmp_path, image_size=4)
    relabelled = dataset.with_targets([1 - int(t) for t in dataset.targets])
    assert isinstance(relabelled, ImageFolderDataset) and relabelled.paths == dataset.paths
    assert relabelled[0][1] == 1 - dataset[0][1]


def test_missing_path_option_is_named() -> None:
    with pytest.raises(ValueError, match="option path"):
        _folder("train")


def test_missing_empty_and_imageless_folders_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(missing))):
        _folder("train", path=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"{empty} has no class subfolders")):
        _folder("train", path=empty)
    (empty / "cls").mkdir()
    (empty / "cls" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"{empty / 'cls'} has no images")):
        _folder("train", path=empty)


def test_unreadable_image_is_an_error_naming_it(tmp_path: Path) -> None:
    write_png_classes(tmp_path, {"a": 1, "b": 1})
    broken = tmp_path / "a" / "img_0.png"
    broken.write_bytes(b"not a png")
    dataset = _folder("train", path=tmp_path, image_size=4)
    index = dataset.paths.index(broken)
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"cannot read image {broken}")):
        dataset[index]


@pytest.mark.parametrize("image_size", [0, -3, (4,), (4, 0), "224", 2.5])
def test_bad_image_size_is_named(tmp_path: Path, image_size: object) -> None:
    write_png_classes(tmp_path, {"a": 2})
    with pytest.raises(ValueError, match="image_size"):
        _folder("train", path=tmp_path, image_size=image_size)


def test_train_folder_alone_is_split_stratified(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "train", {"a": 5, "b": 5})
    train = _folder("train", path=tmp_path, image_size=4)
    test = _folder("test", path=tmp_path, image_size=4)
    assert train.info.class_names == ("a", "b")
    assert len(train) == 8 and torch.bincount(test.targets).tolist() == [1, 1]
