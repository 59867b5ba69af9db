"""The checkpoint format and its metadata, and saving.

A robustcam checkpoint (``model.pt``) is ``torch.save`` of

    {"format": "robustcam-checkpoint/1", "state_dict": model.state_dict(), "meta": meta}

where ``meta`` is plain JSON data (arch, num_classes, in_channels, mean, std,
dataset, loss and noise specs, seed, metrics, versions, ...). A ``.safetensors``
file holds the same state_dict, with ``meta`` as JSON under the safetensors
metadata key ``"robustcam_meta"``.

Saving is atomic (``robustcam.io.atomic_write``): the file is written under a
temporary name in the target directory, flushed to disk, then renamed over the
target, so an interrupted save leaves the old checkpoint or the new one, never
half of one.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

import robustcam
from robustcam.checkpoint.messages import one_line, shape_problems
from robustcam.errors import CheckpointError
from robustcam.io import atomic_write, atomic_write_bytes
from robustcam.models import MODELS, CAMClassifier, build_model
from robustcam.runtime import library_versions

__all__ = [
    "FORMAT",
    "SAFETENSORS_META_KEY",
    "check_format",
    "save_checkpoint",
    "stats_agree",
    "stats_list",
]

FORMAT = "robustcam-checkpoint/1"
SAFETENSORS_META_KEY = "robustcam_meta"
FORMAT_PREFIX = "robustcam-checkpoint/"


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


def check_format(source: Path, file_format: object) -> None:
    """Refuse a file whose ``format`` is not the one this robustcam reads."""
    if file_format == FORMAT:
        return
    if isinstance(file_format, str) and file_format.startswith(FORMAT_PREFIX):
        raise CheckpointError(
            f"checkpoint {source} has format {file_format!r}, which this robustcam {robustcam.__version__} "
            f"cannot read (it reads {FORMAT!r}); upgrade robustcam"
        )
    raise CheckpointError(
        f"checkpoint {source} has format {file_format!r}, not a robustcam checkpoint "
        f"(robustcam reads {FORMAT!r} and bare state_dicts)"
    )


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
            if not stats_agree(plain[key], buffer):
                raise ValueError(
                    f"meta[{key!r}] is {plain[key]!r} but the model normalises with {key}={stats_list(buffer)}"
                )
        else:
            plain[key] = stats_list(buffer)
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
                raise TypeError(f"meta{where} has a key {key!r} of type {type(key).__name__}; JSON keys must be str")
            result[str.__str__(key)] = _plain_json(item, f"{where}[{key!r}]")
        return result
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    kind = type(value)
    raise TypeError(
        f"meta{where} is a {kind.__module__}.{kind.__qualname__}, which is not plain JSON data; "
        "store str/int/float/bool/None/list/dict (convert with .item(), .tolist() or str())"
    )


def stats_list(buffer: Tensor) -> list[float]:
    """A ``mean``/``std`` buffer as the list of floats that meta records."""
    values = buffer.detach().flatten().cpu()
    if values.dtype == torch.float32:
        # The shortest decimal that is the same float32: 0.1307, not 0.13070000708103180.
        return [float(str(value)) for value in values.numpy()]
    return [float(value) for value in values.tolist()]


def stats_agree(value: object, buffer: Tensor) -> bool:
    """Whether a meta value (a number or a list of them) is the statistics in ``buffer``."""
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
        rebuilt = _rebuilt_shapes(model.arch, model.num_classes, model.in_channels, json.dumps(kwargs, sort_keys=True))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"cannot save: build_model({model.arch!r}, {model.num_classes}, in_channels={model.in_channels}, "
            f"**meta['model_kwargs']) fails ({one_line(str(error))})"
        ) from error
    actual = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if actual != rebuilt:
        problems = shape_problems(actual, rebuilt, source="model", target="rebuilt")
        raise ValueError(
            f"cannot save: build_model({model.arch!r}, {model.num_classes}, in_channels={model.in_channels}) "
            f"with model_kwargs={kwargs} does not rebuild this model ({problems}); record the factory's "
            "keyword arguments in meta['model_kwargs']"
        )


@functools.lru_cache(maxsize=16)
def _rebuilt_shapes(arch: str, num_classes: int, in_channels: int, kwargs_json: str) -> dict[str, tuple[int, ...]]:
    # Cached because training saves the same architecture again and again.
    model = build_model(arch, num_classes, in_channels, **json.loads(kwargs_json))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
