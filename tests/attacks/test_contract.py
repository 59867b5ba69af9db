"""The backend contract, for every (attack, backend) pair that claims support: run once on a
tiny model with 8 images, the output has the input's shape and dtype, lies in [0, 1] and
inside the budget (bounded attacks), and the caller's random state is untouched.

Parametrised over the registries, so an attack or backend is tested the day it is registered.
"""

from __future__ import annotations

import pytest
import torch

from robustcam.attacks import BACKENDS, Attack, BoundedAttack, build_attack, get_backend, list_attacks
from robustcam.data import ImageDataset
from robustcam.data.batches import iterate_batches
from robustcam.models import CAMClassifier

BUDGETS = {"Linf": 8 / 255, "L2": 0.5}
# AutoAttack's later stages (FAB, Square) run only on samples its APGD left robust; at a large
# budget none are left, so the ensemble runs in seconds instead of minutes on CPU
OFFICIAL = ("autoattack", "apgd-ce", "apgd-t", "fab-t", "square")
BUDGET_OVERRIDES = {"autoattack-ta": 0.5, "autoattack_l2": 8.0, **dict.fromkeys(OFFICIAL, 0.5)}
TOLERANCE = 1e-6
# keep the ensemble small on CPU: the contract is about what comes back, not about strength
FAST_PARAMS = {"cw": {"steps": 5}, "pgd": {"steps": 3}, "pgd_l2": {"steps": 3}, "apgd": {"steps": 3}}

PAIRS = [
    (attack, backend)
    for attack in list_attacks()
    for backend in BACKENDS.names()
    if build_attack(attack).supports(backend)
]


def _attack(name: str) -> Attack:
    return build_attack(name, **FAST_PARAMS.get(name, {}))


@pytest.mark.parametrize(("name", "backend"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_every_supported_pair_returns_valid_examples_and_leaves_the_random_state(
    tiny_model: CAMClassifier, request: pytest.FixtureRequest, digits_test: ImageDataset, name: str, backend: str
) -> None:
    attack = _attack(name)
    if backend == "autoattack" or name == "autoattack-ta":
        # the authors' attacks run only on clean-correct samples and spend their whole budget
        # (FAB's iterations, Square's 5000 queries) on any that survive: the untrained model has
        # almost none correct, the trained one at a large budget has none left robust
        tiny_model = request.getfixturevalue("digits_model")
    images, labels, _ = next(iterate_batches(digits_test, 8))
    eps = BUDGET_OVERRIDES.get(name, BUDGETS[attack.norm])
    state = torch.random.get_rng_state()
    adversarial = get_backend(backend).run(
        attack, tiny_model, images, labels, eps if isinstance(attack, BoundedAttack) else None, seed=3
    )
    assert torch.equal(torch.random.get_rng_state(), state), "the backend changed the caller's random state"
    assert adversarial.shape == images.shape and adversarial.dtype == images.dtype
    assert not adversarial.requires_grad
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    delta = (adversarial - images).flatten(1)
    if isinstance(attack, BoundedAttack):
        size = delta.abs().amax(1) if attack.norm == "Linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps + TOLERANCE, f"{attack!r} left its {attack.norm} ball"
    again = get_backend(backend).run(
        attack, tiny_model, images, labels, eps if isinstance(attack, BoundedAttack) else None, seed=3
    )
    assert torch.equal(again, adversarial), "the same seed must give the same examples"


def test_every_registered_attack_has_at_least_one_backend() -> None:
    for name in list_attacks():
        assert any(build_attack(name).supports(b) for b in BACKENDS.names()), name
