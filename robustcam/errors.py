"""Errors that the CLI turns into one line and exit code 2.

Every error a user can cause with bad input (a value, a name, a file) derives from
``RobustcamError``; the CLI prints its message on one line instead of a traceback and
exits with code 2. Anything else is a bug: the CLI shows its traceback and asks for a
report. Errors that are also about a bad argument value subclass ``ValueError`` too, so
Python callers can catch them the usual way.
"""

from __future__ import annotations


class RobustcamError(Exception):
    """Base class for errors caused by the user's input or files."""


class InputError(RobustcamError, ValueError):
    """A value the user gave that cannot be used (the message names it and what is valid)."""


class CheckpointError(RobustcamError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class DatasetNotFoundError(RobustcamError):
    """A dataset whose files are not where robustcam looked."""


class ConfigError(RobustcamError, ValueError):
    """A config file or override that does not validate."""


class NonFiniteLossError(RobustcamError):
    """Training produced a NaN or infinite loss."""
