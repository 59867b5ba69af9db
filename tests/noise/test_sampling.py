"""corrupt_labels: exact sampling realises T to the count, Bernoulli within sampling error, seeds reproduce."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcam.data import load_dataset
from robustcam.data.torchvision_datasets import CIFAR100Dataset
from robustcam.noise import corrupt_labels, realized_transition_matrix, transition_matrix
from robustcam.noise.sampling import largest_remainder_counts


def unbalanced_labels(count: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """Labels with unequal class counts (so per-class rounding is exercised)."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(1.0, 2.0, num_classes)
    return rng.choice(num_classes, size=count, p=weights / weights.sum())


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def expected_destination_counts(flips: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (floor and ceil of the quota) that largest-remainder counts must meet."""
    quotas = flips * weights / weights.sum()
    return np.floor(quotas + 1e-9), np.ceil(quotas - 1e-9)


# --------------------------------------------------------------------------- exact


def test_exact_symmetric_realises_the_matrix_to_the_count() -> None:
    labels = unbalanced_labels(1000, 10)
    result = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=0)
    noisy = result.labels.numpy()
    for cls in range(10):
        members = labels == cls
        n_c = int(members.sum())
        flips = round_half_up(0.4 * n_c)
        assert int((noisy[members] != cls).sum()) == flips, cls
        destinations = np.bincount(noisy[members], minlength=10)
        weights = np.full(10, 1.0)
        weights[cls] = 0.0
        low, high = expected_destination_counts(flips, weights)
        others = np.arange(10) != cls
        assert (destinations[others] >= low[others]).all() and (destinations[others] <= high[others]).all()
        assert destinations[others].sum() == flips
    assert result.realized_rate == pytest.approx(
        sum(round_half_up(0.4 * (labels == c).sum()) for c in range(10)) / 1000
    )


def test_exact_matrix_with_unequal_destinations_matches_to_the_count(tmp_path: Path) -> None:
    matrix = np.array([[0.5, 0.3, 0.2], [0.0, 0.9, 0.1], [0.125, 0.125, 0.75]])
    np.save(tmp_path / "t.npy", matrix)
    labels = np.repeat(np.arange(3), [200, 100, 40])
    result = corrupt_labels(labels, "matrix", None, num_classes=3, seed=5, path=tmp_path / "t.npy")
    counts = np.array([[100, 60, 40], [0, 90, 10], [5, 5, 30]])
    np.testing.assert_array_equal(result.realized_matrix * np.array([[200], [100], [40]]), counts)


def test_exact_asymmetric_flips_only_mapped_classes() -> None:
    labels = np.repeat(np.arange(10), 50)
    result = corrupt_labels(labels, "asymmetric", 0.3, num_classes=10, seed=1, dataset="cifar10")
    np.testing.assert_allclose(result.realized_matrix, transition_matrix("asymmetric", 10, 0.3, dataset="cifar10"))
    flipped_classes = set(np.unique(labels[result.flipped.numpy()]).tolist())
    assert flipped_classes == {2, 3, 4, 5, 9}


def test_uniform_convention_realised_flip_rate() -> None:
    labels = np.repeat(np.arange(10), 100)
    result = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=0, convention="uniform")
    assert result.realized_rate == pytest.approx(0.4 * 9 / 10)
    np.testing.assert_allclose(result.realized_matrix, transition_matrix("symmetric", 10, 0.4, convention="uniform"))


def test_ties_in_destination_counts_are_not_broken_by_class_index() -> None:
    # 10 flips over 9 destinations: one destination gets 2; which one must vary with the class and seed.
    labels = np.repeat(np.arange(10), 25)  # round(0.4 * 25) = 10 flips per class
    winners = set()
    for seed in range(5):
        result = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=seed)
        for cls in range(10):
            counts = np.bincount(result.labels.numpy()[labels == cls], minlength=10)
            counts[cls] = 0
            assert sorted(counts[counts > 0].tolist()) == [1] * 8 + [2]
            winners.add(int(np.argmax(counts)) - cls)
    assert len(winners) > 3


def test_largest_remainder_counts_sum_and_respect_zero_weights() -> None:
    rng = np.random.default_rng(0)
    for total in range(30):
        weights = np.array([0.0, 0.2, 0.0, 0.5, 0.3])
        counts = largest_remainder_counts(total, weights, rng)
        assert counts.sum() == total
        assert counts[0] == 0 and counts[2] == 0
        quotas = total * weights / weights.sum()
        assert (np.abs(counts - quotas) < 1).all()


def test_exact_noise_levels_are_nested() -> None:
    labels = unbalanced_labels(600, 6, seed=2)
    low = corrupt_labels(labels, "symmetric", 0.2, num_classes=6, seed=9).flipped.numpy()
    high = corrupt_labels(labels, "symmetric", 0.5, num_classes=6, seed=9).flipped.numpy()
    assert low.sum() < high.sum()
    assert not (low & ~high).any()


# --------------------------------------------------------------------------- bernoulli


@pytest.mark.parametrize("convention", ["other", "uniform"])
def test_bernoulli_within_sampling_error(convention: str) -> None:
    num_classes, per_class, rate = 5, 4000, 0.3
    labels = np.repeat(np.arange(num_classes), per_class)
    result = corrupt_labels(
        labels,
        "symmetric",
        rate,
        num_classes=num_classes,
        seed=3,
        sampling="bernoulli",
        convention=convention,  # type: ignore[arg-type]
    )
    expected = transition_matrix("symmetric", num_classes, rate, convention=convention)  # type: ignore[arg-type]
    # Each realised entry is a binomial proportion: within 5 standard errors of T.
    sigma = np.sqrt(expected * (1 - expected) / per_class)
    assert (np.abs(result.realized_matrix - expected) <= 5 * sigma + 1e-12).all()
    expected_rate = 1 - float(np.diag(expected).mean())
    rate_sigma = math.sqrt(expected_rate * (1 - expected_rate) / labels.size)
    assert abs(result.realized_rate - expected_rate) <= 5 * rate_sigma
    # Not exact: Bernoulli sampling does not hit the exact counts (it would be astronomically unlikely).
    assert not np.allclose(result.realized_matrix, expected, atol=1e-12)


def test_bernoulli_never_picks_a_zero_probability_class() -> None:
    labels = np.repeat(np.arange(10), 300)
    result = corrupt_labels(labels, "pairflip", 0.45, num_classes=10, seed=4, sampling="bernoulli")
    allowed = transition_matrix("pairflip", 10, 0.45) > 0
    assert (result.realized_matrix[~allowed] == 0).all()


def test_bernoulli_uniform_can_redraw_the_true_class() -> None:
    labels = np.zeros(2000, dtype=int)
    result = corrupt_labels(labels, "symmetric", 1.0, num_classes=4, seed=0, sampling="bernoulli", convention="uniform")
    # Every label is redrawn uniformly, so about a quarter keep class 0.
    assert 0.2 < 1 - result.realized_rate < 0.3


# --------------------------------------------------------------------------- seeds and inputs


@pytest.mark.parametrize("sampling", ["exact", "bernoulli"])
def test_same_seed_same_labels_and_different_seed_different(sampling: str) -> None:
    labels = unbalanced_labels(500, 10)
    first = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=11, sampling=sampling)  # type: ignore[arg-type]
    again = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=11, sampling=sampling)  # type: ignore[arg-type]
    other = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=12, sampling=sampling)  # type: ignore[arg-type]
    assert torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)


def test_labels_do_not_depend_on_global_rngs() -> None:
    labels = unbalanced_labels(300, 10)
    np.random.seed(1)
    torch.manual_seed(1)
    first = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=0, sampling="bernoulli")
    np.random.seed(2)
    torch.manual_seed(2)
    np.random.random(100)
    again = corrupt_labels(labels, "symmetric", 0.4, num_classes=10, seed=0, sampling="bernoulli")
    assert torch.equal(first.labels, again.labels)


def test_golden_labels_guard_cross_machine_reproducibility() -> None:
    # PCG64 + uniform doubles are specified bit for bit; these values must never change.
    labels = np.repeat(np.arange(3), 4)
    exact = corrupt_labels(labels, "symmetric", 0.5, num_classes=3, seed=2024)
    bernoulli = corrupt_labels(labels, "symmetric", 0.5, num_classes=3, seed=2024, sampling="bernoulli")
    assert exact.labels.tolist() == GOLDEN_EXACT
    assert bernoulli.labels.tolist() == GOLDEN_BERNOULLI


GOLDEN_EXACT = [1, 2, 0, 0, 2, 1, 1, 0, 2, 2, 0, 1]
GOLDEN_BERNOULLI = [2, 0, 1, 0, 0, 2, 1, 2, 2, 1, 2, 2]


def test_rate_zero_leaves_already_noisy_labels_unchanged() -> None:
    already_noisy = corrupt_labels(unbalanced_labels(400, 10), "symmetric", 0.4, num_classes=10, seed=0).labels
    for kind in ("symmetric", "pairflip"):
        for sampling in ("exact", "bernoulli"):
            again = corrupt_labels(already_noisy, kind, 0.0, num_classes=10, seed=1, sampling=sampling)  # type: ignore[arg-type]
            assert torch.equal(again.labels, already_noisy)
            assert not again.flipped.any() and again.realized_rate == 0.0
            np.testing.assert_array_equal(again.realized_matrix, np.eye(10))


def test_inputs_of_every_type_give_the_same_result_and_are_not_modified() -> None:
    array = unbalanced_labels(200, 5)
    tensor = torch.as_tensor(array)
    as_list = array.tolist()
    results = [
        corrupt_labels(labels, "symmetric", 0.3, num_classes=5, seed=0)
        for labels in (array, tensor, as_list, array.astype(np.int32), tensor.int())
    ]
    for result in results[1:]:
        assert torch.equal(result.labels, results[0].labels)
    assert results[0].labels.dtype == torch.long and results[0].flipped.dtype == torch.bool
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_result_fields_are_consistent() -> None:
    labels = unbalanced_labels(300, 4)
    result = corrupt_labels(labels, "pairflip", 0.3, num_classes=4, seed=0)
    assert torch.equal(result.flipped, result.labels != torch.as_tensor(labels))
    assert result.realized_rate == pytest.approx(float(result.flipped.float().mean()))
    np.testing.assert_allclose(result.realized_matrix, realized_transition_matrix(labels, result.labels, num_classes=4))


def test_absent_classes_get_identity_rows() -> None:
    result = corrupt_labels([0, 0, 1, 1], "symmetric", 0.5, num_classes=4, seed=0)
    np.testing.assert_array_equal(result.realized_matrix[2:], np.eye(4)[2:])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, 10], r"labels must lie in \[0, 9\]"),
        ([-1, 1], r"labels must lie in \[0, 9\]"),
        ([[0, 1]], "labels must be 1-D"),
        ([0.5, 1.0], "integer class indices"),
    ],
)
def test_invalid_labels_are_errors(labels: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        corrupt_labels(labels, "symmetric", 0.2, num_classes=10, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"sampling": "binomial"}, "sampling must be one of exact, bernoulli"),
        ({"key": "aggre_label"}, "does not take key"),
        ({"class_map": {0: 1}}, "'symmetric' does not take class_map"),
    ],
)
def test_invalid_arguments_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"num_classes": 10, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message) as info:
        corrupt_labels([0, 1, 2], "symmetric", 0.2, **arguments)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- with the real CIFAR-100 reader


def write_scattered_cifar100(root: Path, coarse_of_fine: np.ndarray, per_class: int = 2) -> None:
    """A tiny CIFAR-100 in its real pickle format whose superclasses are not index blocks."""
    import pickle

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    for split in ("train", "test"):
        fine = np.repeat(np.arange(100), per_class)
        batch = {
            "fine_labels": fine.tolist(),
            "coarse_labels": coarse_of_fine[fine].tolist(),
            "data": np.zeros((fine.size, 3072), dtype=np.uint8),
        }
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar100_dataset_hierarchy_drives_asymmetric_noise(tmp_path: Path) -> None:
    coarse_of_fine = np.random.default_rng(0).permutation(np.repeat(np.arange(20), 5))
    write_scattered_cifar100(tmp_path, coarse_of_fine, per_class=10)
    dataset = load_dataset("cifar100", "train", root=tmp_path)
    assert isinstance(dataset, CIFAR100Dataset)
    result = corrupt_labels(
        dataset.targets,
        "asymmetric",
        0.2,
        num_classes=100,
        seed=0,
        dataset="cifar100",
        coarse_labels=dataset.fine_to_coarse(),
    )
    true = dataset.targets.numpy()
    noisy = result.labels.numpy()
    flipped = noisy != true
    assert flipped.sum() == 100 * 2  # round(0.2 * 10) per class
    # Every flip stays inside the true superclass and goes to the next member of it.
    assert (coarse_of_fine[noisy] == coarse_of_fine[true]).all()
    for source, destination in zip(true[flipped], noisy[flipped]):
        members = np.flatnonzero(coarse_of_fine == coarse_of_fine[source])
        assert destination == members[(int(np.flatnonzero(members == source)[0]) + 1) % 5]
