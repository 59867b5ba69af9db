"""The registered attacks and, beside each, how torchattacks, foolbox and robustcam's own
``native`` backend (``robustcam.attacks.native``) build it.

Same semantics in every library: the same eps, number of steps, step size and
random start. PGD's step size is ``step_factor * eps / steps`` (2.5 eps / steps
by default, Madry et al.'s choice that lets a walk cross the ball). PGD's
``restarts`` > 1 runs on the native backend only (neither library restarts PGD).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from robustcam.attacks import native
from robustcam.attacks.base import (
    AttackNotSupportedError,
    BoundedAttack,
    BuildContext,
    Builder,
    MinimalAttack,
    Norm,
    register_attack,
)
from robustcam.attacks.official import AUTOATTACK_VERSIONS, build_official
from robustcam.errors import ParameterError


def _torchattacks() -> Any:
    import torchattacks  # imported when an attack is built: keeps `import robustcam` fast

    return torchattacks


def _foolbox() -> Any:
    import foolbox

    return foolbox


def _eps(attack: BoundedAttack, context: BuildContext) -> float:
    if context.eps is None:
        raise ValueError(f"attack {attack.name!r} is bounded: it needs an eps")
    return context.eps


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):  # NaN and inf would silently disable an attack
        raise ParameterError(name, f"{name} must be a finite number > 0, got {value}")


def _at_least_one(name: str, value: int) -> None:
    if value < 1:
        raise ParameterError(name, f"{name} must be an integer >= 1, got {value}")


# --------------------------------------------------------------------------- FGSM


def _fgsm_torchattacks(attack: FGSM, context: BuildContext) -> Any:
    return _torchattacks().FGSM(context.model, eps=_eps(attack, context))


def _fgsm_foolbox(attack: FGSM, context: BuildContext) -> Any:
    return _foolbox().attacks.LinfFastGradientAttack(random_start=False)


@register_attack
class FGSM(BoundedAttack):
    """Fast gradient sign method (Goodfellow et al., 2015): one signed-gradient step of size eps."""

    name = "fgsm"
    norm = "Linf"
    builders: ClassVar[Mapping[str, Builder]] = {
        "torchattacks": _fgsm_torchattacks,
        "foolbox": _fgsm_foolbox,
        "native": native.fgsm_builder,
    }


# --------------------------------------------------------------------------- PGD (Linf and L2)


def _one_restart(attack: PGD, library: str) -> None:
    if attack.restarts > 1:
        raise AttackNotSupportedError(
            f"attack {attack.name!r} with restarts={attack.restarts} runs on the native backend only "
            f"({library} has no PGD restarts); use --backend native"
        )


def _pgd_torchattacks(attack: PGD, context: BuildContext) -> Any:
    _one_restart(attack, "torchattacks")
    eps = _eps(attack, context)
    constructor = _torchattacks().PGD if attack.norm == "Linf" else _torchattacks().PGDL2
    return constructor(
        context.model, eps=eps, alpha=attack.step_size(eps), steps=attack.steps, random_start=attack.random_start
    )


def _pgd_foolbox(attack: PGD, context: BuildContext) -> Any:
    _one_restart(attack, "foolbox")
    eps = _eps(attack, context)
    attacks = _foolbox().attacks
    constructor = (
        attacks.LinfProjectedGradientDescentAttack
        if attack.norm == "Linf"
        else (attacks.L2ProjectedGradientDescentAttack)
    )
    return constructor(abs_stepsize=attack.step_size(eps), steps=attack.steps, random_start=attack.random_start)


@register_attack
class PGD(BoundedAttack):
    """Projected gradient descent in the Linf ball (Madry et al., 2018), random start.

    ``restarts`` > 1 (native backend only) starts again from a new random point for the samples
    every earlier start left robust, as AutoAttack's restarts do.
    """

    name = "pgd"
    norm: ClassVar[Norm] = "Linf"
    randomized = True
    # native first: the default (issue 10's benchmark, benchmarks/RESULTS.md: never weaker per
    # sample than torchattacks on every quickstart model, and faster); the libraries cross-check it
    builders: ClassVar[Mapping[str, Builder]] = {
        "native": native.pgd_builder,
        "torchattacks": _pgd_torchattacks,
        "foolbox": _pgd_foolbox,
    }

    def __init__(
        self, *, steps: int = 10, step_factor: float = 2.5, random_start: bool = True, restarts: int = 1
    ) -> None:
        _at_least_one("steps", steps)
        _positive("step_factor", step_factor)
        _at_least_one("restarts", restarts)
        if restarts > 1 and not random_start:
            raise ParameterError("restarts", "restarts > 1 needs random_start=True: restarts from x repeat one walk")
        self.steps = steps
        self.step_factor = step_factor
        self.random_start = random_start
        self.restarts = restarts

    def step_size(self, eps: float) -> float:
        return self.step_factor * eps / self.steps


@register_attack
class PGDL2(PGD):
    """Projected gradient descent in the L2 ball, random start."""

    name = "pgd_l2"
    norm = "L2"


# --------------------------------------------------------------------------- C&W


def _cw_torchattacks(attack: CW, context: BuildContext) -> Any:
    return _torchattacks().CW(context.model, c=attack.c, kappa=attack.kappa, steps=attack.steps, lr=attack.lr)


def _cw_foolbox(attack: CW, context: BuildContext) -> Any:
    return _foolbox().attacks.L2CarliniWagnerAttack(
        binary_search_steps=1,
        steps=attack.steps,
        stepsize=attack.lr,
        confidence=attack.kappa,
        initial_const=attack.c,
        abort_early=True,
    )


@register_attack
class CW(MinimalAttack):
    """Carlini & Wagner L2 (2017) with a fixed constant ``c``: a minimal-perturbation attack.

    Minimises ``||delta||_2^2 + c * max(Z_y - max_{j != y} Z_j, -kappa)`` with Adam
    (learning rate ``lr``) for ``steps`` steps and keeps the smallest successful
    perturbation. No binary search over ``c`` (as in torchattacks); foolbox runs
    with ``binary_search_steps=1`` for the same semantics.
    """

    name = "cw"
    norm = "L2"
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _cw_torchattacks, "foolbox": _cw_foolbox}

    def __init__(self, *, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01) -> None:
        _positive("c", c)
        if not (math.isfinite(kappa) and kappa >= 0):
            raise ParameterError("kappa", f"kappa must be a finite number >= 0, got {kappa}")
        _at_least_one("steps", steps)
        _positive("lr", lr)
        self.c = c
        self.kappa = kappa
        self.steps = steps
        self.lr = lr


# --------------------------------------------------------------------------- APGD, AutoAttack


def _apgd_torchattacks(attack: APGD, context: BuildContext) -> Any:
    return _torchattacks().APGD(
        context.model,
        norm="Linf",
        eps=_eps(attack, context),
        steps=attack.steps,
        n_restarts=attack.restarts,
        loss=attack.loss,
        seed=context.seed,
    )


@register_attack
class APGD(BoundedAttack):
    """Auto-PGD (Croce & Hein, 2020), Linf, on the cross-entropy (default) or DLR loss; the native
    backend runs the cross-entropy loss only."""

    name = "apgd"
    norm = "Linf"
    randomized = True
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _apgd_torchattacks, "native": native.apgd_builder}

    def __init__(self, *, steps: int = 10, restarts: int = 1, loss: str = "ce") -> None:
        _at_least_one("steps", steps)
        _at_least_one("restarts", restarts)
        if loss not in ("ce", "dlr"):
            raise ParameterError("loss", f"loss must be one of ce, dlr, got {loss!r}")
        self.steps = steps
        self.restarts = restarts
        self.loss = loss


def _autoattack_torchattacks(attack: AutoAttackTA, context: BuildContext) -> Any:
    return _torchattacks().AutoAttack(
        context.model,
        norm="Linf",
        eps=_eps(attack, context),
        version=attack.version,
        n_classes=context.num_classes,
        seed=context.seed,
    )


def _check_version(version: str) -> None:
    if version not in AUTOATTACK_VERSIONS:
        raise ParameterError("version", f"version must be one of {', '.join(AUTOATTACK_VERSIONS)}, got {version!r}")


@register_attack
class AutoAttackTA(BoundedAttack):
    """torchattacks' re-implementation of AutoAttack, Linf: weaker than the authors' standard
    version, since torchattacks 3.5 builds APGD, APGD-T and FAB with 10 iterations (the
    standard version uses 100) and Square with 5000 queries. Kept as a cross-check."""

    name = "autoattack-ta"
    norm = "Linf"
    randomized = True
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _autoattack_torchattacks}

    def __init__(self, *, version: str = "standard") -> None:
        _check_version(version)
        self.version = version


def _autoattack_official(attack: AutoAttack | AutoAttackPart, context: BuildContext) -> Any:
    return build_official(attack, context, _eps(attack, context))


@register_attack
class AutoAttack(BoundedAttack):
    """AutoAttack (Croce & Hein, ICML 2020), Linf, from the authors' code (``pyautoattack``):
    ``standard`` runs APGD-CE, APGD-T, FAB-T and Square, each on what the previous ones left
    robust, with the published settings; ``plus`` and ``rand`` are the authors' other versions."""

    name = "autoattack"
    norm: ClassVar[Norm] = "Linf"
    randomized = True
    parts: ClassVar[tuple[str, ...] | None] = None
    builders: ClassVar[Mapping[str, Builder]] = {"autoattack": _autoattack_official}

    def __init__(self, *, version: str = "standard") -> None:
        _check_version(version)
        self.version = version


@register_attack
class AutoAttackL2(AutoAttack):
    """AutoAttack in the L2 ball, from the authors' code (their L2 settings of each version)."""

    name = "autoattack_l2"
    norm = "L2"


class AutoAttackPart(BoundedAttack):
    """One of AutoAttack's own attacks, Linf, with the standard version's settings, run from the
    authors' code as their ``run_standard_evaluation_individual`` runs it."""

    norm = "Linf"
    randomized = True
    version: ClassVar[str] = "standard"
    parts: ClassVar[tuple[str, ...] | None]
    builders: ClassVar[Mapping[str, Builder]] = {"autoattack": _autoattack_official}


@register_attack
class APGDCE(AutoAttackPart):
    """APGD on the cross-entropy loss: 100 iterations, 1 restart."""

    name = "apgd-ce"
    parts = ("apgd-ce",)


@register_attack
class APGDT(AutoAttackPart):
    """APGD on the targeted DLR loss: 100 iterations against each of the 9 most likely other
    classes (C - 1 where a dataset has fewer than 10 classes)."""

    name = "apgd-t"
    parts = ("apgd-t",)


@register_attack
class FABT(AutoAttackPart):
    """Targeted FAB (Croce & Hein, ICML 2020): 100 iterations per target class, 9 targets."""

    name = "fab-t"
    parts = ("fab-t",)


@register_attack
class Square(AutoAttackPart):
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based, 5000 queries, no gradients."""

    name = "square"
    parts = ("square",)
