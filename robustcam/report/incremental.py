"""What a clean CAM statistic adds to the clean logit margin, within one checkpoint.

A statistic that predicts which samples an attack breaks (``robustcam.report.samples``) may
only repeat what the logits already say: samples with a small clean logit margin
``Z_y - max_{c != y} Z_c`` are the ones an attack breaks first, and most CAM statistics move
with the margin. The question a reader needs answered is the *incremental* value, so for
every checkpoint, bounded attack setting and clean statistic, among clean-correct samples
(positive = broken):

- ``auroc_margin``: out-of-fold AUROC of a logistic regression on the margin alone;
- ``auroc_statistic``: AUROC of the raw statistic alone (as in ``samples_auroc.csv``);
- ``auroc_margin_plus``: out-of-fold AUROC of a logistic regression on margin + statistic;
- ``delta_auroc = auroc_margin_plus - auroc_margin`` with a 95% CI (``delta_ci_low``,
  ``delta_ci_high``) from a paired, stratified bootstrap over samples of the out-of-fold
  scores. Out-of-fold scores come from stratified 5-fold cross-validation repeated 10 times
  (``sklearn.model_selection.RepeatedStratifiedKFold``, seeded; the same folds for both
  models), averaged over the repeats per sample; scikit-learn's L2-penalised logistic regression
  (C = 1) on standardised features (``out_of_fold_scores`` says how it is fitted fast);
- ``lr_p``: likelihood-ratio test of adding the statistic to the margin-only model, fitted
  unpenalised on all samples: ``2 (logL_full - logL_margin) ~ chi2(1)``; ``lr_q`` is its
  Benjamini-Hochberg q-value over every row of the table;
- ``coef``: the statistic's coefficient in that full model on standardised features, so its
  sign says the direction (positive: a higher statistic, more breaks, at equal margin);
- ``partial_spearman`` / ``partial_p``: Spearman's partial correlation of the statistic with
  broken given the margin (Pearson's r of the residuals of the ranks after a linear fit on
  the margin's ranks; p from the t distribution with n - 3 degrees of freedom, as pingouin
  computes it).

For a minimal attack (C&W) the target is the minimal L2 norm of the samples it broke:
``partial_spearman`` / ``partial_p`` of the statistic with that norm given the margin.

The logistic regressions are scikit-learn's objective, minimised by scikit-learn (the LR test)
or by scipy's L-BFGS (the cross-validation folds, checked against scikit-learn); no optimiser is
written here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.preprocessing import StandardScaler

from robustcam.report.correlation import benjamini_hochberg
from robustcam.report.load import Evaluation
from robustcam.report.samples import (
    SETTING_COLUMNS,
    auroc,
    bootstrap_weights,
    bounded_settings,
    clean_correct_rows,
    minimal_cells,
    pair_matrix,
    percentile_interval,
    present_statistics,
    weighted_auroc,
)
from robustcam.report.tables import Setting, minimal_norm_column, minimal_perturbations, several_backends

MARGIN_COLUMN = "clean_margin"
FOLDS = 5
REPEATS = 10
DELTA_RESAMPLES = 1000
CI_LEVEL = 0.95
MIN_PARTIAL_SAMPLES = 5
MAX_NEWTON_STEPS = 50  # Newton converges in < 10 steps unless the data separate
# a ridge of 1/C = 1e-4 on standardised features: the maximum-likelihood fit to well below the
# test's precision where it exists, and a finite fit (not a 50-step divergence) under separation
NEAR_UNPENALISED = 1e4

RESULT_COLUMNS = (
    "auroc_margin",
    "auroc_statistic",
    "auroc_margin_plus",
    "delta_auroc",
    "delta_ci_low",
    "delta_ci_high",
    "lr_p",
    "lr_q",
    "coef",
    "partial_spearman",
    "partial_p",
)
INCREMENTAL_COLUMNS = (
    *SETTING_COLUMNS,
    *RESULT_COLUMNS,
    "note",
)
NOTE_NO_MARGIN = f"no {MARGIN_COLUMN} column in the records"


def _too_few(positives: int, negatives: int, folds: int) -> str:
    if min(positives, negatives) >= folds:
        return ""
    side = "broken" if positives < negatives else "robust"
    return f"fewer than {folds} {side} samples ({min(positives, negatives)}): no cross-validated comparison"


# --------------------------------------------------------------------------- pure steps


def _fold_objective(
    params: np.ndarray, design: np.ndarray, signs: np.ndarray, train: np.ndarray, penalty: np.ndarray, c: float
) -> tuple[float, np.ndarray]:
    """The sum over folds of scikit-learn's L2 logistic objective and its gradient.

    ``params`` holds one (weights, intercept) row per fold, flattened; ``design`` is (n, d + 1)
    with a column of ones; ``signs`` the labels as -1/+1; ``train`` (n, folds) says which
    samples each fold trains on; ``penalty`` masks the intercept out of ``0.5 ||w||^2``. Fold f:
    ``0.5 ||w_f||^2 + C sum_{i in train_f} log(1 + exp(-s_i z_if))`` with ``z = design @ w``.
    """
    weights = params.reshape(train.shape[1], design.shape[1])
    margins = signs[:, None] * (design @ weights.T)  # (n, folds)
    loss = c * float(np.sum(np.logaddexp(0.0, -margins) * train)) + 0.5 * float(np.sum((weights * penalty) ** 2))
    slope = -c * signs[:, None] * train * special.expit(-margins)  # d loss / d z
    gradient = slope.T @ design + weights * penalty
    return loss, gradient.ravel()


def out_of_fold_scores(
    features: np.ndarray, broken: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], *, c: float = 1.0
) -> np.ndarray:
    """Each sample's logistic-regression decision score from the folds that held it out,
    averaged over the repeats (``features`` (n, d), ``broken`` (n,) bool).

    Each fold's model is scikit-learn's ``LogisticRegression(C=c)`` (L2 penalty on the weights,
    unpenalised intercept) on standardised features (standardised once on all samples: that uses
    no labels). The folds are fitted together, as one sum of independent objectives minimised by
    scipy's L-BFGS, because fifty separate scikit-learn fits per statistic cost a hundred times more
    in per-call overhead than in arithmetic; ``tests/report/test_incremental.py`` checks the scores
    against scikit-learn's fold by fold.
    """
    scaled = StandardScaler().fit_transform(features)
    design = np.column_stack([scaled, np.ones(len(broken))])
    train = np.zeros((len(broken), len(splits)))
    for fold, (rows, _) in enumerate(splits):
        train[rows, fold] = 1.0
    penalty = np.ones(design.shape[1])
    penalty[-1] = 0.0
    signs = np.where(broken, 1.0, -1.0)
    start = np.zeros(len(splits) * design.shape[1])
    fitted = optimize.minimize(
        _fold_objective,
        start,
        args=(design, signs, train, penalty, c),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 1000, "gtol": 1e-7, "ftol": 1e-12},
    )
    weights = fitted.x.reshape(len(splits), design.shape[1])
    total = np.zeros(len(broken))
    counts = np.zeros(len(broken))
    for fold, (_, test) in enumerate(splits):
        total[test] += design[test] @ weights[fold]
        counts[test] += 1
    return total / counts


def delta_interval(
    broken: np.ndarray,
    reduced: np.ndarray,
    full: np.ndarray,
    *,
    resamples: int = DELTA_RESAMPLES,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Percentile CI of ``AUROC(full) - AUROC(reduced)`` over a paired, stratified bootstrap of
    samples: both AUROCs of a resample are computed on the same drawn samples."""
    weights = bootstrap_weights(broken, resamples, seed)
    delta = weighted_auroc(pair_matrix(broken, full), *weights) - weighted_auroc(pair_matrix(broken, reduced), *weights)
    return percentile_interval(delta, level)


def _log_likelihood(features: np.ndarray, broken: np.ndarray) -> tuple[float, np.ndarray, bool]:
    """(Nearly) unpenalised logistic fit on standardised features: (log-likelihood, coefficients,
    converged).

    Newton's method (scikit-learn's ``newton-cholesky``) converges in a few steps on a handful of
    features. Under (quasi-)separation the likelihood has no maximum; the tiny ridge keeps the fit
    finite, and ``converged`` is False when sklearn warns that it did not converge.
    """
    scaled = StandardScaler().fit_transform(features)
    labels = broken.astype(np.int64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(C=NEAR_UNPENALISED, solver="newton-cholesky", max_iter=MAX_NEWTON_STEPS)
        model.fit(scaled, labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    logit = model.decision_function(scaled)
    # log L = sum_i y_i z_i - log(1 + e^{z_i}), computed stably
    return float(np.sum(labels * logit - np.logaddexp(0.0, logit))), model.coef_[0], converged


def likelihood_ratio(margin: np.ndarray, statistic: np.ndarray, broken: np.ndarray) -> tuple[float, float, bool]:
    """LR test of adding ``statistic`` to a margin-only logistic model: (p, standardised coef, converged)."""
    reduced, _, ok_reduced = _log_likelihood(margin[:, None], broken)
    full, coef, ok_full = _log_likelihood(np.column_stack([margin, statistic]), broken)
    chi2 = max(0.0, 2.0 * (full - reduced))
    return float(stats.chi2.sf(chi2, df=1)), float(coef[1]), ok_reduced and ok_full


def partial_spearman(x: np.ndarray, y: np.ndarray, covariate: np.ndarray) -> tuple[float, float]:
    """Spearman's partial correlation of ``x`` and ``y`` given ``covariate`` and its two-sided p.

    The ranks of x and y are regressed (least squares with intercept) on the covariate's ranks;
    r is Pearson's r of the residuals and ``t = r sqrt((n - 3) / (1 - r^2))`` has n - 3 degrees
    of freedom (one covariate). For three variables it equals
    ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))`` on the ranks.
    """
    n = len(x)
    ranks = [stats.rankdata(v) for v in (x, y, covariate)]
    design = np.column_stack([np.ones(n), ranks[2]])
    residuals = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    scale = np.sqrt((residuals[0] ** 2).sum() * (residuals[1] ** 2).sum())
    if n < MIN_PARTIAL_SAMPLES or scale == 0:
        return math.nan, math.nan
    r = float(np.clip((residuals[0] * residuals[1]).sum() / scale, -1.0, 1.0))
    if abs(r) == 1.0:
        return r, 0.0
    t = r * math.sqrt((n - 3) / (1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), df=n - 3))


# --------------------------------------------------------------------------- one setting


def _empty(note: str) -> dict[str, Any]:
    return {**dict.fromkeys(RESULT_COLUMNS, math.nan), "note": note}


def margin_comparison(
    chosen: pd.DataFrame, statistics: Sequence[str], *, folds: int, repeats: int, seed: int
) -> list[dict[str, Any]]:
    """Rows for one bounded setting: one per statistic, sharing the margin-only model and the folds.

    ``chosen`` has one row per clean-correct sample with ``success`` (broken), ``clean_margin``
    and the statistic columns; the values are the ``RESULT_COLUMNS`` (see the module docstring).
    """
    broken_all = chosen["success"].to_numpy(dtype=bool)
    margin_all = pd.to_numeric(chosen[MARGIN_COLUMN], errors="coerce").to_numpy(dtype=float)
    rows = []
    reduced_cache: dict[bytes, tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]] = {}
    for column in statistics:
        statistic_all = pd.to_numeric(chosen[column], errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(margin_all) & np.isfinite(statistic_all)
        broken, margin, statistic = broken_all[keep], margin_all[keep], statistic_all[keep]
        positives, negatives = int(broken.sum()), int((~broken).sum())
        counts = {"n": positives + negatives, "n_positive": positives, "n_negative": negatives}
        note = _too_few(positives, negatives, folds)
        if note:
            rows.append({"statistic": column, **counts, **_empty(note)})
            continue
        key = keep.tobytes()
        if key not in reduced_cache:  # the folds and the margin-only model depend only on which samples are kept
            cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
            splits = list(cv.split(margin[:, None], broken))
            reduced_cache[key] = (splits, out_of_fold_scores(margin[:, None], broken, splits))
        splits, reduced = reduced_cache[key]
        full = out_of_fold_scores(np.column_stack([margin, statistic]), broken, splits)
        auroc_margin, auroc_full = auroc(broken, reduced), auroc(broken, full)
        low, high = delta_interval(broken, reduced, full, seed=seed)
        lr_p, coef, converged = likelihood_ratio(margin, statistic, broken)
        rho, rho_p = partial_spearman(statistic, broken.astype(float), margin)
        rows.append(
            {
                "statistic": column,
                **counts,
                "auroc_margin": auroc_margin,
                "auroc_statistic": auroc(broken, statistic),
                "auroc_margin_plus": auroc_full,
                "delta_auroc": auroc_full - auroc_margin,
                "delta_ci_low": low,
                "delta_ci_high": high,
                "lr_p": lr_p,
                "coef": coef,
                "partial_spearman": rho,
                "partial_p": rho_p,
                "note": "" if converged else "the margin (nearly) separates broken from robust: LR p unreliable",
            }
        )
    return rows


def _minimal_rows(found: pd.DataFrame, statistics: Sequence[str]) -> list[dict[str, Any]]:
    """Rows for one minimal attack: partial Spearman of each statistic with the minimal norm given the margin."""
    rows = []
    for column in statistics:
        values = {c: pd.to_numeric(found[c], errors="coerce").to_numpy(dtype=float) for c in (column, MARGIN_COLUMN)}
        norm = found["norm"].to_numpy(dtype=float)
        keep = np.isfinite(values[column]) & np.isfinite(values[MARGIN_COLUMN]) & np.isfinite(norm)
        n = int(keep.sum())
        row: dict[str, Any] = {
            "statistic": column,
            "n": n,
            "n_positive": math.nan,
            "n_negative": math.nan,
            **_empty("" if n >= MIN_PARTIAL_SAMPLES else f"n < {MIN_PARTIAL_SAMPLES}: not meaningful"),
        }
        if n >= MIN_PARTIAL_SAMPLES:
            rho, p = partial_spearman(values[column][keep], norm[keep], values[MARGIN_COLUMN][keep])
            row.update(partial_spearman=rho, partial_p=p, note="" if math.isfinite(rho) else "constant input")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the table


def incremental_value(
    evaluations: Sequence[Evaluation], *, folds: int = FOLDS, repeats: int = REPEATS, seed: int = 0
) -> pd.DataFrame:
    """``samples_incremental.csv``: per checkpoint, setting and clean statistic, what the statistic
    adds to the clean logit margin (columns ``INCREMENTAL_COLUMNS``; see the module docstring)."""
    with_backend = several_backends(evaluations)
    rows: list[dict[str, Any]] = []
    for evaluation in evaluations:
        statistics = present_statistics(evaluation)
        if not statistics:
            continue
        base = {"name": evaluation.name, "loss": evaluation.loss, "noise": evaluation.noise}
        has_margin = MARGIN_COLUMN in evaluation.per_sample.columns
        for setting in bounded_settings(evaluation):
            where = _where(setting, "auroc", with_backend)
            chosen = clean_correct_rows(evaluation, setting)
            if not has_margin:
                rows += [
                    {**base, **where, "statistic": c, "n": len(chosen), **_empty(NOTE_NO_MARGIN)} for c in statistics
                ]
                continue
            for row in margin_comparison(chosen, statistics, folds=folds, repeats=repeats, seed=seed):
                rows.append({**base, **where, **row})
        for attack, backend, norm in minimal_cells(evaluation):
            target = minimal_norm_column(attack, backend, norm, with_backend=with_backend).replace(
                "_mean_min_", "_min_"
            )
            where = {
                "kind": "partial_min_norm",
                "attack": attack,
                "backend": backend,
                "norm": norm,
                "eps": math.nan,
                "target": target,
            }
            found = minimal_perturbations(evaluation, attack, backend)
            found = found[found["found"]]
            if not has_margin or MARGIN_COLUMN not in found.columns:
                rows += [
                    {**base, **where, "statistic": c, "n": len(found), **_empty(NOTE_NO_MARGIN)} for c in statistics
                ]
                continue
            rows += [{**base, **where, **row} for row in _minimal_rows(found, statistics)]
    frame = pd.DataFrame(rows, columns=list(INCREMENTAL_COLUMNS))
    frame["lr_q"] = benjamini_hochberg(frame["lr_p"].to_numpy(dtype=float)) if len(frame) else []
    return frame


def _where(setting: Setting, kind: str, with_backend: bool) -> dict[str, Any]:
    return {
        "kind": kind,
        "attack": setting.attack,
        "backend": setting.backend,
        "norm": setting.norm,
        "eps": setting.eps,
        "target": setting.label(with_backend=with_backend),
    }


__all__ = [
    "INCREMENTAL_COLUMNS",
    "MARGIN_COLUMN",
    "delta_interval",
    "incremental_value",
    "likelihood_ratio",
    "margin_comparison",
    "out_of_fold_scores",
    "partial_spearman",
]
