"""Run directories: train a config and evaluate its checkpoint into ``<run>/eval``, resumably.

A run directory holds what ``robustcam.train.train`` writes (``config.yaml``,
``model.pt``, ``train_log.csv``, ``complete.json``) and an ``eval/`` folder with
``per_sample.csv``, ``summary.csv``, ``summary.json`` and its own completion
marker, written last. Both steps are skipped when their marker says they were
finished with the same config, so a re-run redoes only what is missing.

``evaluate_into`` is one evaluation into one folder under that folder's lock: the evaluation
that was there is removed first (its marker first), so a folder never mixes two of them. While
it runs, every finished (job, batch) is kept in ``<eval>/shards`` (``robustcam.evaluate.shards``):
the same evaluation run again after a kill reads them back and computes only the rest, and
the shards are removed once the evaluation's files and marker are written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustcam.checkpoint import load_checkpoint
from robustcam.config import CheckpointReading, EvalConfig, config_to_dict
from robustcam.data import ImageDataset, list_datasets, load_dataset
from robustcam.errors import InputError
from robustcam.evaluate import EvalProgress, EvalResult, evaluate, write_eval
from robustcam.evaluate.files import (
    EVAL_BUSY_HINT,
    EVAL_LOCK_WHAT,
    clear_eval,
    missing_eval_files,
    read_eval_marker,
)
from robustcam.evaluate.shards import remove_shards
from robustcam.io import StorageError, directory_lock
from robustcam.layout import ADV_DIR, EVAL_COMPLETE, EVAL_DIR, MODEL_FILE, SHARDS_DIR
from robustcam.models import CAMClassifier, Normalization
from robustcam.models.gradcam import apply_cam_layer
from robustcam.runtime import resolve_device


def eval_digest(config: EvalConfig) -> str:
    """The id of what an evaluation computes (``EvalConfig.digest``): where it runs is not part
    of it; the backend each attack runs on is."""
    return config.digest()


def finished_eval(run_dir: str | Path, config: EvalConfig) -> bool:
    """Whether ``<run>/eval`` holds a finished evaluation with this config and all its files.

    A marker that cannot be read is a ``CorruptFileError`` that names it, not a reason to redo."""
    folder = Path(run_dir) / EVAL_DIR
    if not (folder / EVAL_COMPLETE).is_file():
        return False
    marker = read_eval_marker(folder)
    return marker.get("eval_digest") == eval_digest(config) and not missing_eval_files(folder, marker)


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
        raise InputError(
            f"checkpoint {checkpoint} records no dataset; pass --data (valid: {', '.join(list_datasets())})"
        )
    options = stored.get("options", {}) if chosen == stored.get("name") else {}
    dataset = load_dataset(chosen, split, root=root or stored.get("root"), download=download, **options)
    return dataset, {"name": chosen, "options": options}


def dataset_statistics(dataset: ImageDataset) -> Normalization:
    """The statistics a dataset declares, as the loader's fallback for a checkpoint without any."""
    info = dataset.info
    return Normalization(info.name, tuple(info.mean), tuple(info.std), f"{info.name} statistics")


def load_for_evaluation(
    checkpoint: str | Path,
    reading: CheckpointReading,
    *,
    split: str,
    arch: str | None = None,
    num_classes: int | None = None,
    data: str | None = None,
    root: str | Path | None = None,
    download: bool = False,
    map_location: str | torch.device = "cpu",
    own_run: bool = False,
) -> tuple[CAMClassifier, dict[str, Any], ImageDataset, dict[str, Any]]:
    """The checkpoint's model and meta, and the dataset it is evaluated on (``checkpoint_dataset``).

    ``reading`` holds the user's choices (normalisation, model options). A checkpoint without
    statistics of its own, whose architecture fixes none, gets the evaluated dataset's: the
    loader asks for them once the checkpoint fits, and the dataset is loaded then. ``own_run``:
    a run trained from the user's config, whose model factory (if any) may run.
    """
    loaded: list[tuple[ImageDataset, dict[str, Any]]] = []

    def evaluated(meta: Mapping[str, Any]) -> tuple[ImageDataset, dict[str, Any]]:
        if not loaded:
            loaded.append(checkpoint_dataset(checkpoint, dict(meta), split, name=data, root=root, download=download))
        return loaded[0]

    model, meta = load_checkpoint(
        checkpoint,
        arch=arch,
        num_classes=num_classes,
        dataset_statistics=lambda meta: dataset_statistics(evaluated(meta)[0]),
        map_location=map_location,
        factory_from_meta=own_run,
        **reading.checkpoint_options(),
    )
    apply_cam_layer(model, reading.cam_layer)
    dataset, data_record = evaluated(meta)
    return model, meta, dataset, data_record


def evaluate_into(
    out_dir: str | Path,
    model: CAMClassifier,
    dataset: ImageDataset,
    config: EvalConfig,
    *,
    record: dict[str, Any] | None = None,
    marker: Mapping[str, Any] | None = None,
    progress: EvalProgress | None = None,
    resume: bool = True,
) -> EvalResult:
    """Evaluate ``model`` into ``out_dir`` under the folder's lock (``robustcam eval``).

    The evaluation that was in ``out_dir`` is removed first, ``adv/`` included; then the new
    files are written and the marker last, with the eval digest and ``marker``'s fields.
    ``record`` is what ``summary.json`` says about the run (``eval_record``).

    With ``resume``, the finished batches that an interrupted evaluation with the same config,
    model and dataset left in ``out_dir/shards`` are reused (its ``adv/`` too) and only the
    rest is computed; ``resume=False`` starts over. The shards go once the marker is written.

    Raises:
        DirectoryBusyError: another live process is writing ``out_dir``.
        ShardMismatchError: ``out_dir`` holds an interrupted evaluation of another config,
            checkpoint or dataset (and ``resume``).
        StorageError: a file could not be written; the folder then has no marker.
    """
    out = Path(out_dir)
    shards = out / SHARDS_DIR
    with directory_lock(out, what=EVAL_LOCK_WHAT, hint=EVAL_BUSY_HINT):
        if not resume or (out / EVAL_COMPLETE).is_file():
            remove_shards(shards)  # --no-resume, or leftovers of an evaluation that finished
        clear_eval(out, keep_adv=shards.is_dir())
        adv_dir = out / ADV_DIR if config.save_adv else None
        result = evaluate(model, dataset, config, adv_dir=adv_dir, progress=progress, shard_dir=shards)
        write_eval(result, out, config=record, marker={"eval_digest": eval_digest(config), **(marker or {})})
        try:
            remove_shards(shards)
        except StorageError:
            pass  # the evaluation is finished; the next one into this folder removes what is left
    return result


def evaluate_run(
    run_dir: str | Path, config: EvalConfig, *, progress: EvalProgress | None = None
) -> tuple[Path, EvalResult | None]:
    """Evaluate ``run_dir/model.pt`` on its dataset into ``run_dir/eval``.

    Returns the eval folder and the result, or None for the result when a finished
    evaluation with the same config was already there.
    """
    run = Path(run_dir)
    out = run / EVAL_DIR
    # locked before the check: another process could be finishing this evaluation right now
    with directory_lock(out, what=EVAL_LOCK_WHAT, hint=EVAL_BUSY_HINT):
        if finished_eval(run, config):
            return out, None
        device = resolve_device(config.device)
        model, meta, dataset, data = load_for_evaluation(run / MODEL_FILE, config, split=config.split,
                                                         map_location=device, own_run=True)  # fmt: skip
        record = eval_record(config, run / MODEL_FILE, meta, data)
        result = evaluate_into(out, model, dataset, config, record=record, progress=progress)
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
        # which statistics the model normalised with, where they came from and how to change them
        "normalization": meta.get("normalization"),
    }
