"""robustcam's own attacks (the ``native`` backend): FGSM, PGD (Linf, L2) and APGD-CE on plain
torch, keeping the best iterate per sample and dropping each sample at the step it breaks.

Three departures from the libraries, each for speed or strength, none changing a step:

- **Best iterate.** Any iterate that misclassifies counts (AutoAttack's rule): a sample's
  example is its *first* misclassifying iterate. torchattacks' PGD returns only the last one,
  so a walk that flips the label and flips it back counts there as robust. A broken sample's
  example therefore lies just past the decision boundary: its logit margin and its adversarial
  CAM statistics describe the first break, not a point ten steps deep (as torchattacks' do).
- **Per-sample early exit.** The forward pass that gives the gradient at iterate t also says
  whether iterate t misclassifies; a sample that does is recorded and leaves the batch, so
  later steps cost only the still-robust samples, and only the final iterate needs one more
  forward pass (the backend leaves that one to the evaluator's re-prediction of every example,
  for FGSM and PGD). Every other step is the library's step, to the bit: a still-robust sample
  walks exactly the path it walks in the library (the gradient is per sample, the loss is
  scaled as the library scales it over the batch it was given).
- **Restarts** (``restarts=N``) run only on the samples still robust, as AutoAttack's do.

The random start of the first restart is drawn for the whole batch from torch's global
generator exactly as the library draws it, before any sample leaves, so after
``torch.manual_seed(s)`` a native run and the library's run started from the same seed walk
the same paths. ``Backend.run`` forks and seeds that generator around each run; the functions
here draw from it and never seed it. "To the bit" holds where the model's kernels give a sample
the same result whatever the batch size around it (the CPU kernels here; cuDNN may choose other
kernels for other batch sizes, so on a GPU a path can differ in the last bits and, rarely, a
sign or a tie).

``NativeBackend`` (registered as ``native``) runs them for the attacks whose ``builders`` list
"native" (fgsm, pgd, pgd_l2, apgd with loss ce). Every function returns a ``NativeResult``: the
adversarial examples, which samples the attack's own forward passes saw misclassified, and the
passes it spent counted in samples (the sum over steps of the active batch size), so that a
benchmark compares work, not only time. The evaluator still re-predicts every example and
checks its bounds and budget.

Papers: FGSM, Goodfellow et al. (ICLR 2015); PGD, Madry et al. (ICLR 2018); APGD, Croce & Hein
(ICML 2020), following the authors' ``autopgd_base.APGDAttack`` (PyPI ``pyautoattack``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustcam.attacks.backends import BACKENDS, Backend
from robustcam.attacks.base import Attack, AttackNotSupportedError, BuildContext, Norm
from robustcam.data.base import check_pixel_range
from robustcam.errors import InputError
from robustcam.models import CAMClassifier
from robustcam.runtime import eval_mode

if TYPE_CHECKING:  # the attack classes' module imports the builders below
    from robustcam.attacks.library import APGD, FGSM, PGD

L2_DIVISION_EPS = 1e-10  # torchattacks.PGDL2's eps_for_division
APGD_NORMALIZE_EPS = 1e-12  # APGDAttack.normalize
APGD_MOMENTUM = 0.75  # APGDAttack's `a` from the second step on (the paper's alpha)
APGD_INITIAL_STEP = 2.0  # the step size starts at 2 eps

NativeRunner = Callable[[Tensor, Tensor], "NativeResult"]
Step = Callable[[Tensor, Tensor, Tensor], Tensor]  # (iterate, gradient, clean) -> next iterate


@dataclass(frozen=True)
class NativeResult:
    """What a native attack found on one batch.

    ``adversarial``: per sample, the first misclassifying iterate; for a sample never broken,
    the library's answer (PGD, FGSM: the last iterate of the last restart; APGD: the clean
    input, as torchattacks and the authors return it). ``broken``: which samples an iterate
    misclassified, by the attack's own forward passes (with ``predict_final=False``, not the final
    iterate: the caller re-predicts it). ``forward_passes``,
    ``backward_passes``: the samples sent forward through the network, and back to the input.
    """

    adversarial: Tensor
    broken: Tensor
    forward_passes: int
    backward_passes: int


@dataclass
class _Progress:
    """The caller's whole batch as a run goes: each sample's example so far and the passes spent."""

    adversarial: Tensor
    broken: Tensor
    forward_passes: int = 0
    backward_passes: int = 0

    @classmethod
    def begin(cls, images: Tensor) -> _Progress:
        return cls(images.detach().clone(), torch.zeros(len(images), dtype=torch.bool, device=images.device))

    def record(self, rows: Tensor, iterates: Tensor, *, broken: bool) -> None:
        self.adversarial[rows] = iterates.detach()
        if broken:
            self.broken[rows] = True

    def result(self) -> NativeResult:
        return NativeResult(self.adversarial, self.broken, self.forward_passes, self.backward_passes)


@dataclass(frozen=True)
class _Active:
    """The samples still attacked: their rows in the caller's batch, clean images and labels."""

    rows: Tensor
    clean: Tensor
    labels: Tensor

    @classmethod
    def whole(cls, images: Tensor, labels: Tensor) -> _Active:
        return cls(torch.arange(len(images), device=images.device), images.detach(), labels)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: Tensor) -> _Active:
        return _Active(self.rows[keep], self.clean[keep], self.labels[keep])


# --------------------------------------------------------------------------- passes


def _forward(model: nn.Module, iterate: Tensor, labels: Tensor, progress: _Progress) -> tuple[Tensor, Tensor, Tensor]:
    """Logits and per-sample cross-entropy at ``iterate``, the graph kept, and the graph's leaf."""
    leaf = iterate.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(leaf)
        loss = F.cross_entropy(logits, labels, reduction="none")
    progress.forward_passes += len(leaf)
    return logits, loss, leaf


def _gradient(loss: Tensor, leaf: Tensor, progress: _Progress) -> Tensor:
    """The gradient of the scalar ``loss`` w.r.t. the input (the model's weights get none)."""
    (gradient,) = torch.autograd.grad(loss, leaf)
    progress.backward_passes += len(leaf)
    return gradient.detach()


def _record_fooled(logits: Tensor, active: _Active, iterate: Tensor, progress: _Progress) -> tuple[Tensor, int]:
    """Record the samples ``iterate`` misclassifies as broken there; the mask of those it does not
    and their number."""
    fooled = logits.detach().argmax(1) != active.labels
    broken = int(fooled.sum())  # one host sync per step; nothing to index when nothing broke
    if broken:
        progress.record(active.rows[fooled], iterate[fooled], broken=True)
    return ~fooled, len(fooled) - broken


def _predict(model: nn.Module, iterate: Tensor, active: _Active, progress: _Progress) -> tuple[Tensor, int]:
    """Predict the final ``iterate`` without a graph (its gradient would feed nothing returned) and
    record the samples it breaks; the mask of the rest and their number."""
    with torch.no_grad():
        logits = model(iterate)
    progress.forward_passes += len(iterate)
    return _record_fooled(logits, active, iterate, progress)


# --------------------------------------------------------------------------- FGSM and PGD steps


def _fgsm_step(iterate: Tensor, gradient: Tensor, clean: Tensor, *, eps: float) -> Tensor:
    """torchattacks.FGSM: ``clip_[0,1](x + eps sign(g))``."""
    return torch.clamp(clean + eps * gradient.sign(), min=0, max=1)


def _linf_step(iterate: Tensor, gradient: Tensor, clean: Tensor, *, eps: float, step_size: float) -> Tensor:
    """torchattacks.PGD: ``x' = clip_[0,1](x + clip_[-eps,eps](x_t + a sign(g) - x))``."""
    moved = iterate + step_size * gradient.sign()
    delta = torch.clamp(moved - clean, min=-eps, max=eps)
    return torch.clamp(clean + delta, min=0, max=1)


def _l2_step(iterate: Tensor, gradient: Tensor, clean: Tensor, *, eps: float, step_size: float) -> Tensor:
    """torchattacks.PGDL2: ``x_t + a g / (||g||_2 + 1e-10)``, its offset from x scaled back onto
    the eps sphere when longer than eps, then clipped to [0, 1] (at eps = 0: x, not NaN)."""
    n = len(iterate)
    gradient_norms = torch.linalg.vector_norm(gradient.reshape(n, -1), dim=1) + L2_DIVISION_EPS
    moved = iterate + step_size * (gradient / gradient_norms.view(n, 1, 1, 1))
    delta = moved - clean
    delta_norms = torch.linalg.vector_norm(delta.reshape(n, -1), dim=1)
    factor = eps / delta_norms  # inf at a zero offset, which the min below turns into 1
    # ... but 0 / 0 at eps = 0, where torchattacks returns NaN images; any factor keeps a zero offset
    factor = torch.min(factor, torch.ones_like(delta_norms)).nan_to_num(nan=1.0)
    return torch.clamp(clean + delta * factor.view(-1, 1, 1, 1), min=0, max=1)


def _linf_start(clean: Tensor, eps: float) -> Tensor:
    """torchattacks.PGD's start: ``clip_[0,1](x + U(-eps, eps))`` from the global generator."""
    return torch.clamp(clean + torch.empty_like(clean).uniform_(-eps, eps), min=0, max=1)


def _l2_start(clean: Tensor, eps: float) -> Tensor:
    """torchattacks.PGDL2's start: a Gaussian direction scaled to a radius ``U(0, 1) * eps``."""
    delta = torch.empty_like(clean).normal_()
    norms = torch.linalg.vector_norm(delta.reshape(len(clean), -1), dim=1).view(len(clean), 1, 1, 1)
    radius = torch.zeros_like(norms).uniform_(0, 1)
    delta *= radius / norms * eps
    return torch.clamp(clean + delta, min=0, max=1)


# --------------------------------------------------------------------------- the descent


def _descend(
    model: nn.Module,
    active: _Active,
    start: Tensor,
    step: Step,
    steps: int,
    batch_size: int,
    progress: _Progress,
    *,
    predict_final: bool = True,
) -> _Active:
    """``steps`` steps of ``step`` from ``start`` (the active samples' iterates); the samples left robust.

    At step t one forward pass at iterate t gives both its prediction and, for the samples it
    does not break, the gradient of the batch-mean cross-entropy (sum / ``batch_size``, the
    caller's batch: torchattacks' scale, which PGDL2's 1e-10 in its normalisation can see).
    The final iterate is every remaining sample's example whether it breaks it or not, so
    without ``predict_final`` it is recorded unpredicted (and the samples it reaches are returned).
    """
    iterate = start.detach()
    for _ in range(steps):
        logits, loss, leaf = _forward(model, iterate, active.labels, progress)
        keep, kept = _record_fooled(logits, active, leaf.detach(), progress)
        if not kept:
            return active.subset(keep)
        gradient = _gradient(loss.sum() / batch_size, leaf, progress)
        iterate = leaf.detach()
        if kept < len(active):
            active, iterate, gradient = active.subset(keep), iterate[keep], gradient[keep]
        iterate = step(iterate, gradient, active.clean)
    if not predict_final:
        progress.record(active.rows, iterate, broken=False)
        return active
    keep, _ = _predict(model, iterate, active, progress)
    progress.record(active.rows[keep], iterate[keep], broken=False)
    return active.subset(keep)


def _check_inputs(images: Tensor, labels: Tensor, eps: float) -> None:
    """``InputError`` (a ``ValueError``) naming the argument unless images are (N, C, H, W) in [0, 1]
    with N long labels and eps is a finite number >= 0."""
    if images.dim() != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    check_pixel_range(images)
    if labels.shape != (len(images),) or labels.dtype != torch.long:
        raise InputError(
            f"labels must be a long tensor of shape ({len(images)},), got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if not (math.isfinite(eps) and eps >= 0):
        raise InputError(f"eps must be a finite number >= 0, got {eps}")


def _check_counts(steps: int, restarts: int) -> None:
    for name, value in (("steps", steps), ("restarts", restarts)):
        if value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value}")


def _step_size(eps: float, steps: int, step_size: float | None) -> float:
    """The given step size, checked, or Madry et al.'s ``2.5 eps / steps`` (a walk can cross the ball)."""
    size = 2.5 * eps / steps if step_size is None else step_size
    if not (math.isfinite(size) and size >= 0):
        raise InputError(f"step_size must be a finite number >= 0, got {size}")
    return size


def _check_pgd(norm: str, steps: int, random_start: bool, restarts: int) -> None:
    _check_counts(steps, restarts)
    if norm not in ("Linf", "L2"):
        raise InputError(f"norm must be one of Linf, L2, got {norm!r}")
    if restarts > 1 and not random_start:
        raise InputError("restarts > 1 needs random_start=True: restarts from x itself repeat one walk")


def fgsm(model: nn.Module, images: Tensor, labels: Tensor, eps: float, *, predict_final: bool = True) -> NativeResult:
    """FGSM (Goodfellow et al., 2015), torchattacks' step: ``x' = clip_[0,1](x + eps sign(grad CE))``.

    The forward pass at x is also its prediction: a sample already misclassified is broken at x
    itself (its example is x); every other sample gets torchattacks' x', re-predicted once
    (``predict_final``; without it ``broken`` marks only the samples x itself breaks).
    Passes: N forward + backward, then one forward of the samples x left correct.
    """
    _check_inputs(images, labels, eps)
    progress = _Progress.begin(images)
    if len(images):
        with eval_mode(model):
            _descend(
                model,
                _Active.whole(images, labels),
                images,
                functools.partial(_fgsm_step, eps=eps),
                1,
                len(images),
                progress,
                predict_final=predict_final,
            )
    return progress.result()


def pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    norm: Norm = "Linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    predict_final: bool = True,
) -> NativeResult:
    """PGD (Madry et al., 2018) in the ``norm`` ball, torchattacks' PGD / PGDL2 step by step.

    Linf: ``x_{t+1} = clip_[0,1](x + clip_[-eps,eps](x_t + a sign(g_t) - x))``; L2: the step
    ``a g_t / ||g_t||_2`` and the projection of torchattacks.PGDL2 (``_l2_step``); ``g_t`` is
    the gradient of the batch-mean cross-entropy at ``x_t``, ``a = step_size`` (default
    ``2.5 eps / steps``). ``x_0`` is torchattacks' random start (``U(-eps, eps)`` per pixel in
    Linf, a random direction at radius ``U(0, 1) eps`` in L2; ``x`` itself without
    ``random_start``), drawn for the whole batch. A sample leaves at the first iterate t in
    0..steps it misclassifies, which becomes its example; each further restart draws a new
    start for the samples still robust only. A sample never broken gets the last iterate of the
    last restart, as in torchattacks.

    Identical to torchattacks (same seed): every iterate of every sample until it leaves, so
    torchattacks' final iterate of a sample native leaves robust is native's, and a sample
    torchattacks breaks native breaks too. Passes per restart: ``sum_t n_t`` forward and
    backward over steps t < steps, then ``n_steps`` forward for the final iterate. Without
    ``predict_final`` the last restart's final iterate is not predicted (it is the example of
    every sample it reaches either way; ``broken`` then misses the samples only it breaks): the
    backend's choice, since the evaluator re-predicts every example, so that native never
    spends more passes than torchattacks (``10 N`` forward and backward for PGD-10).
    """
    _check_inputs(images, labels, eps)
    _check_pgd(norm, steps, random_start, restarts)
    step_size = _step_size(eps, steps, step_size)
    step_rule = _linf_step if norm == "Linf" else _l2_step
    start = _linf_start if norm == "Linf" else _l2_start
    step = functools.partial(step_rule, eps=eps, step_size=step_size)
    progress = _Progress.begin(images)
    active = _Active.whole(images, labels)
    with eval_mode(model):
        for restart in range(restarts):
            if not len(active):
                break
            begin = start(active.clean, eps) if random_start else active.clean
            last = restart == restarts - 1
            predict = predict_final or not last  # the next restart needs to know who is left
            active = _descend(model, active, begin, step, steps, len(images), progress, predict_final=predict)
    return progress.result()


# --------------------------------------------------------------------------- APGD-CE


@dataclass
class _ApgdState:
    """Per-sample state of one APGD restart over the active samples; every field is indexed alike
    (``loss_steps`` along its second axis), so dropping a sample is one ``keep``."""

    rows: Tensor
    clean: Tensor
    labels: Tensor
    x_adv: Tensor  # the current iterate
    x_adv_old: Tensor  # the previous one, for the momentum term
    gradient: Tensor
    x_best: Tensor  # the highest-loss iterate so far, where a step-size halving restarts
    gradient_best: Tensor
    loss_best: Tensor
    step_size: Tensor  # (n, 1, 1, 1)
    loss_steps: Tensor  # (steps, n): every iterate's loss, for the oscillation test
    loss_best_last_check: Tensor
    reduced_last_check: Tensor

    def keep(self, mask: Tensor) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            setattr(self, item.name, value[:, mask] if item.name == "loss_steps" else value[mask])

    def active(self) -> _Active:
        return _Active(self.rows, self.clean, self.labels)


@dataclass(frozen=True)
class _Checkpoints:
    """APGD's checkpoint schedule: the first after ``first`` steps, each gap ``shrink`` shorter, at
    least ``shortest`` (0.22, 0.03 and 0.06 of the steps, each at least 1, as the authors set)."""

    first: int
    shortest: int
    shrink: int

    @classmethod
    def of(cls, steps: int) -> _Checkpoints:
        return cls(max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1))


def _apgd_start(clean: Tensor, eps: float) -> Tensor:
    """APGDAttack's Linf start ``x + eps t / (max|t| + 1e-12)``, ``t ~ U(-1, 1)`` drawn on the CPU
    generator (``torch.rand``) as the authors and torchattacks draw it, then clipped to [0, 1]."""
    t = 2 * torch.rand(clean.shape).to(clean.device) - 1
    scale = t.abs().reshape(len(t), -1).max(1)[0].view(-1, 1, 1, 1) + APGD_NORMALIZE_EPS
    return (clean + eps * torch.ones_like(clean) * (t / scale)).clamp(0.0, 1.0)


def _apgd_begin(model: nn.Module, active: _Active, eps: float, steps: int, progress: _Progress) -> _ApgdState:
    """Draw the start, evaluate it (samples it breaks leave) and set up the state of the rest."""
    start = _apgd_start(active.clean, eps)
    logits, loss, leaf = _forward(model, start, active.labels, progress)
    keep, kept = _record_fooled(logits, active, start, progress)
    gradient = _gradient(loss.sum(), leaf, progress) if kept else torch.zeros_like(start)
    loss = loss.detach()
    state = _ApgdState(
        rows=active.rows,
        clean=active.clean,
        labels=active.labels,
        x_adv=start,
        x_adv_old=start.clone(),
        gradient=gradient,
        x_best=start.clone(),
        gradient_best=gradient.clone(),
        loss_best=loss.clone(),
        step_size=APGD_INITIAL_STEP * eps * torch.ones([len(start), 1, 1, 1], device=start.device),
        loss_steps=torch.zeros([steps, len(start)], device=start.device),
        loss_best_last_check=loss.clone(),
        reduced_last_check=torch.ones_like(loss),
    )
    state.keep(keep)
    return state


def _apgd_move(state: _ApgdState, eps: float, momentum: float) -> None:
    """APGDAttack's Linf step: ``z = P(x_t + s sign(g_t))``, then
    ``x_{t+1} = P(x_t + m (z - x_t) + (1 - m)(x_t - x_{t-1}))``, P the projection onto the eps
    ball and [0, 1], m = 1 at the first step and 0.75 after."""
    x, x_adv = state.clean, state.x_adv
    previous_move = x_adv - state.x_adv_old
    state.x_adv_old = x_adv.clone()
    z = x_adv + state.step_size * torch.sign(state.gradient)
    z = torch.clamp(torch.min(torch.max(z, x - eps), x + eps), 0.0, 1.0)
    moved = x_adv + (z - x_adv) * momentum + previous_move * (1 - momentum)
    state.x_adv = torch.clamp(torch.min(torch.max(moved, x - eps), x + eps), 0.0, 1.0)


def _apgd_remember(state: _ApgdState, loss: Tensor, step: int) -> None:
    """Store iterate ``step``'s loss; where it beats the best, it becomes the best point."""
    state.loss_steps[step] = loss
    improved = loss > state.loss_best
    state.x_best[improved] = state.x_adv[improved].clone()
    state.gradient_best[improved] = state.gradient[improved].clone()
    state.loss_best[improved] = loss[improved]


def _oscillation(loss_steps: Tensor, step: int, span: int, rho: float) -> Tensor:
    """1.0 where the loss rose in at most ``rho * span`` of the last ``span`` steps (condition 1 of the
    paper). As in the authors' code, at the first checkpoint the oldest comparison reads row -1,
    the last row of the zero-filled history (a loss > 0 counts as a rise there)."""
    rises = torch.zeros(loss_steps.shape[1], device=loss_steps.device)
    for back in range(span):
        rises += (loss_steps[step - back] > loss_steps[step - back - 1]).float()
    return (rises <= span * rho * torch.ones_like(rises)).float()


def _apgd_checkpoint(state: _ApgdState, step: int, span: int, rho: float) -> None:
    """Halve the step size where the loss oscillated (condition 1) or neither this checkpoint
    improved the best loss nor the last one halved (condition 2); those samples go back to their
    best point and its gradient."""
    oscillated = _oscillation(state.loss_steps, step, span, rho)
    stalled = (1.0 - state.reduced_last_check) * (state.loss_best_last_check >= state.loss_best).float()
    halve = torch.max(oscillated, stalled)
    state.reduced_last_check = halve.clone()
    state.loss_best_last_check = state.loss_best.clone()
    chosen = halve > 0
    state.step_size[chosen] /= 2.0
    state.x_adv[chosen] = state.x_best[chosen].clone()
    state.gradient[chosen] = state.gradient_best[chosen].clone()


def _apgd_restart(
    model: nn.Module, active: _Active, eps: float, steps: int, rho: float, progress: _Progress
) -> _Active:
    """One APGD run (``APGDAttack.attack_single_run``) over the active samples; those left robust.

    A sample leaves at the first iterate that misclassifies. The last iterate is only
    predicted: its gradient would feed nothing the attack returns.
    """
    schedule = _Checkpoints.of(steps)
    state = _apgd_begin(model, active, eps, steps, progress)
    span, since_check = schedule.first, 0
    for step in range(steps):
        if not len(state.rows):
            break
        _apgd_move(state, eps, 1.0 if step == 0 else APGD_MOMENTUM)
        if step == steps - 1:
            keep, _ = _predict(model, state.x_adv, state.active(), progress)
            state.keep(keep)
            break
        logits, loss, leaf = _forward(model, state.x_adv, state.labels, progress)
        keep, kept = _record_fooled(logits, state.active(), state.x_adv, progress)
        if not kept:
            state.keep(keep)
            break
        state.x_adv, state.gradient, loss = leaf.detach(), _gradient(loss.sum(), leaf, progress), loss.detach()
        if kept < len(keep):
            state.keep(keep)
            loss = loss[keep]
        _apgd_remember(state, loss, step)
        since_check += 1
        if since_check == span:
            _apgd_checkpoint(state, step, span, rho)
            since_check, span = 0, max(span - schedule.shrink, schedule.shortest)
    return state.active()


def apgd_ce(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
) -> NativeResult:
    """APGD with the cross-entropy loss, Linf (Croce & Hein, ICML 2020), the authors' algorithm.

    From ``x_0`` (a random point of the ball's surface in Linf, clipped), with step size
    ``s = 2 eps``: ``z = P(x_t + s sign(grad CE(x_t)))``,
    ``x_{t+1} = P(x_t + 0.75 (z - x_t) + 0.25 (x_t - x_{t-1}))`` (no momentum at the first
    step); at checkpoints (after 0.22 steps, then gaps shrinking by 0.03 steps to at least
    0.06 steps) ``s`` halves for the samples whose loss oscillated (rose in at most ``rho`` of
    the steps since the last checkpoint) or stalled, and those restart from their best point.
    CE is summed over the batch, so a sample's path does not depend on the others. Restarts run
    on the samples still robust, each drawing its start for them (``torch.rand``, CPU).

    Identical to ``APGDAttack.perturb`` (and torchattacks.APGD, loss ce) started from the same
    seed, for a batch the model classifies correctly: every iterate of every sample until it
    leaves (so the start of every restart), and therefore which samples break and the
    example of every sample never broken (its clean input). Different: (1) a broken sample's
    example is its *first* misclassifying iterate; the official code returns its last; (2) a
    sample misclassified when clean is attacked here (broken at x_0 or later) where the
    official code skips it and returns it unchanged, and the official code draws starts for the
    clean-correct samples only, so with clean errors in the batch the starts differ; (3) the
    gradient of the last iterate and of broken samples is not computed (it feeds nothing
    returned). Passes: ``sum_t n_t`` forward over iterates 0..steps, backward over 0..steps-1.
    """
    _check_inputs(images, labels, eps)
    _check_counts(steps, restarts)
    if not (math.isfinite(rho) and 0 <= rho <= 1):
        raise InputError(f"rho must be a number in [0, 1], got {rho}")
    progress = _Progress.begin(images)
    active = _Active.whole(images, labels)
    with eval_mode(model):
        for _ in range(restarts):
            if not len(active):
                break
            active = _apgd_restart(model, active, eps, steps, rho, progress)
    return progress.result()


# --------------------------------------------------------------------------- builders and the backend
# The attacks' ``builders`` tables list these under "native"; a builder returns ``runner(images, labels)``.


def _eps(name: str, context: BuildContext) -> float:
    if context.eps is None:
        raise ValueError(f"attack {name!r} is bounded: it needs an eps")
    return context.eps


# The evaluator re-predicts every example, so the backend's FGSM and PGD skip their own
# prediction of the final iterate (the example either way); APGD needs it: its robust samples
# come back clean.


def fgsm_builder(attack: FGSM, context: BuildContext) -> NativeRunner:
    return functools.partial(fgsm, context.model, eps=_eps(attack.name, context), predict_final=False)


def pgd_builder(attack: PGD, context: BuildContext) -> NativeRunner:
    eps = _eps(attack.name, context)
    return functools.partial(
        pgd,
        context.model,
        eps=eps,
        norm=attack.norm,
        steps=attack.steps,
        step_size=attack.step_size(eps),
        random_start=attack.random_start,
        restarts=attack.restarts,
        predict_final=False,
    )


def apgd_builder(attack: APGD, context: BuildContext) -> NativeRunner:
    if attack.loss != "ce":
        raise AttackNotSupportedError(
            f"attack {attack.name!r} with loss={attack.loss!r} has no native implementation "
            "(native runs APGD-CE only); use --backend torchattacks"
        )
    return functools.partial(
        apgd_ce, context.model, eps=_eps(attack.name, context), steps=attack.steps, restarts=attack.restarts
    )


class NativeBackend(Backend):
    """Runs FGSM, PGD (Linf, L2) and APGD-CE with the functions above. It returns the examples
    only: the evaluator re-predicts them and checks their bounds and budget as for any library."""

    name = "native"

    def _call(
        self, runner: object, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float | None
    ) -> Tensor:
        result: NativeResult = runner(images, labels)  # type: ignore[operator]
        return result.adversarial


BACKENDS.register("native")(NativeBackend)


__all__ = [
    "NativeBackend",
    "NativeResult",
    "NativeRunner",
    "apgd_builder",
    "apgd_ce",
    "fgsm",
    "fgsm_builder",
    "pgd",
    "pgd_builder",
]
