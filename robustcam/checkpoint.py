"""Save and load checkpoints safely.

A robustcam checkpoint (``model.pt``) is ``torch.save`` of

    {"format": "robustcam-checkpoint/1", "state_dict": model.state_dict(), "meta": meta}

where ``meta`` is plain JSON data (arch, num_classes, in_channels, mean, std,
dataset, loss and noise specs, seed, metrics, versions, ...). A ``.safetensors``
file holds the same state_dict, with ``meta`` as JSON under the safetensors
metadata key ``"robustcam_meta"``.

Loading follows timm's habit of never unpickling arbitrary objects: every
``torch.load`` here uses ``weights_only=True``, so a file that would run code on
load is refused instead of trusted. Besides robustcam checkpoints,
``load_checkpoint`` accepts bare state_dicts of a ``CAMClassifier`` or of the
torchvision network it was adapted from (``conv1.weight ... fc.weight``),
inside the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
``{"net": ...}``, a DataParallel ``module.`` prefix). Every failure is a
``CheckpointError`` with a one-line message that names the file.

Saving is atomic (``robustcam.io.atomic_write``): the file is written under a
temporary name in the target directory, flushed to disk, then renamed over the
target, so an interrupted save leaves the old checkpoint or the new one, never
half of one.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

import robustcam
from robustcam.errors import CheckpointError
from robustcam.io import atomic_write, atomic_write_bytes
from robustcam.models import MODELS, CAMClassifier, build_model
from robustcam.runtime import library_versions

__all__ = [
    "FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAFETENSORS_META_KEY",
    "checkpoint_meta",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "robustcam-checkpoint/1"
SAFETENSORS_META_KEY = "robustcam_meta"
_FORMAT_PREFIX = "robustcam-checkpoint/"

# The statistics torchvision's ImageNet weights were trained with: the natural guess for a
# bare torchvision state_dict with 3 input channels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CAMClassifier's own default, used for everything else.
_NEUTRAL_STAT = 0.5

# Wrappers that training scripts commonly put around a state_dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Prefixes added by DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Where a torchvision network's parameters live in the CAMClassifier when the generic rule
# (``features.<k> <- <k>``, ``head.<x> <- <head_source>.<x>``) is not enough: architectures
# whose classifier was rebuilt to become CAM-capable (see robustcam.models.architectures).
_TORCHVISION_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "mobilenet_v3_large": (
        ("classifier.0.", "features.features.17.0."),  # Linear 960->1280 -> 1x1 conv
        ("classifier.3.", "head."),
    ),
}

# safetensors reports a corrupt header as SafetensorError; a short read as OSError.
_SAFETENSORS_ERRORS = (safetensors.SafetensorError, OSError, ValueError, RuntimeError)

_MAX_NAMES = 3  # names listed per kind of mismatch; the count says how many there are


# --------------------------------------------------------------------------- saving


def save_checkpoint(path: str | os.PathLike[str], model: CAMClassifier, meta: Mapping[str, Any]) -> Path:
    """Write ``model`` and ``meta`` to ``path`` atomically and return the path.

    ``meta`` is the caller's record of the run (dataset, loss and noise specs, seed,
    metrics, input size, ...). ``arch``, ``num_classes``, ``in_channels``, ``mean`` and
    ``std`` are filled in from the model, and ``versions`` (robustcam, torch,
    torchvision, python) when absent; a value the caller gives for one of the model's
    fields must agree with the model. Factory keyword arguments that ``build_model``
    needs to rebuild the model (``smallcnn``'s ``width``) belong in
    ``meta["model_kwargs"]``; the save is refused when ``build_model`` would not
    rebuild a model of the same shapes, since such a checkpoint could not be loaded.

    A path ending in ``.safetensors`` is written with safetensors, ``meta`` as JSON in
    its metadata; anything else with ``torch.save``. Parent directories are created.

    Raises:
        TypeError: ``meta`` holds something that is not plain JSON data (the message
            names the key, e.g. ``meta['metrics']['acc']``).
        ValueError: ``meta`` contradicts the model, or the model cannot be rebuilt from
            its arch, num_classes, in_channels and ``meta["model_kwargs"]``.
        OSError: the file could not be written; an existing file is left untouched.
    """
    if not isinstance(model, CAMClassifier):
        raise TypeError(f"model must be a CAMClassifier, got {type(model).__name__}")
    target = Path(path)
    full_meta = _complete_meta(model, meta)
    _check_rebuildable(model, full_meta)
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    if target.suffix == ".safetensors":
        metadata = {"format": FORMAT, SAFETENSORS_META_KEY: json.dumps(full_meta)}
        # safetensors refuses views and shared storage, hence the contiguous copies.
        tensors = {name: tensor.contiguous().clone() for name, tensor in state_dict.items()}
        atomic_write_bytes(target, safetensors.torch.save(tensors, metadata=metadata))
    else:
        payload = {"format": FORMAT, "state_dict": state_dict, "meta": full_meta}
        atomic_write(target, lambda handle: torch.save(payload, handle))
    return target


def _complete_meta(model: CAMClassifier, meta: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    plain = _plain_json(meta, "")
    assert isinstance(plain, dict)
    from_model: dict[str, Any] = {
        "arch": model.arch,
        "num_classes": model.num_classes,
        "in_channels": model.in_channels,
    }
    for key, value in from_model.items():
        if key in plain and plain[key] != value:
            raise ValueError(f"meta[{key!r}] is {plain[key]!r} but the model has {key}={value!r}")
        plain.setdefault(key, value)
    for key in ("mean", "std"):
        buffer: Tensor = getattr(model, key)
        if key in plain:
            if not _stats_agree(plain[key], buffer):
                raise ValueError(
                    f"meta[{key!r}] is {plain[key]!r} but the model normalises with "
                    f"{key}={_stats_list(buffer)}"
                )
        else:
            plain[key] = _stats_list(buffer)
    plain.setdefault("versions", library_versions())
    if "model_kwargs" in plain and not isinstance(plain["model_kwargs"], dict):
        raise TypeError(f"meta['model_kwargs'] must be a dict, got {type(plain['model_kwargs']).__name__}")
    return plain


def _plain_json(value: object, where: str) -> object:
    """``value`` rebuilt from exact builtin JSON types; anything else is a TypeError naming its key.

    Exact types matter beyond JSON: a ``numpy.float64`` or an enum member would be
    pickled as a global, and ``torch.load(weights_only=True)`` would then refuse the
    very checkpoint we wrote.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    # Subclasses (numpy.float64, IntEnum, str-valued enums) become the plain builtin.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        result: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"meta{where} has a key {key!r} of type {type(key).__name__}; JSON keys must be str"
                )
            result[str.__str__(key)] = _plain_json(item, f"{where}[{key!r}]")
        return result
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    kind = type(value)
    raise TypeError(
        f"meta{where} is a {kind.__module__}.{kind.__qualname__}, which is not plain JSON data; "
        "store str/int/float/bool/None/list/dict (convert with .item(), .tolist() or str())"
    )


def _stats_list(buffer: Tensor) -> list[float]:
    values = buffer.detach().flatten().cpu()
    if values.dtype == torch.float32:
        # The shortest decimal that is the same float32: 0.1307, not 0.13070000708103180.
        return [float(str(value)) for value in values.numpy()]
    return [float(value) for value in values.tolist()]


def _stats_agree(value: object, buffer: Tensor) -> bool:
    values: list[object] = list(value) if isinstance(value, list) else [value]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values):
        return False
    stats = torch.tensor(numbers, dtype=torch.float64)
    flat = buffer.detach().flatten().double().cpu()
    if stats.numel() == 1:
        stats = stats.expand_as(flat)
    # float32 buffers hold 0.1307 as 0.13070000708..., so compare with a tolerance.
    return stats.shape == flat.shape and bool(torch.allclose(stats, flat, rtol=1e-5, atol=1e-6))




def _check_rebuildable(model: CAMClassifier, meta: Mapping[str, Any]) -> None:
    if model.arch not in MODELS:
        raise ValueError(
            f"cannot save a checkpoint of arch {model.arch!r}: load_checkpoint rebuilds models with "
            f"build_model and that is not a registered architecture; {MODELS.unknown_message(model.arch)}"
        )
    kwargs = meta.get("model_kwargs", {})
    try:
        rebuilt = _rebuilt_shapes(
            model.arch, model.num_classes, model.in_channels, json.dumps(kwargs, sort_keys=True)
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot save: build_model({model.arch!r}, {model.num_classes}, in_channels={model.in_channels}, "
            f"**meta['model_kwargs']) fails ({_one_line(str(error))})"
        ) from error
    actual = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if actual != rebuilt:
        problems = _shape_problems(actual, rebuilt, source="model", target="rebuilt")
        raise ValueError(
            f"cannot save: build_model({model.arch!r}, {model.num_classes}, in_channels={model.in_channels}) "
            f"with model_kwargs={kwargs} does not rebuild this model ({problems}); record the factory's "
            "keyword arguments in meta['model_kwargs']"
        )


@functools.lru_cache(maxsize=16)
def _rebuilt_shapes(
    arch: str, num_classes: int, in_channels: int, kwargs_json: str
) -> dict[str, tuple[int, ...]]:
    # Cached because training saves the same architecture again and again.
    model = build_model(arch, num_classes, in_channels, **json.loads(kwargs_json))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


# --------------------------------------------------------------------------- reading


def checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored in a checkpoint, without building the model.

    Returns ``{}`` for files without robustcam metadata (bare state_dicts, plain
    safetensors). Reads with ``weights_only=True`` like ``load_checkpoint``; a
    safetensors file is read from its header only.
    """
    source = _resolve_path(path)
    if source.suffix == ".safetensors":
        metadata = _read_safetensors_metadata(source)
        return _meta_from_safetensors(source, metadata) or {}
    # Memory-mapping avoids reading every tensor just to get at the metadata.
    loaded = _torch_load(source, "cpu", mmap=zipfile.is_zipfile(source))
    if isinstance(loaded, Mapping) and "format" in loaded:
        _, meta = _unpack_robustcam(source, loaded)
        return meta
    return {}


def _resolve_path(path: str | os.PathLike[str]) -> Path:
    source = Path(path)
    if source.is_dir():
        # A run directory holds its checkpoint as model.pt.
        if (source / "model.pt").is_file():
            return source / "model.pt"
        raise CheckpointError(f"checkpoint {source} is a directory without a model.pt")
    if not source.exists():
        raise CheckpointError(f"checkpoint {source} not found")
    return source


def _one_line(text: str, limit: int = 200) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # torch colours parts of its messages
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        raise CheckpointError(f"checkpoint {source} cannot be read: {_one_line(str(error))}") from None
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
        what = "a non-tensor object" + (f" ({_one_line(detail.group(1), 80)})" if detail else "")
    return (
        f"checkpoint {source} refused: robustcam loads weights only (torch.load(weights_only=True)) "
        f"and the file contains {what} that would need arbitrary unpickling; "
        "re-save just the state_dict (torch.save(model.state_dict(), path)) from a trusted copy"
    )


def _unreadable_message(source: Path, reason: str) -> str:
    # torch's own explanations run on for several sentences; the first one says what failed.
    first = _one_line(reason).split(". ")[0]
    if first in ("", "EOFError"):
        first = "unexpected end of file"
    return (
        f"checkpoint {source} is not a readable PyTorch checkpoint "
        f"(truncated, or not written by torch.save?): {first}"
    )


def _read_safetensors(source: Path, device: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(source), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except _SAFETENSORS_ERRORS as error:
        raise CheckpointError(
            f"checkpoint {source} is not a readable safetensors file: {_one_line(str(error))}"
        ) from None
    return tensors, dict(metadata)


def _read_safetensors_metadata(source: Path) -> dict[str, str]:
    try:
        with safetensors.safe_open(str(source), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except _SAFETENSORS_ERRORS as error:
        raise CheckpointError(
            f"checkpoint {source} is not a readable safetensors file: {_one_line(str(error))}"
        ) from None


def _meta_from_safetensors(source: Path, metadata: Mapping[str, str]) -> dict[str, Any] | None:
    file_format = metadata.get("format")
    if file_format is not None and file_format.startswith(_FORMAT_PREFIX):
        _check_format(source, file_format)
    if SAFETENSORS_META_KEY not in metadata:
        return None
    try:
        meta = json.loads(metadata[SAFETENSORS_META_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"checkpoint {source} has unreadable {SAFETENSORS_META_KEY!r} metadata: {_one_line(str(error))}"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {source} has {SAFETENSORS_META_KEY!r} metadata that is not a JSON object"
        )
    return meta


def _check_format(source: Path, file_format: object) -> None:
    if file_format == FORMAT:
        return
    if isinstance(file_format, str) and file_format.startswith(_FORMAT_PREFIX):
        raise CheckpointError(
            f"checkpoint {source} has format {file_format!r}, which this robustcam {robustcam.__version__} "
            f"cannot read (it reads {FORMAT!r}); upgrade robustcam"
        )
    raise CheckpointError(
        f"checkpoint {source} has format {file_format!r}, not a robustcam checkpoint "
        f"(robustcam reads {FORMAT!r} and bare state_dicts)"
    )


def _unpack_robustcam(source: Path, loaded: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    _check_format(source, loaded["format"])
    state_dict = loaded.get("state_dict")
    meta = loaded.get("meta")
    if not isinstance(state_dict, Mapping) or not isinstance(meta, Mapping):
        raise CheckpointError(f"checkpoint {source} is malformed: it needs a 'state_dict' and a 'meta' dict")
    return _tensors_only(source, state_dict), dict(meta)


def _tensors_only(source: Path, candidate: Mapping[Any, Any]) -> dict[str, Tensor]:
    if not candidate:
        raise CheckpointError(f"checkpoint {source} holds an empty dict, not a state_dict")
    bad = [
        key for key, value in candidate.items() if not (isinstance(key, str) and isinstance(value, Tensor))
    ]
    if bad:
        keys = ", ".join(repr(key) for key in list(candidate)[:_MAX_NAMES])
        raise CheckpointError(
            f"checkpoint {source} holds no state_dict: expected a dict of tensors, but {len(bad)} of its "
            f"{len(candidate)} entries are not tensors (e.g. {bad[0]!r}; keys {keys}{_more(list(candidate))})"
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


# --------------------------------------------------------------------------- loading


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[CAMClassifier, dict[str, Any]]:
    """Load a checkpoint into a ``CAMClassifier`` in eval mode; return ``(model, meta)``.

    Accepts a robustcam checkpoint (``.pt`` or ``.safetensors``), a run directory
    holding ``model.pt``, and bare state_dicts (``.pt``/``.pth``/``.safetensors``)
    keyed like a ``CAMClassifier`` (``features.*``, ``head.*``) or like the torchvision
    network it adapts (``conv1.weight ... fc.weight``), also inside
    ``{"state_dict"|"model"|"net": ...}`` and with DataParallel's ``module.`` prefix.

    Everything the stored metadata says wins unless an argument is given; an argument
    that contradicts the metadata is an error. For a bare state_dict, ``arch`` is
    required, ``num_classes`` is read from the head weight and ``in_channels`` from the
    first convolution. A bare state_dict has no normalisation statistics: unless
    ``mean``/``std`` are passed, torchvision-keyed ones with 3 channels get the
    ImageNet statistics their pretrained weights use, anything else 0.5/0.5 (the
    ``CAMClassifier`` default), and ``meta["warnings"]`` says so. ``meta`` gets the
    resolved ``arch``, ``num_classes``, ``in_channels``, ``mean`` and ``std``;
    ``"warnings"`` appears only when something was assumed or overridden.

    Files are read with ``torch.load(weights_only=True)`` only; anything that would
    need arbitrary unpickling is refused. Every failure is a ``CheckpointError`` with a
    one-line message naming the file.

    Args:
        path: the checkpoint file, or a run directory containing ``model.pt``.
        arch, num_classes, in_channels: needed for bare state_dicts (only ``arch``
            cannot be inferred); checked against the metadata otherwise.
        mean, std: normalisation statistics overriding the stored or assumed ones.
        model_kwargs: extra ``build_model`` keyword arguments (``width`` for smallcnn),
            merged with ``meta["model_kwargs"]``.
        map_location: device for the tensors and the returned model.
    """
    source = _resolve_path(path)
    device = map_location if isinstance(map_location, str) else str(map_location)
    stored_meta: dict[str, Any] | None
    if source.suffix == ".safetensors":
        tensors, metadata = _read_safetensors(source, device)
        stored_meta = _meta_from_safetensors(source, metadata)
        state_dict = _unwrap(source, tensors)
    else:
        loaded = _torch_load(source, map_location)
        if isinstance(loaded, Mapping) and "format" in loaded:
            state_dict, stored_meta = _unpack_robustcam(source, loaded)
        else:
            stored_meta = None
            state_dict = _unwrap(source, loaded)

    meta: dict[str, Any] = dict(stored_meta) if stored_meta is not None else {}
    warnings: list[str] = (
        [str(w) for w in meta.get("warnings", [])] if isinstance(meta.get("warnings"), list) else []
    )

    resolved_arch = _agree(source, "arch", meta.get("arch"), arch)
    if resolved_arch is None:
        what = "has no metadata" if stored_meta is None else "records no arch"
        raise CheckpointError(f"checkpoint {source} {what}; pass --arch (valid: {', '.join(MODELS.names())})")
    if resolved_arch not in MODELS:
        raise CheckpointError(f"checkpoint {source}: {MODELS.unknown_message(str(resolved_arch))}")
    kwargs = _merge_model_kwargs(source, meta.get("model_kwargs"), model_kwargs)
    wanted_classes = _agree(source, "num_classes", meta.get("num_classes"), num_classes)
    wanted_channels = _agree(source, "in_channels", meta.get("in_channels"), in_channels)

    # A first model tells where the head and first convolution live, so that the class
    # and channel counts of a bare state_dict can be read from their weights.
    probe_classes = wanted_classes if wanted_classes is not None else 2
    probe_channels = wanted_channels if wanted_channels is not None else _channels_from_stats(state_dict) or 3
    model = _build(source, resolved_arch, probe_classes, probe_channels, kwargs)
    layout, mapped = _map_keys(resolved_arch, model, state_dict)

    final_classes = wanted_classes
    if final_classes is None:
        head_weight = mapped.get("head.weight")
        if head_weight is None or head_weight.dim() != 2:
            # Usually the wrong arch: say how badly the keys fit, not only what is missing.
            # The statistics come later and the head is what is being looked for; leave them out.
            skip = ("head.", "mean", "std")
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(skip)}
            found = {k: tuple(v.shape) for k, v in mapped.items() if not k.startswith(skip)}
            problems = _shape_problems(found, expected, source="checkpoint", target="model")
            raise CheckpointError(
                f"checkpoint {source} has no head weight to read the number of classes from for arch "
                f"{resolved_arch!r}"
                + (f" and does not fit it: {problems}" if problems else "; pass --num-classes")
            )
        final_classes = int(head_weight.shape[0])
    final_channels = wanted_channels
    if final_channels is None:
        final_channels = _channels_from_stats(state_dict) or _channels_from_first_conv(model, mapped) or 3
    if (final_classes, final_channels) != (probe_classes, probe_channels):
        model = _build(source, resolved_arch, final_classes, final_channels, kwargs)

    meta.update(arch=resolved_arch, num_classes=final_classes, in_channels=final_channels)
    assumed: dict[str, list[float]] = {}
    for key, given in (("mean", mean), ("std", std)):
        stored = _stored_stats(mapped.get(key), meta.get(key))
        if given is not None:
            values = [float(v) for v in given]
            if stored is not None and not _stats_agree(values, torch.tensor(stored)):
                warnings.append(f"{key} overridden by the caller: checkpoint has {stored}, using {values}")
        elif stored is not None:
            values = stored
        else:
            values = _default_stats(key, layout, final_channels)
            assumed[key] = values
        mapped[key] = _stats_tensor(source, key, values, final_channels)
        if not _stats_agree(meta.get(key), mapped[key]):
            meta[key] = values  # a stored value stays when it agrees, so meta round-trips exactly
    if assumed:
        origin = (
            "torchvision's ImageNet statistics"
            if layout == "torchvision" and final_channels == 3
            else "neutral"
        )
        shown = ", ".join(f"{key}={values}" for key, values in assumed.items())
        warnings.append(
            f"checkpoint has no normalisation statistics; assumed {origin} {shown} "
            "(pass mean/std if the network was trained with others)"
        )
    _fill_untracked_counters(model, mapped)
    _check_fits(source, model, mapped)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as error:  # _check_fits should have caught it; keep the one-line promise anyway
        raise CheckpointError(
            f"checkpoint {source} does not fit arch {resolved_arch!r}: {_one_line(str(error))}"
        ) from None

    if kwargs:
        meta["model_kwargs"] = kwargs
    if warnings:
        meta["warnings"] = warnings
    model.to(device)
    model.eval()
    return model, meta


def _agree(source: Path, key: str, stored: Any, given: Any) -> Any:
    if given is None:
        return stored
    if stored is not None and stored != given:
        raise CheckpointError(f"checkpoint {source} records {key}={stored!r} but {key}={given!r} was passed")
    return given


def _merge_model_kwargs(source: Path, stored: object, given: Mapping[str, Any] | None) -> dict[str, Any]:
    merged: dict[str, Any] = dict(stored) if isinstance(stored, Mapping) else {}
    for key, value in (given or {}).items():
        if key in merged and merged[key] != value:
            raise CheckpointError(
                f"checkpoint {source} records model_kwargs[{key!r}]={merged[key]!r} but {value!r} was passed"
            )
        merged[key] = value
    return merged


def _build(
    source: Path, arch: str, num_classes: int, in_channels: int, kwargs: Mapping[str, Any]
) -> CAMClassifier:
    try:
        return build_model(arch, num_classes, in_channels, **kwargs)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {source}: cannot build arch {arch!r}"
            + (f" with model_kwargs={dict(kwargs)}" if kwargs else "")
            + f": {_one_line(str(error))}"
        ) from None


def _map_keys(
    arch: str, model: CAMClassifier, state_dict: Mapping[str, Tensor]
) -> tuple[str, dict[str, Tensor]]:
    """Return ("robustcam" | "torchvision", state_dict keyed like ``model``), whichever fits better."""
    expected = model.state_dict()
    as_is = dict(state_dict)
    renamed = _from_torchvision_keys(arch, model.head_source, state_dict, expected)
    # densenet's torchvision keys already start with "features.", so count rather than guess.
    if _overlap(renamed, expected) > _overlap(as_is, expected):
        return "torchvision", renamed
    return "robustcam", as_is


def _overlap(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> int:
    return sum(1 for key in state_dict if key in expected)


def _from_torchvision_keys(
    arch: str, head_source: str, state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    rules = (*_TORCHVISION_RENAMES.get(arch, ()), (f"{head_source}.", "head."))
    renamed: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        for old, new in rules:
            if key.startswith(old):
                name = new + key[len(old) :]
                target = expected.get(name)
                if target is not None and _is_pointwise_version(tensor, target):
                    tensor = tensor.reshape(target.shape)
                break
        else:
            name = f"features.{key}"
        renamed[name] = tensor
    return renamed


def _is_pointwise_version(tensor: Tensor, target: Tensor) -> bool:
    """Whether ``target`` is ``tensor`` with trailing 1s: a Linear (out, in) as a 1x1 conv (out, in, 1, 1)."""
    extra = tuple(target.shape[tensor.dim() :])
    return (
        target.dim() > tensor.dim()
        and tuple(target.shape[: tensor.dim()]) == tuple(tensor.shape)
        and all(size == 1 for size in extra)
    )


def _channels_from_stats(state_dict: Mapping[str, Tensor]) -> int | None:
    stats = state_dict.get("mean")
    if stats is not None and stats.numel() in (1, 3):
        return int(stats.numel())
    return None


def _channels_from_first_conv(model: CAMClassifier, mapped: Mapping[str, Tensor]) -> int | None:
    first = next((name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)), None)
    weight = mapped.get(f"{first}.weight") if first is not None else None
    if weight is not None and weight.dim() == 4 and weight.shape[1] in (1, 3):
        return int(weight.shape[1])
    return None


def _stored_stats(from_state: Tensor | None, from_meta: object) -> list[float] | None:
    """Statistics the checkpoint itself records: its buffers first (what forward used), then meta."""
    if from_state is not None:
        return _stats_list(from_state)
    values = from_meta if isinstance(from_meta, list) else [from_meta]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numbers if numbers and len(numbers) == len(values) else None


def _default_stats(key: str, layout: str, in_channels: int) -> list[float]:
    if layout == "torchvision" and in_channels == 3:
        return list(IMAGENET_MEAN if key == "mean" else IMAGENET_STD)
    return [_NEUTRAL_STAT] * in_channels


def _stats_tensor(source: Path, key: str, values: list[float], in_channels: int) -> Tensor:
    if len(values) == 1:
        values = values * in_channels
    if len(values) != in_channels:
        raise CheckpointError(
            f"checkpoint {source}: {key} has {len(values)} values but the model has in_channels={in_channels}"
        )
    return torch.tensor(values, dtype=torch.float32).view(1, in_channels, 1, 1)


def _fill_untracked_counters(model: CAMClassifier, mapped: dict[str, Tensor]) -> None:
    # State_dicts from before PyTorch 0.4.1 have no BatchNorm counters; they only drive momentum=None.
    for name, tensor in model.state_dict().items():
        if name.endswith(".num_batches_tracked") and name not in mapped:
            mapped[name] = tensor


def _check_fits(source: Path, model: CAMClassifier, mapped: Mapping[str, Tensor]) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in mapped.items()}
    if found == expected:
        return
    problems = _shape_problems(found, expected, source="checkpoint", target="model")
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit arch {model.arch!r} (num_classes={model.num_classes}, "
            f"in_channels={model.in_channels}): {problems}"
        )


def _shape_problems(
    found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], *, source: str, target: str
) -> str:
    """One-line summary: size mismatches first (most telling), then missing and unexpected keys."""
    mismatched = [name for name in expected if name in found and found[name] != expected[name]]
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    parts: list[str] = []
    if mismatched:
        shown = "; ".join(
            f"{name}: {source} {_shape(found[name])} vs {target} {_shape(expected[name])}"
            for name in mismatched[:_MAX_NAMES]
        )
        parts.append(
            f"{_count(len(mismatched), 'size mismatch', 'size mismatches')} ({shown}{_more(mismatched)})"
        )
    for names, label in ((missing, "missing key"), (unexpected, "unexpected key")):
        if names:
            shown = ", ".join(names[:_MAX_NAMES])
            parts.append(f"{_count(len(names), label, label + 's')} ({shown}{_more(names)})")
    return "; ".join(parts)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def _count(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def _more(names: Sequence[str]) -> str:
    return f", ... {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
