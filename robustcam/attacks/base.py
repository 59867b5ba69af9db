"""Attack definitions: what an attack is, independent of the library that runs it.

Following foolbox 3, an attack is an object with keyword-only hyperparameters
and a ``repr`` that shows them; the eps loop, bounds checks and validation live
in one place (``robustcam.evaluate``), and each backend only knows how to run
one attack once at one eps. Attacks are registered by name (``ATTACKS``); a new
attack is one decorated class that says how each library builds it.

Two kinds of attack:

- *bounded* attacks (FGSM, PGD, APGD, AutoAttack) search inside an eps ball of
  their norm; they run once per eps.
- *minimal-perturbation* attacks (C&W L2) search for the smallest perturbation
  that flips the prediction; they run once, and a sample is robust at eps when
  the attack failed or the perturbation it found is larger than eps.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, ClassVar, Literal

from torch import nn

from robustcam.registry import Registry

Norm = Literal["Linf", "L2"]
NORMS: tuple[Norm, ...] = ("Linf", "L2")


class Attack:
    """Base class of registered attacks. Subclasses declare their hyperparameters as
    keyword-only ``__init__`` arguments with defaults and store them as attributes."""

    name: ClassVar[str]
    norm: ClassVar[Norm]
    minimal: ClassVar[bool] = False
    randomized: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in attack_parameters(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params().items()))))

    def torchattacks(self, model: nn.Module, eps: float | None, *, num_classes: int, seed: int) -> Any:
        """The torchattacks attack object for one eps (None for minimal attacks)."""
        raise AttackNotSupportedError(f"attack {self.name!r} has no torchattacks implementation")

    def foolbox(self, eps: float | None) -> Any:
        """The foolbox attack object for one eps (None for minimal attacks)."""
        raise AttackNotSupportedError(f"attack {self.name!r} has no foolbox implementation")


class AttackNotSupportedError(ValueError):
    """An attack that a backend cannot run."""


AttackFactory = Callable[..., Attack]
ATTACKS: Registry[AttackFactory] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register an ``Attack`` subclass under its ``name``."""
    ATTACKS.register(cls.name)(cls)
    return cls


def list_attacks() -> list[str]:
    return ATTACKS.names()


def attack_parameters(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of an attack class and their defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def build_attack(name: str, **params: Any) -> Attack:
    """Build a registered attack; unknown parameters list the valid ones."""
    factory = ATTACKS.get(name)
    valid = attack_parameters(factory)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for attack {name!r}; valid: {', '.join(valid) or 'none'}"
        )
    return factory(**params)


# --------------------------------------------------------------------------- eps


def parse_eps(value: str | float | int) -> float:
    """``8/255``, ``0.03`` or ``1e-2`` -> float. Fractions keep full precision."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?", text):
        numerator, denominator = (part.strip() for part in text.split("/"))
        if float(denominator) == 0:
            raise ValueError(f"eps {text!r} divides by zero")
        return float(Fraction(numerator) / Fraction(denominator))
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"eps {text!r} is not a number or a fraction such as 8/255") from None


def parse_eps_list(values: str | Sequence[str | float] | None, *, norm: Norm) -> list[float]:
    """Parse and validate an eps list (comma-separated text or a sequence), sorted ascending.

    Linf eps are in [0, 1] pixel units; L2 eps are >= 0 (an L2 norm over a whole
    image can exceed 1).
    """
    if values is None:
        return []
    items = [v for v in values.split(",") if v.strip()] if isinstance(values, str) else list(values)
    parsed = sorted({parse_eps(item) for item in items})
    for eps in parsed:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps:g}")
        if norm == "Linf" and eps > 1:
            raise ValueError(f"Linf eps must be in [0, 1] (pixel units; 8/255 = {8 / 255:.4f}), got {eps:g}")
    return parsed


def format_eps(eps: float, norm: Norm) -> str:
    """``8/255`` for Linf budgets that are whole 255ths, else a short decimal."""
    if norm == "Linf":
        scaled = eps * 255
        if abs(scaled - round(scaled)) < 1e-6:
            return f"{round(scaled)}/255"
    return f"{eps:g}"
