"""GPU throughput: AMP training images/s (ce, hnc) and PGD-10 images/s (native vs torchattacks).

One call, meant to finish in well under 5 minutes on one GPU (issue 10, part 5):

1. Training. resnet18_cifar on random CIFAR-shaped data (3x32x32 in [0, 1], 10 classes,
   random labels), the trainer's own ``training_step`` (forward, loss, backward, SGD step)
   under autocast (--amp: auto = bf16 on CUDA, fp32 elsewhere, since CPU bf16 autocast is
   emulated on most CPUs and ~10x slower than fp32; fp16 uses a GradScaler), for ce and hnc.
   --warmup untimed steps, then --steps timed steps; images/s = batch * steps / seconds.
2. Attacks. PGD-10, Linf 8/255 (``build_attack("pgd")``), on a batch of --attack-batch (512)
   fresh random images labelled with the model's own predictions (every sample clean-correct,
   so every sample is attacked), run as ``evaluate`` runs it:
   ``get_backend(name).run(attack, model, images, labels, eps, seed=0)``, in fp32 (attacks run
   without autocast by default, see ``robustcam.runtime.resolve_attack_amp``). The model is
   the ce model of 1. after its training steps. The backends are timed alternately, order
   rotated per round, one untimed warm-up call each (none with --warmup 0); images/s = batch / median seconds, and
   the ratio native / torchattacks. The native backend stops attacking a sample once it is
   broken (per-sample early exit), so its ratio depends on how quickly the model breaks;
   ``robust`` (re-predicted, fp32) says how many samples each backend left robust.

    python benchmarks/bench_gpu.py [--device cuda] [--amp auto] [--train-batch 256] [--steps 30] [--repeats 5]
    python benchmarks/bench_gpu.py --device cpu --quick      # smoke run: tiny sizes, seconds on CPU
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from robustcam.attacks import build_attack, get_backend, parse_eps
from robustcam.losses import build_loss
from robustcam.models import CAMClassifier, build_model
from robustcam.runtime import AMP_DTYPES, resolve_device
from robustcam.train import training_step

NUM_CLASSES = 10
SHAPE = (3, 32, 32)
PGD_EPS = "8/255"
LOSSES = ("ce", "hnc")
BACKENDS = ("native", "torchattacks")
QUICK = {"train_batch": 4, "steps": 1, "warmup": 0, "attack_batch": 2, "repeats": 1}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    began = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - began


def random_batch(count: int, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, *SHAPE), generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    return images.to(device), labels.to(device)


def fresh_model(device: torch.device, seed: int) -> CAMClassifier:
    torch.manual_seed(seed)
    return build_model("resnet18_cifar", NUM_CLASSES, 3, mean=(0.5,) * 3, std=(0.29,) * 3).to(device)


def training_throughput(
    loss_name: str, args: argparse.Namespace, device: torch.device, amp_dtype: torch.dtype | None
) -> tuple[float, CAMClassifier]:
    """Images/s of ``training_step`` for one loss, and the model after its steps."""
    model = fresh_model(device, args.seed)
    loss_fn = build_loss(loss_name).bind(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    images, labels = random_batch(args.train_batch, args.seed + 1, device)
    model.train()

    def steps(count: int) -> None:
        for _ in range(count):
            training_step(model, loss_fn, optimizer, scaler, images, labels, device=device, amp_dtype=amp_dtype)

    steps(args.warmup)
    seconds = timed(lambda: steps(args.steps), device)
    return args.train_batch * args.steps / seconds, model.eval()


def attack_throughput(
    model: CAMClassifier, args: argparse.Namespace, device: torch.device
) -> dict[str, tuple[float, int]]:
    """(images/s, samples left robust) of PGD-10 per backend, timed alternately."""
    images, _ = random_batch(args.attack_batch, args.seed + 2, device)
    with torch.no_grad():
        labels = model(images).argmax(1)
    attack, eps = build_attack("pgd"), parse_eps(PGD_EPS)
    adversarial: dict[str, Tensor] = {}

    def run(name: str) -> None:
        adversarial[name] = get_backend(name).run(attack, model, images, labels, eps, seed=args.seed)

    for name in BACKENDS if args.warmup else ():
        run(name)  # warm-up: cuDNN autotuning, and native's shrinking batches meet their kernels once
    seconds: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for round_index in range(args.repeats):
        order = BACKENDS[round_index % 2 :] + BACKENDS[: round_index % 2]
        for name in order:
            seconds[name].append(timed(functools.partial(run, name), device))
    results = {}
    for name in BACKENDS:
        with torch.no_grad():
            robust = int((model(adversarial[name]).argmax(1) == labels).sum())
        results[name] = (args.attack_batch / statistics.median(seconds[name]), robust)
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help=f"smoke run with tiny sizes: {QUICK}")
    parser.add_argument(
        "--amp", choices=["auto", "none", *AMP_DTYPES], default="auto", help="training autocast (auto: bf16 on CUDA)"
    )
    parser.add_argument("--train-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per loss")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps per loss (0: no warm-ups)")
    parser.add_argument("--attack-batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per backend")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    amp = ("bf16" if device.type == "cuda" else "none") if args.amp == "auto" else args.amp
    amp_dtype = AMP_DTYPES.get(amp)
    began = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {device} ({name}){', QUICK SMOKE RUN' if args.quick else ''}")

    precision = f"{amp} autocast" if amp_dtype else "fp32, no autocast"
    print(f"\n1. training, resnet18_cifar, batch {args.train_batch}, {precision}, {args.steps} timed steps")
    print(f"{'loss':<8}{'images/s':>12}{'ratio to ce':>13}")
    trained: dict[str, CAMClassifier] = {}
    rates: dict[str, float] = {}
    for loss_name in LOSSES:
        rates[loss_name], trained[loss_name] = training_throughput(loss_name, args, device, amp_dtype)
        print(f"{loss_name:<8}{rates[loss_name]:>12.1f}{rates[loss_name] / rates['ce']:>13.3f}")

    print(
        f"\n2. PGD-10 Linf {PGD_EPS}, resnet18_cifar (the ce model of 1.), batch {args.attack_batch}, fp32, "
        f"median of {args.repeats} rounds"
    )
    print(f"{'backend':<14}{'images/s':>12}{'robust':>10}{'ratio to torchattacks':>23}")
    attacks = attack_throughput(trained["ce"], args, device)
    for backend, (rate, robust) in attacks.items():
        ratio = rate / attacks["torchattacks"][0]
        print(f"{backend:<14}{rate:>12.1f}{f'{robust}/{args.attack_batch}':>10}{ratio:>23.3f}")
    print(f"\ntotal {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
