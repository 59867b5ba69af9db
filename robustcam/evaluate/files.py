"""An evaluation on disk: ``per_sample.csv``, ``summary.csv``, ``summary.json`` and, where the
result has them, ``examples.pt`` and ``maxboxacc_v2.csv`` (names in ``robustcam.layout``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from robustcam.attacks import Norm, format_eps
from robustcam.evaluate.result import EvalResult
from robustcam.io import atomic_torch_save, atomic_write_text
from robustcam.layout import EXAMPLES_FILE, MAXBOXACC_FILE, PER_SAMPLE_FILE, SUMMARY_FILE, SUMMARY_JSON_FILE


def write_eval(result: EvalResult, out_dir: str | Path, *, config: dict[str, Any] | None = None) -> Path:
    """Write the evaluation's files to ``out_dir`` (each atomically) and return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / PER_SAMPLE_FILE, result.per_sample.to_csv(index=False))
    atomic_write_text(out / SUMMARY_FILE, result.summary.to_csv(index=False))
    payload = {
        "config": config or {},
        "meta": result.meta,
        "flags": [flag.to_dict() for flag in result.flags],
        "summary": json.loads(result.summary.to_json(orient="records")),
        "agreement": json.loads(result.agreement.to_json(orient="records")) if not result.agreement.empty else [],
    }
    atomic_write_text(out / SUMMARY_JSON_FILE, json.dumps(payload, indent=2))
    if result.examples is not None:
        atomic_torch_save(result.examples, out / EXAMPLES_FILE)
    if not result.maxboxacc.empty:
        atomic_write_text(out / MAXBOXACC_FILE, result.maxboxacc.to_csv(index=False))
    return out


def save_adversarial(
    root: Path | None, job: str, eps: float | None, norm: Norm, batch_index: int, indices: Tensor, images: Tensor
) -> None:
    """``--save-adv``: one file per (job, eps, batch) under ``root``."""
    if root is None:
        return
    label = "min" if eps is None else format_eps(eps, norm).replace("/", "_")
    folder = root / f"{job.replace('/', '-')}-eps{label}"
    atomic_torch_save({"indices": indices.cpu(), "images": images.cpu()}, folder / f"batch{batch_index:05d}.pt")


__all__ = ["save_adversarial", "write_eval"]
