"""Attack definitions: what an attack is, independent of the library that runs it.

Following foolbox 3, an attack is an object with keyword-only hyperparameters
and a ``repr`` that shows them; the eps loop, bounds checks and validation live
in one place (``robustcam.evaluate``), and each backend only knows how to run
one attack once at one eps. Attacks are registered by name (``ATTACKS``); a new
attack is one decorated class whose ``builders`` table says how each library
builds it.

The kind of an attack is its type, so the eps loop of each kind is written once:

- ``BoundedAttack`` (FGSM, PGD, APGD, AutoAttack) searches inside an eps ball of
  its norm: it runs once per eps and takes part in the eps cascade.
- ``MinimalAttack`` (C&W L2) searches for the smallest perturbation that flips
  the prediction: it runs once, and a sample is robust at eps when the attack
  failed or the perturbation it found is larger than eps.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from robustcam.errors import InputError, RobustcamError
from robustcam.registry import Registry, build_checked, keyword_parameters

Norm = Literal["Linf", "L2"]
NORMS: tuple[Norm, ...] = ("Linf", "L2")
AttackKind = Literal["bounded", "minimal"]


@dataclass(frozen=True)
class BuildContext:
    """What a library needs to build an attack object for one run."""

    model: nn.Module
    eps: float | None  # None for a minimal attack
    num_classes: int
    seed: int


Builder = Callable[[Any, BuildContext], Any]


@dataclass(frozen=True)
class AttackRun:
    """One call of an attack on a batch: the eps it attacks at (None for a minimal attack),
    its index in the eps list (it seeds the run), and the (index, eps) it is scored at."""

    eps: float | None
    eps_index: int
    scored: tuple[tuple[int, float], ...]


class AttackNotSupportedError(RobustcamError, ValueError):
    """An attack that a backend cannot run."""


class Attack(ABC):
    """Base class of registered attacks. Subclasses declare their hyperparameters as
    keyword-only ``__init__`` arguments with defaults, store them as attributes, and say in
    ``builders`` how each library (backend name -> ``builder(attack, context)``) builds them."""

    name: ClassVar[str]
    norm: ClassVar[Norm]
    kind: ClassVar[AttackKind]
    cascades: ClassVar[bool]  # whether a break at a smaller eps carries to the larger ones
    randomized: ClassVar[bool] = False
    builders: ClassVar[Mapping[str, Builder]] = {}

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in attack_parameters(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params().items()))))

    def supports(self, backend: str) -> bool:
        return backend in self.builders

    @classmethod
    def default_backend(cls) -> str:
        """The backend that runs this attack when none is chosen: the first of its builders
        (the library whose implementation defines the attack, e.g. the authors' AutoAttack)."""
        return next(iter(cls.builders))

    def build(self, backend: str, context: BuildContext) -> Any:
        """The library's attack object for one run; a backend the attack has no builder for is an error."""
        builder = self.builders.get(backend)
        if builder is None:
            raise AttackNotSupportedError(f"attack {self.name!r} has no {backend} implementation")
        return builder(self, context)

    @abstractmethod
    def runs(self, budgets: Sequence[float]) -> list[AttackRun]:
        """The calls this attack makes on a batch for an ascending eps list."""

    @abstractmethod
    def admissible(self, in_range: Tensor, within_budget: Tensor) -> Tensor:
        """Which examples are valid: their size is either a budget or a measurement."""

    @abstractmethod
    def violation(self, in_range: bool, within_budget: bool, size: float, eps: float) -> str:
        """What makes an example invalid, in words ("" for a valid one)."""


class BoundedAttack(Attack):
    """Searches inside the eps ball: one run per eps, each scored at its own eps.

    An example outside [0, 1] or outside its ball is invalid (a violation, never a break).
    The eps cascade applies: a sample broken at a smaller eps is broken at every larger one.
    """

    kind: ClassVar[AttackKind] = "bounded"
    cascades: ClassVar[bool] = True

    def runs(self, budgets: Sequence[float]) -> list[AttackRun]:
        return [AttackRun(eps, j, ((j, eps),)) for j, eps in enumerate(budgets)]

    def admissible(self, in_range: Tensor, within_budget: Tensor) -> Tensor:
        return in_range & within_budget

    def violation(self, in_range: bool, within_budget: bool, size: float, eps: float) -> str:
        problems = [] if in_range else ["outside [0, 1]"]
        if not within_budget:
            problems.append(f"{self.norm} norm {size:.6g} > eps {eps:.6g}")
        return "; ".join(problems)


class MinimalAttack(Attack):
    """Searches for the smallest flipping perturbation: one run, scored at every eps.

    The perturbation's size is the measurement, so only [0, 1] decides validity; at an eps
    smaller than the size the sample simply counts as robust.
    """

    kind: ClassVar[AttackKind] = "minimal"
    cascades: ClassVar[bool] = False

    def runs(self, budgets: Sequence[float]) -> list[AttackRun]:
        return [AttackRun(None, 0, tuple(enumerate(budgets)))]

    def admissible(self, in_range: Tensor, within_budget: Tensor) -> Tensor:
        return in_range

    def violation(self, in_range: bool, within_budget: bool, size: float, eps: float) -> str:
        return "" if in_range else "outside [0, 1]"


AttackFactory = Callable[..., Attack]
ATTACKS: Registry[AttackFactory] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register an ``Attack`` subclass under its ``name``."""
    if not issubclass(cls, (BoundedAttack, MinimalAttack)):
        raise TypeError(f"attack {cls.__name__} must derive from BoundedAttack or MinimalAttack")
    ATTACKS.register(cls.name)(cls)
    return cls


def list_attacks() -> list[str]:
    return ATTACKS.names()


def attack_class(name: str) -> type[Attack]:
    """The registered class of an attack (unknown names list the valid ones)."""
    factory = ATTACKS.get(name)
    assert isinstance(factory, type) and issubclass(factory, Attack)
    return factory


def attack_parameters(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of an attack class and their defaults."""
    return keyword_parameters(factory)


def build_attack(name: str, **params: Any) -> Attack:
    """Build a registered attack; unknown parameters (listing the valid ones) and values of the
    wrong type (typed by the class's annotations) are an ``InputError``."""
    return build_checked(ATTACKS.get(name), params, what=f"attack {name!r}", key=name)


# --------------------------------------------------------------------------- eps


def parse_eps(value: str | float) -> float:
    """``8/255``, ``0.03`` or ``1e-2`` -> float. Fractions keep full precision."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?", text):
        numerator, denominator = (part.strip() for part in text.split("/"))
        if float(denominator) == 0:
            raise InputError(f"eps {text!r} divides by zero")
        return float(Fraction(numerator) / Fraction(denominator))
    try:
        return float(text)
    except ValueError:
        raise InputError(f"eps {text!r} is not a number or a fraction such as 8/255") from None


def parse_eps_list(values: str | Sequence[str | float] | None, *, norm: Norm) -> list[float]:
    """Parse and validate an eps list (comma-separated text or a sequence), sorted ascending.

    Linf eps are in [0, 1] pixel units; L2 eps are >= 0 (an L2 norm over a whole
    image can exceed 1).
    """
    if values is None:
        return []
    items = [v for v in values.split(",") if v.strip()] if isinstance(values, str) else list(values)
    parsed = [parse_eps(item) for item in items]
    for eps in parsed:
        if not math.isfinite(eps):  # NaN compares false with everything and would pass every check below
            raise InputError(f"eps must be a finite number, got {eps:g}")
        if eps < 0:
            raise InputError(f"eps must be >= 0, got {eps:g}")
        if norm == "Linf" and eps > 1:
            raise InputError(f"Linf eps must be in [0, 1] (pixel units; 8/255 = {8 / 255:.4f}), got {eps:g}")
    return sorted(set(parsed))


def format_eps(eps: float, norm: Norm) -> str:
    """``8/255`` for Linf budgets that are whole 255ths, else a short decimal."""
    if norm == "Linf":
        scaled = eps * 255
        if abs(scaled - round(scaled)) < 1e-6:
            return f"{round(scaled)}/255"
    return f"{eps:g}"
