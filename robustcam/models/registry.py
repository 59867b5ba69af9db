"""The architecture registry and ``build_model``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from robustcam.models.base import CAMClassifier
from robustcam.registry import Registry

ModelFactory = Callable[..., CAMClassifier]

MODELS: Registry[ModelFactory] = Registry("architecture")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register an architecture factory ``(num_classes, in_channels, **kwargs) -> CAMClassifier``."""
    return MODELS.register(name)


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
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    model = MODELS.get(arch)(num_classes, in_channels, **kwargs)
    model.set_normalization(mean, std)
    return model
