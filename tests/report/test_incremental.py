"""What a CAM statistic adds to the logit margin: cross-validated AUROC gain with a CI, the
likelihood-ratio test and the partial Spearman, on synthetic samples with a known answer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.preprocessing import StandardScaler

from robustcam.report import incremental_value, load_evaluations
from robustcam.report.incremental import likelihood_ratio, margin_comparison, out_of_fold_scores, partial_spearman

from .synthetic import make_records, sweep_stats, write_folder, write_sweep


def _samples(seed: int, n: int = 300) -> pd.DataFrame:
    """Clean margins; broken depends on the margin and on an independent signal ``hidden``."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(3.0, 1.5, n)
    hidden = rng.normal(size=n)
    broken = rng.random(n) < 1 / (1 + np.exp(1.5 * (margin - 3.0) - 1.5 * hidden))
    return pd.DataFrame(
        {
            "success": broken,
            "clean_margin": margin,
            "clean_echo": np.exp(-0.5 * margin) + rng.normal(0, 0.05, n),  # a monotone function of the margin + noise
            "clean_signal": hidden + rng.normal(0, 0.3, n),  # independent of the margin, related to breaking
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_statistic_that_echoes_the_margin_adds_nothing_and_an_independent_one_adds(seed: int) -> None:
    rows = {
        r["statistic"]: r
        for r in margin_comparison(_samples(seed), ["clean_echo", "clean_signal"], folds=5, repeats=10, seed=0)
    }
    echo, signal = rows["clean_echo"], rows["clean_signal"]
    assert echo["auroc_statistic"] > 0.7  # on its own it looks predictive
    assert echo["delta_ci_low"] <= 0 <= echo["delta_ci_high"]
    assert signal["delta_auroc"] > 0 and signal["delta_ci_low"] > 0
    assert signal["coef"] > 0 and signal["lr_p"] < 1e-3 and signal["partial_spearman"] > 0
    assert echo["auroc_margin"] == signal["auroc_margin"]  # one margin-only model, the same folds


def test_out_of_fold_scores_are_scikit_learns_logistic_regression_fold_by_fold() -> None:
    frame = _samples(6, n=150)
    features = frame[["clean_margin", "clean_signal"]].to_numpy()
    broken = frame["success"].to_numpy()
    splits = list(RepeatedStratifiedKFold(n_splits=5, n_repeats=3, random_state=1).split(features, broken))
    scaled = StandardScaler().fit_transform(features)
    total, counts = np.zeros(len(broken)), np.zeros(len(broken))
    for train, test in splits:
        model = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(scaled[train], broken[train])
        total[test] += model.decision_function(scaled[test])
        counts[test] += 1
    np.testing.assert_allclose(out_of_fold_scores(features, broken, splits), total / counts, rtol=0, atol=1e-5)


def test_likelihood_ratio_matches_an_independent_maximum_likelihood_fit() -> None:
    frame = _samples(4, n=200)
    margin, statistic = frame["clean_margin"].to_numpy(), frame["clean_signal"].to_numpy()
    broken = frame["success"].to_numpy()

    def fitted_log_likelihood(features: np.ndarray) -> float:
        design = np.column_stack([np.ones(len(broken)), (features - features.mean(0)) / features.std(0)])

        def negative(beta: np.ndarray) -> float:
            z = design @ beta
            return float(np.sum(np.logaddexp(0, z)) - np.sum(broken * z))

        return -optimize.minimize(negative, np.zeros(design.shape[1]), method="BFGS", options={"gtol": 1e-10}).fun

    chi2 = 2 * (fitted_log_likelihood(np.column_stack([margin, statistic])) - fitted_log_likelihood(margin[:, None]))
    p, coef, converged = likelihood_ratio(margin, statistic, broken)
    assert converged and p == pytest.approx(stats.chi2.sf(chi2, df=1), rel=1e-4)
    assert coef > 0


def test_partial_spearman_is_the_closed_form_on_ranks_with_a_t_test() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(size=60)
    x, y = z + rng.normal(size=60), z + 0.5 * rng.normal(size=60) + 0.3 * rng.normal(size=60)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    r_xy, r_xz, r_yz = (stats.pearsonr(a, b).statistic for a, b in ((rx, ry), (rx, rz), (ry, rz)))
    expected = (r_xy - r_xz * r_yz) / math.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    rho, p = partial_spearman(x, y, z)
    t = expected * math.sqrt(57 / (1 - expected**2))
    assert rho == pytest.approx(expected, abs=1e-12)
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=57), abs=1e-12)


def test_too_few_broken_samples_give_nan_and_a_note() -> None:
    frame = _samples(0, n=80)
    frame["success"] = False
    frame.loc[:2, "success"] = True
    (row,) = margin_comparison(frame, ["clean_signal"], folds=5, repeats=10, seed=0)
    assert math.isnan(row["delta_auroc"]) and row["n_positive"] == 3
    assert row["note"] == "fewer than 5 broken samples (3): no cross-validated comparison"


def test_incremental_table_covers_every_checkpoint_setting_and_statistic_and_is_seeded(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=2)
    evaluations = load_evaluations(tmp_path)
    table = incremental_value(evaluations, repeats=2)
    bounded = table[table["kind"] == "auroc"]
    assert len(bounded) == 2 * 4 * 6 and set(bounded["name"]) == {e.name for e in evaluations}
    again = incremental_value(evaluations, repeats=2)
    pd.testing.assert_frame_equal(table, again)
    lr = table["lr_p"].to_numpy(dtype=float)
    finite = np.isfinite(lr)
    np.testing.assert_allclose(table["lr_q"].to_numpy(dtype=float)[finite], stats.false_discovery_control(lr[finite]))


def test_minimal_attacks_get_the_partial_spearman_with_the_minimal_norm(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cw = {i: float(v) for i, v in enumerate(rng.uniform(0.1, 2.0, size=12))}
    write_folder(
        tmp_path / "a",
        make_records(n=20, cw=cw, clean_stats=sweep_stats(0, set()) | {"neg_homogeneity": rng.normal(size=20)}),
    )
    table = incremental_value(load_evaluations(tmp_path))
    row = table[(table["kind"] == "partial_min_norm") & (table["statistic"] == "clean_neg_homogeneity")].iloc[0]
    frame = load_evaluations(tmp_path)[0].per_sample
    first = frame[frame["attack"] == "cw"].drop_duplicates("index").set_index("index")
    chosen = sorted(cw)
    rho, p = partial_spearman(
        first.loc[chosen, "clean_neg_homogeneity"].to_numpy(),
        np.array([cw[i] for i in chosen]),
        first.loc[chosen, "clean_margin"].to_numpy(),
    )
    assert row["n"] == 12 and row["target"] == "cw_min_l2"
    # the synthetic margins are constant (1.0): the partial correlation is then the plain one
    assert row["partial_spearman"] == pytest.approx(rho, abs=1e-12) and row["partial_p"] == pytest.approx(p, abs=1e-12)
