"""One small name -> factory registry used by every plugin family.

Follows timm's habit: a plugin is one decorated function; a duplicate name is an
error, and an unknown name is an error that lists the valid ones with a
"did you mean" suggestion.

A plugin's hyperparameters are its keyword-only arguments; ``check_parameters``
types what a user gives them (from a config file, ``--set`` or ``--attack-param``)
against their annotations, or the type of their default, before the factory runs,
so ``gamma=abc`` is "'abc' is not a number" instead of a ``TypeError`` deep inside.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Strict, ValidationError, create_model

from robustcam.errors import InputError, ParameterError, RobustcamError, describe_invalid

F = TypeVar("F", bound=Callable[..., object])
R = TypeVar("R")


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


# --------------------------------------------------------------------------- plugin parameters


def keyword_parameters(factory: Callable[..., Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword-only parameters of a factory (a class or a function) and their defaults,
    without those in ``exclude`` (arguments the caller always gives itself)."""
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in exclude
    }


def _annotations(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except (NameError, TypeError):  # an annotation that does not resolve: fall back to the defaults
        return {}


_SCALARS = (bool, int, float, str)


def strict_scalars(annotation: Any) -> Any:
    """``annotation`` with every bool/int/float/str inside it made strict.

    Strict scalars keep a YAML string from being read as a number (``gamma: abc``) and
    a float from being cut to an int; containers stay lax, so a YAML list still fills a
    tuple parameter.
    """
    if annotation in _SCALARS:
        return Annotated[annotation, Strict()]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None or origin is Literal or not args:
        return annotation
    if origin is Annotated:
        return annotation
    strict_args = tuple(strict_scalars(arg) for arg in args)
    if origin is Union or origin is types.UnionType:
        return Union[strict_args]
    try:
        return origin[strict_args]
    except TypeError:  # an origin that cannot be subscripted again (collections.abc.Callable, ...)
        return annotation


@functools.cache
def parameter_model(factory: Callable[..., Any], exclude: tuple[str, ...] = ()) -> type[BaseModel]:
    """A pydantic model of ``factory``'s keyword-only parameters.

    Types come from the annotations, else from the type of the default (``Any`` when
    neither says); scalars are strict (``strict_scalars``), and NaN/inf are refused for
    every float: no hyperparameter means anything at NaN.
    """
    hints = _annotations(factory)
    fields: dict[str, Any] = {}
    for name, default in keyword_parameters(factory, exclude).items():
        required = default is inspect.Parameter.empty
        annotation = hints.get(name)
        if annotation is None:
            annotation = Any if required or default is None else type(default)
        fields[name] = (strict_scalars(annotation), ... if required else default)
    config = ConfigDict(extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True)
    model: type[BaseModel] = create_model(
        f"{getattr(factory, '__name__', 'plugin')}_parameters", __config__=config, **fields
    )
    return model


def unknown_parameters(
    factory: Callable[..., Any], params: Mapping[str, Any], *, what: str, exclude: tuple[str, ...] = ()
) -> InputError | None:
    """The error for parameters ``factory`` does not take (listing those it does), or None."""
    valid = keyword_parameters(factory, exclude)
    unknown = sorted(str(name) for name in params if name not in valid)
    if not unknown:
        return None
    return InputError(f"unknown parameter(s) {', '.join(unknown)} for {what}; valid: {', '.join(valid) or 'none'}")


def check_parameters(
    factory: Callable[..., Any], params: Mapping[str, Any], *, what: str, exclude: tuple[str, ...] = ()
) -> None:
    """Raise ``InputError`` for an unknown parameter, ``pydantic.ValidationError`` (one error per
    bad parameter, located at its name) for a value of the wrong type or a NaN/inf float.

    Parameters in ``exclude`` are neither accepted nor required: the caller gives them."""
    error = unknown_parameters(factory, params, what=what, exclude=exclude)
    if error is not None:
        raise error
    parameter_model(factory, exclude).model_validate(dict(params))


def build_checked(
    factory: Callable[..., R],
    params: Mapping[str, Any],
    *,
    what: str,
    key: str,
    args: tuple[Any, ...] = (),
    fixed: Mapping[str, Any] | None = None,
) -> R:
    """``factory(*args, **fixed, **params)`` after ``check_parameters`` of ``params``; a value of
    the wrong type is a ``ParameterError`` worded ``<key>.<parameter>: 'abc' is not a number``.
    ``fixed`` are keyword arguments the caller gives (not the user): they are not checked."""
    given = dict(fixed or {})
    try:
        check_parameters(factory, params, what=what, exclude=tuple(given))
    except ValidationError as error:
        first = error.errors()[0]
        parameter = str(first["loc"][0]) if first["loc"] else ""
        raise ParameterError(parameter, f"{key}.{parameter}: {describe_invalid(first)}") from None
    return factory(*args, **given, **params)
