"""Find and read evaluation folders: ``per_sample.csv`` (+ ``summary.csv``, ``summary.json``, ``examples.pt``,
``maxboxacc_v2.csv``).

An evaluation folder is what ``robustcam eval`` writes (``robustcam.evaluate.write_eval``).
``load_evaluations`` accepts such folders, run directories (``<run>/eval``) and any folder
that holds several of them (a sweep root): every folder below it that contains a
``per_sample.csv`` is one evaluation. Nothing is recomputed here; the records are read as
written.

Only finished evaluations are read: a folder without its completion marker (killed, out of
disk, or written by ``robustcam eval`` before it wrote markers: nothing tells those apart) is
refused, naming it and how to finish it. Every file is read as data (CSV, JSON, YAML; the
path of ``examples.pt`` is kept for the figures), and one that cannot be read is a one-line
``CorruptFileError`` naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from robustcam.cam import STAT_NAMES
from robustcam.errors import InputError, RobustcamError
from robustcam.evaluate.files import MARKER_ROWS, missing_eval_files, read_eval_marker
from robustcam.io import CorruptFileError, read_csv_table, read_json_object
from robustcam.layout import (
    CONFIG_FILE,
    EVAL_COMPLETE,
    EXAMPLES_FILE,
    MAXBOXACC_FILE,
    PER_SAMPLE_FILE,
    SUMMARY_FILE,
    SUMMARY_JSON_FILE,
)
from robustcam.layout import EVAL_DIR as EVAL_SUBFOLDER

REQUIRED_COLUMNS = (
    "index",
    "label",
    "clean_pred",
    "clean_correct",
    "attack",
    "backend",
    "norm",
    "eps",
    "attacked",
    "adv_pred",
    "success",
    "robust",
    "valid",
    "linf",
    "l2",
    "margin",
)
BOOLEAN_COLUMNS = ("clean_correct", "attacked", "success", "robust", "valid")
NUMERIC_COLUMNS = ("index", "label", "clean_pred", "eps", "adv_pred", "linf", "l2", "margin")
SUMMARY_COLUMNS = ("attack", "backend", "norm", "eps", "robust_acc", "clean_acc", "attack_success_rate")
SUMMARY_NUMERIC = ("eps", "robust_acc", "clean_acc", "attack_success_rate")
# how to recover from an unreadable or unfinished evaluation; the messages name the folder
RECOVER = (
    "run the command that evaluated into it again (robustcam eval, sweep or quickstart) or leave it out of the report"
)
UNKNOWN_LOSS = "unknown"
CLEAN_NOISE = "clean"


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare by
class Evaluation:
    """One checkpoint's evaluation as written to disk.

    ``name`` is the folder name, or the run directory's name for ``<run>/eval``;
    ``info`` is ``summary.json`` (empty if absent); ``loss`` and ``noise`` are short texts
    from the checkpoint's metadata (``"hnc"``, ``"symmetric 0.4"`` or ``"clean"``);
    ``maxboxacc`` is ``maxboxacc_v2.csv`` (per measured example, the best box IoU at each
    CAM threshold; empty if absent), which the ``clean_loc_example``/``adv_loc_example``
    columns of ``per_sample.csv`` point into.
    """

    name: str
    path: Path
    per_sample: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]
    loss: str
    noise: str
    examples: Path | None = None
    train_config: dict[str, Any] = field(default_factory=dict)  # the checkpoint's resolved train config
    maxboxacc: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def checkpoint_meta(self) -> dict[str, Any]:
        meta = self.info.get("config", {}).get("checkpoint_meta") or {}
        return meta if isinstance(meta, dict) else {}

    @property
    def flags(self) -> list[dict[str, str]]:
        """Sanity flags that ``evaluate`` stored in ``summary.json``."""
        return [f for f in self.info.get("flags", []) if isinstance(f, dict)]

    @property
    def cam_statistics(self) -> tuple[str, ...]:
        """The ``STAT_NAMES`` whose ``clean_<stat>`` column is in ``per_sample.csv``."""
        return tuple(s for s in STAT_NAMES if f"clean_{s}" in self.per_sample.columns)

    @property
    def cam_method(self) -> str | None:
        """Where the CAM statistics come from: ``exact`` CAMs or ``gradcam`` maps (records written
        before the ``cam_method`` column are exact); None without CAM statistics."""
        if not self.cam_statistics:
            return None
        if "cam_method" not in self.per_sample.columns or not len(self.per_sample):
            return "exact"
        methods = sorted(set(self.per_sample["cam_method"].dropna().astype(str)))
        return "+".join(methods) if methods else "exact"

    def __repr__(self) -> str:
        return (
            f"Evaluation(name={self.name!r}, loss={self.loss!r}, noise={self.noise!r}, "
            f"rows={len(self.per_sample)}, path={str(self.path)!r})"
        )


# --------------------------------------------------------------------------- discovery


def find_evaluation_dirs(path: str | Path) -> list[Path]:
    """Evaluation folders at or below ``path``, sorted.

    ``path`` may be an evaluation folder, a run directory whose ``eval/`` holds one, a
    ``per_sample.csv`` file, or any folder that contains evaluation folders somewhere below.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root} does not exist (expected an eval folder, a run directory or a folder of them)")
    if root.is_file():
        if root.name in (PER_SAMPLE_FILE, SUMMARY_FILE, SUMMARY_JSON_FILE):
            return find_evaluation_dirs(root.parent)
        raise InputError(f"{root} is a file, not an evaluation: give its folder (one holding {PER_SAMPLE_FILE})")
    if (root / PER_SAMPLE_FILE).is_file():
        return [root]
    found = sorted({p.parent for p in root.rglob(PER_SAMPLE_FILE) if p.is_file()})
    if not found:
        raise InputError(
            f"no evaluation in {root}: looked for {PER_SAMPLE_FILE} in it, in {root / EVAL_SUBFOLDER} "
            "and in every folder below it (run `robustcam eval` first)"
        )
    return found


def evaluation_name(folder: Path) -> str:
    """The folder's name, or the run directory's name when the folder is ``<run>/eval``."""
    folder = folder.resolve()
    if folder.name == EVAL_SUBFOLDER and folder.parent.name:
        return folder.parent.name
    return folder.name


# --------------------------------------------------------------------------- loss and noise text


def noise_text(noise: Any) -> str:
    """A short description of a checkpoint's label-noise spec: ``"symmetric 0.4"`` or ``"clean"``.

    Accepts a mapping with a kind (``kind``, ``name`` or ``type``) and a ``rate``, a plain
    string, or nothing (``None``: trained on clean labels). A zero rate is ``"clean"``.
    """
    if noise is None or noise == "" or noise == {}:
        return CLEAN_NOISE
    if isinstance(noise, str):
        return noise
    if isinstance(noise, Mapping):
        kind = next((noise[k] for k in ("kind", "name", "type") if noise.get(k)), None)
        rate = noise.get("rate")
        if kind is None or str(kind).lower() in ("none", "clean"):
            return CLEAN_NOISE
        if isinstance(rate, (int, float)) and not isinstance(rate, bool):
            return CLEAN_NOISE if rate == 0 else f"{kind} {rate:g}"
        detail = next((noise[k] for k in ("variant", "labels", "source") if isinstance(noise.get(k), str)), None)
        return f"{kind} {detail}" if detail else str(kind)
    return str(noise)


class UnfinishedEvaluationError(RobustcamError, ValueError):
    """An evaluation folder without its completion marker, or with fewer files or records than
    the marker lists."""


def _read_run_config(folder: Path) -> dict[str, Any]:
    """The resolved ``config.yaml`` of the run whose ``eval/`` the folder is ({} for other folders)."""
    path = folder.parent / CONFIG_FILE
    if folder.name != EVAL_SUBFOLDER or not path.is_file():
        return {}
    recover = "restore it (robustcam train writes it) or delete it: the report then takes the loss from summary.json"
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path} holds binary data, not YAML; {recover}") from None
    except yaml.YAMLError as error:
        raise CorruptFileError(f"{path} is not valid YAML ({' '.join(str(error).split())[:100]}); {recover}") from None
    except OSError as error:
        raise CorruptFileError(f"{path} cannot be read ({error.strerror or error}); {recover}") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} holds a YAML {type(data).__name__}, not a train config; {recover}")
    return data


def _train_config(info: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The resolved train config of the evaluated checkpoint: from ``summary.json``, else from
    the run's ``config.yaml`` when the folder is ``<run>/eval``; empty when neither says."""
    stored = (info.get("config", {}).get("checkpoint_meta") or {}).get("config")
    if isinstance(stored, dict):
        return stored
    return _read_run_config(folder)


def _loss_name(info: dict[str, Any], folder: Path) -> str:
    loss = (info.get("config", {}).get("checkpoint_meta") or {}).get("loss")
    if isinstance(loss, Mapping) and loss.get("name"):
        return str(loss["name"])
    if isinstance(loss, str) and loss:
        return loss
    # an eval folder inside a run directory: the run's resolved config names the loss
    section = _read_run_config(folder).get("loss")
    name = section.get("name") if isinstance(section, dict) else None
    return str(name) if name else UNKNOWN_LOSS


# --------------------------------------------------------------------------- reading


def _numeric(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    wrong = [c for c in columns if c in frame.columns and len(frame) and not pd.api.types.is_numeric_dtype(frame[c])]
    if wrong:
        raise CorruptFileError(f"{path} has values that are not numbers in the columns {', '.join(wrong)}; {RECOVER}")


def _read_per_sample(path: Path) -> pd.DataFrame:
    frame = read_csv_table(path, recover=RECOVER, required=REQUIRED_COLUMNS, kind=PER_SAMPLE_FILE)
    _numeric(frame, NUMERIC_COLUMNS, path)
    for column in BOOLEAN_COLUMNS:
        if frame[column].dtype != bool:
            # an empty file or a column written as 0/1: normalise, "True"/"False" text included
            frame[column] = frame[column].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    for column in ("attack", "backend", "norm"):
        frame[column] = frame[column].astype(str)
    return frame


def _check_finished(folder: Path, per_sample: pd.DataFrame) -> None:
    """The folder's marker is there, and its files and record count are what the marker lists."""
    if not (folder / EVAL_COMPLETE).is_file():
        raise UnfinishedEvaluationError(
            f"{folder} holds an unfinished evaluation: it has no {EVAL_COMPLETE} (the eval was stopped or ran out "
            f"of disk, or an older robustcam eval wrote it without markers); {RECOVER}"
        )
    marker = read_eval_marker(folder)
    missing = missing_eval_files(folder, marker)
    if missing:
        raise UnfinishedEvaluationError(
            f"{folder} lacks {', '.join(missing)}, which its {EVAL_COMPLETE} lists; {RECOVER}"
        )
    rows = marker.get(MARKER_ROWS)
    if rows is not None and rows != len(per_sample):
        raise UnfinishedEvaluationError(
            f"{folder / PER_SAMPLE_FILE} has {len(per_sample)} records but {EVAL_COMPLETE} says {rows}: the "
            f"folder mixes two evaluations; {RECOVER}"
        )


def _read_summary_json(path: Path) -> dict[str, Any]:
    info = read_json_object(path, recover=RECOVER)
    # the accessors below expect these to be mappings; a hand-edited file may hold null
    for key in ("config", "meta"):
        info[key] = info.get(key) if isinstance(info.get(key), dict) else {}
    if not isinstance(info["config"].get("checkpoint_meta"), dict):
        info["config"]["checkpoint_meta"] = {}
    info["flags"] = info.get("flags") if isinstance(info.get("flags"), list) else []
    return info


def _read_optional_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``summary.csv`` and ``maxboxacc_v2.csv`` (empty frames where absent)."""
    summary, maxboxacc = pd.DataFrame(), pd.DataFrame()
    if (folder / SUMMARY_FILE).is_file():
        summary = read_csv_table(folder / SUMMARY_FILE, recover=RECOVER, required=SUMMARY_COLUMNS, kind=SUMMARY_FILE)
        _numeric(summary, SUMMARY_NUMERIC, folder / SUMMARY_FILE)
    if (folder / MAXBOXACC_FILE).is_file():
        maxboxacc = read_csv_table(folder / MAXBOXACC_FILE, recover=RECOVER, kind=MAXBOXACC_FILE)
    return summary, maxboxacc


def load_evaluation(folder: str | Path, *, name: str | None = None) -> Evaluation:
    """Read one finished evaluation folder (it must hold ``per_sample.csv`` and its marker).

    Raises:
        UnfinishedEvaluationError: the folder has no marker, or less than its marker lists.
        CorruptFileError: one of its files cannot be read (the message names it).
    """
    folder = Path(folder)
    per_sample_path = folder / PER_SAMPLE_FILE
    if not per_sample_path.is_file():
        raise InputError(f"no evaluation in {folder}: {PER_SAMPLE_FILE} is missing")
    per_sample = _read_per_sample(per_sample_path)
    _check_finished(folder, per_sample)
    summary, maxboxacc = _read_optional_tables(folder)
    json_path = folder / SUMMARY_JSON_FILE
    info = _read_summary_json(json_path) if json_path.is_file() else {}
    meta = info.get("config", {}).get("checkpoint_meta", {})
    examples = folder / EXAMPLES_FILE
    return Evaluation(
        name=name or evaluation_name(folder),
        path=folder,
        per_sample=per_sample,
        summary=summary,
        info=info,
        loss=_loss_name(info, folder),
        noise=noise_text(meta.get("noise")),
        examples=examples if examples.is_file() else None,
        train_config=_train_config(info, folder),
        maxboxacc=maxboxacc,
    )


def _unique_names(folders: Sequence[Path]) -> list[str]:
    """Folder-derived names, with the parent folder prepended where two would collide."""
    base = [evaluation_name(f) for f in folders]
    names = list(base)
    for i, folder in enumerate(folders):
        if base.count(base[i]) > 1:
            owner = folder.resolve().parent if folder.resolve().name == EVAL_SUBFOLDER else folder.resolve()
            names[i] = f"{owner.parent.name}/{owner.name}"
    counts = Counter(names)
    taken: Counter[str] = Counter()
    unique = []
    for name in names:
        if counts[name] > 1:
            taken[name] += 1
            name = f"{name}#{taken[name]}"
        unique.append(name)
    return unique


def load_evaluations(paths: str | Path | Iterable[str | Path]) -> list[Evaluation]:
    """Every evaluation at or below ``paths`` (eval folders, run directories, sweep roots).

    Raises ``InputError`` (a ``ValueError``) naming what was looked for when a path holds no
    evaluation, and the errors of ``load_evaluation`` for a folder that is unfinished or
    cannot be read. Names are unique: where two folders would get the same name, the parent's is prepended.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise InputError("no paths given: pass eval folders, run directories or a folder that holds them")
    folders: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        for folder in find_evaluation_dirs(item):
            key = folder.resolve()
            if key not in seen:
                seen.add(key)
                folders.append(folder)
    names = _unique_names(folders)
    return [load_evaluation(folder, name=name) for folder, name in zip(folders, names)]


__all__ = [
    "Evaluation",
    "UnfinishedEvaluationError",
    "evaluation_name",
    "find_evaluation_dirs",
    "load_evaluation",
    "load_evaluations",
    "noise_text",
]
