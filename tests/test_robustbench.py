"""RobustBench rows: the published model_info fields, filled from an evaluation's summary and
meta, refused unless the official AutoAttack standard version ran at a leaderboard threat model."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from robustcam.robustbench import ROW_FIELDS, RobustBenchRowError, robustbench_row

EPS = 8 / 255


def _summary(attack: str = "autoattack", backend: str = "autoattack", eps: float = EPS, n: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "attack": "clean",
                "backend": "none",
                "norm": "none",
                "eps": 0.0,
                "n": n,
                "clean_acc": 0.8969,
                "robust_acc": 0.8969,
            },
            {
                "attack": attack,
                "backend": backend,
                "norm": "Linf",
                "eps": eps,
                "n": n,
                "clean_acc": 0.8969,
                "robust_acc": 0.59534,
            },
        ]
    )


def _meta(dataset: str = "cifar10", version: str = "standard", eps: float = EPS) -> dict[str, Any]:
    return {
        "attacks": [{"name": "autoattack", "norm": "Linf", "params": {"version": version}}],
        "backends": ["autoattack"],
        "eps": [eps],
        "eps_l2": [],
        "dataset": {"name": dataset},
    }


def test_a_row_has_robustbench_fields_and_formats() -> None:
    row = robustbench_row(_summary(n=10_000), _meta(), {"arch": "wrn-28-10"})
    assert tuple(row) == ROW_FIELDS
    assert row["eps"] == "8/255" and row["clean_acc"] == "89.69" and row["autoattack_acc"] == "59.53"
    assert row["dataset"] == "cifar10" and row["architecture"] == "wrn-28-10" and row["number_forward_passes"] == 1
    assert row["footnote"] == "" and row["name"] == "" and row["additional_data"] is None
    json.dumps(row)  # plain JSON


def test_a_subset_is_said_in_the_footnote() -> None:
    row = robustbench_row(_summary(n=200), _meta())
    assert row["footnote"].startswith("Evaluated on 200 of the 10000 test images")


def test_l2_eps_is_written_as_a_decimal() -> None:
    meta = {
        **_meta(eps=0.5),
        "attacks": [{"name": "autoattack_l2", "norm": "L2", "params": {"version": "standard"}}],
        "eps": [],
        "eps_l2": [0.5],
    }
    summary = _summary(attack="autoattack_l2", eps=0.5).assign(norm=["none", "L2"])
    assert robustbench_row(summary, meta)["eps"] == "0.5"


@pytest.mark.parametrize(
    ("summary", "meta", "message"),
    [
        (
            _summary(attack="autoattack-ta", backend="torchattacks"),
            {
                **_meta(),
                "attacks": [{"name": "autoattack-ta", "norm": "Linf", "params": {}}],
                "backends": ["torchattacks"],
            },
            "needs the official AutoAttack, standard version",
        ),
        (_summary(), _meta(version="plus"), "needs the official AutoAttack, standard version"),
        (_summary(), _meta(dataset="digits"), r"needs one of its threat models .* this evaluation is digits Linf"),
        (_summary(eps=4 / 255), _meta(eps=4 / 255), r"this evaluation is cifar10 Linf at eps 0.0156863"),
    ],
)
def test_rows_robustbench_would_not_list_are_refused(summary: pd.DataFrame, meta: dict[str, Any], message: str) -> None:
    with pytest.raises(RobustBenchRowError, match=message):
        robustbench_row(summary, meta)
