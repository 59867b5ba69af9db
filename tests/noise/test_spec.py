"""NoiseSpec: from and to plain dicts, descriptions for reports, and apply == corrupt_labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from robustcam.noise import NoiseSpec, corrupt_labels, describe_noise


def test_from_dict_to_dict_round_trip_through_json() -> None:
    spec = NoiseSpec.from_dict({"kind": "asymmetric", "rate": 0.2, "class_map": {3: 5, 5: 3}, "seed": 4})
    data = spec.to_dict()
    assert data == {
        "kind": "asymmetric",
        "rate": 0.2,
        "convention": "other",
        "sampling": "exact",
        "class_map": {3: 5, 5: 3},
        "path": None,
        "key": None,
        "seed": 4,
    }
    # JSON turns int keys into strings (checkpoint meta); reading back gives an equal spec.
    assert NoiseSpec.from_dict(json.loads(json.dumps(data))) == spec
    assert NoiseSpec.from_dict(yaml.safe_load(yaml.safe_dump(data))) == spec
    assert hash(spec) == hash(NoiseSpec.from_dict(data))


def test_unknown_settings_are_errors_that_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown noise setting.*ratio.*valid: kind, rate, convention"):
        NoiseSpec.from_dict({"kind": "symmetric", "ratio": 0.2})
    with pytest.raises(ValueError, match="needs kind"):
        NoiseSpec.from_dict({"rate": 0.2})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "symetric", "rate": 0.2}, "did you mean 'symmetric'"),
        ({"kind": "symmetric", "rate": 1.2}, r"rate must be in \[0, 1\]"),
        ({"kind": "symmetric"}, "rate is required"),
        ({"kind": "symmetric", "rate": 0.2, "convention": "all"}, "convention must be one of other, uniform"),
        ({"kind": "pairflip", "rate": 0.2, "sampling": "coin"}, "sampling must be one of exact, bernoulli"),
        ({"kind": "pairflip", "rate": 0.2, "key": "aggre_label"}, "does not take key"),
        ({"kind": "matrix", "rate": 0.2, "path": "t.npy"}, "takes no rate"),
        ({"kind": "symmetric", "rate": 0.2, "seed": -3}, "seed must be a non-negative integer"),
    ],
)
def test_invalid_specs_are_one_line_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        NoiseSpec.from_dict(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "clean"),
        ({"kind": "symmetric", "rate": 0.4}, "symmetric 0.4 (other)"),
        ({"kind": "symmetric", "rate": 0.4, "convention": "uniform"}, "symmetric 0.4 (uniform)"),
        ({"kind": "asymmetric", "rate": 0.2}, "asymmetric 0.2"),
        ({"kind": "asymmetric", "rate": 0.2, "class_map": {1: 2}}, "asymmetric 0.2 (custom map)"),
        ({"kind": "pairflip", "rate": 0.45, "sampling": "bernoulli"}, "pairflip 0.45 (bernoulli)"),
        ({"kind": "matrix", "path": "/data/t.yaml"}, "matrix (t.yaml)"),
        ({"kind": "human", "path": "CIFAR-10_human.pt", "key": "worse_label"}, "human worse_label (CIFAR-10_human.pt)"),
    ],
)
def test_describe_noise(data: dict[str, Any] | None, expected: str) -> None:
    assert describe_noise(data) == expected
    if data is not None:
        assert NoiseSpec.from_dict(data).describe() == expected


def test_apply_is_corrupt_labels_with_the_spec() -> None:
    labels = torch.arange(300) % 10
    spec = NoiseSpec.from_dict(
        {"kind": "symmetric", "rate": 0.3, "convention": "uniform", "sampling": "bernoulli", "seed": 8}
    )
    direct = corrupt_labels(
        labels, "symmetric", 0.3, num_classes=10, seed=8, convention="uniform", sampling="bernoulli"
    )
    assert torch.equal(spec.apply(labels, num_classes=10).labels, direct.labels)
    overridden = spec.apply(labels, num_classes=10, seed=9).labels
    assert torch.equal(
        overridden,
        corrupt_labels(
            labels, "symmetric", 0.3, num_classes=10, seed=9, convention="uniform", sampling="bernoulli"
        ).labels,
    )


def test_apply_needs_a_seed_somewhere() -> None:
    with pytest.raises(ValueError, match="a seed is required"):
        NoiseSpec("pairflip", 0.2).apply([0, 1], num_classes=2)


def test_apply_with_dataset_context_and_a_file(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(10), 20)
    asym = NoiseSpec("asymmetric", 0.5, seed=0).apply(labels, num_classes=10, dataset="mnist")
    assert asym.realized_matrix[2, 7] == pytest.approx(0.5)
    np.save(tmp_path / "t.npy", np.eye(10)[::-1])
    reversed_labels = NoiseSpec("matrix", path=str(tmp_path / "t.npy"), seed=0).apply(labels, num_classes=10)
    np.testing.assert_array_equal(reversed_labels.labels.numpy(), 9 - labels)
