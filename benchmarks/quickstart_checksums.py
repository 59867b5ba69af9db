"""sha256 of every quickstart model's ``per_sample.csv`` and ``summary.csv``, timing columns aside.

A restructuring keeps behaviour: run this on a quickstart output before and after, and the
lines must be identical.

    python benchmarks/quickstart_checksums.py runs/quickstart
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import pandas as pd

TIMING_COLUMNS = ("time_s", "images_per_s")


def records_digest(path: Path) -> str:
    """sha256 of a CSV with its timing columns dropped (the rest byte for byte as pandas writes it)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame.drop(columns=[c for c in TIMING_COLUMNS if c in frame.columns])
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return hashlib.sha256(buffer.getvalue().encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a quickstart output folder (default runs/quickstart)")
    args = parser.parse_args()
    for eval_dir in sorted(args.root.glob("*/eval")):
        for name in ("per_sample.csv", "summary.csv"):
            print(f"{records_digest(eval_dir / name)}  {eval_dir.parent.name}/eval/{name}")


if __name__ == "__main__":
    main()
