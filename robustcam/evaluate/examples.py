"""A few samples with their raw CAMs, clean and adversarial: what the CAM figures draw.

``evaluate`` keeps the first ``EXAMPLE_COUNT`` samples of every evaluation (``examples.pt``);
``cam_examples`` attacks chosen samples for ``robustcam cam`` and returns the same record
with their negative-CAM statistics. Both build the record with the same functions, so one
figure function (``robustcam.report.plot_cam_grid``) draws either.

The record::

    {"indices", "labels", "clean_pred", "images", "cams",          # the clean samples
     "adv": {"<attack>/<backend>/<eps>": {"images", "cams", "pred"}}}

A Grad-CAM model's record also has ``"cam_method": "gradcam"`` and ``"logits"`` (clean and per
adversarial entry): its maps do not average to its logits, which rank the top negative class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import Tensor

from robustcam.attacks import Attack, check_supported, format_eps, get_backend
from robustcam.data import ImageDataset
from robustcam.data.batches import iterate_batches
from robustcam.evaluate.measure import Measurer
from robustcam.evaluate.sampling import attack_seed
from robustcam.models import CAMClassifier

EXAMPLE_COUNT = 8  # samples kept with their CAMs in examples.pt


def clean_record(measurer: Measurer, images: Tensor, labels: Tensor, indices: Tensor) -> dict[str, Any]:
    """Clean samples with their raw CAMs and predictions, and an empty ``adv`` mapping."""
    logits, cams = measurer.figure_maps(images)
    return {
        "indices": indices.cpu(),
        "labels": labels.cpu(),
        "clean_pred": logits.argmax(1).cpu(),
        "images": images.cpu(),
        "cams": cams.cpu(),
        "adv": {},
        **_gradcam_fields(measurer, logits),
    }


def adversarial_record(measurer: Measurer, images: Tensor) -> dict[str, Tensor]:
    """Adversarial images with their raw CAMs and predictions."""
    logits, cams = measurer.figure_maps(images)
    return {"images": images.cpu(), "cams": cams.cpu(), "pred": logits.argmax(1).cpu(), **_logits(measurer, logits)}


def _logits(measurer: Measurer, logits: Tensor) -> dict[str, Tensor]:
    """Grad-CAM records keep their logits: their maps do not average to them (exact CAMs do)."""
    return {"logits": logits.cpu()} if measurer.gradcam else {}


def _gradcam_fields(measurer: Measurer, logits: Tensor) -> dict[str, Any]:
    return {"cam_method": "gradcam", **_logits(measurer, logits)} if measurer.gradcam else {}


def example_key(attack: Attack, backend: str, eps: float | None) -> str:
    """``pgd/torchattacks/8/255`` (``.../min`` for a minimal attack run once)."""
    label = "min" if eps is None else format_eps(eps, attack.norm)
    return f"{attack.name}/{backend}/{label}"


@dataclass(frozen=True)
class CamExamples:
    """Chosen samples attacked once: the figure record and one row of statistics per sample."""

    examples: dict[str, Any]
    statistics: pd.DataFrame  # index, label, clean_pred, adv_pred, clean_<stat>, adv_<stat>
    key: str  # the example_key of the attack run


def cam_examples(
    model: CAMClassifier,
    dataset: ImageDataset,
    indices: Tensor,
    attack: Attack,
    *,
    backend: str,
    eps: float,
    seed: int,
) -> CamExamples:
    """Attack the samples at ``indices`` once (at ``eps``; a minimal attack ignores it) and
    record their CAMs and negative-CAM statistics, clean and adversarial."""
    check_supported(attack, backend)
    device = next(model.parameters()).device
    (batch,) = iterate_batches(dataset, len(indices), order=indices, device=device)
    measurer = Measurer(model, len(indices), cam_stats=True, cam_topk=None, boxes=None)
    budget = None if attack.kind == "minimal" else eps
    adversarial = get_backend(backend).run(
        attack, model, batch.images, batch.labels, budget, seed=attack_seed(seed, attack.name, backend, 0, 0)
    )
    examples = clean_record(measurer, batch.images, batch.labels, indices)
    key = example_key(attack, backend, eps)
    examples["adv"][key] = adversarial_record(measurer, adversarial)
    rows: dict[str, Any] = {
        "index": indices.tolist(),
        "label": batch.labels.tolist(),
        "clean_pred": examples["clean_pred"].tolist(),
        "adv_pred": examples["adv"][key]["pred"].tolist(),
    }
    labels = batch.labels.cpu()
    for prefix, record in (("clean", examples), ("adv", examples["adv"][key])):
        for name, values in measurer.figure_statistics(record["cams"], labels, record.get("logits")).items():
            rows[f"{prefix}_{name}"] = values.tolist()
    return CamExamples(examples, pd.DataFrame(rows), key)


__all__ = ["EXAMPLE_COUNT", "CamExamples", "adversarial_record", "cam_examples", "clean_record", "example_key"]
