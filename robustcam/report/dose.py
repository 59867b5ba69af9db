"""Dose-response: vary one numeric config key (the HNC weight), seeds as replicates.

Comparing four losses is not an experiment on CAMs (the checkpoints differ in everything).
A dose-response design varies one numeric key, e.g. ``loss.hnc.weight`` in
{0, 0.01, 0.03, 0.1, 0.3, 1} with seeds {0, 1, 2} (``configs/hnc_dose_digits.yaml``), and
asks whether the mean clean negative-CAM statistics, clean and robust accuracy move with it.

How to call it (the report wires it in)::

    evaluations = load_evaluations(["runs/hnc_dose_digits"])
    models = model_table(evaluations)                      # robustcam.report.tables
    values = configuration_values(evaluations)             # robustcam.report.replicates
    dose = dose_response(models, values)                   # -> DoseResponse | None (no dose factor)
    if dose is not None:
        plot_dose_response(dose, "reports/dose/dose_response.png")   # -> Path
        dose.trend                                         # one row per quantity (and stratum)

- **The dose factor** (``dose_factor``): a column of ``values`` (a config key that varies
  between configurations) whose set values are all real numbers (not booleans) and that takes
  at least ``MIN_DOSE_LEVELS`` (3) distinct values; two levels are a contrast, not a
  dose-response. If several qualify, the one with the most distinct values, ties broken by
  column order (the order of the keys in the config). None if no key qualifies.
- **Strata**: checkpoints where the dose key is unset (a ``ce`` checkpoint has no
  ``loss.hnc.weight``) are left out. Other factors that vary among the dosed checkpoints
  (e.g. ``noise.rate``) split them into strata, each its own dose-response curve and test.
- **Quantities** (``dose_quantities``): the mean clean negative-CAM statistics present
  (``DOSE_STATISTICS``), ``clean_acc``, ``test_acc`` when recorded, and every robust-accuracy
  column (``pgd@8/255``, ``worst@8/255``, ``cw@0.5`` ...).
- **Per-dose summary** (``dose_summary``): over the seeds at one dose, the mean, the sample
  sd and the 95% t-interval of the mean ``mean +- t_{0.975, n-1} * sd / sqrt(n)``
  (``scipy.stats.t``); NaN below 2 seeds.
- **Trend test** (``dose_trend``): Spearman's rho of the dose vs the per-configuration mean
  (one point per dose, seeds averaged: seeds are replicates, not independent configurations),
  with the two-sided permutation p of ``robustcam.report.correlation.permutation_test`` on the
  ranks (exact for <= 8 doses: with 6 distinct doses a perfect order has p = 2/720), and a
  Benjamini-Hochberg q-value over every row. Fewer than ``MIN_CHECKPOINTS`` (4) doses or a
  constant quantity: NaN, and the note says why. These are exploratory tests of a monotone
  trend; they say nothing about its shape or size (the summary and the figure do).
"""

from __future__ import annotations

import math
import numbers
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from robustcam.report.correlation import (
    MIN_CHECKPOINTS,
    NOTE_TOO_FEW,
    PMethod,
    benjamini_hochberg,
    permutation_test,
)
from robustcam.report.figures import _colors, _save
from robustcam.report.tables import SD_SUFFIX, describe_column

MIN_DOSE_LEVELS = 3
CI_LEVEL = 0.95
DOSE_STATISTICS = (
    "clean_neg_peak_max",
    "clean_neg_homogeneity",
    "clean_neg_peak_topk",
    "clean_neg_positive_frac",
)
ACCURACY_COLUMNS = ("clean_acc", "test_acc")
# columns of configuration_values that identify a checkpoint, not a factor of the design
VALUE_KEY_COLUMNS = ("name", "configuration", "seed")
NOTE_CONSTANT = "constant quantity: no trend"

POINT_COLUMNS = ("name", "configuration", "stratum", "seed", "dose", "quantity", "value")
SUMMARY_COLUMNS = ("quantity", "stratum", "dose", "n_seeds", "mean", "sd", "ci_low", "ci_high")
TREND_COLUMNS = (
    "quantity",
    "stratum",
    "n_doses",
    "spearman_rho",
    "p_value",
    "p_method",
    "p_orderings",
    "q_value",
    "note",
)


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare by
class DoseResponse:
    """A dose-response analysis: the factor, its levels, and three tidy tables.

    ``points``: one row per (checkpoint, quantity) (``POINT_COLUMNS``); ``summary``: one row
    per (quantity, stratum, dose) (``SUMMARY_COLUMNS``); ``trend``: one row per
    (quantity, stratum) (``TREND_COLUMNS``). ``strata`` is ``("",)`` when only the dose varies.
    """

    factor: str
    levels: tuple[float, ...]
    strata: tuple[str, ...]
    points: pd.DataFrame
    summary: pd.DataFrame
    trend: pd.DataFrame


# --------------------------------------------------------------------------- the design


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_set(value: Any) -> bool:
    """A config value is unset where configuration_values has None or NaN (key absent there)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def factor_columns(values: pd.DataFrame) -> list[str]:
    """The design's factors: the columns of ``configuration_values`` that are config keys."""
    return [c for c in values.columns if c not in VALUE_KEY_COLUMNS]


def dose_factor(values: pd.DataFrame) -> str | None:
    """The numeric factor with at least ``MIN_DOSE_LEVELS`` distinct values (most values wins,
    then column order), or None.

    >>> values = pd.DataFrame({"name": list("abc"), "configuration": list("abc"), "seed": [0] * 3,
    ...                        "loss.hnc.weight": [0.0, 0.1, 1.0]})
    >>> dose_factor(values)
    'loss.hnc.weight'
    """
    best: str | None = None
    best_levels = 0
    for column in factor_columns(values):
        present = [v for v in values[column] if _is_set(v)]
        if not present or not all(_is_number(v) for v in present):
            continue
        levels = len({float(v) for v in present})
        if levels >= MIN_DOSE_LEVELS and levels > best_levels:
            best, best_levels = column, levels
    return best


def dose_quantities(models: pd.DataFrame) -> list[str]:
    """The quantities a dose can move: clean negative-CAM statistics, clean accuracies, robust accuracies."""
    robust = [c for c in models.columns if "@" in c and not c.endswith(SD_SUFFIX)]
    candidates = [*DOSE_STATISTICS, *ACCURACY_COLUMNS, *robust]
    return [c for c in candidates if c in models.columns and pd.to_numeric(models[c], errors="coerce").notna().any()]


def _strata(dosed: pd.DataFrame, factors: Sequence[str], dose: str) -> pd.Series:
    """A label of the other factors that vary among the dosed checkpoints ("" when none do)."""
    others = [
        c
        for c in factors
        if c != dose and dosed[c].map(lambda v: repr(v) if _is_set(v) else None).nunique(dropna=False) > 1
    ]
    if not others:
        return pd.Series("", index=dosed.index)
    return dosed[others].apply(lambda row: ", ".join(f"{k}={row[k]}" for k in others), axis=1)


def dose_points(models: pd.DataFrame, values: pd.DataFrame, factor: str) -> pd.DataFrame:
    """One row per (checkpoint, quantity) with the checkpoint's dose, seed and stratum (``POINT_COLUMNS``).

    Checkpoints without the dose key, and NaN values, are left out.
    """
    merged = models.merge(values, on="name", how="inner", validate="one_to_one", suffixes=("", "_config"))
    dosed = merged[merged[factor].map(_is_set)].copy()
    if dosed.empty:
        return pd.DataFrame(columns=list(POINT_COLUMNS))
    dosed["dose"] = dosed[factor].astype(float)
    dosed["stratum"] = _strata(dosed, factor_columns(values), factor)
    quantities = dose_quantities(models)
    long = dosed.melt(
        id_vars=["name", "configuration", "stratum", "seed", "dose"],
        value_vars=quantities,
        var_name="quantity",
        value_name="value",
    )
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.dropna(subset=["value"])[list(POINT_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------- statistics


def t_interval(values: Sequence[float] | np.ndarray, level: float = CI_LEVEL) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)``: the t-interval of a mean, ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``.

    ``sd`` is the sample standard deviation (ddof 1). Below 2 values ``sd``, ``low`` and
    ``high`` are NaN: one seed says nothing about the spread.

    >>> mean, sd, low, high = t_interval([1.0, 2.0, 3.0])   # t_{0.975, 2} = 4.303, sd / sqrt(3) = 0.577
    >>> round(low, 3), round(high, 3)
    (-0.484, 4.484)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, df=len(x) - 1)) * sd / math.sqrt(len(x))
    return mean, sd, mean - half, mean + half


def dose_summary(points: pd.DataFrame, level: float = CI_LEVEL) -> pd.DataFrame:
    """One row per (quantity, stratum, dose): ``n_seeds``, ``mean``, ``sd`` and the t-interval
    (``ci_low``, ``ci_high``) over the seed replicates (``SUMMARY_COLUMNS``), doses ascending."""
    rows = []
    for (quantity, stratum, dose), group in points.groupby(["quantity", "stratum", "dose"], sort=False):
        mean, sd, low, high = t_interval(group["value"].to_numpy(dtype=float), level)
        rows.append(
            {
                "quantity": quantity,
                "stratum": stratum,
                "dose": dose,
                "n_seeds": len(group),
                "mean": mean,
                "sd": sd,
                "ci_low": low,
                "ci_high": high,
            }
        )
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    # quantities keep the points' order (statistics, accuracies, robust accuracies), doses ascend
    order = {q: i for i, q in enumerate(dict.fromkeys(points["quantity"]))}
    frame["_order"] = frame["quantity"].map(order)
    frame = frame.sort_values(["_order", "stratum", "dose"], kind="stable").drop(columns="_order")
    return frame.reset_index(drop=True)


def spearman_trend(dose: np.ndarray, mean: np.ndarray) -> tuple[float, float, PMethod, int, str]:
    """``(rho, p, p_method, orderings, note)``: Spearman's rho of dose vs mean, with the
    permutation p of Pearson's r on the average ranks (``permutation_test``)."""
    keep = np.isfinite(dose) & np.isfinite(mean)
    dose, mean = dose[keep], mean[keep]
    if len(dose) < MIN_CHECKPOINTS:
        return math.nan, math.nan, "", 0, NOTE_TOO_FEW
    if np.ptp(mean) == 0:
        return math.nan, math.nan, "", 0, NOTE_CONSTANT
    rho, p, method, orderings = permutation_test(stats.rankdata(dose), stats.rankdata(mean))
    return rho, p, method, orderings, ""


def dose_trend(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (quantity, stratum): Spearman's rho of dose vs the per-dose mean, its
    permutation p, and the BH q-value over every row (``TREND_COLUMNS``)."""
    rows = []
    for (quantity, stratum), group in summary.groupby(["quantity", "stratum"], sort=False):
        dose, mean = group["dose"].to_numpy(dtype=float), group["mean"].to_numpy(dtype=float)
        rho, p, method, orderings, note = spearman_trend(dose, mean)
        rows.append(
            {
                "quantity": quantity,
                "stratum": stratum,
                "n_doses": int(np.isfinite(mean).sum()),
                "spearman_rho": rho,
                "p_value": p,
                "p_method": method,
                "p_orderings": orderings,
                "note": note,
            }
        )
    frame = pd.DataFrame(rows, columns=[c for c in TREND_COLUMNS if c != "q_value"])
    frame["q_value"] = benjamini_hochberg(frame["p_value"]) if len(frame) else []
    return frame[list(TREND_COLUMNS)]


def dose_response(models: pd.DataFrame, values: pd.DataFrame, *, level: float = CI_LEVEL) -> DoseResponse | None:
    """The dose-response analysis of a model table (``model_table``) and its design
    (``configuration_values``); None when no config key is a dose (``dose_factor``)."""
    factor = dose_factor(values)
    if factor is None:
        return None
    points = dose_points(models, values, factor)
    summary = dose_summary(points, level)
    levels = tuple(sorted(set(points["dose"].astype(float))))
    strata = tuple(dict.fromkeys(points["stratum"])) or ("",)
    return DoseResponse(factor, levels, strata, points, summary, dose_trend(summary))


# --------------------------------------------------------------------------- figure


def _is_accuracy(quantity: str) -> bool:
    return quantity in ACCURACY_COLUMNS or "@" in quantity


def _dose_axis(ax: Any, factor: str, levels: Sequence[float]) -> None:
    """Symlog x axis, linear below the smallest positive dose: dose 0 is a dose and log cannot show it."""
    positive = [d for d in levels if d > 0]
    if positive and min(levels) <= 0:
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
        ax.set_xlabel(f"{factor} (symlog: linear below {min(positive):g})", fontsize=8)
    elif positive:
        ax.set_xscale("log")
        ax.set_xlabel(f"{factor} (log)", fontsize=8)
    else:
        ax.set_xlabel(factor, fontsize=8)
    ax.set_xticks(list(levels))
    ax.set_xticklabels([f"{d:g}" for d in levels], fontsize=7)
    ax.minorticks_off()


def _panel_title(quantity: str, trend: pd.DataFrame) -> str:
    rows = trend[trend["quantity"] == quantity]
    text = [describe_column(quantity) if _is_accuracy(quantity) else quantity]
    for row in rows.itertuples(index=False):
        prefix = f"{row.stratum}: " if row.stratum else ""
        if np.isfinite(row.spearman_rho):
            text.append(f"{prefix}rho = {row.spearman_rho:+.2f}, p = {row.p_value:.3g}, q = {row.q_value:.3g}")
        else:
            text.append(f"{prefix}{row.note}")
    return "\n".join(text)


def _draw_stratum(ax: Any, dose: DoseResponse, quantity: str, stratum: str, *, color: Any, scale: float) -> None:
    """One stratum's curve in one panel: the seed replicates, the per-dose mean and its band."""
    points = dose.points[(dose.points["quantity"] == quantity) & (dose.points["stratum"] == stratum)]
    line = dose.summary[(dose.summary["quantity"] == quantity) & (dose.summary["stratum"] == stratum)]
    ax.scatter(
        points["dose"],
        scale * points["value"],
        s=14,
        alpha=0.55,
        color=color,
        zorder=3,
        label=f"{stratum or 'seed'} replicates",
    )
    ax.plot(
        line["dose"],
        scale * line["mean"],
        marker="o",
        markersize=3,
        color=color,
        label=f"{stratum + ': ' if stratum else ''}mean over seeds",
    )
    # a t-interval of an accuracy can pass 100%: the band stops where accuracy does, the table not
    low, high = line["ci_low"], line["ci_high"]
    if _is_accuracy(quantity):
        low, high = low.clip(lower=0.0), high.clip(upper=1.0)
    ax.fill_between(
        line["dose"],
        scale * low,
        scale * high,
        color=color,
        alpha=0.18,
        linewidth=0,
        label=f"{int(100 * CI_LEVEL)}% t-interval",
    )


def plot_dose_response(
    dose: DoseResponse, path: str | Path, *, quantities: Sequence[str] | None = None, columns: int = 4
) -> Path:
    """One panel per quantity: seed replicates as points, the per-dose mean as a line with its
    t-interval as a band, one colour per stratum; the trend test in each panel's title.
    Accuracies are drawn in %. ``quantities`` picks and orders the panels (default: all)."""
    chosen = list(quantities) if quantities is not None else list(dict.fromkeys(dose.summary["quantity"]))
    missing = [q for q in chosen if q not in set(dose.summary["quantity"])]
    if missing or not chosen:
        valid = ", ".join(dict.fromkeys(dose.summary["quantity"])) or "none"
        raise ValueError(f"no dose-response data for quantity {missing or chosen!r}; valid: {valid}")
    columns = max(1, min(columns, len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    figure = Figure(figsize=(3.8 * columns, 3.2 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    colors = dict(zip(dose.strata, _colors(len(dose.strata))))
    for ax, quantity in zip(axes.flat, chosen):
        scale = 100.0 if _is_accuracy(quantity) else 1.0
        for stratum in dose.strata:
            _draw_stratum(ax, dose, quantity, stratum, color=colors[stratum], scale=scale)
        _dose_axis(ax, dose.factor, dose.levels)
        ax.set_ylabel(f"{quantity} (%)" if scale != 1.0 else quantity, fontsize=8)
        ax.set_title(_panel_title(quantity, dose.trend), fontsize=7.5)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend_columns = min(3 * len(dose.strata), 6)
    figure.legend(handles, labels, loc="outside lower center", ncols=legend_columns, fontsize=8)
    title = (
        f"Dose-response over {dose.factor}: seeds as points, mean and {int(100 * CI_LEVEL)}% t-interval "
        "of the mean; Spearman rho of dose vs mean with permutation p, BH q over the panels"
    )
    # about 10 characters of a 10 pt title per inch of figure: a narrower figure wraps it
    figure.suptitle(textwrap.fill(title, max(40, int(10 * 3.8 * columns))), fontsize=10)
    return _save(figure, path)


__all__ = [
    "CI_LEVEL",
    "DOSE_STATISTICS",
    "MIN_DOSE_LEVELS",
    "DoseResponse",
    "dose_factor",
    "dose_points",
    "dose_quantities",
    "dose_response",
    "dose_summary",
    "dose_trend",
    "factor_columns",
    "plot_dose_response",
    "spearman_trend",
    "t_interval",
]
