"""Sweeps: a grid over config keys, one run directory per cell, resumable anywhere.

Every combination of the grid's values is a *cell* (``grid``) read from a sweep
file (``config``); each cell trains and evaluates in its own directory and writes
a marker last (``store``); an executor from a registry runs the cells that are not
done and yields each one's row as it finishes (``executors``: ``local``,
``processes``, ``ray``). Re-running a sweep skips finished cells and continues the
others where they stopped; ``sweep.csv`` is rebuilt from the markers, in grid
order, whichever executor ran the cells.

Two sweep processes on one folder share the work: each cell runs under its directory's lock,
and a process skips a cell that another one is running (``on_cell_skipped`` says which). A
sweep's report covers the cells of its current grid only (``report_inputs``); folders of an
earlier grid under ``cells/`` are named as stale.

Dependencies point one way: executors use the store and the grid, never the
other way round, and Ray is imported only when the ``ray`` executor runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from robustcam.sweep.config import SweepConfig, SweepReportConfig, load_sweep
from robustcam.sweep.executors import (
    EXECUTORS,
    CellResult,
    Executor,
    ExecutorOptions,
    list_executors,
    register_executor,
    resolve_executor,
)
from robustcam.sweep.grid import Cell, cell_id, expand_grid
from robustcam.sweep.store import (
    CELL_MARKER,
    CELLS_DIR,
    SWEEP_CSV,
    CellBusyError,
    CellRunner,
    CellStatus,
    ReportInputs,
    SkippingRunner,
    aggregate,
    cell_dir,
    cell_row,
    cell_status,
    pending_cells,
    report_inputs,
    run_cell,
    skipped_reason,
    stale_cell_dirs,
)


def run_sweep(
    root: Path,
    cells: Sequence[Cell],
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    on_cell_done: Callable[[Cell, dict[str, Any]], None] | None = None,
    on_cell_skipped: Callable[[Cell, str], None] | None = None,
    runner: CellRunner | None = None,
) -> pd.DataFrame:
    """Run every unfinished cell with the registered ``executor`` and rebuild ``sweep.csv``.

    ``local`` runs cells in this process one after another, or, with ``workers`` > 1, is
    ``processes``: that many spawned processes, one GPU each when there are GPUs; ``ray``
    submits each cell as a Ray task to the cluster at ``address`` (``auto`` for the
    running cluster), writing to ``root`` on shared storage. ``on_cell_done`` is called
    with each cell and its row as soon as the cell finishes. A cell that another process is
    running is skipped, not waited for: ``on_cell_skipped`` gets it and the one-line reason,
    and ``sweep.csv`` has its row once that process has finished it. ``runner`` replaces
    ``run_cell`` (e.g. to show progress); outside this process it must be picklable.
    """
    execute = EXECUTORS.get(resolve_executor(executor, workers))
    options = ExecutorOptions(workers=workers, address=address, runner=SkippingRunner(runner or run_cell))
    for cell, row in execute(root, pending_cells(root, cells), options):
        reason = skipped_reason(row)
        if reason is not None:
            if on_cell_skipped is not None:
                on_cell_skipped(cell, reason)
        elif on_cell_done is not None:
            on_cell_done(cell, row)
    return aggregate(root, cells)


__all__ = [
    "CELLS_DIR",
    "CELL_MARKER",
    "EXECUTORS",
    "SWEEP_CSV",
    "Cell",
    "CellBusyError",
    "CellResult",
    "CellRunner",
    "CellStatus",
    "Executor",
    "ExecutorOptions",
    "ReportInputs",
    "SkippingRunner",
    "SweepConfig",
    "SweepReportConfig",
    "aggregate",
    "cell_dir",
    "cell_id",
    "cell_row",
    "cell_status",
    "expand_grid",
    "list_executors",
    "load_sweep",
    "pending_cells",
    "register_executor",
    "report_inputs",
    "resolve_executor",
    "run_cell",
    "run_sweep",
    "skipped_reason",
    "stale_cell_dirs",
]
