"""``NoiseSpec``: a label-noise setting as one small value, from and to a plain dict.

The config layer and checkpoint metadata hold noise settings as plain dicts
``{kind, rate, convention, sampling, class_map, path, key, seed}``;
``NoiseSpec.from_dict`` validates one (unknown keys, kinds, conventions and
rates are one-line errors), ``apply`` runs ``corrupt_labels`` with it, and
``describe_noise`` names it for reports ("symmetric 0.4 (other)",
"asymmetric 0.2", "clean").

>>> spec = NoiseSpec.from_dict({"kind": "symmetric", "rate": 0.4, "seed": 1})
>>> describe_noise(spec)
'symmetric 0.4 (other)'
>>> spec.apply([0, 1] * 10, num_classes=2).realized_rate
0.4
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from robustcam.errors import InputError
from robustcam.noise.checks import (
    CONVENTIONS,
    SAMPLINGS,
    Convention,
    Labels,
    Sampling,
    check_choice,
    check_class_index,
    check_seed,
)
from robustcam.noise.sampling import NoisyLabels, corrupt_labels
from robustcam.noise.transition import check_noise_parameters, get_noise_kind

# Loose bound for class indices before the class count is known; corrupt_labels checks against C.
_ANY_CLASS = 2**31


@dataclass(frozen=True)
class NoiseSpec:
    """One label-noise setting (see ``corrupt_labels`` for the meaning of each field).

    ``class_map`` is stored as sorted ``(source, destination)`` pairs so the spec
    stays immutable and hashable; ``from_dict`` and ``to_dict`` use a mapping.
    ``seed`` may be left out and given to ``apply`` instead.
    """

    kind: str
    rate: float | None = None
    convention: Convention = "other"
    sampling: Sampling = "exact"
    class_map: tuple[tuple[int, int], ...] | None = None
    path: str | None = None
    key: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        noise_kind = get_noise_kind(self.kind)
        check_choice("convention", self.convention, CONVENTIONS)
        check_choice("sampling", self.sampling, SAMPLINGS)
        if noise_kind.build is None and self.sampling != "exact":
            raise InputError(f"noise kind {self.kind!r} takes its labels from a file; sampling does not apply")
        rate = check_noise_parameters(
            noise_kind,
            self.rate,
            {
                "convention": None if self.convention == "other" else self.convention,
                "class_map": self.class_map,
                "path": self.path,
                "key": self.key,
            },
        )
        object.__setattr__(self, "rate", rate)
        if "path" in noise_kind.parameters and self.path is None:  # the kinds whose noise is a file
            raise InputError(f"noise kind {self.kind!r} needs path (a file; see robustcam.noise), got none")
        if self.class_map is not None:
            object.__setattr__(self, "class_map", class_map_pairs(dict(self.class_map)))
        if self.seed is not None:
            object.__setattr__(self, "seed", check_seed(self.seed))
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoiseSpec:
        """A spec from a plain dict (e.g. YAML); unknown keys are an error that lists the valid ones."""
        if not isinstance(data, Mapping):
            raise InputError(f"a noise spec must be a mapping, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in valid)
        if unknown:
            raise InputError(f"unknown noise setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        if "kind" not in data:
            raise InputError("a noise spec needs kind")
        values = dict(data)
        class_map = values.get("class_map")
        if class_map is not None:
            values["class_map"] = class_map_pairs(class_map)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-able dict that ``from_dict`` reads back to an equal spec."""
        return {
            "kind": self.kind,
            "rate": self.rate,
            "convention": self.convention,
            "sampling": self.sampling,
            "class_map": None if self.class_map is None else dict(self.class_map),
            "path": self.path,
            "key": self.key,
            "seed": self.seed,
        }

    def apply(
        self,
        labels: Labels,
        *,
        num_classes: int,
        dataset: str | None = None,
        coarse_labels: Tensor | np.ndarray | list[int] | None = None,
        seed: int | None = None,
    ) -> NoisyLabels:
        """``corrupt_labels`` with this spec; ``seed`` overrides the spec's, and one of them is required."""
        chosen = seed if seed is not None else self.seed
        if chosen is None:
            raise InputError("a seed is required: set it in the noise spec or pass seed=")
        return corrupt_labels(
            labels,
            self.kind,
            self.rate,
            num_classes=num_classes,
            seed=chosen,
            dataset=dataset,
            sampling=self.sampling,
            convention=self.convention,
            class_map=None if self.class_map is None else dict(self.class_map),
            coarse_labels=coarse_labels,
            path=self.path,
            key=self.key,
        )

    def describe(self) -> str:
        return describe_noise(self)


def class_map_pairs(class_map: object) -> tuple[tuple[int, int], ...]:
    """A ``{source: destination}`` mapping (keys may be strings of ints) as sorted int pairs."""
    if not isinstance(class_map, Mapping):
        raise InputError(f"class_map must be a mapping {{source: destination}}, got {type(class_map).__name__}")
    pairs = {
        check_class_index("class_map source", source, _ANY_CLASS): check_class_index(
            "class_map destination", destination, _ANY_CLASS
        )
        for source, destination in class_map.items()
    }
    if len(pairs) != len(class_map):
        raise InputError("class_map gives a class twice")
    return tuple(sorted(pairs.items()))


def describe_noise(spec: NoiseSpec | Mapping[str, Any] | None) -> str:
    """A short name for a noise setting, for tables and logs.

    ``None`` is ``clean``; otherwise the kind, the rate and what distinguishes it:

    >>> describe_noise(None)
    'clean'
    >>> describe_noise({"kind": "asymmetric", "rate": 0.2})
    'asymmetric 0.2'
    >>> describe_noise({"kind": "symmetric", "rate": 0.4, "convention": "uniform", "sampling": "bernoulli"})
    'symmetric 0.4 (uniform, bernoulli)'
    >>> describe_noise({"kind": "human", "path": "data/CIFAR-10_human.pt", "key": "aggre_label"})
    'human aggre_label (CIFAR-10_human.pt)'
    """
    if spec is None:
        return "clean"
    if not isinstance(spec, NoiseSpec):
        spec = NoiseSpec.from_dict(spec)
    qualifiers: list[str] = []
    if spec.kind == "symmetric":
        qualifiers.append(spec.convention)
    if spec.class_map is not None:
        qualifiers.append("custom map")
    if spec.path is not None:
        qualifiers.append(Path(spec.path).name)
    if spec.sampling != "exact":
        qualifiers.append(spec.sampling)
    head = spec.kind
    if spec.rate is not None:
        head += f" {spec.rate:g}"
    if spec.key is not None:
        head += f" {spec.key}"
    return f"{head} ({', '.join(qualifiers)})" if qualifiers else head
