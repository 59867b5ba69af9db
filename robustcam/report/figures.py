"""Report figures (matplotlib, Agg canvas, PNG): robust accuracy vs eps, statistic vs
robustness across checkpoints, and CAM grids from ``examples.pt``.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through
pyplot, so nothing depends on (or changes) the global backend. CAMs are min-max normalised
for display only (torch-cam's habit): statistics use raw maps.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustcam.attacks import format_eps
from robustcam.checkpoint.reading import load_weights_only
from robustcam.io import CorruptFileError, atomic_write
from robustcam.report.tables import WORST, Setting, describe_column

DPI = 120
MAX_GRID_SAMPLES = 6
LINESTYLES = ("-", "--", ":", "-.")


def _save(figure: Figure, path: str | Path) -> Path:
    """Write the figure atomically (a full disk is one ``StorageError`` line, no half PNG)."""
    target = Path(path)
    FigureCanvasAgg(figure)
    file_format = target.suffix.lstrip(".") or "png"
    return atomic_write(target, lambda handle: figure.savefig(handle, dpi=DPI, format=file_format))


def _colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def plot_robust_accuracy(long: pd.DataFrame, path: str | Path) -> Path:
    """Robust accuracy vs eps, one line per checkpoint, one panel per (attack, norm).

    ``long`` is ``robust_accuracies(...)``. Each curve starts at the clean accuracy (eps 0);
    Linf eps are on an axis in 1/255 pixel units, L2 eps on their own. Line style marks the
    backend where several ran.
    """
    if long.empty:
        raise ValueError("no attack rows to plot")
    panels = list(dict.fromkeys(zip(long["attack"], long["norm"])))
    panels.sort(key=lambda p: (p[0] == WORST, p[1] != "Linf"))
    names = list(dict.fromkeys(long["name"]))
    colors = dict(zip(names, _colors(len(names))))
    backends = [b for b in dict.fromkeys(long["backend"]) if b != "all"]
    styles = {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(backends)}
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.6 * columns + 2.4, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, (attack, norm) in zip(axes.flat, panels):
        part = long[(long["attack"] == attack) & (long["norm"] == norm)]
        scale = 255.0 if norm == "Linf" else 1.0
        for (name, backend), curve in part.groupby(["name", "backend"], sort=False):
            curve = curve.sort_values("eps")
            x = np.concatenate([[0.0], curve["eps"].to_numpy(dtype=float) * scale])
            y = 100 * np.concatenate([[float(curve["clean_acc"].iloc[0])], curve["robust_acc"].to_numpy(dtype=float)])
            label = str(name) if len(backends) < 2 or backend == "all" else f"{name} ({backend})"
            ax.plot(x, y, marker="o", markersize=3, color=colors[name], linestyle=styles.get(backend, "-"), label=label)
        title = f"worst case over {norm} attacks (per sample)" if attack == WORST else f"{attack} ({norm})"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("eps (Linf, in 1/255 pixel units)" if norm == "Linf" else "eps (L2 norm, pixel units)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=8, title="checkpoint", title_fontsize=8)
    figure.suptitle("Robust accuracy vs eps (eps 0 = clean accuracy; clean errors count as not robust)", fontsize=11)
    return _save(figure, path)


def plot_statistic_scatter(
    table: pd.DataFrame, statistic: str, target: str, path: str | Path, *, correlation: dict[str, Any] | None = None
) -> Path:
    """One labelled point per configuration (or checkpoint): a mean CAM statistic (x) vs a
    robustness column (y), coloured by loss, with the spread over seeds as error bars where a
    configuration table has ``<column>_sd``. ``correlation`` (a row of ``model_correlations``)
    goes in the title: rho, its permutation p and q, and the CI where there is one."""
    for column in (statistic, target):
        if column not in table.columns:
            raise ValueError(f"column {column!r} is not in the model table")
    label = "configuration" if "configuration" in table.columns else "name"
    spreads = [c for c in (f"{statistic}_sd", f"{target}_sd") if c in table.columns]
    data = table[[label, "loss", statistic, target, *spreads]].copy()
    for column in (statistic, target, *spreads):
        data[column] = pd.to_numeric(data[column], errors="coerce")
    data = data.dropna(subset=[statistic, target])
    accuracy = "@" in target or target.endswith("_acc")
    scale = 100.0 if accuracy else 1.0
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    losses = list(dict.fromkeys(data["loss"]))
    for loss, color in zip(losses, _colors(len(losses))):
        part = data[data["loss"] == loss]
        x_err = part[f"{statistic}_sd"] if f"{statistic}_sd" in part.columns else None
        y_err = scale * part[f"{target}_sd"] if f"{target}_sd" in part.columns else None
        ax.errorbar(
            part[statistic],
            scale * part[target],
            xerr=x_err,
            yerr=y_err,
            fmt="o",
            color=color,
            label=str(loss),
            markersize=6,
            capsize=2,
            zorder=3,
        )
    for row in data.itertuples(index=False):
        ax.annotate(
            str(row[0]), (float(row[2]), scale * float(row[3])), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    ax.set_xlabel(f"{statistic} (mean over samples)", fontsize=9)
    ax.set_ylabel(f"{target} (%)" if accuracy else target, fontsize=9)
    unit = "one point per configuration (mean over seeds; bars: sd)" if spreads else f"one point per {label}"
    lines = [f"{describe_column(target)}", f"vs {describe_column(statistic)}", unit]
    title = "\n".join(textwrap.fill(line, 72) for line in lines)
    if correlation is not None and np.isfinite(correlation.get("spearman_rho", math.nan)):
        title += (
            f"\nSpearman rho = {correlation['spearman_rho']:.2f}, {correlation['p_method'].replace('_', ' ')} "
            f"permutation p = {correlation['spearman_p']:.3g}, q = {correlation['q_family']:.3g}, "
            f"n = {correlation['n']}"
        )
        if np.isfinite(correlation.get("spearman_ci_low", math.nan)):
            title += f", BCa 95% CI [{correlation['spearman_ci_low']:.2f}, {correlation['spearman_ci_high']:.2f}]"
    elif correlation is not None:
        title += f"\nn = {correlation.get('n')}: {correlation.get('note', '')}"
    ax.set_title(title, fontsize=9)
    ax.margins(x=0.12, y=0.08)  # room for the point labels
    ax.grid(alpha=0.3)
    if losses:
        ax.legend(title="loss", fontsize=8, title_fontsize=8)
    return _save(figure, path)


# --------------------------------------------------------------------------- CAM grids


def _adversarial_key(adv: dict[str, Any], setting: Setting | None) -> str | None:
    """The ``examples.pt`` key for ``setting`` (``attack/backend/eps text``), else the first."""
    if not adv:
        return None
    if setting is not None:
        formatted = format_eps(setting.eps, setting.norm)  # type: ignore[arg-type]
        texts = dict.fromkeys([formatted, f"{setting.eps:g}", repr(setting.eps), str(setting.eps)])
        for text in texts:
            key = f"{setting.attack}/{setting.backend}/{text}"
            if key in adv:
                return key
    return next(iter(adv))


def _image(ax: Axes, image: np.ndarray) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image[:3].transpose(1, 2, 0), 0, 1))


def _overlay(ax: Axes, image: np.ndarray, cam: np.ndarray) -> None:
    """The image with its min-max normalised CAM (display only) stretched over it."""
    _image(ax, image)
    low, high = float(cam.min()), float(cam.max())
    shown = (cam - low) / (high - low) if high > low else np.zeros_like(cam)
    height, width = image.shape[1:]
    ax.imshow(
        shown,
        cmap="jet",
        alpha=0.5,
        vmin=0,
        vmax=1,
        interpolation="bilinear",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )


def _top_negative(cams: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the negative class with the highest logit: the stored logits (Grad-CAM maps do
    not average to them), else the mean of each exact CAM."""
    scores = (logits if logits is not None else cams.mean(dim=(2, 3))).float().clone()
    scores[torch.arange(len(labels)), labels] = float("-inf")
    return scores.argmax(dim=1)


EXAMPLES_RECOVER = "delete it (the report then draws no CAM grid for it) or run the evaluation again"


def load_examples(examples: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """``examples.pt`` (or its dict), read weights-only and checked: ``labels``, ``images``
    (N, C, H, W) and raw ``cams`` (N, K, h, w) of N >= 1 samples with labels in [0, K), and
    adversarial entries of the same shape. Anything else is a ``CorruptFileError`` naming the
    file; nothing in the file is ever run."""
    if isinstance(examples, Mapping):
        data: Any = examples
        where, recover = "examples", "pass a dict as robustcam.evaluate.cam_examples makes it"
    else:
        where, recover = f"examples file {examples}", EXAMPLES_RECOVER
        data = load_weights_only(Path(examples), kind="examples file", recover=recover, error=CorruptFileError)
    problem = _examples_problem(data)
    if problem is not None:
        raise CorruptFileError(f"{where} {problem}; {recover}")
    return dict(data)


def _examples_problem(data: Any) -> str | None:
    """What is wrong with an examples record, or None."""
    if not isinstance(data, Mapping):
        return f"holds a {type(data).__name__}, not a dict of examples"
    for required in ("labels", "images", "cams"):
        if required not in data:
            return f"is missing {required!r} (has {', '.join(map(str, data))})"
    return _panel_problem("", data) or _samples_problem(data) or _adversarial_problem(data)


def _samples_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with the clean samples' labels against their images and CAMs, or None."""
    labels, cams = data["labels"], data["cams"]
    if labels.ndim != 1 or labels.is_floating_point() or len(labels) == 0:
        return "holds no samples" if labels.numel() == 0 else "has labels that are not one integer per sample"
    if len(data["images"]) != len(labels) or len(cams) != len(labels):
        return "has labels, images and CAMs of different lengths"
    if int(labels.min()) < 0 or int(labels.max()) >= cams.shape[1]:
        return f"has labels outside the {cams.shape[1]} classes of its CAMs"
    return None


def _adversarial_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with the ``adv`` entries (each a panel the size of the clean one), or None."""
    labels, cams = data["labels"], data["cams"]
    adv = data.get("adv") or {}
    if not isinstance(adv, Mapping):
        return f"has a {type(adv).__name__} as 'adv', not a dict"
    for key, entry in adv.items():
        if not isinstance(entry, Mapping) or "images" not in entry or "cams" not in entry:
            return f"has an adversarial entry {key!r} without images and CAMs"
        problem = _panel_problem(f"adversarial {key!r} ", entry)
        if problem is None and (len(entry["images"]) != len(labels) or entry["cams"].shape[1:] != cams.shape[1:]):
            problem = f"has adversarial {key!r} examples of other sizes than the clean ones"
        if problem is not None:
            return problem
    return None


def _panel_problem(what: str, data: Mapping[str, Any]) -> str | None:
    for key in ("labels", "images", "cams", "clean_pred", "pred", "logits"):
        if key in data and not isinstance(data[key], torch.Tensor):
            return f"has a {type(data[key]).__name__} as {what}{key!r}, not a tensor"
    if data["images"].ndim != 4 or data["cams"].ndim != 4:
        return f"has {what}images or CAMs that are not (N, C, H, W) tensors"
    for key in ("clean_pred", "pred"):
        if key in data and data[key].shape != data["images"].shape[:1]:
            return f"has {what}{key!r} of another length than its images"
    if "logits" in data and data["logits"].shape != data["cams"].shape[:2]:
        return f"has {what}'logits' of shape {tuple(data['logits'].shape)}, not (N, K) as its CAMs"
    return None


def plot_cam_grid(
    examples: str | Path | dict[str, Any],
    path: str | Path,
    *,
    setting: Setting | None = None,
    max_samples: int = MAX_GRID_SAMPLES,
    title: str = "",
) -> Path:
    """CAM grid from ``examples.pt``: one row per sample; columns image, true-class CAM and
    top negative CAM (by logit), first for the clean input, then for the adversarial example
    of ``setting`` (or the first stored one). Raw peak values are in the panel titles."""
    data = load_examples(examples)
    labels = data["labels"].long()
    count = min(max_samples, len(labels))
    if count < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    clean_pred = data.get("clean_pred", data["cams"].float().mean(dim=(2, 3)).argmax(1)).long()
    adv = data.get("adv") or {}
    key = _adversarial_key(adv, setting)
    panels: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = [
        ("clean", data["images"], data["cams"], clean_pred, data.get("logits"))
    ]
    if key is not None:
        entry = adv[key]
        pred = entry.get("pred", entry["cams"].float().mean(dim=(2, 3)).argmax(1)).long()
        panels.append((f"adv {key}", entry["images"], entry["cams"], pred, entry.get("logits")))
    kind = "Grad-CAM" if data.get("cam_method") == "gradcam" else "CAM"
    figure = Figure(figsize=(2.0 * 3 * len(panels), 2.1 * count + 0.6), layout="constrained")
    axes = figure.subplots(count, 3 * len(panels), squeeze=False)
    for p, (what, images, cams, pred, logits) in enumerate(panels):
        images_np = images[:count].float().cpu().numpy()
        cams = cams[:count].float().cpu()
        negative = _top_negative(cams, labels[:count], None if logits is None else logits[:count].cpu())
        for i in range(count):
            y, c = int(labels[i]), int(negative[i])
            true_map, neg_map = cams[i, y].numpy(), cams[i, c].numpy()
            cells = axes[i, 3 * p : 3 * p + 3]
            _image(cells[0], images_np[i])
            cells[0].set_title(f"{what}\nlabel {y}, pred {int(pred[i])}", fontsize=7)
            _overlay(cells[1], images_np[i], true_map)
            cells[1].set_title(f"true class {y} {kind}\nraw peak {true_map.max():.3g}", fontsize=7)
            _overlay(cells[2], images_np[i], neg_map)
            cells[2].set_title(f"top negative {c} {kind}\nraw peak {neg_map.max():.3g}", fontsize=7)
            for ax in cells:
                ax.set_xticks([])
                ax.set_yticks([])
    figure.suptitle(title or "CAMs (normalised for display)", fontsize=10)
    return _save(figure, path)


def plot_noise(noise: pd.DataFrame, path: str | Path) -> Path:
    """Test accuracy (and memorisation) vs label-noise rate: one line per loss, one panel per noise kind."""
    kinds = sorted(noise["noise_kind"].unique())
    metrics = [m for m in ("test_acc", "memorization") if m in noise.columns and noise[m].notna().any()]
    figure = Figure(figsize=(4.2 * len(kinds), 3.2 * len(metrics)), layout="constrained")
    axes = figure.subplots(len(metrics), len(kinds), squeeze=False)
    losses = sorted(noise["loss"].unique())
    colors = dict(zip(losses, _colors(len(losses))))
    for column, kind in enumerate(kinds):
        part = noise[noise["noise_kind"] == kind]
        for row, metric in enumerate(metrics):
            ax = axes[row, column]
            for loss in losses:
                line = part[part["loss"] == loss].sort_values("noise_rate")
                ax.plot(line["noise_rate"], 100 * line[metric], marker="o", label=loss, color=colors[loss])
            label = "test accuracy (%)" if metric == "test_acc" else "flipped labels memorised (%)"
            ax.set(title=f"{kind} noise", xlabel="noise rate", ylabel=label)
            ax.grid(alpha=0.3)
    axes[0, -1].legend(title="loss", fontsize=8)
    return _save(figure, path)


def safe_file_name(text: str) -> str:
    """A file-name-safe version of ``text`` (``worst@8/255`` -> ``worst_8-255``)."""
    out = text.replace("/", "-").replace("@", "_")
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in out).strip("._") or "figure"


__all__ = [
    "load_examples",
    "plot_cam_grid",
    "plot_robust_accuracy",
    "plot_statistic_scatter",
    "safe_file_name",
]
