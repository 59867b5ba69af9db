"""Hostile files: corrupt or planted state files, a full disk, two processes on one directory.

Every corrupt file robustcam reads back (``train_state.pt``, ``train_log.csv``, a run's and an
evaluation's ``complete.json``, ``per_sample.csv``, ``summary.csv``, ``summary.json``, a run's
``config.yaml``, ``cell.json``) is one line that names it and how to recover, and nothing in it
runs; a broken ``examples.pt`` is a warning of the report, which goes on. A write that fails
on a full disk (a 2 MiB tmpfs that the tests mount when they run as root) names the file and
what was kept, and leaves no temporary file. A second process on a run directory stops with
the holder's pid; two sweep processes share the cells; the lock of a killed process is taken
over.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from report.synthetic import make_records, write_folder, write_sweep
from test_checkpoint import _Payload  # a pickle that would run code on load

from robustcam.cli import main
from robustcam.config import TrainConfig, load_train_config
from robustcam.errors import RobustcamError
from robustcam.evaluate import EvalResult, summarize, write_eval
from robustcam.io import (
    CorruptFileError,
    StorageError,
    atomic_torch_save,
    directory_lock,
    lock_holder,
)
from robustcam.report import load_evaluations, write_report
from robustcam.sweep import cell_dir, cell_status, load_sweep, report_inputs, run_cell, run_sweep
from robustcam.train import TrainProgress, train

TRAIN = ["model.options.width=4", "batch_size=128", "epochs=2"]
CLI_TRAIN = ["--epochs", "2", "--batch-size", "128", "--set", "model.options.width=4"]
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}


def _config() -> TrainConfig:
    return load_train_config(None, TRAIN)


def _message(call: Callable[[], object], kind: type[BaseException] = RobustcamError) -> str:
    """The one-line message of the error ``call`` raises."""
    with pytest.raises(kind) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


GARBAGE = random.Random(0).randbytes(512)


def _temporary_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.tmp"))


# --------------------------------------------------------------------------- a run to break


class _StopAfterEpoch(TrainProgress):
    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after its first of two epochs: ``train_state.pt`` of epoch 1."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_config(), out, progress=_StopAfterEpoch())
    return out


@pytest.fixture(scope="module")
def finished(interrupted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(interrupted, out)
    train(_config(), out)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _state(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, weights_only=True)
    return state


def _wrong_shapes(path: Path, flag: Path) -> None:
    state = _state(path)
    name = next(key for key, value in state["model"].items() if value.ndim > 0)
    state["model"][name] = torch.zeros(*(size + 1 for size in state["model"][name].shape))
    torch.save(state, path)


STATE_CASES: list[tuple[str, Callable[[Path, Path], object], str]] = [
    ("a-list", lambda path, flag: torch.save([1, 2, 3], path), "holds a list, not a dict"),
    (
        "truncated-zip",
        lambda path, flag: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        "is not a readable PyTorch file",
    ),
    (
        "pickle-payload",
        lambda path, flag: torch.save({**_state(path), "hook": _Payload(flag)}, path),
        "refused: robustcam loads weights only",
    ),
    ("empty", lambda path, flag: path.write_bytes(b""), "is not a readable PyTorch file"),
    ("garbage", lambda path, flag: path.write_bytes(GARBAGE), "is not a readable PyTorch file"),
    (
        "missing-field",
        lambda path, flag: torch.save({k: v for k, v in _state(path).items() if k != "optimizer"}, path),
        "lacks the field 'optimizer'",
    ),
    (
        "field-of-another-type",
        lambda path, flag: torch.save({**_state(path), "epoch": "one"}, path),
        "has a string as 'epoch'",
    ),
    ("epoch-out-of-range", lambda path, flag: torch.save({**_state(path), "epoch": 99}, path), "at epoch 99 of 2"),
    ("wrong-shapes", _wrong_shapes, "does not fit this run's model (1 size mismatch"),
    (
        "optimizer-of-another-run",
        lambda path, flag: torch.save({**_state(path), "optimizer": {"state": {}, "param_groups": []}}, path),
        "optimizer state that does not fit",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [case[1:] for case in STATE_CASES], ids=[case[0] for case in STATE_CASES]
)
def test_a_corrupt_training_state_is_one_line_naming_it_and_runs_no_code(
    interrupted: Path, tmp_path: Path, mutate: Callable[[Path, Path], object], expected: str
) -> None:
    run = _copy(interrupted, tmp_path)
    state_path, flag = run / "train_state.pt", tmp_path / "flag"
    mutate(state_path, flag)
    message = _message(lambda: train(_config(), run), CorruptFileError)
    assert str(state_path) in message and expected in message, message
    assert f"delete {state_path} to start this run over" in message
    assert not flag.exists(), "loading the state ran code from it"


def test_an_empty_training_state_is_one_line_on_the_command_line_not_aborted(
    interrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(interrupted, tmp_path)
    (run / "train_state.pt").write_bytes(b"")
    code, err = _cli(["train", *CLI_TRAIN, "--out", str(run)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: training state") and "train_state.pt" in lines[0] and "delete" in lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x01binary\x00", "holds binary data"),
        (b"epoch,lr\n1,0.1\n", "lacks the columns loss, train_acc"),
        (b"", "is empty"),
    ],
)
def test_a_corrupt_train_log_on_resume_names_it(
    interrupted: Path, tmp_path: Path, content: bytes, expected: str
) -> None:
    run = _copy(interrupted, tmp_path)
    (run / "train_log.csv").write_bytes(content)
    message = _message(lambda: train(_config(), run), CorruptFileError)
    assert str(run / "train_log.csv") in message and expected in message and "delete" in message, message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"config_digest": "x", "epochs": 2}', "lacks the field 'metrics'"),
        (
            '{"config_digest": "x", "epochs": 2, "metrics": {"test_acc": "high", "train_acc": 1}}',
            "has a string as 'test_acc'",
        ),
    ],
)
def test_a_corrupt_run_marker_names_it(finished: Path, tmp_path: Path, content: str, expected: str) -> None:
    run = _copy(finished, tmp_path)
    (run / "complete.json").write_text(content)
    message = _message(lambda: train(_config(), run), CorruptFileError)
    assert str(run / "complete.json") in message and expected in message, message
    assert "delete" in message and "to train this run again" in message


# --------------------------------------------------------------------------- evaluation folders


def _eval_folder(root: Path, *, with_json: bool = True) -> Path:
    return write_folder(root / "run" / "eval", make_records(n=8), with_json=with_json)


def _replace_column(path: Path, column: str, value: str) -> None:
    frame = pd.read_csv(path)
    frame[column] = value
    frame.to_csv(path, index=False)


EVAL_CASES: list[tuple[str, str, Callable[[Path], object], str]] = [
    (
        "per-sample-binary",
        "per_sample.csv",
        lambda f: f.write_bytes(b"PK\x03\x04\x00\x00" + os.urandom(64)),
        "holds binary data",
    ),
    ("per-sample-empty", "per_sample.csv", lambda f: f.write_bytes(b""), "is empty"),
    (
        "per-sample-columns",
        "per_sample.csv",
        lambda f: f.write_text("index,label\n0,1\n"),
        "is not a robustcam per_sample.csv: it lacks the columns",
    ),
    (
        "per-sample-text-eps",
        "per_sample.csv",
        lambda f: _replace_column(f, "eps", "lots"),
        "not numbers in the columns eps",
    ),
    ("summary-binary", "summary.csv", lambda f: f.write_bytes(b"\x00\xff" * 40), "holds binary data"),
    ("summary-columns", "summary.csv", lambda f: f.write_text("a,b\n1,2\n"), "lacks the columns attack"),
    ("summary-json-garbage", "summary.json", lambda f: f.write_text("{oops"), "is not valid JSON"),
    ("summary-json-list", "summary.json", lambda f: f.write_text("[]"), "holds a JSON list"),
    ("summary-json-binary", "summary.json", lambda f: f.write_bytes(b"\xff\xfe\x00garbage"), "holds binary data"),
    ("marker-garbage", "complete.json", lambda f: f.write_text("done!"), "is not valid JSON"),
    ("marker-list", "complete.json", lambda f: f.write_text('["per_sample.csv"]'), "holds a JSON list"),
    (
        "marker-wrong-fields",
        "complete.json",
        lambda f: f.write_text('{"files": "per_sample.csv", "rows": 8}'),
        "has a string as 'files'",
    ),
    ("marker-missing", "", lambda f: (f / "complete.json").unlink(), "holds an unfinished evaluation"),
    (
        "marker-other-rows",
        "per_sample.csv",
        lambda f: (f.parent / "complete.json").write_text(json.dumps({"files": ["per_sample.csv"], "rows": 3})),
        "the folder mixes two evaluations",
    ),
    ("marker-lists-a-missing-file", "", lambda f: (f / "summary.json").unlink(), "lacks summary.json"),
    ("maxboxacc-binary", "maxboxacc_v2.csv", lambda f: f.write_bytes(b"\x00" * 32), "holds binary data"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "expected"), [case[1:] for case in EVAL_CASES], ids=[case[0] for case in EVAL_CASES]
)
def test_a_corrupt_or_unfinished_evaluation_is_one_line_naming_the_file(
    tmp_path: Path, name: str, mutate: Callable[[Path], object], expected: str
) -> None:
    folder = _eval_folder(tmp_path)
    target = folder / name if name else folder
    mutate(target)
    message = _message(lambda: load_evaluations(tmp_path))
    assert str(target) in message and expected in message, message
    if name != "complete.json":
        assert "run the command that evaluated into it again" in message or "delete" in message, message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"loss: [unclosed\n", "is not valid YAML"),
        (b"- loss\n- hnc\n", "holds a YAML list, not a train config"),
        (b"\xff\xfe\x00\x01", "holds binary data"),
    ],
)
def test_a_corrupt_run_config_is_one_line_naming_it(tmp_path: Path, content: bytes, expected: str) -> None:
    folder = _eval_folder(tmp_path, with_json=False)  # the loss then comes from the run's config.yaml
    (folder.parent / "config.yaml").write_bytes(content)
    message = _message(lambda: load_evaluations(folder))
    assert str(folder.parent / "config.yaml") in message and expected in message, message


def test_report_on_an_unfinished_evaluation_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _eval_folder(tmp_path)
    (folder / "complete.json").unlink()
    code, err = _cli(["report", str(folder), "--out", str(tmp_path / "report")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"{folder} holds an unfinished evaluation" in lines[0]
    assert not (tmp_path / "report" / "report.md").exists()


def _result(rows: int, *, examples: bool) -> EvalResult:
    per_sample = make_records(n=rows)
    payload = {
        "labels": torch.zeros(1, dtype=torch.long),
        "images": torch.zeros(1, 1, 4, 4),
        "cams": torch.zeros(1, 2, 2, 2),
        "adv": {},
    }
    return EvalResult(per_sample, summarize(per_sample), examples=payload if examples else None)


def test_an_eval_into_a_folder_of_another_eval_replaces_it_as_a_whole(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    write_eval(_result(8, examples=True), folder)
    (folder / "maxboxacc_v2.csv").write_text("example\n0\n")  # as if the first eval had boxes
    write_eval(_result(12, examples=False), folder)
    names = {p.name for p in folder.iterdir()}
    assert names == {"per_sample.csv", "summary.csv", "summary.json", "complete.json", ".lock"}, names
    marker = json.loads((folder / "complete.json").read_text())
    assert marker == {"files": ["per_sample.csv", "summary.csv", "summary.json"], "rows": 12 * 2}  # 2 eps
    (evaluation,) = load_evaluations(folder)
    assert evaluation.per_sample["index"].nunique() == 12 and evaluation.examples is None


def _bad_examples(path: Path, kind: str, flag: Path) -> None:
    good = {"labels": torch.tensor([0, 1]), "images": torch.rand(2, 1, 8, 8), "cams": torch.rand(2, 2, 2, 2)}
    payloads: dict[str, object] = {
        "a-list": [torch.zeros(1)],
        "pickle-payload": {**good, "hook": _Payload(flag)},
        "missing-cams": {k: v for k, v in good.items() if k != "cams"},
        "labels-out-of-range": {**good, "labels": torch.tensor([0, 7])},
    }
    if kind == "garbage":
        path.write_bytes(GARBAGE)
    else:
        torch.save(payloads[kind], path)


def test_broken_examples_files_are_report_warnings_naming_them_and_the_report_goes_on(tmp_path: Path) -> None:
    kinds = ["garbage", "a-list", "pickle-payload", "missing-cams", "labels-out-of-range"]
    folders = write_sweep(tmp_path / "sweep", count=len(kinds))
    flag = tmp_path / "flag"
    for folder, kind in zip(folders, kinds):
        _bad_examples(folder / "examples.pt", kind, flag)
    files = write_report(load_evaluations(tmp_path / "sweep"), tmp_path / "report", bootstrap=0, cv_repeats=1)
    assert files.markdown.is_file()
    warnings = "\n".join(files.report.warnings)
    for folder in folders:
        assert f"examples file {folder / 'examples.pt'}" in warnings
    assert "refused: robustcam loads weights only" in warnings and "holds a list" in warnings
    assert "is missing 'cams'" in warnings and "labels outside the 2 classes" in warnings
    assert not flag.exists(), "reading examples.pt ran code from it"


# --------------------------------------------------------------------------- sweep cells

SWEEP: dict[str, Any] = {
    "name": "hostile",
    "base": {"model": {"options": {"width": 4}}, "epochs": 2, "batch_size": 128},
    "grid": {"loss.name": ["ce", "focal"]},
    "eval": {"attacks": ["fgsm"], "eps": ["8/255"], "n": 16, "sanity": False},
}


def _sweep_file(folder: Path, sweep: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**(sweep or SWEEP), "out": str(folder / "out")}))
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("}{", "is not valid JSON"),
        ("[]", "holds a JSON list, not an object"),
        ('{"cell_id": "x", "values": {}}', "lacks the field 'row'"),
        ('{"cell_id": 7, "values": {}, "row": {}}', "has a number as 'cell_id'"),
        ('{"cell_id": "x", "values": {}, "row": [1]}', "has a list as 'row'"),
    ],
)
def test_a_corrupt_cell_marker_is_one_line_naming_it(tmp_path: Path, content: str, expected: str) -> None:
    _, cells, out = load_sweep(_sweep_file(tmp_path))
    marker = cell_dir(out, cells[0]) / "cell.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(content)
    message = _message(lambda: cell_status(out, cells[0]), CorruptFileError)
    assert str(marker) in message and expected in message and f"delete {marker}" in message, message


def test_a_corrupt_cell_marker_stops_a_dry_run_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_file = _sweep_file(tmp_path)
    _, cells, out = load_sweep(sweep_file)
    marker = cell_dir(out, cells[1]) / "cell.json"
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"\x00\x01")
    code, err = _cli(["sweep", str(sweep_file), "--dry-run"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and str(marker) in err, err


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test (root only) and unmounted after it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the full-disk tests mount a 2 MiB tmpfs, which needs root; run them as root to check them")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs failed (a container without CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _fill(disk: Path) -> Path:
    """Write zeros until the disk is full; returns the filler to delete."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:  # unbuffered: closing it has nothing left to write
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


class _FillAfterEpoch(TrainProgress):
    def __init__(self, disk: Path) -> None:
        self.disk = disk

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if row["epoch"] == 1:
            _fill(self.disk)


def test_training_into_a_full_disk_names_the_file_keeps_the_last_epoch_and_resumes(small_disk: Path) -> None:
    run = small_disk / "run"
    message = _message(lambda: train(_config(), run, progress=_FillAfterEpoch(small_disk)), StorageError)
    assert message.startswith(f"could not write {run}/"), message
    assert "No space left on device (ENOSPC)" in message
    assert "train_state.pt of epoch 1 is intact; free space and run the same command to resume" in message
    assert _temporary_files(small_disk) == []
    (small_disk / "filler").unlink()
    result = train(_config(), run)
    assert result.resumed_from_epoch == 1 and (run / "complete.json").is_file()


def test_an_eval_into_a_full_disk_names_the_file_and_leaves_no_marker(small_disk: Path) -> None:
    folder = small_disk / "eval"
    folder.mkdir()  # a full tmpfs may not even have room for a folder
    _fill(small_disk)
    message = _message(lambda: write_eval(_result(40, examples=True), folder), StorageError)
    assert f"could not write {folder / 'per_sample.csv'}: No space left on device" in message, message
    assert "has no complete.json, so it reads as unfinished" in message
    assert not (folder / "complete.json").exists() and _temporary_files(small_disk) == []


def test_torch_save_into_a_full_disk_keeps_the_old_file(small_disk: Path) -> None:
    path = small_disk / "state.pt"
    atomic_torch_save({"x": torch.zeros(10)}, path)
    message = _message(lambda: atomic_torch_save({"x": torch.zeros(1_000_000)}, path), StorageError)
    assert f"could not write {path}: No space left on device (ENOSPC)" in message, message
    assert "any earlier version of it is intact" in message
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.zeros(10))
    assert _temporary_files(small_disk) == []


def test_a_report_into_a_full_disk_names_the_file(small_disk: Path, tmp_path: Path) -> None:
    evaluations = load_evaluations(write_sweep(tmp_path / "sweep", count=3))
    (small_disk / "report").mkdir()  # a full tmpfs may not even have room for a folder
    _fill(small_disk)
    message = _message(
        lambda: write_report(evaluations, small_disk / "report", bootstrap=0, cv_repeats=1), StorageError
    )
    assert f"could not write {small_disk / 'report'}" in message and "ENOSPC" in message, message
    assert _temporary_files(small_disk) == []


# --------------------------------------------------------------------------- two processes

STALL_TRAIN = """
import sys, time
from pathlib import Path
from robustcam.config import load_train_config
from robustcam.train import TrainProgress, train

class Stall(TrainProgress):
    def on_epoch_end(self, row):
        if row["epoch"] == 1:
            Path(sys.argv[2]).touch()
            time.sleep(600)

train(load_train_config(None, sys.argv[3:]), sys.argv[1], progress=Stall())
"""


def _wait_for(path: Path, process: subprocess.Popen[Any], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"the other process never got there (exit code {process.poll()})"


def test_a_second_train_on_a_run_directory_stops_naming_the_holder_and_a_killed_holder_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, run, stalled = tmp_path / "stall.py", tmp_path / "run", tmp_path / "stalled"
    script.write_text(STALL_TRAIN)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(run), str(stalled), *TRAIN],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(stalled, holder)  # epoch 1 is saved and the holder sits in its lock
        code, err = _cli(["train", *CLI_TRAIN, "--out", str(run)], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert f"run directory {run} is in use by another robustcam process (pid {holder.pid} on " in lines[0]
        assert "wait for it to finish, or choose another --out" in lines[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / ".lock").exists() and (run / ".lock.json").exists(), "the killed holder left its lock files"
    result = train(_config(), run)  # the dead process's lock is free: this one resumes its run
    assert result.resumed_from_epoch == 1 and (run / "complete.json").is_file()


def test_a_lock_file_without_a_live_holder_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("")
    (folder / ".lock.json").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "yesterday"}))
    with directory_lock(folder, what="run directory"):
        assert lock_holder(folder).startswith(f"pid {os.getpid()} on ")
        with directory_lock(folder, what="run directory"):  # re-entrant in one thread
            pass
    assert not (folder / ".lock.json").exists()


STALL_SWEEP = """
import json, os, sys, time
from pathlib import Path
from robustcam.sweep import cell_dir, load_sweep, run_cell, run_sweep
from robustcam.train import TrainProgress

class Record(TrainProgress):
    def __init__(self, folder, stall):
        self.folder, self.stall = folder, stall

    def on_start(self, **kwargs):
        (self.folder / f"trained_by_{os.getpid()}").touch()

    def on_epoch_end(self, row):
        release = Path(sys.argv[2]) / "release"
        if self.stall and row["epoch"] == 1:
            (Path(sys.argv[2]) / "stalled").touch()
            while not release.exists():
                time.sleep(0.05)

def runner(root, cell):
    return run_cell(root, cell, train_progress=Record(cell_dir(root, cell), stall=cell.index == 0))

_, cells, out = load_sweep(sys.argv[1])
done, skipped = [], []
run_sweep(out, cells, runner=runner, on_cell_done=lambda c, r: done.append(c.dirname),
          on_cell_skipped=lambda c, why: skipped.append(c.dirname))
print(json.dumps({"done": done, "skipped": skipped}))
"""


def _recording_runner(root: Path, cell: Any) -> dict[str, Any]:
    class Record(TrainProgress):
        def on_start(self, **kwargs: Any) -> None:
            (cell_dir(root, cell) / f"trained_by_{os.getpid()}").touch()

    return run_cell(root, cell, train_progress=Record())


def test_two_sweep_processes_share_the_cells_and_each_says_what_it_skipped(tmp_path: Path) -> None:
    sweep_file, script = _sweep_file(tmp_path), tmp_path / "sweep_process.py"
    script.write_text(STALL_SWEEP)
    _, cells, out = load_sweep(sweep_file)
    other = subprocess.Popen(
        [sys.executable, str(script), str(sweep_file), str(tmp_path)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(tmp_path / "stalled", other)  # the other process holds cell 0, after its first epoch
        skipped: list[tuple[str, str]] = []
        table = run_sweep(
            out, cells, runner=_recording_runner, on_cell_skipped=lambda cell, why: skipped.append((cell.dirname, why))
        )
        (tmp_path / "release").touch()
        stdout, stderr = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, stderr[-2000:]
    assert [name for name, _ in skipped] == [cells[0].dirname]
    assert (
        f"sweep cell {cell_dir(out, cells[0])} is in use by another robustcam process (pid {other.pid}" in skipped[0][1]
    )
    assert list(table["cell"]) == [cells[1].dirname], "this process's sweep.csv has the cell it ran"
    reported = json.loads(stdout.strip().splitlines()[-1])
    assert reported == {"done": [c.dirname for c in cells], "skipped": []}, "cell 1 was found done, not redone"
    trainers = {c.dirname: sorted(p.name for p in cell_dir(out, c).glob("trained_by_*")) for c in cells}
    assert trainers == {cells[0].dirname: [f"trained_by_{other.pid}"], cells[1].dirname: [f"trained_by_{os.getpid()}"]}
    assert all(cell_status(out, c) == "done" for c in cells)
    assert list(pd.read_csv(out / "sweep.csv")["cell"]) == [c.dirname for c in cells]
    assert [p.name for p in report_inputs(out, cells).folders] == ["eval", "eval"]
