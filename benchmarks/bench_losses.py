"""Time of one training step with focal, cam_loss and hnc relative to cross-entropy.

Same model (resnet18_cifar, 100 classes), same batch (64 x 3 x 32 x 32), the
trainer's own ``training_step``; the losses are measured round-robin in one run
so that drift in machine load hits them all alike. Prints a table of median
step times and ratios to ce. Targets: hnc <= 1.05, cam_loss <= 1.10.

    python benchmarks/bench_losses.py [--device cuda] [--repeats 7] [--amp bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustcam.losses import build_loss
from robustcam.models import build_model
from robustcam.runtime import resolve_amp, resolve_device
from robustcam.train import training_step

LOSSES = {"ce": {}, "focal": {}, "cam_loss": {}, "hnc": {"k": 10}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="none")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    device = resolve_device(args.device)
    amp_dtype = resolve_amp(args.amp, device)
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
    setups = {}
    for name, params in LOSSES.items():
        model = build_model("resnet18_cifar", args.classes).to(device).train()
        loss_fn = build_loss(name, **params).bind(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        setups[name] = (model, loss_fn, optimizer, scaler)

    def step(name: str) -> float:
        model, loss_fn, optimizer, scaler = setups[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        training_step(model, loss_fn, optimizer, scaler, images, labels, device=device, amp_dtype=amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for round_ in range(args.warmup + args.repeats):
        for name in LOSSES:
            elapsed = step(name)
            if round_ >= args.warmup:
                times[name].append(elapsed)

    print(
        f"resnet18_cifar, batch {args.batch_size}, 32x32, {args.classes} classes, device {device}, "
        f"amp {args.amp}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} steps"
    )
    ce = statistics.median(times["ce"])
    print(f"{'loss':<10}{'step (ms)':>12}{'ratio to ce':>14}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<10}{1000 * median:>12.1f}{median / ce:>14.3f}")


if __name__ == "__main__":
    main()
