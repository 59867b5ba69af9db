"""The on-disk contract: every file name of run, eval and sweep directories, the completion
markers, the per-sample record columns, the default budgets, and the one config digest.

A run directory (``robustcam train``)::

    config.yaml       the resolved train config, written first
    train_log.csv     one row per finished epoch
    train_state.pt    what resuming needs, while training is under way
    model.pt          the checkpoint (robustcam.checkpoint)
    complete.json     written last, atomically: the run is finished
    eval/             an evaluation of model.pt (below)

An evaluation directory (``robustcam eval``, ``<run>/eval``)::

    per_sample.csv    one row per (sample, attack, backend, eps): RECORD_COLUMNS, then CAM columns
    summary.csv       one row per (attack, backend, eps), recomputable from per_sample.csv
    summary.json      the resolved eval config, the checkpoint's metadata, seeds, versions, flags
    examples.pt       a few samples with their CAMs, for figures
    maxboxacc_v2.csv  per-example best-box IoUs per CAM threshold (datasets with boxes)
    complete.json     written last, atomically: the evaluation is finished
    shards/           while it runs: what resuming a killed evaluation needs, removed once it is finished
      evaluation.json                     the digests of the eval config, model weights and data it belongs to
      <attack>/<backend>/batch00000.pt    one finished (job, batch): its rows at every eps (robustcam.evaluate.shards)

A sweep directory (``robustcam sweep``)::

    cells/<values>-<id>/   one run directory per cell, with cell.json written last
    sweep.csv              one row per finished cell, rebuilt from the markers
    report/                the report over the cells

Markers are written last and atomically (``robustcam.io``), so a folder without its marker
is unfinished, never mistaken for complete. An evaluation's marker also lists the files it
wrote and the number of per-sample rows, and an evaluation into a folder that holds another
one first removes the old marker, then the old files: records of one evaluation are never
read with another one's summary.

Every run, eval and cell directory has a lock while it is written (``robustcam.io.directory_lock``)::

    .lock             the lock file (an OS lock: released when its process ends, however it ends)
    .lock.json        who holds it (pid, host, since when), for the message another process shows
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

# --------------------------------------------------------------------------- run directory

CONFIG_FILE = "config.yaml"
TRAIN_LOG_FILE = "train_log.csv"
TRAIN_STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"
RUN_COMPLETE = "complete.json"
EVAL_DIR = "eval"

# --------------------------------------------------------------------------- evaluation directory

PER_SAMPLE_FILE = "per_sample.csv"
SUMMARY_FILE = "summary.csv"
SUMMARY_JSON_FILE = "summary.json"
EXAMPLES_FILE = "examples.pt"
MAXBOXACC_FILE = "maxboxacc_v2.csv"
EVAL_COMPLETE = "complete.json"
ADV_DIR = "adv"
# what one evaluation writes besides its marker (ADV_DIR too, with --save-adv)
EVAL_FILES = (PER_SAMPLE_FILE, SUMMARY_FILE, SUMMARY_JSON_FILE, EXAMPLES_FILE, MAXBOXACC_FILE)
SHARDS_DIR = "shards"
SHARDS_IDENTITY_FILE = "evaluation.json"
_SHARD_PREFIX, _SHARD_SUFFIX = "batch", ".pt"


def shard_file(attack: str, backend: str, batch_index: int) -> str:
    """A (job, batch) shard's path inside ``SHARDS_DIR``: ``pgd/torchattacks/batch00003.pt``."""
    return f"{attack}/{backend}/{_SHARD_PREFIX}{batch_index:05d}{_SHARD_SUFFIX}"


def shard_batch_index(name: str) -> int | None:
    """The batch index a shard file's name holds (``batch00003.pt`` -> 3); None for other names."""
    digits = name.removeprefix(_SHARD_PREFIX).removesuffix(_SHARD_SUFFIX)
    if name.startswith(_SHARD_PREFIX) and name.endswith(_SHARD_SUFFIX) and digits.isdigit() and digits.isascii():
        return int(digits)
    return None


# --------------------------------------------------------------------------- sweep directory

CELLS_DIR = "cells"
CELL_MARKER = "cell.json"
SWEEP_CSV = "sweep.csv"
REPORT_DIR = "report"

# --------------------------------------------------------------------------- locks

LOCK_FILE = ".lock"
LOCK_OWNER_FILE = ".lock.json"

# --------------------------------------------------------------------------- records

RECORD_COLUMNS = (
    "index",
    "label",
    "clean_pred",
    "clean_correct",
    "clean_margin",
    "attack",
    "backend",
    "norm",
    "eps",
    "attacked",
    "source_eps",
    "adv_pred",
    "success",
    "robust",
    "valid",
    "linf",
    "l2",
    "margin",
    "violation",
)
# then, with CAM statistics: clean_<stat>, adv_<stat> (robustcam.cam.STAT_NAMES), adv_peak_gain,
# true_peak_shift, and for datasets with boxes clean_/adv_loc_iou_<protocol> (cvpr2016, minmax: the
# predicted class's box IoU) and clean_/adv_loc_example (maxboxacc_v2: the example's row in
# MAXBOXACC_FILE). Records written before protocols were named have clean_/adv_loc_iou (minmax).
MAXBOXACC_PREFIX = "iou_at_"
TIMING_COLUMNS = ("time_s", "images_per_s")  # summary.csv columns that differ from run to run

DEFAULT_EPS: tuple[str, ...] = ("1/255", "2/255", "4/255", "8/255")
DEFAULT_EPS_L2: tuple[str, ...] = ("0.25", "0.5", "1.0")

# --------------------------------------------------------------------------- the digest

# settings that say where something runs, not what it computes: a run can resume elsewhere
PLACEMENT_DEFAULTS: Mapping[str, Any] = {"device": "auto", "num_workers": 0}
DIGEST_LENGTH = 16


def placement_free(config: BaseModel) -> dict[str, Any]:
    """The config as plain data with its placement settings (device, loader workers) at their
    defaults: two configs that differ only in where they run have the same digest."""
    update = {key: value for key, value in PLACEMENT_DEFAULTS.items() if key in type(config).model_fields}
    data: dict[str, Any] = config.model_copy(update=update).model_dump(mode="json")
    return data


def digest(payload: Any, *, extra: bytes = b"") -> str:
    """sha256 (first 16 hex digits) of JSON data with sorted keys, then ``extra`` bytes."""
    hasher = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    hasher.update(extra)
    return hasher.hexdigest()[:DIGEST_LENGTH]


def config_digest(config: BaseModel, *, extra: bytes = b"") -> str:
    """The id of what a config computes (train runs, evaluations and sweep cells all use it):
    ``digest(placement_free(config), extra=extra)``; ``extra`` carries data outside the config
    that changes the result, such as a run's training labels."""
    return digest(placement_free(config), extra=extra)


__all__ = [
    "ADV_DIR",
    "CELLS_DIR",
    "CELL_MARKER",
    "CONFIG_FILE",
    "DEFAULT_EPS",
    "DEFAULT_EPS_L2",
    "EVAL_COMPLETE",
    "EVAL_DIR",
    "EVAL_FILES",
    "EXAMPLES_FILE",
    "LOCK_FILE",
    "LOCK_OWNER_FILE",
    "MAXBOXACC_FILE",
    "MAXBOXACC_PREFIX",
    "MODEL_FILE",
    "PER_SAMPLE_FILE",
    "RECORD_COLUMNS",
    "REPORT_DIR",
    "RUN_COMPLETE",
    "SHARDS_DIR",
    "SHARDS_IDENTITY_FILE",
    "SUMMARY_FILE",
    "SUMMARY_JSON_FILE",
    "SWEEP_CSV",
    "TIMING_COLUMNS",
    "TRAIN_LOG_FILE",
    "TRAIN_STATE_FILE",
    "config_digest",
    "digest",
    "placement_free",
    "shard_batch_index",
    "shard_file",
]
