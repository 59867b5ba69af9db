"""The report as data (``build_report``) and as files (``write_report``): CSV tables, PNG
figures and a ``report.md`` that puts them together with short explanations.

``Report`` holds every table; ``write_report`` renders it to disk; ``render_report``
(``robustcam.report.console``) renders it to a terminal. The plain-language reading
(``plain_reading``) is generated from the numbers, never written by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustcam.io import atomic_write_text, make_dir
from robustcam.report.correlation import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    EXACT_MAX_N,
    MIN_BOOTSTRAP_N,
    MIN_CHECKPOINTS,
    PERMUTATION_RESAMPLES,
    default_primary,
    model_correlations,
    parse_primary,
    strongest_correlations,
    tested,
)
from robustcam.report.dose import DoseResponse, dose_response, plot_dose_response
from robustcam.report.figures import (
    plot_cam_grid,
    plot_noise,
    plot_robust_accuracy,
    plot_statistic_scatter,
    safe_file_name,
)
from robustcam.report.incremental import REPEATS, incremental_value
from robustcam.report.load import Evaluation
from robustcam.report.reading import dose_panels, dose_sentences, plain_reading, reading_statistic
from robustcam.report.replicates import configuration_table, configuration_values, has_replicates
from robustcam.report.samples import sample_auroc
from robustcam.report.tables import (
    Setting,
    check_evaluations,
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
CONFIGURATIONS_FILE = "configurations.csv"
CORRELATIONS_FILE = "correlations.csv"
SAMPLES_FILE = "samples_auroc.csv"
INCREMENTAL_FILE = "samples_incremental.csv"
DOSE_SUMMARY_FILE = "dose_response.csv"
DOSE_TREND_FILE = "dose_trend.csv"
DOSE_FIGURE = "dose_response.png"
MARKDOWN_FILE = "report.md"
ROBUST_ACCURACY_FIGURE = "robust_accuracy_vs_eps.png"
NOISE_FIGURE = "test_accuracy_vs_noise.png"
NOISE_FILE = "noise.csv"

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

    ``models``: ``model_table`` (one row per checkpoint); ``configurations``: the model table
    averaged over seed replicates (``configuration_table``), the points of every model-level
    correlation; ``accuracies``: ``robust_accuracies`` (long form); ``correlations``:
    ``model_correlations`` over the configurations; ``samples``: ``sample_auroc``;
    ``incremental``: ``incremental_value``; ``reference``: the setting of the ``adv_*`` columns
    and of the within-checkpoint lead; ``headline``: the robustness column the reading uses;
    ``primary``: the declared primary hypotheses; ``scatter_pairs``: (statistic, robustness
    column) pairs that get a scatter plot; ``dose``: the dose-response analysis when the
    checkpoints vary one numeric config key over 3 or more values (``robustcam.report.dose``).
    """

    evaluations: tuple[Evaluation, ...]
    models: pd.DataFrame
    configurations: pd.DataFrame
    accuracies: pd.DataFrame
    correlations: pd.DataFrame
    samples: pd.DataFrame
    incremental: pd.DataFrame
    reference: Setting | None
    headline: str | None
    primary: tuple[tuple[str, str], ...]
    scatter_pairs: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    reading: str
    dose: DoseResponse | None = None

    @property
    def replicates(self) -> bool:
        """Whether seed replicates were averaged into configurations."""
        return has_replicates(self.configurations)

    @property
    def reference_label(self) -> str | None:
        if self.reference is None:
            return None
        return self.reference.label(with_backend=several_backends(self.evaluations))


@dataclass(frozen=True, eq=False)
class ReportFiles:
    """What ``write_report`` wrote, and the report it wrote."""

    report: Report
    out_dir: Path
    models: Path
    configurations: Path
    correlations: Path
    samples: Path
    incremental: Path
    markdown: Path
    figures: tuple[Path, ...]

    @property
    def tables(self) -> tuple[Path, ...]:
        return (self.models, self.configurations, self.correlations, self.samples, self.incremental)

    @property
    def paths(self) -> tuple[Path, ...]:
        return (*self.tables, self.markdown, *self.figures)


# --------------------------------------------------------------------------- building


def scatter_pairs(table: pd.DataFrame, correlations: pd.DataFrame) -> list[tuple[str, str]]:
    """The reading's pair (e.g. clean_neg_homogeneity vs worst@8/255), then the pair with the
    smallest q-value if it is a different one and a finding."""
    pairs: list[tuple[str, str]] = []
    statistic, target = reading_statistic(table), headline_target(table)
    if statistic is not None and target is not None:
        pairs.append((statistic, target))
    strongest = strongest_correlations(correlations, 1)
    if len(strongest) and bool(strongest["finding"].iloc[0]):
        pair = (str(strongest["statistic"].iloc[0]), str(strongest["target"].iloc[0]))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def _correlation_row(correlations: pd.DataFrame, statistic: str, target: str) -> dict[str, Any] | None:
    match = correlations[(correlations["statistic"] == statistic) & (correlations["target"] == target)]
    return None if match.empty else dict(match.iloc[0])


def cam_methods(evaluations: Sequence[Evaluation]) -> dict[str, list[str]]:
    """The checkpoints (by name) whose CAM statistics come from each method, methods in name order."""
    methods: dict[str, list[str]] = {}
    for evaluation in evaluations:
        if evaluation.cam_method is not None:
            methods.setdefault(evaluation.cam_method, []).append(evaluation.name)
    return dict(sorted(methods.items()))


def pooled_methods_sentences(evaluations: Sequence[Evaluation]) -> list[str]:
    """A sentence when the checkpoints' CAM statistics come from different methods (exact CAMs
    and Grad-CAM maps): the model-level correlations then pool the two, and say so."""
    methods = cam_methods(evaluations)
    if len(methods) < 2:
        return []
    parts = "; ".join(f"{method}: {', '.join(names)}" for method, names in methods.items())
    return [
        f"The CAM statistics of these checkpoints come from different methods ({parts}): exact CAMs include the "
        "head bias and Grad-CAM maps are scaled by 1/hw and read at another layer, so every model-level "
        "correlation here pools two methods whose values are not on one scale; compare checkpoints within one method."
    ]


def build_report(
    evaluations: Sequence[Evaluation],
    *,
    primary: Sequence[str] | None = None,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    cv_repeats: int = REPEATS,
) -> Report:
    """All tables of a report from loaded evaluations (see ``load_evaluations``).

    ``primary``: the declared primary hypotheses as ``statistic:target`` texts (default:
    ``default_primary``); a name the report does not have is a ``PrimaryHypothesisError``.
    ``cv_repeats``: repeats of the 5-fold cross-validation of the within-checkpoint comparison.
    """
    if not evaluations:
        raise ValueError("no evaluations to report on")
    evaluations = tuple(evaluations)
    table = model_table(evaluations)
    values = configuration_values(evaluations)
    configurations = configuration_table(table, values)
    declared = parse_primary(primary, configurations) if primary is not None else default_primary(configurations)
    correlations = model_correlations(configurations, primary=declared, bootstrap=bootstrap, seed=seed)
    incremental = incremental_value(evaluations, repeats=cv_repeats, seed=seed)
    reference = reference_setting(evaluations)
    headline = headline_target(table)
    reference_label = None if reference is None else reference.label(with_backend=several_backends(evaluations))
    dose = dose_response(table, values)
    reading = plain_reading(
        table,
        correlations,
        incremental=incremental,
        reference=reference_label,
        target=headline,
        replicates=has_replicates(configurations),
        dose_sentences=dose_sentences(dose, headline),
    )
    reading = " ".join([reading, *pooled_methods_sentences(evaluations)])
    methods = cam_methods(evaluations)
    if methods and not correlations.empty:  # which maps every row pools (all rows use every checkpoint)
        correlations = correlations.assign(cam_methods="+".join(methods))
    return Report(
        evaluations=evaluations,
        models=table,
        configurations=configurations,
        accuracies=robust_accuracies(evaluations),
        correlations=correlations,
        samples=sample_auroc(evaluations, seed=seed),
        incremental=incremental,
        reference=reference,
        headline=headline,
        primary=tuple(declared),
        scatter_pairs=tuple(scatter_pairs(configurations, correlations)),
        warnings=tuple(check_evaluations(evaluations)),
        reading=reading,
        dose=dose,
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
    align = (
        "| "
        + " | ".join(
            "---:" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) else "---"
            for c in frame.columns
        )
        + " |"
    )
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
    "samples); `adv_*` on the adversarial examples of the reference setting `{reference}`. Where the data have "
    "ground-truth boxes, CAM localisation (%) under three protocols, because the literature uses one name for "
    "different rules. `loc_acc_cvpr2016` is top-1 localisation as in the CAM paper (Zhou et al., CVPR 2016): "
    "the predicted class's CAM without the head bias, upsampled, negatives clipped to 0, divided by its max and "
    "kept where >= 0.2; the box of the largest connected component; a hit when the prediction is right and the "
    "box has IoU >= 0.5 with the ground truth. `loc_acc_minmax` is the same with the map min-max normalised "
    "instead (the later WSOL re-implementations' rule; records written before the protocols were named used "
    "it). `maxboxacc_v2` is MaxBoxAccV2 (Choe et al., CVPR 2020): the ground-truth class's CAM, min-max "
    "normalised, boxes of every connected component, a hit when any box reaches IoU delta, the best threshold "
    "of a 0.01 grid chosen over the whole evaluation, averaged over delta = 0.3, 0.5 and 0.7; it does not ask "
    "whether the prediction is right."
)
CORRELATION_HELP = (
    "One point per configuration: checkpoints that differ only in their seed are averaged into one "
    "configuration (their spread is in `configurations.csv`), so seeds are replicates, not independent points. "
    "Spearman's rho (rank correlation) and Pearson's r (linear), each with a two-sided permutation p-value: "
    f"exact (every one of the n! orderings) up to n = {EXACT_MAX_N}, otherwise Monte Carlo with "
    f"{PERMUTATION_RESAMPLES:,} seeded orderings (`p_method`). At n = 4 the smallest possible p is 2/24 = 0.083, "
    f"so four checkpoints can never be significant. A BCa bootstrap 95% CI of rho is given from n = "
    f"{MIN_BOOTSTRAP_N}; below that there is none, because a bootstrap of a handful of points collapses. "
    "`q_value` is the Benjamini-Hochberg adjusted p over every row of the CSV; the primary hypotheses, declared "
    "before looking, are also corrected as their own family (`q_family`), and the rest as exploratory. A pair is "
    f"a finding only when its `q_family` is below {ALPHA}. A negative rho between a negative-peak statistic and "
    "robust accuracy means flatter negative CAMs go with more robustness; across checkpoints that differ in "
    f"their loss it is an association, never a cause. Nothing is computed below {MIN_CHECKPOINTS} points."
)
INCREMENTAL_HELP = (
    "Within each checkpoint (hundreds of samples: the strongest evidence here), among its clean-correct samples "
    "and for a bounded attack setting: `auroc_margin` is how well the clean logit margin alone predicts which "
    "samples the attack breaks (out-of-fold logistic regression, stratified 5-fold cross-validation repeated 10 "
    "times); `auroc_statistic` the statistic alone; `auroc_margin_plus` margin and statistic together; "
    "`delta_auroc` the difference, with a paired stratified bootstrap 95% CI over samples; `lr_p` the "
    "likelihood-ratio test of adding the statistic to the margin-only model (`lr_q`: BH over the whole CSV); "
    "`coef` the statistic's standardised coefficient (positive: a higher statistic, more breaks at equal "
    "margin); `partial_spearman` the statistic's rank correlation with being broken given the margin. A "
    "statistic with a high AUROC of its own but a delta CI around 0 only repeats what the logits say."
)
SAMPLES_HELP = (
    "Among the clean-correct samples of each checkpoint, the AUROC of a clean statistic for telling the samples "
    "an attack broke (positives) from those it did not, with a stratified bootstrap 95% CI: 1.0 means every "
    "broken sample had a higher statistic than every robust one, 0.5 no information, below 0.5 the reverse. "
    "For a minimal attack (C&W), Spearman's rho between the statistic and the minimal norm over the samples it "
    "broke (permutation p). The tables show the reference setting and the minimal attacks; the CSV has every "
    "setting."
)
CONFIGURATIONS_HELP = (
    "Checkpoints that differ only in their seed, averaged: the mean of each column over the seeds, with the "
    "standard deviation over seeds beside it in the CSV (`<column>_sd`)."
)
GRID_HELP = (
    "Rows are samples; columns are the image, the true-class CAM and the top negative CAM (the absent class "
    "with the highest logit), for the clean input and then for an adversarial example. Maps are min-max "
    "normalised for display only; the panel titles give the raw peaks."
)


def _reference_label(report: Report) -> str | None:
    return report.reference_label


def _checkpoints_section(report: Report) -> list[str]:
    evaluations = report.evaluations
    listing = pd.DataFrame(
        {
            "name": [e.name for e in evaluations],
            "loss": [e.loss for e in evaluations],
            "noise": [e.noise for e in evaluations],
            "evaluation": [str(e.path) for e in evaluations],
        }
    )
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
    # localisation columns: <side>_loc_acc_<protocol> and <side>_maxboxacc_v2 (robustcam.report.tables)
    localization = [c for c in table.columns if "_loc_acc_" in c or c.endswith("_maxboxacc_v2")]
    columns = [c for c in table.columns if c in statistic_columns(table)] + localization
    lines = ["## Negative-CAM statistics per checkpoint", ""]
    if not columns:
        return [*lines, "_No CAM statistic columns in the evaluations (evaluated with --no-cam-stats?)._", ""]
    view = _percent(table[["name", "loss", "noise", *columns]], localization)
    if "adv_setting" in table.columns:
        view.insert(3, "adv_setting", table["adv_setting"])
    lines += [CAM_HELP.format(reference=_reference_label(report) or "none"), "", markdown_table(view), ""]
    lines += ["What each statistic measures:", ""]
    lines += [f"- `{name}`: {text}" for name, text in STATISTIC_HELP.items()]
    return [*lines, ""]


CORRELATION_VIEW = (
    "statistic",
    "target",
    "family",
    "n",
    "spearman_rho",
    "spearman_p",
    "p_method",
    "q_family",
    "q_value",
    "spearman_ci_low",
    "spearman_ci_high",
    "pearson_r",
    "note",
)


def _correlation_section(report: Report, figures: dict[str, Path]) -> list[str]:
    unit = "configurations" if report.replicates else "checkpoints"
    lines = [f"## Correlations across {unit} ([{CORRELATIONS_FILE}]({CORRELATIONS_FILE}))", "", CORRELATION_HELP, ""]
    lines += [f"The points are the rows of [{CONFIGURATIONS_FILE}]({CONFIGURATIONS_FILE}).", ""]
    correlations = report.correlations
    done = tested(correlations)
    primary = correlations[correlations["family"] == "primary"]
    if len(primary):
        lines += ["Primary hypotheses (declared before looking, corrected as their own family):", ""]
        lines += [markdown_table(primary[list(CORRELATION_VIEW)]), ""]
    if len(done):
        found = int(done["finding"].sum())
        lines += [
            (
                f"{len(done)} pairs were tested; {found} {'is a finding' if found == 1 else 'are findings'} "
                f"(q_family < {ALPHA}). The 15 with the smallest q-values (every pair is in the CSV):"
            ),
            "",
            markdown_table(strongest_correlations(correlations, 15)[list(CORRELATION_VIEW)]),
            "",
        ]
    elif len(correlations):
        notes = ", ".join(sorted(set(correlations["note"]) - {""}))
        lines += [f"_No correlation could be computed ({notes})._", ""]
    for statistic, target in report.scatter_pairs:
        name = _scatter_file(statistic, target)
        if name in figures:
            lines += [f"![{statistic} vs {target}]({name})", ""]
    return lines


DOSE_HELP = (
    "The checkpoints vary one numeric config key, `{factor}` ({levels}), with everything else fixed and seeds "
    "as replicates: the design that can speak to what the key does, within this data and model. Points are "
    "seed replicates, the line the mean over seeds with its 95% t-interval. The trend test is Spearman's rho "
    "of the dose against the per-dose mean (one point per dose), with its permutation p (exact up to 8 doses) "
    "and a Benjamini-Hochberg q over every quantity; it tests a monotone trend, not its size or shape "
    f"([{DOSE_SUMMARY_FILE}]({DOSE_SUMMARY_FILE}), [{DOSE_TREND_FILE}]({DOSE_TREND_FILE}))."
)


def _dose_section(report: Report, figures: dict[str, Path]) -> list[str]:
    dose = report.dose
    if dose is None:
        return []
    levels = ", ".join(f"{level:g}" for level in dose.levels)
    lines = ["## Dose-response", "", DOSE_HELP.format(factor=dose.factor, levels=levels), ""]
    lines += [markdown_table(dose.trend), ""]
    if DOSE_FIGURE in figures:
        lines += [f"![Dose-response along {dose.factor}]({DOSE_FIGURE})", ""]
    return lines


def _configurations_section(report: Report) -> list[str]:
    if not report.replicates:
        return []
    table = report.configurations
    shown = [
        c
        for c in (
            "configuration",
            "n_replicates",
            "seeds",
            "clean_acc",
            report.headline,
            reading_statistic(table),
            "clean_neg_peak_max",
        )
        if c is not None and c in table.columns
    ]
    spread = [f"{c}_sd" for c in shown[3:] if f"{c}_sd" in table.columns]
    view = table[list(dict.fromkeys([*shown, *spread]))]
    title = f"## Configurations: seeds averaged ([{CONFIGURATIONS_FILE}]({CONFIGURATIONS_FILE}))"
    return [title, "", CONFIGURATIONS_HELP, "", markdown_table(view), ""]


INCREMENTAL_VIEW = (
    "name",
    "statistic",
    "n_positive",
    "n_negative",
    "auroc_statistic",
    "auroc_margin",
    "auroc_margin_plus",
    "delta_auroc",
    "delta_ci_low",
    "delta_ci_high",
    "lr_p",
    "coef",
)


def _incremental_section(report: Report) -> list[str]:
    title = "## Within a checkpoint: what a CAM statistic adds to the logit margin"
    lines = [f"{title} ([{INCREMENTAL_FILE}]({INCREMENTAL_FILE}))", "", INCREMENTAL_HELP, ""]
    incremental = report.incremental
    reference = report.reference_label
    chosen = incremental[(incremental["kind"] == "auroc") & (incremental["target"] == reference)]
    if chosen.empty:
        return [*lines, "_No per-sample CAM statistics and margins to compare._", ""]
    lines += [
        f"At `{reference}` (positives: samples it broke):",
        "",
        markdown_table(chosen[list(INCREMENTAL_VIEW)]),
        "",
    ]
    return lines


def _samples_section(report: Report) -> list[str]:
    title = "## Within a checkpoint: do clean statistics predict which samples break?"
    lines = [f"{title} ([{SAMPLES_FILE}]({SAMPLES_FILE}))", "", SAMPLES_HELP, ""]
    samples = report.samples
    if samples.empty:
        return [*lines, "_No per-sample CAM statistics to relate to attack success._", ""]
    reference = report.reference_label
    auroc = samples[(samples["kind"] == "auroc") & (samples["target"] == reference)]
    if len(auroc):
        view = auroc[["name", "statistic", "n_positive", "n_negative", "auroc", "auroc_ci_low", "auroc_ci_high"]]
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
    lines += _incremental_section(report)
    lines += _samples_section(report)
    lines += _dose_section(report, figures)
    lines += _configurations_section(report)
    lines += _correlation_section(report, figures)
    lines += _grid_section(report, figures)
    return "\n".join(lines)


def _noise_section(report: Report, figures: dict[str, Path]) -> list[str]:
    noise = noise_table(report.models)
    if noise.empty:
        return []
    lines = [
        "## Label noise",
        "",
        (
            "Clean test accuracy of each checkpoint (full test set, from its training record) against the "
            "rate of label noise it was trained with, and the fraction of flipped training labels it "
            "memorised (predicts as the noisy label)."
        ),
        "",
        markdown_table(noise),
        "",
    ]
    if NOISE_FIGURE in figures:
        lines += [f"![Test accuracy vs noise rate]({NOISE_FIGURE})", ""]
    return lines


def _scatter_file(statistic: str, target: str) -> str:
    return f"scatter_{safe_file_name(statistic)}_vs_{safe_file_name(target)}.png"


def _grid_file(name: str) -> str:
    return f"cams_{safe_file_name(name)}.png"


# --------------------------------------------------------------------------- files


def write_report(
    evaluations: Sequence[Evaluation] | Report,
    out_dir: str | Path,
    *,
    primary: Sequence[str] | None = None,
    bootstrap: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    cv_repeats: int = REPEATS,
    warnings: Sequence[str] = (),
) -> ReportFiles:
    """Write models.csv, configurations.csv, correlations.csv, samples_auroc.csv,
    samples_incremental.csv, the PNG figures and report.md.

    ``evaluations`` may be a built ``Report``. A figure that cannot be drawn (e.g. a broken
    ``examples.pt``) becomes a warning in the report, not an error. ``warnings`` are the
    caller's own, shown first (a sweep's stale cells).
    """
    if isinstance(evaluations, Report):
        report = evaluations
    else:
        report = build_report(evaluations, primary=primary, bootstrap=bootstrap, seed=seed, cv_repeats=cv_repeats)
    out = make_dir(Path(out_dir))
    frames = {
        "models": (MODELS_FILE, report.models),
        "configurations": (CONFIGURATIONS_FILE, report.configurations),
        "correlations": (CORRELATIONS_FILE, report.correlations),
        "samples": (SAMPLES_FILE, report.samples),
        "incremental": (INCREMENTAL_FILE, report.incremental),
    }
    tables = {key: atomic_write_text(out / name, frame.to_csv(index=False)) for key, (name, frame) in frames.items()}
    if report.dose is not None:
        atomic_write_text(out / DOSE_SUMMARY_FILE, report.dose.summary.to_csv(index=False))
        atomic_write_text(out / DOSE_TREND_FILE, report.dose.trend.to_csv(index=False))
    figures, problems = _write_figures(report, out)
    if problems or warnings:
        report = dataclasses.replace(report, warnings=(*warnings, *report.warnings, *problems))
    markdown = atomic_write_text(out / MARKDOWN_FILE, _markdown(report, figures) + "\n")
    return ReportFiles(report=report, out_dir=out, markdown=markdown, figures=tuple(figures.values()), **tables)


def _write_figures(report: Report, out: Path) -> tuple[dict[str, Path], list[str]]:
    """Every figure of the report, and a warning for each one that could not be drawn."""
    figures: dict[str, Path] = {}
    problems: list[str] = []
    if not report.accuracies.empty:
        figures[ROBUST_ACCURACY_FIGURE] = plot_robust_accuracy(report.accuracies, out / ROBUST_ACCURACY_FIGURE)
    noise = noise_table(report.models)
    if not noise.empty:
        figures[NOISE_FIGURE] = plot_noise(noise, out / NOISE_FIGURE)
        atomic_write_text(out / NOISE_FILE, noise.to_csv(index=False))
    if report.dose is not None:
        figures[DOSE_FIGURE] = plot_dose_response(
            report.dose, out / DOSE_FIGURE, quantities=dose_panels(report.dose, report.headline)
        )
    for statistic, target in report.scatter_pairs:
        name = _scatter_file(statistic, target)
        row = _correlation_row(report.correlations, statistic, target)
        figures[name] = plot_statistic_scatter(report.configurations, statistic, target, out / name, correlation=row)
    for evaluation in report.evaluations:
        if evaluation.examples is None:
            continue
        name = _grid_file(evaluation.name)
        try:
            figures[name] = plot_cam_grid(
                evaluation.examples,
                out / name,
                setting=report.reference,
                title=f"{evaluation.name} ({evaluation.loss}, {evaluation.noise}): CAMs, normalised for display",
            )
        except (KeyError, ValueError, RuntimeError, IndexError, TypeError) as error:
            problems.append(f"{evaluation.name}: could not draw {evaluation.examples}: {error}")
    return figures, problems


__all__ = [
    "Report",
    "ReportFiles",
    "build_report",
    "markdown_table",
    "plain_reading",
    "write_report",
]
