"""What an evaluation returns, and the progress hooks it calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from robustcam.evaluate.sanity import SanityFlag


@dataclass(frozen=True)
class EvalResult:
    per_sample: pd.DataFrame  # one row per (sample, attack, backend, eps)
    summary: pd.DataFrame  # one row per (attack, backend, eps), plus clean and worst-case rows
    flags: tuple[SanityFlag, ...] = ()
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)  # every pair of backends (backend_agreement)
    meta: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, Any] | None = None  # a few samples with their CAMs, clean and adversarial
    maxboxacc: pd.DataFrame = field(default_factory=pd.DataFrame)  # maxboxacc_v2.csv (datasets with boxes)


class EvalProgress:
    """Hooks ``evaluate`` calls; the default does nothing. The CLI renders them."""

    def on_job_start(self, name: str, total: int) -> None:
        """A job (``clean`` or ``attack/backend``) over ``total`` samples starts."""

    def on_job_resume(self, name: str, completed: int) -> None:
        """``completed`` samples of the job were finished by an earlier, interrupted run and are
        read back from its shards, not attacked again (once, right after ``on_job_start``)."""

    def on_job_advance(self, name: str, completed: int) -> None:
        """``completed`` samples of the job are done (those resumed included)."""

    def on_job_end(self, name: str) -> None:
        """The job is done."""


__all__ = ["EvalProgress", "EvalResult"]
