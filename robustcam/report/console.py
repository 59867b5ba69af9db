"""A report on the terminal (rich), from the same ``Report`` data as the files.

Up to four tables and the reading: the checkpoints (or configurations, seeds averaged), what
the reading's CAM statistic adds to the logit margin within each checkpoint, the dose-response
trends when one numeric key varies, and the model-level correlations (primary hypotheses first,
then by q-value). Every table fits the terminal:
headers are short and explained in a legend under the table, notes become footnotes instead
of wrapped cells, and when the terminal is too narrow the least important columns are left
out (an 80-column terminal shows the essentials; a wider one shows more).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from robustcam.report.correlation import ALPHA, tested
from robustcam.report.document import Report, ReportFiles
from robustcam.report.reading import dose_panels, reading_statistic

CORRELATIONS_SHOWN = 8


@dataclass(frozen=True)
class Column:
    """One column of a console table: short header, cells, and how readily it is dropped
    (``priority`` 0 is never dropped; higher numbers go first when the terminal is narrow)."""

    header: str
    cells: list[str]
    priority: int = 0
    right: bool = True
    legend: str = ""


def _number(value: object) -> float:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return float(number)


def _pct(value: object) -> str:
    number = _number(value)
    return "" if not np.isfinite(number) else f"{100 * number:.1f}"


def _num(value: object) -> str:
    number = _number(value)
    return "" if not np.isfinite(number) else f"{number:.3g}"


def _signed(value: object, digits: int = 2) -> str:
    number = _number(value)
    return "" if not np.isfinite(number) else f"{number:+.{digits}f}"


def _p(value: object) -> str:
    number = _number(value)
    if not np.isfinite(number):
        return ""
    return f"{number:.1e}" if number < 0.001 else f"{number:.3f}"


def _build(title: str, columns: Sequence[Column], rows: int) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left", no_wrap=True)
    for i in range(rows):
        table.add_row(*(column.cells[i] for column in columns))
    return table


def fit_table(console: Console, title: str, columns: Sequence[Column]) -> tuple[Table, list[Column]]:
    """The table with as many columns as fit ``console.width``: columns with the highest
    ``priority`` are left out first, never one of priority 0. Returns the table and its columns."""
    rows = len(columns[0].cells) if columns else 0
    kept = list(columns)
    while True:
        table = _build(title, kept, rows)
        # measured without the terminal's limit: rich would squeeze the table to fit and cut its cells
        width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        droppable = [c for c in kept if c.priority > 0]
        if width <= console.width or not droppable:
            return table, kept
        kept.remove(max(droppable, key=lambda c: (c.priority, kept.index(c))))


def _print_table(console: Console, title: str, columns: Sequence[Column], footnotes: Sequence[str] = ()) -> None:
    table, kept = fit_table(console, title, columns)
    console.print(table)
    legend = [f"{c.header}: {c.legend}" for c in kept if c.legend]
    left_out = [c.header for c in columns if c not in kept]
    if left_out:
        legend.append(f"(left out to fit {console.width} columns: {', '.join(left_out)}; see the CSV files)")
    for line in [*legend, *footnotes]:
        console.print(f"  {line}", style="dim", highlight=False)


# --------------------------------------------------------------------------- the tables


def _statistic_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, short header) for the reading's statistic and the highest negative peak."""
    chosen = dict.fromkeys(c for c in (reading_statistic(table), "clean_neg_peak_max") if c and c in table.columns)
    short = {
        "clean_neg_homogeneity": "homog",
        "clean_neg_peak_max": "peak",
        "clean_neg_peak_topk": "topk",
        "clean_neg_positive_frac": "pos.frac",
    }
    return [(c, short.get(c, c.removeprefix("clean_"))) for c in chosen]


def _accuracy_columns(report: Report, table: pd.DataFrame) -> list[str]:
    return [c for c in dict.fromkeys([report.reference_label, report.headline]) if c is not None and c in table.columns]


def _with_spread(values: Callable[[object], str], table: pd.DataFrame, column: str, scale: float = 1.0) -> list[str]:
    spread = table.get(f"{column}_sd")
    cells = []
    for i, value in enumerate(table[column]):
        cell = values(value)
        sd = _number(spread.iloc[i]) if spread is not None else float("nan")
        cells.append(f"{cell}±{scale * sd:.2g}" if cell and np.isfinite(sd) else cell)
    return cells


def _models_columns(report: Report) -> tuple[str, list[Column]]:
    if report.replicates:
        table = report.configurations
        title = f"{len(table)} configurations, seeds averaged (mean±sd over seeds; accuracies in %)"
        columns = [
            Column("configuration", [str(v) for v in table["configuration"]], right=False),
            Column("seeds", [str(v) for v in table["n_replicates"]], priority=3),
        ]
    else:
        table = report.models
        title = f"{len(table)} checkpoints (accuracies in %)"
        columns = [
            Column("model", [str(v) for v in table["name"]], right=False),
            Column("loss", [str(v) for v in table["loss"]], priority=4, right=False),
            Column("noise", [str(v) for v in table["noise"]], priority=5, right=False),
        ]
    columns.append(Column("clean", _with_spread(_pct, table, "clean_acc", 100), priority=2))
    for i, name in enumerate(_accuracy_columns(report, table)):
        columns.append(Column(name, _with_spread(_pct, table, name, 100), priority=1 if i else 3))
    for i, (name, short) in enumerate(_statistic_columns(table)):
        columns.append(Column(short, _with_spread(_num, table, name), priority=1 + 2 * i, legend=f"mean {name}"))
    return title, columns


def _incremental_columns(report: Report) -> tuple[str, list[Column]] | None:
    statistic = reading_statistic(report.models)
    reference = report.reference_label
    rows = report.incremental
    rows = rows[(rows["kind"] == "auroc") & (rows["statistic"] == statistic) & (rows["target"] == reference)]
    if rows.empty or statistic is None:
        return None
    interval = [
        f"[{_signed(r.delta_ci_low, 3)}, {_signed(r.delta_ci_high, 3)}]" if np.isfinite(r.delta_ci_low) else ""
        for r in rows.itertuples()
    ]
    title = f"within each checkpoint, {reference}: {statistic} and the logit margin"
    return title, [
        Column("model", [str(v) for v in rows["name"]], right=False),
        Column(
            "stat",
            [_num(v) for v in rows["auroc_statistic"]],
            legend=f"AUROC of {statistic} alone for the samples the attack broke",
        ),
        Column(
            "margin", [_num(v) for v in rows["auroc_margin"]], legend="the clean logit margin alone (cross-validated)"
        ),
        Column("both", [_num(v) for v in rows["auroc_margin_plus"]], priority=2, legend="margin + statistic"),
        Column("Δ", [_signed(v, 3) for v in rows["delta_auroc"]], legend="both - margin"),
        Column("95% CI of Δ", interval, priority=1),
        Column("LR p", [_p(v) for v in rows["lr_p"]], priority=1, legend="likelihood-ratio test of adding it"),
        Column("n broken", [_num(v) for v in rows["n_positive"]], priority=3),
    ]


def _correlation_rows(correlations: pd.DataFrame) -> pd.DataFrame:
    """Primary hypotheses first, then the other tested pairs by q-value, at most ``CORRELATIONS_SHOWN``."""
    done = tested(correlations)
    primary = done[done["family"] == "primary"]
    others = done[done["family"] != "primary"].sort_values(["q_value", "spearman_p"], kind="stable")
    return pd.concat([primary, others]).head(max(CORRELATIONS_SHOWN, len(primary)))


def _correlation_columns(report: Report) -> tuple[str, list[Column], list[str]] | None:
    correlations = report.correlations
    done = tested(correlations)
    if done.empty:
        return None
    rows = _correlation_rows(correlations)
    unit = "configurations" if report.replicates else "checkpoints"
    found = int(done["finding"].sum())
    title = (
        f"correlations across {unit}: {len(done)} pairs tested, {found} finding{'s' if found != 1 else ''} "
        f"(q < {ALPHA})"
    )
    notes = list(dict.fromkeys(n for n in rows["note"] if n))
    marks = {note: chr(ord("a") + i) for i, note in enumerate(notes)}
    interval = [
        f"[{r.spearman_ci_low:+.2f}, {r.spearman_ci_high:+.2f}]" if np.isfinite(r.spearman_ci_low) else ""
        for r in rows.itertuples()
    ]
    columns = [
        Column("statistic", [str(v) for v in rows["statistic"]], right=False),
        Column("robustness", [str(v) for v in rows["target"]], right=False),
        Column(
            "fam",
            ["P" if f == "primary" else "E" for f in rows["family"]],
            priority=2,
            legend="P primary hypothesis (own family), E exploratory",
        ),
        Column("n", [str(v) for v in rows["n"]], priority=3),
        Column("rho", [_signed(v) for v in rows["spearman_rho"]], legend="Spearman"),
        Column("p", [_p(v) for v in rows["spearman_p"]], legend="two-sided permutation p (exact up to n = 8)"),
        Column("q", [_p(v) for v in rows["q_family"]], legend="Benjamini-Hochberg within the family"),
        Column("95% CI", interval, priority=4),
        Column("", [marks.get(n, "") for n in rows["note"]], priority=1, right=False),
    ]
    footnotes = [f"{mark}: {note}" for note, mark in marks.items()]
    return title, columns, footnotes


def _dose_columns(report: Report) -> tuple[str, list[Column]] | None:
    dose = report.dose
    if dose is None:
        return None
    trend = dose.trend[dose.trend["quantity"].isin(dose_panels(dose, report.headline))]
    title = f"dose-response along {dose.factor} ({len(dose.levels)} doses, seeds averaged)"
    columns = [
        Column("quantity", [str(v) for v in trend["quantity"]], right=False),
        Column("stratum", [str(v) for v in trend["stratum"]], priority=3, right=False),
        Column("rho", [_signed(v) for v in trend["spearman_rho"]], legend="Spearman of dose vs the per-dose mean"),
        Column("p", [_p(v) for v in trend["p_value"]], legend="two-sided permutation p (exact up to 8 doses)"),
        Column("q", [_p(v) for v in trend["q_value"]], priority=1, legend="Benjamini-Hochberg over the quantities"),
    ]
    if not any(trend["stratum"]):
        columns = [c for c in columns if c.header != "stratum"]
    return title, columns


def render_report(report: Report | ReportFiles, console: Console) -> None:
    """Print a report: the model table, the within-checkpoint comparison, the correlations, the
    reading and the warnings (and the files, when given what ``write_report`` returned)."""
    files = report if isinstance(report, ReportFiles) else None
    data = files.report if files is not None else report
    assert isinstance(data, Report)
    _print_table(console, *_models_columns(data))
    incremental = _incremental_columns(data)
    if incremental is not None:
        console.print()
        _print_table(console, *incremental)
    dose = _dose_columns(data)
    if dose is not None:
        console.print()
        _print_table(console, *dose)
    correlations = _correlation_columns(data)
    console.print()
    if correlations is not None:
        title, columns, footnotes = correlations
        _print_table(console, title, columns, footnotes)
    elif len(data.correlations):
        notes = ", ".join(sorted(set(data.correlations["note"]) - {""}))
        console.print(f"no correlation across checkpoints could be computed ({notes})", highlight=False)
    console.print()
    console.print("[bold]reading[/]", highlight=False)
    console.print(data.reading, highlight=False)
    for warning in data.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if files is not None:
        console.print(f"saved {', '.join(p.name for p in files.paths)} to {files.out_dir}", highlight=False)


__all__ = ["Column", "fit_table", "render_report"]
