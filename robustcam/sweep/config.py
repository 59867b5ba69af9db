"""The sweep file: a ``base`` train config, a ``grid`` of dotted keys, ``eval`` and ``report``.

A sweep YAML holds a ``base`` train config (inline, or a path relative to the
sweep file), a ``grid`` of dotted config keys and their values (``loss.name``,
``noise.kind``, ``noise.rate``, ``seed``, ``model.arch``, ... and ``eval.*`` for
the evaluation), an ``eval`` section and a ``report`` section. Validated like
every config: unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from robustcam.config import StrictModel, read_yaml, validate_config
from robustcam.sweep.grid import Cell, Grid, expand_grid


class SweepReportConfig(StrictModel):
    """How the sweep's report reads its cells."""

    primary: list[str] | None = Field(
        None, description="primary hypotheses as statistic:target (default: the report's own default)"
    )


class SweepConfig(StrictModel):
    """A sweep file: ``base`` train config, ``grid`` of dotted keys, ``eval`` and ``report`` sections."""

    name: str | None = None
    base: dict[str, Any] | str = Field(default_factory=dict, description="train config, or a path to one")
    grid: Grid | list[Grid] = Field(
        default_factory=dict, description="dotted key -> values; a list of such grids is their union"
    )
    eval: dict[str, Any] = Field(default_factory=dict, description="eval config (see robustcam eval)")
    out: str | None = Field(None, description="sweep folder (default runs/<sweep file name>)")
    report: SweepReportConfig = Field(default_factory=SweepReportConfig, description="report settings")


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
