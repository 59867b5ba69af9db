"""Do negative-CAM statistics relate to robustness? Across checkpoints and within one.

``model_correlations``: across checkpoints (one point per checkpoint of the model table),
Spearman's rho and Pearson's r (``scipy.stats``) between each mean CAM statistic and each
robustness column, with a percentile bootstrap CI for rho (checkpoints resampled with
replacement from a seeded ``numpy.random.Generator``).

Rules, so that small or degenerate data never pass for evidence:

- fewer than ``MIN_CHECKPOINTS`` (4) checkpoints with both values: nothing is computed
  (NaN), note ``"n < 4: not meaningful"``;
- a constant statistic or constant robustness column: NaN, the note says which;
- fewer than ``SMALL_N`` (10): computed, note ``"small n (< 10): a hint at most"``;
- bootstrap resamples in which either variable is constant have no rho and are skipped;
  if fewer than half of the resamples are usable the CI is NaN (note ``"bootstrap CI
  degenerate"``).

``sample_auroc``: within each checkpoint, among clean-correct samples, how well a clean
statistic ranks the samples an attack breaks above those it does not
(``sklearn.metrics.roc_auc_score``; 1.0 = high statistic <=> broken, 0.5 = no information,
below 0.5 = high statistic <=> robust), and Spearman's rho between a clean statistic and the
minimal perturbation norm C&W needed (successful samples only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from robustcam.report.load import Evaluation
from robustcam.report.tables import (
    CLEAN_STAT_COLUMNS,
    Setting,
    minimal_attacks,
    minimal_norm_column,
    minimal_perturbations,
    robustness_columns,
    several_backends,
    statistic_columns,
)

MIN_CHECKPOINTS = 4
SMALL_N = 10
MIN_SAMPLES = 4  # within a checkpoint, for the minimal-norm Spearman
CI_LEVEL = 0.95
MIN_USABLE_FRACTION = 0.5

NOTE_TOO_FEW = f"n < {MIN_CHECKPOINTS}: not meaningful"
NOTE_SMALL = f"small n (< {SMALL_N}): a hint at most"
NOTE_CONSTANT_STATISTIC = "constant statistic: no correlation"
NOTE_CONSTANT_TARGET = "constant robustness: no correlation"
NOTE_DEGENERATE_CI = "bootstrap CI degenerate"

CORRELATION_COLUMNS = (
    "statistic", "target", "n", "spearman_rho", "spearman_p", "spearman_ci_low", "spearman_ci_high",
    "ci_excludes_zero", "pearson_r", "pearson_p", "bootstrap_used", "note",
)  # fmt: skip
AUROC_COLUMNS = (
    "name", "loss", "noise", "statistic", "kind", "attack", "backend", "norm", "eps", "target",
    "n", "n_positive", "n_negative", "auroc", "rho", "p", "note",
)  # fmt: skip


def _rank_rows(values: np.ndarray) -> np.ndarray:
    return np.asarray(stats.rankdata(values, axis=1), dtype=float)


def bootstrap_spearman(
    x: np.ndarray, y: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float, int]:
    """Percentile bootstrap CI of Spearman's rho: ``(low, high, usable resamples)``.

    Pairs are resampled with replacement (``numpy.random.default_rng(seed)``); rho of a
    resample is Pearson's r of its average ranks, which is what ``scipy.stats.spearmanr``
    computes. Resamples in which x or y is constant are skipped. The CI is NaN when fewer
    than half of the resamples are usable.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if resamples < 1 or n < 2:
        return math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    xs, ys = x[picks], y[picks]
    usable = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    count = int(usable.sum())
    if count < MIN_USABLE_FRACTION * resamples:
        return math.nan, math.nan, count
    rx, ry = _rank_rows(xs[usable]), _rank_rows(ys[usable])
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    rho = np.clip((rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1)), -1.0, 1.0)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(rho, [tail, 100 - tail])
    return float(low), float(high), count


def correlate(x: np.ndarray, y: np.ndarray, *, bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Spearman, Pearson and the bootstrap CI for one pair of arrays, following the module's rules.

    Pairs with a non-finite value are dropped first; ``n`` counts the rest.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    result: dict[str, Any] = {
        "n": n, "spearman_rho": math.nan, "spearman_p": math.nan, "spearman_ci_low": math.nan,
        "spearman_ci_high": math.nan, "ci_excludes_zero": False, "pearson_r": math.nan, "pearson_p": math.nan,
        "bootstrap_used": 0, "note": "",
    }  # fmt: skip
    if n < MIN_CHECKPOINTS:
        result["note"] = NOTE_TOO_FEW
        return result
    if np.ptp(x) == 0:
        result["note"] = NOTE_CONSTANT_STATISTIC
        return result
    if np.ptp(y) == 0:
        result["note"] = NOTE_CONSTANT_TARGET
        return result
    with warnings.catch_warnings():
        # near-constant inputs warn; the numbers are still the definition's, so keep them quiet
        warnings.simplefilter("ignore")
        spearman = stats.spearmanr(x, y)
        pearson = stats.pearsonr(x, y)
    low, high, used = bootstrap_spearman(x, y, resamples=bootstrap, seed=seed)
    notes = [NOTE_SMALL] if n < SMALL_N else []
    if bootstrap > 0 and math.isnan(low):
        notes.append(NOTE_DEGENERATE_CI)
    result.update(
        spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue),
        spearman_ci_low=low, spearman_ci_high=high,
        ci_excludes_zero=bool(np.isfinite(low) and (low > 0 or high < 0)),
        pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
        bootstrap_used=used, note="; ".join(notes),
    )  # fmt: skip
    return result


def model_correlations(
    table: pd.DataFrame,
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    statistics: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (CAM statistic column, robustness column) of a model table.

    Columns: statistic, target, n, spearman_rho, spearman_p, spearman_ci_low,
    spearman_ci_high, ci_excludes_zero, pearson_r, pearson_p, bootstrap_used, note (see the
    module docstring for the rules). ``statistics`` / ``targets`` default to every
    statistic column and every robustness column (robust accuracies incl. worst case, and
    mean minimal norms).
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    statistics = list(statistics) if statistics is not None else statistic_columns(table)
    targets = list(targets) if targets is not None else robustness_columns(table)
    for column in [*statistics, *targets]:
        if column not in table.columns:
            raise ValueError(f"column {column!r} is not in the model table; valid: {', '.join(table.columns)}")
    rows = []
    for statistic in statistics:
        x = pd.to_numeric(table[statistic], errors="coerce").to_numpy(dtype=float)
        for target in targets:
            y = pd.to_numeric(table[target], errors="coerce").to_numpy(dtype=float)
            result = correlate(x, y, bootstrap=bootstrap, seed=seed)
            rows.append({"statistic": statistic, "target": target, **result})
    return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))


def strongest_correlations(correlations: pd.DataFrame, count: int = 8) -> pd.DataFrame:
    """The computed correlations with the largest ``|spearman_rho|`` first."""
    computed = correlations[correlations["spearman_rho"].notna()]
    order = computed["spearman_rho"].abs().sort_values(ascending=False, kind="stable").index
    return computed.loc[order].head(count)


# --------------------------------------------------------------------------- within a checkpoint


def _auroc(broken: np.ndarray, score: np.ndarray) -> tuple[float, int, int, str]:
    keep = np.isfinite(score)
    broken, score = broken[keep], score[keep]
    positives, negatives = int(broken.sum()), int((~broken).sum())
    if positives == 0 or negatives == 0:
        return math.nan, positives, negatives, "no broken samples" if positives == 0 else "no robust samples"
    return float(roc_auc_score(broken, score)), positives, negatives, ""


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int, str]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < MIN_SAMPLES:
        return math.nan, math.nan, n, f"n < {MIN_SAMPLES}: not meaningful"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n, "constant input: no correlation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue), n, ""


def sample_auroc(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """Per checkpoint, among clean-correct samples: does a clean statistic predict which samples break?

    Rows of kind ``auroc``: for every bounded (attack, backend, eps) and clean statistic,
    ``roc_auc_score(success, clean_<stat>)`` (positive class = broken) with the numbers of
    broken (``n_positive``) and robust (``n_negative``) samples; NaN when one class is empty.
    Rows of kind ``spearman_min_norm``: for every minimal attack (C&W), Spearman's rho between
    the clean statistic and the minimal norm over the samples it broke (``n`` of them).
    Evaluations without CAM statistic columns contribute no rows.
    """
    with_backend = several_backends(evaluations)
    rows: list[dict[str, Any]] = []
    for evaluation in evaluations:
        frame = evaluation.per_sample
        present = [c for c in CLEAN_STAT_COLUMNS if c in frame.columns]
        if not present:
            continue
        minimal = minimal_attacks(evaluation)
        base = {"name": evaluation.name, "loss": evaluation.loss, "noise": evaluation.noise}
        cells = frame[["attack", "backend", "norm", "eps"]].drop_duplicates()
        for cell in cells.itertuples():
            setting = Setting(str(cell.attack), str(cell.backend), str(cell.norm), float(cell.eps))
            if setting.attack in minimal:
                continue
            chosen = setting.rows(frame)
            chosen = chosen[chosen["clean_correct"]]
            broken = chosen["success"].to_numpy(dtype=bool)
            for column in present:
                score = pd.to_numeric(chosen[column], errors="coerce").to_numpy(dtype=float)
                auroc, positives, negatives, note = _auroc(broken, score)
                rows.append({
                    **base, "statistic": column, "kind": "auroc", "attack": setting.attack,
                    "backend": setting.backend, "norm": setting.norm, "eps": setting.eps,
                    "target": setting.label(with_backend=with_backend), "n": positives + negatives,
                    "n_positive": positives, "n_negative": negatives, "auroc": auroc, "rho": math.nan,
                    "p": math.nan, "note": note,
                })  # fmt: skip
        for attack in sorted(minimal):
            for backend in dict.fromkeys(frame.loc[frame["attack"] == attack, "backend"]):
                table = minimal_perturbations(evaluation, attack, backend)
                found = table[table["found"]]
                norm = str(frame.loc[frame["attack"] == attack, "norm"].iloc[0])
                for column in present:
                    rho, p, n, note = _spearman(
                        pd.to_numeric(found[column], errors="coerce").to_numpy(dtype=float),
                        found["norm"].to_numpy(dtype=float),
                    )
                    rows.append({
                        **base, "statistic": column, "kind": "spearman_min_norm", "attack": attack,
                        "backend": backend, "norm": norm, "eps": math.nan,
                        "target": minimal_norm_column(attack, backend, norm, with_backend=with_backend)
                        .replace("_mean_min_", "_min_"),
                        "n": n, "n_positive": math.nan, "n_negative": math.nan, "auroc": math.nan, "rho": rho, "p": p,
                        "note": note,
                    })  # fmt: skip
    return pd.DataFrame(rows, columns=list(AUROC_COLUMNS))


__all__ = [
    "MIN_CHECKPOINTS",
    "SMALL_N",
    "bootstrap_spearman",
    "correlate",
    "model_correlations",
    "sample_auroc",
    "strongest_correlations",
]
