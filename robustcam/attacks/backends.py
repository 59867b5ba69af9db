"""Backends: run one attack once, at one eps, on one batch, with a given seed.

Each attack runs on its own default backend unless others are chosen (the first library in
its ``builders`` table: native for PGD (Linf, L2), torchattacks for FGSM, C&W and APGD, the
authors' code for AutoAttack);
``foolbox`` is the second opinion used for cross-checks, ``autoattack`` the authors'
AutoAttack (``robustcam.attacks.official``), ``native`` robustcam's own best-iterate FGSM, PGD
and APGD-CE with per-sample early exit (``robustcam.attacks.native``). A backend knows how to
call its library's attack objects; which object an attack is, the attack's own ``builders``
table says. Each backend returns adversarial images and nothing else: the caller re-predicts
them with the model and checks bounds and budget itself, so no library's own success flag is
trusted.

Randomness (random starts) is drawn from torch's global generator by both
libraries; each run forks the generator state and seeds it, so a run is
reproducible and leaves the caller's generator untouched.
"""

from __future__ import annotations

from collections.abc import Callable


import torch
from torch import Tensor

from robustcam.attacks.base import Attack, AttackNotSupportedError, BuildContext, MinimalAttack
from robustcam.models import CAMClassifier
from robustcam.registry import Registry


class Backend:
    """Runs an ``Attack`` with one attack library."""

    name: str = "backend"

    def __init__(self) -> None:
        self.notes: tuple[str, ...] = ()  # what the library itself reported on its last run

    def supports(self, attack: Attack) -> bool:
        """Whether the attack's builders table says how this backend's library builds it."""
        return attack.supports(self.name)

    def run(
        self, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None, *, seed: int
    ) -> Tensor:
        """Adversarial images for ``images`` (float in [0, 1]); ``eps`` is None for minimal attacks."""
        self.notes = ()
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._run(attack, model, images, labels, eps, seed=seed).detach()

    def _run(
        self, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None, *, seed: int
    ) -> Tensor:
        runner = attack.build(self.name, BuildContext(model, eps, model.num_classes, seed))
        return self._call(runner, attack, model, images, labels, eps)

    def _call(
        self, runner: object, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None
    ) -> Tensor:
        raise AttackNotSupportedError(f"backend {self.name!r} runs no attacks")


class TorchattacksBackend(Backend):
    name = "torchattacks"

    def _call(
        self, runner: object, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None
    ) -> Tensor:
        adversarial: Tensor = runner(images, labels)  # type: ignore[operator]
        return adversarial


class FoolboxBackend(Backend):
    name = "foolbox"

    def _call(
        self, runner: object, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None
    ) -> Tensor:
        import foolbox

        fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0), device=images.device)
        raw, clipped, success = runner(fmodel, images, labels, epsilons=eps)  # type: ignore[operator]
        adversarial: Tensor = clipped if eps is not None else raw
        if isinstance(attack, MinimalAttack):
            # foolbox returns zeros where a minimisation attack found nothing; torchattacks returns
            # the input. Use the input, so that a failed search means "no perturbation" in both.
            adversarial = torch.where(success[:, None, None, None], adversarial, images)
        return adversarial


BackendFactory = Callable[[], Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")
BACKENDS.register("torchattacks")(TorchattacksBackend)
BACKENDS.register("foolbox")(FoolboxBackend)


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name)()


def check_supported(attack: Attack, backend: str) -> None:
    """Raise ``AttackNotSupportedError`` naming the backends that can run ``attack`` if ``backend`` cannot."""
    if not get_backend(backend).supports(attack):
        able = [name for name in BACKENDS.names() if attack.supports(name)]
        raise AttackNotSupportedError(
            f"attack {attack.name!r} cannot run on backend {backend!r}; backends for it: {', '.join(able)}"
        )
