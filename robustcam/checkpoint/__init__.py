"""Save and load checkpoints safely.

A robustcam checkpoint (``model.pt``) is ``torch.save`` of
``{"format": "robustcam-checkpoint/1", "state_dict": ..., "meta": ...}`` with plain
JSON meta, or a ``.safetensors`` file with that meta in its metadata. Besides
robustcam checkpoints, ``load_checkpoint`` accepts bare state_dicts of a
``CAMClassifier`` or of the network it was adapted from, keyed as the
architecture's ``ArchSpec`` in the model registry declares, inside the usual
wrappers. Every ``torch.load`` uses ``weights_only=True`` (timm's habit), and
every failure is a ``CheckpointError`` with a one-line message naming the file.

The package is three steps, one module each:

- ``format``: the file format, meta completion and JSON checks, atomic saving;
- ``reading``: safe ``torch.load`` and safetensors reading, unwrapping;
- ``adapt``: fitting a state_dict into a ``CAMClassifier`` by the architecture's spec.

``load_checkpoint`` below coordinates them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from robustcam.checkpoint.adapt import fit_model, install, resolve_normalization
from robustcam.checkpoint.format import FORMAT, SAFETENSORS_META_KEY, save_checkpoint
from robustcam.checkpoint.reading import checkpoint_meta, read_checkpoint, resolve_path
from robustcam.errors import CheckpointError
from robustcam.models import MODELS, CAMClassifier, get_spec

# Kept importable from here, where they used to be defined; the values live in robustcam.models.
from robustcam.models.spec import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAFETENSORS_META_KEY",
    "checkpoint_meta",
    "load_checkpoint",
    "save_checkpoint",
]


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
    keyed like a ``CAMClassifier`` (``features.*``, ``head.*``) or like the network it
    adapts as its ``ArchSpec`` declares (torchvision's ``conv1.weight ... fc.weight``),
    also inside ``{"state_dict"|"model"|"net": ...}`` and with DataParallel's
    ``module.`` prefix.

    Everything the stored metadata says wins unless an argument is given; an argument
    that contradicts the metadata is an error. For a bare state_dict, ``arch`` is
    required, ``num_classes`` is read from the head weight and ``in_channels`` from the
    first convolution. A bare state_dict has no normalisation statistics: unless
    ``mean``/``std`` are passed, one keyed like the spec's source network gets the
    statistics the spec declares for it (ImageNet's for torchvision layouts with 3
    channels), anything else 0.5/0.5 (the ``CAMClassifier`` default), and
    ``meta["warnings"]`` says so. ``meta`` gets the resolved ``arch``,
    ``num_classes``, ``in_channels``, ``mean`` and ``std``; ``"warnings"`` appears
    only when something was assumed or overridden.

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
    source = resolve_path(path)
    state_dict, stored_meta = read_checkpoint(source, map_location)
    meta: dict[str, Any] = dict(stored_meta) if stored_meta is not None else {}
    stored_warnings = meta.get("warnings")
    warnings = [str(w) for w in stored_warnings] if isinstance(stored_warnings, list) else []

    resolved_arch = _resolve_arch(source, meta.get("arch"), arch, has_meta=stored_meta is not None)
    kwargs = _merge_model_kwargs(source, meta.get("model_kwargs"), model_kwargs)
    wanted_classes = _agree(source, "num_classes", meta.get("num_classes"), num_classes)
    wanted_channels = _agree(source, "in_channels", meta.get("in_channels"), in_channels)
    fitted = fit_model(
        source,
        resolved_arch,
        state_dict,
        num_classes=wanted_classes,
        in_channels=wanted_channels,
        kwargs=kwargs,
    )
    model = fitted.model
    meta.update(arch=resolved_arch, num_classes=model.num_classes, in_channels=model.in_channels)
    warnings += resolve_normalization(source, get_spec(resolved_arch), fitted, meta, mean=mean, std=std)
    install(source, fitted)

    if kwargs:
        meta["model_kwargs"] = kwargs
    if warnings:
        meta["warnings"] = warnings
    model.to(map_location if isinstance(map_location, str) else str(map_location))
    model.eval()
    return model, meta


def _resolve_arch(source: Path, stored: object, given: str | None, *, has_meta: bool) -> str:
    resolved = _agree(source, "arch", stored, given)
    if resolved is None:
        what = "has no metadata" if not has_meta else "records no arch"
        raise CheckpointError(f"checkpoint {source} {what}; pass --arch (valid: {', '.join(MODELS.names())})")
    if resolved not in MODELS:
        raise CheckpointError(f"checkpoint {source}: {MODELS.unknown_message(str(resolved))}")
    return str(resolved)


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
