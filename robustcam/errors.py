"""Errors that the CLI turns into one line and exit code 2.

Every error a user can cause with bad input (a value, a name, a file) derives from
``RobustcamError``; the CLI prints its message on one line instead of a traceback and
exits with code 2. Anything else is a bug: the CLI shows its traceback and asks for a
report. Errors that are also about a bad argument value subclass ``ValueError`` too, so
Python callers can catch them the usual way.

``describe_invalid`` words one pydantic error (a config key, a CLI option, a loss or
attack parameter) the same way everywhere: the bad value and what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class RobustcamError(Exception):
    """Base class for errors caused by the user's input or files."""


class InputError(RobustcamError, ValueError):
    """A value the user gave that cannot be used (the message names it and what is valid)."""


class ParameterError(InputError):
    """A bad value of one named parameter of a loss, an attack or a dataset.

    ``parameter`` lets the config layer point at the exact key (``loss.focal.gamma``).
    """

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class CheckpointError(RobustcamError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class DatasetNotFoundError(RobustcamError):
    """A dataset whose files are not where robustcam looked."""


class ConfigError(RobustcamError, ValueError):
    """A config file or override that does not validate."""


class NonFiniteLossError(RobustcamError):
    """Training produced a NaN or infinite loss."""


def show_value(value: object, limit: int = 60) -> str:
    """A value as a message quotes it: strings quoted, NaN and inf bare, long values cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# pydantic error type -> how the bad value fails it (the value is put in front)
_PHRASES: dict[str, str] = {
    "int_parsing": "is not an integer",
    "int_type": "is not an integer",
    "int_from_float": "is not an integer",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is not a boolean (true or false)",
    "bool_type": "is not a boolean (true or false)",
    "string_type": "is not a string",
    "list_type": "is not a list",
    "dict_type": "is not a mapping",
    "greater_than": "is not > {gt}",
    "greater_than_equal": "is not >= {ge}",
    "less_than": "is not < {lt}",
    "less_than_equal": "is not <= {le}",
    "literal_error": "is not one of {expected}",
    "enum": "is not one of {expected}",
}


def describe_invalid(error: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as "<value> is not ...".

    Errors raised by our own validators already name the value; their message is kept.

    >>> describe_invalid({"type": "greater_than_equal", "input": 0, "ctx": {"ge": 1}, "msg": "..."})
    '0 is not >= 1'
    """
    kind = str(error.get("type", ""))
    message = str(error.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "is required"
    phrase = _PHRASES.get(kind)
    if phrase is None:
        if kind in ("value_error", "assertion_error", "robustcam_invalid") or "input" not in error:
            return message
        return f"{message} (got {show_value(error['input'])})"
    context = {
        name: show_value(value) if name != "expected" else value for name, value in dict(error.get("ctx") or {}).items()
    }
    try:
        phrase = phrase.format(**context)
    except (KeyError, IndexError):  # a pydantic version with other context names: keep its words
        phrase = message
    return f"{show_value(error.get('input'))} {phrase}"
