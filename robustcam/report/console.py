"""A report on the terminal (rich): a compact model table, the strongest correlations, the
plain-language reading and the warnings. The same ``Report`` data as the files."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from robustcam.report.correlation import strongest_correlations
from robustcam.report.document import Report, ReportFiles, reading_statistic
from robustcam.report.tables import several_backends

STRONGEST_SHOWN = 8


def _pct(value: object) -> str:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "" if not np.isfinite(number) else f"{100 * number:.1f}"


def _num(value: object) -> str:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "" if not np.isfinite(number) else f"{number:.3g}"


def _model_table(report: Report) -> Table:
    table = report.models
    reference = None
    if report.reference is not None:
        reference = report.reference.label(with_backend=several_backends(report.evaluations))
    accuracy = [c for c in dict.fromkeys([reference, report.headline]) if c is not None and c in table.columns]
    statistics = [c for c in dict.fromkeys([reading_statistic(table), "clean_neg_peak_max"])
                  if c is not None and c in table.columns]  # fmt: skip
    out = Table(title=f"{len(table)} checkpoints (accuracies in %)", title_justify="left")
    for column in ("checkpoint", "loss", "noise", "clean", *accuracy, *statistics):
        out.add_column(column, justify="left" if column in ("checkpoint", "loss", "noise") else "right")
    for row in table.to_dict("records"):
        out.add_row(
            str(row["name"]), str(row["loss"]), str(row["noise"]), _pct(row["clean_acc"]),
            *(_pct(row[c]) for c in accuracy), *(_num(row[c]) for c in statistics),
        )  # fmt: skip
    return out


def _correlation_table(report: Report) -> Table | None:
    strongest = strongest_correlations(report.correlations, STRONGEST_SHOWN)
    if strongest.empty:
        return None
    out = Table(title="strongest correlations across checkpoints (Spearman)", title_justify="left")
    for column in ("statistic", "robustness", "n", "rho", "95% CI", "Pearson r", "note"):
        out.add_column(column, justify="left" if column in ("statistic", "robustness", "note") else "right")
    for row in strongest.itertuples():
        interval = (
            f"[{row.spearman_ci_low:+.2f}, {row.spearman_ci_high:+.2f}]" if np.isfinite(row.spearman_ci_low) else ""
        )
        out.add_row(
            str(row.statistic), str(row.target), str(row.n), f"{row.spearman_rho:+.2f}", interval,
            "" if not np.isfinite(row.pearson_r) else f"{row.pearson_r:+.2f}", str(row.note),
            style="bold" if row.ci_excludes_zero else None,
        )  # fmt: skip
    return out


def render_report(report: Report | ReportFiles, console: Console) -> None:
    """Print a report: model table, strongest correlations, the reading, warnings (and the
    files, when given what ``write_report`` returned)."""
    files = report if isinstance(report, ReportFiles) else None
    data = files.report if files is not None else report
    assert isinstance(data, Report)
    console.print(_model_table(data))
    correlations = _correlation_table(data)
    if correlations is not None:
        console.print(correlations)
    elif len(data.correlations):
        notes = ", ".join(sorted(set(data.correlations["note"]) - {""}))
        console.print(f"no correlation across checkpoints could be computed ({notes})", highlight=False)
    console.print()
    console.print("[bold]reading[/]", highlight=False)
    console.print(data.reading, highlight=False, soft_wrap=False)
    for warning in data.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if files is not None:
        console.print(f"saved {', '.join(p.name for p in files.paths)} to {files.out_dir}", highlight=False)


__all__ = ["render_report"]
