"""Run directories: train a config and evaluate its checkpoint into ``<run>/eval``, resumably.

A run directory holds what ``robustcam.train.train`` writes (``config.yaml``,
``model.pt``, ``train_log.csv``, ``complete.json``) and an ``eval/`` folder with
``per_sample.csv``, ``summary.csv``, ``summary.json`` and its own completion
marker, written last. Both steps are skipped when their marker says they were
finished with the same config, so a re-run redoes only what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustcam.checkpoint import load_checkpoint
from robustcam.config import EvalConfig, config_to_dict
from robustcam.data import ImageDataset, list_datasets, load_dataset
from robustcam.evaluate import EvalProgress, EvalResult, evaluate, write_eval
from robustcam.io import atomic_write_text
from robustcam.layout import ADV_DIR, EVAL_COMPLETE, EVAL_DIR, MODEL_FILE, config_digest
from robustcam.runtime import resolve_device


def eval_digest(config: EvalConfig) -> str:
    """The id of what an evaluation computes (``robustcam.layout.config_digest``): where it runs
    is not part of it."""
    return config_digest(config)


def finished_eval(run_dir: str | Path, config: EvalConfig) -> bool:
    marker = Path(run_dir) / EVAL_DIR / EVAL_COMPLETE
    return marker.is_file() and json.loads(marker.read_text()).get("eval_digest") == eval_digest(config)


def checkpoint_dataset(
    checkpoint: str | Path,
    meta: dict[str, Any],
    split: str,
    *,
    name: str | None = None,
    root: str | Path | None = None,
    download: bool = False,
) -> tuple[ImageDataset, dict[str, Any]]:
    """Split ``split`` of the dataset a checkpoint was trained on (its loader options and root
    included), or of ``name`` when given. Returns the dataset and ``{"name", "options"}``."""
    stored = meta.get("data") or {}
    chosen = name or stored.get("name")
    if chosen is None:
        raise ValueError(
            f"checkpoint {checkpoint} records no dataset; pass --data (valid: {', '.join(list_datasets())})"
        )
    options = stored.get("options", {}) if chosen == stored.get("name") else {}
    dataset = load_dataset(chosen, split, root=root or stored.get("root"), download=download, **options)
    return dataset, {"name": chosen, "options": options}


def evaluate_run(
    run_dir: str | Path, config: EvalConfig, *, progress: EvalProgress | None = None
) -> tuple[Path, EvalResult | None]:
    """Evaluate ``run_dir/model.pt`` on its dataset into ``run_dir/eval``.

    Returns the eval folder and the result, or None for the result when a finished
    evaluation with the same config was already there.
    """
    run = Path(run_dir)
    out = run / EVAL_DIR
    if finished_eval(run, config):
        return out, None
    device = resolve_device(config.device)
    model, meta = load_checkpoint(run / MODEL_FILE, map_location=device)
    dataset, data = checkpoint_dataset(run / MODEL_FILE, meta, config.split)
    result = evaluate(model, dataset, config, adv_dir=out / ADV_DIR if config.save_adv else None, progress=progress)
    write_eval(result, out, config=eval_record(config, run / MODEL_FILE, meta, data))
    atomic_write_text(out / EVAL_COMPLETE, json.dumps({"eval_digest": eval_digest(config)}))
    return out, result


def eval_record(config: EvalConfig, checkpoint: Path, meta: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """What ``summary.json`` records about the evaluation and the checkpoint it evaluated."""
    keys = (
        "arch",
        "num_classes",
        "loss",
        "noise",
        "seed",
        "dataset",
        "metrics",
        "config_digest",
        "config",
        "warnings",
    )
    return {
        "eval": config_to_dict(config),
        "checkpoint": str(checkpoint),
        "checkpoint_meta": {key: meta.get(key) for key in keys if key in meta},
        "data": {"name": data.get("name"), "split": config.split, "options": data.get("options", {})},
    }
