"""Within a checkpoint: AUROC of clean statistics for broken samples, against scikit-learn, with
its stratified bootstrap CI; Spearman with the C&W minimal norm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from robustcam.report import load_evaluations, sample_auroc
from robustcam.report.samples import auroc, auroc_interval, bootstrap_weights, pair_matrix, weighted_auroc
from robustcam.report.tables import minimal_perturbations

from .synthetic import make_records, sweep_stats, write_folder, write_sweep


def test_auroc_is_roc_auc_score_with_ties() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(40) < 0.4
    score = np.round(rng.normal(size=40), 1)  # rounded: many ties
    assert auroc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)


def test_bootstrap_aurocs_are_roc_auc_score_of_the_resampled_samples() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(30) < 0.5
    score = rng.normal(size=30) + positive
    weights_pos, weights_neg = bootstrap_weights(positive, 50, seed=4)
    assert (weights_pos.sum(axis=1) == positive.sum()).all() and (weights_neg.sum(axis=1) == (~positive).sum()).all()
    values = weighted_auroc(pair_matrix(positive, score), weights_pos, weights_neg)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    for k in range(50):
        drawn = np.concatenate([np.repeat(pos, weights_pos[k].astype(int)), np.repeat(neg, weights_neg[k].astype(int))])
        assert values[k] == pytest.approx(roc_auc_score(positive[drawn], score[drawn]), abs=1e-12)


def test_auroc_interval_is_seeded_and_contains_the_estimate() -> None:
    rng = np.random.default_rng(2)
    positive = rng.random(200) < 0.3
    score = rng.normal(size=200) + positive
    low, high = auroc_interval(positive, score, seed=3)
    assert low < auroc(positive, score) < high
    assert (low, high) == auroc_interval(positive, score, seed=3) != auroc_interval(positive, score, seed=4)


def test_auroc_rows_equal_sklearn_and_separating_statistics_score_one(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=2)
    evaluations = load_evaluations(tmp_path)
    samples = sample_auroc(evaluations)
    aurocs = samples[samples["kind"] == "auroc"]
    # 2 checkpoints x 4 bounded settings x 6 statistics
    assert len(aurocs) == 2 * 4 * 6
    for row in aurocs.itertuples():
        frame = next(e for e in evaluations if e.name == row.name).per_sample
        chosen = frame[(frame["attack"] == row.attack) & (frame["eps"] == row.eps) & frame["clean_correct"]]
        y, score = chosen["success"].to_numpy(), chosen[row.statistic].to_numpy()
        assert (row.n_positive, row.n_negative) == (y.sum(), (~y).sum())
        if row.statistic == "clean_pos_peak":  # constant: no information
            assert row.auroc == 0.5
        assert row.auroc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
        assert row.auroc_ci_low <= row.auroc <= row.auroc_ci_high
    separating = aurocs[(aurocs["target"] == "pgd@8/255") & (aurocs["statistic"] == "clean_neg_homogeneity")]
    assert (separating["auroc"] == 1.0).all() and (separating["auroc_ci_low"] == 1.0).all()
    reversed_ = aurocs[(aurocs["target"] == "pgd@8/255") & (aurocs["statistic"] == "clean_peak_margin")]
    assert (reversed_["auroc"] == 0.0).all()


def test_auroc_is_nan_when_no_sample_or_every_sample_breaks(tmp_path: Path) -> None:
    records = make_records(
        n=10,
        correct=range(6),
        broken={("pgd", "4/255"): set(), ("pgd", "8/255"): set(range(6))},
        clean_stats=sweep_stats(0, set()) | {s: np.arange(10.0) for s in ("neg_homogeneity",)},
    )
    write_folder(tmp_path / "a", records)
    samples = sample_auroc(load_evaluations(tmp_path))
    none_broken = samples[samples["target"] == "pgd@4/255"]
    all_broken = samples[samples["target"] == "pgd@8/255"]
    assert none_broken["auroc"].isna().all() and (none_broken["n_positive"] == 0).all()
    assert none_broken["auroc_ci_low"].isna().all() and (none_broken["note"] == "no broken samples").all()
    assert all_broken["auroc"].isna().all() and (all_broken["n_negative"] == 0).all()


def test_spearman_with_the_cw_minimal_norm_uses_the_successful_samples_and_a_permutation_p(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    cw = {i: float(v) for i, v in enumerate(rng.uniform(0.1, 2.0, size=10))}
    stats_ = sweep_stats(0, set()) | {"neg_homogeneity": rng.normal(size=20)}
    write_folder(tmp_path / "a", make_records(n=20, cw=cw, clean_stats=stats_))
    (evaluation,) = load_evaluations(tmp_path)
    samples = sample_auroc([evaluation])
    row = samples[(samples["kind"] == "spearman_min_norm") & (samples["statistic"] == "clean_neg_homogeneity")]
    found = minimal_perturbations(evaluation, "cw", "torchattacks")
    found = found[found["found"]]
    assert sorted(found["index"]) == list(range(10))
    x, y = stats_["neg_homogeneity"][:10], [cw[i] for i in range(10)]
    expected = stats.spearmanr(x, y)
    reference = stats.permutation_test(
        (stats.rankdata(y),),
        lambda v, axis=-1: stats.pearsonr(np.broadcast_to(stats.rankdata(x), v.shape), v, axis=-1).statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=10_000,
        rng=np.random.default_rng(0),
    )
    assert row["n"].item() == 10 and row["target"].item() == "cw_min_l2"
    assert row["rho"].item() == pytest.approx(expected.statistic, abs=1e-12)
    assert row["p"].item() == pytest.approx(reference.pvalue, abs=1e-12)
    assert math.isnan(row["auroc"].item())


def test_no_cam_columns_give_no_sample_rows(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=2, cam=False)
    samples = sample_auroc(load_evaluations(tmp_path))
    assert samples.empty and "auroc" in samples.columns
