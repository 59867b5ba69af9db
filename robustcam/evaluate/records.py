"""Per-sample records: one row per (sample, attack, backend, eps), collected batch by batch.

``score`` turns one run's measurements into the rows of one eps for a batch (which samples
the attack broke, validity, where a violation lies); ``Records`` collects rows per batch
(``add``) and builds the table once at the end (``to_frame``), in the column order of
``robustcam.layout.RECORD_COLUMNS`` followed by the CAM columns in name order.

Robust accuracy counts clean errors as non-robust: ``robust = clean_correct & ~success``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from robustcam.attacks import Attack
from robustcam.layout import RECORD_COLUMNS

BUDGET_TOLERANCE = 1e-6


def _nan(size: int) -> Tensor:
    return torch.full((size,), math.nan, dtype=torch.float64)


def score(
    attack: Attack,
    state: dict[str, Tensor],
    broken: Tensor,
    targets: Tensor,
    measured: dict[str, Tensor],
    budget: float,
) -> dict[str, Any]:
    """One eps's rows for a batch: measured values for the attacked ``targets``; for the
    others, the example in ``state`` (the clean input, or the one that broke them earlier).

    An attacked example breaks the sample when it is valid (``attack.admissible``: inside
    [0, 1], and inside the eps ball for a bounded attack), misclassified, and within
    ``budget`` (+``BUDGET_TOLERANCE``). An invalid example is recorded with its
    ``violation``, never clipped, and never counts as a break.
    """
    row: dict[str, Any] = {key: value.clone() for key, value in state.items()}
    size = len(broken)
    row["source_eps"] = torch.where(broken, state["source_eps"], _nan(size)) if "source_eps" in state else _nan(size)
    row["attacked"] = torch.zeros(size, dtype=torch.bool)
    row["success"] = broken.clone()
    row["valid"] = torch.ones(size, dtype=torch.bool)
    row["violation"] = [""] * size
    if not measured:
        return row
    for key in state:
        if key in measured:
            row[key][targets] = measured[key]
    norm_size = measured["linf"] if attack.norm == "Linf" else measured["l2"]
    in_range = measured["in_range"]
    within = norm_size <= budget + BUDGET_TOLERANCE
    valid = attack.admissible(in_range, within)
    success = valid & (measured["margin"] < 0) & within
    row["attacked"][targets] = True
    row["valid"][targets] = valid
    row["success"][targets] = success
    # float64: exactly the eps it broke at
    row["source_eps"][targets] = torch.where(
        success, torch.full(success.shape, budget, dtype=torch.float64), _nan(len(success))
    )
    for k in (~valid | ~in_range).nonzero().squeeze(1).tolist():
        row["violation"][int(targets[k])] = attack.violation(
            bool(in_range[k]), bool(within[k]), float(norm_size[k]), budget
        )
    return row


class Records:
    """Accumulates per-sample rows batch by batch; ``to_frame`` builds the table once."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}

    def add(self, base: dict[str, Tensor], row: dict[str, Any], attack: Attack, backend: str, eps: float) -> None:
        """The rows of one batch at one eps: ``base`` (the samples' clean columns) and ``row``
        (what ``score`` returned)."""
        size = len(base["index"])
        values: dict[str, Any] = dict(base)
        values.update(
            attack=np.full(size, attack.name, dtype=object),
            backend=np.full(size, backend, dtype=object),
            norm=np.full(size, attack.norm, dtype=object),
            eps=np.full(size, eps),
        )
        values.update(row)
        values["robust"] = base["clean_correct"] & ~row["success"]
        values["violation"] = np.asarray(row["violation"], dtype=object)
        ordered = [name for name in RECORD_COLUMNS if name in values] + sorted(set(values) - set(RECORD_COLUMNS))
        for name in ordered:
            value = values[name]
            self.columns.setdefault(name, []).append(value.numpy() if isinstance(value, Tensor) else value)

    def extend(self, other: Records) -> None:
        """Append another collector's rows (e.g. one job's) after these."""
        for name, parts in other.columns.items():
            self.columns.setdefault(name, []).extend(parts)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({name: _column(parts) for name, parts in self.columns.items()})
        return frame if not frame.empty else pd.DataFrame(columns=list(RECORD_COLUMNS))


def _column(parts: list[Any]) -> Any:
    column = np.concatenate(parts) if parts else np.array([])
    # float64, because float32 values written to CSV do not read back exactly and the
    # summary must recompute exactly from per_sample.csv
    return column.astype(np.float64) if column.dtype == np.float32 else column


__all__ = ["BUDGET_TOLERANCE", "Records", "score"]
