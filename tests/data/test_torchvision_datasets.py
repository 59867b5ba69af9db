"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN read from tiny files in their real formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets

from robustcam.data import CIFAR100Dataset, TensorImageDataset, load_dataset
from robustcam.data.torchvision_datasets import RestrictedUnpickler, UnsafePickleError, read_cifar_pickle
from robustcam.errors import DatasetNotFoundError

from .written_files import Writer, write_cifar10, write_cifar100, write_mnist_processed

# name -> (writer fixture, torchvision class a download goes through, where the files live under root)
DATASETS = {
    "mnist": ("mnist_writer", "MNIST", "MNIST/raw/train-images-idx3-ubyte"),
    "fashion_mnist": ("fashion_mnist_writer", "FashionMNIST", "FashionMNIST/raw/train-images-idx3-ubyte"),
    "cifar10": ("cifar10_writer", "CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("cifar100_writer", "CIFAR100", "cifar-100-python"),
    "svhn": ("svhn_writer", "SVHN", "svhn/train_32x32.mat"),
}


def _load(name: str, split: str, root: Path, **kwargs: Any) -> TensorImageDataset:
    dataset = load_dataset(name, split, root=root, **kwargs)
    assert isinstance(dataset, TensorImageDataset)
    return dataset


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_images_and_labels_are_the_written_ones(
    name: str, split: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    writer: Writer = request.getfixturevalue(DATASETS[name][0])
    written = writer(tmp_path)
    dataset = _load(name, split, tmp_path)
    expected = written.splits[split]

    assert dataset.images.dtype == torch.uint8  # stored compactly, served as floats
    images = dataset.batch(torch.arange(len(dataset)))
    assert images.dtype == torch.float32
    assert tuple(images.shape) == expected.images.shape
    assert tuple(images.shape[1:]) == dataset.info.input_shape
    torch.testing.assert_close(images, torch.from_numpy(expected.images).float() / 255.0)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert dataset.targets.tolist() == expected.labels.tolist()
    assert dataset.info.class_names == written.class_names
    assert dataset.info.num_classes == len(written.class_names)
    assert len(dataset.info.mean) == len(dataset.info.std) == dataset.info.in_channels
    image, label = dataset[1]
    torch.testing.assert_close(image, torch.from_numpy(expected.images[1]).float() / 255.0)
    assert label == int(expected.labels[1])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_rows_are_channel_planes(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue(DATASETS[name][0])(tmp_path)
    red = _load(name, "train", tmp_path).image(0)  # the writer made image 0's first 1024 bytes 255
    assert torch.all(red[0] == 1.0) and torch.all(red[1:] == 0.0)


def test_cifar10_reads_pickles_of_any_protocol(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, protocol=pickle.HIGHEST_PROTOCOL)
    dataset = _load("cifar10", "test", tmp_path)
    assert dataset.targets.tolist() == written.splits["test"].labels.tolist()


def test_cifar100_keeps_coarse_labels_and_names(cifar100_writer: Writer, tmp_path: Path) -> None:
    written = cifar100_writer(tmp_path)
    dataset = load_dataset("cifar100", "train", root=tmp_path)
    assert isinstance(dataset, CIFAR100Dataset)
    coarse = written.splits["train"].extras["coarse_targets"]
    assert dataset.extras["coarse_targets"].tolist() == coarse.tolist()
    assert dataset.coarse_class_names == written.coarse_class_names
    mapping = dataset.fine_to_coarse()
    seen = dataset.targets
    assert mapping[seen].tolist() == coarse.tolist()
    # A label override (noisy labels) keeps the side information.
    relabelled = dataset.with_targets(torch.zeros_like(dataset.targets))
    assert isinstance(relabelled, CIFAR100Dataset)
    assert relabelled.coarse_class_names == written.coarse_class_names
    assert torch.equal(relabelled.extras["coarse_targets"], dataset.extras["coarse_targets"])


def test_svhn_label_ten_is_digit_zero_and_height_is_the_first_axis(svhn_writer: Writer, tmp_path: Path) -> None:
    import scipy.io

    svhn_writer(tmp_path)
    stored = scipy.io.loadmat(str(tmp_path / "svhn" / "test_32x32.mat"))
    dataset = _load("svhn", "test", tmp_path)
    assert 10 in stored["y"].ravel().tolist()
    assert dataset.targets.tolist() == [int(v) % 10 for v in stored["y"].ravel()]
    x = stored["X"]  # (H, W, C, N)
    assert int(dataset.images[3, 2, 5, 7]) == int(x[5, 7, 2, 3])


def test_mnist_reads_gzipped_idx(fashion_mnist_writer: Writer, tmp_path: Path) -> None:
    fashion_mnist_writer(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert not (raw / "t10k-images-idx3-ubyte").exists() and (raw / "t10k-images-idx3-ubyte.gz").exists()
    dataset = _load("fashion_mnist", "test", tmp_path)
    assert dataset.info.class_names[0] == "T-shirt/top" and dataset.info.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_dataset_names_the_path_and_the_remedies(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name, "train", root=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / DATASETS[name][2]) in message
    assert "--download" in message and "ROBUSTCAM_DATA" in message and "--data-root" in message
    assert "\n" not in message


def test_missing_dataset_under_the_environment_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTCAM_DATA", str(tmp_path / "env-root"))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", "test")
    raw = tmp_path / "env-root" / "MNIST" / "raw"
    processed = tmp_path / "env-root" / "MNIST" / "processed" / "test.pt"
    expected = f"{raw / 't10k-images-idx3-ubyte'} (or {raw / 't10k-images-idx3-ubyte.gz'}), or {processed}"
    assert expected in str(caught.value)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_download_goes_through_torchvision_only_when_asked(
    name: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer: Writer = request.getfixturevalue(DATASETS[name][0])
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_torchvision_class(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        if kwargs.get("download"):
            writer(tmp_path)  # what the real class leaves on disk

    monkeypatch.setattr(torchvision.datasets, DATASETS[name][1], fake_torchvision_class)
    with pytest.raises(DatasetNotFoundError):
        load_dataset(name, "train", root=tmp_path)
    assert calls == []

    dataset = load_dataset(name, "train", root=tmp_path, download=True)
    assert len(dataset) > 0
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert kwargs["download"] is True
    if name == "svhn":
        assert args == (str(tmp_path / "svhn"),) and kwargs["split"] == "train"
    else:
        assert args == (str(tmp_path),) and kwargs["train"] is True

    load_dataset(name, "train", root=tmp_path, download=True)  # files present: nothing to fetch
    assert len(calls) == 1


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nTried mirror, got:\nURLError")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", unreachable)
    with pytest.raises(DatasetNotFoundError, match="downloading cifar10") as caught:
        load_dataset("cifar10", "test", root=tmp_path, download=True)
    assert "\n" not in str(caught.value)


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


class _CallsEval:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return eval, ("1 + 1",)


def test_pickle_with_a_forbidden_global_is_refused_without_running(cifar10_writer: Writer, tmp_path: Path) -> None:
    cifar10_writer(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": _RunsCommand(f"touch {marker}"), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetNotFoundError, match=r"refusing to load .*test_batch.*system") as caught:
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("payload", [_RunsCommand("true"), _CallsEval(), {"x": print}, {"x": gzip.open}])
def test_restricted_unpickler_allows_only_arrays_and_containers(payload: object) -> None:
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(UnsafePickleError, match="references the global"):
            RestrictedUnpickler(io.BytesIO(pickle.dumps(payload, protocol=protocol))).load()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_round_trips_cifar_content(protocol: int) -> None:
    content = {
        b"data": np.arange(12, dtype=np.uint8).reshape(2, 6),
        b"labels": [1, 2],
        b"names": [b"a", "b"],
        "shape": (2, 6),
        "flags": {True, False},
        "scale": np.float64(0.5),
    }
    loaded = RestrictedUnpickler(io.BytesIO(pickle.dumps(content, protocol=protocol)), encoding="latin1").load()
    assert np.array_equal(loaded[b"data"], content[b"data"])
    assert loaded[b"labels"] == [1, 2] and loaded[b"names"] == [b"a", "b"]
    assert loaded["shape"] == (2, 6) and loaded["flags"] == {True, False} and loaded["scale"] == 0.5


def test_restricted_unpickler_accepts_numpy_1_module_names(tmp_path: Path) -> None:
    # The official files (numpy 1, Python 2) name numpy.core.multiarray, which numpy 2 calls numpy._core.
    data = pickle.dumps({"data": np.arange(6, dtype=np.uint8)}, protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    path = tmp_path / "batch"
    path.write_bytes(old)
    assert read_cifar_pickle(path)["data"].tolist() == list(range(6))


def test_truncated_cifar_batch_is_a_one_line_error_naming_the_file(cifar10_writer: Writer, tmp_path: Path) -> None:
    cifar10_writer(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DatasetNotFoundError, match="corrupt or truncated") as caught:
        load_dataset("cifar10", "train", root=tmp_path)
    assert str(batch) in str(caught.value) and "\n" not in str(caught.value)


def test_cifar_batch_with_wrong_content_names_the_file(cifar10_writer: Writer, tmp_path: Path) -> None:
    cifar10_writer(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetNotFoundError, match=r"test_batch .*expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", "test", root=tmp_path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[:-10], "header .* implies"),
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "magic number"),
        (lambda raw: raw[:5], "shorter than the idx header"),
    ],
)
def test_damaged_idx_file_is_an_error_naming_it(mnist_writer: Writer, tmp_path: Path, damage: Any, reason: str) -> None:
    mnist_writer(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetNotFoundError, match=reason) as caught:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(path) in str(caught.value)


def test_truncated_gzip_is_an_error_naming_it(fashion_mnist_writer: Writer, tmp_path: Path) -> None:
    fashion_mnist_writer(tmp_path)
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetNotFoundError, match="corrupt or truncated") as caught:
        load_dataset("fashion_mnist", "train", root=tmp_path)
    assert str(path) in str(caught.value)


def test_damaged_svhn_file_is_an_error_naming_it(svhn_writer: Writer, tmp_path: Path) -> None:
    svhn_writer(tmp_path)
    path = tmp_path / "svhn" / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DatasetNotFoundError, match="corrupt or truncated") as caught:
        load_dataset("svhn", "test", root=tmp_path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------- torchvision's processed/ layout


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_reads_torchvisions_processed_layout(name: str, folder: str, split: str, tmp_path: Path) -> None:
    written = write_mnist_processed(tmp_path, folder)
    assert not (tmp_path / folder / "raw").exists()
    dataset = _load(name, split, tmp_path)
    expected = written.splits[split]
    assert torch.equal(dataset.images, torch.from_numpy(expected.images))
    assert dataset.targets.tolist() == expected.labels.tolist()
    assert dataset.image(0).shape == (1, 28, 28) and float(dataset.image(0).max()) <= 1.0


def test_processed_files_are_not_unpickled_freely(tmp_path: Path) -> None:
    write_mnist_processed(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "processed" / "test.pt"
    marker = tmp_path / "ran"
    torch.save(_RunsCode(marker), path)
    with pytest.raises(DatasetNotFoundError, match="corrupt or truncated") as caught:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(path) in str(caught.value) and not marker.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"images": 1}, r"holds a dict, expected an \(images, labels\) pair"),
        ((torch.zeros(2, 28, 28), torch.zeros(2, dtype=torch.long)), "expected uint8"),
        ((torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(2)), "expected integers"),
        (
            (torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 12])),
            r"label 12 at position 1 outside \[0, 9\]",
        ),
        ((torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([-1, 0])), r"label -1 at position 0 outside"),
        ((torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2])), "3 labels for 2 images"),
    ],
)
def test_malformed_processed_file_names_it(content: object, reason: str, tmp_path: Path) -> None:
    folder = tmp_path / "MNIST" / "processed"
    folder.mkdir(parents=True)
    torch.save(content, folder / "test.pt")
    with pytest.raises(DatasetNotFoundError, match=reason) as caught:
        load_dataset("mnist", "test", root=tmp_path)
    assert str(folder / "test.pt") in str(caught.value) and "\n" not in str(caught.value)


def test_raw_files_win_over_processed_ones(mnist_writer: Writer, tmp_path: Path) -> None:
    written = mnist_writer(tmp_path)
    write_mnist_processed(tmp_path / "other", "MNIST")
    (tmp_path / "MNIST" / "processed").mkdir()
    (tmp_path / "other" / "MNIST" / "processed" / "test.pt").rename(tmp_path / "MNIST" / "processed" / "test.pt")
    assert _load("mnist", "test", tmp_path).targets.tolist() == written.splits["test"].labels.tolist()


def test_cifar_labels_outside_the_classes_name_the_file_and_the_label(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    content = read_cifar_pickle(path)
    content["fine_labels"] = [*content["fine_labels"][:-1], 100]
    path.write_bytes(pickle.dumps(content, protocol=2))
    last = len(content["fine_labels"]) - 1
    with pytest.raises(DatasetNotFoundError, match=rf"fine_labels 100 at position {last} outside \[0, 99\]") as caught:
        load_dataset("cifar100", "test", root=tmp_path)
    assert str(path) in str(caught.value)


class _RunsCode:
    """Unpickling it would create a marker file (what a malicious file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))
