"""One small name -> factory registry used by every plugin family.

Follows timm's habit: a plugin is one decorated function; a duplicate name is an
error, and an unknown name is an error that lists the valid ones with a
"did you mean" suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robustcam.errors import RobustcamError

F = TypeVar("F", bound=Callable[..., object])


class UnknownNameError(RobustcamError, ValueError):
    """A name that is not in a registry; the message lists the valid names."""


class Registry(Generic[F]):
    """Maps names to factories for one plugin family (architectures, losses, ...)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers ``factory`` under ``name``."""

        def decorator(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.family} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> F:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self.names())
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.family} {name!r}{hint}; valid: {valid}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, names={self.names()})"
