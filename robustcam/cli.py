"""The ``robustcam`` command: train (and, as they land, eval, report, sweep, cam, quickstart).

The only module besides ``report/`` that prints. Library errors caused by bad
input (``RobustcamError``, ``ValueError``) become one red line and exit code 2;
set ``ROBUSTCAM_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from robustcam.errors import RobustcamError
from robustcam.train import LOG_COLUMNS, TrainProgress

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="robustcam",
    help="Robustness evaluation for CAM-shaping losses: train checkpoints, attack them, relate robustness "
    "to negative-CAM peaks.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        import robustcam

        console.print(f"robustcam {robustcam.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Robustness evaluation for CAM-shaping losses.

    Train checkpoints with cross-entropy, focal, CAM-loss or HNC; attack them; relate robustness to
    negative-CAM peaks. Errors in the input are one line and exit code 2 (ROBUSTCAM_DEBUG=1 shows tracebacks).
    """


def _choices(names: list[str]) -> str:
    return ", ".join(names)


def _lazy_names() -> dict[str, str]:
    from robustcam.data import list_datasets
    from robustcam.losses import list_losses
    from robustcam.models import list_models

    return {"datasets": _choices(list_datasets()), "archs": _choices(list_models()), "losses": _choices(list_losses())}


_NAMES = _lazy_names()


# --------------------------------------------------------------------------- train


class RichTrainProgress(TrainProgress):
    """Renders trainer events: a bar per epoch and one summary line per finished epoch."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.epochs = 0
        self.steps = 0

    def on_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int, device: str) -> None:
        self.epochs, self.steps = epochs, steps_per_epoch
        if start_epoch:
            console.print(f"[yellow]resuming after epoch {start_epoch}/{epochs}[/]")
        console.print(f"training on [bold]{device}[/] for {epochs} epochs of {steps_per_epoch} steps")

    def on_step(self, *, epoch: int, step: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=self.steps)
        self.progress.update(self.task, completed=step, description=f"epoch {epoch}/{self.epochs}")

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        parts = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in LOG_COLUMNS)
        self.progress.console.print(
            f"epoch {row['epoch']}/{self.epochs}  {parts}  train {100 * row['train_acc']:.1f}%  "
            f"test {100 * row['test_acc']:.1f}%  {row['images_per_s']:,.0f} img/s",
            soft_wrap=True,
        )
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML train config (see configs/).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set loss.hnc.k=3 (repeatable).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help=f"Dataset: {_NAMES['datasets']}.")] = None,
    arch: Annotated[str | None, typer.Option(help=f"Architecture: {_NAMES['archs']}.")] = None,
    loss: Annotated[str | None, typer.Option(help=f"Loss: {_NAMES['losses']}.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 15).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 64).")] = None,
    lr: Annotated[float | None, typer.Option(help="Base learning rate (default 0.05).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation, order and augmentation.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    amp: Annotated[str | None, typer.Option(help="Mixed precision on CUDA: auto, none, bf16, fp16.")] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Where file-backed datasets live (default $ROBUSTCAM_DATA or ~/.robustcam/data).")
    ] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a missing torchvision dataset.")] = False,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<dataset>-<arch>-<loss>-s<seed>).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume an interrupted run in --out; reuse a finished one.")] = True,
) -> None:
    """Train one checkpoint: writes model.pt, config.yaml (resolved) and train_log.csv to --out."""
    from robustcam.config import load_train_config
    from robustcam.train import train as run_training

    flags = {
        "data.name": dataset,
        "model.arch": arch,
        "loss.name": loss,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer.lr": lr,
        "seed": seed,
        "device": device,
        "amp": amp,
        "data.root": str(data_root) if data_root is not None else None,
        "data.download": True if download else None,
    }
    settings = [f"{key}={value}" for key, value in flags.items() if value is not None]
    cfg = load_train_config(config, [*settings, *(overrides or [])])
    run_dir = out or Path("runs") / f"{cfg.data.name}-{cfg.model.arch}-{cfg.loss.name}-s{cfg.seed}"
    console.print(f"[bold]robustcam train[/] -> {run_dir}")
    try:
        with _progress() as progress:
            result = run_training(cfg, run_dir, resume=resume, progress=RichTrainProgress(progress))
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted: finished epochs are saved in {run_dir}; run the same command to resume[/]")
        raise typer.Exit(130) from None
    if result.resumed_from_epoch == cfg.epochs:
        console.print(f"[green]{run_dir} already holds this finished run; nothing to do[/]")

    metrics = result.meta["metrics"]
    table = Table(title=f"{cfg.loss.name} on {cfg.data.name} ({cfg.model.arch}, {cfg.epochs} epochs)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("train accuracy", f"{100 * metrics['train_acc']:.2f}%")
    table.add_row("test accuracy", f"{100 * metrics['test_acc']:.2f}%")
    table.add_row("test cross-entropy", f"{metrics['test_loss']:.4f}")
    for name, value in metrics["loss_parts"].items():
        table.add_row(f"train {name}", f"{value:.4f}")
    table.add_row("training time", f"{metrics['train_time_s']:.1f} s")
    console.print(table)
    console.print(f"saved {run_dir / 'model.pt'}, {run_dir / 'config.yaml'}, {run_dir / 'train_log.csv'}")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors with exit code 2 for bad input."""
    try:
        app(args=argv)  # standalone: click reports usage errors itself (exit code 2)
    except (RobustcamError, ValueError, TypeError, FileNotFoundError) as error:
        if os.environ.get("ROBUSTCAM_DEBUG"):
            raise
        message = " ".join(str(error).split())
        err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
