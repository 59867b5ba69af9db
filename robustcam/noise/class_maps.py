"""Class maps for asymmetric (class-dependent) label noise: which class each class is mistaken for.

Asymmetric noise flips a class only to one visually similar class. The maps
here are the ones of Patrini et al., "Making Deep Neural Networks Robust to
Label Noise: a Loss Correction Approach" (CVPR 2017), which later work reuses
(e.g. Ma et al. 2020, "Normalized Loss Functions for Deep Learning with Noisy
Labels"):

- MNIST (and the other 0-9 digit datasets here, ``digits``, ``digits_scene``):
  2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
- CIFAR-10: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
  (indices 9 -> 1, 2 -> 0, 4 -> 7, 3 <-> 5).
- CIFAR-100: each class flips to the *next* class of its superclass, cyclically.
  "Next" is the next fine-class index, in increasing order, among the fine
  classes that share the true class's superclass; the last one wraps to the
  first. This uses the dataset's real fine -> coarse mapping
  (``CIFAR100Dataset.fine_to_coarse()``): the fine labels of CIFAR-100 are
  alphabetical, so a superclass is *not* a block of 5 consecutive indices, the
  shortcut some public implementations take.

A map is a ``dict[int, int]`` ``{source: destination}``; classes that are not
sources stay clean. A dataset's map is a registered function
``(num_classes, *, coarse_labels) -> dict[int, int]``; ``class_map_for`` looks
one up, and ``check_class_map`` validates a custom map (e.g. from YAML).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
from torch import Tensor

from robustcam.errors import InputError
from robustcam.noise.checks import check_class_index
from robustcam.registry import Registry

ClassMap = dict[int, int]

# Class order of torchvision's CIFAR-10 (batches.meta): the indices the maps below use.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class ClassMapFactory(Protocol):
    def __call__(self, num_classes: int, *, coarse_labels: np.ndarray | None) -> ClassMap: ...


CLASS_MAPS: Registry[ClassMapFactory] = Registry("asymmetric class map")


def register_class_map(*names: str) -> Callable[[ClassMapFactory], ClassMapFactory]:
    """Register one class-map function under one or more dataset names."""

    def decorator(factory: ClassMapFactory) -> ClassMapFactory:
        for name in names:
            CLASS_MAPS.register(name)(factory)
        return factory

    return decorator


def datasets_with_class_maps() -> list[str]:
    return CLASS_MAPS.names()


def _check_count(dataset: str, num_classes: int, expected: int) -> None:
    if num_classes != expected:
        raise InputError(
            f"the asymmetric class map of {dataset} is for {expected} classes, got num_classes={num_classes}"
        )


@register_class_map("mnist", "digits", "digits_scene")
def digit_class_map(num_classes: int, *, coarse_labels: np.ndarray | None = None) -> ClassMap:
    """MNIST (Patrini et al. 2017): 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1."""
    _check_count("mnist/digits", num_classes, 10)
    return {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


@register_class_map("cifar10")
def cifar10_class_map(num_classes: int, *, coarse_labels: np.ndarray | None = None) -> ClassMap:
    """CIFAR-10 (Patrini et al. 2017): truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog."""
    _check_count("cifar10", num_classes, 10)
    index = {name: i for i, name in enumerate(CIFAR10_CLASSES)}
    pairs = [("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")]
    return {index[source]: index[destination] for source, destination in pairs}


@register_class_map("cifar100")
def cifar100_class_map(num_classes: int, *, coarse_labels: np.ndarray | None = None) -> ClassMap:
    """CIFAR-100 (Patrini et al. 2017): the next fine class of the same superclass, cyclically."""
    _check_count("cifar100", num_classes, 100)
    if coarse_labels is None:
        raise InputError(
            "asymmetric noise on cifar100 flips each class to the next class of its superclass and needs "
            "coarse_labels= (the superclass of each fine class, e.g. CIFAR100Dataset.fine_to_coarse())"
        )
    return next_in_group_map(coarse_labels, num_classes=num_classes)


def check_coarse_labels(coarse_labels: Tensor | np.ndarray | list[int], *, num_classes: int) -> np.ndarray:
    """A per-class superclass array of length ``num_classes`` as int64; -1 marks an unknown superclass."""
    if isinstance(coarse_labels, Tensor):
        array = coarse_labels.detach().cpu().numpy()
    else:
        array = np.asarray(coarse_labels)
    if array.ndim != 1 or array.shape[0] != num_classes:
        raise InputError(
            f"coarse_labels must give the superclass of each of the {num_classes} classes (length {num_classes}), "
            f"got shape {tuple(array.shape)}; for per-sample coarse targets use coarse_labels_from_targets()"
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"coarse_labels must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < -1:
        raise InputError(f"coarse_labels must be >= 0 (or -1 for a class of unknown superclass), got {array.min()}")
    return array


def coarse_labels_from_targets(
    fine_targets: Tensor | np.ndarray | list[int],
    coarse_targets: Tensor | np.ndarray | list[int],
    *,
    num_classes: int,
) -> np.ndarray:
    """The per-class superclass array from per-sample fine and coarse targets.

    Classes without samples get -1. A fine class seen with two superclasses is an
    error: the targets are not a fine -> coarse hierarchy.
    """
    fine = np.asarray(fine_targets.cpu() if isinstance(fine_targets, Tensor) else fine_targets).astype(np.int64)
    coarse = np.asarray(coarse_targets.cpu() if isinstance(coarse_targets, Tensor) else coarse_targets).astype(np.int64)
    if fine.shape != coarse.shape or fine.ndim != 1:
        raise InputError(f"fine and coarse targets must be 1-D of the same length, got {fine.shape} and {coarse.shape}")
    if fine.size and (fine.min() < 0 or fine.max() >= num_classes):
        raise InputError(
            f"fine targets must lie in [0, {num_classes - 1}], got values in [{int(fine.min())}, {int(fine.max())}]"
        )
    mapping = np.full(num_classes, -1, dtype=np.int64)
    mapping[fine] = coarse
    disagree = np.flatnonzero(mapping[fine] != coarse)
    if disagree.size:
        cls = int(fine[disagree[0]])
        seen = sorted({int(c) for c in coarse[fine == cls]})
        raise InputError(f"fine class {cls} appears with several superclasses {seen}; not a fine -> coarse mapping")
    return mapping


def next_in_group_map(coarse_labels: Tensor | np.ndarray | list[int], *, num_classes: int) -> ClassMap:
    """Each class -> the next class index of its group (superclass), cyclically.

    Groups are whatever ``coarse_labels`` says, in any index order; a group of
    one class (or a class of unknown group, -1) maps to nothing and stays clean.

    >>> next_in_group_map([1, 0, 1, 0, 1], num_classes=5)
    {0: 2, 1: 3, 2: 4, 3: 1, 4: 0}
    """
    groups = check_coarse_labels(coarse_labels, num_classes=num_classes)
    mapping: ClassMap = {}
    for group in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == group)  # increasing class index
        if members.size < 2:
            continue
        for position, source in enumerate(members):
            mapping[int(source)] = int(members[(position + 1) % members.size])
    return dict(sorted(mapping.items()))


def check_class_map(class_map: Mapping[object, object], *, num_classes: int) -> ClassMap:
    """A custom ``{source: destination}`` map with indices in [0, C) and no class mapped to itself.

    Keys may be strings of integers (how JSON writes int keys).
    """
    if not isinstance(class_map, Mapping):
        raise InputError(f"class_map must be a mapping {{source: destination}}, got {type(class_map).__name__}")
    if not class_map:
        raise InputError("class_map is empty; give at least one {source: destination} pair")
    checked: ClassMap = {}
    for source, destination in class_map.items():
        src = check_class_index("class_map source", source, num_classes)
        dst = check_class_index(f"class_map destination of {src}", destination, num_classes)
        if src in checked:
            raise InputError(f"class_map gives class {src} twice")
        if src == dst:
            raise InputError(f"class_map maps class {src} to itself")
        checked[src] = dst
    return checked


def class_map_for(
    dataset: str | None,
    num_classes: int,
    *,
    class_map: Mapping[object, object] | None = None,
    coarse_labels: Tensor | np.ndarray | list[int] | None = None,
) -> ClassMap:
    """The asymmetric map to use: ``class_map`` if given, else the dataset's registered map."""
    if class_map is not None:
        return check_class_map(class_map, num_classes=num_classes)
    with_maps = ", ".join(datasets_with_class_maps())
    if dataset is None:
        raise InputError(
            f"asymmetric noise needs dataset= (one with a class map: {with_maps}) or class_map={{source: destination}}"
        )
    if dataset not in CLASS_MAPS:
        raise InputError(
            f"dataset {dataset!r} has no asymmetric class map (datasets with maps: {with_maps}); "
            f"pass class_map={{source: destination}}"
        )
    coarse = None if coarse_labels is None else check_coarse_labels(coarse_labels, num_classes=num_classes)
    return CLASS_MAPS.get(dataset)(num_classes, coarse_labels=coarse)
