"""Corrupting labels with a noise model: exact or Bernoulli sampling, seeded and platform independent.

``corrupt_labels`` draws noisy labels from a transition matrix
``T[i, j] = P(noisy = j | true = i)`` (``robustcam.noise.transition``) or, for
``human`` noise, takes them from a CIFAR-N file, and reports what it realised.

Two samplers:

- ``exact`` (default): for each true class ``c`` with ``n_c`` samples, exactly
  ``round(r_c n_c)`` samples flip, ``r_c = 1 - T[c, c]`` (round half up), and
  the flipped ones go to the classes ``j != c`` in exact counts proportional
  to ``T[c, j]`` (largest-remainder rounding; ties between equal remainders
  are broken by the seed, not by class index, so no class is favoured). The
  realised matrix equals ``T`` to the count. Which samples flip is the prefix
  of a seeded permutation of the class, so with the same seed a higher rate
  flips a superset of the samples a lower rate flips (nested noise levels).
  Like the fixed-fraction corruption of e.g. DivideMix's code, not a coin per label.
- ``bernoulli``: each label is drawn independently from row ``T[y]``, the
  class-conditional noise model of e.g. Patrini et al. (CVPR 2017). Under the
  ``uniform`` convention a label may be "redrawn" to itself.

Randomness: a fresh ``numpy.random.Generator(PCG64)`` per class and purpose,
seeded with ``SeedSequence([seed, NOISE_STREAM, class, purpose])``; only
``Generator.random`` (uniform doubles) is drawn, and permutations are stable
argsorts of those doubles. PCG64 and the double conversion are specified
bit-for-bit, so the same seed gives the same labels on every platform and
device, independent of the global numpy and torch RNGs.

Output: per-sample results (``labels``, ``flipped``) are CPU ``torch`` tensors
(``long``, ``bool``) ready for ``train(config, out, train_labels=...)``;
matrices are float64 numpy arrays like ``transition_matrix``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from torch import Tensor

from robustcam.errors import InputError
from robustcam.noise.checks import (
    CONVENTIONS,
    SAMPLINGS,
    Convention,
    Labels,
    NoiseFileError,
    Sampling,
    as_label_array,
    check_choice,
    check_num_classes,
    check_seed,
    labels_as_tensor,
)
from robustcam.noise.human import check_labels_fit, human_and_clean_labels
from robustcam.noise.transition import check_noise_parameters, get_noise_kind, transition_matrix

# A constant mixed into every seed so that noise draws never share a stream with other seeded parts.
NOISE_STREAM = 0x6E6F697365  # b"noise"
_PERMUTATION, _TIES, _BERNOULLI = 0, 1, 2

# Remainders closer than this count as tied in largest-remainder rounding (float noise in T).
_TIE_DECIMALS = 9


class NoisyLabels(NamedTuple):
    """The result of ``corrupt_labels``.

    Attributes:
        labels: (N,) ``torch.long`` noisy labels (CPU).
        flipped: (N,) ``torch.bool``, ``labels != true labels``.
        realized_matrix: (C, C) float64 empirical transition matrix, counts of
            (true, noisy) over the count of each true class; a class without
            samples gets the identity row.
        realized_rate: the fraction of flipped labels, ``flipped.mean()``.
    """

    labels: Tensor
    flipped: Tensor
    realized_matrix: np.ndarray
    realized_rate: float


def _generator(seed: int, cls: int, purpose: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, NOISE_STREAM, cls, purpose])))


def _permutation(generator: np.random.Generator, size: int) -> np.ndarray:
    return np.argsort(generator.random(size), kind="stable")


def realized_transition_matrix(true_labels: Labels, noisy_labels: Labels, *, num_classes: int) -> np.ndarray:
    """The empirical (C, C) matrix ``count(true = i, noisy = j) / count(true = i)``; empty rows are identity."""
    num_classes = check_num_classes(num_classes)
    true = as_label_array(true_labels, num_classes=num_classes, name="true labels")
    noisy = as_label_array(noisy_labels, num_classes=num_classes, name="noisy labels")
    if true.shape != noisy.shape:
        raise InputError(f"true and noisy labels differ in length: {true.shape[0]} vs {noisy.shape[0]}")
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (true, noisy), 1.0)
    totals = counts.sum(axis=1)
    matrix = np.eye(num_classes)
    present = totals > 0
    matrix[present] = counts[present] / totals[present, None]
    return matrix


def largest_remainder_counts(total: int, weights: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (Hamilton's method).

    Each entry gets the floor of its quota ``total * w / sum(w)``; the units left
    over go to the largest remainders, ties broken at random by ``generator``.
    Entries with zero weight get nothing.

    >>> largest_remainder_counts(10, np.array([0.5, 0.3, 0.2]), np.random.default_rng(0)).tolist()
    [5, 3, 2]
    """
    counts = np.zeros(weights.shape[0], dtype=np.int64)
    mass = float(weights.sum())
    if total <= 0 or mass <= 0:
        return counts
    quotas = total * weights / mass
    counts = np.floor(quotas).astype(np.int64)
    left = total - int(counts.sum())
    if left > 0:
        remainders = np.round(quotas - counts, _TIE_DECIMALS)
        remainders[weights <= 0] = -1.0
        tie_breaks = np.asarray(generator.random(int(weights.shape[0])))
        order = np.lexsort((tie_breaks, -remainders))
        counts[order[:left]] += 1
    return counts


def flip_count(rate: float, size: int) -> int:
    """``round(rate * size)``, rounding half up (float noise of 1e-9 tolerated)."""
    return min(size, math.floor(rate * size + 0.5 + 1e-9))


def sample_exact(true: np.ndarray, matrix: np.ndarray, *, seed: int) -> np.ndarray:
    """Noisy labels realising ``matrix`` exactly, class by class (see the module docstring)."""
    noisy = true.copy()
    num_classes = matrix.shape[0]
    for cls in range(num_classes):
        members = np.flatnonzero(true == cls)
        if members.size == 0:
            continue
        weights = matrix[cls].copy()
        weights[cls] = 0.0
        count = flip_count(1.0 - float(matrix[cls, cls]), members.size)
        if count == 0 or weights.sum() <= 0:
            continue
        order = _permutation(_generator(seed, cls, _PERMUTATION), members.size)
        destinations = largest_remainder_counts(count, weights, _generator(seed, cls, _TIES))
        noisy[members[order[:count]]] = np.repeat(np.arange(num_classes), destinations)
    return noisy


def sample_bernoulli(true: np.ndarray, matrix: np.ndarray, *, seed: int) -> np.ndarray:
    """Noisy labels drawn independently from ``matrix[true]`` (inverse-CDF of uniform doubles)."""
    noisy = true.copy()
    for cls in range(matrix.shape[0]):
        members = np.flatnonzero(true == cls)
        if members.size == 0:
            continue
        cdf = np.cumsum(matrix[cls])
        cdf /= cdf[-1]
        cdf[-1] = 1.0
        draws = _generator(seed, cls, _BERNOULLI).random(members.size)
        noisy[members] = np.searchsorted(cdf, draws, side="right")
    return noisy


def _result(true: np.ndarray, noisy: np.ndarray, num_classes: int) -> NoisyLabels:
    flipped = noisy != true
    return NoisyLabels(
        labels=labels_as_tensor(noisy),
        flipped=labels_as_tensor(flipped).bool(),
        realized_matrix=realized_transition_matrix(true, noisy, num_classes=num_classes),
        realized_rate=float(flipped.mean()) if flipped.size else 0.0,
    )


def corrupt_labels(
    labels: Labels,
    kind: str,
    rate: float | None = None,
    *,
    num_classes: int,
    seed: int,
    dataset: str | None = None,
    sampling: Sampling = "exact",
    convention: Convention = "other",
    class_map: Mapping[object, object] | None = None,
    coarse_labels: Tensor | np.ndarray | list[int] | None = None,
    path: str | Path | None = None,
    key: str | None = None,
) -> NoisyLabels:
    """Noisy versions of ``labels`` under noise ``kind`` at ``rate``; the input is not modified.

    Args:
        labels: (N,) true labels in [0, C): tensor, numpy array or sequence of ints.
        kind: ``symmetric``, ``asymmetric``, ``pairflip``, ``matrix`` or ``human``
            (any registered noise kind).
        rate: noise rate in [0, 1]; ``None`` for ``matrix`` and ``human``.
        num_classes: C.
        seed: non-negative int; the same seed gives the same labels everywhere.
        dataset, convention, class_map, coarse_labels, path: as in ``transition_matrix``.
        sampling: ``exact`` (default) or ``bernoulli``; see the module docstring.
        key: ``human`` only: the annotation set in the file (e.g. ``aggre_label``).

    For ``human``, the file's labels replace ``labels`` one for one: the file
    must have N labels in [0, C), and if it carries ``clean_label`` those must
    equal ``labels`` (same split, same order).

    >>> result = corrupt_labels([0] * 10 + [1] * 10, "symmetric", 0.2, num_classes=2, seed=0)
    >>> result.realized_rate, result.realized_matrix.tolist()
    (0.2, [[0.8, 0.2], [0.2, 0.8]])
    """
    noise_kind = get_noise_kind(kind)
    num_classes = check_num_classes(num_classes)
    seed = check_seed(seed)
    sampling = check_choice("sampling", sampling, SAMPLINGS)
    convention = check_choice("convention", convention, CONVENTIONS)
    true = as_label_array(labels, num_classes=num_classes)
    if noise_kind.build is None:
        check_noise_parameters(
            noise_kind,
            rate,
            {
                "convention": None if convention == "other" else convention,
                "class_map": class_map,
                "path": path,
                "key": key,
            },
        )
        if sampling != "exact":
            raise InputError(f"noise kind {kind!r} takes its labels from a file; sampling does not apply")
        return _human(true, num_classes=num_classes, path=path, key=key)
    if key is not None:
        raise InputError(f"noise kind {kind!r} does not take key (only human noise reads a key from a file)")
    matrix = transition_matrix(
        kind,
        num_classes,
        rate,
        dataset=dataset,
        convention=convention,
        class_map=class_map,
        coarse_labels=coarse_labels,
        path=path,
    )
    sampler = sample_exact if sampling == "exact" else sample_bernoulli
    return _result(true, sampler(true, matrix, seed=seed), num_classes)


def _human(true: np.ndarray, *, num_classes: int, path: str | Path | None, key: str | None) -> NoisyLabels:
    if path is None:
        raise InputError("human noise needs path= (a CIFAR-N style label file: .pt, .npy or .npz)")
    noisy, clean = human_and_clean_labels(path, key)
    if noisy.shape[0] != true.shape[0]:
        raise NoiseFileError(
            f"label file {path}: {key!r} has {noisy.shape[0]} labels but there are {true.shape[0]} samples"
        )
    check_labels_fit(noisy, true, file=path, key=key, num_classes=num_classes)
    if clean is not None and clean.shape == true.shape and not np.array_equal(clean, true):
        mismatches = int((clean != true).sum())
        raise NoiseFileError(
            f"label file {path}: its clean_label disagrees with the given labels at {mismatches} of "
            f"{true.shape[0]} samples; CIFAR-N files follow the training split in its original order"
        )
    return _result(true, noisy, num_classes)
