"""Fitting a state_dict into a ``CAMClassifier``, by what the architecture's spec declares.

A state_dict is keyed either like the ``CAMClassifier`` (``features.*``,
``head.*``) or like the network the architecture was adapted from, whose names
the registry's ``ArchSpec`` gives: the head's name there, prefix renames for
layers that were rebuilt, and the statistics its weights were trained with.
Nothing here knows a particular architecture. The class and channel counts of a
bare state_dict are read from its head and first convolution, and missing
normalisation statistics are assumed from the spec, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from robustcam.checkpoint.format import stats_agree, stats_list
from robustcam.checkpoint.messages import one_line, shape_problems
from robustcam.errors import CheckpointError
from robustcam.models import NEUTRAL, ArchSpec, CAMClassifier, Normalization, build_model, get_spec
from robustcam.models.spec import NATIVE_SOURCE

__all__ = ["Fitted", "fit_model", "install", "map_keys", "resolve_normalization"]


class Fitted(NamedTuple):
    """A model of the right shape for a state_dict, and the state_dict keyed like it."""

    model: CAMClassifier
    layout: str  # the key layout the state_dict was in: NATIVE_SOURCE or the spec's source
    mapped: dict[str, Tensor]


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
    probe_channels = in_channels if in_channels is not None else _channels_from_stats(state_dict) or 3
    model = _build(source, arch, probe_classes, probe_channels, kwargs)
    layout, mapped = map_keys(get_spec(arch), model.state_dict(), state_dict)
    final_classes = num_classes if num_classes is not None else _classes_from_head(source, arch, model, mapped)
    final_channels = in_channels
    if final_channels is None:
        final_channels = _channels_from_stats(state_dict) or _channels_from_first_conv(model, mapped) or 3
    if (final_classes, final_channels) != (probe_classes, probe_channels):
        model = _build(source, arch, final_classes, final_channels, kwargs)
    return Fitted(model, layout, mapped)


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
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> list[str]:
    """Put ``mean``/``std`` into ``fitted.mapped`` and ``meta``; return the warnings it gives.

    The caller's values win, then the checkpoint's own (its buffers, then its meta);
    a checkpoint without any gets the spec's statistics when it is in the spec's
    source layout, the neutral ones otherwise.
    """
    in_channels = fitted.model.in_channels
    assumed_from, origin = _assumed_normalization(spec, fitted.layout, in_channels)
    warnings: list[str] = []
    assumed: dict[str, list[float]] = {}
    for key, given in (("mean", mean), ("std", std)):
        stored = _stored_stats(fitted.mapped.get(key), meta.get(key))
        if given is not None:
            values = [float(v) for v in given]
            if stored is not None and not stats_agree(values, torch.tensor(stored)):
                warnings.append(f"{key} overridden by the caller: checkpoint has {stored}, using {values}")
        elif stored is not None:
            values = stored
        else:
            values = assumed[key] = assumed_from.values(key, in_channels)
        fitted.mapped[key] = _stats_tensor(source, key, values, in_channels)
        if not stats_agree(meta.get(key), fitted.mapped[key]):
            meta[key] = values  # a stored value stays when it agrees, so meta round-trips exactly
    if assumed:
        shown = ", ".join(f"{key}={values}" for key, values in assumed.items())
        warnings.append(
            f"checkpoint has no normalisation statistics; assumed {origin} {shown} "
            "(pass mean/std if the network was trained with others)"
        )
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


def _stored_stats(from_state: Tensor | None, from_meta: object) -> list[float] | None:
    """Statistics the checkpoint itself records: its buffers first (what forward used), then meta."""
    if from_state is not None:
        return stats_list(from_state)
    values = from_meta if isinstance(from_meta, list) else [from_meta]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numbers if numbers and len(numbers) == len(values) else None


def _assumed_normalization(spec: ArchSpec, layout: str, in_channels: int) -> tuple[Normalization, str]:
    """The statistics to assume for a state_dict without any, and the words that say where they come from."""
    if spec.foreign and layout == spec.source and spec.normalization.fits(in_channels):
        return spec.normalization, f"{spec.source}'s {spec.normalization.description}"
    # A state_dict keyed like the CAMClassifier comes from robustcam, which records its statistics.
    return NEUTRAL, NEUTRAL.description


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
    problems = shape_problems(found, expected, source="checkpoint", target="model")
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not fit arch {model.arch!r} (num_classes={model.num_classes}, "
            f"in_channels={model.in_channels}): {problems}"
        )
