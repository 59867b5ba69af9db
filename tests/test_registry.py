from __future__ import annotations

from collections.abc import Callable

import pytest

from robustcam.registry import Registry, UnknownNameError


def test_register_and_get() -> None:
    registry: Registry[Callable[..., object]] = Registry("widget")
    registry.register("alpha")(int)
    assert registry.get("alpha") is int
    assert "alpha" in registry and "beta" not in registry
    assert registry.names() == ["alpha"]


def test_duplicate_name_is_an_error() -> None:
    registry: Registry[Callable[..., object]] = Registry("widget")
    registry.register("alpha")(int)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alpha")(float)


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    registry: Registry[Callable[..., object]] = Registry("widget")
    registry.register("resnet18")(int)
    registry.register("smallcnn")(int)
    with pytest.raises(UnknownNameError) as info:
        registry.get("resnet81")
    message = str(info.value)
    assert "unknown widget 'resnet81'" in message
    assert "did you mean 'resnet18'" in message
    assert "valid: resnet18, smallcnn" in message
    assert isinstance(info.value, ValueError)
