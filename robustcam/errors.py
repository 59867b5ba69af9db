"""Errors that the CLI turns into one line and exit code 2.

Every error a user can cause with bad input derives from ``RobustcamError`` (or is
a ``ValueError``/``TypeError`` raised by argument validation); the CLI prints its
message on one line instead of a traceback.
"""

from __future__ import annotations


class RobustcamError(Exception):
    """Base class for errors caused by the user's input or files."""


class CheckpointError(RobustcamError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class DatasetNotFoundError(RobustcamError):
    """A dataset whose files are not where robustcam looked."""


class ConfigError(RobustcamError):
    """A config file or override that does not validate."""


class NonFiniteLossError(RobustcamError):
    """Training produced a NaN or infinite loss."""
