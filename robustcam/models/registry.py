"""The architecture registry and ``build_model``.

An entry is the factory together with its ``ArchSpec`` (timm keeps a model's
``default_cfg`` beside its factory in the same way), so an architecture cannot
be registered without the facts the checkpoint loader and the tests read.

Besides its registered entries, the registry resolves names of two open families
on demand, each the first time it is asked for (and then from a cache):

- ``timm:<model name>`` (``timm:resnet18``, ``timm:convnext_atto.d2_in1k``): a timm
  model built with ``pretrained=False`` (``robustcam.models.timm_adapter``);
- ``<module.path>:<function>`` or ``<path/to/file.py>:<function>``: a user's own
  factory (``robustcam.models.user_factory``), the one place where user code runs.

A name with a colon belongs to the scheme named before its first colon, and to the
user factories when no scheme has that name. ``names()`` lists only the registered
entries, so "did you mean" suggestions and CLI help stay short; an unknown name of a
scheme gets that scheme's own message (an unknown timm model points at
``timm.list_models()``, a missing file is named).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from robustcam.errors import InputError, RobustcamError
from robustcam.models.base import CAMClassifier
from robustcam.models.spec import ArchSpec
from robustcam.registry import Registry, UnknownNameError

ModelFactory = Callable[..., CAMClassifier]
# The scheme key of the resolver for names with a colon whose prefix is no scheme: user factories.
USER_FACTORY_SCHEME = ""


@dataclass(frozen=True)
class Architecture:
    """An architecture: calling it builds the model, ``spec`` says what is known about it.

    ``typed_options`` says whether the factory's keyword-only parameters are all the
    options it takes, so that a config can check them before building; it is False
    for timm models and user factories, whose options go on to code that checks
    them itself (``timm.create_model``, the user's function).
    """

    name: str
    factory: ModelFactory
    spec: ArchSpec
    typed_options: bool = True

    def __call__(self, num_classes: int, in_channels: int = 3, **kwargs: Any) -> CAMClassifier:
        return self.factory(num_classes, in_channels, **kwargs)


Resolver = Callable[[str], Architecture]


class ArchitectureRegistry(Registry[Architecture]):
    """The registered architectures, and the schemes that resolve the names of open families."""

    def __init__(self) -> None:
        super().__init__("architecture")
        self._schemes: dict[str, Resolver] = {}
        self._resolved: dict[str, Architecture] = {}

    def register_scheme(self, scheme: str) -> Callable[[Resolver], Resolver]:
        """Decorator: ``resolver(name)`` makes the ``Architecture`` of names ``<scheme>:...``.

        ``USER_FACTORY_SCHEME`` registers the resolver of every other name with a colon.
        """

        def decorator(resolver: Resolver) -> Resolver:
            if scheme in self._schemes:
                raise ValueError(f"architecture scheme {scheme!r} is already registered")
            self._schemes[scheme] = resolver
            return resolver

        return decorator

    def get(self, name: str) -> Architecture:
        if name in self._entries:
            return self._entries[name]
        if name in self._resolved:
            return self._resolved[name]
        resolver = self._resolver(name)
        if resolver is None:
            raise UnknownNameError(self.unknown_message(name))
        # Failures are not cached: a fixed file or a newly installed timm is found on the next try.
        self._resolved[name] = architecture = resolver(name)
        return architecture

    def unknown_message(self, name: str) -> str:
        if self._resolver(name) is None:
            return super().unknown_message(name)
        try:
            self.get(name)
        except RobustcamError as error:
            return str(error)
        return f"{self.family} {name!r} resolves; it is not unknown"

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered or resolves (which imports timm or the user's code)."""
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except RobustcamError:
            return False
        return True

    def runs_user_code(self, name: str) -> bool:
        """Whether resolving ``name`` imports and calls a user's code (a user factory name)."""
        scheme, colon, _ = name.partition(":")
        return bool(colon) and name not in self._entries and scheme not in self._schemes

    def _resolver(self, name: str) -> Resolver | None:
        scheme, colon, _ = name.partition(":")
        if not colon:
            return None
        return self._schemes.get(scheme, self._schemes.get(USER_FACTORY_SCHEME))


MODELS = ArchitectureRegistry()


def register_model(name: str, *, spec: ArchSpec) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``(num_classes, in_channels, **kwargs) -> CAMClassifier`` with its spec."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec of architecture {name!r} must be an ArchSpec, got {type(spec).__name__}")
    if ":" in name:
        raise ValueError(f"architecture names cannot contain ':' (it starts a scheme), got {name!r}")

    def decorator(factory: ModelFactory) -> ModelFactory:
        MODELS.register(name)(Architecture(name, factory, spec))
        return factory

    return decorator


def get_spec(arch: str) -> ArchSpec:
    """The ``ArchSpec`` of ``arch`` (registered or resolved); an unknown name lists the valid ones."""
    return MODELS.get(arch).spec


def list_models() -> list[str]:
    """The registered architecture names (not the open ``timm:`` and user-factory families)."""
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

    ``arch`` is a registered name, ``timm:<model name>`` or a user factory
    (``module.path:function``, ``path/to/file.py:function``); ``kwargs`` are the
    architecture's options. ``mean``/``std`` are the dataset's per-channel
    statistics; the model normalises its [0, 1] inputs with them.
    """
    if num_classes < 2:
        raise InputError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels not in (1, 3):
        raise InputError(f"in_channels must be 1 or 3, got {in_channels}")
    model = MODELS.get(arch)(num_classes, in_channels, **kwargs)
    model.set_normalization(mean, std)
    return model
