"""Do negative-CAM statistics relate to robustness across checkpoints? Tests that hold at small n.

One point per configuration (seed replicates averaged, ``robustcam.report.replicates``):
Spearman's rho and Pearson's r between a mean CAM statistic and a robustness column.

- **p-values are permutation p-values**, two-sided (``2 * min(P(T >= t), P(T <= t))``, at
  most 1): the null distribution pairs the statistic with every ordering of the robustness
  values. With n <= ``EXACT_MAX_N`` (8) points every one of the n! orderings is enumerated,
  so the p-value is exact; above that ``scipy.stats.permutation_test`` draws
  ``PERMUTATION_RESAMPLES`` (10,000) seeded orderings (its p-value counts the observed
  ordering, so it is never 0). At n = 4 the smallest possible p is 2/24 = 0.083: four
  checkpoints cannot make anything significant, which is the point. ``p_method`` says which.
  scipy's asymptotic p-values (t or beta approximations) are not used: they are wrong at
  these n.
- **CIs**: none below ``MIN_BOOTSTRAP_N`` (10) points (a bootstrap of four points collapses to
  [1, 1]); from 10 points a BCa bootstrap of rho (``scipy.stats.bootstrap``, pairs resampled,
  seeded).
- **Multiplicity**: every row gets ``q_value``, the Benjamini-Hochberg adjusted Spearman p over
  every row of the table (``scipy.stats.false_discovery_control``). The *primary* hypotheses,
  declared before looking (``default_primary``: the clean negative-CAM homogeneity and peak
  against the worst case at the largest Linf eps, and against clean test accuracy when the
  checkpoints differ in label noise), are also corrected as their own family
  (``q_family``); everything else is exploratory and corrected among itself. A row is a
  ``finding`` only when ``q_family < 0.05``.
- Fewer than ``MIN_CHECKPOINTS`` (4) points with both values, or a constant side: nothing
  is computed (NaN) and the note says why.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from robustcam.errors import InputError, RobustcamError
from robustcam.report.tables import WORST, headline_target, robustness_columns, statistic_columns

MIN_CHECKPOINTS = 4
SMALL_N = 10
MIN_BOOTSTRAP_N = SMALL_N
EXACT_MAX_N = 8
PERMUTATION_RESAMPLES = 10_000
BOOTSTRAP_RESAMPLES = 2_000
CI_LEVEL = 0.95
ALPHA = 0.05
PRIMARY_STATISTICS = ("clean_neg_homogeneity", "clean_neg_peak_max")
NOISE_TARGET = "test_acc"

NOTE_TOO_FEW = f"n < {MIN_CHECKPOINTS}: not meaningful"
NOTE_NO_CI = f"n < {MIN_BOOTSTRAP_N}: no CI"
NOTE_CONSTANT_STATISTIC = "constant statistic: no correlation"
NOTE_CONSTANT_TARGET = "constant robustness: no correlation"
NOTE_DEGENERATE_CI = "bootstrap CI degenerate"

Family = Literal["primary", "exploratory"]
PMethod = Literal["exact", "monte_carlo", ""]

CORRELATION_COLUMNS = (
    "statistic",
    "target",
    "family",
    "n",
    "spearman_rho",
    "spearman_p",
    "q_value",
    "q_family",
    "finding",
    "p_method",
    "p_orderings",
    "spearman_ci_low",
    "spearman_ci_high",
    "pearson_r",
    "pearson_p",
    "note",
)


class PrimaryHypothesisError(RobustcamError, ValueError):
    """A declared primary hypothesis names a column the report does not have."""


# --------------------------------------------------------------------------- statistics


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis`` (broadcasting), the statistic every test here permutes."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((xc * yc).sum(axis=axis) / np.sqrt((xc * xc).sum(axis=axis) * (yc * yc).sum(axis=axis)))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho: Pearson's r of the average ranks (what ``scipy.stats.spearmanr`` computes)."""
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


@lru_cache(maxsize=8)
def _orderings(n: int) -> np.ndarray:
    """Every permutation of ``range(n)``, shape (n!, n); cached because each n serves many pairs."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def _two_sided(null: np.ndarray, observed: float, adjustment: int) -> float:
    """scipy.stats.permutation_test's two-sided p: ties within a relative 100 * eps count as
    at least as extreme, and Monte Carlo counts the observed ordering (``adjustment`` 1)."""
    gamma = abs(observed) * 100 * np.finfo(float).eps
    count = len(null)
    greater = ((null >= observed - gamma).sum() + adjustment) / (count + adjustment)
    less = ((null <= observed + gamma).sum() + adjustment) / (count + adjustment)
    return float(min(1.0, 2 * min(greater, less)))


def permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    statistic: Callable[..., np.ndarray] = _pearson,
    *,
    resamples: int = PERMUTATION_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, PMethod, int]:
    """Two-sided permutation test of the association of paired ``x`` and ``y``.

    Returns ``(statistic, p, method, orderings)``. With ``len(x) <= EXACT_MAX_N`` the null
    distribution is ``statistic(x, y[perm])`` for every one of the n! orderings (exact);
    otherwise ``scipy.stats.permutation_test`` with ``resamples`` seeded random orderings.

    >>> x = np.array([1.0, 2.0, 3.0, 4.0])
    >>> statistic, p, method, orderings = permutation_test(x, x)   # a perfect order of 4 points
    >>> round(statistic, 6), round(p, 6), method, orderings        # 2 of 24 orderings are as extreme
    (1.0, 0.083333, 'exact', 24)
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    observed = float(statistic(x, y))
    if n <= EXACT_MAX_N:
        null = statistic(x[None, :], y[_orderings(n)], axis=-1)
        return observed, _two_sided(null, observed, adjustment=0), "exact", len(null)
    result = stats.permutation_test(
        (y,),
        lambda permuted, axis=-1: statistic(x, permuted, axis=axis),
        permutation_type="pairings",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return observed, float(result.pvalue), "monte_carlo", resamples


def bca_interval(
    x: np.ndarray, y: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float]:
    """BCa bootstrap CI of Spearman's rho over resampled pairs (``scipy.stats.bootstrap``).

    NaN where the bootstrap distribution is degenerate (resamples with a constant side have no
    rho) or fewer than ``MIN_BOOTSTRAP_N`` pairs are given.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < MIN_BOOTSTRAP_N or resamples < 1:
        return math.nan, math.nan
    with warnings.catch_warnings():
        # scipy warns about degenerate distributions and returns NaN: the note says it instead
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (x, y),
            _spearman,
            paired=True,
            vectorized=True,
            method="BCa",
            n_resamples=resamples,
            confidence_level=level,
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else (math.nan, math.nan)


def correlate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    resamples: int = PERMUTATION_RESAMPLES,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman and Pearson with permutation p-values and (n >= 10) a BCa CI, for one pair of arrays.

    Pairs with a non-finite value are dropped first; ``n`` counts the rest. Keys: ``n``,
    ``spearman_rho``, ``spearman_p``, ``p_method`` (``exact`` / ``monte_carlo``),
    ``p_orderings`` (orderings in the null distribution), ``spearman_ci_low``,
    ``spearman_ci_high``, ``pearson_r``, ``pearson_p``, ``note``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    result: dict[str, Any] = {
        "n": n,
        "spearman_rho": math.nan,
        "spearman_p": math.nan,
        "p_method": "",
        "p_orderings": 0,
        "spearman_ci_low": math.nan,
        "spearman_ci_high": math.nan,
        "pearson_r": math.nan,
        "pearson_p": math.nan,
        "note": "",
    }
    if n < MIN_CHECKPOINTS:
        result["note"] = NOTE_TOO_FEW
        return result
    if np.ptp(x) == 0:
        result["note"] = NOTE_CONSTANT_STATISTIC
        return result
    if np.ptp(y) == 0:
        result["note"] = NOTE_CONSTANT_TARGET
        return result
    rank_x, rank_y = stats.rankdata(x), stats.rankdata(y)
    rho, rho_p, method, orderings = permutation_test(rank_x, rank_y, resamples=resamples, seed=seed)
    r, r_p, _, _ = permutation_test(x, y, resamples=resamples, seed=seed)
    low, high = bca_interval(x, y, resamples=bootstrap, seed=seed)
    notes = []
    if n < MIN_BOOTSTRAP_N:
        notes.append(NOTE_NO_CI)
    elif bootstrap > 0 and math.isnan(low):
        notes.append(NOTE_DEGENERATE_CI)
    result.update(
        spearman_rho=rho,
        spearman_p=rho_p,
        p_method=method,
        p_orderings=orderings,
        spearman_ci_low=low,
        spearman_ci_high=high,
        pearson_r=r,
        pearson_p=r_p,
        note="; ".join(notes),
    )
    return result


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH-adjusted q-values (``scipy.stats.false_discovery_control``); NaN p-values stay NaN and
    do not count as tests."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, math.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite], method="bh")
    return q


# --------------------------------------------------------------------------- primary hypotheses


def default_targets(table: pd.DataFrame) -> list[str]:
    """The robustness columns of the primary hypotheses: the worst case at the largest Linf eps,
    and clean test accuracy when the checkpoints differ in label noise."""
    targets = []
    headline = headline_target(table)
    if headline is not None and headline.startswith(f"{WORST}@"):
        targets.append(headline)
    if NOISE_TARGET in table.columns and _differ_in_noise(table):
        targets.append(NOISE_TARGET)
    return targets


def default_primary(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The hypotheses declared before looking: ``clean_neg_homogeneity`` and ``clean_neg_peak_max``
    against each of ``default_targets``. Pairs whose columns are missing are left out."""
    return [(s, t) for s in PRIMARY_STATISTICS if s in table.columns for t in default_targets(table)]


def _differ_in_noise(table: pd.DataFrame) -> bool:
    columns = [c for c in ("noise_kind", "noise_rate", "noise") if c in table.columns]
    return any(table[c].astype(str).nunique() > 1 for c in columns)


def parse_primary(entries: Sequence[str], table: pd.DataFrame) -> list[tuple[str, str]]:
    """``statistic:target`` texts (``clean_neg_peak_max:worst@8/255``) as pairs of model-table columns.

    A bare statistic means that statistic against the default targets. Raises
    ``PrimaryHypothesisError`` naming the bad entry and the valid columns.
    """
    statistics, targets = statistic_columns(table), robustness_columns(table)
    pairs: list[tuple[str, str]] = []
    for entry in entries:
        statistic, _, target = str(entry).partition(":")
        statistic, target = statistic.strip(), target.strip()
        if statistic not in statistics:
            raise PrimaryHypothesisError(
                f"primary hypothesis {entry!r}: {statistic!r} is not a CAM statistic of this report; valid: "
                f"{', '.join(statistics) or '(none: evaluated without CAM statistics)'}"
            )
        chosen = [target] if target else default_targets(table)
        for name in chosen:
            if name not in targets:
                raise PrimaryHypothesisError(
                    f"primary hypothesis {entry!r}: {name!r} is not a robustness column of this report; valid: "
                    f"{', '.join(targets)}"
                )
            pairs.append((statistic, name))
    return list(dict.fromkeys(pairs))


# --------------------------------------------------------------------------- the table


def model_correlations(
    table: pd.DataFrame,
    *,
    primary: Sequence[tuple[str, str]] | None = None,
    resamples: int = PERMUTATION_RESAMPLES,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    statistics: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (CAM statistic column, robustness column) of a model or configuration table.

    Columns: see ``CORRELATION_COLUMNS`` and the module docstring. ``primary`` (default
    ``default_primary(table)``) are listed first with ``family == "primary"``.
    ``statistics`` / ``targets`` default to every statistic column and every robustness
    column (robust accuracies incl. worst case, mean minimal norms, test accuracy).
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    if resamples < PERMUTATION_RESAMPLES:
        raise ValueError(f"resamples must be >= {PERMUTATION_RESAMPLES} permutations, got {resamples}")
    statistics = list(statistics) if statistics is not None else statistic_columns(table)
    targets = list(targets) if targets is not None else robustness_columns(table)
    for column in [*statistics, *targets]:
        if column not in table.columns:
            raise InputError(f"column {column!r} is not in the model table; valid: {', '.join(table.columns)}")
    declared = list(primary) if primary is not None else default_primary(table)
    pairs = [*declared, *((s, t) for s in statistics for t in targets if (s, t) not in declared)]
    rows = []
    for statistic, target in pairs:
        x = pd.to_numeric(table[statistic], errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(table[target], errors="coerce").to_numpy(dtype=float)
        result = correlate(x, y, resamples=resamples, bootstrap=bootstrap, seed=seed)
        family: Family = "primary" if (statistic, target) in declared else "exploratory"
        rows.append({"statistic": statistic, "target": target, "family": family, **result})
    frame = pd.DataFrame(rows, columns=[c for c in CORRELATION_COLUMNS if c not in ("q_value", "q_family", "finding")])
    frame["q_value"] = benjamini_hochberg(frame["spearman_p"]) if len(frame) else []
    frame["q_family"] = math.nan
    for _, part in frame.groupby("family", sort=False):
        frame.loc[part.index, "q_family"] = benjamini_hochberg(part["spearman_p"])
    frame["finding"] = frame["q_family"].lt(ALPHA)
    return frame[list(CORRELATION_COLUMNS)]


def tested(correlations: pd.DataFrame) -> pd.DataFrame:
    """The rows that got a p-value (the tests every q-value is corrected for)."""
    return correlations[correlations["spearman_p"].notna()]


def strongest_correlations(correlations: pd.DataFrame, count: int = 8) -> pd.DataFrame:
    """The tested pairs ordered by q-value (then by ``|rho|``): selection is only honest after the
    correction, and the table that shows them must say how many pairs were tested."""
    computed = tested(correlations).assign(_abs=lambda f: -f["spearman_rho"].abs())
    return computed.sort_values(["q_value", "_abs"], kind="stable").drop(columns="_abs").head(count)


def primary_rows(correlations: pd.DataFrame) -> pd.DataFrame:
    return correlations[correlations["family"] == "primary"]


__all__ = [
    "ALPHA",
    "EXACT_MAX_N",
    "MIN_BOOTSTRAP_N",
    "MIN_CHECKPOINTS",
    "PERMUTATION_RESAMPLES",
    "SMALL_N",
    "PrimaryHypothesisError",
    "bca_interval",
    "benjamini_hochberg",
    "correlate",
    "default_primary",
    "default_targets",
    "model_correlations",
    "parse_primary",
    "permutation_test",
    "primary_rows",
    "strongest_correlations",
    "tested",
]
