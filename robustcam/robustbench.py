"""RobustBench leaderboard rows from an evaluation's records.

RobustBench (Croce et al., NeurIPS 2021 Datasets and Benchmarks) lists each model as a
``model_info/<dataset>/<threat model>/<name>.json`` file with the fields ``ROW_FIELDS``:
``eps`` as a string (``"8/255"`` for Linf, ``"0.5"`` for L2), ``clean_acc`` and ``autoattack_acc`` as
percentages with two decimals (``"89.69"``), the rest descriptive. ``robustbench_row`` fills
what an evaluation knows (dataset, architecture, eps, the accuracies, one forward pass per
input for a robustcam model) and leaves the paper's fields empty for the user.

A row is only written for what RobustBench itself runs: the authors' AutoAttack, standard
version (robustcam's ``autoattack`` or ``autoattack_l2`` on the ``autoattack`` backend), at one of the leaderboard's
threat models (``THREAT_MODELS``). The footnote says when fewer than the full test set were
evaluated, since the leaderboard numbers are on all of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import pandas as pd

from robustcam.errors import InputError

ROW_FIELDS = (
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "dataset",
    "venue",
    "architecture",
    "eps",
    "clean_acc",
    "reported",
    "autoattack_acc",
    "footnote",
)
# (dataset, norm) -> the leaderboard's eps
THREAT_MODELS: Mapping[tuple[str, str], Fraction] = {
    ("cifar10", "Linf"): Fraction(8, 255),
    ("cifar10", "L2"): Fraction(1, 2),
    ("cifar100", "Linf"): Fraction(8, 255),
    ("imagenet", "Linf"): Fraction(4, 255),
}
TEST_SET_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}
# the official AutoAttack per norm, the backend it must have run on, and the version
OFFICIAL_ATTACKS = {"Linf": "autoattack", "L2": "autoattack_l2"}
OFFICIAL_BACKEND, OFFICIAL_VERSION = "autoattack", "standard"


class RobustBenchRowError(InputError):
    """The evaluation is not one RobustBench would list."""


def _threat_models() -> str:
    return ", ".join(f"{d} {n} {eps}" for (d, n), eps in THREAT_MODELS.items())


def _official_attack(meta: Mapping[str, Any]) -> dict[str, Any]:
    for entry in meta.get("attacks", []):
        standard = entry.get("params", {}).get("version", "standard") == OFFICIAL_VERSION
        official = entry.get("name") in OFFICIAL_ATTACKS.values()
        if official and standard and OFFICIAL_BACKEND in meta.get("backends", []):
            return dict(entry)
    ran = ", ".join(f"{a.get('name')}{a.get('params', {})}" for a in meta.get("attacks", [])) or "no attack"
    backends = ", ".join(meta.get("backends", [])) or "no backend"
    raise RobustBenchRowError(
        f"a RobustBench row needs the official AutoAttack, standard version (--attacks autoattack or "
        f"autoattack_l2 on the autoattack backend); this evaluation ran {ran} on {backends}"
    )


def _leaderboard_eps(dataset: str, norm: str, evaluated: list[float]) -> Fraction:
    threat = THREAT_MODELS.get((dataset, norm))
    if threat is None or not any(math.isclose(e, float(threat), rel_tol=0, abs_tol=1e-9) for e in evaluated):
        raise RobustBenchRowError(
            f"a RobustBench row needs one of its threat models ({_threat_models()}); this evaluation is {dataset} "
            f"{norm} at eps {', '.join(f'{e:.6g}' for e in evaluated) or 'none'}"
        )
    return threat


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def check_robustbench(meta: Mapping[str, Any]) -> tuple[dict[str, Any], Fraction]:
    """The official attack entry of ``meta`` and the leaderboard eps it ran at; a
    ``RobustBenchRowError`` when RobustBench would not list the evaluation. ``meta`` is an
    evaluation's meta, or the same keys (attacks, backends, eps, eps_l2, dataset) of a planned one."""
    attack = _official_attack(meta)
    norm = str(attack.get("norm") or "Linf")
    dataset = str((meta.get("dataset") or {}).get("name", ""))
    evaluated = [float(e) for e in meta.get("eps" if norm == "Linf" else "eps_l2", [])]
    return attack, _leaderboard_eps(dataset, norm, evaluated)


def robustbench_row(
    summary: pd.DataFrame, meta: Mapping[str, Any], checkpoint_meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The model_info row of an evaluation (``summary`` and ``meta`` as ``evaluate`` returns them).

    Raises ``RobustBenchRowError`` unless the official AutoAttack standard version ran at a
    RobustBench threat model. ``clean_acc`` and ``autoattack_acc`` are over the evaluated
    samples; the footnote says how many of the full test set those were.
    """
    attack, eps = check_robustbench(meta)
    norm = str(attack.get("norm") or "Linf")
    dataset = str((meta.get("dataset") or {}).get("name", ""))
    rows = summary[
        (summary["attack"] == attack["name"])
        & (summary["backend"] == OFFICIAL_BACKEND)
        & ((summary["eps"] - float(eps)).abs() < 1e-9)
    ]
    if rows.empty:
        raise RobustBenchRowError(f"the summary has no {attack['name']}/{OFFICIAL_BACKEND} row at eps {eps}")
    row = rows.iloc[0]
    n, total = int(row["n"]), TEST_SET_SIZES[dataset]
    footnote = (
        ""
        if n >= total
        else (
            f"Evaluated on {n} of the {total} test images (a seeded subset, robustcam); "
            f"the leaderboard uses all {total}."
        )
    )
    checkpoint = checkpoint_meta or {}
    return {
        "link": "",
        "name": "",
        "authors": "",
        "additional_data": None,
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": "",
        "architecture": str(checkpoint.get("arch", "")),
        "eps": f"{eps.numerator}/{eps.denominator}" if norm == "Linf" else f"{float(eps):g}",
        "clean_acc": _percent(float(row["clean_acc"])),
        "reported": "",
        "autoattack_acc": _percent(float(row["robust_acc"])),
        "footnote": footnote,
    }


__all__ = ["ROW_FIELDS", "THREAT_MODELS", "RobustBenchRowError", "check_robustbench", "robustbench_row"]
