"""Resumable evaluations: every finished (job, batch) of an evaluation kept as a shard file.

An evaluation given a shard folder (``robustcam.runs.evaluate_into`` gives ``<eval>/shards``;
names in ``robustcam.layout``) writes there, atomically (``robustcam.io``):

- ``evaluation.json`` first: the digests of what the shards are computed from, the resolved
  eval config (``EvalConfig.digest``: placement aside, the resolved backends in), the model's weights and
  buffers, and the dataset (its description and size);
- then one shard per (attack, backend, batch) as soon as that batch has run at every eps: its
  per-sample rows at every eps, the attack time and attacked count per eps, what the attack
  library reported, the maxboxacc_v2 blocks it measured, and (batch 0) the CAM examples.

A shard holds the whole eps cascade of its batch, so a resumed batch never starts half-way
through one: either its shard is read back, or it runs again from the clean inputs. Every
attack run's seed depends only on (attack, backend, eps index, batch index)
(``robustcam.evaluate.sampling.attack_seed``), so a batch that runs again gives the rows the
killed run would have given, and the records of a resumed evaluation equal an uninterrupted
one's (attack times aside). This is AutoAttack's ``state_path``, for the whole matrix.

The clean pass runs again on resume (one forward per sample); each shard read back must agree
with it (indices, labels, clean predictions). Shards of another evaluation (another config,
checkpoint or dataset) are never mixed in: ``ShardMismatchError`` says what differs and how
to start over. A shard that cannot be read is a ``CorruptFileError`` naming it. Shard files
are read weights-only: reading one never runs code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from robustcam.checkpoint.reading import load_weights_only
from robustcam.data import ImageDataset
from robustcam.errors import RobustcamError
from robustcam.evaluate.records import Records
from robustcam.io import (
    CorruptFileError,
    StorageError,
    atomic_torch_save,
    atomic_write_text,
    os_reason,
    read_json_object,
)
from robustcam.layout import SHARDS_IDENTITY_FILE, digest, shard_batch_index, shard_file
from robustcam.models import CAMClassifier

if TYPE_CHECKING:
    from robustcam.config import EvalConfig

SHARD_FORMAT = 1
START_OVER = "run with --no-resume (resume=False) to start over, or delete {folder}"
# what each identity field is the digest of, as the mismatch message names it
_IDENTITY_WHAT = {"eval_config": "the eval config", "model": "the checkpoint", "data": "the dataset"}


class ShardMismatchError(RobustcamError):
    """The shard folder holds finished batches of another evaluation."""


@dataclass
class Shard:
    """One (job, batch): its rows at every eps and what the job adds up over its batches."""

    records: Records
    seconds: list[float]
    attacked: list[int]
    notes: dict[str, None] = field(default_factory=dict)  # what the library reported, in order, once each
    box_ious: list[Tensor] = field(default_factory=list)  # maxboxacc_v2 blocks measured on this batch
    example: dict[str, Tensor] | None = None  # the CAM examples' adversarial record (batch 0)


# --------------------------------------------------------------------------- identity


def model_digest(model: CAMClassifier) -> str:
    """sha256 of the model's class and every parameter and buffer (name, dtype, shape, bytes)."""
    hasher = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        hasher.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return hasher.hexdigest()[:16]


def evaluation_identity(config: EvalConfig, model: CAMClassifier, dataset: ImageDataset) -> dict[str, str]:
    """The digests shards must share to be mixed: eval config (``EvalConfig.digest``), model
    weights, dataset."""
    return {
        "eval_config": config.digest(),
        "model": model_digest(model),
        "data": digest({"info": dataset.info.to_dict(), "size": len(dataset)}),
    }


@dataclass(frozen=True)
class ShardStore:
    """The shard folder of one evaluation (``open_shards``)."""

    folder: Path
    identity: str  # digest of the identity fields; every shard carries it

    def finished(self, attack: str, backend: str) -> set[int]:
        """The batch indices of this job that have a shard."""
        job = (self.folder / shard_file(attack, backend, 0)).parent
        if not job.is_dir():
            return set()
        return {index for path in job.iterdir() if (index := shard_batch_index(path.name)) is not None}

    def write(self, attack: str, backend: str, batch_index: int, shard: Shard) -> None:
        atomic_torch_save(_payload(shard, self.identity), self.folder / shard_file(attack, backend, batch_index))

    def read(self, attack: str, backend: str, batch_index: int, *, budgets: int, base: dict[str, Tensor]) -> Shard:
        """The shard of one batch, checked: written for this evaluation, with ``budgets`` eps,
        and rows of the samples (index, label, clean prediction) in ``base``."""
        path = self.folder / shard_file(attack, backend, batch_index)
        recover = f"delete it and run the same eval again (only its batch is computed again), or {_start_over(self)}"
        loaded = load_weights_only(path, kind="eval shard", recover=recover, error=CorruptFileError)
        shard = _unpack(path, loaded, budgets, recover)
        if loaded.get("identity") != self.identity:
            raise ShardMismatchError(f"eval shard {path} belongs to another evaluation; {_start_over(self)}")
        _check_samples(path, shard.records, base, recover)
        return shard


def _start_over(store: ShardStore) -> str:
    return START_OVER.format(folder=store.folder)


def open_shards(folder: str | Path, identity: dict[str, str], *, resume: bool = True) -> ShardStore:
    """The shard folder for an evaluation with ``identity`` (``evaluation_identity``): its
    earlier shards when they are this evaluation's, else a new folder.

    ``resume=False`` removes the shards that are there first.

    Raises:
        ShardMismatchError: ``folder`` holds shards of another evaluation (and ``resume``).
        CorruptFileError: its ``evaluation.json`` cannot be read.
    """
    root = Path(folder)
    if not resume:
        remove_shards(root)
    store = ShardStore(root, digest(identity))
    marker = root / SHARDS_IDENTITY_FILE
    if marker.is_file():
        earlier = read_json_object(marker, recover=_start_over(store))
        differs = [what for key, what in _IDENTITY_WHAT.items() if earlier.get(key) != identity[key]]
        if differs:
            raise ShardMismatchError(
                f"{root} holds finished batches of another evaluation ({' and '.join(differs)} "
                f"{'differs' if len(differs) == 1 else 'differ'}); {_start_over(store)}"
            )
    else:
        remove_shards(root)  # batches without an identity cannot be told apart from another evaluation's
        atomic_write_text(marker, json.dumps(identity, indent=2))
    for stale in root.rglob(".*.tmp"):  # temporary files of a write that a kill interrupted
        stale.unlink(missing_ok=True)
    return store


def remove_shards(folder: str | Path) -> None:
    """Remove a shard folder (nothing if there is none)."""
    root = Path(folder)
    try:
        if root.is_dir():
            shutil.rmtree(root)
    except OSError as error:
        raise StorageError(root, f"removing the shards failed: {os_reason(error)}", "delete the folder") from error


# --------------------------------------------------------------------------- shard files


def _payload(shard: Shard, identity: str) -> dict[str, Any]:
    """A shard as the plain data ``torch.load(weights_only=True)`` reads: tensors, lists, str."""
    rows = {
        name: [
            [str(item) for item in part] if part.dtype == object else torch.from_numpy(part).clone() for part in parts
        ]
        for name, parts in shard.records.columns.items()
    }
    return {
        "format": SHARD_FORMAT,
        "identity": identity,
        "rows": rows,
        "seconds": [float(value) for value in shard.seconds],
        "attacked": [int(value) for value in shard.attacked],
        "notes": list(shard.notes),
        "box_ious": [block.cpu() for block in shard.box_ious],
        "example": shard.example,
    }


def _unpack(path: Path, loaded: Any, budgets: int, recover: str) -> Shard:
    """The ``Shard`` a loaded payload holds; anything malformed is a ``CorruptFileError``."""

    def corrupt(problem: str) -> CorruptFileError:
        return CorruptFileError(f"eval shard {path} {problem}; {recover}")

    if not isinstance(loaded, dict) or loaded.get("format") != SHARD_FORMAT or not isinstance(loaded.get("rows"), dict):
        raise corrupt(f"is not a robustcam eval shard (format {SHARD_FORMAT})")
    seconds: Any = loaded.get("seconds")
    attacked: Any = loaded.get("attacked")
    notes: Any = loaded.get("notes")
    if not (_list_of(seconds, float, budgets) and _list_of(attacked, int, budgets) and _list_of(notes, str)):
        raise corrupt(f"lacks the times, attacked counts or notes of its {budgets} eps")
    blocks: Any = loaded.get("box_ious")
    example: Any = loaded.get("example")
    if not _list_of(blocks, Tensor) or not (example is None or isinstance(example, dict)):
        raise corrupt("has malformed box IoUs or CAM examples")
    records = Records()
    for name, parts in loaded["rows"].items():
        if not isinstance(name, str) or not _list_of(parts, (Tensor, list), budgets):
            raise corrupt(f"has a malformed column {name!r} (not {budgets} parts, one per eps)")
        records.columns[name] = [_column_part(part) for part in parts]
    if "index" not in records.columns:
        raise corrupt("has no rows")
    return Shard(records, list(seconds), list(attacked), dict.fromkeys(notes), list(blocks), example)


def _list_of(value: Any, kind: type | tuple[type, ...], length: int | None = None) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(isinstance(item, kinds) and not (isinstance(item, bool) and bool not in kinds) for item in value)
    )


def _column_part(part: Tensor | list[Any]) -> np.ndarray:
    if isinstance(part, Tensor):
        return part.numpy()
    return np.asarray([str(item) for item in part], dtype=object).reshape(len(part))


def _check_samples(path: Path, records: Records, base: dict[str, Tensor], recover: str) -> None:
    """Every part of the shard has the batch's samples, labels and clean predictions."""
    for name in ("index", "label", "clean_pred"):
        expected = base[name].numpy()
        for part in records.columns.get(name, []):
            if part.shape != expected.shape or not np.array_equal(part, expected):
                raise ShardMismatchError(
                    f"eval shard {path} has other samples, labels or clean predictions ({name}) than this "
                    f"evaluation: the data or the model changed since it was written; {recover}"
                )
    size = len(base["index"])
    if any(len(part) != size for parts in records.columns.values() for part in parts):
        raise CorruptFileError(f"eval shard {path} has columns of another length than its {size} samples; {recover}")


__all__ = [
    "SHARD_FORMAT",
    "Shard",
    "ShardMismatchError",
    "ShardStore",
    "evaluation_identity",
    "model_digest",
    "open_shards",
    "remove_shards",
]
