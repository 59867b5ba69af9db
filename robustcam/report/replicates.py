"""Seeds as replicates: checkpoints that differ only in a seed are one configuration.

Two checkpoints trained from the same config except for a seed (``seed``, ``noise.seed``,
``data.options.seed``: any key whose last part is ``seed``) and where they ran (device,
loader workers, data root) are replicates of one *configuration*. A model-level
correlation has one point per configuration, the mean over its replicates, so three seeds
of one loss are not counted as three independent checkpoints; the spread over seeds is
kept beside each mean (``<column>_sd``, the sample standard deviation, NaN for one seed).

``configuration_values`` flattens each checkpoint's resolved train config to dotted keys
and keeps the keys whose values differ between configurations: the design the
checkpoints form (``loss.name``, ``loss.hnc.weight``, ``noise.rate`` ...). An evaluation
without a recorded train config (a bare state_dict) is a configuration of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from robustcam.report.load import Evaluation
from robustcam.report.tables import SD_SUFFIX

# keys that say where a checkpoint ran or read its data, not what it computed
PLACEMENT_KEYS = ("device", "num_workers", "data.root", "data.download", "eval_batch_size")
SEED_SUFFIX = "seed"
KEY_COLUMNS = ("configuration", "n_replicates", "seeds", "members")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping: ``{"loss": {"hnc": {"weight": 0.1}}}`` -> ``{"loss.hnc.weight": 0.1}``.

    >>> flatten({"loss": {"name": "hnc", "hnc": {"weight": 0.1}}, "seed": 0})
    {'loss.name': 'hnc', 'loss.hnc.weight': 0.1, 'seed': 0}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def is_seed_key(key: str) -> bool:
    """``seed``, ``noise.seed``, ``data.options.seed``: keys that only pick a random stream."""
    return key.rsplit(".", 1)[-1] == SEED_SUFFIX


def replicate_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two checkpoints the same configuration: the flat config without seeds and placement."""
    return {k: v for k, v in flatten(config).items() if not is_seed_key(k) and k not in PLACEMENT_KEYS}


def _loss_section_only(key: dict[str, Any]) -> dict[str, Any]:
    """Drop the parameters of losses the config does not use: switching ``loss.name`` keeps
    every loss's section in the file, and those are not part of the design."""
    name = key.get("loss.name")
    if name is None:
        return key
    keep: dict[str, Any] = {}
    for k, v in key.items():
        parts = k.split(".")
        if parts[0] == "loss" and len(parts) > 2 and parts[1] != name:
            continue
        keep[k] = v
    return keep


def _seed(evaluation: Evaluation) -> Any:
    seed = evaluation.train_config.get("seed", evaluation.checkpoint_meta.get("seed"))
    return seed if seed is not None else math.nan


def configuration_values(evaluations: Sequence[Evaluation]) -> pd.DataFrame:
    """One row per evaluation: ``name``, ``configuration`` (a short label), ``seed``, and one
    column per config key whose value differs between configurations (the design's factors).

    Evaluations without a train config get their own configuration, labelled by name.
    """
    keys = []
    for evaluation in evaluations:
        config = evaluation.train_config
        keys.append(_loss_section_only(replicate_key(config)) if config else None)
    present = [k for k in keys if k is not None]
    all_keys = list(dict.fromkeys(k for key in present for k in key))
    # a key varies when it takes two or more values where it is set: loss.hnc.weight is only set
    # for hnc checkpoints, and one value there is a constant of the design, not a factor
    varying = [
        k
        for k in all_keys
        if len({json.dumps(key[k], sort_keys=True, default=str) for key in present if key.get(k) is not None}) > 1
    ]
    rows = []
    for evaluation, key in zip(evaluations, keys):
        row: dict[str, Any] = {"name": evaluation.name, "seed": _seed(evaluation)}
        if key is None:
            row["configuration"] = evaluation.name
            row["_identity"] = f"name:{evaluation.name}"
        else:
            values = {k: key.get(k) for k in varying}
            row.update(values)
            shown = {k: v for k, v in values.items() if v is not None}
            row["configuration"] = ", ".join(f"{k}={_short(v)}" for k, v in shown.items()) or "base"
            row["_identity"] = json.dumps(key, sort_keys=True, default=str)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["name", "configuration", "seed", *varying, "_identity"])
    # two configurations with the same label (they differ in a key that is not varying among the
    # others, e.g. a bare state_dict named like a label) stay apart
    labels = frame.groupby("configuration")["_identity"].nunique()
    clashing = set(labels[labels > 1].index)
    frame["configuration"] = [
        f"{c} [{n}]" if c in clashing else c for c, n in zip(frame["configuration"], frame["name"])
    ]
    return frame.drop(columns="_identity")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def configuration_table(models: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """The model table averaged over seed replicates: one row per configuration.

    Columns: ``configuration``, ``n_replicates``, ``seeds`` (``0,1,2``), ``members`` (the
    checkpoint names), the design's varying config keys, ``loss`` and ``noise``, then for
    every numeric model-table column its mean over the replicates and ``<column>_sd``
    (sample standard deviation over the replicates; NaN for a single replicate). Rows keep the
    order in which configurations first appear.
    """
    if models.empty:
        return pd.DataFrame(columns=list(KEY_COLUMNS))
    merged = models.merge(values, on="name", how="left", validate="one_to_one")
    factor_columns = [c for c in values.columns if c not in ("name", "configuration", "seed")]
    numeric = [
        c
        for c in models.columns
        if c not in ("name", *factor_columns)
        and pd.api.types.is_numeric_dtype(models[c])
        and not pd.api.types.is_bool_dtype(models[c])
    ]
    rows = []
    for label, group in merged.groupby("configuration", sort=False):
        row: dict[str, Any] = {
            "configuration": label,
            "n_replicates": len(group),
            "seeds": ",".join(_short(s) for s in group["seed"] if not (isinstance(s, float) and math.isnan(s))),
            "members": ",".join(str(n) for n in group["name"]),
        }
        for column in factor_columns:
            row[column] = group[column].iloc[0]
        for column in ("loss", "noise"):
            if column in group.columns:
                row[column] = _joined(group[column])
        for column in numeric:
            series = pd.to_numeric(group[column], errors="coerce").to_numpy(dtype=float)
            finite = series[np.isfinite(series)]
            row[column] = float(finite.mean()) if len(finite) else math.nan
            row[f"{column}{SD_SUFFIX}"] = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
        rows.append(row)
    ordered = [*KEY_COLUMNS, *factor_columns, "loss", "noise"]
    frame = pd.DataFrame(rows)
    rest = [c for c in frame.columns if c not in ordered]
    return frame[[c for c in ordered if c in frame.columns] + rest]


def _joined(series: pd.Series) -> str:
    return "/".join(str(v) for v in dict.fromkeys(series))


def has_replicates(configurations: pd.DataFrame) -> bool:
    """Whether any configuration holds more than one seed."""
    return bool(len(configurations)) and bool((configurations["n_replicates"] > 1).any())


__all__ = [
    "configuration_table",
    "configuration_values",
    "flatten",
    "has_replicates",
    "is_seed_key",
    "replicate_key",
]
