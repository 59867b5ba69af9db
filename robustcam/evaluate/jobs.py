"""The work of an evaluation: the clean pass, then one job per (attack, backend).

**Clean pass.** Every evaluated sample once, unperturbed: prediction, logit margin, CAM
statistics (``Measurer``), and an input-gradient probe on the first batch.

**Jobs.** A job runs one attack with one backend over every batch. The attack's type says
how (``robustcam.attacks``): a ``BoundedAttack`` runs once per eps, a ``MinimalAttack`` once,
scored at every eps. With the **eps cascade** (bounded attacks, ascending eps), a sample
broken at a smaller eps is broken at every larger one with the same perturbation, so each
larger eps attacks only the samples still robust; samples misclassified when clean are never
attacked. Every adversarial example is re-predicted and checked by the measurer and
``robustcam.evaluate.records.score``: the library's own success flag is never used.

**Shards.** With a shard store (``robustcam.evaluate.shards``), each batch of a job is written
as a shard once it has run at every eps, and a batch whose shard is there is read back
instead of attacked: a killed evaluation resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustcam.attacks import Attack, get_backend
from robustcam.data import ImageDataset, check_pixel_range
from robustcam.data.batches import Batch, iterate_batches
from robustcam.evaluate.examples import EXAMPLE_COUNT, adversarial_record, clean_record, example_key
from robustcam.evaluate.files import save_adversarial
from robustcam.evaluate.measure import PERTURBATION_COLUMNS, Measurer
from robustcam.evaluate.records import Records, score
from robustcam.evaluate.result import EvalProgress
from robustcam.evaluate.sampling import attack_seed
from robustcam.evaluate.shards import Shard, ShardStore
from robustcam.models import CAMClassifier
from robustcam.runtime import autocast

CLEAN_JOB = "clean"


@dataclass(frozen=True)
class EvalContext:
    """What the clean pass and every job share."""

    model: CAMClassifier
    dataset: ImageDataset
    positions: Tensor  # dataset positions of the evaluated samples, sorted
    measurer: Measurer
    batch_size: int
    seed: int
    cascade: bool
    progress: EvalProgress
    adv_root: Path | None = None
    keep_examples: bool = False
    shards: ShardStore | None = None
    attack_dtype: torch.dtype | None = None  # autocast of the attack calls only (``attack_amp``); None: fp32

    def batch_sizes(self) -> list[int]:
        """The number of samples in each batch, in order."""
        total = len(self.positions)
        return [min(self.batch_size, total - start) for start in range(0, total, self.batch_size)]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def batches(self) -> Iterator[tuple[int, slice, Batch]]:
        """(batch index, rows of the evaluated samples, batch), in order, one batch in memory at a time."""
        start = 0
        for index, batch in enumerate(
            iterate_batches(self.dataset, self.batch_size, order=self.positions, device=self.device)
        ):
            stop = start + len(batch.labels)
            yield index, slice(start, stop), batch
            start = stop


@dataclass
class CleanPass:
    """Per-sample measurements of the clean inputs (keyed like an adversarial example's)."""

    values: dict[str, Tensor]
    labels: Tensor
    zero_gradients: int = 0
    probed: int = 0
    examples: dict[str, Any] = field(default_factory=dict)

    @property
    def pred(self) -> Tensor:
        return self.values.get("adv_pred", torch.empty(0, dtype=torch.long))

    @property
    def correct(self) -> Tensor:
        return self.pred == self.labels

    def base(self, positions: Tensor, rows: slice) -> dict[str, Tensor]:
        """The columns every row of these samples carries: index, label, clean measurements."""
        base = {"index": positions[rows], "label": self.labels[rows], "clean_correct": self.correct[rows]}
        base.update(
            {
                f"clean_{key.removeprefix('adv_')}" if key != "adv_pred" else "clean_pred": value[rows]
                for key, value in self.values.items()
                if key not in PERTURBATION_COLUMNS
            }
        )
        return base


def clean_pass(context: EvalContext, *, probe: bool) -> CleanPass:
    """Measure every clean sample; ``probe`` the input gradient of the first batch."""
    total = len(context.positions)
    clean = CleanPass({}, torch.empty(total, dtype=torch.long))
    context.progress.on_job_start(CLEAN_JOB, total)
    for index, rows, batch in context.batches():
        check_pixel_range(batch.images, what=f"{context.dataset.info.name} images")
        probing = index == 0 and probe
        values, zeros = context.measurer.measure_clean(batch.images, batch.labels, rows, probe_gradient=probing)
        if probing:
            clean.zero_gradients, clean.probed = zeros, len(batch.labels)
        for key, value in values.items():
            clean.values.setdefault(key, torch.empty(total, dtype=value.dtype))[rows] = value
        clean.labels[rows] = batch.labels.cpu()
        if index == 0 and context.keep_examples:
            # the first batch may hold fewer than EXAMPLE_COUNT samples (a small --batch-size)
            clean.examples = clean_record(
                context.measurer,
                batch.images[:EXAMPLE_COUNT],
                batch.labels[:EXAMPLE_COUNT],
                context.positions[rows][:EXAMPLE_COUNT],
            )
        context.progress.on_job_advance(CLEAN_JOB, rows.stop)
    context.progress.on_job_end(CLEAN_JOB)
    return clean


# --------------------------------------------------------------------------- one job


@dataclass
class JobOutcome:
    """A job's rows, time and attacked samples per eps, and its adversarial example record."""

    records: Records
    seconds: list[float]
    attacked: list[int]
    example: tuple[str, dict[str, Tensor]] | None = None
    notes: dict[str, None] = field(default_factory=dict)  # what the library reported, in order, once each

    def add(self, shard: Shard, example_key: str) -> None:
        """Append one batch's rows and add up its times, counts and notes."""
        self.records.extend(shard.records)
        for j, (seconds, attacked) in enumerate(zip(shard.seconds, shard.attacked, strict=True)):
            self.seconds[j] += seconds
            self.attacked[j] += attacked
        self.notes.update(shard.notes)
        if shard.example is not None:
            self.example = (example_key, shard.example)

    def timings(self, attack: Attack, backend: str, budgets: Sequence[float]) -> list[dict[str, Any]]:
        return [
            {
                "attack": attack.name,
                "backend": backend,
                "norm": attack.norm,
                "eps": eps,
                "time_s": self.seconds[j],
                "images_per_s": self.attacked[j] / self.seconds[j] if self.seconds[j] > 0 else math.nan,
            }
            for j, eps in enumerate(budgets)
        ]


@dataclass
class _BatchState:
    """One batch within a job: the example each sample's row reports (the clean input until
    an attack breaks it) and which samples are broken so far."""

    best: dict[str, Tensor]
    broken: Tensor


def run_job(
    attack: Attack, backend: str, budgets: Sequence[float], clean: CleanPass, context: EvalContext
) -> JobOutcome:
    """Run one (attack, backend) over every batch; rows in batch order, eps ascending.

    A batch with a shard in ``context.shards`` is read back (and reported to the progress as
    resumed), every other batch is attacked and written as a shard."""
    job = f"{attack.name}/{backend}"
    outcome = JobOutcome(Records(), [0.0] * len(budgets), [0] * len(budgets))
    store = context.shards
    finished = store.finished(attack.name, backend) if store is not None else set()
    sizes = context.batch_sizes()
    completed = sum(size for index, size in enumerate(sizes) if index in finished)
    context.progress.on_job_start(job, len(context.positions))
    if completed:
        context.progress.on_job_resume(job, completed)
    key = example_key(attack, backend, None if attack.kind == "minimal" else budgets[-1])
    for index, rows, batch in context.batches():
        if store is not None and index in finished:
            base = clean.base(context.positions, rows)
            shard = store.read(attack.name, backend, index, budgets=len(budgets), base=base)
            context.measurer.absorb(shard.box_ious)
        else:
            shard = _attack_batch(attack, backend, budgets, (index, rows, batch), clean, context)
            if store is not None:
                store.write(attack.name, backend, index, shard)
            completed += sizes[index]
            context.progress.on_job_advance(job, completed)
        outcome.add(shard, key)
    context.progress.on_job_end(job)
    return outcome


def _attack_batch(
    attack: Attack,
    backend: str,
    budgets: Sequence[float],
    where: tuple[int, slice, Batch],
    clean: CleanPass,
    context: EvalContext,
) -> Shard:
    """Every run of ``attack`` on one batch, scored: the batch's shard."""
    index, rows, batch = where
    outcome = Shard(Records(), [0.0] * len(budgets), [0] * len(budgets))
    measured_blocks = len(context.measurer.box_ious)
    examples = batch.images[:EXAMPLE_COUNT].clone() if index == 0 and context.keep_examples else None
    base = clean.base(context.positions, rows)
    correct = clean.correct[rows]
    size = rows.stop - rows.start
    state = _BatchState(
        {key: value[rows].clone() for key, value in clean.values.items()}, torch.zeros(size, dtype=torch.bool)
    )
    state.best["source_eps"] = torch.full((size,), math.nan, dtype=torch.float64)
    for run in attack.runs(budgets):
        began = time.perf_counter()
        alive = correct & ~state.broken if context.cascade else correct
        targets = alive.nonzero().squeeze(1)
        reported = state.best if context.cascade else {key: value[rows] for key, value in clean.values.items()}
        measured, notes = _run_on(
            attack, backend, run.eps, run.eps_index, (index, rows, batch), targets, context, examples
        )
        outcome.notes.update(dict.fromkeys(notes))
        elapsed = time.perf_counter() - began
        for eps_index, eps in run.scored:
            broken = state.broken if context.cascade else torch.zeros_like(state.broken)
            row = score(attack, reported, broken, targets, measured, eps)
            outcome.seconds[eps_index] += elapsed / len(run.scored)
            outcome.attacked[eps_index] += len(targets)
            outcome.records.add(base, row, attack, backend, eps)
            if context.cascade and attack.cascades:
                newly = row["success"] & ~state.broken
                for key in state.best:
                    state.best[key][newly] = row[key][newly]
                state.broken |= newly
    outcome.box_ious = context.measurer.box_ious[measured_blocks:]
    if examples is not None:
        outcome.example = adversarial_record(context.measurer, examples)
    return outcome


def _run_on(
    attack: Attack,
    backend: str,
    eps: float | None,
    eps_index: int,
    where: tuple[int, slice, Batch],
    targets: Tensor,
    context: EvalContext,
    examples: Tensor | None,
) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """Attack the ``targets`` of a batch once and measure the examples (empty if none); and what
    the attack's library reported on the run (the authors' AutoAttack checks)."""
    if not len(targets):
        return {}, ()
    index, rows, batch = where
    chosen = targets.to(context.device)
    runner = get_backend(backend)
    # only the attack call: the re-prediction and measurement below stay fp32, whatever the attack ran in
    with autocast(context.device, context.attack_dtype):
        adversarial = runner.run(
            attack,
            context.model,
            batch.images[chosen],
            batch.labels[chosen],
            eps,
            seed=attack_seed(context.seed, attack.name, backend, eps_index, index),
        )
    measured = context.measurer.measure(batch.images[chosen], adversarial, batch.labels[chosen], rows.start + targets)
    save_adversarial(
        context.adv_root,
        f"{attack.name}/{backend}",
        eps,
        attack.norm,
        index,
        context.positions[rows][targets],
        adversarial,
    )
    if examples is not None:
        kept = targets < EXAMPLE_COUNT
        examples[targets[kept]] = adversarial[kept.to(context.device)]
    return measured, runner.notes


__all__ = ["CLEAN_JOB", "CleanPass", "EvalContext", "JobOutcome", "clean_pass", "run_job"]
