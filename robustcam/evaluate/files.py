"""An evaluation on disk: ``per_sample.csv``, ``summary.csv``, ``summary.json`` and, where the
result has them, ``examples.pt`` and ``maxboxacc_v2.csv``; then the marker ``complete.json``
(names in ``robustcam.layout``).

A folder holds one evaluation. Writing one first removes the evaluation that is there (its
marker first, so that its files are never taken for finished while they go), then writes the
new files, each atomically, and the marker last: it lists the files and the number of
per-sample records, so a reader can tell a finished evaluation from one that was killed or ran
out of disk, and records of one evaluation are never read with another one's summary. The
folder is locked while it is written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from robustcam.attacks import Norm, format_eps
from robustcam.evaluate.result import EvalResult
from robustcam.io import (
    StorageError,
    atomic_torch_save,
    atomic_write_text,
    directory_lock,
    os_reason,
    read_json_object,
    require_fields,
)
from robustcam.layout import (
    ADV_DIR,
    EVAL_COMPLETE,
    EVAL_FILES,
    EXAMPLES_FILE,
    MAXBOXACC_FILE,
    PER_SAMPLE_FILE,
    SUMMARY_FILE,
    SUMMARY_JSON_FILE,
)

EVAL_LOCK_WHAT = "eval folder"
EVAL_BUSY_HINT = "wait for it to finish, or choose another --out"
# what the marker says beyond what the caller adds (evaluate_run: the eval digest)
MARKER_FILES = "files"
MARKER_ROWS = "rows"


def clear_eval(out_dir: str | Path, *, keep_adv: bool = False) -> Path:
    """Remove the evaluation in ``out_dir``: its marker first, then every file an evaluation
    writes, and ``adv/`` unless ``keep_adv``. Files of other names are left alone."""
    out = Path(out_dir)
    try:
        (out / EVAL_COMPLETE).unlink(missing_ok=True)
        for name in EVAL_FILES:
            (out / name).unlink(missing_ok=True)
        if not keep_adv and (out / ADV_DIR).is_dir():
            shutil.rmtree(out / ADV_DIR)
    except OSError as error:
        raise StorageError(
            out,
            f"removing the earlier evaluation failed: {os_reason(error)}",
            "it has no marker any more, so it reads as unfinished; fix the folder's permissions "
            "and run the same eval again",
        ) from error
    return out


def write_eval(
    result: EvalResult,
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    marker: Mapping[str, Any] | None = None,
) -> Path:
    """Write the evaluation's files to ``out_dir`` (each atomically), replacing the evaluation
    that was there, and the marker last; return the folder.

    ``marker``: more fields for ``complete.json`` (``evaluate_run`` adds the eval digest).
    ``adv/`` is kept: the evaluation writes it before its records.

    Raises:
        DirectoryBusyError: another live process is writing ``out_dir``.
        StorageError: a file could not be written; the folder then has no marker.
    """
    out = Path(out_dir)
    with directory_lock(out, what=EVAL_LOCK_WHAT, hint=EVAL_BUSY_HINT):
        clear_eval(out, keep_adv=True)
        try:
            written = _write_files(result, out, config or {})
            fields = {**(marker or {}), MARKER_FILES: written, MARKER_ROWS: len(result.per_sample)}
            atomic_write_text(out / EVAL_COMPLETE, json.dumps(fields, indent=2))
        except StorageError as error:
            raise error.keeping(
                f"{out} has no {EVAL_COMPLETE}, so it reads as unfinished and no report uses it; "
                "free space and run the same eval again"
            ) from error
    return out


def _write_files(result: EvalResult, out: Path, config: dict[str, Any]) -> list[str]:
    atomic_write_text(out / PER_SAMPLE_FILE, result.per_sample.to_csv(index=False))
    atomic_write_text(out / SUMMARY_FILE, result.summary.to_csv(index=False))
    payload = {
        "config": config,
        "meta": result.meta,
        "flags": [flag.to_dict() for flag in result.flags],
        "summary": json.loads(result.summary.to_json(orient="records")),
        "agreement": json.loads(result.agreement.to_json(orient="records")) if not result.agreement.empty else [],
    }
    atomic_write_text(out / SUMMARY_JSON_FILE, json.dumps(payload, indent=2))
    written = [PER_SAMPLE_FILE, SUMMARY_FILE, SUMMARY_JSON_FILE]
    if result.examples is not None:
        atomic_torch_save(result.examples, out / EXAMPLES_FILE)
        written.append(EXAMPLES_FILE)
    if not result.maxboxacc.empty:
        atomic_write_text(out / MAXBOXACC_FILE, result.maxboxacc.to_csv(index=False))
        written.append(MAXBOXACC_FILE)
    return written


def read_eval_marker(folder: str | Path) -> dict[str, Any]:
    """``complete.json`` of an evaluation folder, checked. Markers that ``evaluate_run`` wrote
    before markers listed their files hold only the eval digest; they are finished too."""
    marker = Path(folder) / EVAL_COMPLETE
    recover = f"delete {marker} and run the same eval again"
    info = read_json_object(marker, recover=recover)
    if MARKER_FILES in info or MARKER_ROWS in info:
        require_fields(marker, info, {MARKER_FILES: list, MARKER_ROWS: int}, recover=recover)
    if "eval_digest" in info:
        require_fields(marker, info, {"eval_digest": str}, recover=recover)
    return info


def missing_eval_files(folder: str | Path, marker: Mapping[str, Any]) -> list[str]:
    """The files the marker lists that are not in the folder (none for markers without a list)."""
    listed = marker.get(MARKER_FILES) or []
    return [str(name) for name in listed if not (Path(folder) / str(name)).is_file()]


def save_adversarial(
    root: Path | None, job: str, eps: float | None, norm: Norm, batch_index: int, indices: Tensor, images: Tensor
) -> None:
    """``--save-adv``: one file per (job, eps, batch) under ``root``."""
    if root is None:
        return
    label = "min" if eps is None else format_eps(eps, norm).replace("/", "_")
    folder = root / f"{job.replace('/', '-')}-eps{label}"
    atomic_torch_save({"indices": indices.cpu(), "images": images.cpu()}, folder / f"batch{batch_index:05d}.pt")


__all__ = ["clear_eval", "missing_eval_files", "read_eval_marker", "save_adversarial", "write_eval"]
