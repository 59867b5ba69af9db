"""Fitting a state_dict into a ``CAMClassifier``, by what the architecture's spec declares.

A state_dict is keyed either like the ``CAMClassifier`` (``features.*``,
``head.*``) or like the network the architecture was adapted from, whose names
the registry's ``ArchSpec`` gives: the head's name there, prefix renames for
layers that were rebuilt, and the statistics its weights were trained with.
Nothing here knows a particular architecture. The class and channel counts of a
bare state_dict are read from its head and first convolution.

Normalisation is decided once, in this order (``resolve_normalization``):

1. what the caller gives (``--normalization NAME``, ``--mean``/``--std``);
2. the checkpoint's own statistics: buffers its network normalises with (``mean``/``std``,
   RobustBench's ``mu``/``sigma``, ``normalize.mean``/``normalize.std``), else its meta;
3. the statistics the architecture fixes (``ArchSpec.normalization``: none for RobustBench's
   zoo, a timm model's pretrained config), for weights in the architecture's own layout;
4. the evaluated dataset's statistics, when the caller names them;
5. ImageNet's.

Steps 3 to 5 are an assumption and give a warning. ``meta["normalization"]`` records
which statistics were used, where they came from and how to change them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from robustcam.checkpoint.format import stats_agree, stats_list
from robustcam.checkpoint.messages import one_line, shape_problems
from robustcam.errors import CheckpointError, RobustcamError
from robustcam.models import IMAGENET, NEUTRAL, ArchSpec, CAMClassifier, Normalization, build_model, get_spec
from robustcam.models.normalization import NORMALIZATIONS, check_statistics, normalization_names
from robustcam.models.spec import HEAD_FROM_SPLIT, NATIVE_SOURCE

__all__ = [
    "NORMALIZATION_HINT",
    "DatasetStatistics",
    "Fitted",
    "fit_model",
    "install",
    "map_keys",
    "resolve_normalization",
    "split_normalization",
]

# The evaluated dataset's statistics, or a function of the checkpoint's meta that gives them when needed.
DatasetStatistics = Normalization | Callable[[Mapping[str, Any]], Normalization | None] | None
# How a user changes the statistics a checkpoint is evaluated with; recorded beside them.
NORMALIZATION_HINT = (
    f"change with --normalization NAME ({', '.join(normalization_names())}) or --mean/--std "
    "(normalization, mean, std in an eval config)"
)


class Fitted(NamedTuple):
    """A model of the right shape for a state_dict, and the state_dict keyed like it."""

    model: CAMClassifier
    layout: str  # the key layout the state_dict was in: NATIVE_SOURCE or the spec's source
    mapped: dict[str, Tensor]
    statistics_keys: tuple[str, str] | None = None  # the state_dict's names of its mean/std buffers


def fit_model(
    source: Path,
    arch: str,
    state_dict: Mapping[str, Tensor],
    *,
    num_classes: int | None,
    in_channels: int | None,
    kwargs: Mapping[str, Any],
) -> Fitted:
    """Build ``arch`` with the class and channel counts of ``state_dict`` where they are not given."""
    # A first model tells where the head and first convolution live, so that the class
    # and channel counts of a bare state_dict can be read from their weights.
    probe_classes = num_classes if num_classes is not None else 2
    probe_channels = in_channels
    if probe_channels is None:
        probe_channels = _channels_from_stats(split_normalization(state_dict)[0]) or 3
    model = _build(source, arch, probe_classes, probe_channels, kwargs)
    statistics, weights, statistics_keys = split_normalization(state_dict, expected=model.state_dict())
    layout, mapped = map_keys(_layout_spec(get_spec(arch), model), model.state_dict(), weights)
    mapped.update(statistics)  # the statistics are keyed like the CAMClassifier's in every layout
    final_classes = num_classes if num_classes is not None else _classes_from_head(source, arch, model, mapped)
    final_channels = in_channels
    if final_channels is None:
        final_channels = _channels_from_stats(statistics) or _channels_from_first_conv(model, mapped) or 3
    if (final_classes, final_channels) != (probe_classes, probe_channels):
        model = _build(source, arch, final_classes, final_channels, kwargs)
    return Fitted(model, layout, mapped, statistics_keys)


# Where networks keep the statistics they normalise their inputs with, in order of preference:
# the CAMClassifier's own buffers, RobustBench's mu/sigma buffers, a normalisation submodule's.
_NORMALIZATION_KEYS = (("mean", "std"), ("mu", "sigma"), ("normalize.mean", "normalize.std"))


def split_normalization(
    state_dict: Mapping[str, Tensor], *, expected: Mapping[str, Tensor] | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor], tuple[str, str] | None]:
    """``({"mean": ..., "std": ...}, the other entries, their keys)``: the input statistics a
    state_dict keeps, or ``({}, state_dict, None)``.

    A network that normalises inside keeps its statistics as buffers, top-level ``mean``/``std``
    (a ``CAMClassifier``, DeepMind's WideResNets), ``mu``/``sigma`` (RobustBench's zoo) or
    ``normalize.mean``/``normalize.std``; the first pair present becomes the model's
    ``mean``/``std``, whatever the key layout of the rest. Other pairs are left in place, and
    so is a pair that the model being loaded keeps in its features (``expected`` has
    ``features.mu``): that network normalises by itself.
    """
    rest = dict(state_dict)
    for mean_key, std_key in _NORMALIZATION_KEYS:
        if mean_key not in rest or std_key not in rest:
            continue
        if expected is not None and mean_key != "mean" and f"features.{mean_key}" in expected:
            continue
        return {"mean": rest.pop(mean_key), "std": rest.pop(std_key)}, rest, (mean_key, std_key)
    return {}, rest, None


def _layout_spec(spec: ArchSpec, model: CAMClassifier) -> ArchSpec:
    """``spec`` with the head's name filled in where only the built network knows it."""
    if spec.head == HEAD_FROM_SPLIT:
        return dataclasses.replace(spec, head=model.head_source)
    return spec


def map_keys(
    spec: ArchSpec, expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]
) -> tuple[str, dict[str, Tensor]]:
    """Return (layout, state_dict keyed like ``expected``): as it is, or mapped from the spec's source."""
    as_is = dict(state_dict)
    if not spec.foreign:
        return NATIVE_SOURCE, as_is
    renamed = _from_source_keys(spec, state_dict, expected)
    # densenet's torchvision keys already start with "features.", so count rather than guess.
    if _overlap(renamed, expected) > _overlap(as_is, expected):
        return spec.source, renamed
    return NATIVE_SOURCE, as_is


def resolve_normalization(
    source: Path,
    spec: ArchSpec,
    fitted: Fitted,
    meta: dict[str, Any],
    *,
    chosen: Normalization | None = None,
    dataset: DatasetStatistics = None,
) -> list[str]:
    """Put the statistics into ``fitted.mapped`` and ``meta``; return the warnings it gives.

    ``chosen`` is the caller's choice, ``dataset`` the evaluated dataset's statistics, or a
    function of ``meta`` that gives them, called only when they are needed (so that the
    dataset is loaded after the checkpoint fits); the order is the module's. ``meta`` gets
    ``mean``, ``std`` and ``normalization``: the name (a preset's when the values are one),
    the values, ``source`` (``given``, ``checkpoint``, ``architecture``, ``dataset`` or
    ``default``), ``origin`` in words, and ``change``.
    """
    in_channels = fitted.model.in_channels
    stored, stored_origin = _stored_normalization(fitted, meta)
    warnings: list[str] = []
    if chosen is not None:
        used, kind, origin = _fit_channels(source, chosen, in_channels), "given", chosen.description
        if stored is not None and not _same(stored, used, in_channels):
            warnings.append(
                f"normalisation overridden by the caller: {stored_origin} has mean={list(stored.mean)} "
                f"std={list(stored.std)}, using mean={list(used.mean)} std={list(used.std)}"
            )
    elif stored is not None:
        used, kind, origin = _fit_channels(source, stored, in_channels), "checkpoint", stored_origin
    else:
        used, kind, origin = _assumed_normalization(spec, fitted.layout, in_channels, dataset, meta)
        warnings.append(
            f"checkpoint has no normalisation statistics; assumed {origin}: mean={list(used.mean)} "
            f"std={list(used.std)} (pass normalization or mean/std if it was trained with others)"
        )
    for key in ("mean", "std"):
        values = used.values(key, in_channels)
        fitted.mapped[key] = torch.tensor(values, dtype=torch.float32).view(1, in_channels, 1, 1)
        if not stats_agree(meta.get(key), fitted.mapped[key]):
            meta[key] = values  # a stored value stays when it agrees, so meta round-trips exactly
    meta["normalization"] = {
        "name": _preset_name(used, in_channels), "mean": used.values("mean", in_channels),
        "std": used.values("std", in_channels), "source": kind, "origin": origin, "change": NORMALIZATION_HINT,
    }  # fmt: skip
    return warnings


def install(source: Path, fitted: Fitted) -> None:
    """Load ``fitted.mapped`` into ``fitted.model`` strictly; a misfit is a one-line CheckpointError."""
    model, mapped = fitted.model, fitted.mapped
    _fill_untracked_counters(model, mapped)
    _check_fits(source, model, mapped)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as error:  # _check_fits should have caught it; keep the one-line promise anyway
        raise CheckpointError(f"checkpoint {source} does not fit arch {model.arch!r}: {one_line(str(error))}") from None


def _build(source: Path, arch: str, num_classes: int, in_channels: int, kwargs: Mapping[str, Any]) -> CAMClassifier:
    try:
        return build_model(arch, num_classes, in_channels, **kwargs)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {source}: cannot build arch {arch!r}"
            + (f" with model_kwargs={dict(kwargs)}" if kwargs else "")
            + f": {one_line(str(error))}"
        ) from None


def _classes_from_head(source: Path, arch: str, model: CAMClassifier, mapped: Mapping[str, Tensor]) -> int:
    head_weight = mapped.get("head.weight")
    if head_weight is not None and head_weight.dim() == 2:
        return int(head_weight.shape[0])
    # Usually the wrong arch: say how badly the keys fit, not only what is missing.
    # The statistics come later and the head is what is being looked for; leave them out.
    skip = ("head.", "mean", "std")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(skip)}
    found = {k: tuple(v.shape) for k, v in mapped.items() if not k.startswith(skip)}
    problems = shape_problems(found, expected, source="checkpoint", target="model")
    raise CheckpointError(
        f"checkpoint {source} has no head weight to read the number of classes from for arch "
        f"{arch!r}" + (f" and does not fit it: {problems}" if problems else "; pass --num-classes")
    )


def _overlap(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> int:
    return sum(1 for key in state_dict if key in expected)


def _from_source_keys(
    spec: ArchSpec, state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    # The adapters keep the source network's names inside ``features``: that is the generic rule.
    rules = (*spec.renames, (f"{spec.head}.", "head."))
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


def _stored_normalization(fitted: Fitted, meta: Mapping[str, Any]) -> tuple[Normalization | None, str]:
    """The statistics the checkpoint itself records: its buffers first (what forward used), then meta."""
    in_state = fitted.mapped.get("mean"), fitted.mapped.get("std")
    if in_state[0] is not None and in_state[1] is not None:
        keys = "/".join(fitted.statistics_keys or ("mean", "std"))
        values = (tuple(stats_list(in_state[0])), tuple(stats_list(in_state[1])))
        origin = f"the checkpoint's {keys} buffers"
    else:
        values = (_numbers(meta.get("mean")), _numbers(meta.get("std")))
        origin = "the checkpoint's meta"
    if not values[0] or not values[1]:
        return None, ""
    return Normalization("the checkpoint's own", values[0], values[1], origin), origin


def _numbers(value: object) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    numbers = tuple(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    return numbers if len(numbers) == len(values) and len(numbers) in (1, 3) else ()


def _assumed_normalization(
    spec: ArchSpec, layout: str, in_channels: int, statistics: DatasetStatistics, meta: Mapping[str, Any]
) -> tuple[Normalization, str, str]:
    """The statistics for a state_dict without any: (them, source kind, where they come from in words)."""
    fixed = spec.normalization
    if fixed is not None and spec.foreign and layout == spec.source and fixed.fits(in_channels):
        return fixed, "architecture", f"the architecture's {fixed.description} ({spec.source} layout)"
    dataset = statistics(meta) if callable(statistics) else statistics
    if dataset is not None and dataset.fits(in_channels):
        return dataset, "dataset", f"the evaluated dataset's {dataset.description}"
    if IMAGENET.fits(in_channels):
        return IMAGENET, "default", f"{IMAGENET.description} (the default without dataset statistics)"
    return NEUTRAL, "default", "neutral statistics (the default for grey-scale inputs without dataset statistics)"


def _fit_channels(source: Path, normalization: Normalization, in_channels: int) -> Normalization:
    """``normalization`` checked against the model's channel count (1 value, or one per channel)."""
    try:
        for key in ("mean", "std"):
            check_statistics(key, getattr(normalization, key), in_channels=in_channels)
    except RobustcamError as error:
        raise CheckpointError(f"checkpoint {source}: {normalization.description}: {error}") from None
    return normalization


def _same(first: Normalization, second: Normalization, in_channels: int) -> bool:
    return all(
        torch.allclose(torch.tensor(first.values(key, in_channels)), torch.tensor(second.values(key, in_channels)),
                       rtol=1e-5, atol=1e-6)
        for key in ("mean", "std")
    )  # fmt: skip


def _preset_name(normalization: Normalization, in_channels: int) -> str:
    """The preset these statistics are (``cifar10``), else the name they came with."""
    for name, preset in NORMALIZATIONS.items():
        if preset.fits(in_channels) and _same(preset, normalization, in_channels):
            return name
    return normalization.name


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
    problems = shape_problems(found, expected, source="checkpoint", target="model")
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit arch {model.arch!r} (num_classes={model.num_classes}, "
            f"in_channels={model.in_channels}): {problems}"
        )
