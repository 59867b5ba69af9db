"""write_report / render_report: files, figures, report.md, the plain-language reading."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from rich.console import Console

from robustcam.report import (
    build_report,
    load_evaluations,
    markdown_table,
    model_correlations,
    model_table,
    plain_reading,
    render_report,
    write_report,
)

from .synthetic import make_records, sweep_stats, write_examples, write_folder, write_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _console() -> Console:
    return Console(record=True, width=160, force_terminal=False, color_system=None)


def test_every_file_is_written_and_report_md_shows_every_figure(tmp_path: Path) -> None:
    folders = write_sweep(tmp_path / "sweep")
    write_examples(folders[0] / "examples.pt")
    files = write_report(load_evaluations(tmp_path / "sweep"), tmp_path / "out", bootstrap=200, cv_repeats=2)

    names = {p.name for p in (tmp_path / "out").iterdir()}
    expected = {"models.csv", "configurations.csv", "correlations.csv", "samples_auroc.csv", "samples_incremental.csv"}
    assert {*expected, "report.md"} <= names
    assert {"robust_accuracy_vs_eps.png", "cams_run0.png"} <= names
    assert any(n.startswith("scatter_clean_neg_homogeneity_vs_worst_8-255") for n in names)
    for path in files.paths:
        assert path.is_file() and path.stat().st_size > 0
    for figure in files.figures:
        assert figure.read_bytes().startswith(PNG_SIGNATURE)
    markdown = files.markdown.read_text()
    for figure in files.figures:
        assert f"]({figure.name})" in markdown
    for table in expected:
        assert f"]({table})" in markdown

    models = pd.read_csv(files.models)
    pd.testing.assert_frame_equal(models, files.report.models, check_dtype=False)
    assert len(pd.read_csv(files.correlations)) == len(files.report.correlations)
    assert len(pd.read_csv(files.samples)) == len(files.report.samples)
    assert len(pd.read_csv(files.incremental)) == len(files.report.incremental)
    assert len(pd.read_csv(files.configurations)) == len(files.report.configurations) == 5


def test_the_reading_names_the_loss_and_says_five_checkpoints_cannot_support_a_claim(tmp_path: Path) -> None:
    write_sweep(tmp_path)  # hnc (runs 3 and 4) has the flattest negative CAMs and the highest robust accuracy
    report = build_report(load_evaluations(tmp_path), bootstrap=200, cv_repeats=2)
    reading = " ".join(report.reading.split())
    assert "hnc has the lowest mean clean_neg_homogeneity" in reading
    assert "a lower clean_neg_homogeneity goes with a higher worst@8/255" in reading
    assert "exact permutation p = 0.017" in reading  # 2/5!: a perfect order of 5 points
    assert "With 5 checkpoints the p-value is exact over all 5! orderings, but no CI is computed below 10" in reading
    assert "is not a cause" in reading


def test_the_reading_follows_the_numbers_when_another_loss_is_lowest(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    table = model_table(load_evaluations(tmp_path))
    table["loss"] = ["ce", "hnc", "focal", "cam_loss", "hnc"]
    table["clean_neg_homogeneity"] = table["clean_neg_homogeneity"][::-1].to_numpy()  # now rising with robustness
    reading = plain_reading(table, model_correlations(table, bootstrap=200), target="worst@8/255")
    assert "ce has the lowest mean clean_neg_homogeneity" in reading
    assert "a lower clean_neg_homogeneity goes with a lower worst@8/255" in reading


def test_the_reading_leads_with_what_the_statistic_adds_to_the_margin(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    report = build_report(load_evaluations(tmp_path), bootstrap=100, cv_repeats=2)
    reading = " ".join(report.reading.split())
    # five checkpoints: medians and ranges over those with enough broken and robust samples
    assert reading.startswith("At pgd@8/255, over the 3 checkpoints (each in the table): clean_neg_homogeneity alone")
    assert "the clean logit margin alone" in reading and "adding the statistic to the margin changes it by" in reading
    assert "2 checkpoints had too few broken or robust samples." in reading


def test_too_few_checkpoints_bring_a_plain_caution(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=3)
    report = build_report(load_evaluations(tmp_path), bootstrap=100, cv_repeats=2)
    reading = " ".join(report.reading.split())
    assert reading.startswith("On run0 at pgd@8/255: fewer than 5 robust samples (4): no cross-validated comparison.")
    assert "On run1 at pgd@8/255, clean_neg_homogeneity alone: AUROC" in reading
    assert "With 3 checkpoints, a correlation across them would not mean anything" in reading
    assert (report.correlations["note"] == "n < 4: not meaningful").all()
    console = _console()
    render_report(report, console)
    text = console.export_text()
    assert "no correlation across checkpoints could be computed (n < 4: not meaningful)" in text


def test_render_report_shows_the_table_the_correlations_the_reading_and_warnings(tmp_path: Path) -> None:
    folders = write_sweep(tmp_path / "sweep")
    records = make_records(clean_stats=sweep_stats(0, set()))
    flag = {"check": "backends_disagree", "message": "4 points"}
    write_folder(tmp_path / "sweep" / "flagged", records, flags=[flag])
    files = write_report(load_evaluations(tmp_path / "sweep"), tmp_path / "out", bootstrap=100, cv_repeats=2)
    console = _console()
    render_report(files, console)
    text = console.export_text()
    for name in ("run0", "run4", "flagged", "worst@8/255", "clean_neg_homogeneity", "95% CI", "margin"):
        assert name in text
    assert "warning: flagged: backends_disagree: 4 points" in text
    assert re.sub(r"\s+", " ", files.report.reading)[:60] in re.sub(r"\s+", " ", text)
    assert f"to {files.out_dir}" in re.sub(r"\s+", " ", text)
    assert len(folders) == 5


def test_evaluations_without_cam_columns_still_give_a_report(tmp_path: Path) -> None:
    write_sweep(tmp_path / "sweep", cam=False)
    files = write_report(load_evaluations(tmp_path / "sweep"), tmp_path / "out", bootstrap=100, cv_repeats=2)
    report = files.report
    assert report.correlations.empty and report.samples.empty
    assert "no negative-CAM statistics" in report.reading
    assert any(w.startswith("none of the evaluations has CAM statistic columns") for w in report.warnings)
    # the synthetic checkpoints were trained at different noise rates: the noise figure stays
    assert [p.name for p in files.figures] == ["robust_accuracy_vs_eps.png", "test_accuracy_vs_noise.png"]
    console = _console()
    render_report(files, console)
    assert "run0" in console.export_text()


def test_a_broken_examples_file_is_a_warning_not_an_error(tmp_path: Path) -> None:
    folders = write_sweep(tmp_path / "sweep", count=4)
    import torch

    torch.save({"labels": torch.arange(2)}, folders[1] / "examples.pt")
    files = write_report(load_evaluations(tmp_path / "sweep"), tmp_path / "out", bootstrap=100, cv_repeats=2)
    assert any(w.startswith("run1: could not draw") and "'images'" in w for w in files.report.warnings)
    assert "could not draw" in files.markdown.read_text()


def test_markdown_table() -> None:
    frame = pd.DataFrame({"name": ["a|b", "c"], "x": [0.123456, float("nan")], "n": [3, 4], "ok": [True, False]})
    assert markdown_table(frame).splitlines() == [
        "| name | x | n | ok |",
        "| --- | ---: | ---: | --- |",
        "| a\\|b | 0.1235 | 3 | yes |",
        "| c |  | 4 | no |",
    ]
    assert markdown_table(frame.iloc[:0]) == "_(no rows)_"
