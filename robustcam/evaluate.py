"""One checkpoint through the attack matrix (attack x eps x backend) -> per-sample records.

``evaluate`` streams the dataset in batches and keeps only per-sample numbers:
adversarial images are discarded after each batch (or written to ``adv_dir``).
Every adversarial example is checked after the attack: re-predicted by the
model (the recorded prediction is the model's, never the library's flag),
inside [0, 1], and inside its eps ball (+1e-6). A violation is recorded and
flagged, never clipped away, and an invalid example does not count as a break.

Robust accuracy counts clean errors as non-robust (AutoAttack's convention).

**Eps cascade.** For a bounded attack and an ascending eps list, a sample broken
at a smaller eps is broken at every larger one (the same perturbation is
admissible), so each larger eps attacks only the samples still robust; samples
misclassified when clean are never attacked. Minimal-perturbation attacks (C&W)
run once and are robust at eps when they failed or needed more than eps.

The summary is a pure function of the per-sample records (``summarize``), so
every figure can be recomputed from ``per_sample.csv``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from robustcam.attacks import Attack, Norm, build_attack, check_supported, format_eps, get_backend, parse_eps_list
from robustcam.cam import (
    CAM_CURVE_INTERVAL,
    LOCALIZATION_PROTOCOLS,
    MAXBOXACC_IOU_THRESHOLDS,
    TOP1_PROTOCOLS,
    cam_thresholds,
    localization_iou,
    maxboxacc_ious,
    negative_cam_stats,
    peak_location,
    resolve_topk,
)
from robustcam.data import ImageDataset, check_pixel_range
from robustcam.data.batches import iterate_batches
from robustcam.io import atomic_torch_save, atomic_write_text
from robustcam.models import CAMClassifier
from robustcam.runtime import derived_generator, library_versions

DEFAULT_EPS: tuple[str, ...] = ("1/255", "2/255", "4/255", "8/255")
DEFAULT_EPS_L2: tuple[str, ...] = ("0.25", "0.5", "1.0")
BUDGET_TOLERANCE = 1e-6
SANITY_LARGE_EPS = 0.5  # Linf; PGD at this budget should break (nearly) everything
SANITY_SAMPLES = 64
DISAGREEMENT_POINTS = 3.0

RECORD_COLUMNS = (
    "index", "label", "clean_pred", "clean_correct", "clean_margin", "attack", "backend", "norm", "eps",
    "attacked", "source_eps", "adv_pred", "success", "robust", "valid", "linf", "l2", "margin", "violation",
)  # fmt: skip
# then, with CAM statistics: clean_<stat>, adv_<stat> (robustcam.cam.STAT_NAMES), adv_peak_gain,
# true_peak_shift, and for datasets with boxes clean_/adv_loc_iou_<protocol> (cvpr2016, minmax: the
# predicted class's box IoU) and clean_/adv_loc_example (maxboxacc_v2: the example's row in
# MAXBOXACC_FILE). Records written before protocols were named have clean_/adv_loc_iou (minmax).
MAXBOXACC_FILE = "maxboxacc_v2.csv"  # one row per measured example: example, iou_at_<tau>...
MAXBOXACC_PREFIX = "iou_at_"
EXAMPLE_COUNT = 8  # samples kept with their CAMs in examples.pt
_PERTURBATION_COLUMNS = ("linf", "l2", "adv_peak_gain", "true_peak_shift")  # zero for a clean input


@dataclass(frozen=True)
class SanityFlag:
    """A warning about the evaluation itself (gradient masking, bugs, disagreement)."""

    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "message": self.message}


@dataclass(frozen=True)
class EvalResult:
    per_sample: pd.DataFrame  # one row per (sample, attack, backend, eps)
    summary: pd.DataFrame  # one row per (attack, backend, eps), plus clean and worst-case rows
    flags: tuple[SanityFlag, ...] = ()
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)  # torchattacks vs foolbox
    meta: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, Any] | None = None  # a few samples with their CAMs, clean and adversarial
    maxboxacc: pd.DataFrame = field(default_factory=pd.DataFrame)  # MAXBOXACC_FILE, see _Measurer


class EvalProgress:
    """Hooks ``evaluate`` calls; the default does nothing. The CLI renders them."""

    def on_job_start(self, name: str, total: int) -> None:
        """A job (``clean`` or ``attack/backend``) over ``total`` samples starts."""

    def on_job_advance(self, name: str, completed: int) -> None:
        """``completed`` samples of the job are done."""

    def on_job_end(self, name: str) -> None:
        """The job is done."""


# --------------------------------------------------------------------------- helpers


def select_samples(total: int, n: int | None, seed: int) -> Tensor:
    """Positions of the evaluated samples: all of them, or a seeded random ``n``, sorted."""
    if n is None or n >= total:
        return torch.arange(total)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return torch.randperm(total, generator=derived_generator(seed, 7))[:n].sort().values


def attack_seed(seed: int, attack: str, backend: str, eps_index: int, batch_index: int) -> int:
    """The seed a backend run uses; derived so that every (attack, backend, eps, batch) differs."""
    stream = [sum(ord(c) * 31**i for i, c in enumerate(f"{attack}/{backend}")) % 2**31, eps_index, batch_index]
    return int(torch.randint(0, 2**31 - 1, (1,), generator=derived_generator(seed, *stream)))


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``Z_y - max_{c != y} Z_c`` per sample; negative means misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


class _Measurer:
    """Everything recorded about an example, from one forward pass (``forward_cams``).

    For each example: the model's prediction and logit margin, the perturbation's
    Linf and L2 norms, whether it lies in [0, 1], and (``cam_stats``) the
    negative-CAM statistics, the peak gain of the predicted class over the clean
    input, the shift of the true class's CAM peak, and, where the dataset has boxes,
    CAM localisation under every protocol (``robustcam.cam.LOCALIZATION_PROTOCOLS``):

    - ``adv_loc_iou_cvpr2016``, ``adv_loc_iou_minmax``: the IoU of the predicted class's
      box; cvpr2016 on the map without the head bias, taken from ``model.head.bias``.
    - ``adv_loc_example``: for maxboxacc_v2, the example's row in ``maxboxacc_table()``,
      which holds the ground-truth class's best box IoU at every CAM threshold. The id,
      not the 100 values, travels with the records: a row that reports an example
      measured earlier (a clean error, a cascade row inherited from a smaller eps) points
      at the same table row, so each measured example is stored once, and
      ``MaxBoxAccV2`` of any setting is recomputable from ``per_sample.csv`` and the table.

    The CAM part costs one einsum on the last feature maps, not another network pass; the
    localisation uses the same maps.
    """

    def __init__(self, model: CAMClassifier, total: int, *, cam_stats: bool, cam_topk: int | None,
                 boxes: Tensor | None) -> None:  # fmt: skip
        self.model = model
        self.cam_stats = cam_stats
        self.topk = resolve_topk(cam_topk, model.num_classes) if cam_stats else 0
        self.boxes = boxes
        self.clean_peaks = torch.zeros(total, model.num_classes) if cam_stats else torch.zeros(0)
        self.clean_true_peak = torch.zeros(total, 2, dtype=torch.long)
        self.image_size = (0, 0)
        self.head_bias = model.head.bias.detach() if model.head.bias is not None else None
        self.thresholds = cam_thresholds(CAM_CURVE_INTERVAL)
        self.box_ious: list[Tensor] = []  # maxboxacc_v2: one (n, T) block per measured batch
        self.measured_examples = 0

    def _forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.cam_stats:
            return self.model(images).float(), None
        output = self.model.forward_cams(images)
        return output.logits.float(), output.cams.float()

    def _forward_no_grad(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        with torch.no_grad():
            return self._forward(images)

    def _cam_values(self, cams: Tensor, labels: Tensor, pred: Tensor, rows: Tensor | slice) -> dict[str, Tensor]:
        stats = negative_cam_stats(cams, labels, k=self.topk)
        values = {f"adv_{name}": value.cpu() for name, value in stats.items()}
        if self.boxes is not None:
            values.update(self._localization(cams, labels, pred, self.boxes[rows]))
        return values

    def _localization(self, cams: Tensor, labels: Tensor, pred: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        values = {
            f"adv_loc_iou_{protocol}": localization_iou(
                cams, pred, boxes, self.image_size, head_bias=self.head_bias, protocol=protocol
            )
            for protocol in TOP1_PROTOCOLS
        }
        self.box_ious.append(maxboxacc_ious(cams, labels, boxes, self.image_size, thresholds=self.thresholds))
        first = self.measured_examples
        self.measured_examples += len(labels)
        values["adv_loc_example"] = torch.arange(first, self.measured_examples)
        return values

    def maxboxacc_table(self) -> pd.DataFrame:
        """``MAXBOXACC_FILE``: one row per measured example (``example``, the id in the
        ``clean_loc_example``/``adv_loc_example`` columns), then ``iou_at_<tau>``: the best
        box IoU of the ground-truth class's CAM at each threshold. Empty without boxes."""
        if not self.box_ious:
            return pd.DataFrame()
        columns = [f"{MAXBOXACC_PREFIX}{tau:g}" for tau in self.thresholds]
        table = pd.DataFrame(torch.cat(self.box_ious).numpy(), columns=columns)
        table.insert(0, "example", np.arange(len(table)))
        return table

    def localization_meta(self) -> dict[str, Any]:
        """What ``summary.json`` says about the localisation protocols (empty without boxes)."""
        if self.boxes is None:
            return {}
        return {
            "protocols": list(LOCALIZATION_PROTOCOLS),
            "head_bias_removed": self.head_bias is not None,
            "maxboxacc_v2": {"cam_curve_interval": CAM_CURVE_INTERVAL, "iou_thresholds": list(MAXBOXACC_IOU_THRESHOLDS),
                             "file": MAXBOXACC_FILE},
        }  # fmt: skip

    def measure_clean(
        self, images: Tensor, labels: Tensor, rows: slice, *, probe_gradient: bool = False
    ) -> tuple[dict[str, Tensor], int]:
        """The clean input as an example (zero perturbation); remembers its CAM peaks.

        With ``probe_gradient`` the same forward pass also gives the input gradient of the
        cross-entropy, and the second value counts samples whose gradient is all zero.
        """
        self.image_size = (int(images.shape[-2]), int(images.shape[-1]))
        zero_gradients = 0
        if probe_gradient:
            probe = images.clone().requires_grad_(True)
            logits, cams = self._forward(probe)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), probe)
            zero_gradients = int((grad.flatten(1).abs().amax(1) == 0).sum())
            logits, cams = logits.detach(), None if cams is None else cams.detach()
        else:
            logits, cams = self._forward_no_grad(images)
        pred = logits.argmax(1)
        size = len(labels)
        values = {"adv_pred": pred.cpu(), "margin": logit_margin(logits, labels).cpu(),
                  "linf": torch.zeros(size), "l2": torch.zeros(size)}  # fmt: skip
        if cams is not None:
            values.update(self._cam_values(cams, labels, pred, rows))
            self.clean_peaks[rows] = cams.flatten(2).amax(2).cpu()
            self.clean_true_peak[rows] = peak_location(cams[torch.arange(size), labels]).cpu()
            values["adv_peak_gain"] = torch.zeros(size)
            values["true_peak_shift"] = torch.zeros(size)
        return values, zero_gradients

    def measure(self, clean: Tensor, adversarial: Tensor, labels: Tensor, rows: Tensor) -> dict[str, Tensor]:
        """Measurements of adversarial examples of the clean inputs at positions ``rows``."""
        logits, cams = self._forward_no_grad(adversarial)
        pred = logits.argmax(1)
        delta = (adversarial - clean).flatten(1).float()
        flat = adversarial.flatten(1)
        values = {
            "adv_pred": pred.cpu(), "margin": logit_margin(logits, labels).cpu(),
            "linf": delta.abs().amax(1).cpu(), "l2": delta.norm(dim=1).cpu(),
            "in_range": ((flat.min(dim=1).values >= 0) & (flat.max(dim=1).values <= 1)).cpu(),
        }  # fmt: skip
        if cams is not None:
            values.update(self._cam_values(cams, labels, pred, rows))
            index = torch.arange(len(labels), device=cams.device)
            peaks = cams.flatten(2).amax(2).cpu()
            pred_cpu = pred.cpu()
            values["adv_peak_gain"] = (peaks - self.clean_peaks[rows]).gather(1, pred_cpu[:, None]).squeeze(1)
            moved = peak_location(cams[index, labels]).cpu() - self.clean_true_peak[rows]
            values["true_peak_shift"] = moved.float().norm(dim=1)
        return values

    def examples(self, images: Tensor, labels: Tensor, indices: Tensor) -> dict[str, Any]:
        """A few clean samples with their raw CAMs, for figures (``examples.pt``)."""
        logits, cams = self._forward_no_grad(images)
        assert cams is not None
        return {"indices": indices.cpu(), "labels": labels.cpu(), "clean_pred": logits.argmax(1).cpu(),
                "images": images.cpu(), "cams": cams.cpu(), "adv": {}}  # fmt: skip

    def example_outputs(self, images: Tensor) -> dict[str, Tensor]:
        logits, cams = self._forward_no_grad(images)
        assert cams is not None
        return {"images": images.cpu(), "cams": cams.cpu(), "pred": logits.argmax(1).cpu()}


def _resolve_attacks(attacks: Sequence[Attack | str]) -> list[Attack]:
    resolved = [build_attack(a) if isinstance(a, str) else a for a in attacks]
    if not resolved:
        raise ValueError("no attacks given; valid: " + ", ".join(sorted({a.name for a in resolved}) or ["pgd"]))
    return resolved


def _jobs(attacks: list[Attack], backends: Sequence[str]) -> tuple[list[tuple[Attack, str]], list[str]]:
    """(attack, backend) pairs to run, and notes on pairs skipped because a backend lacks the attack."""
    for backend in backends:
        get_backend(backend)  # unknown names list the valid ones
    jobs, skipped = [], []
    for attack in attacks:
        able = [b for b in backends if get_backend(b).supports(attack)]
        if not able:
            check_supported(attack, backends[0])  # raises with the backends that can run it
        skipped += [f"{attack.name} has no {b} implementation; ran it on {', '.join(able)} only"
                    for b in backends if b not in able]  # fmt: skip
        jobs += [(attack, b) for b in able]
    return jobs, skipped


# --------------------------------------------------------------------------- evaluate


def evaluate(
    model: CAMClassifier,
    dataset: ImageDataset,
    attacks: Sequence[Attack | str],
    *,
    eps: Sequence[str | float] | None = DEFAULT_EPS,
    eps_l2: Sequence[str | float] | None = DEFAULT_EPS_L2,
    backends: Sequence[str] = ("torchattacks",),
    n: int | None = None,
    batch_size: int = 256,
    cascade: bool = True,
    seed: int = 0,
    sanity: bool = True,
    cam_stats: bool = True,
    cam_topk: int | None = None,
    adv_dir: str | Path | None = None,
    progress: EvalProgress | None = None,
) -> EvalResult:
    """Attack ``model`` on ``dataset`` with every (attack, backend, eps) and return the records.

    Args:
        model: a ``CAMClassifier``; evaluated in eval mode on the device its parameters are on.
        dataset: the evaluation split; images in [0, 1].
        attacks: attack names or built ``Attack`` objects.
        eps: Linf budgets in pixel units (``8/255`` or floats), for Linf attacks.
        eps_l2: L2 budgets, for L2 attacks (bounded ones attack at them, minimal ones are
            scored at them).
        backends: ``torchattacks`` and/or ``foolbox``.
        n: evaluate a seeded random subset of this size (default: every sample).
        batch_size: samples per attack call.
        cascade: attack a larger eps only where a smaller one failed (see module docstring).
        seed: seeds sample selection and every random start.
        sanity: run the sanity checks (gradient masking, large-eps PGD, ...).
        cam_stats: record negative-CAM statistics of every clean and adversarial example
            (``clean_*``/``adv_*`` columns, peak gain, peak shift, localisation IoU where the
            dataset has boxes) and keep a few examples with their CAMs for figures.
        cam_topk: k of the top-k negative-class statistics (default ``min(5, C - 1)``).
        adv_dir: if given, adversarial examples are saved there, one file per batch.
        progress: receives job start/advance/end events.
    """
    progress = progress or EvalProgress()
    attack_list = _resolve_attacks(attacks)
    budgets: dict[Norm, list[float]] = {
        "Linf": parse_eps_list(list(eps or []), norm="Linf"),
        "L2": parse_eps_list(list(eps_l2 or []), norm="L2"),
    }
    for attack in attack_list:
        if not budgets[attack.norm]:
            flag = "--eps" if attack.norm == "Linf" else "--eps-l2"
            kind = "minimal-perturbation" if attack.minimal else "bounded"
            raise ValueError(f"{attack.name} is a {kind} {attack.norm} attack: give its budgets with {flag}")
    if dataset.info.num_classes != model.num_classes:
        raise ValueError(
            f"dataset {dataset.info.name!r} has {dataset.info.num_classes} classes but the model has "
            f"{model.num_classes} outputs"
        )
    if dataset.info.in_channels != model.in_channels:
        raise ValueError(
            f"dataset {dataset.info.name!r} has {dataset.info.in_channels} channels but the model expects "
            f"{model.in_channels}"
        )
    jobs, notes = _jobs(attack_list, backends)
    device = next(model.parameters()).device
    model.eval()
    positions = select_samples(len(dataset), n, seed)
    total = len(positions)
    adv_root = Path(adv_dir) if adv_dir is not None else None

    measurer = _Measurer(model, total, cam_stats=cam_stats, cam_topk=cam_topk,
                         boxes=dataset.boxes[positions] if cam_stats and dataset.boxes is not None else None)  # fmt: skip

    # ---- clean pass: predictions, margins, CAM statistics, and a gradient probe on the first batch
    labels_all = torch.empty(total, dtype=torch.long)
    clean: dict[str, Tensor] = {}
    examples: dict[str, Any] = {}
    zero_grad_samples = probed = 0
    progress.on_job_start("clean", total)
    start = 0
    for batch_index, batch in enumerate(iterate_batches(dataset, batch_size, order=positions, device=device)):
        check_pixel_range(batch.images, what=f"{dataset.info.name} images")
        stop = start + len(batch.labels)
        probe = batch_index == 0 and sanity
        values, zeros = measurer.measure_clean(batch.images, batch.labels, slice(start, stop), probe_gradient=probe)
        if probe:
            zero_grad_samples, probed = zeros, len(batch.labels)
        for key, value in values.items():
            clean.setdefault(key, torch.empty(total, dtype=value.dtype))[start:stop] = value
        labels_all[start:stop] = batch.labels.cpu()
        if batch_index == 0 and cam_stats:
            examples = measurer.examples(batch.images[:EXAMPLE_COUNT], batch.labels[:EXAMPLE_COUNT],
                                         positions[:EXAMPLE_COUNT])  # fmt: skip
        start = stop
        progress.on_job_advance("clean", stop)
    progress.on_job_end("clean")
    clean_pred = clean.get("adv_pred", torch.empty(0, dtype=torch.long))
    clean_correct = clean_pred == labels_all

    # ---- the attack matrix
    columns: dict[str, list[Any]] = {}
    timings: list[dict[str, Any]] = []
    for attack, backend_name in jobs:
        backend = get_backend(backend_name)
        eps_list = budgets[attack.norm]
        job = f"{attack.name}/{backend_name}"
        seconds = [0.0] * len(eps_list)
        attacked_counts = [0] * len(eps_list)
        progress.on_job_start(job, total)
        start = 0
        for batch_index, batch in enumerate(iterate_batches(dataset, batch_size, order=positions, device=device)):
            stop = start + len(batch.labels)
            sl = slice(start, stop)
            base = {"index": positions[sl], "label": labels_all[sl], "clean_correct": clean_correct[sl]}
            base.update({f"clean_{key.removeprefix('adv_')}" if key != "adv_pred" else "clean_pred": value[sl]
                         for key, value in clean.items() if key not in _PERTURBATION_COLUMNS})  # fmt: skip
            correct = clean_correct[sl]
            # the example each sample's row reports: the clean input until an attack breaks it (cascade)
            best = {key: value[sl].clone() for key, value in clean.items()}
            best["source_eps"] = torch.full((stop - start,), math.nan, dtype=torch.float64)
            broken = torch.zeros(stop - start, dtype=torch.bool)
            example_images = batch.images[:EXAMPLE_COUNT].clone() if batch_index == 0 and cam_stats else None
            runs = [(None, 0)] if attack.minimal else [(budget, j) for j, budget in enumerate(eps_list)]
            for budget, j in runs:
                began = time.perf_counter()
                alive = correct & ~broken if cascade else correct
                targets = alive.nonzero().squeeze(1)
                state = best if cascade else {key: value[sl] for key, value in clean.items()}
                measured: dict[str, Tensor] = {}
                if len(targets):
                    t = targets.to(device)
                    adversarial = backend.run(
                        attack, model, batch.images[t], batch.labels[t], budget,
                        seed=attack_seed(seed, attack.name, backend_name, j, batch_index),
                    )  # fmt: skip
                    measured = measurer.measure(batch.images[t], adversarial, batch.labels[t], start + targets)
                    _save_adv(adv_root, job, budget, attack.norm, batch_index, positions[sl][targets], adversarial)
                    if example_images is not None:
                        chosen = targets < EXAMPLE_COUNT
                        example_images[targets[chosen]] = adversarial[chosen.to(device)]
                elapsed = time.perf_counter() - began
                for eps_index, scored in list(enumerate(eps_list)) if attack.minimal else [(j, eps_list[j])]:
                    row = _row(state, broken if cascade else torch.zeros_like(broken), targets, measured,
                               scored, attack.norm, minimal=attack.minimal)  # fmt: skip
                    seconds[eps_index] += elapsed / len(eps_list) if attack.minimal else elapsed
                    attacked_counts[eps_index] += len(targets)
                    _append(columns, base, row, attack, backend_name, scored)
                    if cascade and not attack.minimal:
                        newly = row["success"] & ~broken
                        for key in best:
                            best[key][newly] = row[key][newly]
                        broken |= newly
            if example_images is not None:
                label = "min" if attack.minimal else format_eps(eps_list[-1], attack.norm)
                examples.setdefault("adv", {})[f"{job}/{label}"] = measurer.example_outputs(example_images)
            start = stop
            progress.on_job_advance(job, stop)
        progress.on_job_end(job)
        for j, budget in enumerate(eps_list):
            timings.append({
                "attack": attack.name, "backend": backend_name, "norm": attack.norm, "eps": budget,
                "time_s": seconds[j], "images_per_s": attacked_counts[j] / seconds[j] if seconds[j] > 0 else math.nan,
            })  # fmt: skip

    per_sample = pd.DataFrame({name: _column(values) for name, values in columns.items()})
    if per_sample.empty:
        per_sample = pd.DataFrame(columns=list(RECORD_COLUMNS))
    summary = summarize(per_sample, clean_pred=clean_pred, labels=labels_all)
    if timings:
        summary = summary.merge(pd.DataFrame(timings), on=["attack", "backend", "norm", "eps"], how="left")
    agreement = backend_agreement(per_sample)

    flags = sanity_flags(summary, agreement, n_samples=total)
    if probed and zero_grad_samples:
        flags.append(SanityFlag(
            "zero_gradients",
            f"{zero_grad_samples} of {probed} samples in the first batch have an all-zero input gradient "
            "(saturated softmax or masked gradients): gradient attacks cannot move them; compare with cw",
        ))  # fmt: skip
    if sanity and any(a.norm == "Linf" and not a.minimal for a in attack_list):
        large = large_eps_check(model, dataset, positions, clean_correct, seed=seed, batch_size=batch_size)
        if large is not None:
            flags.append(large)
    for note in notes:
        flags.append(SanityFlag("backend_skipped", note))

    meta = {
        "n_samples": total,
        "sample_seed": seed,
        "clean_accuracy": float(clean_correct.float().mean()) if total else math.nan,
        "attacks": [{"name": a.name, "norm": a.norm, "minimal": a.minimal, "params": a.params()} for a in attack_list],
        "backends": list(backends),
        "eps": budgets["Linf"],
        "eps_l2": budgets["L2"],
        "cascade": cascade,
        "batch_size": batch_size,
        "seed": seed,
        "device": str(device),
        "dataset": dataset.info.to_dict(),
        "versions": library_versions(),
    }
    meta["cam_stats"] = {"enabled": cam_stats, "topk": measurer.topk if cam_stats else None,
                         "localization": measurer.boxes is not None,
                         "localization_protocols": measurer.localization_meta()}  # fmt: skip
    return EvalResult(per_sample, summary, tuple(flags), agreement, meta, examples or None,
                      measurer.maxboxacc_table())  # fmt: skip


def _row(
    state: dict[str, Tensor],
    broken: Tensor,
    targets: Tensor,
    measured: dict[str, Tensor],
    budget: float,
    norm: Norm,
    *,
    minimal: bool,
) -> dict[str, Any]:
    """One eps's rows for a batch: measured values for the attacked ``targets``; for the
    others, the example in ``state`` (the clean input, or the one that broke them earlier)."""
    row: dict[str, Any] = {key: value.clone() for key, value in state.items()}
    size = len(broken)
    unknown = torch.full((size,), math.nan, dtype=torch.float64)
    row["source_eps"] = torch.where(broken, state["source_eps"], unknown) if "source_eps" in state else unknown
    row["attacked"] = torch.zeros(size, dtype=torch.bool)
    row["success"] = broken.clone()
    row["valid"] = torch.ones(size, dtype=torch.bool)
    row["violation"] = [""] * size
    if not measured:
        return row
    for key in state:
        if key in measured:
            row[key][targets] = measured[key]
    norm_size = measured["linf"] if norm == "Linf" else measured["l2"]
    in_range = measured["in_range"]
    within = norm_size <= budget + BUDGET_TOLERANCE
    misclassified = measured["margin"] < 0
    valid = in_range if minimal else in_range & within
    success = valid & misclassified & within
    row["attacked"][targets] = True
    row["valid"][targets] = valid
    row["success"][targets] = success
    row["source_eps"][targets] = torch.where(
        success, torch.full(success.shape, budget, dtype=torch.float64), torch.full(success.shape, math.nan, dtype=torch.float64)
    )  # float64: exactly the eps it broke at
    for k in (~valid | ~in_range).nonzero().squeeze(1).tolist():
        problems = [] if bool(in_range[k]) else ["outside [0, 1]"]
        if not minimal and not bool(within[k]):
            problems.append(f"{norm} norm {float(norm_size[k]):.6g} > eps {budget:.6g}")
        row["violation"][int(targets[k])] = "; ".join(problems)
    return row


def _append(
    columns: dict[str, list[Any]], base: dict[str, Tensor], row: dict[str, Any], attack: Attack, backend: str, eps: float
) -> None:
    size = len(base["index"])
    values: dict[str, Any] = dict(base)
    values.update(attack=np.full(size, attack.name, dtype=object), backend=np.full(size, backend, dtype=object),
                  norm=np.full(size, attack.norm, dtype=object), eps=np.full(size, eps))  # fmt: skip
    values.update(row)
    values["robust"] = base["clean_correct"] & ~row["success"]
    values["violation"] = np.asarray(row["violation"], dtype=object)
    ordered = [name for name in RECORD_COLUMNS if name in values] + sorted(set(values) - set(RECORD_COLUMNS))
    for name in ordered:
        value = values[name]
        columns.setdefault(name, []).append(value.numpy() if isinstance(value, Tensor) else value)


def _column(parts: list[Any]) -> Any:
    column = np.concatenate(parts) if parts else np.array([])
    # float64, because float32 values written to CSV do not read back exactly and the
    # summary must recompute exactly from per_sample.csv
    return column.astype(np.float64) if column.dtype == np.float32 else column


def _save_adv(
    root: Path | None, job: str, eps: float | None, norm: Norm, batch_index: int, indices: Tensor, images: Tensor
) -> None:
    if root is None:
        return
    label = "min" if eps is None else format_eps(eps, norm).replace("/", "_")
    folder = root / f"{job.replace('/', '-')}-eps{label}"
    atomic_torch_save({"indices": indices.cpu(), "images": images.cpu()}, folder / f"batch{batch_index:05d}.pt")


# --------------------------------------------------------------------------- summaries and checks


def summarize(
    per_sample: pd.DataFrame, *, clean_pred: Tensor | None = None, labels: Tensor | None = None
) -> pd.DataFrame:
    """Summary rows recomputed from the per-sample records.

    One row per (attack, backend, norm, eps) with ``n``, ``clean_acc``, ``robust_acc``,
    ``attack_success_rate`` (broken / clean-correct), ``median_norm`` (of the successful
    perturbations, in the attack's norm), ``n_attacked`` and ``n_invalid``; then per
    (norm, eps) a ``worst`` row whose sample is robust only if it survived every attack
    and backend; and a ``clean`` row.
    """
    rows: list[dict[str, Any]] = []
    if len(per_sample):
        for (attack, backend, norm, eps), group in per_sample.groupby(["attack", "backend", "norm", "eps"], sort=False):
            rows.append(_summary_row(attack, backend, norm, eps, group))
        for (norm, eps), group in per_sample.groupby(["norm", "eps"], sort=True):
            worst = group.groupby("index").agg(
                robust=("robust", "all"), clean_correct=("clean_correct", "first"),
            )  # fmt: skip
            n = len(worst)
            rows.append({
                "attack": "worst", "backend": "all", "norm": norm, "eps": eps, "n": n,
                "clean_acc": worst["clean_correct"].mean(), "robust_acc": worst["robust"].mean(),
                "attack_success_rate": _rate((worst["clean_correct"] & ~worst["robust"]).sum(),
                                             worst["clean_correct"].sum()),
                "median_norm": math.nan, "n_attacked": 0, "n_invalid": 0,
            })  # fmt: skip
        first = per_sample.drop_duplicates("index")
        clean_acc = float(first["clean_correct"].mean())
        n_clean = len(first)
    else:
        assert clean_pred is not None and labels is not None
        n_clean = len(labels)
        clean_acc = float((clean_pred == labels).float().mean()) if n_clean else math.nan
    rows.insert(0, {
        "attack": "clean", "backend": "none", "norm": "none", "eps": 0.0, "n": n_clean, "clean_acc": clean_acc,
        "robust_acc": clean_acc, "attack_success_rate": math.nan, "median_norm": math.nan,
        "n_attacked": 0, "n_invalid": 0,
    })  # fmt: skip
    return pd.DataFrame(rows)


def _rate(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def _summary_row(attack: str, backend: str, norm: str, eps: float, group: pd.DataFrame) -> dict[str, Any]:
    norm_column = "linf" if norm == "Linf" else "l2"
    successful = group.loc[group["success"], norm_column]
    return {
        "attack": attack, "backend": backend, "norm": norm, "eps": eps, "n": len(group),
        "clean_acc": group["clean_correct"].mean(), "robust_acc": group["robust"].mean(),
        "attack_success_rate": _rate(group["success"].sum(), group["clean_correct"].sum()),
        "median_norm": float(successful.median()) if len(successful) else math.nan,
        "n_attacked": int(group["attacked"].sum()), "n_invalid": int((~group["valid"]).sum()),
    }  # fmt: skip


def backend_agreement(per_sample: pd.DataFrame) -> pd.DataFrame:
    """torchattacks vs foolbox per (attack, eps): both robust accuracies, their difference in
    points, and the fraction of samples on whose robustness the two agree."""
    if per_sample.empty or per_sample["backend"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for (attack, norm, eps), group in per_sample.groupby(["attack", "norm", "eps"], sort=False):
        by_backend = group.pivot_table(index="index", columns="backend", values="robust", aggfunc="first")
        if not {"torchattacks", "foolbox"} <= set(by_backend.columns):
            continue
        ta, fb_ = by_backend["torchattacks"].astype(bool), by_backend["foolbox"].astype(bool)
        rows.append({
            "attack": attack, "norm": norm, "eps": eps,
            "robust_acc_torchattacks": ta.mean(), "robust_acc_foolbox": fb_.mean(),
            "difference_points": 100 * (ta.mean() - fb_.mean()), "agreement_rate": (ta == fb_).mean(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def sanity_flags(summary: pd.DataFrame, agreement: pd.DataFrame, *, n_samples: int) -> list[SanityFlag]:
    """Checks on the summary in the spirit of AutoAttack's: signs of gradient masking or a broken evaluation."""
    flags: list[SanityFlag] = []
    one_sample = 1.0 / max(n_samples, 1)
    attacks = summary[~summary["attack"].isin(["clean", "worst"])]
    for backend, group in attacks.groupby("backend"):
        fgsm = group[group["attack"] == "fgsm"].set_index("eps")["robust_acc"]
        pgd = group[group["attack"] == "pgd"].set_index("eps")["robust_acc"]
        for eps in fgsm.index.intersection(pgd.index):
            if fgsm[eps] < pgd[eps] - one_sample:
                flags.append(SanityFlag(
                    "fgsm_stronger_than_pgd",
                    f"{backend}: FGSM ({100 * fgsm[eps]:.1f}%) beats PGD ({100 * pgd[eps]:.1f}%) at eps "
                    f"{format_eps(eps, 'Linf')}: a sign of gradient masking or too few PGD steps",
                ))  # fmt: skip
    for (attack, backend), group in attacks.groupby(["attack", "backend"]):
        accuracies = group.sort_values("eps")[["eps", "robust_acc"]].to_numpy()
        for (eps_a, acc_a), (eps_b, acc_b) in zip(accuracies, accuracies[1:]):
            if acc_b > acc_a + one_sample:
                norm = str(group["norm"].iloc[0])
                flags.append(SanityFlag(
                    "robust_accuracy_rises_with_eps",
                    f"{attack}/{backend}: robust accuracy rises from {100 * acc_a:.1f}% at eps "
                    f"{format_eps(eps_a, norm)} to {100 * acc_b:.1f}% at {format_eps(eps_b, norm)}"  # type: ignore[arg-type]
                    " (the attack is not finding examples it should)",
                ))  # fmt: skip
    invalid = attacks[attacks["n_invalid"] > 0]
    for row in invalid.itertuples():
        flags.append(SanityFlag(
            "budget_violations",
            f"{row.attack}/{row.backend} at eps {row.eps:.6g}: {row.n_invalid} adversarial examples outside "
            "[0, 1] or the eps ball; they were not counted as breaks",
        ))  # fmt: skip
    if not agreement.empty:
        for row in agreement[agreement["difference_points"].abs() > DISAGREEMENT_POINTS].itertuples():
            flags.append(SanityFlag(
                "backends_disagree",
                f"{row.attack} at eps {row.eps:.6g}: torchattacks {100 * row.robust_acc_torchattacks:.1f}% vs "
                f"foolbox {100 * row.robust_acc_foolbox:.1f}% ({row.difference_points:+.1f} points)",
            ))  # fmt: skip
    return flags


def large_eps_check(
    model: CAMClassifier,
    dataset: ImageDataset,
    positions: Tensor,
    clean_correct: Tensor,
    *,
    seed: int,
    batch_size: int,
    eps: float = SANITY_LARGE_EPS,
    samples: int = SANITY_SAMPLES,
) -> SanityFlag | None:
    """PGD at a large Linf eps (default 0.5) on up to 64 clean-correct samples must break almost all."""
    chosen = positions[clean_correct][:samples]
    if len(chosen) == 0:
        return None
    device = next(model.parameters()).device
    attack = build_attack("pgd", steps=20)
    backend = get_backend("torchattacks")
    survived = 0
    for batch_index, batch in enumerate(iterate_batches(dataset, batch_size, order=chosen, device=device)):
        adversarial = backend.run(
            attack, model, batch.images, batch.labels, eps, seed=attack_seed(seed, "sanity", "pgd", 0, batch_index)
        )
        with torch.no_grad():
            survived += int((logit_margin(model(adversarial).float(), batch.labels) >= 0).sum())
    if survived / len(chosen) > 0.05:
        return SanityFlag(
            "pgd_large_eps_not_near_zero",
            f"PGD-20 at Linf eps {eps} leaves {survived} of {len(chosen)} samples correctly classified; at such a "
            "budget accuracy should be near 0: suspect gradient masking",
        )
    return None




# --------------------------------------------------------------------------- files


def write_eval(result: EvalResult, out_dir: str | Path, *, config: dict[str, Any] | None = None) -> Path:
    """Write ``per_sample.csv``, ``summary.csv`` and ``summary.json`` (config, seeds, versions, flags),
    and ``examples.pt`` and ``MAXBOXACC_FILE`` where the result has them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "per_sample.csv", result.per_sample.to_csv(index=False))
    atomic_write_text(out / "summary.csv", result.summary.to_csv(index=False))
    payload = {
        "config": config or {},
        "meta": result.meta,
        "flags": [flag.to_dict() for flag in result.flags],
        "summary": json.loads(result.summary.to_json(orient="records")),
        "agreement": json.loads(result.agreement.to_json(orient="records")) if not result.agreement.empty else [],
    }
    atomic_write_text(out / "summary.json", json.dumps(payload, indent=2))
    if result.examples is not None:
        atomic_torch_save(result.examples, out / "examples.pt")
    if not result.maxboxacc.empty:
        atomic_write_text(out / MAXBOXACC_FILE, result.maxboxacc.to_csv(index=False))
    return out


__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_EPS_L2",
    "EvalProgress",
    "EvalResult",
    "SanityFlag",
    "attack_seed",
    "backend_agreement",
    "evaluate",
    "large_eps_check",
    "logit_margin",
    "sanity_flags",
    "select_samples",
    "summarize",
    "write_eval",
]
