"""Overhead of negative-CAM statistics in eval: evaluate with and without them, side by side.

Same checkpoint, samples, attacks and seeds; the two settings are timed
alternately (median of --repeats) so that drift in machine load hits both.
The statistics come from the forward pass that re-predicts each adversarial
example (``forward_cams``: one extra einsum on the last feature maps), plus the
per-sample statistic arithmetic. Target: <= 5% of eval time.

    python benchmarks/bench_cam_overhead.py [--ckpt runs/quickstart/ce/model.pt] [--n 360] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robustcam.checkpoint import load_checkpoint
from robustcam.config import load_train_config
from robustcam.data import load_dataset
from robustcam.evaluate import evaluate
from robustcam.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="checkpoint to evaluate (default: train a ce digits model)")
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attacks", default="fgsm,pgd,cw")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.ckpt is None:
        out = Path(tempfile.mkdtemp()) / "ce"
        train(load_train_config(None, []), out)
        args.ckpt = out / "model.pt"
    model, meta = load_checkpoint(args.ckpt)
    dataset = load_dataset(meta["data"]["name"], "test", **meta["data"].get("options", {}))
    attacks = args.attacks.split(",")
    kwargs = {"eps": ["2/255", "4/255", "8/255"], "eps_l2": ["0.25", "0.5", "1.0"], "n": args.n, "sanity": False}

    times: dict[bool, list[float]] = {True: [], False: []}
    rows = 0
    for _ in range(args.repeats):
        for cam_stats in (False, True):
            start = time.perf_counter()
            result = evaluate(model, dataset, attacks, cam_stats=cam_stats, **kwargs)  # type: ignore[arg-type]
            times[cam_stats].append(time.perf_counter() - start)
            rows = len(result.per_sample)

    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"{args.ckpt} ({meta['arch']}), n={args.n}, attacks {args.attacks}, {rows} per-sample rows, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'setting':<22}{'eval time (s)':>15}")
    print(f"{'without CAM statistics':<22}{without:>15.2f}")
    print(f"{'with CAM statistics':<22}{with_:>15.2f}")
    print(f"overhead: {100 * (with_ / without - 1):+.1f}% (target <= +5%)")


if __name__ == "__main__":
    main()
