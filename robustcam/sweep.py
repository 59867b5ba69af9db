"""Sweeps: a grid over config keys, one run directory per cell, resumable anywhere.

A sweep YAML holds a ``base`` train config (inline, or a path relative to the
sweep file), a ``grid`` of dotted config keys and their values (``loss.name``,
``noise.kind``, ``noise.rate``, ``seed``, ``model.arch``, ... and ``eval.*`` for
the evaluation), and an ``eval`` section. Every combination is a *cell*:

- its resolved train and eval configs give it a stable id (a hash that ignores
  where it runs: device and loader workers);
- its directory ``<out>/cells/<values>-<id>`` holds the run (``robustcam.train``),
  the evaluation (``eval/``) and, written last and atomically, ``cell.json`` with
  the cell's row of ``sweep.csv``.

Re-running a sweep skips cells whose ``cell.json`` matches their id and
continues the others where they stopped: training resumes from its last
finished epoch and an evaluation is redone only if it has no marker. A cell
killed in the middle therefore loses at most one epoch of work and never writes
a row twice. ``sweep.csv`` is rebuilt from the cells' markers, in grid order.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from robustcam.config import (
    EvalConfig,
    StrictModel,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    read_yaml,
    validate_config,
)
from robustcam.errors import ConfigError
from robustcam.evaluate import EvalProgress
from robustcam.io import atomic_write_text
from robustcam.runs import EVAL_DIR, evaluate_run
from robustcam.train import TrainProgress, train

CELLS_DIR = "cells"
CELL_MARKER = "cell.json"
SWEEP_CSV = "sweep.csv"
# settings that say where a cell runs, not what it computes: they do not change its id
_PLACEMENT_KEYS = ("device", "num_workers")

CellStatus = Literal["done", "partial", "todo"]


class SweepReportConfig(StrictModel):
    """How the sweep's report reads its cells."""

    primary: list[str] | None = Field(
        None, description="primary hypotheses as statistic:target (default: the report's own default)"
    )


class SweepConfig(StrictModel):
    """A sweep file: ``base`` train config, ``grid`` of dotted keys, ``eval`` and ``report`` sections."""

    name: str | None = None
    base: dict[str, Any] | str = Field(default_factory=dict, description="train config, or a path to one")
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = Field(
        default_factory=dict, description="dotted key -> values; a list of such grids is their union"
    )
    eval: dict[str, Any] = Field(default_factory=dict, description="eval config (see robustcam eval)")
    out: str | None = Field(None, description="sweep folder (default runs/<sweep file name>)")
    report: SweepReportConfig = Field(default_factory=SweepReportConfig, description="report settings")


@dataclass(frozen=True)
class Cell:
    """One combination of grid values with its resolved configs."""

    index: int
    values: dict[str, Any]
    train: TrainConfig
    eval: EvalConfig
    cell_id: str

    @property
    def dirname(self) -> str:
        text = "_".join(str(v) for v in self.values.values()) or "base"
        return f"{re.sub(r'[^A-Za-z0-9.=+-]+', '-', text)}-{self.cell_id[:8]}"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items()) or "base"


def cell_id(train_config: TrainConfig, eval_config: EvalConfig) -> str:
    train_part = {k: v for k, v in config_to_dict(train_config).items() if k not in _PLACEMENT_KEYS}
    eval_part = {k: v for k, v in config_to_dict(eval_config).items() if k != "device"}
    payload = json.dumps({"train": train_part, "eval": eval_part}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_sweep(path: str | Path) -> tuple[SweepConfig, list[Cell], Path]:
    """Read a sweep file; return its config, its cells in grid order, and its output folder."""
    file = Path(path)
    sweep: SweepConfig = validate_config(SweepConfig, read_yaml(file), source=str(file))
    base = sweep.base
    if isinstance(base, str):
        base_path = (file.parent / base) if not Path(base).is_absolute() else Path(base)
        base = read_yaml(base_path if base_path.exists() else Path(base))
    cells = expand_grid(base, sweep.grid, sweep.eval, source=str(file))
    out = Path(sweep.out) if sweep.out else Path("runs") / (sweep.name or file.stem)
    return sweep, cells, out


def expand_grid(
    base: dict[str, Any],
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]],
    eval_raw: dict[str, Any],
    *,
    source: str = "sweep",
) -> list[Cell]:
    """Every combination of each grid's values applied to ``base`` (train keys) and ``eval_raw``
    (``eval.*`` keys); a list of grids gives the union of their combinations, in order."""
    grids = grid if isinstance(grid, list) else [grid]
    combinations: list[dict[str, Any]] = []
    for part in grids:
        for key, choices in part.items():
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{source}: grid.{key} must be a non-empty list of values")
        keys = list(part)
        combinations += [dict(zip(keys, combo)) for combo in itertools.product(*(part[k] for k in keys))]
    cells = []
    for index, values in enumerate(combinations):
        train_raw, eval_config_raw = copy.deepcopy(base), copy.deepcopy(eval_raw)
        apply_overrides(train_raw, [(k.split("."), v) for k, v in values.items() if not k.startswith("eval.")])
        apply_overrides(eval_config_raw, [(k.split(".")[1:], v) for k, v in values.items() if k.startswith("eval.")])
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        train_config: TrainConfig = validate_config(TrainConfig, train_raw, source=f"{source} (cell {label})")
        eval_config: EvalConfig = validate_config(EvalConfig, eval_config_raw, source=f"{source} (cell {label}, eval)")
        cells.append(Cell(index, values, train_config, eval_config, cell_id(train_config, eval_config)))
    ids = [cell.cell_id for cell in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: the grid has duplicate cells (a value listed twice?)")
    return cells


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / CELLS_DIR / cell.dirname


def cell_status(root: Path, cell: Cell) -> CellStatus:
    folder = cell_dir(root, cell)
    marker = folder / CELL_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("cell_id") == cell.cell_id:
        return "done"
    return "partial" if folder.exists() else "todo"


def run_cell(
    root: Path,
    cell: Cell,
    *,
    train_progress: TrainProgress | None = None,
    eval_progress: EvalProgress | None = None,
) -> dict[str, Any]:
    """Train and evaluate one cell (continuing where it stopped) and write its marker; return its row."""
    folder = cell_dir(root, cell)
    if cell_status(root, cell) == "done":
        row: dict[str, Any] = json.loads((folder / CELL_MARKER).read_text())["row"]
        return row
    train(cell.train, folder, progress=train_progress)
    evaluate_run(folder, cell.eval, progress=eval_progress)
    row = cell_row(folder, cell)
    marker = {"cell_id": cell.cell_id, "values": cell.values, "row": row}
    atomic_write_text(folder / CELL_MARKER, json.dumps(marker, indent=2))
    return row


def cell_row(folder: Path, cell: Cell) -> dict[str, Any]:
    """The cell's ``sweep.csv`` row, from its saved files (no timings: rows must be reproducible)."""
    from robustcam.report import load_evaluation, model_table

    complete = json.loads((folder / "complete.json").read_text())
    metrics = complete["metrics"]
    row: dict[str, Any] = {"cell": cell.dirname, "cell_id": cell.cell_id, **cell.values}
    row.update({
        "test_acc": metrics["test_acc"], "train_acc": metrics["train_acc"],
        "memorization": metrics.get("memorization", float("nan")),
    })  # fmt: skip
    summary_meta = json.loads((folder / EVAL_DIR / "summary.json").read_text())
    noise = summary_meta["config"].get("checkpoint_meta", {}).get("noise") or {}
    row["realized_noise_rate"] = noise.get("realized_rate", 0.0)
    table = model_table([load_evaluation(folder / EVAL_DIR, name=cell.dirname)])
    skip = {"name", "loss", "noise", "adv_setting"}
    row.update({k: v for k, v in table.iloc[0].items() if k not in skip})
    return {key: value.item() if hasattr(value, "item") else value for key, value in row.items()}  # numpy -> JSON


def aggregate(root: Path, cells: Sequence[Cell]) -> pd.DataFrame:
    """``sweep.csv`` rebuilt from the finished cells' markers, in grid order."""
    rows = []
    for cell in cells:
        if cell_status(root, cell) == "done":
            rows.append(json.loads((cell_dir(root, cell) / CELL_MARKER).read_text())["row"])
    table = pd.DataFrame(rows)
    atomic_write_text(root / SWEEP_CSV, table.to_csv(index=False))
    return table


CellRunner = Callable[[Path, Cell], dict[str, Any]]


def run_sweep(
    root: Path,
    cells: Sequence[Cell],
    *,
    executor: Literal["local", "ray"] = "local",
    workers: int = 1,
    address: str | None = None,
    on_cell_done: Callable[[Cell, dict[str, Any]], None] | None = None,
    runner: CellRunner | None = None,
) -> pd.DataFrame:
    """Run every unfinished cell and rebuild ``sweep.csv``.

    ``local`` runs cells in this process one after another (``runner`` may add
    progress display), or in ``workers`` processes (one GPU each when there are
    GPUs); ``ray`` submits each cell as a Ray task to the cluster at ``address``
    (``auto`` for the running cluster), writing to ``root`` on shared storage.
    """
    pending = [cell for cell in cells if cell_status(root, cell) != "done"]
    done = on_cell_done or (lambda cell, row: None)
    if executor == "ray":
        from robustcam.sweep_ray import run_on_ray

        for cell, row in run_on_ray(root, pending, address=address):
            done(cell, row)
    elif workers > 1:
        for cell, row in _run_in_processes(root, pending, workers):
            done(cell, row)
    else:
        for cell in pending:
            done(cell, (runner or run_cell)(root, cell))
    return aggregate(root, cells)


def _placed(cell: Cell, slot: int) -> Cell:
    import torch

    gpus = torch.cuda.device_count()
    if gpus == 0 or cell.train.device not in ("auto", "cuda"):
        return cell
    device = f"cuda:{slot % gpus}"
    train_config = cell.train.model_copy(update={"device": device})
    eval_config = cell.eval.model_copy(update={"device": device})
    return Cell(cell.index, cell.values, train_config, eval_config, cell.cell_id)


def _run_in_processes(root: Path, cells: Sequence[Cell], workers: int) -> list[tuple[Cell, dict[str, Any]]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_cell, root, _placed(cell, i)): cell for i, cell in enumerate(cells)}
        for future in as_completed(futures):
            results.append((futures[future], future.result()))
    return results
