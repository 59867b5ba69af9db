"""Named input statistics (``--normalization NAME``) and checked ``--mean``/``--std`` values.

A model normalises its [0, 1] inputs inside (``CAMClassifier.mean``/``std``), so which
statistics a checkpoint is evaluated with changes every prediction: a CIFAR-10 network
fed ImageNet-normalised inputs is another network. ``NORMALIZATIONS`` are the presets a
user names instead of typing the numbers; their values are the ones the datasets of the
same name declare (``robustcam.data``), which a test checks. ``none`` is the identity
(mean 0, std 1): the network takes raw [0, 1] pixels, as most of RobustBench's zoo does.

``explicit_normalization`` turns what a user gave (a preset name, or mean and std) into
one ``Normalization``, or None when nothing was given; the rule that chooses statistics
for a checkpoint when nothing was given lives with the loader
(``robustcam.checkpoint.adapt.resolve_normalization``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence

from robustcam.errors import InputError
from robustcam.models.spec import IMAGENET, Normalization

__all__ = [
    "NORMALIZATIONS",
    "NO_NORMALIZATION",
    "NormalizationError",
    "check_statistics",
    "explicit_normalization",
    "get_normalization",
    "normalization_names",
]


class NormalizationError(InputError):
    """A normalisation preset or statistics that cannot be used (the message names the value)."""


NO_NORMALIZATION = Normalization("none", (0.0,), (1.0,), "no normalisation (raw [0, 1] pixels)")
NORMALIZATIONS: Mapping[str, Normalization] = {
    "imagenet": IMAGENET,
    "cifar10": Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR-10 statistics"),
    "cifar100": Normalization("cifar100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR-100 statistics"),
    "mnist": Normalization("mnist", (0.1307,), (0.3081,), "MNIST statistics"),
    "none": NO_NORMALIZATION,
}


def normalization_names() -> list[str]:
    """The preset names, in the order the help and the messages list them."""
    return list(NORMALIZATIONS)


def get_normalization(name: str) -> Normalization:
    """The preset ``name``; an unknown name lists the presets (with a "did you mean")."""
    preset = NORMALIZATIONS.get(name)
    if preset is not None:
        return preset
    close = difflib.get_close_matches(name.lower(), normalization_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise NormalizationError(
        f"unknown normalization {name!r}{hint}; valid: {', '.join(normalization_names())}, or give mean and std"
    )


def check_statistics(key: str, values: Sequence[float], *, in_channels: int | None = None) -> tuple[float, ...]:
    """``values`` of ``mean`` or ``std`` as floats: 1 value (every channel) or one per channel,
    finite, and std positive; ``in_channels`` (when known) is the model's channel count."""
    numbers = tuple(float(value) for value in values)
    shown = ",".join(f"{value:g}" for value in numbers)
    channels = in_channels if in_channels is not None else 3
    if len(numbers) not in (1, channels):
        if in_channels == 1:
            wanted = "give 1 value: the model has 1 input channel"
        else:
            known = f": the model has {in_channels} input channels" if in_channels is not None else ""
            wanted = f"give 1 (for every channel) or {channels} (one per channel){known}"
        raise NormalizationError(f"{key} has {len(numbers)} values ({shown}); {wanted}")
    if not all(math.isfinite(value) for value in numbers):
        raise NormalizationError(f"{key} must be finite numbers, got {shown}")
    if key == "std" and min(numbers) <= 0:
        raise NormalizationError(f"std must be > 0 for every channel, got {shown}")
    return numbers


def explicit_normalization(
    name: str | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Normalization | None:
    """What the user chose: the preset ``name``, or ``mean`` and ``std`` (given together), or None.

    >>> explicit_normalization("cifar10", None, None).name
    'cifar10'
    >>> explicit_normalization(None, [0.5], [0.25]).std
    (0.25,)
    """
    if name is not None and (mean is not None or std is not None):
        raise NormalizationError(
            f"give normalization {name!r} or mean and std (--normalization or --mean/--std), not both: "
            "a preset names its own mean and std"
        )
    if name is not None:
        return get_normalization(name)
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        missing = "mean" if mean is None else "std"
        raise NormalizationError(f"give mean and std together (--mean and --std); {missing} is missing")
    return Normalization("custom", check_statistics("mean", mean), check_statistics("std", std), "the given statistics")
