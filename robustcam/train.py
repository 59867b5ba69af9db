"""The training loop: one config in, one run directory out.

A run directory holds the resolved ``config.yaml`` (written first), one row per
epoch in ``train_log.csv`` (rewritten atomically after every epoch), a resumable
``train_state.pt`` while training is under way, and at the end ``model.pt`` and
the completion marker ``complete.json`` (written last). An interrupted run is
resumed from its last finished epoch and draws exactly the batches and
augmentations an uninterrupted run would have drawn, because every epoch's
randomness is derived from (seed, epoch) rather than from a global generator.

The run directory is locked while it is written (``robustcam.io.directory_lock``): a second
process on the same directory stops with a one-line error that names the holder. Every file
read back (``train_state.pt``, ``train_log.csv``, ``complete.json``) is checked, so a corrupt
or planted one is a one-line error naming it and how to recover, and a write that fails on a
full disk says which ``train_state.pt`` is intact.

Library code only: progress is reported through a ``TrainProgress`` object;
the CLI renders it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from robustcam.checkpoint import load_checkpoint, save_checkpoint
from robustcam.checkpoint.messages import shape_problems
from robustcam.checkpoint.reading import load_weights_only
from robustcam.config import TrainConfig, config_to_dict, dump_yaml
from robustcam.data import DatasetInfo, ImageDataset, load_dataset
from robustcam.data.batches import iterate_batches, num_batches
from robustcam.errors import InputError, NonFiniteLossError, RobustcamError
from robustcam.io import (
    RETRY_HINT,
    CorruptFileError,
    StorageError,
    atomic_torch_save,
    atomic_write_text,
    directory_lock,
    read_csv_table,
    read_json_object,
    require_fields,
)
from robustcam.layout import CONFIG_FILE, MODEL_FILE, RUN_COMPLETE, TRAIN_LOG_FILE, TRAIN_STATE_FILE
from robustcam.layout import config_digest as layout_digest
from robustcam.losses import Loss, LossResult, build_loss
from robustcam.models import CAMClassifier, ModelOutput, build_model
from robustcam.models.gradcam import GradCAMClassifier
from robustcam.noise import NoiseSpec
from robustcam.runtime import (
    autocast,
    derived_generator,
    eval_mode,
    library_versions,
    resolve_amp,
    resolve_device,
    seed_everything,
    set_deterministic,
)

# the run directory's names (robustcam.layout) under the names this module has always used
LOG_FILE = TRAIN_LOG_FILE
STATE_FILE = TRAIN_STATE_FILE
COMPLETE_FILE = RUN_COMPLETE

_FLIP_DATASETS = ("cifar10", "cifar100", "imagefolder")
# train_log.csv columns that are not loss parts
LOG_COLUMNS = ("epoch", "lr", "train_acc", "test_acc", "test_loss", "memorization", "epoch_time_s", "images_per_s")
_CHECK_FINITE_EVERY = 20  # steps between host syncs for the NaN/inf check


class TrainProgress:
    """Hooks the trainer calls; the default does nothing. The CLI subclasses it."""

    def on_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int, device: str) -> None:
        """Training is about to run epochs ``start_epoch + 1 .. epochs``."""

    def on_step(self, *, epoch: int, step: int) -> None:
        """Step ``step`` (1-based) of epoch ``epoch`` (1-based) is done."""

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        """An epoch finished; ``row`` is its line of ``train_log.csv``."""


@dataclass(frozen=True)
class TrainResult:
    model: CAMClassifier
    meta: dict[str, Any]
    log: pd.DataFrame
    out_dir: Path
    resumed_from_epoch: int  # 0 for a fresh run; epochs for a run that was already complete


def config_digest(config: TrainConfig, train_labels: Tensor | None = None) -> str:
    """A stable id of everything that determines the trained weights: the config without where it
    runs (so a run can resume elsewhere) and the training labels it was given."""
    extra = train_labels.to(torch.int64).cpu().numpy().tobytes() if train_labels is not None else b""
    return layout_digest(config, extra=extra)


# --------------------------------------------------------------------------- augmentation


def resolve_augment(augment: str, dataset: str) -> str:
    if augment != "auto":
        return augment
    return "crop_flip" if dataset in _FLIP_DATASETS else "crop"


def augment_batch(images: Tensor, kind: str, generator: torch.Generator, *, padding: int = 0) -> Tensor:
    """Random translation by zero-padded crop (and horizontal flip), vectorised on the batch's device.

    ``padding`` defaults to 1/8 of the image side (4 px at 32x32, the CIFAR recipe).
    """
    if kind == "none":
        return images
    n, _, height, width = images.shape
    pad = padding or max(1, height // 8)
    shift_y = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    shift_x = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (shift_y[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (shift_x[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    out = padded.gather(2, rows.expand(n, images.shape[1], height, padded.shape[3]))
    out = out.gather(3, cols.expand(n, images.shape[1], height, width))
    if kind == "crop_flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


# --------------------------------------------------------------------------- optimisation


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    opt = config.optimizer
    # No weight decay on normalisation layers and biases, as in the usual ImageNet/CIFAR recipes.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": opt.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov and opt.momentum > 0)
    return torch.optim.AdamW(groups, lr=opt.lr)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` (0-based)."""
    schedule = config.schedule
    total = config.epochs * steps_per_epoch
    warmup = schedule.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if schedule.name == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule.name == "step":
        epoch = step // steps_per_epoch
        return float(schedule.gamma ** sum(epoch >= m for m in schedule.milestones))
    return 1.0


def training_step(
    model: CAMClassifier,
    loss_fn: Loss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: Tensor,
    labels: Tensor,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[ModelOutput, LossResult]:
    """One optimisation step. Losses that need CAMs get ``forward_cams``; the others
    the cheaper ``forward`` (features and CAMs are then empty tensors)."""
    with autocast(device, amp_dtype):
        if loss_fn.needs_cams:
            output = model.forward_cams(images)
        else:
            logits = model(images)
            output = ModelOutput(logits, logits.new_empty(0), logits.new_empty(0))
        result = loss_fn(output, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(result.total).backward()
    scaler.step(optimizer)
    scaler.update()
    return output, result


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def accuracy_and_loss(
    model: CAMClassifier,
    dataset: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Clean top-1 accuracy and mean cross-entropy of ``model`` on ``dataset``."""
    correct, loss_sum, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
    with eval_mode(model):
        for batch in iterate_batches(dataset, batch_size, device=device):
            with autocast(device, amp_dtype):
                logits = model(batch.images).float()
            correct += (logits.argmax(1) == batch.labels).sum()
            loss_sum += F.cross_entropy(logits, batch.labels, reduction="sum")
            count += len(batch.labels)
    return float(correct) / max(count, 1), float(loss_sum) / max(count, 1)


@torch.no_grad()
def memorization_rate(
    model: CAMClassifier,
    train_set: ImageDataset,
    flipped: Tensor,
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Fraction of the flipped training samples the model predicts as their noisy label.

    ``train_set`` carries the noisy labels; evaluated in eval mode without augmentation.
    """
    order = flipped.nonzero().squeeze(1)
    if len(order) == 0:
        return float("nan")
    agree = torch.zeros((), device=device)
    with eval_mode(model):
        for batch in iterate_batches(train_set, batch_size, order=order, device=device):
            with autocast(device, amp_dtype):
                agree += (model(batch.images).argmax(1) == batch.labels).sum()
    return float(agree) / len(order)


# --------------------------------------------------------------------------- the loop


def _write_log(out_dir: Path, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    log = pd.DataFrame(list(rows))
    atomic_write_text(out_dir / LOG_FILE, log.to_csv(index=False))
    return log


# --------------------------------------------------------------------------- reading a run back

_MARKER_FIELDS: dict[str, type | tuple[type, ...]] = {"config_digest": str, "epochs": int, "metrics": dict}
_MARKER_METRICS: dict[str, type | tuple[type, ...]] = {"test_acc": (int, float), "train_acc": (int, float)}
_STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config_digest": str,
    "epoch": int,
    "train_time_s": (int, float),
    "model": Mapping,
    "optimizer": Mapping,
    "scaler": Mapping,
}
_LOG_REQUIRED = ("epoch", "loss", "train_acc", "test_acc", "test_loss")


def read_run_marker(out_dir: Path) -> dict[str, Any]:
    """``complete.json`` of a finished run, checked: a config digest, the epochs and the metrics."""
    marker = out_dir / COMPLETE_FILE
    recover = f"delete {marker} to train this run again, or choose another --out"
    info = read_json_object(marker, recover=recover)
    require_fields(marker, info, _MARKER_FIELDS, recover=recover)
    require_fields(marker, info["metrics"], _MARKER_METRICS, recover=recover)
    return info


def _restart_hint(state_path: Path) -> str:
    return f"delete {state_path} to start this run over (its finished epochs are lost), or choose another --out"


def read_train_state(state_path: Path, *, digest: str, epochs: int, device: torch.device) -> dict[str, Any]:
    """``train_state.pt``, read weights-only and checked: a dict with every field, written for
    this config (``digest``) after an epoch in [0, ``epochs``]. Never runs code from the file."""
    recover = _restart_hint(state_path)
    state = load_weights_only(
        state_path, map_location=device, kind="training state", recover=recover, error=CorruptFileError
    )
    if not isinstance(state, Mapping):
        raise CorruptFileError(f"training state {state_path} holds a {type(state).__name__}, not a dict; {recover}")
    require_fields(state_path, state, _STATE_FIELDS, recover=recover)
    if state["config_digest"] != digest:
        raise RobustcamError(
            f"{state_path.parent} holds an unfinished run with a different config; "
            f"choose another --out or delete {state_path}"
        )
    if not 0 <= state["epoch"] <= epochs or not math.isfinite(state["train_time_s"]):
        raise CorruptFileError(
            f"training state {state_path} is at epoch {state['epoch']} of {epochs} after "
            f"{state['train_time_s']} s; {recover}"
        )
    return dict(state)


def restore_train_state(
    state: Mapping[str, Any],
    state_path: Path,
    model: CAMClassifier,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """Load a checked state into the model, optimizer and scaler; a state that does not fit them
    (another architecture, other shapes) is a one-line ``CorruptFileError``."""
    recover = _restart_hint(state_path)
    weights = state["model"]
    found = {str(key): tuple(value.shape) for key, value in weights.items() if isinstance(value, Tensor)}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = shape_problems(found, expected, source="file", target="model")
    if problems or len(found) != len(weights):
        what = problems or "entries that are not tensors"
        raise CorruptFileError(f"training state {state_path} does not fit this run's model ({what}); {recover}")
    model.load_state_dict(weights)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as error:
        raise CorruptFileError(
            f"training state {state_path} has an optimizer state that does not fit this run "
            f"({' '.join(str(error).split())[:120]}); {recover}"
        ) from None
    for parameter, slots in optimizer.state.items():
        if any(isinstance(v, Tensor) and v.ndim > 0 and v.shape != parameter.shape for v in slots.values()):
            raise CorruptFileError(
                f"training state {state_path} has optimizer slots of other shapes than the "
                f"model's parameters; {recover}"
            )


def read_resumed_log(out_dir: Path, start_epoch: int) -> list[dict[str, Any]]:
    """The ``train_log.csv`` rows of the ``start_epoch`` epochs a training state says are done."""
    log_path, state_path = out_dir / LOG_FILE, out_dir / STATE_FILE
    recover = f"delete {state_path} and {log_path} to start this run over, or choose another --out"
    if not log_path.is_file():
        raise CorruptFileError(f"{log_path} is missing, but {state_path} says {start_epoch} epochs are done; {recover}")
    log = read_csv_table(log_path, recover=recover, required=_LOG_REQUIRED, kind="train_log.csv")
    if log["epoch"].tolist()[:start_epoch] != list(range(1, start_epoch + 1)):
        raise CorruptFileError(
            f"{log_path} does not list the epochs 1..{start_epoch} that {state_path} says are done; {recover}"
        )
    rows: list[dict[str, Any]] = log.to_dict("records")[:start_epoch]
    return rows


def load_completed_run(out_dir: Path, digest: str | None = None) -> TrainResult | None:
    """The finished run in ``out_dir``, or None if there is none (or it was trained from another config)."""
    marker = out_dir / COMPLETE_FILE
    if not marker.is_file() or not (out_dir / MODEL_FILE).is_file():
        return None
    info = read_run_marker(out_dir)
    if digest is not None and info["config_digest"] != digest:
        return None
    model, meta = load_checkpoint(out_dir / MODEL_FILE, factory_from_meta=True)  # a run of the user's config
    log_path = out_dir / LOG_FILE
    recover = f"restore it, or delete {marker} to train this run again"
    log = read_csv_table(log_path, recover=recover, kind="train_log.csv") if log_path.is_file() else pd.DataFrame()
    return TrainResult(model, meta, log, out_dir, resumed_from_epoch=int(meta.get("epochs", 0)))


@contextmanager
def _keeping(kept: str) -> Iterator[None]:
    """A ``StorageError`` inside says ``kept`` about what is intact and how to go on."""
    try:
        yield
    except StorageError as error:
        raise error.keeping(kept) from error


def _kept_after(epochs_saved: int) -> str:
    if epochs_saved == 0:
        return f"no finished epoch was saved yet; {RETRY_HINT}"
    return f"{STATE_FILE} of epoch {epochs_saved} is intact; free space and run the same command to resume from it"


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    train_labels: Tensor | Sequence[int] | None = None,
    extra_meta: dict[str, Any] | None = None,
    resume: bool = True,
    progress: TrainProgress | None = None,
) -> TrainResult:
    """Train one model as ``config`` says and save the run in ``out_dir``.

    Args:
        config: the validated training config.
        out_dir: the run directory (created).
        train_labels: per-sample label override for the training split (noisy
            labels); test labels stay clean.
        extra_meta: more JSON-able data for the checkpoint's meta (e.g. the noise spec).
        resume: continue an interrupted run in ``out_dir`` with the same config, and
            return a finished one without training. With ``resume=False`` an existing
            run in ``out_dir`` is an error.
        progress: receives start/step/epoch events.

    Raises:
        DirectoryBusyError: another live process is writing ``out_dir``.
        CorruptFileError: a file of the run cannot be read back (the message says how to recover).
        StorageError: a file could not be written; the message says which epoch is kept.
    """
    out = Path(out_dir)
    # held for the whole run, the checks of what is already there included: another process
    # could finish or start this run between a check and the first write
    with directory_lock(out, what="run directory", hint="wait for it to finish, or choose another --out"):
        return _train(
            config,
            out,
            train_labels=train_labels,
            extra_meta=extra_meta,
            resume=resume,
            progress=progress or TrainProgress(),
        )


@dataclass(frozen=True)
class _TrainingData:
    """The splits a run trains and tests on, the training split with its label noise applied."""

    train_set: ImageDataset
    test_set: ImageDataset
    info: DatasetInfo  # of the training split as loaded, before any label override
    flipped: Tensor | None  # which training labels the config's noise changed; None without it
    noise_meta: dict[str, Any] | None


@dataclass(frozen=True)
class _Trainer:
    """Everything an epoch needs: the data, the model and what optimises it."""

    config: TrainConfig
    data: _TrainingData
    device: torch.device
    amp_dtype: torch.dtype | None
    model: CAMClassifier
    loss_fn: Loss
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    scaler: torch.amp.GradScaler
    augment: str
    steps_per_epoch: int
    drop_last: bool


@dataclass
class _RunSoFar:
    """The finished epochs of a run: their ``train_log.csv`` rows and their summed time."""

    rows: list[dict[str, Any]]
    start_epoch: int  # epochs that were finished before this call
    train_time: float


@dataclass
class _EpochSums:
    """Running sums over one epoch's steps, kept on the device: no host sync per step."""

    totals: dict[str, Tensor]
    bad: Tensor  # some step's loss was NaN/inf
    correct: Tensor
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _EpochSums:
        return cls({}, torch.zeros((), dtype=torch.bool, device=device), torch.zeros((), device=device))

    def add(self, output: ModelOutput, result: LossResult, labels: Tensor) -> None:
        n = len(labels)
        self.seen += n
        self.bad |= ~torch.isfinite(result.total.detach())
        self.totals["loss"] = self.totals.get("loss", 0) + result.total.detach() * n
        for name, value in result.parts.items():
            self.totals[name] = self.totals.get(name, 0) + value * n
        self.correct += (output.logits.detach().argmax(1) == labels).sum()

    def check_finite(self, *, epoch: int, step: int) -> None:
        """Stop with ``NonFiniteLossError`` if a loss so far was NaN/inf (one host sync)."""
        if bool(self.bad):
            parts = ", ".join(f"{k}={float(v) / self.seen:.4g}" for k, v in self.totals.items())
            raise NonFiniteLossError(
                f"loss became NaN/inf in epoch {epoch + 1} by step {step + 1} ({parts}); "
                "lower the learning rate (optimizer.lr) or the loss weight"
            )


class _Evaluation(NamedTuple):
    test_acc: float
    test_loss: float
    memorization: float | None  # None without config noise


def _train(
    config: TrainConfig,
    out: Path,
    *,
    train_labels: Tensor | Sequence[int] | None,
    extra_meta: dict[str, Any] | None,
    resume: bool,
    progress: TrainProgress,
) -> TrainResult:
    """``train`` under the run directory's lock."""
    labels = torch.as_tensor(train_labels, dtype=torch.long) if train_labels is not None else None
    digest = config_digest(config, labels)
    if (done := _existing_run(out, digest, resume=resume)) is not None:
        return done

    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.amp, device)
    set_deterministic(config.deterministic)
    seed_everything(config.seed)
    trainer = _build_trainer(config, _load_training_data(config, labels), device, amp_dtype)
    so_far = _resume_or_start(trainer, out, digest, resume=resume)

    progress.on_start(
        epochs=config.epochs,
        start_epoch=so_far.start_epoch,
        steps_per_epoch=trainer.steps_per_epoch,
        device=str(device),
    )
    for epoch in range(so_far.start_epoch, config.epochs):
        row = _run_epoch(trainer, epoch, so_far, progress)
        _save_epoch(trainer, out, digest, epoch, so_far.rows, so_far.train_time)
        progress.on_epoch_end(row)

    meta = _run_meta(trainer, digest, so_far, extra_meta)
    log = _write_finished_run(out, trainer.model, meta, so_far.rows, digest=digest, epochs=config.epochs)
    (out / STATE_FILE).unlink(missing_ok=True)
    return TrainResult(trainer.model.eval(), meta, log, out, resumed_from_epoch=so_far.start_epoch)


def _existing_run(out: Path, digest: str, *, resume: bool) -> TrainResult | None:
    """The finished run in ``out`` to return without training, or None to train; an error where
    ``out`` holds a run this call must not touch."""
    existing = (out / COMPLETE_FILE).exists() or (out / STATE_FILE).exists()
    if existing and not resume:
        raise RobustcamError(f"{out} already holds a run; choose another --out or resume it")
    if resume and (done := load_completed_run(out, digest)) is not None:
        return done
    if (out / COMPLETE_FILE).exists():
        raise RobustcamError(f"{out} holds a finished run with a different config; choose another --out")
    return None


def _load_training_data(config: TrainConfig, labels: Tensor | None) -> _TrainingData:
    """Both splits; the training split gets the config's label noise or the ``labels`` override."""
    data_root = config.data.root
    train_set = load_dataset(
        config.data.name, "train", root=data_root, download=config.data.download, **config.data.options
    )
    test_set = load_dataset(config.data.name, "test", root=data_root, download=False, **config.data.options)
    info = train_set.info
    noise_meta: dict[str, Any] | None = None
    flipped: Tensor | None = None
    spec = config.noise.spec()
    if spec is not None:
        if labels is not None:
            raise ValueError("give label noise either in the config (noise:) or as train_labels, not both")
        labels, flipped, noise_meta = _noisy_labels(config, spec, train_set)
    if labels is not None:
        train_set = train_set.with_targets(labels)
    return _TrainingData(train_set, test_set, info, flipped, noise_meta)


def _noisy_labels(
    config: TrainConfig, spec: NoiseSpec, train_set: ImageDataset
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The noisy training labels, which of them were flipped, and the noise's checkpoint meta."""
    info = train_set.info
    noise_seed = config.noise.seed if config.noise.seed is not None else config.seed
    coarse = train_set.fine_to_coarse() if hasattr(train_set, "fine_to_coarse") else None
    noisy = spec.apply(
        train_set.targets, num_classes=info.num_classes, dataset=info.name, coarse_labels=coarse, seed=noise_seed
    )
    noise_meta = {**spec.to_dict(), "seed": noise_seed, "realized_rate": noisy.realized_rate}
    return noisy.labels, noisy.flipped, noise_meta


def _check_exact_cams(loss_fn: Loss, model: CAMClassifier) -> None:
    """Losses on CAMs (hnc, cam_loss) train exact CAMs: refuse a model that has Grad-CAM maps only."""
    if loss_fn.needs_cams and isinstance(model, GradCAMClassifier):
        raise InputError(
            f"loss {loss_fn.name!r} trains class activation maps, which {model.arch} does not have: its head is "
            "not global average pooling + one linear layer, so its maps are Grad-CAM maps (gradients of its logits), "
            "which robustcam does not train through; use an architecture with exact CAMs, or loss ce or focal"
        )


def _build_trainer(
    config: TrainConfig, data: _TrainingData, device: torch.device, amp_dtype: torch.dtype | None
) -> _Trainer:
    """The loss, the freshly initialised model on ``device``, its optimizer and the step plan."""
    info = data.info
    loss_fn: Loss = build_loss(config.loss.name, **config.loss.params())
    loss_fn.check_num_classes(info.num_classes)
    torch.manual_seed(config.seed)  # model initialisation depends on the seed only
    model = build_model(
        config.model.arch, info.num_classes, info.in_channels, mean=info.mean, std=info.std, **config.model.options
    ).to(device)
    _check_exact_cams(loss_fn, model)
    loss_fn.bind(model)
    optimizer = build_optimizer(model, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    augment = resolve_augment(config.augment, info.name)
    size = len(data.train_set)
    steps_per_epoch = num_batches(size, config.batch_size, drop_last=size > config.batch_size)
    drop_last = size > config.batch_size
    return _Trainer(
        config,
        data,
        device,
        amp_dtype,
        model,
        loss_fn,
        optimizer,
        base_lrs,
        scaler,
        augment,
        steps_per_epoch,
        drop_last,
    )


def _resume_or_start(trainer: _Trainer, out: Path, digest: str, *, resume: bool) -> _RunSoFar:
    """Continue from ``train_state.pt`` (model, optimizer, scaler and log restored), or start a
    fresh run by writing its ``config.yaml``."""
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = read_train_state(state_path, digest=digest, epochs=trainer.config.epochs, device=trainer.device)
        restore_train_state(state, state_path, trainer.model, trainer.optimizer, trainer.scaler)
        start_epoch = int(state["epoch"])
        train_time = float(state["train_time_s"])
        return _RunSoFar(read_resumed_log(out, start_epoch), start_epoch, train_time)
    with _keeping(f"nothing was trained yet; {RETRY_HINT}"):
        atomic_write_text(out / CONFIG_FILE, dump_yaml(config_to_dict(trainer.config)))
    return _RunSoFar([], 0, 0.0)


def _run_epoch(trainer: _Trainer, epoch: int, so_far: _RunSoFar, progress: TrainProgress) -> dict[str, Any]:
    """Train and test epoch ``epoch`` (0-based); its log row is returned and added to ``so_far``."""
    started = time.perf_counter()
    sums = _train_epoch(trainer, epoch, progress)
    evaluation = _evaluate_epoch(trainer)
    elapsed = time.perf_counter() - started
    so_far.train_time += elapsed
    row = _epoch_row(epoch, trainer.optimizer.param_groups[0]["lr"], sums, evaluation, elapsed)
    so_far.rows.append(row)
    return row


def _train_epoch(trainer: _Trainer, epoch: int, progress: TrainProgress) -> _EpochSums:
    """The optimisation steps of one epoch; its order, augmentation and dropout come from (seed, epoch)."""
    config = trainer.config
    generator = derived_generator(config.seed, 1, epoch)
    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))  # dropout etc.
    order = torch.randperm(len(trainer.data.train_set), generator=generator)
    trainer.model.train()
    sums = _EpochSums.zeros(trainer.device)
    batches = iterate_batches(
        trainer.data.train_set,
        config.batch_size,
        order=order,
        drop_last=trainer.drop_last,
        num_workers=config.num_workers,
        device=trainer.device,
    )
    for step, batch in enumerate(batches):
        _set_learning_rate(trainer, epoch * trainer.steps_per_epoch + step)
        images = augment_batch(batch.images, trainer.augment, generator)
        output, result = training_step(
            trainer.model,
            trainer.loss_fn,
            trainer.optimizer,
            trainer.scaler,
            images,
            batch.labels,
            device=trainer.device,
            amp_dtype=trainer.amp_dtype,
        )
        sums.add(output, result, batch.labels)
        if (step + 1) % _CHECK_FINITE_EVERY == 0 or step + 1 == trainer.steps_per_epoch:
            sums.check_finite(epoch=epoch, step=step)
        progress.on_step(epoch=epoch + 1, step=step + 1)
    return sums


def _set_learning_rate(trainer: _Trainer, global_step: int) -> None:
    factor = lr_factor(trainer.config, global_step, trainer.steps_per_epoch)
    for group, base_lr in zip(trainer.optimizer.param_groups, trainer.base_lrs):
        group["lr"] = base_lr * factor


def _evaluate_epoch(trainer: _Trainer) -> _Evaluation:
    """Test accuracy and loss, and the memorisation of the flipped labels where there are any."""
    config, data = trainer.config, trainer.data
    test_acc, test_loss = accuracy_and_loss(
        trainer.model,
        data.test_set,
        batch_size=config.eval_batch_size,
        device=trainer.device,
        amp_dtype=trainer.amp_dtype,
    )
    memorization = (
        memorization_rate(
            trainer.model,
            data.train_set,
            data.flipped,
            batch_size=config.eval_batch_size,
            device=trainer.device,
            amp_dtype=trainer.amp_dtype,
        )
        if data.flipped is not None
        else None
    )
    return _Evaluation(test_acc, test_loss, memorization)


def _epoch_row(epoch: int, lr: float, sums: _EpochSums, evaluation: _Evaluation, elapsed: float) -> dict[str, Any]:
    """The ``train_log.csv`` row of epoch ``epoch`` (0-based)."""
    seen = sums.seen
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    row.update({name: float(value) / seen for name, value in sums.totals.items()})
    row.update(
        {
            "train_acc": float(sums.correct) / seen,
            "test_acc": evaluation.test_acc,
            "test_loss": evaluation.test_loss,
            **({} if evaluation.memorization is None else {"memorization": evaluation.memorization}),
            "epoch_time_s": elapsed,
            "images_per_s": seen / elapsed,
        }
    )
    return row


def _save_epoch(
    trainer: _Trainer, out: Path, digest: str, epoch: int, rows: Sequence[dict[str, Any]], train_time: float
) -> None:
    """``train_log.csv`` and the resumable ``train_state.pt`` after epoch ``epoch`` (0-based)."""
    state = {
        "config_digest": digest,
        "epoch": epoch + 1,
        "train_time_s": train_time,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
    }
    # the log first: a state is only ever saved with the log rows it resumes from
    with _keeping(_kept_after(epoch)):
        _write_log(out, rows)
        atomic_torch_save(state, out / STATE_FILE)


def _run_meta(trainer: _Trainer, digest: str, so_far: _RunSoFar, extra_meta: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's meta: what was trained, how, where, and the last epoch's metrics."""
    config, info, amp_dtype = trainer.config, trainer.data.info, trainer.amp_dtype
    return {
        "dataset": info.to_dict(),
        "data": config_to_dict(config.data),
        "input_shape": list(info.input_shape),
        "model_kwargs": dict(config.model.options),
        "loss": {"name": config.loss.name, **trainer.loss_fn.params()},
        "seed": config.seed,
        "epochs": config.epochs,
        "config": config_to_dict(config),
        "config_digest": digest,
        "device": str(trainer.device),
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "none",
        "metrics": _final_metrics(so_far.rows[-1], so_far.train_time),
        "versions": library_versions(),
        "noise": trainer.data.noise_meta,
        **(extra_meta or {}),
    }


def _final_metrics(last: Mapping[str, Any], train_time: float) -> dict[str, Any]:
    """The metrics of a finished run: the last epoch's log row and the total training time."""
    return {
        "test_acc": last["test_acc"],
        "test_loss": last["test_loss"],
        "train_acc": last["train_acc"],
        "train_loss": last["loss"],
        **({} if "memorization" not in last else {"memorization": last["memorization"]}),
        "loss_parts": {k: v for k, v in last.items() if k not in LOG_COLUMNS},
        "train_time_s": train_time,
    }


def _write_finished_run(
    out: Path,
    model: CAMClassifier,
    meta: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    *,
    digest: str,
    epochs: int,
) -> pd.DataFrame:
    """``model.pt``, the final ``train_log.csv`` and, last, ``complete.json``; returns the log."""
    # a failure here loses no training: the last epoch's state is still there to finish from
    with _keeping(
        f"{STATE_FILE} of the last epoch ({epochs}) is intact; free space and run the same "
        "command to write the checkpoint without training again"
    ):
        save_checkpoint(out / MODEL_FILE, model, meta)
        log = _write_log(out, rows)
        atomic_write_text(
            out / COMPLETE_FILE,
            json.dumps({"config_digest": digest, "epochs": epochs, "metrics": meta["metrics"]}, indent=2),
        )
    return log
