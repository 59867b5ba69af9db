"""Synthetic evaluation folders with known values, in the layout ``write_eval`` produces.

Per-sample records are built by hand (so every aggregate can be checked by hand) and the
summary is written with ``robustcam.evaluate.summarize``, as ``evaluate`` does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike

from robustcam.attacks import parse_eps
from robustcam.cam import STAT_NAMES
from robustcam.evaluate import RECORD_COLUMNS, summarize

LINF_EPS = ("4/255", "8/255")
L2_EPS = ("0.5", "1.0")


def make_records(
    *,
    n: int = 20,
    correct: Sequence[int] | None = None,
    broken: Mapping[tuple[str, str], set[int]] | None = None,
    cw: Mapping[int, float] | None = None,
    backend: str = "torchattacks",
    clean_stats: Mapping[str, ArrayLike] | None = None,
    adv_shift: float = 0.25,
    loc_iou: tuple[ArrayLike, ArrayLike] | None = None,
) -> pd.DataFrame:
    """Per-sample records for samples 0..n-1.

    ``correct``: clean-correct samples (default all but the last 4). ``broken``: for
    (attack, eps text) of a bounded Linf attack, the samples broken there (the caller keeps
    them nested over eps, like the cascade). ``cw``: sample -> minimal L2 norm the attack
    found (others: it failed). ``clean_stats``: per-sample values of ``clean_<stat>`` (None:
    no CAM columns); ``adv_<stat>`` is the clean value + ``adv_shift``. ``loc_iou``:
    per-sample (clean, adversarial) IoUs.
    """
    correct_set = set(range(n - 4)) if correct is None else set(correct)
    broken = broken if broken is not None else {("pgd", e): set() for e in LINF_EPS}
    rows: list[dict[str, Any]] = []

    def base(i: int) -> dict[str, Any]:
        label = i % 10
        ok = i in correct_set
        return {
            "index": i,
            "label": label,
            "clean_pred": label if ok else (label + 1) % 10,
            "clean_correct": ok,
            "clean_margin": 1.0 if ok else -1.0,
            "backend": backend,
            "valid": True,
            "violation": "",
        }

    for (attack, eps_text), hit in broken.items():
        eps = parse_eps(eps_text)
        for i in range(n):
            row = base(i)
            success = row["clean_correct"] and i in hit
            wrong = success or not row["clean_correct"]
            row.update(
                attack=attack,
                norm="Linf",
                eps=eps,
                attacked=row["clean_correct"],
                source_eps=eps if success else np.nan,
                adv_pred=(row["label"] + 1) % 10 if wrong else row["label"],
                success=success,
                robust=row["clean_correct"] and not success,
                linf=eps if success else eps / 2,
                l2=0.1 if success else 0.05,
                margin=-0.5 if wrong else 0.5,
            )
            rows.append(row)
    if cw is not None:
        for eps_text in L2_EPS:
            eps = parse_eps(eps_text)
            for i in range(n):
                row = base(i)
                found = row["clean_correct"] and i in cw
                success = found and cw[i] <= eps
                wrong = found or not row["clean_correct"]
                row.update(
                    attack="cw",
                    norm="L2",
                    eps=eps,
                    attacked=row["clean_correct"],
                    source_eps=eps if success else np.nan,
                    adv_pred=(row["label"] + 1) % 10 if wrong else row["label"],
                    success=success,
                    robust=row["clean_correct"] and not success,
                    linf=0.01 if found else 0.0,
                    l2=cw[i] if found else 0.0,
                    margin=-0.1 if wrong else 0.3,
                )
                rows.append(row)
    frame = pd.DataFrame(rows)[list(RECORD_COLUMNS)]
    if clean_stats is not None:
        for stat in STAT_NAMES:
            values = np.asarray(clean_stats[stat], dtype=float)
            frame[f"clean_{stat}"] = values[frame["index"].to_numpy()]
            frame[f"adv_{stat}"] = frame[f"clean_{stat}"] + adv_shift
        frame["adv_peak_gain"] = 1.0
        frame["true_peak_shift"] = 2.0
    if loc_iou is not None:
        clean_iou, adv_iou = (np.asarray(v, dtype=float) for v in loc_iou)
        frame["clean_loc_iou"] = clean_iou[frame["index"].to_numpy()]
        frame["adv_loc_iou"] = adv_iou[frame["index"].to_numpy()]
    return frame


def write_folder(
    folder: Path,
    per_sample: pd.DataFrame,
    *,
    loss: str = "ce",
    noise: Any = None,
    flags: Sequence[dict[str, str]] = (),
    summary: pd.DataFrame | None = None,
    with_json: bool = True,
    complete: bool = True,
) -> Path:
    """Write per_sample.csv, summary.csv and summary.json the way ``write_eval`` lays them out,
    then (``complete``) the completion marker that lists them."""
    folder.mkdir(parents=True, exist_ok=True)
    per_sample.to_csv(folder / "per_sample.csv", index=False)
    summary = summarize(per_sample) if summary is None else summary
    summary.to_csv(folder / "summary.csv", index=False)
    attacks = [
        {"name": a, "norm": str(per_sample.loc[per_sample["attack"] == a, "norm"].iloc[0]), "minimal": a == "cw"}
        for a in dict.fromkeys(per_sample["attack"])
    ]
    meta: dict[str, Any] = {"arch": "smallcnn", "loss": {"name": loss}, "seed": 0, "metrics": {"test_acc": 0.9}}
    if noise is not None:
        meta["noise"] = noise
    payload = {
        "config": {
            "checkpoint": str(folder / "model.pt"),
            "checkpoint_meta": meta,
            "data": {"name": "digits", "split": "test", "options": {}},
        },
        "meta": {"n_samples": int(per_sample["index"].nunique()), "attacks": attacks, "seed": 0},
        "flags": list(flags),
        "summary": json.loads(summary.to_json(orient="records")),
        "agreement": [],
    }
    if with_json:
        (folder / "summary.json").write_text(json.dumps(payload, indent=2))
    if complete:
        files = ["per_sample.csv", "summary.csv", *(["summary.json"] if with_json else [])]
        (folder / "complete.json").write_text(json.dumps({"files": files, "rows": len(per_sample)}))
    return folder


# --------------------------------------------------------------------------- a sweep of five checkpoints


LOSSES = ("ce", "focal", "cam_loss", "hnc", "hnc")
N = 20


def sweep_stats(j: int, broken8: set[int]) -> dict[str, np.ndarray]:
    """Checkpoint j's per-sample statistics: negative-peak statistics fall with j (and are
    higher on the samples PGD breaks at 8/255); pos_peak is the same for every checkpoint."""
    base = 1.0 - 0.2 * j
    bump = np.array([0.5 if i in broken8 else 0.0 for i in range(N)])
    ramp = 0.001 * np.arange(N)
    negative = base + bump + ramp
    return {
        "neg_peak_max": 2 * negative,
        "neg_peak_topk": negative,
        "neg_homogeneity": negative,
        "neg_positive_frac": 0.1 * negative,
        "pos_peak": np.full(N, 3.0),
        "peak_margin": 3.0 - 2 * negative,
    }


def sweep_broken(j: int) -> dict[tuple[str, str], set[int]]:
    """PGD breaks 12 - 2j correct samples at 8/255 (robust (4 + 2j)/20) and 8 - 2j at 4/255
    (robust (8 + 2j)/20); FGSM breaks a subset of PGD's."""
    at8 = set(range(12 - 2 * j))
    at4 = set(range(8 - 2 * j))
    return {("pgd", "4/255"): at4, ("pgd", "8/255"): at8, ("fgsm", "4/255"): at4 - {0}, ("fgsm", "8/255"): at8 - {0}}


def write_sweep(root: Path, *, cam: bool = True, count: int = 5, run_dirs: bool = True) -> list[Path]:
    """``count`` run directories ``run<j>/eval`` (or bare eval folders) with known values:
    robust accuracy at pgd@8/255 = (4 + 2j)/20, clean accuracy 16/20, mean neg_homogeneity
    decreasing in j, C&W minimal L2 = 0.2 + 0.1 j on samples 0..5."""
    folders = []
    for j in range(count):
        broken = sweep_broken(j)
        records = make_records(
            n=N,
            broken=broken,
            cw={i: 0.2 + 0.1 * j + 0.01 * i for i in range(6)},
            clean_stats=sweep_stats(j, broken[("pgd", "8/255")]) if cam else None,
        )
        folder = root / f"run{j}" / "eval" if run_dirs else root / f"eval{j}"
        noise = None if j % 2 == 0 else {"kind": "symmetric", "rate": 0.4}
        folders.append(write_folder(folder, records, loss=LOSSES[j % len(LOSSES)], noise=noise))
    return folders


def write_examples(path: Path, *, m: int = 3, classes: int = 4, channels: int = 1) -> Path:
    """A small ``examples.pt`` with one adversarial setting (pgd/torchattacks/8/255)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(m, channels, 16, 16, generator=generator)
    cams = torch.randn(m, classes, 4, 4, generator=generator)
    labels = torch.arange(m) % classes
    payload = {
        "indices": torch.arange(m),
        "labels": labels,
        "clean_pred": labels.clone(),
        "images": images,
        "cams": cams,
        "adv": {
            "pgd/torchattacks/8/255": {
                "images": (images + 0.03).clamp(0, 1),
                "cams": cams + 1.0,
                "pred": (labels + 1) % classes,
            }
        },
    }
    torch.save(payload, path)
    return path
