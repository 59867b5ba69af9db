"""Attack specs, the attack registry, and the backends (torchattacks, foolbox, the authors' AutoAttack,
robustcam's own native PGD/APGD)."""

from robustcam.attacks import library as _library  # noqa: F401  (fills the registry)
from robustcam.attacks import native as _native  # noqa: F401  (registers the native backend)
from robustcam.attacks import official as _official  # noqa: F401  (registers the autoattack backend)
from robustcam.attacks.backends import BACKENDS, Backend, check_supported, get_backend
from robustcam.attacks.base import (
    ATTACKS,
    NORMS,
    Attack,
    AttackKind,
    AttackNotSupportedError,
    AttackRun,
    BoundedAttack,
    BuildContext,
    MinimalAttack,
    Norm,
    attack_class,
    attack_parameters,
    build_attack,
    format_eps,
    list_attacks,
    parse_eps,
    parse_eps_list,
    register_attack,
)

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "NORMS",
    "Attack",
    "AttackKind",
    "AttackNotSupportedError",
    "AttackRun",
    "Backend",
    "BoundedAttack",
    "BuildContext",
    "MinimalAttack",
    "Norm",
    "attack_class",
    "attack_parameters",
    "build_attack",
    "check_supported",
    "format_eps",
    "get_backend",
    "list_attacks",
    "parse_eps",
    "parse_eps_list",
    "register_attack",
]
