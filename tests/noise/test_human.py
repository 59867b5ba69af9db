"""Human labels (CIFAR-10N / CIFAR-100N): safe loading from .pt/.npy/.npz and use in corrupt_labels."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from robustcam.noise import CIFAR10N_KEYS, CIFAR100N_KEYS, NoiseFileError, corrupt_labels, human_labels
from robustcam.noise.human import numpy_array_globals, read_label_file

NUM_SAMPLES = 200


def cifar10n_content() -> dict[str, np.ndarray]:
    """A CIFAR-10N-like dict: clean labels plus five noisy annotation sets (numpy int64 arrays)."""
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 10, size=NUM_SAMPLES)
    content = {"clean_label": clean}
    for index, key in enumerate(CIFAR10N_KEYS):
        noisy = clean.copy()
        wrong = rng.random(NUM_SAMPLES) < 0.1 * (index + 1)
        noisy[wrong] = (clean[wrong] + 1 + rng.integers(0, 9, size=int(wrong.sum()))) % 10
        content[key] = noisy
    return content


@pytest.fixture
def cifar10n_pt(tmp_path: Path) -> Path:
    """Written the way CIFAR-10_human.pt is: ``torch.save`` of a dict of numpy arrays."""
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save(cifar10n_content(), path)
    return path


def test_cifar10n_pt_of_numpy_arrays_loads_with_weights_only(cifar10n_pt: Path) -> None:
    content = cifar10n_content()
    for key in (*CIFAR10N_KEYS, "clean_label"):
        labels = human_labels(cifar10n_pt, key)
        assert labels.dtype == np.int64 and labels.shape == (NUM_SAMPLES,)
        np.testing.assert_array_equal(labels, content[key])


def test_loading_does_not_leave_numpy_globals_allowed(cifar10n_pt: Path) -> None:
    before = set(torch.serialization.get_safe_globals())
    human_labels(cifar10n_pt, "aggre_label")
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(Exception, match="(?i)weights only load failed|unsupported global"):
        torch.load(cifar10n_pt, weights_only=True)


def test_loading_keeps_globals_the_user_allowed(cifar10n_pt: Path) -> None:
    with torch.serialization.safe_globals([np.ndarray]):
        human_labels(cifar10n_pt, "aggre_label")
        assert np.ndarray in torch.serialization.get_safe_globals()


def rewrite_pickle(source: Path, target: Path, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(source) as archive:
        entries = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            if name.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            archive.writestr(name, data)


def test_pt_written_with_numpy_1_module_names_loads(cifar10n_pt: Path, tmp_path: Path) -> None:
    # The original CIFAR-N files predate numpy 2: their pickles name numpy.core.multiarray._reconstruct.
    old = tmp_path / "old_numpy.pt"
    rewrite_pickle(cifar10n_pt, old, b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(human_labels(old, "worse_label"), cifar10n_content()["worse_label"])


def test_legacy_torch_serialization_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(cifar10n_content(), path, _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(human_labels(path, "random_label2"), cifar10n_content()["random_label2"])


def test_cifar100n_pt_of_tensors(tmp_path: Path) -> None:
    path = tmp_path / "CIFAR-100_human.pt"
    noisy = torch.arange(NUM_SAMPLES) % 100
    torch.save({"clean_label": noisy.clone(), CIFAR100N_KEYS[0]: noisy}, path)
    np.testing.assert_array_equal(human_labels(path, "noisy_label"), noisy.numpy())


class RunsCode:
    """An object whose unpickling would create a marker file (what a malicious file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pt_with_an_arbitrary_object_is_refused_without_running_it(zip_format: bool, tmp_path: Path) -> None:
    marker = tmp_path / "was_run"
    path = tmp_path / "evil.pt"
    torch.save({"aggre_label": RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(NoiseFileError, match="refusing to load label file .*mkdir") as info:
        human_labels(path, "aggre_label")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_pt_with_an_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"aggre_label": np.array([1, 2, 3], dtype=object)}, path)
    with pytest.raises(NoiseFileError, match="refusing to load label file .*ObjectDType"):
        human_labels(path, "aggre_label")


def test_allowed_globals_are_only_numpy_array_reconstruction() -> None:
    names = set()
    for entry in numpy_array_globals():
        obj = entry[0] if isinstance(entry, tuple) else entry
        names.add(entry[1] if isinstance(entry, tuple) else f"{obj.__module__}.{obj.__qualname__}")
        assert obj.__module__.startswith("numpy")
    assert names >= {"numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
    assert not any("Object" in name for name in names)


def test_unknown_key_lists_the_keys_present(cifar10n_pt: Path) -> None:
    with pytest.raises(NoiseFileError) as info:
        human_labels(cifar10n_pt, "aggregate")
    message = str(info.value)
    assert "no key 'aggregate'" in message
    for key in (*CIFAR10N_KEYS, "clean_label"):
        assert key in message


def test_missing_key_for_a_dict_file_lists_the_keys(cifar10n_pt: Path) -> None:
    with pytest.raises(NoiseFileError, match="pass key= one of: aggre_label, clean_label"):
        human_labels(cifar10n_pt)


def test_plain_npy_array(tmp_path: Path) -> None:
    labels = cifar10n_content()["aggre_label"]
    np.save(tmp_path / "aggre.npy", labels.astype(np.int16))
    np.testing.assert_array_equal(human_labels(tmp_path / "aggre.npy"), labels)
    with pytest.raises(NoiseFileError, match="one unnamed label array"):
        human_labels(tmp_path / "aggre.npy", "aggre_label")


def test_structured_npy_array_fields_are_keys(tmp_path: Path) -> None:
    content = cifar10n_content()
    structured = np.zeros(NUM_SAMPLES, dtype=[(key, np.int64) for key in content])
    for key, values in content.items():
        structured[key] = values
    np.save(tmp_path / "cifar10n.npy", structured)
    np.testing.assert_array_equal(human_labels(tmp_path / "cifar10n.npy", "worse_label"), content["worse_label"])


def test_npz_archive(tmp_path: Path) -> None:
    content = cifar10n_content()
    np.savez(tmp_path / "cifar10n.npz", **content)  # type: ignore[arg-type]
    np.testing.assert_array_equal(human_labels(tmp_path / "cifar10n.npz", "random_label1"), content["random_label1"])


def test_npy_holding_a_pickled_dict_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "dict.npy", np.array(cifar10n_content(), dtype=object), allow_pickle=True)
    with pytest.raises(NoiseFileError, match="pickled object"):
        human_labels(tmp_path / "dict.npy", "aggre_label")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0.5, 1.0]), "non-integer"),
        (np.array([[0, 1]]), "expected 1-D labels"),
        (np.array([-1, 2]), "negative labels"),
    ],
)
def test_label_arrays_that_are_not_labels_are_refused(values: np.ndarray, message: str, tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", values)
    with pytest.raises(NoiseFileError, match=message):
        human_labels(tmp_path / "bad.npy")


def test_missing_file_and_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(NoiseFileError, match="does not exist"):
        human_labels(tmp_path / "CIFAR-10_human.pt", "aggre_label")
    (tmp_path / "labels.json").write_text("[]")
    with pytest.raises(NoiseFileError, match="unsupported suffix '.json'"):
        human_labels(tmp_path / "labels.json")


def test_garbled_pt_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "broken.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(NoiseFileError) as info:
        human_labels(tmp_path / "broken.pt", "aggre_label")
    assert "\n" not in str(info.value)


def test_read_label_file_returns_every_array(cifar10n_pt: Path) -> None:
    content = read_label_file(cifar10n_pt)
    assert isinstance(content, dict) and set(content) == {"clean_label", *CIFAR10N_KEYS}


# --------------------------------------------------------------------------- corrupt_labels with human noise


def test_corrupt_labels_uses_the_file_labels_and_reports_what_they_realise(cifar10n_pt: Path) -> None:
    content = cifar10n_content()
    result = corrupt_labels(
        content["clean_label"], "human", num_classes=10, seed=0, path=cifar10n_pt, key="worse_label"
    )
    np.testing.assert_array_equal(result.labels.numpy(), content["worse_label"])
    expected_flipped = content["worse_label"] != content["clean_label"]
    np.testing.assert_array_equal(result.flipped.numpy(), expected_flipped)
    assert result.realized_rate == pytest.approx(expected_flipped.mean())
    counts = np.zeros((10, 10))
    np.add.at(counts, (content["clean_label"], content["worse_label"]), 1)
    np.testing.assert_allclose(result.realized_matrix, counts / counts.sum(axis=1, keepdims=True))


def test_human_labels_of_the_wrong_length_are_an_error(cifar10n_pt: Path) -> None:
    with pytest.raises(NoiseFileError, match="has 200 labels but there are 150 samples"):
        corrupt_labels(
            cifar10n_content()["clean_label"][:150],
            "human",
            num_classes=10,
            seed=0,
            path=cifar10n_pt,
            key="aggre_label",
        )


def test_clean_label_disagreeing_with_the_dataset_is_an_error(cifar10n_pt: Path) -> None:
    shuffled = np.random.default_rng(1).permutation(cifar10n_content()["clean_label"])
    with pytest.raises(NoiseFileError, match="clean_label disagrees with the given labels"):
        corrupt_labels(shuffled, "human", num_classes=10, seed=0, path=cifar10n_pt, key="aggre_label")


def test_human_labels_outside_the_class_range_are_an_error(cifar10n_pt: Path) -> None:
    with pytest.raises(NoiseFileError, match="outside"):
        corrupt_labels(
            np.zeros(NUM_SAMPLES, dtype=int), "human", num_classes=5, seed=0, path=cifar10n_pt, key="aggre_label"
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.2}, "takes no rate"),
        ({"sampling": "bernoulli"}, "sampling does not apply"),
        ({"path": None}, "needs path="),
        ({"class_map": {0: 1}}, "does not take class_map"),
    ],
)
def test_human_kind_argument_errors(kwargs: dict[str, object], message: str, cifar10n_pt: Path) -> None:
    arguments: dict[str, object] = {"path": cifar10n_pt, "key": "aggre_label"} | kwargs
    rate = cast("float | None", arguments.pop("rate", None))
    with pytest.raises(ValueError, match=message):
        corrupt_labels(
            cifar10n_content()["clean_label"],
            "human",
            rate,
            num_classes=10,
            seed=0,
            **arguments,  # type: ignore[arg-type]
        )


def _cifar100n_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A CIFAR-100N-like file with its fine and its 20-class superclass annotations."""
    rng = np.random.default_rng(3)
    fine = np.arange(NUM_SAMPLES) % 100
    coarse = fine // 5
    noisy = fine.copy()
    wrong = rng.random(NUM_SAMPLES) < 0.4
    noisy[wrong] = (fine[wrong] + 1) % 100
    path = tmp_path / "CIFAR-100_human.pt"
    content = {"clean_label": fine, "noisy_label": noisy, "clean_coarse_label": coarse, "noisy_coarse_label": coarse}
    torch.save({key: torch.from_numpy(value) for key, value in content.items()}, path)
    return path, fine


def test_coarse_cifar100n_labels_for_the_fine_classes_are_refused(tmp_path: Path) -> None:
    path, fine = _cifar100n_file(tmp_path)
    assert corrupt_labels(fine, "human", num_classes=100, seed=0, path=path, key="noisy_label").realized_rate > 0
    with pytest.raises(NoiseFileError) as caught:
        corrupt_labels(fine, "human", num_classes=100, seed=0, path=path, key="noisy_coarse_label")
    message = str(caught.value)
    assert "'noisy_coarse_label'" in message and "20-class" in message and "100 classes" in message
    assert str(path) in message


def test_coarse_labels_fit_a_twenty_class_dataset(tmp_path: Path) -> None:
    path, fine = _cifar100n_file(tmp_path)
    result = corrupt_labels(fine // 5, "human", num_classes=20, seed=0, path=path, key="noisy_coarse_label")
    assert result.realized_rate == 0.0


def test_labels_of_a_coarser_class_set_are_refused_whatever_their_key(tmp_path: Path) -> None:
    true = np.arange(NUM_SAMPLES) % 10
    path = tmp_path / "labels.npy"
    np.save(path, true // 5)  # two "superclasses" of ten classes
    with pytest.raises(NoiseFileError, match=r"uses 2 distinct labels but the true labels use 10 of the 10 classes"):
        corrupt_labels(true, "human", num_classes=10, seed=0, path=path)


def test_a_label_outside_the_classes_is_named(tmp_path: Path) -> None:
    true = np.arange(NUM_SAMPLES) % 10
    path = tmp_path / "labels.npy"
    np.save(path, np.where(np.arange(NUM_SAMPLES) == 7, 12, true))
    with pytest.raises(NoiseFileError, match=r"has label 12, outside \[0, 9\] for 10 classes"):
        corrupt_labels(true, "human", num_classes=10, seed=0, path=path)
