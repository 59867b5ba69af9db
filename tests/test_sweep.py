"""Sweeps: grid expansion, stable cell ids, resumable cells, exact recovery after SIGKILL, Ray, skipping a
cell another process holds, and reports of the current grid only."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from report.synthetic import make_records, write_folder

import robustcam.sweep
from robustcam.errors import ConfigError
from robustcam.io import directory_lock
from robustcam.report import load_evaluations, write_report
from robustcam.sweep import (
    Cell,
    CellBusyError,
    cell_dir,
    cell_status,
    list_executors,
    load_sweep,
    report_inputs,
    run_sweep,
    stale_cell_dirs,
)

SWEEP: dict[str, Any] = {
    "name": "tiny",
    "base": {"model": {"options": {"width": 4}}, "epochs": 2, "batch_size": 128},
    "grid": {"loss.name": ["ce", "hnc"], "noise.kind": ["symmetric"], "noise.rate": [0.2, 0.4]},
    "eval": {"attacks": ["fgsm"], "eps": ["8/255"], "n": 16, "sanity": False},
}


def _write(folder: Path, sweep: dict[str, Any] | None = None, name: str = "sweep.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump({**(sweep or SWEEP), "out": str(folder / "out")}))
    return path


def test_grid_expansion_and_stable_cell_ids(tmp_path: Path) -> None:
    _, cells, out = load_sweep(_write(tmp_path))
    assert len(cells) == 4 and out == tmp_path / "out"
    assert [c.values["loss.name"] for c in cells] == ["ce", "ce", "hnc", "hnc"]
    assert cells[1].train.noise.rate == 0.4 and cells[2].train.loss.name == "hnc"
    _, again, _ = load_sweep(_write(tmp_path / "again"))
    assert [c.cell_id for c in cells] == [c.cell_id for c in again]
    moved = {**SWEEP, "base": {**SWEEP["base"], "device": "cpu"}}  # where it runs is not what it is
    _, placed, _ = load_sweep(_write(tmp_path / "placed", moved))
    assert [c.cell_id for c in cells] == [c.cell_id for c in placed]


def test_a_report_section_declares_primary_hypotheses_and_rejects_unknown_keys(tmp_path: Path) -> None:
    primary = ["clean_neg_peak_max:worst@8/255"]
    sweep, _, _ = load_sweep(_write(tmp_path, {**SWEEP, "report": {"primary": primary}}))
    assert sweep.report.primary == primary
    default, _, _ = load_sweep(_write(tmp_path / "default"))
    assert default.report.primary is None
    with pytest.raises(ConfigError, match="primry"):
        load_sweep(_write(tmp_path / "typo", {**SWEEP, "report": {"primry": primary}}))


def test_a_list_of_grids_is_their_union_and_bad_cells_name_themselves(tmp_path: Path) -> None:
    union = {**SWEEP, "grid": [{"loss.name": ["ce"], "noise.rate": [0.2]}, {"loss.name": ["hnc"], "seed": [1, 2]}]}
    _, cells, _ = load_sweep(
        _write(tmp_path, {**union, "base": {**SWEEP["base"], "noise": {"kind": "symmetric", "rate": 0.1}}})
    )
    assert [c.label for c in cells] == [
        "loss.name=ce, noise.rate=0.2",
        "loss.name=hnc, seed=1",
        "loss.name=hnc, seed=2",
    ]
    bad = {**SWEEP, "grid": {"noise.kind": ["symmetric"], "noise.rate": [1.5]}}
    with pytest.raises(ConfigError, match=r"cell noise.kind=symmetric, noise.rate=1.5.*rate must be in \[0, 1\]"):
        load_sweep(_write(tmp_path / "bad", bad))
    with pytest.raises(ConfigError, match="rate set but noise.kind is none"):
        load_sweep(_write(tmp_path / "none", {**SWEEP, "grid": {"noise.rate": [0.2]}}))


def test_a_finished_sweep_is_not_run_again(tmp_path: Path) -> None:
    sweep_file = _write(tmp_path)
    _, cells, out = load_sweep(sweep_file)
    table = run_sweep(out, cells)
    assert len(table) == 4 and all(cell_status(out, c) == "done" for c in cells)
    assert table["realized_noise_rate"].round(2).tolist() == [0.2, 0.4, 0.2, 0.4]
    assert {"fgsm@8/255", "clean_neg_homogeneity", "memorization"} <= set(table.columns)
    ran: list[Any] = []

    def runner(root: Path, cell: Any) -> dict[str, Any]:
        ran.append(cell)
        return {}

    again = run_sweep(out, cells, runner=runner)
    assert ran == []
    pd.testing.assert_frame_equal(table, again)
    assert pd.read_csv(out / "sweep.csv").shape == table.shape


def test_a_changed_default_backend_evaluates_a_finished_cell_again_without_training_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustcam.attacks.library import PGD

    one = {**SWEEP, "grid": {"loss.name": ["ce"]}, "eval": {**SWEEP["eval"], "attacks": ["pgd"], "steps": 2}}
    _, cells, out = load_sweep(_write(tmp_path, one))
    run_sweep(out, cells)
    folder = cell_dir(out, cells[0])
    assert set(pd.read_csv(folder / "eval" / "per_sample.csv")["backend"]) == {"native"}
    trained = (folder / "model.pt").stat().st_mtime_ns
    # an attack whose default backend is another one (an older or newer robustcam): the same
    # cell id and folder, but the evaluation it resolves to is not the one on disk
    older = {"torchattacks": PGD.builders["torchattacks"], **PGD.builders}
    monkeypatch.setattr(PGD, "builders", older)
    _, again, _ = load_sweep(_write(tmp_path, one))
    assert again[0].cell_id == cells[0].cell_id and cell_status(out, again[0]) == "partial"
    run_sweep(out, again)
    assert cell_status(out, again[0]) == "done"
    assert set(pd.read_csv(folder / "eval" / "per_sample.csv")["backend"]) == {"torchattacks"}
    assert (folder / "model.pt").stat().st_mtime_ns == trained, "the trained run is reused"


def _sweep_command(sweep_file: Path) -> list[str]:
    return [sys.executable, "-m", "robustcam.cli", "sweep", str(sweep_file), "--no-report"]


def test_a_sweep_killed_mid_cell_resumes_to_the_same_sweep_csv(tmp_path: Path) -> None:
    longer = {**SWEEP, "base": {**SWEEP["base"], "epochs": 4}, "grid": {"loss.name": ["ce", "hnc"]}}
    reference_file = _write(tmp_path / "reference", longer)
    killed_file = _write(tmp_path / "killed", longer)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_sweep_command(reference_file), check=True, env=env, capture_output=True)

    _, cells, out = load_sweep(killed_file)
    process = subprocess.Popen(
        _sweep_command(killed_file), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = cell_dir(out, cells[1]) / "train_state.pt"  # the second cell, after its first epoch
    deadline = time.monotonic() + 240
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists(), "the sweep was killed in the middle of the second cell"
    assert cell_status(out, cells[0]) == "done" and cell_status(out, cells[1]) == "partial"

    subprocess.run(_sweep_command(killed_file), check=True, env=env, capture_output=True)
    reference = pd.read_csv(tmp_path / "reference" / "out" / "sweep.csv")
    resumed = pd.read_csv(out / "sweep.csv")
    pd.testing.assert_frame_equal(reference, resumed, check_exact=True)


def test_dry_run_lists_what_is_done_and_left(tmp_path: Path) -> None:
    sweep_file = _write(tmp_path)
    _, cells, out = load_sweep(sweep_file)
    run_sweep(out, cells[:1])
    result = subprocess.run(
        [*_sweep_command(sweep_file), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "1 done, 0 partly done, 3 to do" in result.stdout
    assert not (cell_dir(out, cells[1])).exists()


def test_worker_processes_give_the_same_rows_as_one_process(tmp_path: Path) -> None:
    grid = {**SWEEP, "grid": {"loss.name": ["ce", "hnc"]}}
    _, cells, out = load_sweep(_write(tmp_path / "parallel", grid))
    parallel = run_sweep(out, cells, workers=2)
    _, serial_cells, serial_out = load_sweep(_write(tmp_path / "serial", grid))
    serial = run_sweep(serial_out, serial_cells)
    pd.testing.assert_frame_equal(parallel, serial)


def _gated_runner(root: Path, cell: Cell) -> dict[str, Any]:
    """Cell 0 finishes at once; cell 1 only once the caller has been told that cell 0 is done
    (the release file), or after a minute if it never is (an executor that yields too late)."""
    deadline = time.monotonic() + 60
    while cell.index == 1 and not (root / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"released": (root / "release").exists()}


def test_worker_processes_yield_each_cell_as_it_finishes(tmp_path: Path) -> None:
    _, cells, out = load_sweep(_write(tmp_path, {**SWEEP, "grid": {"loss.name": ["ce", "hnc"]}}))
    out.mkdir(parents=True)
    seen: list[tuple[int, dict[str, Any]]] = []

    def on_cell_done(cell: Cell, row: dict[str, Any]) -> None:
        seen.append((cell.index, row))
        (out / "release").touch()

    run_sweep(out, cells, executor="processes", workers=2, on_cell_done=on_cell_done, runner=_gated_runner)
    # cell 1 could only finish after cell 0 was reported: reported when the pool closed, it would time out
    assert seen == [(0, {"released": False}), (1, {"released": True})]


def test_an_unknown_executor_is_an_error_that_lists_the_registered_ones(tmp_path: Path) -> None:
    assert list_executors() == ["local", "processes", "ray"]
    sweep_file = _write(tmp_path)
    _, cells, out = load_sweep(sweep_file)
    with pytest.raises(
        ValueError, match=r"unknown executor 'proceses' \(did you mean 'processes'\?\); valid: local, processes, ray"
    ):
        run_sweep(out, cells, executor="proceses")
    assert not out.exists()
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [*_sweep_command(sweep_file), "--executor", "threads"], check=False, capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "unknown executor 'threads'; valid: local, processes, ray" in result.stderr
    help_text = subprocess.run(
        [*_sweep_command(sweep_file), "--help"], check=True, capture_output=True, text=True, env=env
    ).stdout
    assert "local, processes, ray" in help_text


def test_importing_the_sweep_package_or_the_command_does_not_import_ray() -> None:
    code = "import sys, robustcam.sweep, robustcam.cli; assert 'ray' not in sys.modules, 'ray was imported'"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_grid_the_config_and_the_store_do_not_import_the_executors() -> None:
    package = Path(robustcam.sweep.__file__).parent
    for module in ("grid.py", "config.py", "store.py"):
        tree = ast.parse((package / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {name for name in imported if name and "executor" in name}, module


requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the Ray executor tests need the ray extra"
)


@requires_ray
def test_ray_executor_on_a_local_instance(tmp_path: Path) -> None:
    import ray

    sweep_file = _write(tmp_path, {**SWEEP, "grid": {"loss.name": ["ce", "hnc"]}})
    _, cells, out = load_sweep(sweep_file)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        table = run_sweep(out, cells, executor="ray")
    finally:
        ray.shutdown()
    assert len(table) == 2 and all(cell_status(out, c) == "done" for c in cells)
    # Ray runs each task with one torch thread (OMP_NUM_THREADS=num_cpus); CPU results are bitwise
    # equal only for equal thread counts, so the local reference uses one thread too.
    local_file = _write(tmp_path / "local", {**SWEEP, "grid": {"loss.name": ["ce", "hnc"]}})
    _, local_cells, local_out = load_sweep(local_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_sweep(local_out, local_cells)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(table, local)


@requires_ray
def test_ray_executor_on_a_head_node_started_with_ray_start(tmp_path: Path) -> None:
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = "6391"
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    try:
        sweep_file = _write(tmp_path, {**SWEEP, "grid": {"loss.name": ["ce"]}})
        result = subprocess.run(
            [*_sweep_command(sweep_file), "--executor", "ray", "--address", f"127.0.0.1:{port}"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        marker = json.loads(next((tmp_path / "out" / "cells").glob("*/cell.json")).read_text())
        assert marker["values"] == {"loss.name": "ce"}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], check=False, env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize(("name", "count"), [("noisy_digits.yaml", 16), ("noisy_cifar10.yaml", 72)])
def test_shipped_sweep_configs_expand_to_the_documented_cells(name: str, count: int) -> None:
    path = Path(__file__).parents[1] / "configs" / name
    _, cells, _ = load_sweep(path)
    assert len(cells) == count
    kinds = {(c.train.noise.kind, c.train.noise.rate) for c in cells}
    assert ("asymmetric", 0.4) in kinds and ("symmetric", 0.2) in kinds
    assert {c.train.loss.name for c in cells} == {"ce", "focal", "cam_loss", "hnc"}


@pytest.mark.parametrize("name", ["hnc_dose_digits.yaml", "hnc_dose_cifar10.yaml"])
def test_shipped_dose_configs_are_six_hnc_weights_by_three_seeds(name: str) -> None:
    path = Path(__file__).parents[1] / "configs" / name
    _, cells, _ = load_sweep(path)
    assert len(cells) == 18
    assert {c.train.loss.name for c in cells} == {"hnc"}
    weights = sorted({c.train.loss.params()["weight"] for c in cells})
    assert weights == [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]
    assert {c.train.seed for c in cells} == {0, 1, 2}
    # every cell attacks the same images with the same matrix: only the weight and the seed vary
    assert len({c.eval.model_dump_json() for c in cells}) == 1
    assert cells[0].eval.attacks == ["fgsm", "pgd", "cw"] and cells[0].eval.eps == ["2/255", "4/255", "8/255"]
    assert cells[0].eval.n == (200 if "digits" in name else 1000)


def _fake_done_cell(root: Path, cell: Cell) -> None:
    """A finished cell without running it: synthetic records and the marker with its id."""
    folder = cell_dir(root, cell)
    write_folder(folder / "eval", make_records(), loss=cell.train.loss.name)
    marker = folder / "eval" / "complete.json"  # as if evaluated with the cell's eval config
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "eval_digest": cell.eval.digest()}))
    (folder / "cell.json").write_text(json.dumps({"cell_id": cell.cell_id, "values": cell.values, "row": {}}))


def test_a_report_covers_the_current_grid_and_names_stale_and_unfinished_cells(tmp_path: Path) -> None:
    _, earlier, out = load_sweep(_write(tmp_path, {**SWEEP, "grid": {"seed": [0, 1, 2]}}, name="earlier.yaml"))
    for cell in earlier:
        _fake_done_cell(out, cell)
    _, current, same_out = load_sweep(_write(tmp_path, {**SWEEP, "grid": {"seed": [0, 1, 3]}}))
    assert same_out == out
    inputs = report_inputs(out, current)
    assert inputs.folders == (cell_dir(out, current[0]) / "eval", cell_dir(out, current[1]) / "eval")
    assert inputs.unfinished == (current[2],)
    assert inputs.stale == (cell_dir(out, earlier[2]),) and stale_cell_dirs(out, current) == [cell_dir(out, earlier[2])]
    stale, unfinished = inputs.warnings
    assert earlier[2].dirname in stale and "no cell of this sweep's grid" in stale
    assert current[2].dirname in unfinished and "run the sweep again" in unfinished
    files = write_report(
        load_evaluations(list(inputs.folders)), tmp_path / "report", warnings=inputs.warnings, bootstrap=0, cv_repeats=1
    )
    assert earlier[2].dirname in files.markdown.read_text()
    assert {e.name for e in files.report.evaluations} == {current[0].dirname, current[1].dirname}


def test_a_cell_another_process_holds_is_skipped_and_the_others_run(tmp_path: Path) -> None:
    _, cells, out = load_sweep(_write(tmp_path, {**SWEEP, "grid": {"loss.name": ["ce", "hnc"]}}))
    held, release = threading.Event(), threading.Event()

    def hold_first_cell() -> None:  # another thread has its own lock, as another process would
        with directory_lock(cell_dir(out, cells[0]), what="sweep cell"):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_first_cell)
    holder.start()
    held.wait(60)
    ran: list[int] = []

    def runner(root: Path, cell: Cell) -> dict[str, Any]:  # what run_cell does first
        with directory_lock(cell_dir(root, cell), what="sweep cell", busy=CellBusyError):
            ran.append(cell.index)
            return {"cell": cell.dirname}

    skipped: list[tuple[int, str]] = []
    try:
        run_sweep(out, cells, runner=runner, on_cell_skipped=lambda cell, why: skipped.append((cell.index, why)))
    finally:
        release.set()
        holder.join()
    assert ran == [1] and [index for index, _ in skipped] == [0]
    assert (
        f"sweep cell {cell_dir(out, cells[0])} is in use by another robustcam process (pid {os.getpid()}"
        in skipped[0][1]
    )
