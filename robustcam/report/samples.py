"""Within a checkpoint: does a clean statistic tell which samples an attack breaks?

``sample_auroc``: for every checkpoint, bounded (attack, backend, eps) and clean statistic,
among clean-correct samples, the AUROC of the statistic for the samples the attack broke
(the Mann-Whitney form that ``sklearn.metrics.roc_auc_score`` computes, ties counted one
half; 1.0 = a high statistic <=> broken, 0.5 = no
information, below 0.5 = a high statistic <=> robust), with a seeded, stratified
percentile bootstrap 95% CI over samples (broken and robust samples resampled separately,
so every resample has both classes; ``AUROC_RESAMPLES`` of them). For a minimal attack
(C&W): Spearman's rho between the clean statistic and the minimal norm over the samples it
broke, with its permutation p-value (``robustcam.report.correlation.permutation_test``).

An AUROC alone says nothing about what the statistic adds to what the logits already say:
``robustcam.report.incremental`` answers that.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from robustcam.report.correlation import permutation_test
from robustcam.report.load import Evaluation
from robustcam.report.tables import (
    CLEAN_STAT_COLUMNS,
    Setting,
    minimal_attacks,
    minimal_norm_column,
    minimal_perturbations,
    several_backends,
)

MIN_SAMPLES = 4  # within a checkpoint, for the minimal-norm Spearman
AUROC_RESAMPLES = 1000
CI_LEVEL = 0.95

# what a within-checkpoint row is about: the checkpoint, the statistic, the attack setting, the counts
SETTING_COLUMNS = (
    "name",
    "loss",
    "noise",
    "statistic",
    "kind",
    "attack",
    "backend",
    "norm",
    "eps",
    "target",
    "n",
    "n_positive",
    "n_negative",
)
AUROC_COLUMNS = (
    *SETTING_COLUMNS,
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "rho",
    "p",
    "note",
)


def pair_matrix(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``C[i, j] = [s_i > s_j] + 0.5 [s_i = s_j]`` for positive i and negative j: the AUROC is its mean
    (``roc_auc_score`` counts ties one half)."""
    pos, neg = score[positive][:, None], score[~positive][None, :]
    return (pos > neg).astype(float) + 0.5 * (pos == neg)


def bootstrap_weights(positive: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each positive and each negative is drawn in ``resamples`` stratified bootstrap
    resamples: (resamples, n1) and (resamples, n0) counts, each row summing to n1 and n0.

    Broken and robust samples are resampled separately (pROC's stratified bootstrap), so every
    resample has both classes and an AUROC.
    """
    rng = np.random.default_rng(seed)
    return _draw_counts(rng, int(positive.sum()), resamples), _draw_counts(rng, int((~positive).sum()), resamples)


def _draw_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) counts of n draws with replacement from n items, per resample."""
    picks = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(picks.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """The AUROC as the mean of ``pair_matrix``: ``roc_auc_score(positive, score)`` without its
    per-call validation, which costs more than the number when thousands are computed."""
    return float(pair_matrix(positive, score).mean())


def weighted_auroc(pairs: np.ndarray, weights_pos: np.ndarray, weights_neg: np.ndarray) -> np.ndarray:
    """The AUROC of each bootstrap resample from its draw counts: ``w_pos C w_neg / (n1 n0)``."""
    n1, n0 = pairs.shape
    return np.asarray(((weights_pos @ pairs) * weights_neg).sum(axis=1) / (n1 * n0))


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def auroc_interval(
    positive: np.ndarray,
    score: np.ndarray,
    *,
    resamples: int = AUROC_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Percentile CI of the AUROC from a stratified bootstrap over samples (seeded)."""
    weights = bootstrap_weights(positive, resamples, seed)
    return percentile_interval(weighted_auroc(pair_matrix(positive, score), *weights), level)


def _auroc(broken: np.ndarray, score: np.ndarray, seed: int) -> dict[str, Any]:
    keep = np.isfinite(score)
    broken, score = broken[keep], score[keep]
    positives, negatives = int(broken.sum()), int((~broken).sum())
    values: dict[str, Any] = {
        "n": positives + negatives,
        "n_positive": positives,
        "n_negative": negatives,
        "auroc": math.nan,
        "auroc_ci_low": math.nan,
        "auroc_ci_high": math.nan,
        "note": "",
    }
    if positives == 0 or negatives == 0:
        values["note"] = "no broken samples" if positives == 0 else "no robust samples"
        return values
    low, high = auroc_interval(broken, score, seed=seed)
    values.update(auroc=auroc(broken, score), auroc_ci_low=low, auroc_ci_high=high)
    return values


def _spearman(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, int, str]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < MIN_SAMPLES:
        return math.nan, math.nan, n, f"n < {MIN_SAMPLES}: not meaningful"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n, "constant input: no correlation"
    rho, p, _, _ = permutation_test(stats.rankdata(x), stats.rankdata(y), seed=seed)
    return rho, p, n, ""


def bounded_settings(evaluation: Evaluation) -> Iterator[Setting]:
    """The bounded (attack, backend, norm, eps) cells of an evaluation, in record order."""
    minimal = minimal_attacks(evaluation)
    cells = evaluation.per_sample[["attack", "backend", "norm", "eps"]].drop_duplicates()
    for cell in cells.itertuples():
        if str(cell.attack) not in minimal:
            yield Setting(str(cell.attack), str(cell.backend), str(cell.norm), float(cell.eps))


def clean_correct_rows(evaluation: Evaluation, setting: Setting) -> pd.DataFrame:
    """A setting's rows for the clean-correct samples: the ones an attack can break."""
    chosen = setting.rows(evaluation.per_sample)
    return chosen[chosen["clean_correct"]]


def minimal_cells(evaluation: Evaluation) -> Iterator[tuple[str, str, str]]:
    """(attack, backend, norm) of every minimal attack run of an evaluation."""
    frame = evaluation.per_sample
    for attack in sorted(minimal_attacks(evaluation)):
        rows = frame[frame["attack"] == attack]
        for backend in dict.fromkeys(rows["backend"]):
            yield attack, str(backend), str(rows["norm"].iloc[0])


def present_statistics(evaluation: Evaluation) -> list[str]:
    return [c for c in CLEAN_STAT_COLUMNS if c in evaluation.per_sample.columns]


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def sample_auroc(evaluations: Sequence[Evaluation], *, seed: int = 0) -> pd.DataFrame:
    """Per checkpoint, among clean-correct samples: does a clean statistic predict which samples break?

    Rows of kind ``auroc``: for every bounded (attack, backend, eps) and clean statistic,
    ``roc_auc_score(success, clean_<stat>)`` (positive class = broken), its bootstrap CI, and
    the numbers of broken (``n_positive``) and robust (``n_negative``) samples; NaN when one
    class is empty. Rows of kind ``spearman_min_norm``: for every minimal attack (C&W),
    Spearman's rho between the clean statistic and the minimal norm over the samples it broke
    (``n`` of them), with its permutation p-value. Evaluations without CAM statistic columns
    contribute no rows.
    """
    with_backend = several_backends(evaluations)
    rows: list[dict[str, Any]] = []
    for evaluation in evaluations:
        present = present_statistics(evaluation)
        if not present:
            continue
        base = {"name": evaluation.name, "loss": evaluation.loss, "noise": evaluation.noise}
        for setting in bounded_settings(evaluation):
            chosen = clean_correct_rows(evaluation, setting)
            broken = chosen["success"].to_numpy(dtype=bool)
            where = {
                "attack": setting.attack,
                "backend": setting.backend,
                "norm": setting.norm,
                "eps": setting.eps,
                "target": setting.label(with_backend=with_backend),
            }
            for column in present:
                rows.append(
                    {
                        **base,
                        **where,
                        "statistic": column,
                        "kind": "auroc",
                        "rho": math.nan,
                        "p": math.nan,
                        **_auroc(broken, _numbers(chosen, column), seed),
                    }
                )
        for attack, backend, norm in minimal_cells(evaluation):
            found = minimal_perturbations(evaluation, attack, backend)
            found = found[found["found"]]
            target = minimal_norm_column(attack, backend, norm, with_backend=with_backend).replace(
                "_mean_min_", "_min_"
            )
            for column in present:
                rho, p, n, note = _spearman(_numbers(found, column), found["norm"].to_numpy(dtype=float), seed)
                rows.append(
                    {
                        **base,
                        "statistic": column,
                        "kind": "spearman_min_norm",
                        "attack": attack,
                        "backend": backend,
                        "norm": norm,
                        "eps": math.nan,
                        "target": target,
                        "n": n,
                        "n_positive": math.nan,
                        "n_negative": math.nan,
                        "auroc": math.nan,
                        "auroc_ci_low": math.nan,
                        "auroc_ci_high": math.nan,
                        "rho": rho,
                        "p": p,
                        "note": note,
                    }
                )
    return pd.DataFrame(rows, columns=list(AUROC_COLUMNS))


__all__ = [
    "AUROC_COLUMNS",
    "SETTING_COLUMNS",
    "auroc",
    "auroc_interval",
    "bootstrap_weights",
    "bounded_settings",
    "clean_correct_rows",
    "minimal_cells",
    "pair_matrix",
    "percentile_interval",
    "present_statistics",
    "sample_auroc",
    "weighted_auroc",
]
