"""model_correlations and sample_auroc against scipy and scikit-learn on the same arrays."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from robustcam.report import (
    bootstrap_spearman,
    load_evaluations,
    model_correlations,
    model_table,
    sample_auroc,
    strongest_correlations,
)
from robustcam.report.tables import minimal_perturbations

from .synthetic import make_records, sweep_stats, write_folder, write_sweep


@pytest.fixture
def noisy_table() -> pd.DataFrame:
    """Twelve checkpoints whose statistic relates to robust accuracy, but not perfectly."""
    rng = np.random.default_rng(5)
    stat = rng.normal(size=12)
    return pd.DataFrame({
        "name": [f"m{i}" for i in range(12)], "loss": ["ce"] * 12, "noise": ["clean"] * 12,
        "clean_neg_homogeneity": stat, "clean_neg_peak_max": rng.normal(size=12),
        "pgd@8/255": 0.5 - 0.1 * stat + 0.1 * rng.normal(size=12), "worst@8/255": np.full(12, 0.3),
    })  # fmt: skip


def test_spearman_and_pearson_are_scipys(noisy_table: pd.DataFrame) -> None:
    correlations = model_correlations(noisy_table, bootstrap=200)
    assert len(correlations) == 4  # 2 statistics x 2 robust accuracy columns
    for row in correlations.itertuples():
        x, y = noisy_table[row.statistic].to_numpy(), noisy_table[row.target].to_numpy()
        if row.target == "worst@8/255":
            assert math.isnan(row.spearman_rho) and row.note == "constant robustness: no correlation"
            continue
        spearman, pearson = stats.spearmanr(x, y), stats.pearsonr(x, y)
        assert row.n == 12 and row.note == ""
        assert row.spearman_rho == spearman.statistic and row.spearman_p == spearman.pvalue
        assert row.pearson_r == pearson.statistic and row.pearson_p == pearson.pvalue


def test_bootstrap_ci_contains_the_estimate_and_is_deterministic_for_a_seed(noisy_table: pd.DataFrame) -> None:
    first = model_correlations(noisy_table, bootstrap=500, seed=3)
    again = model_correlations(noisy_table, bootstrap=500, seed=3)
    other = model_correlations(noisy_table, bootstrap=500, seed=4)
    pd.testing.assert_frame_equal(first, again)
    row = first.iloc[0]
    assert row["spearman_ci_low"] <= row["spearman_rho"] <= row["spearman_ci_high"]
    assert row["spearman_ci_low"] < row["spearman_ci_high"]
    assert row["ci_excludes_zero"] == (row["spearman_ci_high"] < 0 or row["spearman_ci_low"] > 0)
    assert other.iloc[0]["spearman_ci_low"] != row["spearman_ci_low"]


def test_bootstrap_resamples_are_scipys_spearman_on_resampled_checkpoints() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=8), rng.normal(size=8)
    picks = np.random.default_rng(9).integers(0, 8, size=(300, 8))
    rhos = [stats.spearmanr(x[p], y[p]).statistic for p in picks if np.ptp(x[p]) > 0 and np.ptp(y[p]) > 0]
    low, high, used = bootstrap_spearman(x, y, resamples=300, seed=9)
    assert used == len(rhos)
    np.testing.assert_allclose([low, high], np.percentile(rhos, [2.5, 97.5]), rtol=0, atol=1e-12)


def test_a_monotone_statistic_gives_rho_minus_one_with_a_ci_at_minus_one(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    table = model_table(load_evaluations(tmp_path))
    row = model_correlations(table, statistics=["clean_neg_homogeneity"], targets=["worst@8/255"]).iloc[0]
    assert row["n"] == 5 and row["spearman_rho"] == pytest.approx(-1.0, abs=1e-12)
    assert row["spearman_ci_low"] == pytest.approx(-1.0, abs=1e-12)
    assert row["spearman_ci_high"] == pytest.approx(-1.0, abs=1e-12)
    assert row["ci_excludes_zero"] and row["note"] == "small n (< 10): a hint at most"


def test_fewer_than_four_checkpoints_are_not_computed(noisy_table: pd.DataFrame) -> None:
    correlations = model_correlations(noisy_table.head(3), bootstrap=100)
    assert (correlations["n"] == 3).all() and (correlations["note"] == "n < 4: not meaningful").all()
    assert correlations[["spearman_rho", "pearson_r", "spearman_ci_low"]].isna().all().all()


def test_missing_values_reduce_n(noisy_table: pd.DataFrame) -> None:
    table = noisy_table.copy()
    table.loc[:8, "clean_neg_homogeneity"] = np.nan
    row = model_correlations(table, statistics=["clean_neg_homogeneity"], targets=["pgd@8/255"]).iloc[0]
    assert row["n"] == 3 and row["note"] == "n < 4: not meaningful"


def test_constant_columns_give_nan_and_a_note_without_any_warning(noisy_table: pd.DataFrame) -> None:
    table = noisy_table.assign(clean_neg_peak_max=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        correlations = model_correlations(table, bootstrap=100)
    constant = correlations[correlations["statistic"] == "clean_neg_peak_max"]
    assert constant["spearman_rho"].isna().all()
    assert (constant["note"] == "constant statistic: no correlation").all()


def test_resamples_with_a_constant_side_are_skipped_and_too_few_usable_give_no_ci() -> None:
    low, high, used = bootstrap_spearman(np.arange(4.0), np.full(4, 5.0), resamples=100, seed=0)
    assert math.isnan(low) and math.isnan(high) and used == 0
    # [0, 0, 0, 1]: a resample without the last checkpoint is constant, about (3/4)^4 of them
    x, y = np.array([0.0, 0, 0, 1]), np.arange(4.0)
    picks = np.random.default_rng(0).integers(0, 4, size=(1000, 4))
    low, high, used = bootstrap_spearman(x, y, resamples=1000, seed=0)
    usable = (picks == 3).any(axis=1) & (picks != picks[:, :1]).any(axis=1)
    assert used == int(usable.sum()) and 500 < used < 1000
    assert math.isfinite(low) and math.isfinite(high)


def test_unknown_columns_and_negative_resamples_are_errors(noisy_table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="'nope' is not in the model table"):
        model_correlations(noisy_table, statistics=["nope"])
    with pytest.raises(ValueError, match="bootstrap must be >= 0"):
        model_correlations(noisy_table, bootstrap=-1)


def test_strongest_correlations_sort_by_absolute_rho(noisy_table: pd.DataFrame) -> None:
    correlations = model_correlations(noisy_table, bootstrap=50)
    strongest = strongest_correlations(correlations, 5)
    assert strongest["spearman_rho"].notna().all()
    assert list(strongest["spearman_rho"].abs()) == sorted(strongest["spearman_rho"].abs(), reverse=True)


# --------------------------------------------------------------------------- within a checkpoint


def test_auroc_equals_sklearn_and_separating_statistics_score_one(tmp_path: Path) -> None:
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
        assert row.auroc == roc_auc_score(y, score)
    separating = aurocs[(aurocs["target"] == "pgd@8/255") & (aurocs["statistic"] == "clean_neg_homogeneity")]
    assert (separating["auroc"] == 1.0).all()
    reversed_ = aurocs[(aurocs["target"] == "pgd@8/255") & (aurocs["statistic"] == "clean_peak_margin")]
    assert (reversed_["auroc"] == 0.0).all()


def test_auroc_is_nan_when_no_sample_or_every_sample_breaks(tmp_path: Path) -> None:
    records = make_records(
        n=10, correct=range(6), broken={("pgd", "4/255"): set(), ("pgd", "8/255"): set(range(6))},
        clean_stats=sweep_stats(0, set()) | {s: np.arange(10.0) for s in ("neg_homogeneity",)},
    )  # fmt: skip
    write_folder(tmp_path / "a", records)
    samples = sample_auroc(load_evaluations(tmp_path))
    none_broken = samples[samples["target"] == "pgd@4/255"]
    all_broken = samples[samples["target"] == "pgd@8/255"]
    assert none_broken["auroc"].isna().all() and (none_broken["n_positive"] == 0).all()
    assert (none_broken["note"] == "no broken samples").all()
    assert all_broken["auroc"].isna().all() and (all_broken["n_negative"] == 0).all()


def test_spearman_with_the_cw_minimal_norm_is_scipys_on_the_successful_samples(tmp_path: Path) -> None:
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
    expected = stats.spearmanr(stats_["neg_homogeneity"][:10], [cw[i] for i in range(10)])
    assert row["n"].item() == 10 and row["target"].item() == "cw_min_l2"
    assert row["rho"].item() == expected.statistic and row["p"].item() == expected.pvalue
    assert math.isnan(row["auroc"].item())


def test_no_cam_columns_give_no_sample_rows(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=2, cam=False)
    samples = sample_auroc(load_evaluations(tmp_path))
    assert samples.empty and "auroc" in samples.columns
