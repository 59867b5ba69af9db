"""One checkpoint through the attack matrix (attack x eps x backend) -> per-sample records.

``evaluate`` is a short coordinator over the parts of this package:

- ``sampling``: which samples (a seeded subset) and the seed of every attack run;
- ``measure``: everything recorded about an example, from one forward pass;
- ``jobs``: the clean pass, then one job per (attack, backend), with the eps cascade;
- ``records``: scoring each run into per-sample rows and collecting them;
- ``summary``: the summary rows, a pure function of the records;
- ``sanity``: the flags that say when an evaluation cannot be trusted;
- ``examples``: a few samples with their CAMs for figures (and ``robustcam cam``);
- ``shards``: every finished (job, batch) on disk, so that a killed evaluation resumes;
- ``files``: the files an evaluation writes.

It streams the dataset in batches and keeps only per-sample numbers: adversarial images are
discarded after each batch (or written to ``adv_dir``). Every adversarial example is checked
after the attack: re-predicted by the model (the recorded prediction is the model's, never
the library's flag), inside [0, 1], and inside its eps ball (+1e-6). A violation is recorded
and flagged, never clipped away, and an invalid example does not count as a break. Robust
accuracy counts clean errors as non-robust (AutoAttack's convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from robustcam.attacks import (
    BACKENDS,
    Attack,
    BoundedAttack,
    Norm,
    build_attack,
    check_supported,
    list_attacks,
)
from robustcam.config import EvalConfig, validate_config
from robustcam.data import ImageDataset
from robustcam.errors import InputError
from robustcam.evaluate.examples import EXAMPLE_COUNT, CamExamples, cam_examples
from robustcam.evaluate.files import write_eval
from robustcam.evaluate.jobs import CleanPass, EvalContext, JobOutcome, clean_pass, run_job
from robustcam.evaluate.measure import Measurer, logit_margin
from robustcam.evaluate.records import BUDGET_TOLERANCE
from robustcam.evaluate.result import EvalProgress, EvalResult
from robustcam.evaluate.sampling import attack_seed, select_samples
from robustcam.evaluate.sanity import (
    SanityFlag,
    attack_amp_warning,
    large_eps_check,
    sanity_flags,
    zero_gradient_flag,
)
from robustcam.evaluate.shards import ShardMismatchError, ShardStore, evaluation_identity, open_shards
from robustcam.evaluate.summary import backend_agreement, summarize
from robustcam.models.gradcam import cam_method
from robustcam.layout import DEFAULT_EPS, DEFAULT_EPS_L2, RECORD_COLUMNS
from robustcam.models import CAMClassifier
from robustcam.runtime import eval_mode, library_versions, resolve_attack_amp

_MATRIX_DEFAULTS: dict[str, Any] = {
    "eps": DEFAULT_EPS,
    "eps_l2": DEFAULT_EPS_L2,
    "backends": None,
    "n": None,
    "batch_size": 256,
    "cascade": True,
    "seed": 0,
    "sanity": True,
    "cam_stats": True,
    "cam_topk": None,
}


def matrix_config(attacks: Sequence[Attack | str], **matrix: Any) -> EvalConfig:
    """An ``EvalConfig`` from attack names or built attacks and the matrix keywords of
    ``evaluate`` (``None`` budgets: none of that norm), validated like a config file."""
    if not attacks:
        raise InputError(f"no attacks given; valid: {', '.join(list_attacks())}")
    built = [build_attack(a) if isinstance(a, str) else a for a in attacks]
    names = [attack.name for attack in built]
    if len(set(names)) != len(names):
        raise InputError(f"each attack may appear once, got {', '.join(names)}")
    # only what differs from the defaults counts as given: a default L2 list is not an error
    # for a Linf-only matrix, as it would be in a config file that names it
    raw = {key: value for key, value in matrix.items() if value != _MATRIX_DEFAULTS[key]}
    for key in ("eps", "eps_l2"):
        if key in raw:
            raw[key] = list(raw[key] or [])
    chosen = matrix.get("backends")
    raw["backends"] = None if chosen is None else list(chosen)
    for name in raw["backends"] or ():
        BACKENDS.get(name)  # unknown names list the valid ones
    for attack in built:  # the Python API raises the library's own error types, not a ConfigError
        if chosen is not None and not any(attack.supports(backend) for backend in chosen):
            check_supported(attack, raw["backends"][0])
    raw.update(attacks=names, attack_params={a.name: a.params() for a in built})
    config: EvalConfig = validate_config(EvalConfig, raw, source="evaluate()")
    return config


def evaluate(
    model: CAMClassifier,
    dataset: ImageDataset,
    attacks: EvalConfig | Sequence[Attack | str],
    *,
    eps: Sequence[str | float] | None = DEFAULT_EPS,
    eps_l2: Sequence[str | float] | None = DEFAULT_EPS_L2,
    backends: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 256,
    cascade: bool = True,
    seed: int = 0,
    sanity: bool = True,
    cam_stats: bool = True,
    cam_topk: int | None = None,
    adv_dir: str | Path | None = None,
    progress: EvalProgress | None = None,
    shard_dir: str | Path | None = None,
    resume: bool = True,
) -> EvalResult:
    """Attack ``model`` on ``dataset`` with every (attack, backend, eps) and return the records.

    Args:
        model: a ``CAMClassifier``; evaluated in eval mode on the device its parameters are on,
            and left in the mode it was in.
        dataset: the evaluation split; images in [0, 1] (anything else is an error, not a clamp).
        attacks: the validated eval config (``robustcam.config.EvalConfig``), or attack names /
            built ``Attack`` objects with the matrix given by the keywords below, which are then
            validated into an ``EvalConfig`` (the same checks as a config file).
        eps: Linf budgets in pixel units (``8/255`` or floats); None: none.
        eps_l2: L2 budgets (bounded L2 attacks attack at them, minimal ones are scored at them).
        backends: attack libraries (``torchattacks``, ``foolbox``, ``autoattack``); None: each
            attack's own default (``Attack.default_backend``).
        n: evaluate a seeded random subset of this size (default: every sample).
        batch_size: samples per attack call.
        cascade: attack a larger eps only where a smaller one failed (``robustcam.evaluate.jobs``).
        seed: seeds sample selection and every random start.
        sanity: run the sanity checks (gradient masking, large-eps PGD, ...).
        cam_stats: record negative-CAM statistics of every clean and adversarial example and keep
            a few examples with their CAMs for figures.
        cam_topk: k of the top-k negative-class statistics (default ``min(5, C - 1)``).
        adv_dir: if given, adversarial examples are saved there, one file per batch.
        progress: receives job start/resume/advance/end events.
        shard_dir: if given, every finished (job, batch) is written there
            (``robustcam.evaluate.shards``), and the batches whose shards an earlier call with
            the same config, model and dataset left there are read back, not attacked: the
            result is the one an uninterrupted call gives (attack times aside). The shards stay;
            remove them once the result is saved (``robustcam.runs.evaluate_into`` does).
        resume: with ``shard_dir``, reuse the shards there; False removes them first.

    Raises:
        ShardMismatchError: ``shard_dir`` holds shards of another config, model or dataset.
    """
    matrix = {
        "eps": eps,
        "eps_l2": eps_l2,
        "backends": backends,
        "n": n,
        "batch_size": batch_size,
        "cascade": cascade,
        "seed": seed,
        "sanity": sanity,
        "cam_stats": cam_stats,
        "cam_topk": cam_topk,
    }
    if isinstance(attacks, EvalConfig):
        given = sorted(k for k, v in matrix.items() if v != _MATRIX_DEFAULTS[k])
        if given:
            raise TypeError(f"give the matrix in the EvalConfig, not as keywords ({', '.join(given)})")
        config = attacks
    else:
        config = matrix_config(attacks, **matrix)
    _check_fits(model, dataset)
    with eval_mode(model):
        shards = None
        if shard_dir is not None:
            shards = open_shards(shard_dir, evaluation_identity(config, model, dataset), resume=resume)
        return _evaluate(
            model,
            dataset,
            config,
            adv_dir=Path(adv_dir) if adv_dir is not None else None,
            progress=progress or EvalProgress(),
            shards=shards,
        )


def _check_fits(model: CAMClassifier, dataset: ImageDataset) -> None:
    info = dataset.info
    if info.num_classes != model.num_classes:
        raise InputError(
            f"dataset {info.name!r} has {info.num_classes} classes but the model has {model.num_classes} outputs"
        )
    if info.in_channels != model.in_channels:
        raise InputError(
            f"dataset {info.name!r} has {info.in_channels} channels but the model expects {model.in_channels}"
        )


def _evaluate(
    model: CAMClassifier,
    dataset: ImageDataset,
    config: EvalConfig,
    *,
    adv_dir: Path | None,
    progress: EvalProgress,
    shards: ShardStore | None = None,
) -> EvalResult:
    attacks = config.build_attacks()
    jobs, notes = config.jobs()
    budgets = config.budgets()
    positions = select_samples(len(dataset), config.n, config.seed)
    boxes = dataset.boxes[positions] if config.cam_stats and dataset.boxes is not None else None
    measurer = Measurer(model, len(positions), cam_stats=config.cam_stats, cam_topk=config.cam_topk, boxes=boxes)
    context = EvalContext(
        model,
        dataset,
        positions,
        measurer,
        config.batch_size,
        config.seed,
        config.cascade,
        progress,
        adv_dir,
        keep_examples=config.cam_stats,
        shards=shards,
        attack_dtype=resolve_attack_amp(config.attack_amp, next(model.parameters()).device),
    )
    clean = clean_pass(context, probe=config.sanity)
    outcomes = [
        (attack, backend, run_job(attack, backend, budgets[attack.norm], clean, context)) for attack, backend in jobs
    ]
    per_sample = _records(outcomes)
    if config.cam_stats:  # every record says which maps its CAM statistics come from
        per_sample["cam_method"] = cam_method(model)
    summary = summarize(per_sample, clean_pred=clean.pred, labels=clean.labels)
    timings = [t for attack, backend, o in outcomes for t in o.timings(attack, backend, budgets[attack.norm])]
    if timings:
        summary = summary.merge(pd.DataFrame(timings), on=["attack", "backend", "norm", "eps"], how="left")
    agreement = backend_agreement(per_sample)
    flags = _flags(config, attacks, notes, summary, agreement, clean, context)
    flags += [
        SanityFlag("library_check", f"{attack.name} ({backend}): {note}")
        for attack, backend, outcome in outcomes
        for note in outcome.notes
    ]
    examples = _examples(clean, outcomes)
    meta = _meta(config, attacks, budgets, clean, context)
    return EvalResult(per_sample, summary, tuple(flags), agreement, meta, examples, measurer.maxboxacc_table())


def _records(outcomes: Sequence[tuple[Attack, str, JobOutcome]]) -> pd.DataFrame:
    records = outcomes[0][2].records if outcomes else None
    for _, _, outcome in outcomes[1:]:
        assert records is not None
        records.extend(outcome.records)
    return records.to_frame() if records is not None else pd.DataFrame(columns=list(RECORD_COLUMNS))


def _examples(clean: CleanPass, outcomes: Sequence[tuple[Attack, str, JobOutcome]]) -> dict[str, Any] | None:
    if not clean.examples:
        return None
    for _, _, outcome in outcomes:
        if outcome.example is not None:
            key, record = outcome.example
            clean.examples["adv"][key] = record
    return clean.examples


def _flags(
    config: EvalConfig,
    attacks: Sequence[Attack],
    notes: Sequence[str],
    summary: pd.DataFrame,
    agreement: pd.DataFrame,
    clean: CleanPass,
    context: EvalContext,
) -> list[SanityFlag]:
    flags = sanity_flags(summary, agreement, n_samples=len(context.positions))
    zero = zero_gradient_flag(clean.zero_gradients, clean.probed)
    if zero is not None:
        flags.append(zero)
    if config.sanity and any(isinstance(a, BoundedAttack) and a.norm == "Linf" for a in attacks):
        large = large_eps_check(
            context.model,
            context.dataset,
            context.positions,
            clean.correct,
            seed=config.seed,
            batch_size=config.batch_size,
        )
        if large is not None:
            flags.append(large)
    flags += [SanityFlag("backend_skipped", note) for note in notes]
    if context.attack_dtype is not None:
        flags.append(SanityFlag("attack_amp", attack_amp_warning(config.attack_amp)))
    return flags


def _meta(
    config: EvalConfig,
    attacks: Sequence[Attack],
    budgets: dict[Norm, list[float]],
    clean: CleanPass,
    context: EvalContext,
) -> dict[str, Any]:
    total = len(context.positions)
    measurer = context.measurer
    return {
        "n_samples": total,
        "sample_seed": config.seed,
        "clean_accuracy": float(clean.correct.float().mean()) if total else math.nan,
        "attacks": [
            {"name": a.name, "norm": a.norm, "minimal": a.kind == "minimal", "kind": a.kind, "params": a.params()}
            for a in attacks
        ],
        "backends": config.backends_used(),
        "eps": budgets["Linf"],
        "eps_l2": budgets["L2"],
        "cascade": config.cascade,
        "attack_amp": config.attack_amp,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "device": str(context.device),
        "dataset": context.dataset.info.to_dict(),
        "versions": library_versions(),
        "cam_stats": {
            "enabled": config.cam_stats,
            "topk": measurer.topk if config.cam_stats else None,
            "method": cam_method(measurer.model),
            "cam_layer": getattr(measurer.model, "cam_layer", None),
            "localization": measurer.boxes is not None,
            "localization_protocols": measurer.localization_meta(),
        },
    }


__all__ = [
    "BUDGET_TOLERANCE",
    "DEFAULT_EPS",
    "DEFAULT_EPS_L2",
    "EXAMPLE_COUNT",
    "RECORD_COLUMNS",
    "CamExamples",
    "EvalProgress",
    "EvalResult",
    "SanityFlag",
    "ShardMismatchError",
    "attack_seed",
    "backend_agreement",
    "cam_examples",
    "evaluate",
    "large_eps_check",
    "logit_margin",
    "matrix_config",
    "sanity_flags",
    "select_samples",
    "summarize",
    "write_eval",
]
