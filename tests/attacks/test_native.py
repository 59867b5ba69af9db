"""The native attacks (``robustcam.attacks.native``) against closed-form answers and the libraries.

- A binary linear model ``logits = W x + b``, where the strongest Linf (L2) perturbation is
  ``eps sign(w)`` (``eps w / ||w||_2``) with ``w = W_other - W_y``, and a sample breaks iff its
  margin is below ``eps ||w||_1`` (``eps ||w||_2``).
- The digits smallcnn of ``conftest`` against torchattacks (PGD, PGDL2, FGSM, APGD) and the
  authors' APGD started from the same seed: every iterate of a still-robust sample is the
  library's to the bit (a recording wrapper sees both walks), a broken sample's example is its
  first misclassifying iterate, never weaker per sample.
- The passes the functions count are the passes a counting wrapper sees, and early exit spends
  exactly the still-robust samples' passes; restarts touch only the samples still robust;
  outputs stay in [0, 1] and in the ball; the registered ``native`` backend is seeded, leaves
  the caller's random state untouched and refuses what it does not implement.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import torch
import torchattacks
from torch import Tensor, nn

from robustcam.attacks import AttackNotSupportedError, BuildContext, attack_class, build_attack, get_backend
from robustcam.attacks.native import NativeResult, apgd_ce, fgsm, pgd
from robustcam.errors import InputError, ParameterError
from robustcam.data import ImageDataset
from robustcam.data.batches import iterate_batches
from robustcam.models import CAMClassifier

SEED = 3
TOLERANCE = 1e-6


# --------------------------------------------------------------------------- models and data


class _Linear(nn.Module):
    """``logits = W x + b`` on flattened images."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(1) @ self.weight.T + self.bias


class _Counting(nn.Module):
    """Wraps a model and counts the samples of every forward pass and of every input gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # a new module is in training mode: the attacks would restore that
        self.forward_sizes: list[int] = []
        self.backward_samples = 0

    def forward(self, images: Tensor) -> Tensor:
        self.forward_sizes.append(len(images))
        if images.requires_grad:
            images.register_hook(self._count)
        out: Tensor = self.model(images)
        return out

    def _count(self, gradient: Tensor) -> None:
        self.backward_samples += len(gradient)


class _Recording(nn.Module):
    """Wraps a model and keeps a copy of every batch it is given: the walk an attack takes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)
        self.inputs: list[Tensor] = []

    def forward(self, images: Tensor) -> Tensor:
        self.inputs.append(images.detach().clone())
        out: Tensor = self.model(images)
        return out


class LinearCase(NamedTuple):
    """A binary linear model, inputs it classifies correctly, and the closed-form quantities."""

    model: _Linear
    images: Tensor
    labels: Tensor
    direction: Tensor  # w = W_other - W_y per sample, the direction that lowers the margin
    margin: Tensor  # (W_y - W_other) x + b_y - b_other > 0


# with pixels in [0.25, 0.75] no step of either size reaches the [0, 1] bounds
LINF_EPS, L2_EPS = 0.1, 0.25


@pytest.fixture(scope="module")
def linear() -> LinearCase:
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(2, 16, generator=generator), torch.randn(2, generator=generator)
    images = 0.25 + 0.5 * torch.rand(256, 1, 4, 4, generator=generator)
    model = _Linear(weight, bias).eval()
    with torch.no_grad():
        logits = model(images)
    labels = logits.argmax(1)
    direction = (weight[1 - labels] - weight[labels]).double()
    margin = (logits.gather(1, labels[:, None]) - logits.gather(1, 1 - labels[:, None])).squeeze(1).double()
    # keep the points whose answer float rounding cannot change, under both norms
    clear = ((margin - LINF_EPS * direction.norm(p=1, dim=1)).abs() > 1e-3) & (
        (margin - L2_EPS * direction.norm(p=2, dim=1)).abs() > 1e-3
    )
    return LinearCase(model, images[clear], labels[clear], direction[clear], margin[clear])


@pytest.fixture(scope="module")
def correct_batch(digits_model: CAMClassifier, digits_test: ImageDataset) -> tuple[Tensor, Tensor]:
    """The first 64 digits test images the trained model classifies correctly: the evaluator only
    attacks such samples, and the libraries' APGD draws its starts for them only."""
    images, labels, _ = next(iterate_batches(digits_test, 96))
    with torch.no_grad():
        correct = digits_model(images).argmax(1) == labels
    return images[correct][:64], labels[correct][:64]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread inside each test (after the shared fixtures are built, so the trained
    model does not depend on it): these tests run many steps on tiny batches, where a second
    OpenMP thread gains nothing and, on contended cores, spins and makes them several times slower.
    Every comparison runs both sides under the same setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _broken(model: nn.Module, adversarial: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        result: Tensor = model(adversarial).argmax(1) != labels
    return result


def _seeded(run: Any, *args: Any, **kwargs: Any) -> Any:
    """``run`` after ``torch.manual_seed(SEED)``, the caller's random state restored after."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return run(*args, **kwargs)


# --------------------------------------------------------------------------- (a) closed form


def test_fgsm_on_a_linear_model_takes_the_closed_form_step_and_breaks_exactly_where_it_can(
    linear: LinearCase,
) -> None:
    result = fgsm(linear.model, linear.images, linear.labels, LINF_EPS)
    step = (result.adversarial - linear.images).flatten(1).double()
    torch.testing.assert_close(step, LINF_EPS * linear.direction.sign(), atol=TOLERANCE, rtol=0)
    expected = linear.margin < LINF_EPS * linear.direction.abs().sum(1)
    assert 0 < int(expected.sum()) < len(expected), "the case must hold both outcomes"
    assert torch.equal(result.broken, expected)


def test_linf_pgd_on_a_linear_model_ends_at_the_optimal_vertex_or_breaks_where_it_can(
    linear: LinearCase,
) -> None:
    result = _seeded(pgd, linear.model, linear.images, linear.labels, LINF_EPS, norm="Linf", steps=10)
    expected = linear.margin < LINF_EPS * linear.direction.abs().sum(1)
    assert torch.equal(result.broken, expected)
    robust = ~expected
    step = (result.adversarial - linear.images).flatten(1).double()
    # 10 steps of 2.5 eps / 10 cross the ball (8 suffice): the robust ones sit at the vertex
    torch.testing.assert_close(step[robust], LINF_EPS * linear.direction[robust].sign(), atol=TOLERANCE, rtol=0)
    assert torch.equal(_broken(linear.model, result.adversarial, linear.labels), expected)
    assert float(step.abs().max()) <= LINF_EPS + TOLERANCE


def test_l2_pgd_on_a_linear_model_ends_on_the_optimal_direction_or_breaks_where_it_can(
    linear: LinearCase,
) -> None:
    result = pgd(linear.model, linear.images, linear.labels, L2_EPS, norm="L2", steps=10, random_start=False)
    expected = linear.margin < L2_EPS * linear.direction.norm(dim=1)
    assert 0 < int(expected.sum()) < len(expected)
    assert torch.equal(result.broken, expected)
    robust = ~expected
    step = (result.adversarial - linear.images).flatten(1).double()
    optimum = L2_EPS * linear.direction / linear.direction.norm(dim=1, keepdim=True)
    reached = linear.images.flatten(1).double() + optimum
    assert bool(((reached >= 0) & (reached <= 1)).all()), "the optimum must lie inside [0, 1] for the closed form"
    torch.testing.assert_close(step[robust], optimum[robust], atol=1e-5, rtol=0)
    assert float(step.norm(dim=1).max()) <= L2_EPS + 1e-5


def test_apgd_on_a_linear_model_breaks_exactly_where_it_can_and_returns_the_rest_clean(
    linear: LinearCase,
) -> None:
    result = _seeded(apgd_ce, linear.model, linear.images, linear.labels, LINF_EPS, steps=10)
    expected = linear.margin < LINF_EPS * linear.direction.abs().sum(1)
    assert torch.equal(result.broken, expected)
    assert torch.equal(result.adversarial[~expected], linear.images[~expected]), "torchattacks' robust answer: x"
    assert torch.equal(_broken(linear.model, result.adversarial, linear.labels), expected)


# --------------------------------------------------------------------------- (b) against torchattacks


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 8 / 255), ("L2", 0.5)])
def test_pgd_walks_torchattacks_paths_and_is_never_weaker_per_sample(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor], norm: str, eps: float
) -> None:
    images, labels = correct_batch
    library = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        theirs = library(digits_model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)(images, labels)
        after_theirs = torch.random.get_rng_state()
        torch.manual_seed(SEED)
        ours = pgd(digits_model, images, labels, eps, norm=norm, steps=10)  # type: ignore[arg-type]
        after_ours = torch.random.get_rng_state()
    assert torch.equal(after_ours, after_theirs), "the random start must draw what torchattacks draws"
    they_break = _broken(digits_model, theirs, labels)
    assert 0 < int(they_break.sum()) < len(labels), "the case must hold both outcomes"
    assert not bool((they_break & ~ours.broken).any()), "native is weaker than torchattacks on some sample"
    both_robust = ~they_break & ~ours.broken
    assert torch.equal(ours.adversarial[both_robust], theirs[both_robust])


class _Walk(NamedTuple):
    """What a native walk must do, read off a library's iterates ``x_0 .. x_T`` of every sample."""

    held: list[Tensor]  # per iterate: the samples not misclassified by any earlier iterate
    first_break: Tensor  # per sample: the first iterate that misclassifies it (T + 1: none)


def _expected_walk(model: nn.Module, iterates: list[Tensor], labels: Tensor) -> _Walk:
    alive = torch.ones(len(labels), dtype=torch.bool)
    first_break = torch.full((len(labels),), len(iterates))
    held = []
    for t, iterate in enumerate(iterates):
        held.append(alive.clone())
        fooled = _broken(model, iterate, labels) & alive
        first_break[fooled] = t
        alive &= ~fooled
    return _Walk(held, first_break)


def _check_walk(ours: NativeResult, seen: list[Tensor], iterates: list[Tensor], walk: _Walk, robust: Tensor) -> None:
    """Native saw exactly the held samples' library iterates, returned each broken sample's first
    misclassifying iterate (``robust`` for the others), and counted only the held samples' passes."""
    expected = [iterate[alive] for iterate, alive in zip(iterates, walk.held) if alive.any()]
    assert len(seen) == len(expected), "native predicted a different number of iterates"
    for t, (batch, library) in enumerate(zip(seen, expected)):
        assert torch.equal(batch, library), f"iterate {t} of a still-robust sample differs from the library's"
    steps = len(iterates) - 1
    broken = walk.first_break <= steps
    assert torch.equal(ours.broken, broken)
    first = torch.stack(iterates)[walk.first_break.clamp(max=steps), torch.arange(len(broken))]
    assert torch.equal(ours.adversarial[broken], first[broken]), "a broken sample's example is its first break"
    assert torch.equal(ours.adversarial[~broken], robust[~broken])
    sizes = [int(alive.sum()) for alive in walk.held]
    assert ours.forward_passes == sum(sizes)
    assert ours.backward_passes == sum(n for n, after in itertools.pairwise(sizes) if after)


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 8 / 255), ("L2", 0.5)])
def test_pgd_walks_torchattacks_path_at_every_iterate_and_leaves_at_its_first_break(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor], norm: str, eps: float
) -> None:
    images, labels = correct_batch
    steps = 10
    library = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    theirs_walk, ours_walk = _Recording(digits_model), _Recording(digits_model)
    theirs = _seeded(library(theirs_walk, eps=eps, alpha=2.5 * eps / steps, steps=steps), images, labels)
    ours: NativeResult = _seeded(pgd, ours_walk, images, labels, eps, norm=norm, steps=steps)
    iterates = [*theirs_walk.inputs, theirs]
    assert len(iterates) == steps + 1, "torchattacks called the model other than once per step"
    walk = _expected_walk(digits_model, iterates, labels)
    leaves_midway = (walk.first_break > 0) & (walk.first_break < steps)
    assert bool(leaves_midway.any()) and bool((walk.first_break > steps).any()), "the case must hold all outcomes"
    _check_walk(ours, ours_walk.inputs, iterates, walk, robust=theirs)
    assert ours.backward_passes < steps * len(labels), "early exit saved no backward pass"


def test_apgd_walks_the_authors_path_at_every_iterate_and_leaves_at_its_first_break(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    from pyautoattack.autopgd_base import APGDAttack

    images, labels = correct_batch
    eps, steps = 8 / 255, 10
    theirs_walk, ours_walk = _Recording(digits_model), _Recording(digits_model)
    official = APGDAttack(theirs_walk, n_iter=steps, n_restarts=1, eps=eps, seed=SEED, loss="ce", device=images.device)
    _seeded(official.perturb, images, labels)
    ours: NativeResult = _seeded(apgd_ce, ours_walk, images, labels, eps, steps=steps)
    # the authors' calls: the clean batch, then x_0 .. x_steps of every clean-correct sample
    assert len(theirs_walk.inputs) == steps + 2 and torch.equal(theirs_walk.inputs[0], images)
    iterates = theirs_walk.inputs[1:]
    walk = _expected_walk(digits_model, iterates, labels)
    leaves_midway = (walk.first_break > 0) & (walk.first_break < steps)
    assert bool(leaves_midway.any()) and bool((walk.first_break > steps).any()), "the case must hold all outcomes"
    _check_walk(ours, ours_walk.inputs, iterates, walk, robust=images)


def test_fgsm_is_torchattacks_fgsm_on_correctly_classified_samples(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    images, labels = correct_batch
    theirs = torchattacks.FGSM(digits_model, eps=8 / 255)(images, labels)
    ours = fgsm(digits_model, images, labels, 8 / 255)
    assert torch.equal(ours.adversarial, theirs)
    assert torch.equal(ours.broken, _broken(digits_model, theirs, labels))


def test_the_best_iterate_breaks_samples_whose_last_iterate_torchattacks_keeps(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    """With a step of 2 eps the walks oscillate: some flip the label and flip it back."""
    images, labels = correct_batch
    eps = 8 / 255
    theirs = _seeded(torchattacks.PGD(digits_model, eps=eps, alpha=2 * eps, steps=10), images, labels)
    ours = _seeded(pgd, digits_model, images, labels, eps, steps=10, step_size=2 * eps)
    they_break = _broken(digits_model, theirs, labels)
    assert not bool((they_break & ~ours.broken).any())
    assert bool((ours.broken & ~they_break).any()), "no walk flipped back at this seed: the test shows nothing"
    assert torch.equal(_broken(digits_model, ours.adversarial, labels), ours.broken)


# --------------------------------------------------------------------------- (c) counted passes


def test_without_breaks_the_counts_are_the_full_schedule_and_match_a_counting_wrapper(
    linear: LinearCase,
) -> None:
    eps = 0.5 * float((linear.margin / linear.direction.abs().sum(1)).min())  # no sample can break
    n, steps = len(linear.labels), 7
    expected = {
        "fgsm": (2 * n, n),
        "pgd": ((steps + 1) * n, steps * n),
        "apgd": (2 * (steps + 1) * n, 2 * steps * n),
    }
    runs = {
        "fgsm": lambda model: fgsm(model, linear.images, linear.labels, eps),
        "pgd": lambda model: pgd(model, linear.images, linear.labels, eps, steps=steps),
        "apgd": lambda model: apgd_ce(model, linear.images, linear.labels, eps, steps=steps, restarts=2),
    }
    for name, run in runs.items():
        counting = _Counting(linear.model)
        result: NativeResult = _seeded(run, counting)
        assert not bool(result.broken.any()), name
        assert (result.forward_passes, result.backward_passes) == expected[name], name
        assert (sum(counting.forward_sizes), counting.backward_samples) == expected[name], name


def test_early_exit_saves_backward_passes_when_samples_break(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    images, labels = correct_batch
    n, steps = len(labels), 10
    for name, run in {
        "pgd": lambda model: pgd(model, images, labels, 16 / 255, steps=steps),
        "apgd": lambda model: apgd_ce(model, images, labels, 16 / 255, steps=steps),
    }.items():
        counting = _Counting(digits_model)
        result: NativeResult = _seeded(run, counting)
        assert int(result.broken.sum()) > n // 2, name
        assert result.backward_passes < steps * n, name
        assert result.forward_passes < (steps + 1) * n, name
        assert (sum(counting.forward_sizes), counting.backward_samples) == (
            result.forward_passes,
            result.backward_passes,
        ), name


def test_without_the_final_prediction_the_examples_are_the_same_and_the_passes_torchattacks_at_most(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    """The backend's setting: the evaluator re-predicts every example, so the final iterate goes
    unpredicted; native then never spends more passes than torchattacks (N per step)."""
    images, labels = correct_batch
    n, steps, eps = len(labels), 10, 8 / 255
    runs = {
        "fgsm": lambda final: fgsm(digits_model, images, labels, eps, predict_final=final),
        "pgd": lambda final: pgd(digits_model, images, labels, eps, steps=steps, predict_final=final),
        "pgd restarts": lambda final: pgd(digits_model, images, labels, eps, steps=3, restarts=2, predict_final=final),
    }
    for name, run in runs.items():
        full: NativeResult = _seeded(run, True)
        lean: NativeResult = _seeded(run, False)
        assert torch.equal(lean.adversarial, full.adversarial), name
        reached_final = int((~lean.broken).sum())
        assert lean.forward_passes == full.forward_passes - reached_final, name
        assert lean.backward_passes == full.backward_passes, name
        assert bool((lean.broken <= full.broken).all()), name
    lean_fgsm: NativeResult = fgsm(digits_model, images, labels, eps, predict_final=False)
    assert (lean_fgsm.forward_passes, lean_fgsm.backward_passes) == (n, n), "torchattacks' FGSM: one pass of each"
    lean_pgd: NativeResult = _seeded(pgd, digits_model, images, labels, eps, steps=steps, predict_final=False)
    assert lean_pgd.forward_passes == lean_pgd.backward_passes < steps * n


# --------------------------------------------------------------------------- (d) restarts


def test_restarts_run_only_on_the_samples_still_robust(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    images, labels = correct_batch
    eps, steps = 4 / 255, 5
    once_model, twice_model = _Counting(digits_model), _Counting(digits_model)
    once = _seeded(pgd, once_model, images, labels, eps, steps=steps)
    twice = _seeded(pgd, twice_model, images, labels, eps, steps=steps, restarts=2)
    first = len(once_model.forward_sizes)
    assert twice_model.forward_sizes[:first] == once_model.forward_sizes, "the first restart is the same run"
    robust_after_first = int((~once.broken).sum())
    assert 0 < robust_after_first < len(labels)
    assert twice_model.forward_sizes[first] == robust_after_first
    assert max(twice_model.forward_sizes[first:]) <= robust_after_first
    assert torch.equal(twice.adversarial[once.broken], once.adversarial[once.broken])
    assert bool((twice.broken >= once.broken).all())


# --------------------------------------------------------------------------- (e) APGD-CE


def test_apgd_breaks_exactly_the_samples_torchattacks_and_the_authors_apgd_break(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    from pyautoattack.autopgd_base import APGDAttack

    images, labels = correct_batch
    eps, steps, restarts = 8 / 255, 10, 2
    ours = _seeded(apgd_ce, digits_model, images, labels, eps, steps=steps, restarts=restarts)
    ported = torchattacks.APGD(digits_model, eps=eps, steps=steps, n_restarts=restarts, seed=SEED, loss="ce")
    official = APGDAttack(
        digits_model, n_iter=steps, n_restarts=restarts, eps=eps, seed=SEED, loss="ce", device=images.device
    )
    for theirs in (_seeded(ported, images, labels), _seeded(official.perturb, images, labels)):
        they_break = _broken(digits_model, theirs, labels)
        assert 0 < int(they_break.sum()) < len(labels)
        assert torch.equal(ours.broken, they_break), "the same paths break the same samples"
        assert torch.equal(ours.adversarial[~ours.broken], theirs[~they_break]), "robust samples come back clean"
    assert torch.equal(_broken(digits_model, ours.adversarial, labels), ours.broken)


# --------------------------------------------------------------------------- (f) outputs and the contract


@pytest.mark.parametrize("name", ["fgsm", "pgd", "pgd_l2", "apgd"])
def test_outputs_stay_in_bounds_and_budget_and_re_predict_as_reported(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor], name: str
) -> None:
    images, labels = correct_batch
    eps = 0.5 if name == "pgd_l2" else 8 / 255
    run = {
        "fgsm": lambda: fgsm(digits_model, images, labels, eps),
        "pgd": lambda: pgd(digits_model, images, labels, eps, steps=5, restarts=2),
        "pgd_l2": lambda: pgd(digits_model, images, labels, eps, norm="L2", steps=5, restarts=2),
        "apgd": lambda: apgd_ce(digits_model, images, labels, eps, steps=5, restarts=2),
    }[name]
    result: NativeResult = _seeded(run)
    adversarial = result.adversarial
    assert adversarial.shape == images.shape and not adversarial.requires_grad
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    delta = (adversarial - images).flatten(1)
    size = delta.norm(dim=1) if name == "pgd_l2" else delta.abs().amax(1)
    assert float(size.max()) <= eps + TOLERANCE
    assert torch.equal(_broken(digits_model, adversarial, labels), result.broken)


def test_the_attacks_run_in_eval_mode_and_give_back_the_mode_they_found(linear: LinearCase) -> None:
    model = copy.deepcopy(linear.model).train()
    modes: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    for run in (fgsm, pgd, apgd_ce):
        _seeded(run, model, linear.images[:4], linear.labels[:4], LINF_EPS)
    assert modes and not any(modes), "torchattacks attacks in eval mode: so must the native attacks"
    assert model.training


def test_a_zero_budget_leaves_correctly_classified_images_unchanged(linear: LinearCase) -> None:
    for result in (
        fgsm(linear.model, linear.images, linear.labels, 0.0),
        _seeded(pgd, linear.model, linear.images, linear.labels, 0.0, norm="L2", restarts=2),
        _seeded(apgd_ce, linear.model, linear.images, linear.labels, 0.0, steps=5),
    ):
        assert not bool(result.broken.any())
        assert torch.equal(result.adversarial, linear.images)


def test_bad_inputs_are_refused_in_one_line_naming_the_argument(linear: LinearCase) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(linear.model, linear.images + 1.0, linear.labels, 0.1)
    with pytest.raises(InputError, match="^labels must"):
        pgd(linear.model, linear.images, linear.labels[:-1], 0.1)
    with pytest.raises(InputError, match="^steps must"):
        apgd_ce(linear.model, linear.images, linear.labels, 0.1, steps=0)
    with pytest.raises(InputError, match="^eps must"):
        pgd(linear.model, linear.images, linear.labels, float("nan"))
    with pytest.raises(InputError, match="random_start"):
        pgd(linear.model, linear.images, linear.labels, 0.1, random_start=False, restarts=2)


def test_the_builders_refuse_what_their_library_does_not_implement(linear: LinearCase) -> None:
    context = BuildContext(linear.model, 0.1, 2, SEED)
    with pytest.raises(AttackNotSupportedError, match=r"^attack 'apgd' with loss='dlr' has no native") as info:
        build_attack("apgd", loss="dlr").build("native", context)
    assert "\n" not in str(info.value)
    for library in ("torchattacks", "foolbox"):
        with pytest.raises(AttackNotSupportedError, match=r"restarts=2 runs on the native backend only") as info:
            build_attack("pgd_l2", restarts=2).build(library, context)
        assert "\n" not in str(info.value)
        build_attack("pgd_l2").build(library, context)  # one restart: the library's own PGD
    with pytest.raises(ParameterError, match="random_start") as refused:
        build_attack("pgd", restarts=2, random_start=False)
    assert refused.value.parameter == "restarts"


def test_native_is_the_default_of_pgd_and_pgd_l2_only_where_the_benchmark_said_so() -> None:
    # benchmarks/RESULTS.md (bench_native.py on the quickstart models): PGD and PGD-L2 never
    # weaker and faster; FGSM the same work and examples, not faster; APGD not benchmarked
    for name in ("fgsm", "pgd", "pgd_l2", "apgd"):
        assert build_attack(name).supports("native"), name
        expected = "native" if name in ("pgd", "pgd_l2") else "torchattacks"
        assert attack_class(name).default_backend() == expected, name
        assert build_attack(name).supports("torchattacks"), "the libraries stay as cross-checks"
        assert build_attack(name).supports("foolbox") == (name != "apgd")
    assert not build_attack("cw").supports("native")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "pgd_l2", "apgd"])
def test_the_backend_is_seeded_leaves_the_callers_random_state_and_is_never_weaker_than_torchattacks(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor], name: str
) -> None:
    images, labels = correct_batch
    attack = build_attack(name, **({} if name == "fgsm" else {"steps": 5}))
    eps = 0.5 if name == "pgd_l2" else 8 / 255
    state = torch.random.get_rng_state()
    ours = get_backend("native").run(attack, digits_model, images, labels, eps, seed=SEED)
    assert torch.equal(torch.random.get_rng_state(), state), "the backend changed the caller's random state"
    assert torch.equal(get_backend("native").run(attack, digits_model, images, labels, eps, seed=SEED), ours)
    theirs = get_backend("torchattacks").run(attack, digits_model, images, labels, eps, seed=SEED)
    we_break, they_break = _broken(digits_model, ours, labels), _broken(digits_model, theirs, labels)
    assert bool(they_break.any()), "torchattacks broke nothing: the comparison shows nothing"
    assert not bool((they_break & ~we_break).any()), "native is weaker than torchattacks on some sample"
    both_robust = ~they_break & ~we_break
    assert bool(both_robust.any())
    assert torch.equal(ours[both_robust], theirs[both_robust])


def test_the_backend_passes_the_attacks_restarts_to_the_native_pgd(
    digits_model: CAMClassifier, correct_batch: tuple[Tensor, Tensor]
) -> None:
    images, labels = correct_batch
    eps, backend = 4 / 255, get_backend("native")
    twice = backend.run(build_attack("pgd", steps=5, restarts=2), digits_model, images, labels, eps, seed=SEED)
    direct: NativeResult = _seeded(pgd, digits_model, images, labels, eps, steps=5, restarts=2)
    assert torch.equal(twice, direct.adversarial)
    once = backend.run(build_attack("pgd", steps=5), digits_model, images, labels, eps, seed=SEED)
    assert not torch.equal(twice, once), "the second restart changed no example: restarts did not arrive"
