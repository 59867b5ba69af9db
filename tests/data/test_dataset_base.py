"""The dataset registry, the value types, and a contract every registered dataset keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from robustcam.data import (
    DatasetInfo,
    ImageDataset,
    TensorImageDataset,
    check_pixel_range,
    list_datasets,
    load_dataset,
)
from robustcam.errors import InputError, ParameterError
from robustcam.registry import UnknownNameError

EXPECTED_DATASETS = {
    "cifar10",
    "cifar100",
    "digits",
    "digits_scene",
    "fashion_mnist",
    "imagefolder",
    "mnist",
    "svhn",
}


def _tiny(num_classes: int = 3) -> TensorImageDataset:
    info = DatasetInfo("tiny", num_classes, tuple("abc"[:num_classes]), (0.5,), (0.25,), (1, 2, 2))
    images = torch.arange(4 * 4, dtype=torch.uint8).reshape(4, 1, 2, 2) * 10
    return TensorImageDataset(images, torch.tensor([0, 1, 2, 0]), info)


def test_every_dataset_is_registered() -> None:
    assert set(list_datasets()) == EXPECTED_DATASETS


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as caught:
        load_dataset("cifar11", "train", root=Path("unused"))
    message = str(caught.value)
    assert "'cifar11'" in message and "did you mean 'cifar10'" in message
    for name in EXPECTED_DATASETS:
        assert name in message
    assert isinstance(caught.value, ValueError)


def test_unknown_split_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="split must be one of train, test"):
        load_dataset("digits", "val", root=Path("unused"))


@pytest.mark.parametrize("name", sorted(EXPECTED_DATASETS))
def test_every_dataset_keeps_the_contract(name: str, written_datasets: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    root, options = written_datasets[name]
    for split in ("train", "test"):
        dataset = load_dataset(name, split, root=root, **options)
        assert isinstance(dataset, ImageDataset) and len(dataset) > 0
        info = dataset.info
        assert info.num_classes == len(info.class_names)
        assert len(info.mean) == len(info.std) == info.in_channels
        assert all(s > 0 for s in info.std)
        image, label = dataset[len(dataset) - 1]
        assert image.dtype == torch.float32 and tuple(image.shape) == info.input_shape
        check_pixel_range(image)
        assert isinstance(label, int) and 0 <= label < info.num_classes
        assert dataset.targets.dtype == torch.long and dataset.targets.shape == (len(dataset),)
        assert (dataset.boxes is not None) == info.has_boxes
        if dataset.boxes is not None:
            assert dataset.boxes.shape == (len(dataset), 4)
        for value in dataset.extras.values():
            assert value.shape[0] == len(dataset)
        assert info.to_dict()["name"] == info.name


def test_with_targets_overrides_labels_and_keeps_images() -> None:
    dataset = _tiny()
    noisy = dataset.with_targets([2, 2, 1, 1])
    assert noisy.targets.tolist() == [2, 2, 1, 1]
    assert dataset.targets.tolist() == [0, 1, 2, 0]  # the original is untouched
    image, label = noisy[1]
    assert label == 2 and torch.equal(image, dataset[1][0])
    assert noisy.info is dataset.info


def test_with_targets_rejects_wrong_shape_and_range() -> None:
    dataset = _tiny()
    with pytest.raises(ValueError, match="shape"):
        dataset.with_targets([0, 1])
    with pytest.raises(InputError, match=r"label override for tiny: label 3 at position 2 is outside \[0, 2\]"):
        dataset.with_targets([0, 1, 3, 0])
    with pytest.raises(InputError, match=r"label -1 at position 1 is outside \[0, 2\]"):
        dataset.with_targets([0, -1, 1, 0])


def test_dataset_options_are_typed_against_the_loader() -> None:
    with pytest.raises(ParameterError, match=r"data.options.canvas: 'big' is not an integer"):
        load_dataset("digits_scene", "test", canvas="big")
    with pytest.raises(InputError, match=r"unknown parameter\(s\) canvas for dataset 'digits'; valid: size"):
        load_dataset("digits", "test", canvas=3)
    with pytest.raises(InputError, match="canvas must be an int >= "):
        load_dataset("digits_scene", "test", canvas=4)


def test_uint8_storage_is_served_as_floats_in_unit_range() -> None:
    dataset = _tiny()
    image, _ = dataset[3]
    assert image.dtype == torch.float32
    torch.testing.assert_close(image, dataset.images[3].float() / 255.0)


def test_check_pixel_range() -> None:
    check_pixel_range(torch.tensor([0.0, 0.5, 1.0]))
    check_pixel_range(torch.zeros(0))
    with pytest.raises(ValueError, match=r"\[0, 1\].*1\.5"):
        check_pixel_range(torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match=r"-0\.1"):
        check_pixel_range(torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match="float"):
        check_pixel_range(torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match="adversarial images"):
        check_pixel_range(torch.tensor([2.0]), what="adversarial images")


def test_float_images_outside_unit_range_are_refused() -> None:
    info = DatasetInfo("bad", 2, ("a", "b"), (0.5,), (0.5,), (1, 1, 1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TensorImageDataset(torch.full((1, 1, 1, 1), 2.0), torch.tensor([0]), info)


def test_default_data_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustcam.data import default_data_root

    monkeypatch.setenv("ROBUSTCAM_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("ROBUSTCAM_DATA")
    assert default_data_root() == Path.home() / ".robustcam" / "data"
