"""The report's reading in plain words, generated from the numbers (never written by hand).

It leads with the strongest evidence the suite has, the within-checkpoint comparison with
hundreds of samples: how well a clean negative-CAM statistic predicts which samples an
attack breaks, next to the clean logit margin alone and to what the statistic adds to the
margin (``robustcam.report.incremental``). Then the model-level correlation across
configurations, with its permutation p-value, its q-value and what n can and cannot support;
then how many pairs were tested and whether any is a finding (q < 0.05); then a reminder that
checkpoints which differ in their loss differ in more than their CAMs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from robustcam.report.correlation import ALPHA, EXACT_MAX_N, MIN_BOOTSTRAP_N, MIN_CHECKPOINTS, tested
from robustcam.report.dose import DoseResponse
from robustcam.report.tables import describe_column, statistic_columns

# the negative-peak statistics the reading talks about, in order of preference
READING_STATISTICS = (
    "clean_neg_homogeneity",
    "clean_neg_peak_max",
    "clean_neg_peak_topk",
    "clean_neg_positive_frac",
)


def _finite(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and bool(pd.to_numeric(table[column], errors="coerce").notna().any())


def reading_statistic(table: pd.DataFrame) -> str | None:
    """The negative-peak statistic the reading and the main scatter plot use."""
    preferred = [c for c in READING_STATISTICS if _finite(table, c)]
    others = [c for c in statistic_columns(table) if _finite(table, c)]
    candidates = preferred or others
    return candidates[0] if candidates else None


def _value(column: str, value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f}%" if "@" in column or column.endswith("_acc") else f"{value:.3g}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def smallest_exact_p(n: int) -> float:
    """The smallest two-sided p-value an exact permutation test of n untied points can give: 2 / n!."""
    return min(1.0, 2.0 / math.factorial(n))


# --------------------------------------------------------------------------- within a checkpoint


def _incremental_row(incremental: pd.DataFrame, name: str, statistic: str, target: str) -> dict[str, Any] | None:
    match = incremental[
        (incremental["name"] == name) & (incremental["statistic"] == statistic) & (incremental["target"] == target)
    ]
    return None if match.empty else dict(match.iloc[0])


PER_CHECKPOINT_SENTENCES = 4  # beyond this many checkpoints the reading summarises; the table lists each


def _lead_rows(incremental: pd.DataFrame, statistic: str, target: str) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(incremental["name"]):
        row = _incremental_row(incremental, str(name), statistic, target)
        if row is not None:
            rows.append(row)
    return rows


def _checkpoint_sentence(row: dict[str, Any], statistic: str, target: str) -> str:
    if not np.isfinite(row["delta_auroc"]):
        return f"On {row['name']} at {target}: {row['note'] or 'no comparison'}."
    return (
        f"On {row['name']} at {target}, {statistic} alone: AUROC {row['auroc_statistic']:.2f}; the clean logit margin "
        f"alone: {row['auroc_margin']:.2f}; adding the statistic to the margin: {row['delta_auroc']:+.3f} "
        f"[{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}], LR p = {_p(row['lr_p'])}."
    )


def _summary_sentence(rows: list[dict[str, Any]], statistic: str, target: str) -> str:
    def spread(key: str, signed: bool = False) -> str:
        values = np.array([r[key] for r in rows], dtype=float)
        form = "+.3f" if signed else ".2f"
        return f"{np.median(values):{form}} (range {values.min():{form}} to {values.max():{form}})"

    return (
        f"At {target}, over the {len(rows)} checkpoints (each in the table): {statistic} alone reaches a median AUROC "
        f"of {spread('auroc_statistic')}; the clean logit margin alone {spread('auroc_margin')}; adding the "
        f"statistic to the margin changes it by {spread('delta_auroc', signed=True)}."
    )


def within_sentences(incremental: pd.DataFrame, statistic: str | None, target: str | None) -> list[str]:
    """At ``target``: the statistic alone, the margin alone, and what adding the statistic to the
    margin changes (per checkpoint for a few, as medians and ranges for many); then on how many
    checkpoints the increment has a CI above 0."""
    if incremental.empty or statistic is None or target is None:
        return []
    rows = _lead_rows(incremental, statistic, target)
    computed = [r for r in rows if np.isfinite(r["delta_auroc"])]
    if len(rows) <= PER_CHECKPOINT_SENTENCES or not computed:
        sentences = [_checkpoint_sentence(r, statistic, target) for r in rows]
    else:
        sentences = [_summary_sentence(computed, statistic, target)]
        skipped = len(rows) - len(computed)
        if skipped:
            sentences.append(f"{skipped} checkpoint{'s' if skipped > 1 else ''} had too few broken or robust samples.")
    raised = [str(r["name"]) for r in computed if r["delta_ci_low"] > 0]
    if not computed:
        return sentences
    if raised:
        shown = ", ".join(raised[:PER_CHECKPOINT_SENTENCES]) + (
            ", ..." if len(raised) > PER_CHECKPOINT_SENTENCES else ""
        )
        sentences.append(
            f"Adding {statistic} to the margin raises the cross-validated AUROC with a 95% CI above 0 on "
            f"{len(raised)} of {len(computed)} checkpoints ({shown}): there it carries signal the logits do not."
        )
    else:
        sentences.append(
            f"On none of the {len(computed)} checkpoints does adding {statistic} to the margin raise the "
            "cross-validated AUROC with a 95% CI above 0: within a checkpoint, what it predicts, the logit "
            "margin already predicts."
        )
    return sentences


# --------------------------------------------------------------------------- across configurations


def _relation(statistic: str, target: str, rho: float) -> str:
    if rho < 0:
        return f"a lower {statistic} goes with a higher {target}"
    if rho > 0:
        return f"a lower {statistic} goes with a lower {target}"
    return f"{statistic} and {target} show no monotone relation"


def model_level_sentences(
    correlations: pd.DataFrame, statistic: str | None, target: str | None, *, unit: str, replicates: bool
) -> list[str]:
    """The reading's pair across configurations: rho, permutation p, q, and what n can support."""
    if statistic is None or target is None:
        return []
    match = correlations[(correlations["statistic"] == statistic) & (correlations["target"] == target)]
    if match.empty:
        return []
    row = dict(match.iloc[0])
    n = int(row["n"])
    seeds = " (seed replicates averaged)" if replicates else ""
    if n < MIN_CHECKPOINTS:
        return [
            (
                f"With {n} {unit}{seeds}, a correlation across them would not mean anything: evaluate at least "
                f"{MIN_BOOTSTRAP_N} (several seeds and noise rates or loss weights) before reading one."
            )
        ]
    rho = float(row["spearman_rho"])
    if not np.isfinite(rho):
        return [f"Across the {n} {unit}{seeds} no correlation can be computed ({row['note']})."]
    method = "exact" if row["p_method"] == "exact" else "Monte Carlo"
    text = (
        f"Across the {n} {unit}{seeds}, {_relation(statistic, target, rho)} (Spearman rho = {rho:+.2f}, "
        f"{method} permutation p = {_p(row['spearman_p'])}, q = {_p(row['q_family'])} among the "
        f"{row['family']} hypotheses"
    )
    low, high = float(row["spearman_ci_low"]), float(row["spearman_ci_high"])
    text += f", BCa 95% CI [{low:+.2f}, {high:+.2f}])." if np.isfinite(low) else ")."
    sentences = [text]
    if n <= EXACT_MAX_N and smallest_exact_p(n) >= ALPHA:
        sentences.append(
            f"With {n} {unit} the smallest p-value a permutation test can give is 2/{n}! = "
            f"{smallest_exact_p(n):.3g}, and no CI is computed below {MIN_BOOTSTRAP_N}: {n} {unit} cannot "
            "support a model-level claim."
        )
    elif n < MIN_BOOTSTRAP_N:
        sentences.append(
            f"With {n} {unit} the p-value is exact over all {n}! orderings, but no CI is computed below "
            f"{MIN_BOOTSTRAP_N}: the size of the association is not pinned down."
        )
    return sentences


FINDINGS_LISTED = 3


def findings_sentence(correlations: pd.DataFrame, *, unit: str) -> str:
    """How many pairs were tested and which of them survive the false-discovery correction
    (primary findings first, at most ``FINDINGS_LISTED`` named; the CSV has every one)."""
    done = tested(correlations)
    if done.empty:
        return ""
    primary = done[done["family"] == "primary"]
    found = done[done["finding"]].sort_values(
        ["family", "q_family"],
        key=lambda c: c.map({"primary": 0, "exploratory": 1}) if c.name == "family" else c,
        kind="stable",
    )
    if found.empty:
        return (
            f"{len(done)} (statistic, robustness) pairs were tested across {unit} ({len(primary)} declared primary): "
            f"none has a q-value below {ALPHA}, so none is a finding."
        )
    listed = "; ".join(
        f"{r.statistic} vs {r.target} (rho {r.spearman_rho:+.2f}, q {_p(r.q_family)}, {r.family})"
        for r in found.head(FINDINGS_LISTED).itertuples()
    )
    more = len(found) - FINDINGS_LISTED
    rest = f"; and {more} more in correlations.csv" if more > 0 else ""
    return (
        f"{len(done)} pairs were tested across {unit} ({len(primary)} declared primary); {len(found)} have "
        f"q < {ALPHA}: {listed}{rest}."
    )


# --------------------------------------------------------------------------- dose-response

DOSE_READING = ("clean_neg_homogeneity", "clean_neg_peak_max", "clean_acc")


def dose_panels(dose: DoseResponse, headline: str | None) -> list[str]:
    """The quantities the dose-response figure shows: the negative-CAM statistics, clean accuracy
    and the robust accuracies at the headline eps (every other quantity is in the CSV)."""
    present = list(dict.fromkeys(dose.summary["quantity"]))
    eps = headline.split("@", 1)[1] if headline and "@" in headline else None
    robust = [q for q in present if "@" in q and (eps is None or q.endswith(f"@{eps}"))]
    statistics = [q for q in present if q.startswith("clean_neg_")]
    return list(dict.fromkeys([*statistics, *(["clean_acc"] if "clean_acc" in present else []), *robust])) or present


def dose_sentences(dose: DoseResponse | None, headline: str | None) -> list[str]:
    """What the dose-response shows for the reading's quantities, and what it is."""
    if dose is None:
        return []
    trend = dose.trend
    quantities = [q for q in (*DOSE_READING, headline) if q is not None and q in set(trend["quantity"])]
    seeds = int(dose.summary["n_seeds"].max()) if len(dose.summary) else 0
    parts = []
    for quantity in dict.fromkeys(quantities):
        for row in trend[trend["quantity"] == quantity].itertuples(index=False):
            where = f" ({row.stratum})" if row.stratum else ""
            if not np.isfinite(row.spearman_rho):
                parts.append(f"{quantity}{where}: {row.note}")
                continue
            direction = "rises" if row.spearman_rho > 0 else "falls" if row.spearman_rho < 0 else "does not move"
            method = "exact" if row.p_method == "exact" else "Monte Carlo"
            parts.append(
                f"{quantity}{where} {direction} with the dose (rho = {row.spearman_rho:+.2f}, {method} permutation "
                f"p = {_p(row.p_value)}, q = {_p(row.q_value)})"
            )
    if not parts:
        return []
    return [
        f"Along {dose.factor} ({len(dose.levels)} doses x {seeds} seeds, everything else fixed): "
        + "; ".join(parts)
        + ". A dose-response that varies one key with the rest fixed is the design here that can speak to "
        "cause, for this data and model; the trend tests are exploratory and say nothing about the size of an effect."
    ]


# --------------------------------------------------------------------------- the paragraph


def loss_sentences(table: pd.DataFrame, statistic: str, target: str | None) -> list[str]:
    """Which loss has the lowest mean statistic, and how it does on the headline robustness."""
    by_loss = table.groupby("loss")[statistic].mean().dropna().sort_values()
    if by_loss.empty:
        return []
    lowest = str(by_loss.index[0])
    if len(by_loss) == 1:
        return [f"Only one loss ({lowest}) was evaluated; its mean {statistic} is {by_loss.iloc[0]:.3g}."]
    others = ", ".join(f"{loss} {value:.3g}" for loss, value in by_loss.iloc[1:].items())
    sentences = [
        f"Of the {len(by_loss)} losses, {lowest} has the lowest mean {statistic} ({by_loss.iloc[0]:.3g}; {others})."
    ]
    if target is not None and target in table.columns:
        accuracy = table.groupby("loss")[target].mean().dropna()
        if lowest in accuracy.index and len(accuracy) > 1:
            best = str(accuracy.idxmax())
            if best == lowest:
                sentences.append(f"{lowest} also has the highest mean {target} ({_value(target, accuracy[lowest])}).")
            else:
                sentences.append(
                    f"{lowest} reaches {_value(target, accuracy[lowest])} mean {target} ({describe_column(target)}), "
                    f"below {best} ({_value(target, accuracy[best])})."
                )
    return sentences


def plain_reading(
    table: pd.DataFrame,
    correlations: pd.DataFrame,
    *,
    incremental: pd.DataFrame | None = None,
    reference: str | None = None,
    target: str | None = None,
    replicates: bool = False,
    dose_sentences: Sequence[str] = (),
) -> str:
    """One paragraph: the within-checkpoint comparison first, then the model-level correlation
    and its limits, the multiplicity count, and the caution about causes.

    ``table`` is the model table (one row per checkpoint); ``correlations`` the table of
    ``model_correlations`` over configurations; ``reference`` the bounded setting of the
    within-checkpoint comparison (e.g. ``pgd@8/255``); ``target`` the headline robustness column.
    """
    if len(table) == 0:
        return "There are no checkpoints to read."
    statistic = reading_statistic(table)
    if statistic is None:
        return (
            "These evaluations hold no negative-CAM statistics (evaluated with --no-cam-stats?), so this report "
            "cannot say how they relate to robustness; run robustcam eval with CAM statistics to get them."
        )
    unit = "configurations" if replicates else "checkpoints"
    sentences = within_sentences(incremental if incremental is not None else pd.DataFrame(), statistic, reference)
    if not dose_sentences or table["loss"].nunique() > 1:  # one loss at several weights: the dose speaks instead
        sentences += loss_sentences(table, statistic, target)
    if target is None:
        sentences.append("No robust accuracy was recorded, so nothing can be said about robustness across models.")
        return " ".join(sentences)
    sentences += model_level_sentences(correlations, statistic, target, unit=unit, replicates=replicates)
    findings = findings_sentence(correlations, unit=unit)
    if findings:
        sentences.append(findings)
    sentences += list(dose_sentences)
    if not dose_sentences:
        sentences.append(
            "Checkpoints trained with different losses differ in more than their CAMs, so even a clear correlation "
            "across them is not a cause; a dose-response sweep that varies only the HNC weight "
            "(configs/hnc_dose_digits.yaml) can speak to one."
        )
    return " ".join(sentences)


__all__ = [
    "READING_STATISTICS",
    "dose_panels",
    "dose_sentences",
    "findings_sentence",
    "model_level_sentences",
    "plain_reading",
    "reading_statistic",
    "smallest_exact_p",
    "within_sentences",
]
