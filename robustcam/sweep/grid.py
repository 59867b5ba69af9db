"""A sweep's grid: every combination of the grid's values is a cell with resolved configs.

A cell's id is a hash of its resolved train and eval configs that ignores where it
runs (device, loader workers), so a cell keeps its id, and its directory, when it
moves to another machine or another GPU.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, replace
from typing import Any

from robustcam.config import EvalConfig, TrainConfig, apply_overrides, validate_config
from robustcam.errors import ConfigError
from robustcam.layout import digest, placement_free

Grid = dict[str, list[Any]]


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

    def on_device(self, device: str) -> Cell:
        """The same cell (same id and directory) run on ``device``."""
        train = self.train.model_copy(update={"device": device})
        return replace(self, train=train, eval=self.eval.model_copy(update={"device": device}))


def cell_id(train_config: TrainConfig, eval_config: EvalConfig) -> str:
    """The cell's stable id: ``robustcam.layout.digest`` of both resolved configs without their
    placement (device, loader workers), the same rule runs and evaluations use."""
    return digest({"train": placement_free(train_config), "eval": placement_free(eval_config)})


def expand_grid(
    base: dict[str, Any],
    grid: Grid | list[Grid],
    eval_raw: dict[str, Any],
    *,
    source: str = "sweep",
) -> list[Cell]:
    """Every combination of each grid's values applied to ``base`` (train keys) and ``eval_raw``
    (``eval.*`` keys); a list of grids gives the union of their combinations, in order."""
    combinations = grid_combinations(grid if isinstance(grid, list) else [grid], source=source)
    cells = [_cell(index, values, base, eval_raw, source) for index, values in enumerate(combinations)]
    ids = [cell.cell_id for cell in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: the grid has duplicate cells (a value listed twice?)")
    return cells


def grid_combinations(grids: list[Grid], *, source: str = "sweep") -> list[dict[str, Any]]:
    """The grids' combinations of values, grid after grid, each in ``itertools.product`` order."""
    combinations: list[dict[str, Any]] = []
    for part in grids:
        for key, choices in part.items():
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{source}: grid.{key} must be a non-empty list of values")
        keys = list(part)
        combinations += [dict(zip(keys, combo)) for combo in itertools.product(*(part[k] for k in keys))]
    return combinations


def _cell(index: int, values: dict[str, Any], base: dict[str, Any], eval_raw: dict[str, Any], source: str) -> Cell:
    train_raw, eval_config_raw = copy.deepcopy(base), copy.deepcopy(eval_raw)
    apply_overrides(train_raw, [(k.split("."), v) for k, v in values.items() if not k.startswith("eval.")])
    apply_overrides(eval_config_raw, [(k.split(".")[1:], v) for k, v in values.items() if k.startswith("eval.")])
    label = ", ".join(f"{k}={v}" for k, v in values.items())
    train_config: TrainConfig = validate_config(TrainConfig, train_raw, source=f"{source} (cell {label})")
    eval_config: EvalConfig = validate_config(EvalConfig, eval_config_raw, source=f"{source} (cell {label}, eval)")
    return Cell(index, values, train_config, eval_config, cell_id(train_config, eval_config))
