"""Noise transition matrices ``T[i, j] = P(noisy = j | true = i)`` and the registry of noise kinds.

Every matrix is row-stochastic, (C, C), float64. The kinds:

- ``symmetric``: a label is corrupted with probability ``rate`` to a random
  class. Papers use two conventions under the same name, and they differ by a
  factor ``(C - 1) / C`` in how many labels end up wrong:

  - ``convention="other"`` (the default; "symmetric flipping"): the label moves
    to one of the *other* ``C - 1`` classes, so ``T[i, i] = 1 - rate`` and
    ``T[i, j] = rate / (C - 1)``; ``rate`` is the fraction of wrong labels.
    This is the matrix of Patrini et al., CVPR 2017 (loss correction;
    ``build_uniform_P`` in their code) and of Han et al., NeurIPS 2018
    (Co-teaching; "symmetry flipping").
  - ``convention="uniform"``: the label is *resampled* uniformly over all ``C``
    classes, the true one included, so ``T[i, j] = rate / C`` and
    ``T[i, i] = 1 - rate + rate / C``; the fraction of wrong labels is
    ``rate (C - 1) / C`` (36% at rate 0.4 on 10 classes). This is the
    corruption of Zhang et al., ICLR 2017 ("Understanding deep learning
    requires rethinking generalization": a label is replaced "with
    probability p" by "a uniform random class") and of the DivideMix code
    (Li et al., ICLR 2020), and it is what papers that speak of "uniform
    noise" often mean (e.g. Arazo et al., ICML 2019). Some papers name it
    "symmetric" as well; check a paper's code before comparing its numbers.

- ``asymmetric``: class-dependent flips to one similar class (the maps of
  Patrini et al., CVPR 2017, in ``robustcam.noise.class_maps``):
  ``T[i, i] = 1 - rate`` and ``T[i, map[i]] = rate`` for mapped classes; the
  others stay clean.
- ``pairflip``: ``i -> (i + 1) mod C`` with probability ``rate`` (Han et al.,
  NeurIPS 2018, Co-teaching's "pair flipping").
- ``matrix``: a matrix read from a YAML file (a list of rows) or a ``.npy``
  file, validated (square, C x C, finite, non-negative, rows summing to 1).
- ``human``: CIFAR-10N / CIFAR-100N human annotations (Wei et al., ICLR 2022,
  "Learning with Noisy Labels Revisited"). They replace labels per sample and
  have no transition matrix; see ``robustcam.noise.human`` and
  ``corrupt_labels``.

A new kind is one function registered with ``@register_noise_kind(name)``; its
keyword-only parameters (``convention``, ``class_map``, ``path``, ...) are the
noise parameters it accepts, and passing one that it does not accept is an error.

>>> transition_matrix("pairflip", 3, 0.2)
array([[0.8, 0.2, 0. ],
       [0. , 0.8, 0.2],
       [0.2, 0. , 0.8]])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import Tensor

from robustcam.errors import InputError
from robustcam.noise.checks import (
    CONVENTIONS,
    Convention,
    NoiseFileError,
    as_path,
    check_choice,
    check_num_classes,
    check_rate,
    one_line,
)
from robustcam.noise.class_maps import class_map_for
from robustcam.registry import Registry

# How far a row of a matrix read from a file may sum from 1.
ROW_SUM_TOLERANCE = 1e-6

# Noise parameters a kind may take (an error when given to a kind that does not take them) and
# context about the data (passed to the kinds that use it, ignored by the others).
NOISE_PARAMETERS = ("convention", "class_map", "path", "key")
CONTEXT_PARAMETERS = ("dataset", "coarse_labels")

TransitionFactory = Callable[..., np.ndarray]


@dataclass(frozen=True)
class NoiseKind:
    """One registered noise kind.

    Attributes:
        name: the registry name (``symmetric``, ...).
        build: ``(num_classes, rate?, **parameters) -> T``, or ``None`` for a
            per-sample kind without a transition matrix (``human``).
        uses_rate: whether the kind takes a ``rate`` (file-based kinds do not).
        parameters: the noise parameters it accepts (keyword-only names of ``build``).
        context: the data context it uses (``dataset``, ``coarse_labels``).
        summary: the first line of its docstring (for help texts).
    """

    name: str
    build: TransitionFactory | None
    uses_rate: bool
    parameters: tuple[str, ...]
    context: tuple[str, ...]
    summary: str

    def __call__(self, num_classes: int, rate: float | None, **options: Any) -> np.ndarray:
        if self.build is None:
            raise ValueError(
                f"noise kind {self.name!r} replaces labels per sample and has no transition matrix; "
                f"use corrupt_labels(labels, {self.name!r}, ...) or human_labels(path, key)"
            )
        if self.uses_rate:
            return self.build(num_classes, rate, **options)
        return self.build(num_classes, **options)


NOISE_KINDS: Registry[NoiseKind] = Registry("noise kind")


def register_noise_kind(
    name: str, *, uses_rate: bool = True, per_sample: bool = False
) -> Callable[[TransitionFactory], TransitionFactory]:
    """Register a transition-matrix factory ``(num_classes, rate, *, <parameters>) -> (C, C) array``.

    With ``uses_rate=False`` the factory is ``(num_classes, *, <parameters>)``;
    with ``per_sample=True`` it is only a description (its signature lists the
    parameters) and ``transition_matrix`` refuses the kind.
    """

    def decorator(factory: TransitionFactory) -> TransitionFactory:
        keyword = [
            p.name for p in inspect.signature(factory).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        unknown = sorted(set(keyword) - set(NOISE_PARAMETERS) - set(CONTEXT_PARAMETERS))
        if unknown:
            raise ValueError(
                f"noise kind {name!r} takes unknown parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(NOISE_PARAMETERS + CONTEXT_PARAMETERS)}"
            )
        doc = inspect.getdoc(factory) or ""
        NOISE_KINDS.register(name)(
            NoiseKind(
                name=name,
                build=None if per_sample else factory,
                uses_rate=uses_rate,
                parameters=tuple(p for p in keyword if p in NOISE_PARAMETERS),
                context=tuple(p for p in keyword if p in CONTEXT_PARAMETERS),
                summary=doc.splitlines()[0] if doc else name,
            )
        )
        return factory

    return decorator


def list_noise_kinds() -> list[str]:
    return NOISE_KINDS.names()


def get_noise_kind(kind: str) -> NoiseKind:
    """The registered kind ``kind``; unknown names are an error with a "did you mean"."""
    if not isinstance(kind, str):
        raise InputError(f"kind must be a noise kind name ({', '.join(list_noise_kinds())}), got {kind!r}")
    return NOISE_KINDS.get(kind)


def check_noise_parameters(kind: NoiseKind, rate: object, given: Mapping[str, object]) -> float | None:
    """Check ``rate`` and that every noise parameter in ``given`` (not None) is one ``kind`` takes."""
    extra = sorted(name for name, value in given.items() if value is not None and name not in kind.parameters)
    if extra:
        takes = ", ".join(kind.parameters) or "none"
        raise InputError(f"noise kind {kind.name!r} does not take {', '.join(extra)} (its parameters: {takes})")
    if not kind.uses_rate:
        if rate is not None:
            raise InputError(
                f"noise kind {kind.name!r} takes no rate (its file fixes the noise); pass rate=None, got {rate!r}"
            )
        return None
    return check_rate(rate, kind=kind.name)


def transition_matrix(
    kind: str,
    num_classes: int,
    rate: float | None,
    *,
    dataset: str | None = None,
    convention: Convention = "other",
    class_map: Mapping[object, object] | None = None,
    coarse_labels: Tensor | np.ndarray | list[int] | None = None,
    path: str | Path | None = None,
) -> np.ndarray:
    """The (C, C) row-stochastic matrix ``T[i, j] = P(noisy = j | true = i)`` of a noise kind.

    Args:
        kind: a registered noise kind (``symmetric``, ``asymmetric``, ``pairflip``, ``matrix``).
        num_classes: C, at least 2.
        rate: the noise rate in [0, 1]; ``None`` for ``matrix`` (the file fixes the matrix).
        dataset: dataset name; selects the ``asymmetric`` class map.
        convention: ``symmetric`` only: ``other`` (flip to another class) or
            ``uniform`` (resample over all classes). See the module docstring.
        class_map: ``asymmetric`` only: a custom ``{source: destination}`` map
            that replaces the dataset's.
        coarse_labels: the superclass of each class (length C), for CIFAR-100's map.
        path: ``matrix`` only: a ``.yaml``/``.yml`` (list of rows) or ``.npy`` file.

    >>> transition_matrix("symmetric", 3, 0.3, convention="uniform").round(2)
    array([[0.8, 0.1, 0.1],
           [0.1, 0.8, 0.1],
           [0.1, 0.1, 0.8]])
    """
    noise_kind = get_noise_kind(kind)
    num_classes = check_num_classes(num_classes)
    convention = check_choice("convention", convention, CONVENTIONS)
    given = {
        "convention": None if convention == "other" else convention,
        "class_map": class_map,
        "path": path,
    }
    checked_rate = check_noise_parameters(noise_kind, rate, given)
    options: dict[str, Any] = {name: given[name] for name in noise_kind.parameters if name in given}
    if "convention" in options:
        options["convention"] = convention
    context = {"dataset": dataset, "coarse_labels": coarse_labels}
    options.update({name: context[name] for name in noise_kind.context})
    matrix = noise_kind(num_classes, checked_rate, **options)
    return validate_transition_matrix(matrix, num_classes=num_classes, source=f"noise kind {kind!r}")


# --------------------------------------------------------------------------- kinds


@register_noise_kind("symmetric")
def symmetric_matrix(num_classes: int, rate: float, *, convention: Convention = "other") -> np.ndarray:
    """Symmetric noise: flip to another class (``other``) or resample over all classes (``uniform``)."""
    convention = check_choice("convention", convention, CONVENTIONS)
    if convention == "other":
        matrix = np.full((num_classes, num_classes), rate / (num_classes - 1))
        np.fill_diagonal(matrix, 1.0 - rate)
    else:
        matrix = np.full((num_classes, num_classes), rate / num_classes)
        np.fill_diagonal(matrix, 1.0 - rate + rate / num_classes)
    return matrix


@register_noise_kind("asymmetric")
def asymmetric_matrix(
    num_classes: int,
    rate: float,
    *,
    dataset: str | None = None,
    class_map: Mapping[object, object] | None = None,
    coarse_labels: Tensor | np.ndarray | list[int] | None = None,
) -> np.ndarray:
    """Asymmetric noise: each mapped class flips to its one similar class (Patrini et al., 2017)."""
    mapping = class_map_for(dataset, num_classes, class_map=class_map, coarse_labels=coarse_labels)
    matrix = np.eye(num_classes)
    for source, destination in mapping.items():
        matrix[source, source] = 1.0 - rate
        matrix[source, destination] = rate
    return matrix


@register_noise_kind("pairflip")
def pairflip_matrix(num_classes: int, rate: float) -> np.ndarray:
    """Pair flipping: class i -> (i + 1) mod C (Han et al., 2018, Co-teaching)."""
    matrix = (1.0 - rate) * np.eye(num_classes)
    matrix[np.arange(num_classes), (np.arange(num_classes) + 1) % num_classes] += rate
    return matrix


@register_noise_kind("matrix", uses_rate=False)
def file_matrix(num_classes: int, *, path: str | Path | None = None) -> np.ndarray:
    """A transition matrix from a YAML (list of rows) or .npy file, validated."""
    return load_transition_matrix(path, num_classes=num_classes)


@register_noise_kind("human", uses_rate=False, per_sample=True)
def human_kind(num_classes: int, *, path: str | Path | None = None, key: str | None = None) -> np.ndarray:
    """Human annotations (CIFAR-10N / CIFAR-100N): per-sample labels from a file, no matrix."""
    raise ValueError("human noise has no transition matrix")  # never called: registered per_sample


# --------------------------------------------------------------------------- files and validation


def validate_transition_matrix(
    matrix: object,
    *,
    num_classes: int,
    source: str = "transition matrix",
    tolerance: float = ROW_SUM_TOLERANCE,
    error: type[ValueError] = InputError,
) -> np.ndarray:
    """``matrix`` as a float64 (C, C) array after checking it is a transition matrix.

    Checks, each failing with a one-line ``error`` whose message starts with
    ``source``: square, size ``num_classes``, finite, non-negative, every row
    summing to 1 within ``tolerance``. Rows are then renormalised to sum to 1 exactly.
    """
    array = _as_float_array(matrix, source=source, error=error)
    _check_shape(array, num_classes=num_classes, source=source, error=error)
    _check_entries(array, source=source, error=error)
    sums = array.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > tolerance)
    if off.size:
        row = int(off[0])
        raise error(f"{source}: row {row} sums to {sums[row]:.6g}, rows must sum to 1 (within {tolerance:g})")
    return array / sums[:, None]


def _as_float_array(matrix: object, *, source: str, error: type[ValueError]) -> np.ndarray:
    """``matrix`` (a tensor, an array or nested lists) as a float64 array; a ragged list of rows
    is refused here, before numpy's own message about it."""
    if isinstance(matrix, Tensor):
        matrix = matrix.detach().cpu().numpy()
    if isinstance(matrix, list):
        for index, row in enumerate(matrix):
            if not isinstance(row, (list, tuple)):
                raise error(f"{source}: not square: row {index} is {row!r}, not a list of numbers")
            if len(row) != len(matrix):
                raise error(f"{source}: not square: {len(matrix)} rows but row {index} has {len(row)} entries")
    try:
        return np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{source}: entries must be numbers ({one_line(exc)})") from None


def _check_shape(array: np.ndarray, *, num_classes: int, source: str, error: type[ValueError]) -> None:
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise error(f"{source}: not square: shape {tuple(array.shape)}, expected ({num_classes}, {num_classes})")
    if array.shape[0] != num_classes:
        raise error(f"{source}: {array.shape[0]}x{array.shape[0]} but there are {num_classes} classes")


def _check_entries(array: np.ndarray, *, source: str, error: type[ValueError]) -> None:
    """Every entry finite, then every entry non-negative; the first offender is named."""
    nonfinite = np.argwhere(~np.isfinite(array))
    if nonfinite.size:
        i, j = (int(v) for v in nonfinite[0])
        raise error(f"{source}: entry [{i}, {j}] is {array[i, j]}, entries must be finite")
    negative = np.argwhere(array < 0)
    if negative.size:
        i, j = (int(v) for v in negative[0])
        raise error(f"{source}: entry [{i}, {j}] is {array[i, j]:g}, entries must be >= 0")


def load_transition_matrix(path: str | Path | None, *, num_classes: int) -> np.ndarray:
    """Read and validate a transition matrix from ``.yaml``/``.yml`` (a list of rows) or ``.npy``.

    ``.npy`` is read with ``allow_pickle=False``; YAML with ``yaml.safe_load``.
    A YAML file may hold the list of rows itself or a mapping with one key
    ``matrix`` holding it.
    """
    file = as_path(path, what="transition matrix")
    source = f"transition matrix file {file}"
    suffix = file.suffix.lower()
    content: object
    if suffix == ".npy":
        try:
            content = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise NoiseFileError(f"{source}: cannot read it as a plain .npy array ({one_line(exc)})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            content = yaml.safe_load(file.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise NoiseFileError(f"{source}: invalid YAML ({one_line(exc)})") from None
        if isinstance(content, dict) and set(content) == {"matrix"}:
            content = content["matrix"]
        if not isinstance(content, list) or not content:
            raise NoiseFileError(f"{source}: must hold a non-empty list of rows, got {type(content).__name__}")
    else:
        raise NoiseFileError(f"{source}: unsupported suffix {file.suffix!r}; use .yaml, .yml or .npy")
    return validate_transition_matrix(content, num_classes=num_classes, source=source, error=NoiseFileError)
