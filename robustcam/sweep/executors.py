"""Where a sweep's cells run: the executor registry (``local``, ``processes``, ``ray``).

An executor takes the sweep folder, the cells still to run and the sweep's
options, and is an iterator over ``(cell, row)`` that yields each cell's row as
soon as that cell finishes, so callers can report a cell the moment it is done.
Executors order nothing that matters: ``sweep.csv`` is rebuilt from the cells'
markers in grid order (``robustcam.sweep.store``). A new executor is one function
decorated with ``@register_executor("name")``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustcam.registry import Registry
from robustcam.sweep.grid import Cell
from robustcam.sweep.store import CellRunner, run_cell

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

CellResult = tuple[Cell, dict[str, Any]]


@dataclass(frozen=True)
class ExecutorOptions:
    """What an executor may be told besides the cells.

    ``workers``: cells in parallel (``processes``); ``address``: the Ray cluster
    (``auto`` for the running one, None for a new local instance); ``runner``:
    how one cell is run, a module-level function where cells run in other processes.
    """

    workers: int = 1
    address: str | None = None
    runner: CellRunner = run_cell


Executor = Callable[[Path, Sequence[Cell], ExecutorOptions], Iterator[CellResult]]

EXECUTORS: Registry[Executor] = Registry("executor")
register_executor = EXECUTORS.register


def list_executors() -> list[str]:
    return EXECUTORS.names()


def resolve_executor(name: str, workers: int = 1) -> str:
    """The registered executor ``name`` means with ``workers`` workers: ``local`` with several
    workers is ``processes``, as ``--workers N`` meant before executors were a registry."""
    EXECUTORS.get(name)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return "processes" if name == "local" and workers > 1 else name


@register_executor("local")
def run_locally(root: Path, cells: Sequence[Cell], options: ExecutorOptions) -> Iterator[CellResult]:
    """The cells in this process, one after another in grid order."""
    for cell in cells:
        yield cell, options.runner(root, cell)


@register_executor("processes")
def run_in_processes(root: Path, cells: Sequence[Cell], options: ExecutorOptions) -> Iterator[CellResult]:
    """The cells in a pool of ``workers`` spawned processes, each on its own GPU when there are GPUs.

    Spawned, not forked: a forked child inherits a CUDA context it cannot use. When a cell
    fails or the caller stops, cells not yet started are cancelled; running ones finish.
    """
    if not cells:
        return
    context = multiprocessing.get_context("spawn")
    workers = min(options.workers, len(cells))
    slots: Queue[int] = context.Queue()
    for slot in range(workers):
        slots.put(slot)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_take_slot, initargs=(slots,))
    try:
        futures: dict[Future[dict[str, Any]], Cell] = {
            pool.submit(_run_in_worker, root, cell, options.runner): cell for cell in cells
        }
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# which of the pool's workers this process is (set once per worker): its GPU is slot % GPUs,
# so that no two running cells share a GPU while there are at least as many GPUs as workers
_worker_slot = 0


def _take_slot(slots: Queue[int]) -> None:
    global _worker_slot
    _worker_slot = slots.get()


def _run_in_worker(root: Path, cell: Cell, runner: CellRunner) -> dict[str, Any]:
    return runner(root, _placed(cell, _worker_slot))


def _placed(cell: Cell, slot: int) -> Cell:
    import torch

    gpus = torch.cuda.device_count()
    if gpus == 0 or cell.train.device not in ("auto", "cuda"):
        return cell
    return cell.on_device(f"cuda:{slot % gpus}")


@register_executor("ray")
def run_on_ray(root: Path, cells: Sequence[Cell], options: ExecutorOptions) -> Iterator[CellResult]:
    """Each cell a Ray task on the cluster at ``address``; ``root`` must be on shared storage."""
    # imported only when chosen: Ray is an optional extra and slow to import
    from robustcam.sweep.ray_executor import run_cells_on_ray

    yield from run_cells_on_ray(root, cells, options)
