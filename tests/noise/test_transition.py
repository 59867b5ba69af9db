"""Transition matrices: every kind is row-stochastic, the class maps are the published ones, files are validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from robustcam.noise import (
    CLASS_MAPS,
    NOISE_KINDS,
    NoiseFileError,
    coarse_labels_from_targets,
    datasets_with_class_maps,
    list_noise_kinds,
    next_in_group_map,
    register_noise_kind,
    transition_matrix,
)
from robustcam.registry import UnknownNameError

# Written out here, independently of robustcam.noise.class_maps (torchvision's batches.meta order).
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# A superclass assignment for 12 classes that is NOT made of consecutive blocks.
SCATTERED_COARSE = np.array([2, 0, 1, 2, 0, 1, 1, 2, 0, 2, 1, 0])


def matrix_kwargs(kind: str, num_classes: int, tmp_path: Path) -> dict[str, Any]:
    """Arguments that make ``transition_matrix(kind, ...)`` valid, for the registry-wide tests."""
    if kind == "asymmetric":
        return {"rate": 0.3, "class_map": {0: 1, 1: 0}}
    if kind == "matrix":
        rng = np.random.default_rng(3)
        matrix = rng.random((num_classes, num_classes))
        path = tmp_path / "m.npy"
        np.save(path, matrix / matrix.sum(axis=1, keepdims=True))
        return {"rate": None, "path": path}
    return {"rate": 0.3}


MATRIX_KINDS = [name for name in sorted(NOISE_KINDS) if NOISE_KINDS.get(name).build is not None]


def test_registry_holds_the_issue_kinds() -> None:
    assert set(list_noise_kinds()) >= {"symmetric", "asymmetric", "pairflip", "matrix", "human"}
    assert set(MATRIX_KINDS) >= {"symmetric", "asymmetric", "pairflip", "matrix"}


@pytest.mark.parametrize("num_classes", [2, 5, 10])
@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_every_transition_matrix_is_row_stochastic(kind: str, num_classes: int, tmp_path: Path) -> None:
    matrix = transition_matrix(kind, num_classes, **matrix_kwargs(kind, num_classes, tmp_path))
    assert matrix.shape == (num_classes, num_classes)
    assert matrix.dtype == np.float64
    assert (matrix >= 0).all()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("kind", [k for k in MATRIX_KINDS if NOISE_KINDS.get(k).uses_rate])
def test_rate_zero_is_the_identity(kind: str, tmp_path: Path) -> None:
    kwargs = matrix_kwargs(kind, 6, tmp_path) | {"rate": 0.0}
    np.testing.assert_array_equal(transition_matrix(kind, 6, **kwargs), np.eye(6))


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), float("inf"), None, "0.2", True])
@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "asymmetric"])
def test_rate_outside_zero_one_is_a_one_line_error(kind: str, rate: Any) -> None:
    with pytest.raises(ValueError, match="rate") as info:
        transition_matrix(kind, 10, rate, dataset="cifar10")
    assert "\n" not in str(info.value)


def test_rate_bounds_are_inclusive() -> None:
    np.testing.assert_array_equal(transition_matrix("pairflip", 3, 1), np.roll(np.eye(3), 1, axis=1))


# --------------------------------------------------------------------------- symmetric


def test_symmetric_other_convention() -> None:
    matrix = transition_matrix("symmetric", 10, 0.4)
    np.testing.assert_allclose(np.diag(matrix), 0.6)
    np.testing.assert_allclose(matrix[~np.eye(10, dtype=bool)], 0.4 / 9)


def test_symmetric_uniform_convention() -> None:
    matrix = transition_matrix("symmetric", 10, 0.4, convention="uniform")
    np.testing.assert_allclose(np.diag(matrix), 1 - 0.4 + 0.04)
    np.testing.assert_allclose(matrix[~np.eye(10, dtype=bool)], 0.04)
    # The probability of a wrong label is rate (C - 1) / C.
    np.testing.assert_allclose(1 - np.diag(matrix), 0.4 * 9 / 10)


def test_symmetric_uniform_at_rate_one_is_uniform_resampling() -> None:
    np.testing.assert_allclose(transition_matrix("symmetric", 4, 1.0, convention="uniform"), 0.25)


def test_unknown_convention_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="convention must be one of other, uniform"):
        transition_matrix("symmetric", 10, 0.2, convention="sym")  # type: ignore[arg-type]


def test_convention_is_refused_by_kinds_that_do_not_take_it() -> None:
    with pytest.raises(ValueError, match="'pairflip' does not take convention"):
        transition_matrix("pairflip", 10, 0.2, convention="uniform")


def test_unknown_kind_is_an_error_with_did_you_mean() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'symmetric'"):
        transition_matrix("symetric", 10, 0.2)


def test_num_classes_below_two_is_an_error() -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        transition_matrix("symmetric", 1, 0.2)


# --------------------------------------------------------------------------- asymmetric


def expected_from_pairs(num_classes: int, rate: float, pairs: dict[int, int]) -> np.ndarray:
    expected = np.eye(num_classes)
    for source, destination in pairs.items():
        expected[source, source] = 1 - rate
        expected[source, destination] = rate
    return expected


def test_cifar10_map_by_class_name() -> None:
    matrix = transition_matrix("asymmetric", 10, 0.3, dataset="cifar10")
    index = {name: i for i, name in enumerate(CIFAR10_NAMES)}
    flips = {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")}
    for source in CIFAR10_NAMES:
        for destination in CIFAR10_NAMES:
            value = matrix[index[source], index[destination]]
            if (source, destination) in flips:
                assert value == pytest.approx(0.3), (source, destination)
            elif source == destination:
                mapped = any(s == source for s, _ in flips)
                assert value == pytest.approx(0.7 if mapped else 1.0), source
            else:
                assert value == 0.0, (source, destination)


@pytest.mark.parametrize("dataset", ["mnist", "digits"])
def test_digit_maps(dataset: str) -> None:
    matrix = transition_matrix("asymmetric", 10, 0.25, dataset=dataset)
    np.testing.assert_array_equal(matrix, expected_from_pairs(10, 0.25, {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}))


def test_next_class_within_superclass_on_scattered_groups() -> None:
    mapping = next_in_group_map(SCATTERED_COARSE, num_classes=12)
    # group 0 = {1, 4, 8, 11}, group 1 = {2, 5, 6, 10}, group 2 = {0, 3, 7, 9}; the last of each wraps.
    assert mapping == {1: 4, 4: 8, 8: 11, 11: 1, 2: 5, 5: 6, 6: 10, 10: 2, 0: 3, 3: 7, 7: 9, 9: 0}
    for source, destination in mapping.items():
        assert SCATTERED_COARSE[source] == SCATTERED_COARSE[destination]


def test_cifar100_map_uses_the_given_superclasses_not_index_blocks() -> None:
    rng = np.random.default_rng(7)
    coarse = rng.permutation(np.repeat(np.arange(20), 5))  # 20 superclasses of 5, scattered
    matrix = transition_matrix("asymmetric", 100, 0.4, dataset="cifar100", coarse_labels=coarse)
    for source in range(100):
        members = np.flatnonzero(coarse == coarse[source])
        position = int(np.flatnonzero(members == source)[0])
        destination = members[(position + 1) % 5]
        assert matrix[source, source] == pytest.approx(0.6)
        assert matrix[source, destination] == pytest.approx(0.4)
        assert np.count_nonzero(matrix[source]) == 2
    # The last member of a superclass wraps to its first member.
    last = int(np.flatnonzero(coarse == 0)[-1])
    assert matrix[last, int(np.flatnonzero(coarse == 0)[0])] == pytest.approx(0.4)


def test_cifar100_map_accepts_a_tensor_from_fine_to_coarse() -> None:
    coarse = torch.as_tensor(np.arange(100) % 20)
    matrix = transition_matrix("asymmetric", 100, 0.2, dataset="cifar100", coarse_labels=coarse)
    assert matrix[0, 20] == pytest.approx(0.2) and matrix[80, 0] == pytest.approx(0.2)


def test_cifar100_without_coarse_labels_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs coarse_labels="):
        transition_matrix("asymmetric", 100, 0.2, dataset="cifar100")


def test_coarse_labels_of_the_wrong_length_point_to_the_per_sample_helper() -> None:
    with pytest.raises(ValueError, match="coarse_labels_from_targets"):
        transition_matrix("asymmetric", 100, 0.2, dataset="cifar100", coarse_labels=np.zeros(500, dtype=int))


def test_coarse_labels_from_per_sample_targets() -> None:
    fine = np.array([3, 0, 2, 1, 3, 0])
    coarse = np.array([1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(coarse_labels_from_targets(fine, coarse, num_classes=5), [0, 0, 1, 1, -1])
    with pytest.raises(ValueError, match="fine class 3 appears with several superclasses"):
        coarse_labels_from_targets(fine, np.array([1, 0, 1, 0, 0, 0]), num_classes=5)


def test_custom_class_map_from_yaml() -> None:
    class_map = yaml.safe_load("{0: 3, 4: 1, '2': 0}")
    matrix = transition_matrix("asymmetric", 5, 0.2, class_map=class_map)
    np.testing.assert_array_equal(matrix, expected_from_pairs(5, 0.2, {0: 3, 4: 1, 2: 0}))


def test_custom_class_map_overrides_the_dataset_map() -> None:
    matrix = transition_matrix("asymmetric", 10, 0.2, dataset="cifar10", class_map={0: 1})
    np.testing.assert_array_equal(matrix, expected_from_pairs(10, 0.2, {0: 1}))


@pytest.mark.parametrize(
    ("class_map", "message"),
    [
        ({0: 10}, "outside"),
        ({1: 1}, "maps class 1 to itself"),
        ({"a": 1}, "class_map source"),
        ({}, "empty"),
    ],
)
def test_invalid_class_maps_are_errors(class_map: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        transition_matrix("asymmetric", 10, 0.2, class_map=class_map)


def test_asymmetric_for_a_dataset_without_a_map_names_the_datasets_with_maps() -> None:
    with pytest.raises(ValueError) as info:
        transition_matrix("asymmetric", 10, 0.2, dataset="svhn")
    message = str(info.value)
    assert "\n" not in message
    assert "'svhn' has no asymmetric class map" in message
    for dataset in ("cifar10", "cifar100", "mnist", "digits"):
        assert dataset in message
    assert "class_map=" in message


def test_asymmetric_without_dataset_or_map_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs dataset="):
        transition_matrix("asymmetric", 10, 0.2)


def test_a_map_for_another_class_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="cifar10 is for 10 classes, got num_classes=100"):
        transition_matrix("asymmetric", 100, 0.2, dataset="cifar10")


def test_datasets_with_maps() -> None:
    assert {"cifar10", "cifar100", "mnist", "digits"} <= set(datasets_with_class_maps())
    assert set(datasets_with_class_maps()) == set(CLASS_MAPS)


# --------------------------------------------------------------------------- pairflip


def test_pairflip() -> None:
    matrix = transition_matrix("pairflip", 4, 0.45)
    expected = np.array(
        [[0.55, 0.45, 0, 0], [0, 0.55, 0.45, 0], [0, 0, 0.55, 0.45], [0.45, 0, 0, 0.55]], dtype=np.float64
    )
    np.testing.assert_allclose(matrix, expected)


# --------------------------------------------------------------------------- matrix files


def test_matrix_from_yaml(tmp_path: Path) -> None:
    rows = [[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.25, 0.25, 0.5]]
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(rows))
    np.testing.assert_allclose(transition_matrix("matrix", 3, None, path=path), rows)
    wrapped = tmp_path / "wrapped.yml"
    wrapped.write_text(yaml.safe_dump({"matrix": rows}))
    np.testing.assert_allclose(transition_matrix("matrix", 3, None, path=wrapped), rows)


def test_matrix_from_npy(tmp_path: Path) -> None:
    rows = np.array([[0.5, 0.5], [0.1, 0.9]])
    np.save(tmp_path / "t.npy", rows)
    np.testing.assert_allclose(transition_matrix("matrix", 2, None, path=tmp_path / "t.npy"), rows)


def test_matrix_rows_within_tolerance_are_renormalised(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.array([[0.5, 0.5 + 5e-7], [0.1, 0.9]]))
    matrix = transition_matrix("matrix", 2, None, path=tmp_path / "t.npy")
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-15)


INVALID_MATRICES = [
    ([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.3, 0.3, 0.3]], "row 2 sums to 0.9"),
    ([[0.9, 0.1, 0.0], [0.0, 1.2, -0.2], [0.0, 0.0, 1.0]], r"entry \[1, 2\] is -0.2, entries must be >= 0"),
    ([[0.9, 0.1], [0.0, 1.0], [0.5, 0.5]], "not square"),
    ([[0.5, 0.5], [0.5, 0.5]], "2x2 but there are 3 classes"),
    ([[0.9, 0.1, 0.0], [0.0, 1.0], [0.0, 0.0, 1.0]], "not square: 3 rows but row 1 has 2 entries"),
    ([[1.0, 0.0, 0.0], [0.0, float("nan"), 0.0], [0.0, 0.0, 1.0]], "entry \\[1, 1\\] is nan"),
]


@pytest.mark.parametrize(
    ("rows", "problem", "suffix"),
    [
        (rows, problem, suffix)
        for rows, problem in INVALID_MATRICES
        for suffix in (".yaml", ".npy")
        if suffix == ".yaml" or len({len(row) for row in rows}) == 1
    ],  # a ragged matrix cannot be a .npy array
)
def test_invalid_matrix_files_are_one_line_errors_naming_the_problem(
    rows: list[list[float]], problem: str, suffix: str, tmp_path: Path
) -> None:
    path = tmp_path / f"bad{suffix}"
    if suffix == ".npy":
        np.save(path, np.array(rows))
    else:
        path.write_text(yaml.safe_dump(rows))
    with pytest.raises(NoiseFileError, match=problem) as info:
        transition_matrix("matrix", 3, None, path=path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert isinstance(info.value, ValueError)


def test_matrix_file_that_is_not_a_list_of_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("rows: 3\n")
    with pytest.raises(NoiseFileError, match="list of rows"):
        transition_matrix("matrix", 3, None, path=path)
    path.write_text("[[a, b], [c, d]]\n")
    with pytest.raises(NoiseFileError, match="entries must be numbers"):
        transition_matrix("matrix", 2, None, path=path)


def test_matrix_file_errors_for_missing_files_and_suffixes(tmp_path: Path) -> None:
    with pytest.raises(NoiseFileError, match="does not exist"):
        transition_matrix("matrix", 3, None, path=tmp_path / "missing.yaml")
    (tmp_path / "t.csv").write_text("1,0\n0,1\n")
    with pytest.raises(NoiseFileError, match="unsupported suffix '.csv'"):
        transition_matrix("matrix", 2, None, path=tmp_path / "t.csv")
    with pytest.raises(ValueError, match="needs path="):
        transition_matrix("matrix", 2, None)


def test_pickled_npy_matrix_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.array([{"matrix": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NoiseFileError, match="plain .npy array"):
        transition_matrix("matrix", 2, None, path=tmp_path / "t.npy")


def test_matrix_kind_takes_no_rate(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.eye(2))
    with pytest.raises(ValueError, match="takes no rate"):
        transition_matrix("matrix", 2, 0.2, path=tmp_path / "t.npy")


def test_path_is_refused_by_kinds_that_do_not_take_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'symmetric' does not take path"):
        transition_matrix("symmetric", 2, 0.2, path=tmp_path / "t.npy")


def test_human_kind_has_no_transition_matrix() -> None:
    with pytest.raises(ValueError, match="replaces labels per sample"):
        transition_matrix("human", 10, None)


# --------------------------------------------------------------------------- registry


def test_registering_a_kind_takes_its_parameters_from_the_signature() -> None:
    name = "test_only_identity"

    @register_noise_kind(name)
    def identity(num_classes: int, rate: float, *, dataset: str | None = None) -> np.ndarray:
        """Identity (test only)."""
        return np.eye(num_classes)

    try:
        kind = NOISE_KINDS.get(name)
        assert kind.parameters == () and kind.context == ("dataset",) and kind.summary == "Identity (test only)."
        np.testing.assert_array_equal(transition_matrix(name, 3, 0.5, dataset="x"), np.eye(3))
        with pytest.raises(ValueError, match="already registered"):
            register_noise_kind(name)(identity)
    finally:
        NOISE_KINDS._entries.pop(name)


def test_registering_a_kind_with_an_unknown_parameter_is_an_error() -> None:
    def bad(num_classes: int, rate: float, *, temperature: float = 1.0) -> np.ndarray:
        return np.eye(num_classes)

    with pytest.raises(ValueError, match="unknown parameter"):
        register_noise_kind("test_only_bad")(bad)
    assert "test_only_bad" not in NOISE_KINDS
