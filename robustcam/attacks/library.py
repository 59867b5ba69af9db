"""The registered attacks and, beside each, how torchattacks and foolbox build it.

Same semantics in both libraries: the same eps, number of steps, step size and
random start. PGD's step size is ``step_factor * eps / steps`` (2.5 eps / steps
by default, Madry et al.'s choice that lets a walk cross the ball).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from robustcam.attacks.base import BoundedAttack, BuildContext, Builder, MinimalAttack, Norm, register_attack
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
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _fgsm_torchattacks, "foolbox": _fgsm_foolbox}


# --------------------------------------------------------------------------- PGD (Linf and L2)


def _pgd_torchattacks(attack: PGD, context: BuildContext) -> Any:
    eps = _eps(attack, context)
    constructor = _torchattacks().PGD if attack.norm == "Linf" else _torchattacks().PGDL2
    return constructor(
        context.model, eps=eps, alpha=attack.step_size(eps), steps=attack.steps, random_start=attack.random_start
    )


def _pgd_foolbox(attack: PGD, context: BuildContext) -> Any:
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
    """Projected gradient descent in the Linf ball (Madry et al., 2018), random start."""

    name = "pgd"
    norm: ClassVar[Norm] = "Linf"
    randomized = True
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _pgd_torchattacks, "foolbox": _pgd_foolbox}

    def __init__(self, *, steps: int = 10, step_factor: float = 2.5, random_start: bool = True) -> None:
        _at_least_one("steps", steps)
        _positive("step_factor", step_factor)
        self.steps = steps
        self.step_factor = step_factor
        self.random_start = random_start

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
    """Auto-PGD with the cross-entropy loss (Croce & Hein, 2020), Linf."""

    name = "apgd"
    norm = "Linf"
    randomized = True
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _apgd_torchattacks}

    def __init__(self, *, steps: int = 10, restarts: int = 1, loss: str = "ce") -> None:
        _at_least_one("steps", steps)
        _at_least_one("restarts", restarts)
        if loss not in ("ce", "dlr"):
            raise ParameterError("loss", f"loss must be one of ce, dlr, got {loss!r}")
        self.steps = steps
        self.restarts = restarts
        self.loss = loss


def _autoattack_torchattacks(attack: AutoAttack, context: BuildContext) -> Any:
    return _torchattacks().AutoAttack(
        context.model,
        norm="Linf",
        eps=_eps(attack, context),
        version=attack.version,
        n_classes=context.num_classes,
        seed=context.seed,
    )


@register_attack
class AutoAttack(BoundedAttack):
    """AutoAttack (Croce & Hein, 2020), Linf: the parameter-free ensemble, seeded."""

    name = "autoattack"
    norm = "Linf"
    randomized = True
    builders: ClassVar[Mapping[str, Builder]] = {"torchattacks": _autoattack_torchattacks}

    def __init__(self, *, version: str = "standard") -> None:
        if version not in ("standard", "plus", "rand"):
            raise ParameterError("version", f"version must be one of standard, plus, rand, got {version!r}")
        self.version = version
