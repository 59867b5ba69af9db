"""load_evaluations: eval folders, run directories, sweep roots, names, loss and noise, errors, markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustcam.report import find_evaluation_dirs, load_evaluations, noise_text
from robustcam.report.load import UnfinishedEvaluationError

from .synthetic import make_records, write_folder, write_sweep


def test_an_eval_folder_a_run_directory_and_a_sweep_root_are_all_found(tmp_path: Path) -> None:
    folders = write_sweep(tmp_path / "sweep", count=3)
    run = folders[1].parent

    (by_eval,) = load_evaluations([folders[1]])
    (by_run,) = load_evaluations(run)
    assert by_eval.path == folders[1] and by_run.path == folders[1]
    assert by_eval.name == by_run.name == "run1"  # <run>/eval is named after the run

    swept = load_evaluations([tmp_path / "sweep"])
    assert [e.name for e in swept] == ["run0", "run1", "run2"]
    assert [e.path for e in swept] == folders


def test_a_per_sample_file_and_repeated_paths_give_one_evaluation_each(tmp_path: Path) -> None:
    folders = write_sweep(tmp_path, count=2, run_dirs=False)
    evaluations = load_evaluations([folders[0] / "per_sample.csv", folders[0], tmp_path])
    assert [e.name for e in evaluations] == ["eval0", "eval1"]


def test_loss_noise_and_examples_come_from_the_folder(tmp_path: Path) -> None:
    folders = write_sweep(tmp_path, count=2)
    (folders[0] / "examples.pt").write_bytes(b"")
    first, second = load_evaluations(tmp_path)
    assert (first.loss, first.noise, first.examples) == ("ce", "clean", folders[0] / "examples.pt")
    assert (second.loss, second.noise, second.examples) == ("focal", "symmetric 0.4", None)
    assert first.checkpoint_meta["arch"] == "smallcnn"
    assert len(first.cam_statistics) == 6


def test_a_run_config_names_the_loss_when_summary_json_is_missing(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "run" / "eval", make_records(), with_json=False)
    (folder.parent / "config.yaml").write_text("loss:\n  name: hnc\n")
    (evaluation,) = load_evaluations(tmp_path)
    assert (evaluation.loss, evaluation.noise, evaluation.info) == ("hnc", "clean", {})


def test_colliding_names_get_their_parent_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "a" / "seed0" / "eval", make_records())
    write_folder(tmp_path / "b" / "seed0" / "eval", make_records())
    assert [e.name for e in load_evaluations(tmp_path)] == ["a/seed0", "b/seed0"]


def test_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_evaluations(tmp_path / "nowhere")


def test_a_folder_without_an_evaluation_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    with pytest.raises(ValueError) as error:
        find_evaluation_dirs(tmp_path / "empty")
    message = str(error.value)
    assert "per_sample.csv" in message and "eval" in message and "\n" not in message


def test_a_csv_that_is_not_per_sample_records_names_the_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "per_sample.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns index, label"):
        load_evaluations(tmp_path)


def test_no_paths_is_an_error() -> None:
    with pytest.raises(ValueError, match="no paths"):
        load_evaluations([])


@pytest.mark.parametrize(
    ("noise", "text"),
    [
        (None, "clean"),
        ({}, "clean"),
        ({"kind": "symmetric", "rate": 0.4}, "symmetric 0.4"),
        ({"kind": "pairflip", "rate": 0.0}, "clean"),
        ({"kind": "none", "rate": 0.2}, "clean"),
        ({"name": "asymmetric", "rate": 0.25}, "asymmetric 0.25"),
        ({"kind": "human", "variant": "worse_label"}, "human worse_label"),
        ("symmetric 0.2", "symmetric 0.2"),
    ],
)
def test_noise_text(noise: object, text: str) -> None:
    assert noise_text(noise) == text


def test_a_summary_json_with_null_sections_still_loads(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", make_records())
    (folder / "summary.json").write_text('{"config": null, "meta": null, "flags": null}')
    (evaluation,) = load_evaluations(folder)
    assert (evaluation.loss, evaluation.noise, evaluation.flags, evaluation.checkpoint_meta) == (
        "unknown",
        "clean",
        [],
        {},
    )


def test_an_eval_folder_without_its_marker_is_refused_naming_it(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "run" / "eval", make_records(), complete=False)
    with pytest.raises(UnfinishedEvaluationError) as error:
        load_evaluations(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{folder} holds an unfinished evaluation: it has no complete.json")
    assert "run the command that evaluated into it again" in message and "\n" not in message
    assert isinstance(error.value, ValueError)  # callers that caught ValueError still catch it


def test_a_marker_that_evaluate_run_wrote_before_markers_listed_files_is_finished(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "run" / "eval", make_records())
    (folder / "complete.json").write_text('{"eval_digest": "0123456789abcdef"}')
    (evaluation,) = load_evaluations(folder)
    assert evaluation.name == "run"
