"""The cell store: one run directory per cell under ``<out>/cells``, a marker, ``sweep.csv``.

A cell's directory ``<out>/cells/<values>-<id>`` holds the run
(``robustcam.train``), the evaluation (``eval/``) and, written last and
atomically, ``cell.json`` with the cell's id, its grid values and its row of
``sweep.csv``. A cell whose marker matches its id is done; a directory without
it is partial, and running the cell continues it where it stopped: training
resumes from its last finished epoch and an evaluation is redone only if it has
no marker. A cell killed in the middle therefore loses at most one epoch of work
and never writes a row twice. ``sweep.csv`` is rebuilt from the markers, in grid
order, so it is the same however and in whatever order the cells ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from robustcam.evaluate import EvalProgress
from robustcam.io import atomic_write_text
from robustcam.layout import CELL_MARKER, CELLS_DIR, EVAL_DIR, RUN_COMPLETE, SUMMARY_JSON_FILE, SWEEP_CSV
from robustcam.runs import evaluate_run
from robustcam.sweep.grid import Cell
from robustcam.train import TrainProgress, train

CellStatus = Literal["done", "partial", "todo"]
# how one cell is run: run_cell, or a wrapper of it (progress display); executors that run
# cells in other processes pickle it, so there it must be a module-level function
CellRunner = Callable[[Path, Cell], dict[str, Any]]


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / CELLS_DIR / cell.dirname


def cell_status(root: Path, cell: Cell) -> CellStatus:
    folder = cell_dir(root, cell)
    marker = folder / CELL_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("cell_id") == cell.cell_id:
        return "done"
    return "partial" if folder.exists() else "todo"


def pending_cells(root: Path, cells: Sequence[Cell]) -> list[Cell]:
    """The cells that are not done, in grid order."""
    return [cell for cell in cells if cell_status(root, cell) != "done"]


def finished_row(root: Path, cell: Cell) -> dict[str, Any]:
    """The row a finished cell's marker holds."""
    row: dict[str, Any] = json.loads((cell_dir(root, cell) / CELL_MARKER).read_text())["row"]
    return row


def run_cell(
    root: Path,
    cell: Cell,
    *,
    train_progress: TrainProgress | None = None,
    eval_progress: EvalProgress | None = None,
) -> dict[str, Any]:
    """Train and evaluate one cell (continuing where it stopped) and write its marker; return its row."""
    if cell_status(root, cell) == "done":
        return finished_row(root, cell)
    folder = cell_dir(root, cell)
    train(cell.train, folder, progress=train_progress)
    evaluate_run(folder, cell.eval, progress=eval_progress)
    row = cell_row(folder, cell)
    marker = {"cell_id": cell.cell_id, "values": cell.values, "row": row}
    atomic_write_text(folder / CELL_MARKER, json.dumps(marker, indent=2))
    return row


def cell_row(folder: Path, cell: Cell) -> dict[str, Any]:
    """The cell's ``sweep.csv`` row, from its saved files (no timings: rows must be reproducible)."""
    from robustcam.report import load_evaluation, model_table

    metrics = json.loads((folder / RUN_COMPLETE).read_text())["metrics"]
    row: dict[str, Any] = {"cell": cell.dirname, "cell_id": cell.cell_id, **cell.values}
    row.update(
        {
            "test_acc": metrics["test_acc"],
            "train_acc": metrics["train_acc"],
            "memorization": metrics.get("memorization", float("nan")),
        }
    )
    summary_meta = json.loads((folder / EVAL_DIR / SUMMARY_JSON_FILE).read_text())
    noise = summary_meta["config"].get("checkpoint_meta", {}).get("noise") or {}
    row["realized_noise_rate"] = noise.get("realized_rate", 0.0)
    table = model_table([load_evaluation(folder / EVAL_DIR, name=cell.dirname)])
    skip = {"name", "loss", "noise", "adv_setting"}
    row.update({k: v for k, v in table.iloc[0].items() if k not in skip})
    return {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}  # numpy -> JSON


def aggregate(root: Path, cells: Sequence[Cell]) -> pd.DataFrame:
    """``sweep.csv`` rebuilt from the finished cells' markers, in grid order."""
    table = pd.DataFrame([finished_row(root, cell) for cell in cells if cell_status(root, cell) == "done"])
    atomic_write_text(root / SWEEP_CSV, table.to_csv(index=False))
    return table
