"""Reading checkpoint files safely: weights-only unpickling, safetensors, unwrapping.

Loading follows timm's habit of never unpickling arbitrary objects: every
``torch.load`` here uses ``weights_only=True``, so a file that would run code on
load is refused instead of trusted. Bare state_dicts are taken out of the usual
wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``, a
DataParallel ``module.`` prefix). Every failure is a ``CheckpointError`` with a
one-line message that names the file.
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
from robustcam.errors import CheckpointError

__all__ = ["checkpoint_meta", "read_checkpoint", "resolve_path"]

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


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` means: itself, or a run directory's ``model.pt``."""
    source = Path(path)
    if source.is_dir():
        # A run directory holds its checkpoint as model.pt.
        if (source / "model.pt").is_file():
            return source / "model.pt"
        raise CheckpointError(f"checkpoint {source} is a directory without a model.pt")
    if not source.exists():
        raise CheckpointError(f"checkpoint {source} not found")
    return source


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
    try:
        return torch.load(source, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        message = str(error)
        opcode = re.search(r"Unsupported operand (\d+)", message)
        if opcode:
            # An opcode torch.save never writes: garbage, or a plain pickle.dump, rather than an object.
            reason = f"pickle opcode {opcode.group(1)} is not one torch.save writes"
            raise CheckpointError(_unreadable_message(source, reason)) from None
        if "Weights only load failed" in message:
            raise CheckpointError(_unsafe_message(source, message)) from None
        raise CheckpointError(_unreadable_message(source, message)) from None
    except PermissionError as error:
        raise CheckpointError(f"checkpoint {source} cannot be read: {one_line(str(error))}") from None
    except Exception as error:  # noqa: BLE001  (corrupt files raise RuntimeError, EOFError, KeyError, ...)
        # RuntimeErrors carry torch's explanation; a bare KeyError('101') needs its type to mean anything.
        reason = str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__} {error}".strip()
        raise CheckpointError(_unreadable_message(source, reason)) from None


def _unsafe_message(source: Path, torch_message: str) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", torch_message)
    if found:
        what = f"a non-tensor object (global {found.group(1)})"
    else:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", torch_message, re.DOTALL)
        what = "a non-tensor object" + (f" ({one_line(detail.group(1), 80)})" if detail else "")
    return (
        f"checkpoint {source} refused: robustcam loads weights only (torch.load(weights_only=True)) "
        f"and the file contains {what} that would need arbitrary unpickling; "
        "re-save just the state_dict (torch.save(model.state_dict(), path)) from a trusted copy"
    )


def _unreadable_message(source: Path, reason: str) -> str:
    # torch's own explanations run on for several sentences; the first one says what failed.
    first = one_line(reason).split(". ")[0]
    if first in ("", "EOFError"):
        first = "unexpected end of file"
    return (
        f"checkpoint {source} is not a readable PyTorch checkpoint (truncated, or not written by torch.save?): {first}"
    )


def _read_safetensors(source: Path, device: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(source), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
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
