"""Argument checks shared by the label-noise models, and the error for bad noise files.

Every check raises a one-line ``InputError`` (a ``ValueError`` too) that names the
argument, the bad value and the values it accepts, so the CLI can print it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from robustcam.errors import InputError, RobustcamError

Convention = Literal["other", "uniform"]
CONVENTIONS: tuple[Convention, ...] = ("other", "uniform")

Sampling = Literal["exact", "bernoulli"]
SAMPLINGS: tuple[Sampling, ...] = ("exact", "bernoulli")

Labels = Tensor | np.ndarray | Sequence[int]

T = TypeVar("T", bound=str)


class NoiseFileError(RobustcamError, ValueError):
    """A transition-matrix or human-label file that is missing, unsafe or malformed.

    A ``ValueError`` too, so callers that validate arguments catch it with the rest.
    """


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def check_choice(name: str, value: object, choices: tuple[T, ...]) -> T:
    """``value`` if it is one of ``choices``; else an ``InputError`` that lists them."""
    for choice in choices:
        if value == choice:
            return choice
    raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def check_rate(rate: object, *, kind: str) -> float:
    """A noise rate: a finite number in [0, 1]."""
    if rate is None:
        raise InputError(f"rate is required for noise kind {kind!r} (a number in [0, 1])")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise InputError(f"rate must be a number in [0, 1], got {rate!r}")
    value = float(rate)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"rate must be in [0, 1], got {rate!r}")
    return value


def check_seed(seed: object) -> int:
    """A seed for ``numpy.random.SeedSequence``: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_class_index(name: str, value: object, num_classes: int) -> int:
    """A class index in [0, num_classes); YAML/JSON spellings such as ``"3"`` are accepted."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a class index in [0, {num_classes - 1}], got {value!r}")
    if not 0 <= int(value) < num_classes:
        raise InputError(f"{name} {int(value)} is outside [0, {num_classes - 1}] for {num_classes} classes")
    return int(value)


def as_label_array(labels: Labels, *, num_classes: int, name: str = "labels") -> np.ndarray:
    """A 1-D int64 numpy copy of ``labels`` (tensor, array or sequence), checked to lie in [0, C)."""
    if isinstance(labels, Tensor):
        array = labels.detach().cpu().numpy()
    else:
        array = np.asarray(labels)
    if array.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {tuple(array.shape)}")
    if array.size and not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InputError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=True)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise InputError(
            f"{name} must lie in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got values in [{int(array.min())}, {int(array.max())}]"
        )
    return array


def as_path(path: object, *, what: str) -> Path:
    if path is None:
        raise InputError(f"{what} needs path= (a file)")
    if not isinstance(path, (str, Path)):
        raise InputError(f"path must be a file path, got {path!r}")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise NoiseFileError(f"{what} file {resolved} does not exist")
    return resolved


def labels_as_tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
