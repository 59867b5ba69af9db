"""Overhead of Grad-CAM statistics in a PGD-10 eval of a timm ViT-tiny, against --no-cam-stats, side by side.

Issue 11's target: the CAM statistics of a Grad-CAM model (signed Grad-CAM maps of the true
class and the top-k negatives, k = 5, from one forward pass and one batched backward pass
through the layers after the CAM layer) cost <= 25% of the eval time; the exact path costs
about 4% (``bench_cam_overhead.py``).

Model: ``timm:vit_tiny_patch16_224`` built with ``img_size=32`` (and ``--patch-size``, default
16 as the issue states: a 2x2 patch grid) with random weights and 10 classes, on random
CIFAR-shaped images (3x32x32) labelled with the model's own predictions, so every sample is
clean-correct and attacked. The same model, samples, attack and seed are evaluated with and
without CAM statistics, alternately, --repeats rounds (order rotated); printed: the median time
of each, the median per-round overhead share ``(with - without) / with`` and the same from the
fastest rounds. Needs timm (``pip install -e ".[timm]"``).

    python benchmarks/bench_gradcam_overhead.py [--n 128] [--repeats 5] [--patch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from robustcam.data.base import DatasetInfo, TensorImageDataset
from robustcam.evaluate import evaluate
from robustcam.models import build_model
from robustcam.models.gradcam import GradCAMClassifier

ARCH = "timm:vit_tiny_patch16_224"
CLASSES = 10
TOPK = 5


def self_labelled(model: GradCAMClassifier, count: int, seed: int) -> TensorImageDataset:
    """Random 3x32x32 images labelled with the model's own predictions (all clean-correct)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(1)
    names = tuple(str(c) for c in range(CLASSES))
    info = DatasetInfo("random_cifar", CLASSES, names, (0.5,) * 3, (0.5,) * 3, (3, 32, 32))
    return TensorImageDataset(images, labels, info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(ARCH, CLASSES, img_size=32, patch_size=args.patch_size).eval()
    assert isinstance(model, GradCAMClassifier)
    dataset = self_labelled(model, args.n, args.seed + 1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}; "
        f"{ARCH} img_size=32 patch_size={args.patch_size} (grid {model.grid}), CAM layer {model.cam_layer!r}, "
        f"k={TOPK}, n={args.n}, PGD-10 at 8/255 (native)"
    )

    def run(cam_stats: bool) -> float:
        began = time.perf_counter()
        evaluate(model, dataset, ["pgd"], eps=["8/255"], n=args.n, batch_size=args.batch_size, seed=args.seed,
                 sanity=False, cam_stats=cam_stats, cam_topk=TOPK)  # fmt: skip
        return time.perf_counter() - began

    run(True), run(False)  # warm-up: allocator and kernels for every batch size
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.repeats):
        for cam_stats in (True, False) if round_ % 2 == 0 else (False, True):
            seconds[cam_stats].append(run(cam_stats))
    shares = [(w - o) / w for w, o in zip(seconds[True], seconds[False])]
    fastest = (min(seconds[True]) - min(seconds[False])) / min(seconds[True])
    print(f"with CAM statistics    median {statistics.median(seconds[True]):.3f} s  rounds {seconds[True]}")
    print(f"without (--no-cam-stats) median {statistics.median(seconds[False]):.3f} s  rounds {seconds[False]}")
    print(
        f"overhead share of eval time: median {statistics.median(shares):.1%} "
        f"(rounds {min(shares):.1%}-{max(shares):.1%}; fastest rounds {fastest:.1%}); target <= 25%"
    )


if __name__ == "__main__":
    main()
