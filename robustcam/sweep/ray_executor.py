"""The ``ray`` executor: each cell is a Ray task; results go to shared storage.

Ray is an optional extra (``pip install -e ".[ray]"``), imported only when this
executor runs. A cell task runs the sweep's cell runner (``run_cell``) on
whichever node Ray places it, with one GPU when the cluster has GPUs, and writes
into the sweep folder, which must be on storage every node sees (the ``--out``
of the sweep).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustcam.errors import RobustcamError
from robustcam.sweep.grid import Cell
from robustcam.sweep.store import CellRunner

if TYPE_CHECKING:
    from robustcam.sweep.executors import CellResult, ExecutorOptions

INSTALL_HINT = 'the ray executor needs Ray: pip install -e ".[ray]" (or pip install "ray[default]")'


def _run_cell_task(root: str, cell: Cell, runner: CellRunner) -> dict[str, Any]:
    return runner(Path(root), cell)


def run_cells_on_ray(root: Path, cells: Sequence[Cell], options: ExecutorOptions) -> Iterator[CellResult]:
    """Submit every cell as a Ray task and yield (cell, row) as they finish."""
    try:
        import ray
    except ImportError:
        raise RobustcamError(INSTALL_HINT) from None
    if not cells:  # a finished sweep needs no cluster
        return
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=2)(_run_cell_task)
        pending = {task.remote(str(root.resolve()), cell, options.runner): cell for cell in cells}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                cell = pending.pop(ref)
                yield cell, ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()
