"""The ``robustcam`` command: train, eval, report, cam, sweep and quickstart.

The only module besides ``report/`` that prints. Bad input is one red line on
stderr and exit code 2: the suite's own errors (``RobustcamError``) and the
command line's usage errors (a missing option, ``--epochs ten``), each naming the
option or key and the bad value. Anything else is a bug: its traceback and one line
asking for a report, exit code 1. ``ROBUSTCAM_DEBUG=1`` shows every traceback.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from robustcam.errors import InputError, RobustcamError, describe_invalid
from robustcam.evaluate import EvalProgress, EvalResult
from robustcam.train import LOG_COLUMNS, TrainProgress

if TYPE_CHECKING:
    from robustcam.config import FlagSetting

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
    from robustcam.attacks import list_attacks
    from robustcam.data import list_datasets
    from robustcam.losses import list_losses
    from robustcam.models import list_models

    return {
        "datasets": _choices(list_datasets()),
        "archs": _choices(list_models()),
        "losses": _choices(list_losses()),
        "attacks": _choices(list_attacks()),
    }


_NAMES = _lazy_names()


def _flag_settings(flags: dict[str, tuple[str, Any]]) -> list[FlagSetting]:
    """The flags the user gave (value not None) as config settings that remember their flag."""
    from robustcam.config import FlagSetting

    return [FlagSetting(flag, key, value) for flag, (key, value) in flags.items() if value is not None]


def _comma_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _attack_param(item: str) -> FlagSetting:
    """``--attack-param cw.c=0.5`` as the setting ``attack_params.cw.c`` (the value read as YAML)."""
    from robustcam.config import FlagSetting, parse_override

    key, sep, value = item.partition("=")
    if not sep or "." not in key or not value.strip():
        raise InputError(f"--attack-param expects attack.param=value (e.g. cw.c=0.5), got {item!r}")
    path, parsed = parse_override(f"attack_params.{key.strip()}={value}")
    return FlagSetting(f"--attack-param {key.strip()}", ".".join(path), parsed)


def _check_folder(flag: str, path: Path) -> None:
    """An output folder: it may not exist yet, but it may not be a file."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag}: {path} is a file, not a folder")


def _check_image_file(flag: str, path: Path) -> None:
    """A figure file: its suffix is a format matplotlib writes, and it is not a folder."""
    from matplotlib.figure import Figure

    formats = sorted(Figure().canvas.get_supported_filetypes())
    if path.is_dir() or path.suffix.lower().lstrip(".") not in formats:
        raise InputError(
            f"{flag}: {str(path)!r} is not an image file name; end it in one of "
            f"{', '.join('.' + f for f in formats)} (e.g. cams.png)"
        )


def _check_cam_topk(topk: int | None, num_classes: int) -> None:
    # known only once the checkpoint says how many classes there are
    if topk is not None and topk >= num_classes:
        raise InputError(
            f"cam_topk: {topk} must be smaller than the number of classes ({num_classes}); "
            f"choose it in [1, {num_classes - 1}]"
        )


def _check_dataset_name(name: str | None) -> None:
    """``--data`` of eval and cam: a registered dataset (when given), checked before any loading."""
    from robustcam.data import DATASETS

    if name is not None:
        with _flag("--data"):
            DATASETS.get(name)


@contextmanager
def _flag(flag: str) -> Iterator[None]:
    """Name ``flag`` in an error about its value (the library does not know which flag gave it)."""
    try:
        yield
    except RobustcamError as error:
        raise InputError(f"{flag}: {error}") from None


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
        memorized = f"  memorized {100 * row['memorization']:.1f}%" if "memorization" in row else ""
        self.progress.console.print(
            f"epoch {row['epoch']}/{self.epochs}  {parts}  train {100 * row['train_acc']:.1f}%  "
            f"test {100 * row['test_acc']:.1f}%{memorized}  {row['images_per_s']:,.0f} img/s",
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
        Path | None,
        typer.Option(help="Where file-backed datasets live (default $ROBUSTCAM_DATA or ~/.robustcam/data)."),
    ] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a missing torchvision dataset.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<dataset>-<arch>-<loss>-s<seed>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Resume an interrupted run in --out; reuse a finished one.")] = True,
) -> None:
    """Train one checkpoint: writes model.pt, config.yaml (resolved) and train_log.csv to --out."""
    from robustcam.config import load_train_config
    from robustcam.runtime import resolve_amp, resolve_device
    from robustcam.train import train as run_training

    flags = _flag_settings(
        {
            "--dataset": ("data.name", dataset),
            "--arch": ("model.arch", arch),
            "--loss": ("loss.name", loss),
            "--epochs": ("epochs", epochs),
            "--batch-size": ("batch_size", batch_size),
            "--lr": ("optimizer.lr", lr),
            "--seed": ("seed", seed),
            "--device": ("device", device),
            "--amp": ("amp", amp),
            "--data-root": ("data.root", None if data_root is None else str(data_root)),
            "--download": ("data.download", True if download else None),
        }
    )
    cfg = load_train_config(config, overrides or [], flags=flags)
    resolve_amp(cfg.amp, resolve_device(cfg.device))
    run_dir = out or Path("runs") / f"{cfg.data.name}-{cfg.model.arch}-{cfg.loss.name}-s{cfg.seed}"
    _check_folder("--out", run_dir)
    console.print(f"[bold]robustcam train[/] -> {run_dir}")
    try:
        with _progress() as progress:
            result = run_training(cfg, run_dir, resume=resume, progress=RichTrainProgress(progress))
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted: finished epochs are saved in {run_dir}; run the same command to resume[/]"
        )
        raise typer.Exit(130) from None
    if result.resumed_from_epoch == cfg.epochs:
        console.print(f"[green]{run_dir} already holds this finished run; nothing to do[/]")

    metrics = result.meta["metrics"]
    table = Table(title=f"{cfg.loss.name} on {cfg.data.name} ({cfg.model.arch}, {cfg.epochs} epochs)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(
        "train accuracy" + (" (noisy labels)" if result.meta.get("noise") else ""), f"{100 * metrics['train_acc']:.2f}%"
    )
    table.add_row("test accuracy", f"{100 * metrics['test_acc']:.2f}%")
    table.add_row("test cross-entropy", f"{metrics['test_loss']:.4f}")
    noise = result.meta.get("noise")
    if noise:
        table.add_row(
            "label noise", f"{noise['kind']} {noise.get('rate') or ''} (realised {100 * noise['realized_rate']:.1f}%)"
        )
        table.add_row("memorized flipped labels", f"{100 * metrics['memorization']:.1f}%")
    for name, value in metrics["loss_parts"].items():
        table.add_row(f"train {name}", f"{value:.4f}")
    table.add_row("training time", f"{metrics['train_time_s']:.1f} s")
    console.print(table)
    console.print(f"saved {run_dir / 'model.pt'}, {run_dir / 'config.yaml'}, {run_dir / 'train_log.csv'}")


# --------------------------------------------------------------------------- eval


class RichEvalProgress(EvalProgress):
    """A progress bar per job: the clean pass, then one per attack and backend."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def on_job_start(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(name, total=total)

    def on_job_resume(self, name: str, completed: int) -> None:
        self.progress.update(self.tasks[name], completed=completed, description=f"{name} (resumed at {completed})")

    def on_job_advance(self, name: str, completed: int) -> None:
        self.progress.update(self.tasks[name], completed=completed)

    def on_job_end(self, name: str) -> None:
        self.progress.remove_task(self.tasks.pop(name))


def _checkpoint_name(path: Path) -> str:
    return path.parent.name if path.name == "model.pt" and path.parent.name else path.stem


def _pct(value: float) -> str:
    return "" if math.isnan(value) else f"{100 * value:.1f}"


def _render_eval(result: EvalResult, title: str) -> None:
    """The robust-accuracy matrix, the per-attack details, the library agreement and the flags."""
    attacked = result.summary[~result.summary["attack"].isin(["clean"])]
    console.print(_robust_matrix(attacked, title))
    console.print(_attack_details(result.summary, attacked))
    if not result.agreement.empty:
        console.print(_agreement_table(result.agreement))
    for flag in result.flags:
        console.print(f"[yellow]warning ({flag.check}):[/] {flag.message}", highlight=False)


def _robust_matrix(attacked: Any, title: str) -> Table:
    from robustcam.attacks import format_eps

    budgets = attacked[["norm", "eps"]].drop_duplicates().sort_values(["norm", "eps"], ascending=[False, True])
    matrix = Table(title=title, title_justify="left")
    matrix.add_column("robust accuracy (%)")
    for row in budgets.itertuples():
        matrix.add_column(f"{row.norm} {format_eps(row.eps, row.norm)}", justify="right")
    for (attack, backend), group in attacked.groupby(["attack", "backend"], sort=False):
        values = {(r.norm, r.eps): r.robust_acc for r in group.itertuples()}
        label = "worst case (per sample)" if attack == "worst" else f"{attack} ({backend})"
        style = "bold" if attack == "worst" else None
        matrix.add_row(
            label, *[_pct(values.get((b.norm, b.eps), float("nan"))) for b in budgets.itertuples()], style=style
        )
    return matrix


_BACKEND_SHORT = {"torchattacks": "ta", "foolbox": "fb", "autoattack": "aa", "native": "nat"}


def _attack_details(summary: Any, attacked: Any) -> Table:
    """One row per (attack, backend, eps), readable at 80 columns: short headers, the backend as a
    short suffix of the attack (``pgd/nat``), a legend below."""
    from robustcam.attacks import format_eps

    several_backends = attacked.loc[attacked["attack"] != "worst", "backend"].nunique() > 1
    rows = summary[~summary["attack"].isin(["clean", "worst"])]
    legend = "succ: attack success among attacked; med norm: median norm of the successful examples; n: attacked"
    if several_backends:
        used = [b for b in _BACKEND_SHORT if b in set(rows["backend"])]
        legend += "; " + ", ".join(f"{_BACKEND_SHORT[b]}: {b}" for b in used)
    details = Table(title="per attack and eps", title_justify="left", caption=legend, caption_justify="left")
    for column in ("attack", "eps", "robust %", "succ %", "med norm", "n", "img/s"):
        details.add_column(column, justify="left" if column == "attack" else "right", no_wrap=column == "attack")
    for row in rows.itertuples():
        name = f"{row.attack}/{_BACKEND_SHORT.get(row.backend, row.backend)}" if several_backends else row.attack
        details.add_row(
            name,
            format_eps(row.eps, row.norm),
            _pct(row.robust_acc),
            _pct(row.attack_success_rate),
            "" if row.median_norm != row.median_norm else f"{row.median_norm:.4f}",
            str(row.n_attacked),
            "" if row.images_per_s != row.images_per_s else f"{row.images_per_s:,.0f}",
        )
    return details


def _agreement_table(agreement_rows: Any) -> Table:
    from robustcam.attacks import format_eps

    agreement = Table(title="backends compared (a vs b)", title_justify="left")
    for column in ("attack", "eps", "a vs b", "a %", "b %", "a - b (points)", "same verdict %"):
        agreement.add_column(column, justify="left" if column in ("attack", "a vs b") else "right")
    for row in agreement_rows.itertuples():
        agreement.add_row(
            row.attack,
            format_eps(row.eps, row.norm),
            f"{row.backend_a} vs {row.backend_b}",
            _pct(row.robust_acc_a),
            _pct(row.robust_acc_b),
            f"{row.difference_points:+.1f}",
            _pct(row.agreement_rate),
        )
    return agreement


def _backend_list(value: str | None) -> list[str] | None:
    """``--backend``: a comma list of registered backends ('both': torchattacks and foolbox)."""
    from robustcam.attacks import BACKENDS

    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    names = [part for name in names for part in (["torchattacks", "foolbox"] if name == "both" else [name])]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise InputError(
            f"--backend: unknown backend {', '.join(map(repr, unknown)) or repr(value)}; "
            f"valid: {', '.join(BACKENDS.names())} (a comma list), or both"
        )
    return list(dict.fromkeys(names))


_ARCH_HELP = (
    "Architecture of a bare state_dict: a registered name, timm:<model name> (the timm extra), or a model "
    "factory module.path:function / path/to/file.py:function (runs that code)."
)
_MODEL_KWARGS_HELP = "The architecture's options as a JSON object, e.g. '{\"width\": 2}'."
_NORMALIZATION_HELP = (
    "Input statistics preset: imagenet, cifar10, cifar100, mnist or none (default: the checkpoint's own, else "
    "its architecture's, else the dataset's, else ImageNet's)."
)


_CAM_LAYER_HELP = (
    "Grad-CAM models (heads that are not GAP + linear: ViT, ConvNeXt, MobileNetV3, VGG): the layer whose "
    "maps the CAM statistics use, e.g. blocks.10 (default: the model family's last feature maps)."
)


def _reading_flags(
    model_kwargs: str | None, normalization: str | None, mean: str | None, std: str | None, cam_layer: str | None
) -> list[FlagSetting]:
    """The flags that say how to read a checkpoint (``CheckpointReading``) as config settings."""
    return _flag_settings({
        "--model-kwargs": ("model_kwargs", model_kwargs), "--normalization": ("normalization", normalization),
        "--mean": ("mean", _comma_list(mean)), "--std": ("std", _comma_list(std)),
        "--cam-layer": ("cam_layer", cam_layer),
    })  # fmt: skip


def _normalization_line(meta: dict[str, Any]) -> str:
    """Which statistics the model normalises with, where they came from, how to change them."""
    record = meta.get("normalization") or {}
    return escape(
        f"normalisation: {record.get('name')} mean={record.get('mean')} std={record.get('std')} "
        f"({record.get('origin')}); {record.get('change')}"
    )


@app.command("eval")
def eval_command(
    ckpt: Annotated[
        Path, typer.Option(help="Checkpoint: model.pt, a run directory, a bare state_dict or .safetensors.")
    ],
    attacks: Annotated[
        str | None, typer.Option(help=f"Comma-separated attacks: {_NAMES['attacks']} (default pgd).")
    ] = None,
    eps: Annotated[
        str | None, typer.Option(help="Linf budgets in pixel units (default 1/255,2/255,4/255,8/255).")
    ] = None,
    eps_l2: Annotated[str | None, typer.Option(help="L2 budgets for L2 attacks (default 0.25,0.5,1.0).")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Comma list of attack libraries: torchattacks, foolbox, native (robustcam's best-iterate "
            "PGD), autoattack (the authors' code); "
            "'both' = torchattacks,foolbox. Default: each attack's own (native for pgd and pgd_l2, "
            "the authors' for AutoAttack, else torchattacks)."
        ),
    ] = None,
    n: Annotated[int | None, typer.Option(help="Evaluate a seeded random subset of n samples (default all).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per attack call (default 256).")] = None,
    steps: Annotated[
        int | None, typer.Option(help="Steps of every iterative attack (pgd 10, cw 100 by default).")
    ] = None,
    attack_param: Annotated[
        list[str] | None, typer.Option(help="Attack parameter, e.g. cw.c=0.5 or pgd.step_factor=2 (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the sample subset and random starts (default 0).")] = None,
    cascade: Annotated[bool, typer.Option(help="Attack a larger eps only where a smaller one failed.")] = True,
    sanity: Annotated[bool, typer.Option(help="Run the gradient-masking and evaluation sanity checks.")] = True,
    cam_stats: Annotated[
        bool, typer.Option(help="Record negative-CAM statistics of every clean and adversarial example.")
    ] = True,
    save_adv: Annotated[
        bool, typer.Option("--save-adv", help="Also write the adversarial examples to --out/adv/.")
    ] = False,
    attack_amp: Annotated[
        str | None,
        typer.Option(
            help="Run the attack calls under autocast: none, bf16 or fp16 (default none: fp32, since half "
            "precision can mask gradients and overstate robustness; a flag says so when used)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Reuse the finished batches of an interrupted eval in --out (same config, checkpoint and data); "
            "--no-resume starts over."
        ),
    ] = True,
    arch: Annotated[str | None, typer.Option(help=_ARCH_HELP)] = None,
    num_classes: Annotated[int | None, typer.Option(min=2, help="Class count of a bare state_dict.")] = None,
    model_kwargs: Annotated[str | None, typer.Option(help=_MODEL_KWARGS_HELP)] = None,
    normalization: Annotated[str | None, typer.Option(help=_NORMALIZATION_HELP)] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel input mean, e.g. 0.4914,0.4822,0.4465.")] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel input std (with --mean), e.g. 0.247,0.2435.")] = None,
    cam_layer: Annotated[str | None, typer.Option(help=_CAM_LAYER_HELP)] = None,
    data: Annotated[
        str | None, typer.Option(help=f"Dataset (default: the checkpoint's): {_NAMES['datasets']}.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where file-backed datasets live.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a missing torchvision dataset.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML eval config (or a file with an eval: section).")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override an eval config key (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default reports/<checkpoint name>/).")] = None,
    robustbench_json: Annotated[
        Path | None,
        typer.Option(
            help="Also write a RobustBench model_info row (needs --attacks autoattack, or autoattack_l2, at a "
            "leaderboard threat model)."
        ),
    ] = None,
) -> None:
    """Attack one checkpoint with a matrix of attacks x eps x backends.

    Writes per_sample.csv, summary.csv and summary.json. A killed eval resumes: the same command
    again reuses the batches it finished (kept in --out/shards/ until the eval is done).
    """
    from robustcam.config import load_eval_config
    from robustcam.runs import eval_record, evaluate_into, load_for_evaluation
    from robustcam.runtime import resolve_attack_amp, resolve_device

    backends = _backend_list(backend)
    flags = _flag_settings(
        {
            "--attacks": ("attacks", _comma_list(attacks)),
            "--eps": ("eps", _comma_list(eps)),
            "--eps-l2": ("eps_l2", _comma_list(eps_l2)),
            "--backend": ("backends", backends),
            "--n": ("n", n),
            "--batch-size": ("batch_size", batch_size),
            "--steps": ("steps", steps),
            "--seed": ("seed", seed),
            "--device": ("device", device),
            "--no-cascade": ("cascade", None if cascade else False),
            "--no-sanity": ("sanity", None if sanity else False),
            "--no-cam-stats": ("cam_stats", None if cam_stats else False),
            "--save-adv": ("save_adv", True if save_adv else None),
            "--attack-amp": ("attack_amp", attack_amp),
        }
    )
    flags += _reading_flags(model_kwargs, normalization, mean, std, cam_layer)
    flags += [_attack_param(item) for item in attack_param or []]
    cfg = load_eval_config(config, overrides or [], flags=flags)
    _check_dataset_name(data)

    run_device = resolve_device(cfg.device)
    with _flag("--attack-amp"):
        resolve_attack_amp(cfg.attack_amp, run_device)  # refused before loading, not inside the progress bar
    model, meta, dataset, data_record = load_for_evaluation(
        ckpt,
        cfg,
        split=cfg.split,
        arch=arch,
        num_classes=num_classes,
        data=data,
        root=data_root,
        download=download,
        map_location=run_device,
    )
    data_name = data_record["name"]
    out_dir = out or Path("reports") / _checkpoint_name(ckpt)
    _check_folder("--out", out_dir)
    _check_cam_topk(cfg.cam_topk, model.num_classes)
    if robustbench_json is not None:  # refused before the attacks run, not after
        _check_robustbench_plan(cfg, data_name)
    _print_eval_header(ckpt, meta, cfg, f"{data_name}/{cfg.split}", run_device, model)
    record = eval_record(cfg, ckpt, meta, data_record)
    with _progress() as progress:
        result = evaluate_into(
            out_dir, model, dataset, cfg, record=record, progress=RichEvalProgress(progress), resume=resume
        )
    clean = f"n={result.meta['n_samples']}, clean accuracy {100 * result.meta['clean_accuracy']:.1f}%"
    _render_eval(result, f"{_checkpoint_name(ckpt)} on {data_name} ({clean})")
    console.print(f"saved {out_dir / 'per_sample.csv'}, {out_dir / 'summary.csv'}, {out_dir / 'summary.json'}")
    if robustbench_json is not None:
        _write_robustbench_row(robustbench_json, result, meta)


def _print_eval_header(ckpt: Path, meta: dict[str, Any], cfg: Any, data: str, device: Any, model: Any) -> None:
    """The checkpoint's warnings, what is attacked with what, the input normalisation and, for a
    Grad-CAM model, where its maps come from."""
    for warning in meta.get("warnings", []):
        console.print(f"[yellow]checkpoint:[/] {warning}", highlight=False)
    console.print(
        f"[bold]robustcam eval[/] {ckpt} ({meta.get('arch')}, {meta.get('loss', {}).get('name', 'unknown loss')}) "
        f"on {data}: {', '.join(map(repr, cfg.build_attacks()))} with {', '.join(cfg.backends_used())} on {device}",
        highlight=False,
    )
    console.print(_normalization_line(meta), highlight=False)
    if cfg.cam_stats:
        _print_cam_line(model)


def _print_cam_line(model: Any) -> None:
    """Where a Grad-CAM model's CAM statistics come from (exact CAMs need no line)."""
    from robustcam.models.gradcam import GradCAMClassifier

    if isinstance(model, GradCAMClassifier):
        console.print(
            f"CAM statistics: signed Grad-CAM maps at layer {model.cam_layer!r} (its head is not GAP + linear; "
            "the true class and the top-k negatives by logit; --cam-layer chooses another layer)",
            highlight=False,
        )


def _check_robustbench_plan(cfg: Any, data_name: str) -> None:
    from robustcam.robustbench import check_robustbench

    budgets = cfg.budgets()
    planned = {
        "attacks": [{"name": a.name, "norm": a.norm, "params": a.params()} for a in cfg.build_attacks()],
        "backends": cfg.backends_used(),
        "eps": budgets["Linf"],
        "eps_l2": budgets["L2"],
        "dataset": {"name": data_name},
    }
    with _flag("--robustbench-json"):
        check_robustbench(planned)


def _write_robustbench_row(path: Path, result: Any, meta: dict[str, Any]) -> None:
    """The RobustBench row of a finished evaluation, refused in one line when it is not one."""
    import json

    from robustcam.io import atomic_write_text
    from robustcam.robustbench import robustbench_row

    with _flag("--robustbench-json"):
        row = robustbench_row(result.summary, result.meta, meta)
    atomic_write_text(path, json.dumps(row, indent=2) + "\n")
    console.print(f"saved {path} (RobustBench model_info row; fill in name, authors, link, venue)")


# --------------------------------------------------------------------------- report, cam, quickstart


@app.command("report")
def report_command(
    paths: Annotated[list[Path], typer.Argument(help="Eval directories, run directories, or folders holding them.")],
    out: Annotated[Path, typer.Option(help="Where models.csv, correlations.csv, the figures and report.md go.")] = Path(
        "reports/compare"
    ),
    primary: Annotated[
        list[str] | None,
        typer.Option(
            help="A primary hypothesis, statistic:target (e.g. clean_neg_peak_max:worst@8/255), corrected as "
            "its own family; repeatable. Default: clean_neg_homogeneity and clean_neg_peak_max against the "
            "worst case at the largest Linf eps (and test_acc when label noise differs)."
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs (BCa, from n = 10).")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the permutations, bootstraps and cross-validation folds.")] = 0,
) -> None:
    """Compare evaluated checkpoints from their saved records: the within-checkpoint comparison with the
    logit margin, model-level correlations with permutation p-values and q-values, AUROCs, figures."""
    from robustcam.report import load_evaluations, render_report, write_report

    _check_folder("--out", out)
    evaluations = load_evaluations(paths)
    files = write_report(evaluations, out, primary=primary or None, bootstrap=bootstrap, seed=seed)
    render_report(files, console)


@app.command("cam")
def cam_command(
    ckpt: Annotated[Path, typer.Option(help="Checkpoint: model.pt, a run directory, or a state_dict with --arch.")],
    out: Annotated[Path, typer.Option(help="PNG file for the CAM grid; a CSV of the statistics goes beside it.")],
    n: Annotated[int, typer.Option(min=1, help="Number of samples (seeded random choice unless --indices).")] = 8,
    indices: Annotated[str | None, typer.Option(help="Comma-separated dataset indices to show.")] = None,
    attack: Annotated[str, typer.Option(help=f"Attack: {_NAMES['attacks']}.")] = "pgd",
    eps: Annotated[str, typer.Option(help="Budget of the attack (Linf pixel units, or L2 for L2 attacks).")] = "4/255",
    backend: Annotated[
        str | None, typer.Option(help="torchattacks, foolbox, native or autoattack (default: the attack's own).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the sample choice and the random start.")] = 0,
    arch: Annotated[str | None, typer.Option(help=_ARCH_HELP)] = None,
    num_classes: Annotated[int | None, typer.Option(min=2, help="Class count of a bare state_dict.")] = None,
    model_kwargs: Annotated[str | None, typer.Option(help=_MODEL_KWARGS_HELP)] = None,
    normalization: Annotated[str | None, typer.Option(help=_NORMALIZATION_HELP)] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel input mean (with --std).")] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel input std (with --mean).")] = None,
    cam_layer: Annotated[str | None, typer.Option(help=_CAM_LAYER_HELP)] = None,
    data: Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where file-backed datasets live.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """CAM overlays (true class and top negative class) for chosen samples, clean and adversarial."""
    import torch

    from robustcam.attacks import build_attack, check_supported, format_eps, parse_eps_list
    from robustcam.config import check_device, load_checkpoint_reading
    from robustcam.evaluate import cam_examples, select_samples
    from robustcam.io import atomic_write_text
    from robustcam.report import plot_cam_grid
    from robustcam.runs import load_for_evaluation
    from robustcam.runtime import resolve_device

    with _flag("--device"):
        check_device(device)
    _check_dataset_name(data)
    _check_image_file("--out", out)
    with _flag("--attack"):
        attack_object = build_attack(attack)
    backend = backend or attack_object.default_backend()
    with _flag("--backend"):
        check_supported(attack_object, backend)
    with _flag("--eps"):
        (budget,) = parse_eps_list([eps], norm=attack_object.norm)
    reading = load_checkpoint_reading(_reading_flags(model_kwargs, normalization, mean, std, cam_layer))
    run_device = resolve_device(device)
    model, meta, dataset, _ = load_for_evaluation(
        ckpt,
        reading,
        split="test",
        arch=arch,
        num_classes=num_classes,
        data=data,
        root=data_root,
        map_location=run_device,
    )
    console.print(_normalization_line(meta), highlight=False)
    _print_cam_line(model)
    if indices:
        chosen = torch.tensor(_parse_indices(indices, len(dataset)))
    else:
        chosen = select_samples(len(dataset), n, seed)
    result = cam_examples(model, dataset, chosen, attack_object, backend=backend, eps=budget, seed=seed)
    label = format_eps(budget, attack_object.norm)
    title = f"{_checkpoint_name(ckpt)}: {attack} at {label} ({backend}); CAMs normalised for display"
    plot_cam_grid(result.examples, out, max_samples=len(chosen), title=title)
    atomic_write_text(out.with_suffix(".csv"), result.statistics.to_csv(index=False))
    console.print(_cam_statistics_table(result.statistics, title))
    console.print(f"saved {out} and {out.with_suffix('.csv')}")


def _cam_statistics_table(table: Any, title: str) -> Table:
    """Per sample: the predictions and the negative-CAM peak and homogeneity, clean and adversarial."""
    view = Table(title=title, title_justify="left")
    headers = ("index", "label", "clean pred", "adv pred", "neg peak clean", "neg peak adv", "homog. clean")
    for column in (*headers, "homog. adv"):
        view.add_column(column, justify="right")
    for row in table.itertuples():
        view.add_row(
            str(row.index),
            str(row.label),
            str(row.clean_pred),
            str(row.adv_pred),
            f"{row.clean_neg_peak_max:.3f}",
            f"{row.adv_neg_peak_max:.3f}",
            f"{row.clean_neg_homogeneity:.3f}",
            f"{row.adv_neg_homogeneity:.3f}",
        )
    return view


def _parse_indices(text: str, size: int) -> list[int]:
    """``--indices 3,17,42`` as dataset positions in [0, size)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--indices must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0 or max(values) >= size:
        raise InputError(f"--indices must be in [0, {size - 1}], got {text}")
    return values


QUICKSTART_LOSSES = ("ce", "focal", "cam_loss", "hnc")


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option(help="Folder for the four runs and the report.")] = Path("runs/quickstart"),
    n: Annotated[int, typer.Option(help="Test samples to attack per checkpoint.")] = 200,
    epochs: Annotated[int, typer.Option(help="Training epochs per loss.")] = 15,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """The end-to-end job on built-in data: train ce, focal, cam_loss and hnc on digits, attack each with
    fgsm, pgd and cw, and report. Resumable: finished runs and evaluations are reused."""
    import time

    from robustcam.config import load_eval_config, load_train_config
    from robustcam.report import load_evaluations, render_report, write_report
    from robustcam.runs import evaluate_run
    from robustcam.train import train as run_training

    began = time.perf_counter()
    _check_folder("--out", out)
    device_flag = _flag_settings({"--device": ("device", device)})
    eval_config = load_eval_config(
        None,
        [
            "attacks=[fgsm,pgd,cw]",
            "eps=[2/255,4/255,8/255]",
            "eps_l2=[0.25,0.5,1.0]",
            "attack_params.cw.steps=50",
        ],
        flags=[*device_flag, *_flag_settings({"--n": ("n", n)})],
    )
    for loss in QUICKSTART_LOSSES:
        config = load_train_config(
            None, [f"loss.name={loss}"], flags=[*device_flag, *_flag_settings({"--epochs": ("epochs", epochs)})]
        )
        run_dir = out / loss
        console.rule(f"[bold]{loss}[/]")
        with _progress() as progress:
            result = run_training(config, run_dir, progress=RichTrainProgress(progress))
        state = "reused" if result.resumed_from_epoch == epochs else "trained"
        console.print(f"{loss}: {state}, test accuracy {100 * result.meta['metrics']['test_acc']:.2f}%")
        with _progress() as progress:
            eval_dir, evaluation = evaluate_run(run_dir, eval_config, progress=RichEvalProgress(progress))
        if evaluation is None:
            console.print(f"{loss}: evaluation reused from {eval_dir}")
        else:
            for flag in evaluation.flags:
                console.print(f"[yellow]warning ({flag.check}):[/] {flag.message}", highlight=False)
    console.rule("[bold]report[/]")
    files = write_report(load_evaluations([out / loss for loss in QUICKSTART_LOSSES]), out / "report")
    render_report(files, console)
    console.print(f"quickstart finished in {time.perf_counter() - began:.0f} s; read {files.markdown}")


# --------------------------------------------------------------------------- sweep


def _executor_choices() -> str:
    from robustcam.sweep import list_executors  # the registry only: Ray is imported when chosen

    return _choices(list_executors())


@app.command("sweep")
def sweep_command(
    config: Annotated[Path, typer.Argument(help="Sweep YAML: base train config, grid, eval section.")],
    executor: Annotated[str, typer.Option(help=f"Where cells run: {_executor_choices()}.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (auto for the running cluster).")] = None,
    workers: Annotated[
        int,
        typer.Option(help="Cells in parallel processes, one GPU each (local: --workers 2 or more means processes)."),
    ] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder (default runs/<sweep name>); shared storage for Ray.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells, what is done and what is left.")] = False,
    report: Annotated[bool, typer.Option(help="Write the report over all cells at the end.")] = True,
) -> None:
    """Train and evaluate every cell of a grid (losses x noise x seeds ...); resumable, local or on Ray."""
    import time

    from robustcam.sweep import cell_status, load_sweep, resolve_executor

    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    with _flag("--executor"):
        executor = resolve_executor(executor, workers)  # an unknown name is an error listing the valid ones
    sweep, cells, default_out = load_sweep(config)
    root = out or default_out
    _check_folder("--out", root)
    statuses = [cell_status(root, cell) for cell in cells]
    if dry_run:
        _print_sweep_plan(f"{sweep.name or config.stem}: {len(cells)} cells in {root}", root, cells, statuses)
        return
    began = time.perf_counter()
    todo = len(cells) - statuses.count("done")
    where = f"{executor} ({workers} workers)" if executor == "processes" else executor
    console.print(f"[bold]robustcam sweep[/] {config}: {todo} of {len(cells)} cells to run with {where}")
    table_out = _run_sweep_cells(root, cells, todo, executor=executor, workers=workers, address=address)
    console.print(f"saved {root / 'sweep.csv'} ({len(table_out)} rows) in {time.perf_counter() - began:.1f} s")
    if report:
        _report_sweep(root, cells, sweep.report.primary)


def _print_sweep_plan(title: str, root: Path, cells: list[Any], statuses: Sequence[str]) -> None:
    """``--dry-run``: every cell with its status, the counts, and folders of an earlier grid."""
    from robustcam.sweep import stale_cell_dirs

    table = Table(title=title, title_justify="left")
    for column in ("#", "cell", "status"):
        table.add_column(column)
    for cell, status in zip(cells, statuses):
        colour = {"done": "green", "partial": "yellow", "todo": "white"}[status]
        table.add_row(str(cell.index), cell.label, f"[{colour}]{status}[/]")
    console.print(table)
    console.print(
        f"{statuses.count('done')} done, {statuses.count('partial')} partly done, {statuses.count('todo')} to do"
    )
    stale = stale_cell_dirs(root, cells)
    if stale:
        console.print(
            f"[yellow]{len(stale)} cell folder(s) of an earlier grid (not reported):[/] "
            + ", ".join(p.name for p in stale),
            highlight=False,
        )


def _run_sweep_cells(
    root: Path, cells: list[Any], todo: int, *, executor: str, workers: int, address: str | None
) -> Any:
    """Run the cells on ``executor``, one line as each finishes; Ctrl-C says what is kept."""
    from robustcam.sweep import cell_dir, run_cell, run_sweep

    finished = 0

    def on_cell_done(cell: Any, row: dict[str, Any]) -> None:  # called as each cell finishes, in any order
        nonlocal finished
        finished += 1
        console.print(
            f"[green]cell {finished}/{todo} done[/]: {cell.label}  test accuracy "
            f"{100 * row['test_acc']:.1f}%  -> {cell_dir(root, cell)}",
            highlight=False,
        )

    def on_cell_skipped(cell: Any, reason: str) -> None:
        console.print(f"[yellow]cell skipped[/]: {cell.label}: {reason}", highlight=False)

    def run_with_progress(folder: Path, cell: Any) -> dict[str, Any]:
        console.rule(cell.label)
        with _progress() as progress:
            return run_cell(
                folder, cell, train_progress=RichTrainProgress(progress), eval_progress=RichEvalProgress(progress)
            )

    try:
        # progress bars only where cells run in this process; elsewhere the runner would be pickled
        return run_sweep(
            root,
            cells,
            executor=executor,
            workers=workers,
            address=address,
            on_cell_done=on_cell_done,
            on_cell_skipped=on_cell_skipped,
            runner=run_with_progress if executor == "local" else None,
        )
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted: finished cells and epochs are saved in {root}; re-run to continue[/]")
        raise typer.Exit(130) from None


def _report_sweep(root: Path, cells: list[Any], primary: Any) -> None:
    """The report over every finished cell, with warnings about the cells left out."""
    from robustcam.sweep import report_inputs

    inputs = report_inputs(root, cells)
    if not inputs.folders:
        return
    from robustcam.report import load_evaluations, render_report, write_report

    files = write_report(
        load_evaluations(list(inputs.folders)), root / "report", primary=primary, warnings=inputs.warnings
    )
    render_report(files, console)


# --------------------------------------------------------------------------- entry point

BUG_REPORT = "this is a bug in robustcam: please report it with the traceback above"


def _fail(message: str, code: int) -> NoReturn:
    # escaped: a message may quote text in brackets (pip install -e ".[timm]") that rich would eat as markup
    err_console.print(f"[red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def _usage_message(error: typer.TyperException) -> str:
    """A usage error of the command line in one line: the option, the bad value, where help is."""
    message = error.format_message()
    param, cause = getattr(error, "param", None), error.__cause__
    if param is not None and isinstance(cause, ValidationError) and cause.errors():
        item = dict(cause.errors()[0])
        raw = item.get("input")
        if isinstance(raw, str):
            item["input"] = _as_typed(raw)  # `--bootstrap -1` says -1, `--epochs ten` says 'ten'
        names = getattr(param, "opts", None) or [getattr(param, "name", "value")]
        message = f"{names[0]}: {describe_invalid(item)}"
    ctx = getattr(error, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"{message.rstrip('.')}{hint}"


def _as_typed(text: str) -> object:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def _is_help_for_no_arguments(error: typer.TyperException) -> bool:
    # bare `robustcam`: typer has printed the help already and signals it with this usage error,
    # which has no public name
    return type(error).__name__ == "NoArgsIsHelpError"


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: one line and exit code 2 for bad input, a traceback and a
    request to report it (exit code 1) for a bug."""
    debug = bool(os.environ.get("ROBUSTCAM_DEBUG"))
    try:
        # not standalone: typer returns --help/--version exit codes and raises usage errors
        code = app(args=argv, prog_name="robustcam", standalone_mode=False)
    except RobustcamError as error:
        if debug:
            raise
        _fail(str(error), 2)
    except typer.TyperException as error:
        if _is_help_for_no_arguments(error):
            if error.format_message():  # without rich, the help is the message
                console.print(error.format_message(), highlight=False)
            raise SystemExit(2) from None
        _fail(_usage_message(error), getattr(error, "exit_code", 2))
    except typer.Abort:
        _fail("aborted", 1)
    except Exception:
        if debug:
            raise
        traceback.print_exc()
        _fail(BUG_REPORT, 1)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
