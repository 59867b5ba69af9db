"""The native backend against torchattacks, side by side on the quickstart's four digits models.

Decides issue 10's condition for making ``native`` the default backend of fgsm, pgd and pgd_l2:
at least as strong per sample on every quickstart model, and not slower.

Models: the checkpoints ``robustcam quickstart`` trains (smallcnn on digits, the default train
config with ``loss.name`` = ce, focal, cam_loss, hnc and --epochs 15), loaded from --runs (a
quickstart output folder, ``<runs>/<loss>/model.pt``) where there, else trained now (into
``<runs>/<loss>`` when --runs is given, so a second run reuses them; else a temporary folder).
Samples: the first --n digits test images each model classifies correctly (the evaluator
attacks only those), one batch. Attacks: fgsm and PGD-10 at Linf 8/255, PGD-10 (pgd_l2) at L2
--eps-l2, PGD's step 2.5 eps / 10; each runs through its backend as ``evaluate`` runs it
(``get_backend(b).run(attack, ..., seed=s)``), with the same seed for both, so both walk from
the same random start (``evaluate`` itself derives each run's seed from the backend's name,
so inside it the two start from different points). Each method is timed with the one no-grad
re-prediction of every example that ``evaluate`` adds to any backend; one untimed warm-up
round (on CPU oneDNN builds kernels per batch size on first use, and native's batch shrinks to
sizes torchattacks never sees), then --repeats rounds with the order rotated, so drift in
machine load hits both alike.

Printed per (model, attack):

- ``robust ta / nat``: samples left robust by torchattacks / native (re-predicted);
- ``only nat`` / ``only ta``: samples one breaks that the other leaves robust (only ta must be 0);
- ``path``: whether every sample robust under both got the identical example (the same walk);
- ``broken@3`` (PGD): the share of samples the same walk breaks within its first 3 steps
  (issue 10's fast-breaking condition: at least half), from the same seed and step size;
- ``time nat/ta``: median of per-round time ratios (ratio of the fastest rounds in brackets; on
  a shared machine interference only adds time);
- ``passes``: samples through the backbone with / without autograd (a forward hook: exact work,
  free of timing noise), attack plus re-prediction, torchattacks then native.

    python benchmarks/bench_native.py [--runs runs/quickstart] [--n 200] [--repeats 5] [--threads 1]
        [--linf-eps 8/255,16/255] [--eps-l2 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchattacks
from torch import Tensor

from bench_eval import (
    PassCounter,
    load_average,
    synchronize,
)  # the benchmarks folder is on sys.path when run as a script

from robustcam.attacks import Attack, build_attack, format_eps, get_backend, parse_eps
from robustcam.attacks.library import PGD
from robustcam.checkpoint import load_checkpoint
from robustcam.config import load_train_config
from robustcam.data import load_dataset
from robustcam.data.base import TensorImageDataset
from robustcam.models import CAMClassifier
from robustcam.runtime import resolve_device
from robustcam.train import train

QUICKSTART_LOSSES = ("ce", "focal", "cam_loss", "hnc")
LINF_EPS = "8/255"
EARLY_STEPS = 3  # issue 10's fast-breaking model: at least half the points broken by step 3
BACKENDS = ("torchattacks", "native")


# --------------------------------------------------------------------------- models and data


def quickstart_model(loss: str, runs: str | None, epochs: int, device: torch.device) -> tuple[CAMClassifier, str]:
    """The quickstart's checkpoint for ``loss``: loaded from ``runs``, or trained now as the quickstart trains it."""
    if runs is not None and os.path.exists(os.path.join(runs, loss, "model.pt")):
        model, meta = load_checkpoint(os.path.join(runs, loss, "model.pt"))
        accuracy = meta["metrics"]["test_acc"]
        return model.to(device).eval(), f"{runs}/{loss}/model.pt (test acc {accuracy:.2%})"
    deterministic = torch.are_deterministic_algorithms_enabled()
    with contextlib.ExitStack() as stack:
        out = os.path.join(runs, loss) if runs else stack.enter_context(tempfile.TemporaryDirectory())
        began = time.perf_counter()
        config = load_train_config(None, [f"loss.name={loss}", f"epochs={epochs}", f"device={device.type}"])
        result = train(config, out)
        seconds = time.perf_counter() - began
    torch.use_deterministic_algorithms(deterministic)  # train() turns deterministic kernels on process-wide
    accuracy = result.meta["metrics"]["test_acc"]
    return result.model.to(device).eval(), f"trained now, {epochs} epochs, {seconds:.0f} s, test acc {accuracy:.2%}"


def clean_correct(
    model: CAMClassifier, dataset: TensorImageDataset, size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The first ``size`` test images the model classifies correctly, and their labels."""
    images = dataset.batch(torch.arange(len(dataset))).to(device)
    labels = dataset.targets.to(device)
    with torch.no_grad():
        keep = (model(images).argmax(1) == labels).nonzero().squeeze(1)[:size]
    return images[keep], labels[keep]


# --------------------------------------------------------------------------- one comparison


@dataclass(frozen=True)
class Comparison:
    model: str
    attack: str
    samples: int
    robust: dict[str, int]
    only_native: int
    only_torchattacks: int
    same_path: bool
    early: float | None  # PGD: the share of samples broken within EARLY_STEPS steps of the same walk
    ratio_median: float
    ratio_fastest: float
    passes: dict[str, tuple[int, int]]


def attack_and_repredict(
    backend: str, attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float, seed: int
) -> tuple[Tensor, Tensor]:
    """What ``evaluate`` does with one backend on one batch: the attack, then one re-prediction."""
    adversarial = get_backend(backend).run(attack, model, images, labels, eps, seed=seed)
    with torch.no_grad():
        broken = model(adversarial).argmax(1) != labels
    return adversarial, broken


def broken_early(attack: Attack, model: CAMClassifier, images: Tensor, labels: Tensor, eps: float, seed: int) -> float:
    """The share of samples PGD breaks within its first ``EARLY_STEPS`` steps: the same walk
    (same seed, same random start, same step size), stopped there."""
    assert isinstance(attack, PGD)
    factor = attack.step_factor * EARLY_STEPS / attack.steps  # the step size of the full walk
    early = build_attack(attack.name, steps=EARLY_STEPS, step_factor=factor)
    _, broken = attack_and_repredict("native", early, model, images, labels, eps, seed)
    return float(broken.float().mean())


def compare(
    name: str, attack: Attack, eps: float, model: CAMClassifier, data: tuple[Tensor, Tensor], repeats: int, seed: int
) -> Comparison:
    images, labels = data
    device = images.device
    runs: dict[str, Callable[[], tuple[Tensor, Tensor]]] = {
        b: (lambda b=b: attack_and_repredict(b, attack, model, images, labels, eps, seed))  # type: ignore[misc]
        for b in BACKENDS
    }
    counter = PassCounter(model)
    outputs, passes = {}, {}
    try:
        for backend, run in runs.items():  # the warm-up round: counts passes, keeps the results
            counter.take()
            outputs[backend] = run()
            passes[backend] = counter.take()
    finally:
        counter.handle.remove()
    seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for round_ in range(repeats):
        for backend in BACKENDS[round_ % 2 :] + BACKENDS[: round_ % 2]:
            synchronize(device)
            began = time.perf_counter()
            runs[backend]()
            synchronize(device)
            seconds[backend].append(time.perf_counter() - began)
    (theirs, they_break), (ours, we_break) = outputs["torchattacks"], outputs["native"]
    both_robust = ~they_break & ~we_break
    ratios = [a / b for a, b in zip(seconds["native"], seconds["torchattacks"])]
    return Comparison(
        name,
        f"{attack.name} {format_eps(eps, attack.norm)}",
        len(labels),
        {"torchattacks": int((~they_break).sum()), "native": int((~we_break).sum())},
        int((we_break & ~they_break).sum()),
        int((they_break & ~we_break).sum()),
        torch.equal(ours[both_robust], theirs[both_robust]),
        broken_early(attack, model, images, labels, eps, seed) if isinstance(attack, PGD) else None,
        statistics.median(ratios),
        min(seconds["native"]) / min(seconds["torchattacks"]),
        passes,
    )


# --------------------------------------------------------------------------- report


def print_table(rows: Sequence[Comparison]) -> None:
    header = (
        f"{'model':<9}{'attack':<15}{'n':>4}{'robust ta':>10}{'nat':>5}{'only nat':>9}{'only ta':>8}"
        f"{'path':>6}{'broken@' + str(EARLY_STEPS):>10}{'time nat/ta':>17}   passes grad/no-grad ta -> nat"
    )
    print(header)
    for row in rows:
        ta, nat = row.passes["torchattacks"], row.passes["native"]
        print(
            f"{row.model:<9}{row.attack:<15}{row.samples:>4}{row.robust['torchattacks']:>10}"
            f"{row.robust['native']:>5}{row.only_native:>9}{row.only_torchattacks:>8}"
            f"{'same' if row.same_path else 'DIFF':>6}{'' if row.early is None else f'{row.early:.0%}':>10}"
            f"{row.ratio_median:>10.3f} ({row.ratio_fastest:.3f})"
            f"   {ta[0]}/{ta[1]} -> {nat[0]}/{nat[1]}"
        )


def print_verdict(rows: Sequence[Comparison]) -> None:
    """Issue 10's condition, per attack: never weaker on any model, and not slower on any."""
    for attack in dict.fromkeys(row.attack for row in rows):
        group = [row for row in rows if row.attack == attack]
        stronger = all(row.only_torchattacks == 0 for row in group)
        slowest = max(row.ratio_median for row in group)
        verdict = "met" if stronger and slowest <= 1.0 else "NOT met"
        print(
            f"{attack}: never weaker per sample on every model: {stronger}; slowest time ratio "
            f"{slowest:.3f} (<= 1.00 needed) -> default-backend condition {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=None, help="a quickstart output folder (missing models are trained into it)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs when training now (quickstart: 15)")
    parser.add_argument("--losses", default=",".join(QUICKSTART_LOSSES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads while attacking (0: torch's)")
    parser.add_argument("--n", type=int, default=200, help="clean-correct digits test images per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per (model, attack)")
    parser.add_argument("--linf-eps", default=LINF_EPS, help="fgsm and pgd budgets, a comma list (default %(default)s)")
    parser.add_argument("--eps-l2", default="0.5", help="pgd_l2 budget (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    test = load_dataset("digits", "test")
    assert isinstance(test, TensorImageDataset)
    models = {}
    for loss in args.losses.split(","):  # trained with torch's threads, as the quickstart trains them
        models[loss], origin = quickstart_model(loss, args.runs, args.epochs, device)
        print(f"{loss}: {origin}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, device {device}, "
        f"{torch.get_num_threads()} threads while attacking, load average {load_average()}"
    )
    attacks = [(build_attack(name), parse_eps(eps)) for eps in args.linf_eps.split(",") for name in ("fgsm", "pgd")] + [
        (build_attack("pgd_l2"), parse_eps(args.eps_l2))
    ]
    rows = []
    for loss, model in models.items():
        data = clean_correct(model, test, args.n, device)
        rows += [compare(loss, attack, eps, model, data, args.repeats, args.seed) for attack, eps in attacks]
    print()
    print_table(rows)
    print()
    print_verdict(rows)
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
