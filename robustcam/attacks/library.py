"""The registered attacks and how torchattacks and foolbox build each of them.

Same semantics in both libraries: the same eps, number of steps, step size and
random start. PGD's step size is ``step_factor * eps / steps`` (2.5 eps / steps
by default, Madry et al.'s choice that lets a walk cross the ball).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from robustcam.attacks.base import Attack, Norm, register_attack


def _torchattacks() -> Any:
    import torchattacks  # imported when an attack is built: keeps `import robustcam` fast

    return torchattacks


def _foolbox() -> Any:
    import foolbox

    return foolbox


def _require_eps(name: str, eps: float | None) -> float:
    if eps is None:
        raise ValueError(f"attack {name!r} is bounded: it needs an eps")
    return eps


@register_attack
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015): one signed-gradient step of size eps."""

    name = "fgsm"
    norm = "Linf"

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        return _torchattacks().FGSM(model, eps=_require_eps(self.name, eps))

    def foolbox(self, eps: float | None) -> Any:
        return _foolbox().attacks.LinfFastGradientAttack(random_start=False)


@register_attack
class PGD(Attack):
    """Projected gradient descent in the Linf ball (Madry et al., 2018), random start."""

    name = "pgd"
    norm: ClassVar[Norm] = "Linf"
    randomized = True

    def __init__(self, *, steps: int = 10, step_factor: float = 2.5, random_start: bool = True) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if step_factor <= 0:
            raise ValueError(f"step_factor must be > 0, got {step_factor}")
        self.steps = steps
        self.step_factor = step_factor
        self.random_start = random_start

    def step_size(self, eps: float) -> float:
        return self.step_factor * eps / self.steps

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        eps = _require_eps(self.name, eps)
        return _torchattacks().PGD(
            model, eps=eps, alpha=self.step_size(eps), steps=self.steps, random_start=self.random_start
        )

    def foolbox(self, eps: float | None) -> Any:
        eps = _require_eps(self.name, eps)
        return _foolbox().attacks.LinfProjectedGradientDescentAttack(
            abs_stepsize=self.step_size(eps), steps=self.steps, random_start=self.random_start
        )


@register_attack
class PGDL2(PGD):
    """Projected gradient descent in the L2 ball, random start."""

    name = "pgd_l2"
    norm = "L2"

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        eps = _require_eps(self.name, eps)
        return _torchattacks().PGDL2(
            model, eps=eps, alpha=self.step_size(eps), steps=self.steps, random_start=self.random_start
        )

    def foolbox(self, eps: float | None) -> Any:
        eps = _require_eps(self.name, eps)
        return _foolbox().attacks.L2ProjectedGradientDescentAttack(
            abs_stepsize=self.step_size(eps), steps=self.steps, random_start=self.random_start
        )


@register_attack
class CW(Attack):
    """Carlini & Wagner L2 (2017) with a fixed constant ``c``: a minimal-perturbation attack.

    Minimises ``||delta||_2^2 + c * max(Z_y - max_{j != y} Z_j, -kappa)`` with Adam
    (learning rate ``lr``) for ``steps`` steps and keeps the smallest successful
    perturbation. No binary search over ``c`` (as in torchattacks); foolbox runs
    with ``binary_search_steps=1`` for the same semantics.
    """

    name = "cw"
    norm = "L2"
    minimal = True

    def __init__(self, *, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01) -> None:
        if c <= 0:
            raise ValueError(f"c must be > 0, got {c}")
        if kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {kappa}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.c = c
        self.kappa = kappa
        self.steps = steps
        self.lr = lr

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        return _torchattacks().CW(model, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)

    def foolbox(self, eps: float | None) -> Any:
        return _foolbox().attacks.L2CarliniWagnerAttack(
            binary_search_steps=1,
            steps=self.steps,
            stepsize=self.lr,
            confidence=self.kappa,
            initial_const=self.c,
            abort_early=True,
        )


@register_attack
class APGD(Attack):
    """Auto-PGD with the cross-entropy loss (Croce & Hein, 2020), Linf."""

    name = "apgd"
    norm = "Linf"
    randomized = True

    def __init__(self, *, steps: int = 10, restarts: int = 1, loss: str = "ce") -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss must be one of ce, dlr, got {loss!r}")
        self.steps = steps
        self.restarts = restarts
        self.loss = loss

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        return _torchattacks().APGD(
            model, norm="Linf", eps=_require_eps(self.name, eps), steps=self.steps,
            n_restarts=self.restarts, loss=self.loss, seed=seed,
        )


@register_attack
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein, 2020), Linf: the parameter-free ensemble, seeded."""

    name = "autoattack"
    norm = "Linf"
    randomized = True

    def __init__(self, *, version: str = "standard") -> None:
        if version not in ("standard", "plus", "rand"):
            raise ValueError(f"version must be one of standard, plus, rand, got {version!r}")
        self.version = version

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        return _torchattacks().AutoAttack(
            model, norm="Linf", eps=_require_eps(self.name, eps), version=self.version,
            n_classes=num_classes, seed=seed,
        )
