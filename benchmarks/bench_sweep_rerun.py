"""Re-running a finished sweep: it must do no training and return in under 5 s.

Runs a small sweep once, then times, side by side in this run: ``robustcam --help``
(the command's start-up), ``robustcam sweep`` on the finished sweep (start-up plus
checking every cell's marker and rebuilding sweep.csv), and ``run_sweep`` in process.

    python benchmarks/bench_sweep_rerun.py [--cells 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from robustcam.sweep import load_sweep, run_sweep


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    sweep_file = folder / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "rerun",
                "out": str(folder / "out"),
                "base": {"model": {"options": {"width": 4}}, "epochs": 1, "batch_size": 128},
                "grid": {"seed": list(range(args.cells))},
                "eval": {"attacks": ["fgsm"], "eps": ["8/255"], "n": 16, "sanity": False},
            }
        )
    )
    _, cells, out = load_sweep(sweep_file)
    run_sweep(out, cells)
    cli = [sys.executable, "-m", "robustcam.cli"]
    help_times, rerun_times, in_process = [], [], []
    for _ in range(args.repeats):
        help_times.append(_timed([*cli, "--help"]))
        rerun_times.append(_timed([*cli, "sweep", str(sweep_file), "--no-report"]))
        start = time.perf_counter()
        run_sweep(out, cells, runner=lambda root, cell: (_ for _ in ()).throw(AssertionError("trained again")))
        in_process.append(time.perf_counter() - start)
    print(f"finished sweep of {len(cells)} cells, median of {args.repeats}")
    print(f"{'what':<40}{'seconds':>10}")
    print(f"{'robustcam --help (start-up)':<40}{statistics.median(help_times):>10.2f}")
    print(f"{'robustcam sweep (finished, re-run)':<40}{statistics.median(rerun_times):>10.2f}")
    print(f"{'run_sweep in process (no training)':<40}{statistics.median(in_process):>10.3f}")
    print("target: the re-run under 5 s")


if __name__ == "__main__":
    main()
