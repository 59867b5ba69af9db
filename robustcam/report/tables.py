"""Per-checkpoint tables recomputed from the per-sample records.

``robust_accuracies`` gives one row per (checkpoint, attack, backend, eps) in long form;
``model_table`` one row per checkpoint with robust accuracies, mean CAM statistics,
C&W minimal norms and CAM localisation. Every number comes from ``per_sample.csv``:
robust accuracies through ``robustcam.evaluate.summarize`` (AutoAttack's convention:
clean errors are not robust; the worst case is per sample), and ``summary_mismatches``
checks them against the ``summary.csv`` written next to the records.

Column names read like ``pgd@8/255`` (attack at eps), ``pgd/foolbox@8/255`` when several
backends ran, ``worst@8/255`` (worst case over every Linf attack and backend at that eps),
``worst_l2@0.5`` (the same over L2 attacks), ``cw_mean_min_l2`` (mean minimal L2 norm of
the successful C&W examples), ``clean_<stat>`` and ``adv_<stat>`` (mean CAM statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from robustcam.attacks import ATTACKS, format_eps, parse_eps
from robustcam.cam import STAT_NAMES, TOP1_HIT_IOU, TOP1_PROTOCOLS, LocalizationProtocol, max_box_accuracy
from robustcam.evaluate import summarize
from robustcam.layout import MAXBOXACC_FILE, MAXBOXACC_PREFIX
from robustcam.report.load import Evaluation

WORST = "worst"
SUMMARY_TOLERANCE = 1e-12
LOCALIZATION_IOU = TOP1_HIT_IOU  # the CAM paper's hit threshold
LOCALIZATION_SIDES = ("clean", "adv")
KEY_COLUMNS = ("name", "loss", "noise")
ADV_EXTRA_COLUMNS = ("adv_peak_gain", "true_peak_shift")  # per-sample columns averaged as they are
CLEAN_STAT_COLUMNS = tuple(f"clean_{s}" for s in STAT_NAMES)
ADV_STAT_COLUMNS = (*(f"adv_{s}" for s in STAT_NAMES), *ADV_EXTRA_COLUMNS)
STATISTIC_COLUMNS = (*CLEAN_STAT_COLUMNS, *ADV_STAT_COLUMNS)
MIN_NORM_SUFFIX = "_mean_min_"
SD_SUFFIX = "_sd"  # spread over seed replicates, beside a mean (robustcam.report.replicates)


@dataclass(frozen=True)
class Setting:
    """One cell of the attack matrix."""

    attack: str
    backend: str
    norm: str
    eps: float

    def label(self, *, with_backend: bool = False) -> str:
        """``pgd@8/255``, ``pgd/foolbox@8/255``, ``worst@8/255`` or ``worst_l2@0.5``."""
        eps = format_eps(self.eps, self.norm)  # type: ignore[arg-type]
        if self.attack == WORST:
            return f"{WORST}@{eps}" if self.norm == "Linf" else f"{WORST}_{self.norm.lower()}@{eps}"
        backend = f"/{self.backend}" if with_backend else ""
        return f"{self.attack}{backend}@{eps}"

    def rows(self, per_sample: pd.DataFrame) -> pd.DataFrame:
        """This setting's rows of a per-sample table."""
        mask = (
            (per_sample["attack"] == self.attack)
            & (per_sample["backend"] == self.backend)
            & (per_sample["norm"] == self.norm)
            & (per_sample["eps"] == self.eps)
        )
        return per_sample[mask]


# --------------------------------------------------------------------------- which attacks ran


def several_backends(evaluations: Sequence[Evaluation]) -> bool:
    """Whether column names need the backend: more than one attack backend across the evaluations."""
    backends: set[str] = set()
    for evaluation in evaluations:
        backends |= set(evaluation.per_sample["backend"].unique())
    return len(backends) > 1


def minimal_attacks(evaluation: Evaluation) -> set[str]:
    """Names of the minimal-perturbation attacks (C&W) in an evaluation.

    ``summary.json`` says which attacks were minimal; for a folder without it the attack
    registry does, and ``cw`` is minimal by definition.
    """
    names = set(evaluation.per_sample["attack"].unique())
    minimal = {
        str(a.get("name"))
        for a in evaluation.info.get("meta", {}).get("attacks", [])
        if isinstance(a, dict) and a.get("minimal")
    }
    for name in names - minimal:
        if name == "cw" or (name in ATTACKS and bool(getattr(ATTACKS.get(name), "minimal", False))):
            minimal.add(name)
    return minimal & names


def _settings(per_sample: pd.DataFrame) -> list[Setting]:
    cells = per_sample[["attack", "backend", "norm", "eps"]].drop_duplicates()
    return [Setting(str(r.attack), str(r.backend), str(r.norm), float(r.eps)) for r in cells.itertuples()]


def reference_setting(evaluations: Sequence[Evaluation]) -> Setting | None:
    """The setting whose adversarial CAM statistics go into the model table.

    PGD at its largest eps if any evaluation ran PGD, else the first bounded attack at its
    largest eps; torchattacks is preferred where several backends ran. None if no bounded
    attack ran.
    """
    bounded: list[Setting] = []
    for evaluation in evaluations:
        minimal = minimal_attacks(evaluation)
        bounded += [s for s in _settings(evaluation.per_sample) if s.attack not in minimal and s not in bounded]
    if not bounded:
        return None
    pool = [s for s in bounded if s.attack == "pgd"] or [s for s in bounded if s.attack == bounded[0].attack]
    backends = [s.backend for s in pool]
    backend = "torchattacks" if "torchattacks" in backends else backends[0]
    return max((s for s in pool if s.backend == backend), key=lambda s: s.eps)


# --------------------------------------------------------------------------- robust accuracy


def robust_accuracies(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """Long table: one row per (checkpoint, attack, backend, norm, eps), worst-case rows included.

    Columns: name, loss, noise, attack, backend, norm, eps, minimal, column (the model-table
    column name), n, clean_acc, robust_acc, attack_success_rate. Recomputed with
    ``robustcam.evaluate.summarize`` from the per-sample records.
    """
    with_backend = several_backends(evaluations)
    frames = []
    for evaluation in evaluations:
        summary = summarize(evaluation.per_sample) if len(evaluation.per_sample) else pd.DataFrame()
        if summary.empty:
            continue
        summary = summary[summary["attack"] != "clean"].copy()
        minimal = minimal_attacks(evaluation)
        summary["minimal"] = summary["attack"].isin(minimal)
        summary["column"] = [
            Setting(str(r.attack), str(r.backend), str(r.norm), float(r.eps)).label(with_backend=with_backend)
            for r in summary.itertuples()
        ]
        for key in KEY_COLUMNS:
            summary[key] = getattr(evaluation, key)
        frames.append(summary)
    columns = [
        *KEY_COLUMNS,
        "attack",
        "backend",
        "norm",
        "eps",
        "minimal",
        "column",
        "n",
        "clean_acc",
        "robust_acc",
        "attack_success_rate",
    ]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _ordered_columns(long: pd.DataFrame) -> list[str]:
    """Attack columns in the order the attacks ran (eps ascending), then worst Linf, then worst L2."""
    if long.empty:
        return []
    first_seen = {a: i for i, a in enumerate(dict.fromkeys(long["attack"]))}
    cells = long[["attack", "backend", "norm", "eps", "column"]].drop_duplicates("column").copy()
    cells["is_worst"] = cells["attack"] == WORST
    cells["norm_order"] = cells["norm"].map({"Linf": 0, "L2": 1}).fillna(2)
    cells["attack_order"] = cells["attack"].map(first_seen)
    cells = cells.sort_values(["is_worst", "norm_order", "attack_order", "backend", "eps"], kind="stable")
    return list(cells["column"])


def minimal_norm_column(attack: str, backend: str, norm: str, *, with_backend: bool) -> str:
    """``cw_mean_min_l2`` (``cw/foolbox_mean_min_l2`` when several backends ran)."""
    return f"{attack}{f'/{backend}' if with_backend else ''}{MIN_NORM_SUFFIX}{norm.lower()}"


def minimal_perturbations(evaluation: Evaluation, attack: str, backend: str) -> pd.DataFrame:
    """One row per sample for a minimal-perturbation attack: index, label, clean_correct,
    found (the attack found a valid misclassified example), norm (its size in the attack's
    norm; meaningful where found), plus the clean logit margin and the per-sample clean CAM
    columns.

    A minimal attack runs once per sample; its rows at the different eps repeat that one
    measurement, so the first row per sample is kept.
    """
    per_sample = evaluation.per_sample
    rows = per_sample[(per_sample["attack"] == attack) & (per_sample["backend"] == backend)]
    rows = rows.drop_duplicates("index")
    norm = str(rows["norm"].iloc[0]) if len(rows) else "L2"
    found = rows["attacked"] & rows["valid"] & (rows["margin"] < 0) & rows["clean_correct"]
    out = rows[["index", "label", "clean_correct"]].copy()
    out["found"] = found.to_numpy(dtype=bool)
    out["norm"] = rows["linf" if norm == "Linf" else "l2"].to_numpy(dtype=float)
    for column in ("clean_margin", *CLEAN_STAT_COLUMNS):
        if column in rows.columns:
            out[column] = rows[column].to_numpy(dtype=float)
    return out.reset_index(drop=True)


def _minimal_norm_means(evaluations: Sequence[Evaluation], with_backend: bool) -> dict[str, dict[str, float]]:
    """column -> checkpoint name -> mean minimal norm over the samples the attack broke."""
    values: dict[str, dict[str, float]] = {}
    for evaluation in evaluations:
        for attack in sorted(minimal_attacks(evaluation)):
            frame = evaluation.per_sample
            for backend in dict.fromkeys(frame.loc[frame["attack"] == attack, "backend"]):
                table = minimal_perturbations(evaluation, attack, backend)
                norm = str(frame.loc[frame["attack"] == attack, "norm"].iloc[0])
                column = minimal_norm_column(attack, backend, norm, with_backend=with_backend)
                found = table.loc[table["found"], "norm"]
                values.setdefault(column, {})[evaluation.name] = float(found.mean()) if len(found) else math.nan
    return values


# --------------------------------------------------------------------------- CAM statistics


def _clean_samples(per_sample: pd.DataFrame) -> pd.DataFrame:
    """One row per sample: its clean columns are the same in every row."""
    return per_sample.drop_duplicates("index")


def _mean(frame: pd.DataFrame, column: str) -> float:
    if column not in frame.columns:
        return math.nan
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _has_values(per_sample: pd.DataFrame, column: str) -> bool:
    return column in per_sample.columns and bool(pd.to_numeric(per_sample[column], errors="coerce").notna().any())


def _localization_accuracy(correct: pd.Series, iou: pd.Series) -> float:
    """Top-1 localisation (cvpr2016, minmax): the prediction is right and the CAM box of the
    predicted class has IoU >= 0.5; over every sample. NaN when no IoU was recorded."""
    iou = pd.to_numeric(iou, errors="coerce")
    if not iou.notna().any():
        return math.nan
    return float((correct.to_numpy(dtype=bool) & (iou.fillna(-1.0).to_numpy() >= LOCALIZATION_IOU)).mean())


def _loc_ious(frame: pd.DataFrame, side: str, protocol: LocalizationProtocol) -> pd.Series | None:
    """The ``<side>_loc_iou_<protocol>`` column; records written before the protocols were
    named have ``<side>_loc_iou``, which is the minmax rule."""
    legacy = (f"{side}_loc_iou",) if protocol == "minmax" else ()
    for column in (f"{side}_loc_iou_{protocol}", *legacy):
        if _has_values(frame, column):
            return frame[column]
    return None


def maxboxacc_thresholds(table: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The ``iou_at_<tau>`` columns of a ``maxboxacc_v2.csv`` table and their thresholds."""
    columns = [c for c in table.columns if str(c).startswith(MAXBOXACC_PREFIX)]
    return columns, np.array([float(str(c)[len(MAXBOXACC_PREFIX) :]) for c in columns])


def maxboxacc_v2(table: pd.DataFrame, examples: pd.Series) -> float:
    """MaxBoxAccV2 (Choe et al., CVPR 2020) of the examples ``examples`` from the saved table.

    ``table`` is ``maxboxacc_v2.csv`` (``example``, then the best box IoU of the
    ground-truth class's CAM at each threshold, ``iou_at_<tau>``); ``examples`` the ids in a
    ``clean_loc_example``/``adv_loc_example`` column, one per sample (an id may repeat:
    rows that report the same example). ``robustcam.cam.max_box_accuracy`` does the rest:
    ``mean over delta in {0.3, 0.5, 0.7} of max_tau mean_i [IoU_i(tau) >= delta]``. NaN
    for no examples; a ValueError when the table lacks an id (the files do not belong
    together).
    """
    ids = pd.to_numeric(examples, errors="coerce").dropna().to_numpy(dtype=np.int64)
    if not len(ids):
        return math.nan
    columns, thresholds = maxboxacc_thresholds(table)
    indexed = table.set_index("example")
    missing = np.setdiff1d(ids, indexed.index.to_numpy())
    if len(missing):
        raise ValueError(
            f"{MAXBOXACC_FILE} has no row for example {int(missing[0])} ({len(missing)} missing): it does not belong "
            "to this per_sample.csv"
        )
    ious = indexed.loc[ids, columns].to_numpy(dtype=np.float64)
    return max_box_accuracy(ious, thresholds).v2


def localization_columns(table: pd.DataFrame) -> list[str]:
    """The localisation columns of a model table, clean then adv: ``<side>_loc_acc_cvpr2016``,
    ``<side>_loc_acc_minmax``, ``<side>_maxboxacc_v2`` (fractions)."""
    names = [
        f"{side}_{name}"
        for side in LOCALIZATION_SIDES
        for name in (*(f"loc_acc_{p}" for p in TOP1_PROTOCOLS), "maxboxacc_v2")
    ]
    return [c for c in names if c in table.columns]


def _localization_values(evaluation: Evaluation, reference: Setting | None) -> dict[str, float]:
    """The localisation columns of one checkpoint (NaN where its records have no data): clean
    over every sample, adv over the reference setting's rows (correct = ``adv_pred == label``)."""
    per_sample = evaluation.per_sample
    samples = _clean_samples(per_sample)
    adversarial = reference.rows(per_sample) if reference is not None else per_sample.iloc[:0]
    parts = {
        "clean": (samples, samples["clean_correct"]),
        "adv": (adversarial, adversarial["adv_pred"] == adversarial["label"]),
    }
    values: dict[str, float] = {}
    for side, (rows, correct) in parts.items():
        for protocol in TOP1_PROTOCOLS:
            ious = _loc_ious(rows, side, protocol)
            values[f"{side}_loc_acc_{protocol}"] = math.nan if ious is None else _localization_accuracy(correct, ious)
        examples = f"{side}_loc_example"
        known = _has_values(rows, examples) and not evaluation.maxboxacc.empty
        values[f"{side}_maxboxacc_v2"] = maxboxacc_v2(evaluation.maxboxacc, rows[examples]) if known else math.nan
    return values


def model_table(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """One row per checkpoint, every number recomputed from ``per_sample.csv``.

    Columns, in order: ``name``, ``loss``, ``noise``, ``n_samples``, ``clean_acc``; robust
    accuracy per (attack, backend, eps) (``pgd@8/255``); worst case per eps (``worst@8/255``,
    ``worst_l2@0.5``); mean minimal norm of successful minimal-attack examples
    (``cw_mean_min_l2``); mean clean CAM statistics over all samples (``clean_<stat>``);
    ``adv_setting`` and the mean adversarial statistics there (``adv_<stat>``,
    ``adv_peak_gain``, ``true_peak_shift``; see ``reference_setting``); where the records have
    CAM boxes, top-1 localisation accuracy per protocol (``clean_loc_acc_cvpr2016``,
    ``clean_loc_acc_minmax``; records written before protocols were named are minmax) and
    ``clean_maxboxacc_v2``, then the same at the reference setting (``adv_...``; see
    ``localization_columns``). Columns appear only if at least one evaluation has data for them.
    """
    long = robust_accuracies(evaluations)
    wide = long.pivot_table(index="name", columns="column", values="robust_acc", aggfunc="first", dropna=False)
    with_backend = several_backends(evaluations)
    reference = reference_setting(evaluations)
    minimal_norms = _minimal_norm_means(evaluations, with_backend)
    stats_present = [c for c in CLEAN_STAT_COLUMNS if any(_has_values(e.per_sample, c) for e in evaluations)]
    adv_present = [c for c in ADV_STAT_COLUMNS if any(_has_values(e.per_sample, c) for e in evaluations)]

    rows: list[dict[str, Any]] = []
    for evaluation in evaluations:
        samples = _clean_samples(evaluation.per_sample)
        row: dict[str, Any] = {
            "name": evaluation.name,
            "loss": evaluation.loss,
            "noise": evaluation.noise,
            "n_samples": len(samples),
            "clean_acc": float(samples["clean_correct"].mean()) if len(samples) else math.nan,
        }
        row.update(_training_record(evaluation))
        for column in _ordered_columns(long):
            value = wide.at[evaluation.name, column] if evaluation.name in wide.index else math.nan
            row[column] = float(value)
        for column, by_name in minimal_norms.items():
            row[column] = by_name.get(evaluation.name, math.nan)
        for column in stats_present:
            row[column] = _mean(samples, column)
        if adv_present:
            row["adv_setting"] = "" if reference is None else reference.label(with_backend=with_backend)
            adversarial = reference.rows(evaluation.per_sample) if reference is not None else samples.iloc[:0]
            for column in adv_present:
                row[column] = _mean(adversarial, column)
        row.update(_localization_values(evaluation, reference))
        rows.append(row)
    table = pd.DataFrame(rows)
    # training-record and localisation columns appear only when some checkpoint has them
    optional = (*TRAINING_COLUMNS, *localization_columns(table))
    empty = [c for c in optional if c in table.columns and table[c].isna().all()]
    return table.drop(columns=empty)


TRAINING_COLUMNS = ("noise_kind", "noise_rate", "noise_realized_rate", "test_acc", "memorization")


def _training_record(evaluation: Evaluation) -> dict[str, Any]:
    """What the checkpoint's training recorded: label noise, full test-set accuracy, memorisation."""
    meta = evaluation.checkpoint_meta
    noise = meta.get("noise") or {}
    metrics = meta.get("metrics") or {}
    return {
        "noise_kind": noise.get("kind", "none" if metrics else None),
        "noise_rate": float(noise.get("rate") or 0.0) if metrics else math.nan,
        "noise_realized_rate": float(noise.get("realized_rate", 0.0)) if metrics else math.nan,
        "test_acc": float(metrics.get("test_acc", math.nan)),
        "memorization": float(metrics.get("memorization", math.nan)),
    }


def noise_table(table: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (and memorisation) per loss, noise kind and rate: the label-noise view."""
    needed = {"loss", "noise_kind", "noise_rate", "test_acc"}
    if not needed <= set(table.columns) or table["noise_rate"].nunique() < 2:
        return pd.DataFrame()
    values = ["test_acc", *(["memorization"] if "memorization" in table.columns else [])]
    grouped = table.groupby(["noise_kind", "noise_rate", "loss"], sort=True)[values].mean().reset_index()
    return grouped


def statistic_columns(table: pd.DataFrame) -> list[str]:
    """The CAM statistic columns of a model table (``clean_<stat>``, ``adv_<stat>``, ...)."""
    return [c for c in STATISTIC_COLUMNS if c in table.columns]


def robustness_columns(table: pd.DataFrame) -> list[str]:
    """Robust accuracy columns (``pgd@8/255``, ``worst@8/255``, ...) and minimal-norm columns."""
    # a configuration table has <column>_sd beside each mean: spreads are not targets
    columns = [c for c in table.columns if ("@" in c or MIN_NORM_SUFFIX in c) and not c.endswith(SD_SUFFIX)]
    # clean test accuracy from training: under label noise it is the robustness that matters
    return [*columns, *(["test_acc"] if "test_acc" in table.columns and table["test_acc"].notna().any() else [])]


def headline_target(table: pd.DataFrame) -> str | None:
    """The robustness column a reader looks at first: worst case at the largest Linf eps,
    else worst case at the largest L2 eps, else the first robustness column."""
    for prefix in (f"{WORST}@", f"{WORST}_l2@"):
        columns = [c for c in table.columns if c.startswith(prefix) and not c.endswith(SD_SUFFIX)]
        if columns:
            return max(columns, key=lambda c: parse_eps(c.split("@", 1)[1]))
    targets = robustness_columns(table)
    return targets[0] if targets else None


def describe_column(column: str) -> str:
    """Plain words for a model-table column, e.g. ``worst@8/255`` -> worst-case robust accuracy
    (Linf eps 8/255)."""
    if "@" in column:
        attack, eps = column.split("@", 1)
        if attack == WORST:
            return f"worst-case robust accuracy at Linf eps {eps}"
        if attack.startswith(f"{WORST}_"):
            return f"worst-case robust accuracy at {attack.split('_', 1)[1].upper()} eps {eps}"
        return f"{attack} robust accuracy at eps {eps}"
    if MIN_NORM_SUFFIX in column:
        attack, norm = column.split(MIN_NORM_SUFFIX, 1)
        return f"mean minimal {norm.upper()} perturbation that {attack} needed (successful samples)"
    words = {
        "neg_peak_max": "highest negative-CAM peak",
        "neg_peak_topk": "mean peak of the top-k negative CAMs",
        "neg_homogeneity": "negative-CAM inhomogeneity (KL of uniform from spatial softmax)",
        "neg_positive_frac": "fraction of negative-CAM cells above 0",
        "pos_peak": "true-class CAM peak",
        "peak_margin": "true-class peak minus highest negative peak",
        "peak_gain": "peak gain of the class the attack moved to",
    }
    for prefix, where in (("clean_", "clean"), ("adv_", "adversarial")):
        if column.startswith(prefix) and column[len(prefix) :] in words:
            return f"mean {where} {words[column[len(prefix) :]]}"
    if column == "true_peak_shift":
        return "mean shift of the true-class CAM peak under attack (CAM cells)"
    return column


# --------------------------------------------------------------------------- checks


def summary_mismatches(evaluation: Evaluation, *, tolerance: float = SUMMARY_TOLERANCE) -> list[str]:
    """Where ``summary.csv`` disagrees with the summary recomputed from ``per_sample.csv``
    (robust accuracy, clean accuracy, attack success rate; more than ``tolerance``)."""
    stored = evaluation.summary
    if stored.empty:
        return [f"{evaluation.name}: no summary.csv to check the recomputed accuracies against"]
    if not len(evaluation.per_sample):
        return []
    keys = ["attack", "backend", "norm", "eps"]
    recomputed = summarize(evaluation.per_sample)
    stored = stored.copy()
    for key in ("attack", "backend", "norm"):
        stored[key] = stored[key].astype(str)
    merged = recomputed.merge(stored, on=keys, how="outer", suffixes=("", "_stored"), indicator="side")
    messages = []
    for row in merged.itertuples():
        where = f"{row.attack}/{row.backend} {row.norm} eps {row.eps:.6g}"
        if row.side != "both":
            where_only = "summary.csv" if row.side == "right_only" else "per_sample.csv"
            messages.append(f"{evaluation.name}: {where} is only in {where_only}")
            continue
        for column in ("robust_acc", "clean_acc", "attack_success_rate"):
            ours, theirs = float(getattr(row, column)), float(getattr(row, f"{column}_stored"))
            same = (math.isnan(ours) and math.isnan(theirs)) or abs(ours - theirs) <= tolerance
            if not same:
                messages.append(
                    f"{evaluation.name}: summary.csv {column} for {where} is {theirs:.12g} but per_sample.csv "
                    f"gives {ours:.12g} (the report uses per_sample.csv)"
                )
    return messages


def check_evaluations(evaluations: Sequence[Evaluation]) -> list[str]:
    """Warnings to show with a report: recompute mismatches, missing CAM columns, the sanity
    flags ``evaluate`` stored, and checkpoints evaluated on different data."""
    warnings: list[str] = []
    without_cam = [e.name for e in evaluations if not e.cam_statistics]
    if without_cam and len(without_cam) == len(evaluations):
        warnings.append(
            "none of the evaluations has CAM statistic columns in per_sample.csv (evaluated with --no-cam-stats?): "
            "CAM statistics and correlations are left empty"
        )
    elif without_cam:
        warnings.append(
            f"{', '.join(without_cam)}: no CAM statistic columns in per_sample.csv (evaluated with "
            "--no-cam-stats?): their CAM statistics are left empty"
        )
    for evaluation in evaluations:
        warnings += summary_mismatches(evaluation)
        if not evaluation.info:
            warnings.append(f"{evaluation.name}: no summary.json; loss and noise are unknown")
        present = evaluation.cam_statistics
        if present and len(present) < len(STAT_NAMES):
            missing = ", ".join(s for s in STAT_NAMES if s not in present)
            warnings.append(f"{evaluation.name}: per_sample.csv lacks the CAM statistics {missing}")
        for flag in evaluation.flags:
            warnings.append(f"{evaluation.name}: {flag.get('check', 'flag')}: {flag.get('message', '')}")
    datasets = {e.name: _dataset_name(e) for e in evaluations}
    if len({d for d in datasets.values() if d}) > 1:
        listed = ", ".join(f"{name} on {d}" for name, d in datasets.items())
        warnings.append(f"the checkpoints were evaluated on different datasets ({listed}): compare with care")
    sizes = {e.name: e.per_sample["index"].nunique() for e in evaluations}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in sizes.items())
        warnings.append(f"the checkpoints were evaluated on different numbers of samples ({listed})")
    return warnings


def _dataset_name(evaluation: Evaluation) -> str | None:
    data = evaluation.info.get("config", {}).get("data") or {}
    if isinstance(data, dict) and data.get("name"):
        return f"{data['name']}/{data.get('split', '?')}"
    dataset = evaluation.info.get("meta", {}).get("dataset") or {}
    return str(dataset.get("name")) if isinstance(dataset, dict) and dataset.get("name") else None


__all__ = [
    "Setting",
    "check_evaluations",
    "describe_column",
    "headline_target",
    "localization_columns",
    "maxboxacc_v2",
    "minimal_attacks",
    "minimal_perturbations",
    "model_table",
    "reference_setting",
    "robust_accuracies",
    "robustness_columns",
    "statistic_columns",
    "summary_mismatches",
]
