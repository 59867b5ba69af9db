"""The summary of an evaluation: a pure function of its per-sample records.

One row per (attack, backend, norm, eps), a per-sample worst case per (norm, eps), and a clean
row; ``backend_agreement`` compares torchattacks and foolbox per (attack, eps). Every number
here can be recomputed from ``per_sample.csv`` (``robustcam report`` does, and checks it).
"""

from __future__ import annotations

import itertools

import math
from typing import Any

import pandas as pd
from torch import Tensor


def summarize(
    per_sample: pd.DataFrame, *, clean_pred: Tensor | None = None, labels: Tensor | None = None
) -> pd.DataFrame:
    """Summary rows recomputed from the per-sample records.

    One row per (attack, backend, norm, eps) with ``n``, ``clean_acc``, ``robust_acc``,
    ``attack_success_rate`` (broken / clean-correct), ``median_norm`` (of the successful
    perturbations, in the attack's norm), ``n_attacked`` and ``n_invalid``; then per
    (norm, eps) a ``worst`` row whose sample is robust only if it survived every attack
    and backend; and a ``clean`` row.
    """
    rows: list[dict[str, Any]] = []
    if len(per_sample):
        for (attack, backend, norm, eps), group in per_sample.groupby(["attack", "backend", "norm", "eps"], sort=False):
            rows.append(_summary_row(attack, backend, norm, eps, group))
        for (norm, eps), group in per_sample.groupby(["norm", "eps"], sort=True):
            worst = group.groupby("index").agg(
                robust=("robust", "all"),
                clean_correct=("clean_correct", "first"),
            )
            n = len(worst)
            rows.append(
                {
                    "attack": "worst",
                    "backend": "all",
                    "norm": norm,
                    "eps": eps,
                    "n": n,
                    "clean_acc": worst["clean_correct"].mean(),
                    "robust_acc": worst["robust"].mean(),
                    "attack_success_rate": _rate(
                        (worst["clean_correct"] & ~worst["robust"]).sum(), worst["clean_correct"].sum()
                    ),
                    "median_norm": math.nan,
                    "n_attacked": 0,
                    "n_invalid": 0,
                }
            )
        first = per_sample.drop_duplicates("index")
        clean_acc = float(first["clean_correct"].mean())
        n_clean = len(first)
    else:
        assert clean_pred is not None and labels is not None
        n_clean = len(labels)
        clean_acc = float((clean_pred == labels).float().mean()) if n_clean else math.nan
    rows.insert(
        0,
        {
            "attack": "clean",
            "backend": "none",
            "norm": "none",
            "eps": 0.0,
            "n": n_clean,
            "clean_acc": clean_acc,
            "robust_acc": clean_acc,
            "attack_success_rate": math.nan,
            "median_norm": math.nan,
            "n_attacked": 0,
            "n_invalid": 0,
        },
    )
    return pd.DataFrame(rows)


def _rate(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def _summary_row(attack: str, backend: str, norm: str, eps: float, group: pd.DataFrame) -> dict[str, Any]:
    norm_column = "linf" if norm == "Linf" else "l2"
    successful = group.loc[group["success"], norm_column]
    return {
        "attack": attack,
        "backend": backend,
        "norm": norm,
        "eps": eps,
        "n": len(group),
        "clean_acc": group["clean_correct"].mean(),
        "robust_acc": group["robust"].mean(),
        "attack_success_rate": _rate(group["success"].sum(), group["clean_correct"].sum()),
        "median_norm": float(successful.median()) if len(successful) else math.nan,
        "n_attacked": int(group["attacked"].sum()),
        "n_invalid": int((~group["valid"]).sum()),
    }


# the order a pair's two backends are named in: robustcam's own first, then the libraries
BACKEND_ORDER = ("native", "torchattacks", "foolbox", "autoattack")


def _backend_rank(backend: str) -> tuple[int, str]:
    return (BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER), backend)


def backend_agreement(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Every pair of backends that ran the same (attack, eps): ``backend_a``, ``backend_b``
    (in ``BACKEND_ORDER``), both robust accuracies (``robust_acc_a``, ``robust_acc_b``), their
    difference in points (a - b), and the fraction of samples on whose robustness the two agree."""
    if per_sample.empty or per_sample["backend"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for (attack, norm, eps), group in per_sample.groupby(["attack", "norm", "eps"], sort=False):
        by_backend = group.pivot_table(index="index", columns="backend", values="robust", aggfunc="first")
        backends = sorted(by_backend.columns, key=_backend_rank)
        for first, second in itertools.combinations(backends, 2):
            a, b = by_backend[first].astype(bool), by_backend[second].astype(bool)
            rows.append(
                {
                    "attack": attack,
                    "norm": norm,
                    "eps": eps,
                    "backend_a": first,
                    "backend_b": second,
                    "robust_acc_a": a.mean(),
                    "robust_acc_b": b.mean(),
                    "difference_points": 100 * (a.mean() - b.mean()),
                    "agreement_rate": (a == b).mean(),
                }
            )
    return pd.DataFrame(rows)


__all__ = ["backend_agreement", "summarize"]
