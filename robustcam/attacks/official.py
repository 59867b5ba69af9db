"""The authors' AutoAttack (Croce & Hein, ICML 2020), run from their own code.

The official implementation is packaged on PyPI as ``pyautoattack`` (module ``pyautoattack``,
MIT); it is an optional extra (``pip install -e ".[autoattack]"``). ``run_autoattack`` runs
one batch through ``pyautoattack.AutoAttack.run_standard_evaluation`` exactly as the
authors' ``eval.py`` does:

- ``version="standard"``: APGD-CE (100 iterations, 1 restart), APGD-T (100 iterations, 9
  target classes), FAB-T (9 target classes), Square (5000 queries), each on the samples the
  previous ones left robust; ``plus`` and ``rand`` are the authors' other versions.
- ``parts``: one or more of AutoAttack's own attacks (``apgd-ce``, ``apgd-t``, ``fab-t``,
  ``square``) with the standard version's settings, as the authors'
  ``run_standard_evaluation_individual`` runs them.

Where a dataset has fewer than 10 classes, the targeted attacks use ``C - 1`` target classes
(the standard 9 do not exist); the run's ``notes`` say so. The authors' own checks (zero
gradients, a randomised model, softmax outputs, Square beating the gradient attacks) are
logged by their code; they are captured and returned as ``notes``, so the evaluation can
flag them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from robustcam.attacks.backends import BACKENDS, Backend
from robustcam.attacks.base import Attack, BuildContext
from robustcam.errors import ParameterError, RobustcamError
from robustcam.models import CAMClassifier

AutoAttackVersion = Literal["standard", "plus", "rand"]
AUTOATTACK_VERSIONS: tuple[AutoAttackVersion, ...] = ("standard", "plus", "rand")
AUTOATTACK_PARTS = ("apgd-ce", "apgd-t", "fab-t", "square")
STANDARD_TARGETS = 9
INSTALL_HINT = 'the official AutoAttack needs its package: pip install -e ".[autoattack]" (PyPI: pyautoattack)'
_LOGGER = "auto-attack"


class AutoAttackUnavailableError(RobustcamError):
    """The optional ``pyautoattack`` package is not installed."""


@dataclass(frozen=True)
class OfficialRun:
    """The adversarial images of one batch and what the authors' checks reported."""

    adversarial: Tensor
    notes: tuple[str, ...]


def _module() -> Any:
    try:
        import pyautoattack
    except ImportError:
        raise AutoAttackUnavailableError(INSTALL_HINT) from None
    return pyautoattack


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """The warnings the authors' code logs while the block runs (their checks)."""
    handler = _Captured()
    logger = logging.getLogger(_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def build_autoattack(
    model: nn.Module,
    *,
    eps: float,
    norm: str,
    version: AutoAttackVersion,
    parts: Sequence[str] | None,
    seed: int,
    num_classes: int,
    device: Any,
) -> tuple[Any, list[str]]:
    """The authors' ``AutoAttack`` object for one run, and notes on any deviation from their settings."""
    runner = _module().AutoAttack(model, norm=norm, eps=eps, version=version, seed=seed, device=device)
    runner.verbose = False  # their progress lines go to their logger at debug level; we keep the warnings
    if parts is not None:
        unknown = [p for p in parts if p not in AUTOATTACK_PARTS]
        if unknown:
            raise ParameterError(
                "parts", f"unknown AutoAttack part(s) {', '.join(unknown)}; valid: {', '.join(AUTOATTACK_PARTS)}"
            )
        runner.attacks_to_run = list(parts)  # the standard version's settings, one part at a time
    notes = []
    targets = min(STANDARD_TARGETS, num_classes - 1)
    if targets < STANDARD_TARGETS:
        runner.apgd_targeted.n_target_classes = targets
        runner.fab.n_target_classes = targets
        notes.append(f"{num_classes} classes: the targeted attacks use {targets} target classes instead of 9")
    return runner, notes


def _evaluate(runner: Any, notes: Sequence[str], images: Tensor, labels: Tensor) -> OfficialRun:
    with _captured_warnings() as warnings:
        adversarial, _ = runner.run_standard_evaluation(images, labels, batch_size=len(images))
    return OfficialRun(adversarial.detach(), tuple(dict.fromkeys([*notes, *warnings])))


def run_autoattack(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    norm: str = "Linf",
    version: AutoAttackVersion = "standard",
    parts: Sequence[str] | None = None,
    seed: int = 0,
    num_classes: int,
) -> OfficialRun:
    """Run the authors' AutoAttack on one batch (images in [0, 1]; ``model`` gives logits)."""
    runner, notes = build_autoattack(
        model,
        eps=eps,
        norm=norm,
        version=version,
        parts=parts,
        seed=seed,
        num_classes=num_classes,
        device=images.device,
    )
    return _evaluate(runner, notes, images, labels)


# --------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _Prepared:
    runner: Any
    notes: tuple[str, ...]


def build_official(attack: Any, context: BuildContext, eps: float) -> _Prepared:
    """The builder of every attack the ``autoattack`` backend runs: the authors' object for
    ``attack`` (``norm``, ``version``, ``parts`` of the attack class) at ``eps``."""
    device = next(context.model.parameters()).device
    runner, notes = build_autoattack(
        context.model,
        eps=eps,
        norm=attack.norm,
        version=attack.version,
        parts=attack.parts,
        seed=context.seed,
        num_classes=context.num_classes,
        device=device,
    )
    return _Prepared(runner, tuple(notes))


class OfficialBackend(Backend):
    """Runs AutoAttack and its parts with the authors' code; the checks their code logs (zero
    gradients, randomness, softmax outputs, Square beating the gradient attacks) and any
    deviation from their settings become the run's ``notes``."""

    name = "autoattack"

    def _call(
        self, runner: object, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None
    ) -> Tensor:
        assert isinstance(runner, _Prepared)
        run = _evaluate(runner.runner, runner.notes, images, labels)
        self.notes = run.notes
        return run.adversarial


BACKENDS.register("autoattack")(OfficialBackend)


__all__ = [
    "AUTOATTACK_PARTS",
    "AUTOATTACK_VERSIONS",
    "INSTALL_HINT",
    "AutoAttackUnavailableError",
    "AutoAttackVersion",
    "OfficialBackend",
    "OfficialRun",
    "build_autoattack",
    "build_official",
    "run_autoattack",
]
