"""Model-level correlations: permutation p-values against full enumeration and scipy, BCa CIs
against scipy.stats.bootstrap, BH q-values against scipy.stats.false_discovery_control,
primary hypotheses, and the small-n rules."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from robustcam.report import load_evaluations, model_correlations, model_table, strongest_correlations
from robustcam.report.correlation import (
    EXACT_MAX_N,
    PrimaryHypothesisError,
    bca_interval,
    benjamini_hochberg,
    correlate,
    default_primary,
    parse_primary,
    permutation_test,
)

from .synthetic import write_sweep


@pytest.fixture
def noisy_table() -> pd.DataFrame:
    """Twelve checkpoints whose statistic relates to robust accuracy, but not perfectly."""
    rng = np.random.default_rng(5)
    stat = rng.normal(size=12)
    return pd.DataFrame(
        {
            "name": [f"m{i}" for i in range(12)],
            "loss": ["ce"] * 12,
            "noise": ["clean"] * 12,
            "clean_neg_homogeneity": stat,
            "clean_neg_peak_max": rng.normal(size=12),
            "pgd@8/255": 0.5 - 0.1 * stat + 0.1 * rng.normal(size=12),
            "worst@8/255": np.full(12, 0.3),
        }
    )


def _enumerated_p(x: np.ndarray, y: np.ndarray, statistic: object) -> float:
    """Two-sided p over every ordering of y, by brute force (itertools)."""
    observed = statistic(x, y).statistic  # type: ignore[operator]
    null = np.array([statistic(x, y[list(order)]).statistic for order in itertools.permutations(range(len(y)))])  # type: ignore[operator]
    tolerance = abs(observed) * 1e-12
    greater, less = np.mean(null >= observed - tolerance), np.mean(null <= observed + tolerance)
    return min(1.0, 2 * min(greater, less))


def test_exact_permutation_p_matches_full_enumeration_at_n_5() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=5), rng.normal(size=5)
    y[2] = y[4]  # a tie in the ranks
    row = correlate(x, y)
    assert row["p_method"] == "exact" and row["p_orderings"] == 120
    assert row["spearman_p"] == pytest.approx(_enumerated_p(x, y, stats.spearmanr), abs=1e-12)
    assert row["pearson_p"] == pytest.approx(_enumerated_p(x, y, stats.pearsonr), abs=1e-12)
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert row["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_exact_p_is_scipys_permutation_test_with_every_ordering() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=7), rng.normal(size=7)
    _, p, method, orderings = permutation_test(x, y)
    reference = stats.permutation_test(
        (y,),
        lambda v, axis=-1: stats.pearsonr(np.broadcast_to(x, v.shape), v, axis=-1).statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=np.inf,
    )
    assert method == "exact" and orderings == math.factorial(7)
    assert p == pytest.approx(reference.pvalue, abs=1e-12)


def test_four_points_can_never_be_significant_and_get_no_ci() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    row = correlate(x, 10 * x)
    assert row["spearman_rho"] == pytest.approx(1.0) and row["spearman_p"] == pytest.approx(2 / 24)
    assert math.isnan(row["spearman_ci_low"]) and math.isnan(row["spearman_ci_high"])
    assert row["note"] == "n < 10: no CI"


def test_monte_carlo_above_eight_points_is_scipys_and_seeded() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=EXACT_MAX_N + 4)
    y = x + rng.normal(size=len(x))
    _, p, method, orderings = permutation_test(x, y, seed=11)
    again = permutation_test(x, y, seed=11)[1]
    other = permutation_test(x, y, seed=12)[1]
    reference = stats.permutation_test(
        (y,),
        lambda v, axis=-1: stats.pearsonr(np.broadcast_to(x, v.shape), v, axis=-1).statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=10_000,
        rng=np.random.default_rng(11),
    )
    assert method == "monte_carlo" and orderings == 10_000
    assert p == pytest.approx(reference.pvalue, abs=1e-12) and p == again and p != other
    assert p >= 1 / 10_001  # the observed ordering counts: never 0


def test_bca_interval_from_ten_points_is_scipys_bootstrap() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=14)
    y = x + rng.normal(size=14)
    low, high = bca_interval(x, y, resamples=999, seed=2)

    def spearman_rows(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        if a.ndim == 1:
            return np.asarray(stats.spearmanr(a, b).statistic)
        return np.array(
            [stats.spearmanr(r, s).statistic for r, s in zip(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))]
        ).reshape(a.shape[:-1])

    reference = stats.bootstrap(
        (x, y),
        spearman_rows,
        paired=True,
        vectorized=True,
        method="BCa",
        n_resamples=999,
        rng=np.random.default_rng(2),
    )
    assert low == pytest.approx(reference.confidence_interval.low, abs=1e-9)
    assert high == pytest.approx(reference.confidence_interval.high, abs=1e-9)
    row = correlate(x, y, bootstrap=999, seed=2)
    assert low <= row["spearman_rho"] <= high and row["note"] == ""
    assert math.isnan(bca_interval(x[:9], y[:9])[0])


def test_q_values_are_scipys_false_discovery_control_and_nan_is_not_a_test() -> None:
    p = np.array([0.01, 0.04, math.nan, 0.03, 0.2, 0.005])
    q = benjamini_hochberg(p)
    finite = np.isfinite(p)
    np.testing.assert_allclose(q[finite], stats.false_discovery_control(p[finite], method="bh"), rtol=0, atol=1e-15)
    assert math.isnan(q[2])


def test_correlations_table_has_q_values_over_every_row_and_per_family(noisy_table: pd.DataFrame) -> None:
    correlations = model_correlations(noisy_table, bootstrap=200)
    tested = correlations[correlations["spearman_p"].notna()]
    np.testing.assert_allclose(tested["q_value"], stats.false_discovery_control(tested["spearman_p"]), atol=1e-15)
    for _, family in tested.groupby("family"):
        np.testing.assert_allclose(family["q_family"], stats.false_discovery_control(family["spearman_p"]), atol=1e-15)
    assert (correlations["finding"] == (correlations["q_family"] < 0.05)).all()
    constant = correlations[correlations["target"] == "worst@8/255"]
    assert constant["spearman_rho"].isna().all() and (constant["note"] == "constant robustness: no correlation").all()


def test_default_primary_hypotheses_and_their_family(noisy_table: pd.DataFrame) -> None:
    table = noisy_table.assign(**{"worst@4/255": 0.4 + 0.01 * np.arange(12)})
    assert default_primary(table) == [("clean_neg_homogeneity", "worst@8/255"), ("clean_neg_peak_max", "worst@8/255")]
    noisy = table.assign(test_acc=np.linspace(0.5, 0.9, 12), noise_rate=[0.0, 0.2] * 6)
    assert ("clean_neg_peak_max", "test_acc") in default_primary(noisy)
    correlations = model_correlations(table, bootstrap=100)
    assert list(correlations["family"][:2]) == ["primary", "primary"]
    assert (correlations["family"][2:] == "exploratory").all()


def test_declared_primary_hypotheses_are_parsed_and_bad_names_are_one_line_errors(noisy_table: pd.DataFrame) -> None:
    pairs = parse_primary(["clean_neg_peak_max:pgd@8/255", "clean_neg_homogeneity"], noisy_table)
    assert pairs == [("clean_neg_peak_max", "pgd@8/255"), ("clean_neg_homogeneity", "worst@8/255")]
    correlations = model_correlations(noisy_table, primary=pairs, bootstrap=100)
    primary = correlations[correlations["family"] == "primary"]
    assert list(zip(primary["statistic"], primary["target"])) == pairs
    with pytest.raises(PrimaryHypothesisError, match=r"'clean_nope' is not a CAM statistic .* valid: clean_neg"):
        parse_primary(["clean_nope:pgd@8/255"], noisy_table)
    with pytest.raises(PrimaryHypothesisError, match=r"'pgd@9/255' is not a robustness column .* valid: pgd@8/255"):
        parse_primary(["clean_neg_peak_max:pgd@9/255"], noisy_table)


def test_a_monotone_statistic_over_five_checkpoints_gives_the_exact_smallest_p(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    table = model_table(load_evaluations(tmp_path))
    row = model_correlations(table, statistics=["clean_neg_homogeneity"], targets=["worst@8/255"]).iloc[0]
    assert row["n"] == 5 and row["spearman_rho"] == pytest.approx(-1.0, abs=1e-12)
    assert row["spearman_p"] == pytest.approx(2 / 120) and row["p_method"] == "exact"
    assert math.isnan(row["spearman_ci_low"])


def test_fewer_than_four_checkpoints_are_not_computed(noisy_table: pd.DataFrame) -> None:
    correlations = model_correlations(noisy_table.head(3), bootstrap=100)
    assert (correlations["n"] == 3).all() and (correlations["note"] == "n < 4: not meaningful").all()
    assert correlations[["spearman_rho", "spearman_p", "pearson_r", "q_value"]].isna().all().all()
    assert not correlations["finding"].any()


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


def test_unknown_columns_and_bad_resample_counts_are_errors(noisy_table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="'nope' is not in the model table"):
        model_correlations(noisy_table, statistics=["nope"])
    with pytest.raises(ValueError, match="bootstrap must be >= 0"):
        model_correlations(noisy_table, bootstrap=-1)
    with pytest.raises(ValueError, match="resamples must be >= 10000"):
        model_correlations(noisy_table, resamples=999)


def test_strongest_correlations_are_ordered_by_q_value(noisy_table: pd.DataFrame) -> None:
    correlations = model_correlations(noisy_table, bootstrap=50)
    strongest = strongest_correlations(correlations, 5)
    assert strongest["spearman_p"].notna().all()
    assert list(strongest["q_value"]) == sorted(strongest["q_value"])
