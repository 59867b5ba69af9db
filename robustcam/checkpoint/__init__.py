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

from robustcam.checkpoint.adapt import DatasetStatistics, fit_model, install, resolve_normalization
from robustcam.checkpoint.format import FORMAT, SAFETENSORS_META_KEY, save_checkpoint
from robustcam.checkpoint.reading import checkpoint_meta, read_checkpoint, resolve_path
from robustcam.errors import CheckpointError, InputError
from robustcam.models import MODELS, CAMClassifier, Normalization, get_spec
from robustcam.models.normalization import explicit_normalization

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
    normalization: str | Normalization | None = None,
    dataset_statistics: DatasetStatistics = None,
    model_kwargs: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    factory_from_meta: bool = False,
) -> tuple[CAMClassifier, dict[str, Any]]:
    """Load a checkpoint into a ``CAMClassifier`` in eval mode; return ``(model, meta)``.

    Accepts a robustcam checkpoint (``.pt`` or ``.safetensors``), a run directory
    holding ``model.pt``, a folder holding ``model.safetensors`` or ``pytorch_model.bin``
    (a Hugging Face cache folder too), and bare state_dicts (``.pt``/``.pth``/``.bin``/``.safetensors``)
    keyed like a ``CAMClassifier`` (``features.*``, ``head.*``) or like the network it
    adapts as its ``ArchSpec`` declares (torchvision's ``conv1.weight ... fc.weight``),
    also inside ``{"state_dict"|"model"|"net": ...}`` and with DataParallel's
    ``module.`` prefix.

    Everything the stored metadata says wins unless an argument is given; an argument
    that contradicts the metadata is an error. For a bare state_dict, ``arch`` is
    required, ``num_classes`` is read from the head weight and ``in_channels`` from the
    first convolution.

    Normalisation (``robustcam.checkpoint.adapt``): ``normalization`` (a preset name such
    as ``"cifar10"`` or ``"none"``, or a ``Normalization``) or ``mean`` and ``std`` win; then
    the checkpoint's own statistics (its ``mean``/``std``, ``mu``/``sigma`` or
    ``normalize.mean``/``normalize.std`` buffers, else its meta); then the statistics the
    architecture fixes (RobustBench's zoo: none; timm: the pretrained config's); then
    ``dataset_statistics`` (the evaluated dataset's); then ImageNet's. The last three give a
    warning. ``meta`` gets the resolved ``arch``, ``num_classes``, ``in_channels``, ``mean``,
    ``std`` and ``normalization`` (which statistics, where from, how to change them);
    ``"warnings"`` appears only when something was assumed or overridden.

    Files are read with ``torch.load(weights_only=True)`` only; anything that would
    need arbitrary unpickling is refused. Every failure is a ``CheckpointError`` with a
    one-line message naming the file.

    Args:
        path: the checkpoint file, or a run directory containing ``model.pt``.
        arch, num_classes, in_channels: needed for bare state_dicts (only ``arch``
            cannot be inferred); checked against the metadata otherwise.
        mean, std, normalization: statistics overriding the stored or assumed ones
            (``normalization`` or ``mean``/``std``, not both).
        dataset_statistics: the evaluated dataset's statistics, for a bare state_dict
            that carries none and whose architecture fixes none; or a function of the
            resolved meta that gives them, called only then (it may load the dataset).
        model_kwargs: extra ``build_model`` keyword arguments (``width`` for smallcnn),
            merged with ``meta["model_kwargs"]``.
        map_location: device for the tensors and the returned model.
        factory_from_meta: run the user factory that the metadata names as ``arch``. Off by
            default, since a file never names code to run: the user passes ``arch`` instead.
            Only for runs robustcam trained from the user's own config (their evaluation).
    """
    source = resolve_path(path)
    chosen = _chosen_normalization(normalization, mean, std)
    state_dict, stored_meta = read_checkpoint(source, map_location)
    meta: dict[str, Any] = dict(stored_meta) if stored_meta is not None else {}
    stored_warnings = meta.get("warnings")
    warnings = [str(w) for w in stored_warnings] if isinstance(stored_warnings, list) else []

    resolved_arch = _resolve_arch(
        source, meta.get("arch"), arch, has_meta=stored_meta is not None, factory_from_meta=factory_from_meta
    )
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
    warnings += resolve_normalization(
        source, get_spec(resolved_arch), fitted, meta, chosen=chosen, dataset=dataset_statistics
    )
    install(source, fitted)

    if kwargs:
        meta["model_kwargs"] = kwargs
    if warnings:
        meta["warnings"] = warnings
    model.to(map_location if isinstance(map_location, str) else str(map_location))
    model.eval()
    return model, meta


def _chosen_normalization(
    normalization: str | Normalization | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Normalization | None:
    if isinstance(normalization, Normalization):
        if mean is not None or std is not None:
            raise InputError(f"give normalization {normalization.name!r} or mean/std, not both")
        return normalization
    return explicit_normalization(normalization, mean, std)


def _resolve_arch(
    source: Path, stored: object, given: str | None, *, has_meta: bool, factory_from_meta: bool = False
) -> str:
    resolved = _agree(source, "arch", stored, given)
    if given is None and not factory_from_meta and isinstance(resolved, str) and MODELS.runs_user_code(resolved):
        # A file never names code to run: the user does, by passing the same name.
        raise CheckpointError(
            f"checkpoint {source} was built by the model factory {resolved!r}; robustcam runs only code you "
            f"name: pass --arch {resolved} (arch={resolved!r}) to import and run it"
        )
    if resolved is None:
        what = "has no metadata" if not has_meta else "records no arch"
        raise CheckpointError(
            f"checkpoint {source} {what}; pass --arch (valid: {', '.join(MODELS.names())}, "
            "timm:<model name>, <module.path or file.py>:<function>)"
        )
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
