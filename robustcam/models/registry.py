"""The architecture registry and ``build_model``.

An entry is the factory together with its ``ArchSpec`` (timm keeps a model's
``default_cfg`` beside its factory in the same way), so an architecture cannot
be registered without the facts the checkpoint loader and the tests read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robustcam.errors import InputError
from robustcam.models.base import CAMClassifier
from robustcam.models.spec import ArchSpec
from robustcam.registry import Registry

ModelFactory = Callable[..., CAMClassifier]


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: calling it builds the model, ``spec`` says what is known about it."""

    name: str
    factory: ModelFactory
    spec: ArchSpec

    def __call__(self, num_classes: int, in_channels: int = 3, **kwargs: Any) -> CAMClassifier:
        return self.factory(num_classes, in_channels, **kwargs)


MODELS: Registry[Architecture] = Registry("architecture")


def register_model(name: str, *, spec: ArchSpec) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``(num_classes, in_channels, **kwargs) -> CAMClassifier`` with its spec."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec of architecture {name!r} must be an ArchSpec, got {type(spec).__name__}")

    def decorator(factory: ModelFactory) -> ModelFactory:
        MODELS.register(name)(Architecture(name, factory, spec))
        return factory

    return decorator


def get_spec(arch: str) -> ArchSpec:
    """The ``ArchSpec`` registered with ``arch``; an unknown name lists the valid ones."""
    return MODELS.get(arch).spec


def list_models() -> list[str]:
    return MODELS.names()


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> CAMClassifier:
    """Build a randomly initialised ``CAMClassifier``.

    ``mean``/``std`` are the dataset's per-channel statistics; the model
    normalises its [0, 1] inputs with them.
    """
    if num_classes < 2:
        raise InputError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels not in (1, 3):
        raise InputError(f"in_channels must be 1 or 3, got {in_channels}")
    model = MODELS.get(arch)(num_classes, in_channels, **kwargs)
    model.set_normalization(mean, std)
    return model
