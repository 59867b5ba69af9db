"""The report as data (``build_report``) and as files (``write_report``): CSV tables, PNG
figures and a ``report.md`` that puts them together with short explanations.

``Report`` holds every table; ``write_report`` renders it to disk; ``render_report``
(``robustcam.report.console``) renders it to a terminal. The plain-language reading
(``plain_reading``) is generated from the numbers, never written by hand.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustcam.io import atomic_write_text
from robustcam.report.correlation import (
    MIN_CHECKPOINTS,
    SMALL_N,
    model_correlations,
    sample_auroc,
    strongest_correlations,
)
from robustcam.report.figures import (
    plot_cam_grid,
    plot_noise,
    plot_robust_accuracy,
    plot_statistic_scatter,
    safe_file_name,
)
from robustcam.report.load import Evaluation
from robustcam.report.tables import (
    Setting,
    check_evaluations,
    describe_column,
    headline_target,
    model_table,
    noise_table,
    reference_setting,
    robust_accuracies,
    robustness_columns,
    several_backends,
    statistic_columns,
)

MODELS_FILE = "models.csv"
CORRELATIONS_FILE = "correlations.csv"
SAMPLES_FILE = "samples_auroc.csv"
MARKDOWN_FILE = "report.md"
ROBUST_ACCURACY_FIGURE = "robust_accuracy_vs_eps.png"
NOISE_FIGURE = "test_accuracy_vs_noise.png"
NOISE_FILE = "noise.csv"
# the negative-peak statistics the reading talks about, in order of preference
READING_STATISTICS = (
    "clean_neg_homogeneity", "clean_neg_peak_max", "clean_neg_peak_topk", "clean_neg_positive_frac",
)  # fmt: skip

STATISTIC_HELP = {
    "neg_peak_max": "the highest value in any negative CAM (a class that is not in the image); a high peak is "
    "confident evidence for an absent class",
    "neg_peak_topk": "the mean, over the top-k negative classes by logit, of each map's maximum",
    "neg_homogeneity": "KL(uniform || spatial softmax of the map), averaged over the top-k negative CAMs: 0 when "
    "every such map is flat (what the HNC loss aims for), large when they have sharp peaks",
    "neg_positive_frac": "the fraction of negative-CAM cells above 0",
    "pos_peak": "the maximum of the true class's CAM",
    "peak_margin": "pos_peak - neg_peak_max: how far the true class's peak stands above the highest negative peak",
    "peak_gain": "(adversarial only) how much the peak of the class the attack moved to grew",
    "true_peak_shift": "(adversarial only) how far the argmax of the true-class CAM moved, in CAM cells",
}


@dataclass(frozen=True, eq=False)
class Report:
    """Everything a report shows, as data.

    ``models``: ``model_table``; ``accuracies``: ``robust_accuracies`` (long form);
    ``correlations``: ``model_correlations``; ``samples``: ``sample_auroc``; ``reference``:
    the setting of the ``adv_*`` columns; ``headline``: the robustness column the reading
    uses; ``scatter_pairs``: (statistic, robustness column) pairs that get a scatter plot.
    """

    evaluations: tuple[Evaluation, ...]
    models: pd.DataFrame
    accuracies: pd.DataFrame
    correlations: pd.DataFrame
    samples: pd.DataFrame
    reference: Setting | None
    headline: str | None
    scatter_pairs: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    reading: str


@dataclass(frozen=True, eq=False)
class ReportFiles:
    """What ``write_report`` wrote, and the report it wrote."""

    report: Report
    out_dir: Path
    models: Path
    correlations: Path
    samples: Path
    markdown: Path
    figures: tuple[Path, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.models, self.correlations, self.samples, self.markdown, *self.figures)


# --------------------------------------------------------------------------- building


def _finite(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and bool(pd.to_numeric(table[column], errors="coerce").notna().any())


def reading_statistic(table: pd.DataFrame) -> str | None:
    """The negative-peak statistic the reading and the main scatter plot use."""
    preferred = [c for c in READING_STATISTICS if _finite(table, c)]
    others = [c for c in statistic_columns(table) if _finite(table, c)]
    candidates = preferred or others
    return candidates[0] if candidates else None


def scatter_pairs(table: pd.DataFrame, correlations: pd.DataFrame) -> list[tuple[str, str]]:
    """The reading's pair (e.g. clean_neg_homogeneity vs worst@8/255), then the most correlated
    pair if it is a different one."""
    pairs: list[tuple[str, str]] = []
    statistic, target = reading_statistic(table), headline_target(table)
    if statistic is not None and target is not None:
        pairs.append((statistic, target))
    strongest = strongest_correlations(correlations, 1)
    if len(strongest):
        pair = (str(strongest["statistic"].iloc[0]), str(strongest["target"].iloc[0]))
        first = _correlation_row(correlations, *pairs[0]) if pairs else None
        reading_rho = abs(float(first["spearman_rho"])) if first is not None else math.nan
        # a tie with the reading's pair adds nothing worth a second figure
        if pair not in pairs and not abs(float(strongest["spearman_rho"].iloc[0])) <= reading_rho + 1e-9:
            pairs.append(pair)
    return pairs


def _correlation_row(correlations: pd.DataFrame, statistic: str, target: str) -> dict[str, Any] | None:
    match = correlations[(correlations["statistic"] == statistic) & (correlations["target"] == target)]
    return None if match.empty else dict(match.iloc[0])


def _value(column: str, value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f}%" if "@" in column or column.endswith("_acc") else f"{value:.3g}"


def plain_reading(table: pd.DataFrame, correlations: pd.DataFrame) -> str:
    """One paragraph in plain words, generated from the numbers: which loss has the lowest mean
    negative-peak statistic, whether a lower statistic goes with higher robust accuracy here
    (sign of Spearman's rho, whether its CI excludes 0), and a caution when n is small."""
    n = len(table)
    if n == 0:
        return "There are no checkpoints to read."
    statistic = reading_statistic(table)
    if statistic is None:
        return (
            "These evaluations hold no negative-CAM statistics (evaluated with --no-cam-stats?), so this report "
            "cannot say how they relate to robustness; run robustcam eval with CAM statistics to get them."
        )
    sentences = []
    by_loss = table.groupby("loss")[statistic].mean().dropna().sort_values()
    lowest = str(by_loss.index[0])
    if len(by_loss) > 1:
        others = ", ".join(f"{loss} {value:.3g}" for loss, value in by_loss.iloc[1:].items())
        sentences.append(
            f"Of the {len(by_loss)} losses, {lowest} has the lowest mean {statistic} ({by_loss.iloc[0]:.3g}; "
            f"{others})."
        )
    else:
        sentences.append(
            f"Only one loss ({lowest}) was evaluated, so losses cannot be compared; its mean {statistic} is "
            f"{by_loss.iloc[0]:.3g}."
        )
    for other in READING_STATISTICS:
        if other != statistic and other == "clean_neg_peak_max" and _finite(table, other) and len(by_loss) > 1:
            second = table.groupby("loss")[other].mean().dropna().sort_values()
            agree = "also" if str(second.index[0]) == lowest else "instead"
            sentences.append(f"By {other}, {second.index[0]} {agree} has the lowest ({second.iloc[0]:.3g}).")
    target = headline_target(table)
    if target is None:
        sentences.append("No robust accuracy was recorded, so nothing can be said about robustness.")
        return " ".join(sentences)
    words = describe_column(target)
    accuracy = table.groupby("loss")[target].mean().dropna()
    if lowest in accuracy.index and len(accuracy) > 1:
        best = str(accuracy.idxmax())
        if best == lowest:
            sentences.append(f"{lowest} also has the highest mean {target} ({_value(target, accuracy[lowest])}).")
        else:
            sentences.append(
                f"{lowest} reaches {_value(target, accuracy[lowest])} mean {target} ({words}), below {best} "
                f"({_value(target, accuracy[best])})."
            )
    row = _correlation_row(correlations, statistic, target)
    pairs = int(row["n"]) if row is not None else n
    if pairs < MIN_CHECKPOINTS:
        sentences.append(
            f"With {pairs} checkpoint{'s' if pairs != 1 else ''}, a correlation across checkpoints would not mean "
            f"anything: evaluate at least {MIN_CHECKPOINTS} (better {SMALL_N} or more: several seeds and noise "
            "rates per loss) before reading one."
        )
        return " ".join(sentences)
    assert row is not None
    rho = float(row["spearman_rho"])
    if not np.isfinite(rho):
        sentences.append(f"Across the {pairs} checkpoints no correlation can be computed ({row['note']}).")
        return " ".join(sentences)
    if rho < 0:
        relation = f"a lower {statistic} goes with a higher {target}"
    elif rho > 0:
        relation = f"a lower {statistic} goes with a lower {target}"
    else:
        relation = f"{statistic} and {target} show no monotone relation"
    text = f"Across the {pairs} checkpoints, {relation} (Spearman rho = {rho:+.2f}"
    low, high = float(row["spearman_ci_low"]), float(row["spearman_ci_high"])
    if np.isfinite(low):
        text += f", 95% bootstrap CI [{low:+.2f}, {high:+.2f}]"
        text += "), and the interval excludes 0." if row["ci_excludes_zero"] else (
            "); the interval includes 0, so these data are also consistent with no relation."
        )
    else:
        text += "; no bootstrap CI)."
    sentences.append(text)
    if pairs < SMALL_N:
        sentences.append(f"With only {pairs} checkpoints this is a hint, not evidence.")
    sentences.append("Checkpoints differ in more than their CAMs, so even a clear correlation is not a cause.")
    return " ".join(sentences)


def build_report(evaluations: Sequence[Evaluation], *, bootstrap: int = 2000, seed: int = 0) -> Report:
    """All tables of a report from loaded evaluations (see ``load_evaluations``)."""
    if not evaluations:
        raise ValueError("no evaluations to report on")
    evaluations = tuple(evaluations)
    table = model_table(evaluations)
    correlations = model_correlations(table, bootstrap=bootstrap, seed=seed)
    warnings = check_evaluations(evaluations)
    return Report(
        evaluations=evaluations,
        models=table,
        accuracies=robust_accuracies(evaluations),
        correlations=correlations,
        samples=sample_auroc(evaluations),
        reference=reference_setting(evaluations),
        headline=headline_target(table),
        scatter_pairs=tuple(scatter_pairs(table, correlations)),
        warnings=tuple(warnings),
        reading=plain_reading(table, correlations),
    )


# --------------------------------------------------------------------------- markdown


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, *, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned, NaN empty, ``|`` escaped)."""
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(_cell(str(c), digits) for c in frame.columns) + " |"
    align = "| " + " | ".join(
        "---:" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) else "---"
        for c in frame.columns
    ) + " |"  # fmt: skip
    body = ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, align, *body])


def _percent(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    shown = frame.copy()
    for column in columns:
        shown[column] = (100 * pd.to_numeric(shown[column], errors="coerce")).round(1)
    return shown


INTRO = (
    "Every number below is recomputed from the `per_sample.csv` of each evaluation. Robust accuracy counts "
    "clean errors as not robust; the worst case is per sample (robust only if the sample survived every attack "
    "and backend at that eps)."
)
ROBUST_HELP = (
    "Columns `attack@eps` are robust accuracies; `worst@eps` is the per-sample worst case over every Linf "
    "attack (`worst_l2@eps`: over the L2 attacks); `*_mean_min_l2` is the mean L2 norm of the smallest "
    "perturbation a minimal attack (C&W) found, over the samples it broke. The CSV keeps fractions; here they "
    "are percent."
)
CAM_HELP = (
    "Means over samples of per-sample statistics computed on raw CAMs. `clean_*` are on the clean inputs (all "
    "samples); `adv_*` on the adversarial examples of the reference setting `{reference}`. Localisation "
    "accuracy (%) counts a hit when the prediction is right and the CAM box has IoU >= 0.5."
)
CORRELATION_HELP = (
    "One point per checkpoint. Spearman's rho (rank correlation: does a higher statistic go with a higher "
    "robustness value, in any monotone way?) and Pearson's r (linear), each with its p-value, and a 95% "
    "percentile bootstrap CI for rho over resampled checkpoints. A negative rho between a negative-peak "
    "statistic and robust accuracy means flatter negative CAMs go with more robustness. A CI that excludes 0 "
    f"is the least to ask for; with fewer than {MIN_CHECKPOINTS} checkpoints nothing is computed, and below "
    f"{SMALL_N} the numbers are hints. p-values are not corrected for the many pairs tested."
)
SAMPLES_HELP = (
    "Among the clean-correct samples of each checkpoint, the AUROC of a clean statistic for telling the samples "
    "an attack broke (positives) from those it did not: 1.0 means every broken sample had a higher statistic "
    "than every robust one, 0.5 no information, below 0.5 the reverse. For a minimal attack (C&W), Spearman's "
    "rho between the statistic and the minimal norm over the samples it broke. The tables show the reference "
    "setting and the minimal attacks; the CSV has every setting."
)
GRID_HELP = (
    "Rows are samples; columns are the image, the true-class CAM and the top negative CAM (the absent class "
    "with the highest logit), for the clean input and then for an adversarial example. Maps are min-max "
    "normalised for display only; the panel titles give the raw peaks."
)


def _reference_label(report: Report) -> str | None:
    if report.reference is None:
        return None
    return report.reference.label(with_backend=several_backends(report.evaluations))


def _checkpoints_section(report: Report) -> list[str]:
    evaluations = report.evaluations
    listing = pd.DataFrame({
        "name": [e.name for e in evaluations], "loss": [e.loss for e in evaluations],
        "noise": [e.noise for e in evaluations], "evaluation": [str(e.path) for e in evaluations],
    })  # fmt: skip
    return ["## Checkpoints", "", markdown_table(listing), ""]


def _robust_section(report: Report, figures: dict[str, Path]) -> list[str]:
    table = report.models
    targets = robustness_columns(table)
    accuracy = ["clean_acc", *(c for c in targets if "@" in c)]
    norms = [c for c in targets if "@" not in c]
    view = _percent(table[["name", "loss", "noise", "n_samples", *accuracy, *norms]], accuracy)
    lines = [f"## Robust accuracy (%) per checkpoint ([{MODELS_FILE}]({MODELS_FILE}))", "", ROBUST_HELP, ""]
    lines += [markdown_table(view), ""]
    if ROBUST_ACCURACY_FIGURE in figures:
        lines += [f"![Robust accuracy vs eps]({ROBUST_ACCURACY_FIGURE})", ""]
    return lines


def _cam_section(report: Report) -> list[str]:
    table = report.models
    columns = [c for c in table.columns if c in statistic_columns(table) or c.endswith("_loc_acc")]
    lines = ["## Negative-CAM statistics per checkpoint", ""]
    if not columns:
        return [*lines, "_No CAM statistic columns in the evaluations (evaluated with --no-cam-stats?)._", ""]
    view = _percent(table[["name", "loss", "noise", *columns]], [c for c in columns if c.endswith("_acc")])
    if "adv_setting" in table.columns:
        view.insert(3, "adv_setting", table["adv_setting"])
    lines += [CAM_HELP.format(reference=_reference_label(report) or "none"), "", markdown_table(view), ""]
    lines += ["What each statistic measures:", ""]
    lines += [f"- `{name}`: {text}" for name, text in STATISTIC_HELP.items()]
    return [*lines, ""]


def _correlation_section(report: Report, figures: dict[str, Path]) -> list[str]:
    lines = [f"## Correlations across checkpoints ([{CORRELATIONS_FILE}]({CORRELATIONS_FILE}))", ""]
    lines += [CORRELATION_HELP, ""]
    strongest = strongest_correlations(report.correlations, 15)
    if len(strongest):
        lines += ["The strongest correlations (every pair is in the CSV):", "", markdown_table(strongest), ""]
    elif len(report.correlations):
        notes = ", ".join(sorted(set(report.correlations["note"]) - {""}))
        lines += [f"_No correlation could be computed ({notes})._", ""]
    for statistic, target in report.scatter_pairs:
        name = _scatter_file(statistic, target)
        if name in figures:
            lines += [f"![{statistic} vs {target}]({name})", ""]
    return lines


def _samples_section(report: Report) -> list[str]:
    title = "## Within a checkpoint: do clean statistics predict which samples break?"
    lines = [f"{title} ([{SAMPLES_FILE}]({SAMPLES_FILE}))", "", SAMPLES_HELP, ""]
    samples = report.samples
    if samples.empty:
        return [*lines, "_No per-sample CAM statistics to relate to attack success._", ""]
    reference = _reference_label(report)
    auroc = samples[(samples["kind"] == "auroc") & (samples["target"] == reference)]
    if len(auroc):
        view = _by_statistic(auroc, "auroc", ["n_positive", "n_negative"])
        lines += [f"AUROC at `{reference}` (positives: samples it broke):", "", markdown_table(view), ""]
    minimal = samples[samples["kind"] == "spearman_min_norm"]
    for target, part in minimal.groupby("target", sort=False):
        view = _by_statistic(part, "rho", ["n"])
        lines += [f"Spearman rho with `{target}` (n: samples it broke):", "", markdown_table(view), ""]
    return lines


def _by_statistic(rows: pd.DataFrame, value: str, counts: list[str]) -> pd.DataFrame:
    """One row per checkpoint, one column per statistic."""
    keys = ["name", "loss", "noise"]
    statistics = list(dict.fromkeys(rows["statistic"]))
    wide = rows.pivot_table(index=keys, columns="statistic", values=value, aggfunc="first", dropna=False, sort=False)
    first = rows.groupby(keys, sort=False)[counts].first()
    return first.join(wide.reindex(columns=statistics)).reset_index()


def _grid_section(report: Report, figures: dict[str, Path]) -> list[str]:
    grids = [(e.name, _grid_file(e.name)) for e in report.evaluations if _grid_file(e.name) in figures]
    if not grids:
        return []
    lines = ["## CAM examples", "", GRID_HELP, ""]
    for name, file in grids:
        lines += [f"### {name}", "", f"![CAMs of {name}]({file})", ""]
    return lines


def _markdown(report: Report, figures: dict[str, Path]) -> str:
    lines = ["# robustcam report", "", f"{len(report.evaluations)} checkpoint evaluation(s). {INTRO}", ""]
    lines += ["## Reading", "", report.reading, ""]
    if report.warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in report.warnings), ""]
    lines += _checkpoints_section(report)
    lines += _noise_section(report, figures)
    lines += _robust_section(report, figures)
    lines += _cam_section(report)
    lines += _correlation_section(report, figures)
    lines += _samples_section(report)
    lines += _grid_section(report, figures)
    return "\n".join(lines)


def _noise_section(report: Report, figures: dict[str, Path]) -> list[str]:
    noise = noise_table(report.models)
    if noise.empty:
        return []
    lines = ["## Label noise", "",
             "Clean test accuracy of each checkpoint (full test set, from its training record) against the "
             "rate of label noise it was trained with, and the fraction of flipped training labels it "
             "memorised (predicts as the noisy label).", "", markdown_table(noise), ""]  # fmt: skip
    if NOISE_FIGURE in figures:
        lines += [f"![Test accuracy vs noise rate]({NOISE_FIGURE})", ""]
    return lines


def _scatter_file(statistic: str, target: str) -> str:
    return f"scatter_{safe_file_name(statistic)}_vs_{safe_file_name(target)}.png"


def _grid_file(name: str) -> str:
    return f"cams_{safe_file_name(name)}.png"


# --------------------------------------------------------------------------- files


def write_report(
    evaluations: Sequence[Evaluation] | Report, out_dir: str | Path, *, bootstrap: int = 2000, seed: int = 0
) -> ReportFiles:
    """Write models.csv, correlations.csv, samples_auroc.csv, the PNG figures and report.md.

    ``evaluations`` may be a built ``Report``. A figure that cannot be drawn (e.g. a broken
    ``examples.pt``) becomes a warning in the report, not an error.
    """
    if isinstance(evaluations, Report):
        report = evaluations
    else:
        report = build_report(evaluations, bootstrap=bootstrap, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = atomic_write_text(out / MODELS_FILE, report.models.to_csv(index=False))
    correlations = atomic_write_text(out / CORRELATIONS_FILE, report.correlations.to_csv(index=False))
    samples = atomic_write_text(out / SAMPLES_FILE, report.samples.to_csv(index=False))

    figures: dict[str, Path] = {}
    problems: list[str] = []
    if not report.accuracies.empty:
        figures[ROBUST_ACCURACY_FIGURE] = plot_robust_accuracy(report.accuracies, out / ROBUST_ACCURACY_FIGURE)
    noise = noise_table(report.models)
    if not noise.empty:
        figures[NOISE_FIGURE] = plot_noise(noise, out / NOISE_FIGURE)
        atomic_write_text(out / NOISE_FILE, noise.to_csv(index=False))
    for statistic, target in report.scatter_pairs:
        name = _scatter_file(statistic, target)
        row = _correlation_row(report.correlations, statistic, target)
        figures[name] = plot_statistic_scatter(report.models, statistic, target, out / name, correlation=row)
    for evaluation in report.evaluations:
        if evaluation.examples is None:
            continue
        name = _grid_file(evaluation.name)
        try:
            figures[name] = plot_cam_grid(
                evaluation.examples, out / name, setting=report.reference,
                title=f"{evaluation.name} ({evaluation.loss}, {evaluation.noise}): CAMs, normalised for display",
            )  # fmt: skip
        except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as error:
            problems.append(f"{evaluation.name}: could not draw {evaluation.examples}: {error}")
    if problems:
        report = dataclasses.replace(report, warnings=(*report.warnings, *problems))
    markdown = atomic_write_text(out / MARKDOWN_FILE, _markdown(report, figures) + "\n")
    return ReportFiles(
        report=report, out_dir=out, models=models, correlations=correlations, samples=samples,
        markdown=markdown, figures=tuple(figures.values()),
    )  # fmt: skip


__all__ = [
    "Report",
    "ReportFiles",
    "build_report",
    "markdown_table",
    "plain_reading",
    "write_report",
]
