"""The training loop: one config in, one run directory out.

A run directory holds the resolved ``config.yaml`` (written first), one row per
epoch in ``train_log.csv`` (rewritten atomically after every epoch), a resumable
``train_state.pt`` while training is under way, and at the end ``model.pt`` and
the completion marker ``complete.json`` (written last). An interrupted run is
resumed from its last finished epoch and draws exactly the batches and
augmentations an uninterrupted run would have drawn, because every epoch's
randomness is derived from (seed, epoch) rather than from a global generator.

Library code only: progress is reported through a ``TrainProgress`` object;
the CLI renders it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from robustcam.checkpoint import load_checkpoint, save_checkpoint
from robustcam.config import TrainConfig, config_to_dict, dump_yaml
from robustcam.data import ImageDataset, load_dataset
from robustcam.data.batches import iterate_batches, num_batches
from robustcam.errors import NonFiniteLossError, RobustcamError
from robustcam.io import atomic_torch_save, atomic_write_text
from robustcam.layout import config_digest as layout_digest
from robustcam.losses import Loss, LossResult, build_loss
from robustcam.models import CAMClassifier, ModelOutput, build_model
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

CONFIG_FILE = "config.yaml"
LOG_FILE = "train_log.csv"
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
COMPLETE_FILE = "complete.json"

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


def load_completed_run(out_dir: Path, digest: str | None = None) -> TrainResult | None:
    """The finished run in ``out_dir``, or None if there is none (or it was trained from another config)."""
    marker = out_dir / COMPLETE_FILE
    if not marker.is_file() or not (out_dir / MODEL_FILE).is_file():
        return None
    info = json.loads(marker.read_text())
    if digest is not None and info.get("config_digest") != digest:
        return None
    model, meta = load_checkpoint(out_dir / MODEL_FILE)
    log = pd.read_csv(out_dir / LOG_FILE) if (out_dir / LOG_FILE).is_file() else pd.DataFrame()
    return TrainResult(model, meta, log, out_dir, resumed_from_epoch=int(meta.get("epochs", 0)))


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
    """
    progress = progress or TrainProgress()
    out = Path(out_dir)
    labels = torch.as_tensor(train_labels, dtype=torch.long) if train_labels is not None else None
    digest = config_digest(config, labels)

    existing = (out / COMPLETE_FILE).exists() or (out / STATE_FILE).exists()
    if existing and not resume:
        raise RobustcamError(f"{out} already holds a run; choose another --out or resume it")
    if resume and (done := load_completed_run(out, digest)) is not None:
        return done
    if (out / COMPLETE_FILE).exists():
        raise RobustcamError(f"{out} holds a finished run with a different config; choose another --out")

    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.amp, device)
    set_deterministic(config.deterministic)
    seed_everything(config.seed)

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
        noise_seed = config.noise.seed if config.noise.seed is not None else config.seed
        coarse = train_set.fine_to_coarse() if hasattr(train_set, "fine_to_coarse") else None
        noisy = spec.apply(
            train_set.targets, num_classes=info.num_classes, dataset=info.name, coarse_labels=coarse, seed=noise_seed
        )
        labels, flipped = noisy.labels, noisy.flipped
        noise_meta = {**spec.to_dict(), "seed": noise_seed, "realized_rate": noisy.realized_rate}
    if labels is not None:
        train_set = train_set.with_targets(labels)

    loss_fn: Loss = build_loss(config.loss.name, **config.loss.params())
    loss_fn.check_num_classes(info.num_classes)
    torch.manual_seed(config.seed)  # model initialisation depends on the seed only
    model = build_model(
        config.model.arch, info.num_classes, info.in_channels, mean=info.mean, std=info.std, **config.model.options
    ).to(device)
    loss_fn.bind(model)
    optimizer = build_optimizer(model, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    augment = resolve_augment(config.augment, info.name)
    steps_per_epoch = num_batches(len(train_set), config.batch_size, drop_last=len(train_set) > config.batch_size)
    drop_last = len(train_set) > config.batch_size

    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    start_epoch = 0
    train_time = 0.0
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("config_digest") != digest:
            raise RobustcamError(
                f"{out} holds an unfinished run with a different config; choose another --out or delete {state_path}"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        train_time = float(state["train_time_s"])
        rows = pd.read_csv(out / LOG_FILE).to_dict("records")[:start_epoch]
    else:
        atomic_write_text(out / CONFIG_FILE, dump_yaml(config_to_dict(config)))

    progress.on_start(
        epochs=config.epochs, start_epoch=start_epoch, steps_per_epoch=steps_per_epoch, device=str(device)
    )
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        generator = derived_generator(config.seed, 1, epoch)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))  # dropout etc.
        order = torch.randperm(len(train_set), generator=generator)
        model.train()
        totals: dict[str, Tensor] = {}
        bad = torch.zeros((), dtype=torch.bool, device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        batches = iterate_batches(
            train_set,
            config.batch_size,
            order=order,
            drop_last=drop_last,
            num_workers=config.num_workers,
            device=device,
        )
        for step, batch in enumerate(batches):
            global_step = epoch * steps_per_epoch + step
            factor = lr_factor(config, global_step, steps_per_epoch)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * factor
            images = augment_batch(batch.images, augment, generator)
            output, result = training_step(
                model, loss_fn, optimizer, scaler, images, batch.labels, device=device, amp_dtype=amp_dtype
            )

            n = len(batch.labels)
            seen += n
            bad |= ~torch.isfinite(result.total.detach())
            totals["loss"] = totals.get("loss", 0) + result.total.detach() * n
            for name, value in result.parts.items():
                totals[name] = totals.get(name, 0) + value * n
            correct += (output.logits.detach().argmax(1) == batch.labels).sum()
            check_now = (step + 1) % _CHECK_FINITE_EVERY == 0 or step + 1 == steps_per_epoch
            if check_now and bool(bad):
                parts = ", ".join(f"{k}={float(v) / seen:.4g}" for k, v in totals.items())
                raise NonFiniteLossError(
                    f"loss became NaN/inf in epoch {epoch + 1} by step {step + 1} ({parts}); "
                    "lower the learning rate (optimizer.lr) or the loss weight"
                )
            progress.on_step(epoch=epoch + 1, step=step + 1)

        test_acc, test_loss = accuracy_and_loss(
            model, test_set, batch_size=config.eval_batch_size, device=device, amp_dtype=amp_dtype
        )
        memorization = (
            memorization_rate(
                model, train_set, flipped, batch_size=config.eval_batch_size, device=device, amp_dtype=amp_dtype
            )
            if flipped is not None
            else None
        )
        elapsed = time.perf_counter() - started
        train_time += elapsed
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update({name: float(value) / seen for name, value in totals.items()})
        row.update(
            {
                "train_acc": float(correct) / seen,
                "test_acc": test_acc,
                "test_loss": test_loss,
                **({} if memorization is None else {"memorization": memorization}),
                "epoch_time_s": elapsed,
                "images_per_s": seen / elapsed,
            }
        )
        rows.append(row)
        _write_log(out, rows)
        state = {
            "config_digest": digest,
            "epoch": epoch + 1,
            "train_time_s": train_time,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
        }
        atomic_torch_save(state, state_path)
        progress.on_epoch_end(row)

    last = rows[-1]
    meta: dict[str, Any] = {
        "dataset": info.to_dict(),
        "data": config_to_dict(config.data),
        "input_shape": list(info.input_shape),
        "model_kwargs": dict(config.model.options),
        "loss": {"name": config.loss.name, **loss_fn.params()},
        "seed": config.seed,
        "epochs": config.epochs,
        "config": config_to_dict(config),
        "config_digest": digest,
        "device": str(device),
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "none",
        "metrics": {
            "test_acc": last["test_acc"],
            "test_loss": last["test_loss"],
            "train_acc": last["train_acc"],
            "train_loss": last["loss"],
            **({} if "memorization" not in last else {"memorization": last["memorization"]}),
            "loss_parts": {k: v for k, v in last.items() if k not in LOG_COLUMNS},
            "train_time_s": train_time,
        },
        "versions": library_versions(),
        "noise": noise_meta,
        **(extra_meta or {}),
    }
    save_checkpoint(out / MODEL_FILE, model, meta)
    log = _write_log(out, rows)
    atomic_write_text(
        out / COMPLETE_FILE,
        json.dumps({"config_digest": digest, "epochs": config.epochs, "metrics": meta["metrics"]}, indent=2),
    )
    state_path.unlink(missing_ok=True)
    return TrainResult(model.eval(), meta, log, out, resumed_from_epoch=start_epoch)
