"""Dose-response: the factor, the per-dose t-intervals, the trend test, the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from robustcam.cam import STAT_NAMES
from robustcam.report import configuration_values, load_evaluations, model_table
from robustcam.report.dose import (
    dose_factor,
    dose_points,
    dose_quantities,
    dose_response,
    dose_summary,
    plot_dose_response,
    t_interval,
)

from .synthetic import make_records, write_folder

WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
SEEDS = (0, 1, 2)
T_975_DF2 = 4.302652729911275  # t-table: the 97.5% quantile of Student's t with 2 degrees of freedom


def _design(
    weights: tuple[float, ...] = WEIGHTS, seeds: tuple[int, ...] = SEEDS, **extra: list[Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model table and its configuration values: clean_neg_homogeneity falls with the weight,
    pgd@8/255 rises with it, clean_acc is constant; each seed adds a small offset."""
    rows, value_rows = [], []
    for i, weight in enumerate(weights):
        for seed in seeds:
            name = f"w{weight:g}_s{seed}"
            rows.append(
                {
                    "name": name,
                    "loss": "hnc",
                    "noise": "clean",
                    "n_samples": 200,
                    "clean_acc": 0.99,
                    "pgd@8/255": 0.1 + 0.1 * i + 0.01 * seed,
                    "clean_neg_homogeneity": 4.0 - 0.5 * i - 0.02 * seed,
                    "clean_neg_peak_max": 3.0 - 0.1 * i + 0.05 * seed,
                }
            )
            value_rows.append(
                {
                    "name": name,
                    "configuration": f"loss.hnc.weight={weight:g}",
                    "seed": seed,
                    "loss.hnc.weight": weight,
                }
            )
    values = pd.DataFrame(value_rows)
    for key, column in extra.items():
        values[key] = column
    return pd.DataFrame(rows), values


# --------------------------------------------------------------------------- the factor


def test_the_numeric_key_with_three_or_more_levels_is_the_dose() -> None:
    _, values = _design()
    assert dose_factor(values) == "loss.hnc.weight"


def test_two_levels_strings_booleans_or_no_factor_are_not_a_dose() -> None:
    _, two = _design(weights=(0.0, 0.1))
    assert dose_factor(two) is None
    _, values = _design()
    assert dose_factor(values.drop(columns="loss.hnc.weight")) is None
    text = values.assign(**{"loss.hnc.weight": [f"w{v}" for v in values["loss.hnc.weight"]]})
    assert dose_factor(text) is None
    flags = values.drop(columns="loss.hnc.weight").assign(amp=[True, False, True] * 6)
    assert dose_factor(flags) is None


def test_the_factor_with_most_levels_wins_then_the_first() -> None:
    _, values = _design()
    three = [0.2, 0.4, 0.6] * 6
    values.insert(3, "noise.rate", three)  # before the weight in column order, but fewer levels
    assert dose_factor(values) == "loss.hnc.weight"
    six = values.assign(**{"noise.rate": values["loss.hnc.weight"] * 2})  # as many levels, earlier column
    assert dose_factor(six) == "noise.rate"


def test_quantities_are_the_statistics_present_the_accuracies_and_robust_accuracies() -> None:
    models, _ = _design()
    models["clean_pos_peak"] = 1.0  # not a negative-CAM statistic
    models["pgd@8/255_sd"] = 0.0  # a spread, not a quantity
    assert dose_quantities(models) == [
        "clean_neg_peak_max",
        "clean_neg_homogeneity",
        "clean_acc",
        "pgd@8/255",
    ]


# --------------------------------------------------------------------------- statistics


def test_the_t_interval_is_the_hand_computed_one() -> None:
    mean, sd, low, high = t_interval([0.5, 0.7, 0.9])
    half = T_975_DF2 * 0.2 / math.sqrt(3)  # sd of (0.5, 0.7, 0.9) is 0.2
    assert (mean, sd) == pytest.approx((0.7, 0.2), abs=1e-12)
    assert (low, high) == pytest.approx((0.7 - half, 0.7 + half), abs=1e-9)


def test_one_seed_gives_a_mean_and_no_interval() -> None:
    mean, sd, low, high = t_interval([0.4])
    assert mean == 0.4 and math.isnan(sd) and math.isnan(low) and math.isnan(high)
    models, values = _design(seeds=(0,))
    summary = dose_response(models, values).summary  # type: ignore[union-attr]
    assert (summary["n_seeds"] == 1).all() and summary[["sd", "ci_low", "ci_high"]].isna().all().all()


def test_the_summary_averages_the_seeds_at_each_dose() -> None:
    models, values = _design()
    summary = dose_summary(dose_points(models, values, "loss.hnc.weight"))
    row = summary[(summary["quantity"] == "pgd@8/255") & (summary["dose"] == 0.03)].iloc[0]
    values_at_dose = [0.3, 0.31, 0.32]  # 0.1 + 0.1 * 2 + 0.01 * seed
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(np.mean(values_at_dose), abs=1e-12)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * T_975_DF2 * 0.01 / math.sqrt(3), abs=1e-9)
    assert summary["quantity"].drop_duplicates().tolist() == [
        "clean_neg_peak_max",
        "clean_neg_homogeneity",
        "clean_acc",
        "pgd@8/255",
    ]
    assert summary[summary["quantity"] == "pgd@8/255"]["dose"].tolist() == list(WEIGHTS)


def test_a_monotone_quantity_has_rho_one_and_the_exact_p_of_six_doses() -> None:
    models, values = _design()
    dose = dose_response(models, values)
    assert dose is not None and dose.factor == "loss.hnc.weight" and dose.levels == WEIGHTS
    trend = dose.trend.set_index("quantity")
    rising, falling = trend.loc["pgd@8/255"], trend.loc["clean_neg_homogeneity"]
    assert rising["spearman_rho"] == pytest.approx(1.0, abs=1e-12)
    assert falling["spearman_rho"] == pytest.approx(-1.0, abs=1e-12)
    for row in (rising, falling):
        # 2 of the 6! = 720 orderings are as extreme as a perfect order (it and its reverse)
        assert row["p_value"] == pytest.approx(2 / 720, abs=1e-15)
        assert row["p_method"] == "exact" and row["p_orderings"] == 720 and row["n_doses"] == 6
    constant = trend.loc["clean_acc"]
    assert math.isnan(constant["spearman_rho"]) and constant["note"] == "constant quantity: no trend"


def test_rho_is_scipys_spearman_of_dose_vs_the_per_dose_mean_and_q_is_bh() -> None:
    models, values = _design()
    rng = np.random.default_rng(3)
    models["clean_neg_peak_max"] = rng.normal(size=len(models))
    dose = dose_response(models, values)
    assert dose is not None
    means = models.assign(w=values["loss.hnc.weight"]).groupby("w")["clean_neg_peak_max"].mean()
    row = dose.trend.set_index("quantity").loc["clean_neg_peak_max"]
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(means.index, means.to_numpy()).statistic, abs=1e-12)
    tested = dose.trend.dropna(subset=["p_value"])
    expected_q = stats.false_discovery_control(tested["p_value"], method="bh")
    np.testing.assert_allclose(tested["q_value"], expected_q, rtol=0, atol=1e-15)


def test_fewer_than_four_doses_are_not_tested() -> None:
    models, values = _design(weights=(0.0, 0.1, 1.0))
    dose = dose_response(models, values)
    assert dose is not None and dose.trend["spearman_rho"].isna().all()
    assert set(dose.trend["note"]) == {"n < 4: not meaningful"}


def test_checkpoints_without_the_dose_are_left_out_and_other_factors_are_strata() -> None:
    models, values = _design()
    ce = pd.DataFrame([{"name": "ce", "loss": "ce", "noise": "clean", "clean_acc": 0.5, "pgd@8/255": 0.0}])
    ce_value = pd.DataFrame([{"name": "ce", "configuration": "ce", "seed": 0, "loss.hnc.weight": None}])
    dose = dose_response(pd.concat([models, ce]), pd.concat([values, ce_value]))
    assert dose is not None and "ce" not in set(dose.points["name"])
    assert dose.strata == ("",)
    both = pd.concat([models, models.assign(name=models["name"] + "_noisy")], ignore_index=True)
    clean_part = values.assign(**{"noise.rate": 0.0})
    noisy_part = values.assign(name=values["name"] + "_noisy", **{"noise.rate": 0.4})
    noisy = pd.concat([clean_part, noisy_part], ignore_index=True)
    split = dose_response(both, noisy)
    assert split is not None and split.strata == ("noise.rate=0.0", "noise.rate=0.4")
    assert len(split.trend) == 2 * len(dose.trend)
    assert (split.trend.groupby("quantity")["stratum"].nunique() == 2).all()


def test_no_dose_factor_gives_none() -> None:
    models, values = _design(weights=(0.0, 0.1))
    assert dose_response(models, values) is None


# --------------------------------------------------------------------------- from evaluation folders


def _with_config(folder: Path, config: dict[str, Any]) -> None:
    """Record a resolved train config in summary.json, as a trained checkpoint's meta has it."""
    path = folder / "summary.json"
    info = json.loads(path.read_text())
    info["config"]["checkpoint_meta"]["config"] = config
    path.write_text(json.dumps(info))


def test_evaluation_folders_of_a_dose_sweep_give_the_trend(tmp_path: Path) -> None:
    for i, weight in enumerate((0.0, 0.1, 0.3, 1.0)):
        for seed in (0, 1):
            # the higher the weight, the more samples pgd breaks at 8/255
            broken = {("pgd", "4/255"): set(range(i)), ("pgd", "8/255"): set(range(2 * i + seed))}
            # and every negative-CAM statistic grows with it
            clean_stats = {stat: np.full(20, 1.0 + i) for stat in STAT_NAMES}
            records = make_records(broken=broken, clean_stats=clean_stats)
            folder = write_folder(tmp_path / f"w{weight}_s{seed}", records, loss="hnc")
            _with_config(folder, {"loss": {"name": "hnc", "hnc": {"k": 5, "weight": weight}}, "seed": seed})
    evaluations = load_evaluations(tmp_path)
    dose = dose_response(model_table(evaluations), configuration_values(evaluations))
    assert dose is not None and dose.factor == "loss.hnc.weight" and dose.levels == (0.0, 0.1, 0.3, 1.0)
    trend = dose.trend.set_index("quantity")
    assert trend.loc["pgd@8/255", "spearman_rho"] == pytest.approx(-1.0, abs=1e-12)
    assert trend.loc["clean_neg_homogeneity", "spearman_rho"] == pytest.approx(1.0, abs=1e-12)
    assert trend.loc["pgd@8/255", "p_value"] == pytest.approx(2 / 24, abs=1e-15)
    assert set(dose.points["seed"]) == {0, 1}


# --------------------------------------------------------------------------- figure


def test_the_figure_is_written(tmp_path: Path) -> None:
    models, values = _design()
    dose = dose_response(models, values)
    assert dose is not None
    path = plot_dose_response(dose, tmp_path / "figures" / "dose.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    some = plot_dose_response(dose, tmp_path / "two.png", quantities=["pgd@8/255", "clean_neg_homogeneity"])
    assert some.stat().st_size > 0
    with pytest.raises(ValueError, match=r"'worst@8/255'.*valid: clean_neg_peak_max"):
        plot_dose_response(dose, tmp_path / "bad.png", quantities=["worst@8/255"])
