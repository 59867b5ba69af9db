"""Reports over one or many checkpoint evaluations: do negative-CAM peaks relate to robustness?

Pure functions return tables; rendering is separate::

    evaluations = load_evaluations(["runs/sweep"])     # eval dirs, run dirs or a sweep root
    table = model_table(evaluations)                   # one row per checkpoint
    correlations = model_correlations(table)           # statistic x robust accuracy, with bootstrap CI
    samples = sample_auroc(evaluations)                # within a checkpoint: AUROC of clean stats for breaks
    files = write_report(evaluations, "reports/sweep") # CSVs, PNGs, report.md
    render_report(files, Console())                    # the terminal view

Statistics use scipy.stats and scikit-learn; figures matplotlib (Agg); the console rich.
Every number is recomputed from ``per_sample.csv`` (never from attacks).
"""

from robustcam.report.console import render_report
from robustcam.report.correlation import (
    MIN_CHECKPOINTS,
    SMALL_N,
    benjamini_hochberg,
    correlate,
    default_primary,
    model_correlations,
    parse_primary,
    permutation_test,
    strongest_correlations,
)
from robustcam.report.document import (
    Report,
    ReportFiles,
    build_report,
    markdown_table,
    plain_reading,
    write_report,
)
from robustcam.report.figures import plot_cam_grid, plot_noise, plot_robust_accuracy, plot_statistic_scatter
from robustcam.report.incremental import incremental_value
from robustcam.report.load import (
    Evaluation,
    find_evaluation_dirs,
    load_evaluation,
    load_evaluations,
    noise_text,
)
from robustcam.report.replicates import configuration_table, configuration_values
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
    statistic_columns,
    summary_mismatches,
)

__all__ = [
    "MIN_CHECKPOINTS",
    "SMALL_N",
    "Evaluation",
    "Report",
    "ReportFiles",
    "Setting",
    "benjamini_hochberg",
    "build_report",
    "check_evaluations",
    "configuration_table",
    "configuration_values",
    "correlate",
    "default_primary",
    "find_evaluation_dirs",
    "headline_target",
    "incremental_value",
    "load_evaluation",
    "load_evaluations",
    "markdown_table",
    "model_correlations",
    "model_table",
    "noise_table",
    "noise_text",
    "parse_primary",
    "permutation_test",
    "plain_reading",
    "plot_cam_grid",
    "plot_noise",
    "plot_robust_accuracy",
    "plot_statistic_scatter",
    "reference_setting",
    "render_report",
    "robust_accuracies",
    "robustness_columns",
    "sample_auroc",
    "statistic_columns",
    "strongest_correlations",
    "summary_mismatches",
    "write_report",
]
