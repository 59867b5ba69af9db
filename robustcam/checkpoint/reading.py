"""Reading checkpoint files safely: weights-only unpickling, safetensors, unwrapping.

Loading follows timm's habit of never unpickling arbitrary objects: every
``torch.load`` here uses ``weights_only=True``, so a file that would run code on
load is refused instead of trusted. Bare state_dicts are taken out of the usual
wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``, a
DataParallel ``module.`` prefix). Every failure is a ``CheckpointError`` with a
one-line message that names the file. ``load_weights_only`` is the one safe ``torch.load``
for every other ``.pt`` file robustcam reads back (``train_state.pt``, ``examples.pt``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from torch import Tensor

from robustcam.checkpoint.format import FORMAT_PREFIX, SAFETENSORS_META_KEY, check_format
from robustcam.checkpoint.messages import MAX_NAMES, more, one_line
from robustcam.errors import CheckpointError, RobustcamError

__all__ = ["checkpoint_meta", "load_weights_only", "read_checkpoint", "resolve_path"]

# Wrappers that training scripts commonly put around a state_dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Prefixes added by DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# safetensors reports a corrupt header as SafetensorError; a short read as OSError.
_SAFETENSORS_ERRORS = (safetensors.SafetensorError, OSError, ValueError, RuntimeError)


def checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored in a checkpoint, without building the model.

    Returns ``{}`` for files without robustcam metadata (bare state_dicts, plain
    safetensors). Reads with ``weights_only=True`` like ``load_checkpoint``; a
    safetensors file is read from its header only.
    """
    source = resolve_path(path)
    if source.suffix == ".safetensors":
        metadata = _read_safetensors_metadata(source)
        return _meta_from_safetensors(source, metadata) or {}
    # Memory-mapping avoids reading every tensor just to get at the metadata.
    loaded = _torch_load(source, "cpu", mmap=zipfile.is_zipfile(source))
    if isinstance(loaded, Mapping) and "format" in loaded:
        _, meta = _unpack_robustcam(source, loaded)
        return meta
    return {}


# The weight files a folder may hold, in order: a run directory's, then Hugging Face's names.
FOLDER_FILES = ("model.pt", "model.safetensors", "pytorch_model.bin")


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` means: itself, or the weights of a folder.

    A folder is a run directory (``model.pt``), a folder holding ``model.safetensors`` or
    ``pytorch_model.bin`` (a Hugging Face snapshot), or a Hugging Face cache folder
    (``models--timm--resnet18.a1_in1k``), whose ``refs/main`` names the snapshot (the only
    snapshot when it has no such ref).
    """
    source = Path(path)
    if source.is_dir():
        for folder in (source, *_snapshots(source)):
            for name in FOLDER_FILES:
                if (folder / name).is_file():
                    return folder / name
        raise CheckpointError(f"checkpoint {source} is a directory without any of {', '.join(FOLDER_FILES)}")
    if not source.exists():
        raise CheckpointError(f"checkpoint {source} not found")
    return source


def _snapshots(folder: Path) -> list[Path]:
    """The snapshot a Hugging Face cache folder (``refs/``, ``snapshots/``) points at, if any."""
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return []
    ref = folder / "refs" / "main"
    try:
        name = ref.read_text().strip() if ref.is_file() else ""
    except (OSError, UnicodeError):  # an unreadable ref: look for the one snapshot instead
        name = ""
    if name:
        return [snapshots / name]
    found = sorted(child for child in snapshots.iterdir() if child.is_dir())
    return found if len(found) == 1 else []


def read_checkpoint(source: Path, map_location: str | torch.device) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """``(state_dict, stored meta)`` of a file; the meta is None for a bare state_dict."""
    if source.suffix == ".safetensors":
        device = map_location if isinstance(map_location, str) else str(map_location)
        tensors, metadata = _read_safetensors(source, device)
        meta = _meta_from_safetensors(source, metadata)  # a wrong format says more than odd tensors
        return _unwrap(source, tensors), meta
    loaded = _torch_load(source, map_location)
    if isinstance(loaded, Mapping) and "format" in loaded:
        return _unpack_robustcam(source, loaded)
    return _unwrap(source, loaded), None


def _torch_load(source: Path, map_location: str | torch.device, *, mmap: bool = False) -> Any:
    return load_weights_only(source, map_location=map_location, mmap=mmap)


def load_weights_only(
    source: Path,
    *,
    map_location: str | torch.device = "cpu",
    kind: str = "checkpoint",
    recover: str | None = None,
    error: type[RobustcamError] = CheckpointError,
    mmap: bool = False,
) -> Any:
    """``torch.load(weights_only=True)`` of any ``.pt`` file robustcam reads (checkpoints,
    ``train_state.pt``, ``examples.pt``): a file that would need arbitrary unpickling, a
    truncated, empty or foreign file is an ``error`` with one line that names ``kind`` and the
    file and, when given, ends in ``recover`` (what the user can do about it). Never runs code."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as failure:
        message = str(failure)
        opcode = re.search(r"Unsupported operand (\d+)", message)
        if opcode:
            # An opcode torch.save never writes: garbage, or a plain pickle.dump, rather than an object.
            reason = f"pickle opcode {opcode.group(1)} is not one torch.save writes"
            raise error(_unreadable_message(source, reason, kind, recover)) from None
        if "Weights only load failed" in message:
            raise error(_unsafe_message(source, message, kind, recover)) from None
        raise error(_unreadable_message(source, message, kind, recover)) from None
    except PermissionError as failure:
        raise error(_with_recover(f"{kind} {source} cannot be read: {one_line(str(failure))}", recover)) from None
    except Exception as failure:  # noqa: BLE001  (corrupt files raise RuntimeError, EOFError, KeyError, ...)
        # RuntimeErrors carry torch's explanation; a bare KeyError('101') needs its type to mean anything.
        reason = str(failure) if isinstance(failure, RuntimeError) else f"{type(failure).__name__} {failure}".strip()
        raise error(_unreadable_message(source, reason, kind, recover)) from None


def _with_recover(message: str, recover: str | None) -> str:
    return f"{message}; {recover}" if recover else message


def _unsafe_message(source: Path, torch_message: str, kind: str = "checkpoint", recover: str | None = None) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", torch_message)
    if found:
        what = f"a non-tensor object (global {found.group(1)})"
    else:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", torch_message, re.DOTALL)
        what = "a non-tensor object" + (f" ({one_line(detail.group(1), 80)})" if detail else "")
    advice = recover or "re-save just the state_dict (torch.save(model.state_dict(), path)) from a trusted copy"
    return (
        f"{kind} {source} refused: robustcam loads weights only (torch.load(weights_only=True)) "
        f"and the file contains {what} that would need arbitrary unpickling; {advice}"
    )


def _unreadable_message(source: Path, reason: str, kind: str = "checkpoint", recover: str | None = None) -> str:
    # torch's own explanations run on for several sentences; the first one says what failed.
    first = one_line(reason).split(". ")[0]
    if first in ("", "EOFError"):
        first = "unexpected end of file"
    noun = "checkpoint" if kind == "checkpoint" else "file"
    return _with_recover(
        f"{kind} {source} is not a readable PyTorch {noun} (truncated, or not written by torch.save?): {first}",
        recover,
    )


def _read_safetensors(source: Path, device: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(source), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except _SAFETENSORS_ERRORS as error:
        raise CheckpointError(
            f"checkpoint {source} is not a readable safetensors file: {one_line(str(error))}"
        ) from None
    return tensors, dict(metadata)


def _read_safetensors_metadata(source: Path) -> dict[str, str]:
    try:
        with safetensors.safe_open(str(source), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except _SAFETENSORS_ERRORS as error:
        raise CheckpointError(
            f"checkpoint {source} is not a readable safetensors file: {one_line(str(error))}"
        ) from None


def _meta_from_safetensors(source: Path, metadata: Mapping[str, str]) -> dict[str, Any] | None:
    file_format = metadata.get("format")
    if file_format is not None and file_format.startswith(FORMAT_PREFIX):
        check_format(source, file_format)
    if SAFETENSORS_META_KEY not in metadata:
        return None
    try:
        meta = json.loads(metadata[SAFETENSORS_META_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"checkpoint {source} has unreadable {SAFETENSORS_META_KEY!r} metadata: {one_line(str(error))}"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {source} has {SAFETENSORS_META_KEY!r} metadata that is not a JSON object")
    return meta


def _unpack_robustcam(source: Path, loaded: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    check_format(source, loaded["format"])
    state_dict = loaded.get("state_dict")
    meta = loaded.get("meta")
    if not isinstance(state_dict, Mapping) or not isinstance(meta, Mapping):
        raise CheckpointError(f"checkpoint {source} is malformed: it needs a 'state_dict' and a 'meta' dict")
    return _tensors_only(source, state_dict), dict(meta)


def _tensors_only(source: Path, candidate: Mapping[Any, Any]) -> dict[str, Tensor]:
    if not candidate:
        raise CheckpointError(f"checkpoint {source} holds an empty dict, not a state_dict")
    bad = [key for key, value in candidate.items() if not (isinstance(key, str) and isinstance(value, Tensor))]
    if bad:
        keys = ", ".join(repr(key) for key in list(candidate)[:MAX_NAMES])
        raise CheckpointError(
            f"checkpoint {source} holds no state_dict: expected a dict of tensors, but {len(bad)} of its "
            f"{len(candidate)} entries are not tensors (e.g. {bad[0]!r}; keys {keys}{more(list(candidate))})"
        )
    return {str(key): value for key, value in candidate.items()}


def _unwrap(source: Path, loaded: object) -> dict[str, Tensor]:
    """The state_dict inside ``loaded``: wrappers opened, DataParallel prefixes removed."""
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"checkpoint {source} holds a {type(loaded).__name__}, not a state_dict")
    current: Mapping[Any, Any] = loaded
    while True:
        inner = next(
            (current[key] for key in _WRAPPER_KEYS if key in current and isinstance(current[key], Mapping)),
            None,
        )
        if inner is None:
            break
        current = inner
    state_dict = _tensors_only(source, current)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                stripped = True
    return state_dict
