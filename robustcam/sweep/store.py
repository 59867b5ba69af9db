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

A cell is run under its directory's lock: a second sweep process on the same folder skips
the cells the first one is running (``CellBusyError``) and runs the others, so two processes
share the work. Folders under ``cells/`` that are no cell of the current grid (an earlier
grid's) are stale: ``report_inputs`` leaves them out of the report and names them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from robustcam.evaluate import EvalProgress
from robustcam.io import (
    DirectoryBusyError,
    StorageError,
    atomic_write_text,
    directory_lock,
    read_json_object,
    require_fields,
)
from robustcam.layout import CELL_MARKER, CELLS_DIR, EVAL_DIR, SUMMARY_JSON_FILE, SWEEP_CSV
from robustcam.runs import evaluate_run, finished_eval
from robustcam.sweep.grid import Cell
from robustcam.train import TrainProgress, read_run_marker, train

CellStatus = Literal["done", "partial", "todo"]
# how one cell is run: run_cell, or a wrapper of it (progress display); executors that run
# cells in other processes pickle it, so there it must be a module-level function
CellRunner = Callable[[Path, Cell], dict[str, Any]]
# the key of the row a SkippingRunner returns for a cell another process holds
SKIPPED = "__skipped__"
MAX_LISTED = 5  # folder names a warning lists before it counts the rest
_CELL_FIELDS: dict[str, type | tuple[type, ...]] = {"cell_id": str, "values": dict, "row": dict}
# sweep.csv is rewritten by whichever process finishes; the other waits this long for its turn
_AGGREGATE_WAIT_S = 120.0


class CellBusyError(DirectoryBusyError):
    """Another live process is running this cell."""


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / CELLS_DIR / cell.dirname


def read_cell_marker(folder: Path) -> dict[str, Any]:
    """``cell.json``, checked: the cell's id, its grid values and its row."""
    marker = folder / CELL_MARKER
    recover = f"delete {marker} and run the sweep again (the cell's finished run and evaluation are reused)"
    info = read_json_object(marker, recover=recover)
    require_fields(marker, info, _CELL_FIELDS, recover=recover)
    return info


def cell_status(root: Path, cell: Cell) -> CellStatus:
    """``done`` when the cell's marker has its id and its evaluation is the one the eval config
    now resolves to (an attack whose default backend changed is evaluated again; the trained
    run is reused), ``partial`` when its folder exists, else ``todo``."""
    folder = cell_dir(root, cell)
    marker = folder / CELL_MARKER
    if marker.is_file() and read_cell_marker(folder)["cell_id"] == cell.cell_id and finished_eval(folder, cell.eval):
        return "done"
    return "partial" if folder.exists() else "todo"


def pending_cells(root: Path, cells: Sequence[Cell]) -> list[Cell]:
    """The cells that are not done, in grid order."""
    return [cell for cell in cells if cell_status(root, cell) != "done"]


def finished_row(root: Path, cell: Cell) -> dict[str, Any]:
    """The row a finished cell's marker holds."""
    row: dict[str, Any] = read_cell_marker(cell_dir(root, cell))["row"]
    return row


def run_cell(
    root: Path,
    cell: Cell,
    *,
    train_progress: TrainProgress | None = None,
    eval_progress: EvalProgress | None = None,
) -> dict[str, Any]:
    """Train and evaluate one cell (continuing where it stopped) and write its marker; return its row.

    Raises:
        CellBusyError: another live process is running the cell.
    """
    folder = cell_dir(root, cell)
    hint = "it is skipped here: that process finishes it, and the next run of the sweep reports it"
    with directory_lock(folder, what="sweep cell", hint=hint, busy=CellBusyError):
        if cell_status(root, cell) == "done":  # finished by another process since the sweep looked
            return finished_row(root, cell)
        train(cell.train, folder, progress=train_progress)
        evaluate_run(folder, cell.eval, progress=eval_progress)
        row = cell_row(folder, cell)
        marker = {"cell_id": cell.cell_id, "values": cell.values, "row": row}
        try:
            atomic_write_text(folder / CELL_MARKER, json.dumps(marker, indent=2))
        except StorageError as error:
            raise error.keeping(
                "the cell's run and evaluation are intact; free space and run the sweep again "
                "(only the marker is written)"
            ) from error
    return row


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def cell_row(folder: Path, cell: Cell) -> dict[str, Any]:
    """The cell's ``sweep.csv`` row, from its saved files (no timings: rows must be reproducible)."""
    from robustcam.report import load_evaluation, model_table

    metrics = read_run_marker(folder)["metrics"]
    row: dict[str, Any] = {"cell": cell.dirname, "cell_id": cell.cell_id, **cell.values}
    row.update(
        {
            "test_acc": metrics["test_acc"],
            "train_acc": metrics["train_acc"],
            "memorization": metrics.get("memorization", float("nan")),
        }
    )
    summary_path = folder / EVAL_DIR / SUMMARY_JSON_FILE
    summary_meta = read_json_object(summary_path, recover=f"delete {folder / EVAL_DIR} and run the sweep again")
    noise = _mapping(_mapping(_mapping(summary_meta.get("config")).get("checkpoint_meta")).get("noise"))
    row["realized_noise_rate"] = noise.get("realized_rate", 0.0)
    table = model_table([load_evaluation(folder / EVAL_DIR, name=cell.dirname)])
    skip = {"name", "loss", "noise", "adv_setting"}
    row.update({k: v for k, v in table.iloc[0].items() if k not in skip})
    return {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}  # numpy -> JSON


def aggregate(root: Path, cells: Sequence[Cell]) -> pd.DataFrame:
    """``sweep.csv`` rebuilt from the finished cells' markers, in grid order."""
    # under the sweep folder's lock: two sweep processes finishing together each rebuild it
    with directory_lock(root, what="sweep folder", wait_s=_AGGREGATE_WAIT_S):
        table = pd.DataFrame([finished_row(root, cell) for cell in cells if cell_status(root, cell) == "done"])
        try:
            atomic_write_text(root / SWEEP_CSV, table.to_csv(index=False))
        except StorageError as error:
            raise error.keeping(
                "every finished cell's marker is intact; free space and run the sweep again to rebuild it"
            ) from error
    return table


# --------------------------------------------------------------------------- two processes, one sweep


@dataclass(frozen=True)
class SkippingRunner:
    """A cell runner that returns ``{SKIPPED: reason}`` for a cell another process is running,
    instead of failing the sweep. Picklable when its runner is (worker processes, Ray)."""

    runner: CellRunner

    def __call__(self, root: Path, cell: Cell) -> dict[str, Any]:
        try:
            return self.runner(root, cell)
        except CellBusyError as error:
            return {SKIPPED: str(error)}


def skipped_reason(row: dict[str, Any]) -> str | None:
    """Why a cell was skipped, for a row a ``SkippingRunner`` returned (else None)."""
    reason = row.get(SKIPPED)
    return str(reason) if reason is not None else None


# --------------------------------------------------------------------------- what the report reads


@dataclass(frozen=True)
class ReportInputs:
    """What a sweep's report covers: the evaluations of the current grid's finished cells, in
    grid order, and what it leaves out (unfinished cells, stale folders of another grid)."""

    root: Path
    folders: tuple[Path, ...]
    unfinished: tuple[Cell, ...]
    stale: tuple[Path, ...]

    @property
    def warnings(self) -> list[str]:
        """One line per kind of folder the report leaves out, naming them."""
        lines = []
        if self.stale:
            lines.append(
                f"{len(self.stale)} folder(s) in {self.root / CELLS_DIR} are no cell of this sweep's grid "
                f"(an earlier grid's?) and are left out: {_listed([p.name for p in self.stale])}; delete "
                "them, or report them with their own sweep file"
            )
        if self.unfinished:
            lines.append(
                f"{len(self.unfinished)} cell(s) of this grid are not finished and are left out: "
                f"{_listed([c.dirname for c in self.unfinished])}; run the sweep again to finish them"
            )
        return lines


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def stale_cell_dirs(root: Path, cells: Sequence[Cell]) -> list[Path]:
    """Folders under ``<root>/cells`` that are no cell of ``cells`` (sorted)."""
    current = {cell.dirname for cell in cells}
    folder = root / CELLS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in current)


def report_inputs(root: Path, cells: Sequence[Cell]) -> ReportInputs:
    """The eval folders of the finished cells of ``cells`` and what a report leaves out."""
    done = [cell for cell in cells if cell_status(root, cell) == "done"]
    finished = {cell.cell_id for cell in done}
    unfinished = tuple(cell for cell in cells if cell.cell_id not in finished)
    folders = tuple(cell_dir(root, cell) / EVAL_DIR for cell in done)
    return ReportInputs(root, folders, unfinished, tuple(stale_cell_dirs(root, cells)))


__all__ = [
    "SKIPPED",
    "CellBusyError",
    "CellRunner",
    "CellStatus",
    "ReportInputs",
    "SkippingRunner",
    "aggregate",
    "cell_dir",
    "cell_row",
    "cell_status",
    "finished_row",
    "pending_cells",
    "read_cell_marker",
    "report_inputs",
    "run_cell",
    "skipped_reason",
    "stale_cell_dirs",
]
