"""Everything recorded about one example, from the forward pass ``forward_cams`` already does.

For each example: the model's prediction and logit margin, the perturbation's Linf and L2
norms, whether it lies in [0, 1], and (with CAM statistics) the negative-CAM statistics
(``robustcam.cam``), the peak gain of the predicted class over the clean input, the shift of
the true class's CAM peak, and, where the dataset has boxes, CAM localisation under every
protocol (``robustcam.cam.LOCALIZATION_PROTOCOLS``):

- ``adv_loc_iou_cvpr2016``, ``adv_loc_iou_minmax``: the IoU of the predicted class's box;
  cvpr2016 on the map without the head bias, taken from ``model.head.bias``.
- ``adv_loc_example``: for maxboxacc_v2, the example's row in ``maxboxacc_table()``, which
  holds the ground-truth class's best box IoU at every CAM threshold. The id, not the 100
  values, travels with the records: a row that reports an example measured earlier (a clean
  error, a cascade row inherited from a smaller eps) points at the same table row, so each
  measured example is stored once, and MaxBoxAccV2 of any setting is recomputable from
  ``per_sample.csv`` and the table.

The CAM part costs one einsum on the last feature maps, not another network pass; the
localisation uses the same maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from robustcam.cam import (
    CAM_CURVE_INTERVAL,
    LOCALIZATION_PROTOCOLS,
    MAXBOXACC_IOU_THRESHOLDS,
    TOP1_PROTOCOLS,
    cam_thresholds,
    localization_iou,
    maxboxacc_ious,
    negative_cam_stats,
    peak_location,
    resolve_topk,
)
from robustcam.layout import MAXBOXACC_FILE, MAXBOXACC_PREFIX
from robustcam.models import CAMClassifier
from robustcam.models.gradcam import GradCAMClassifier, mapped_classes

# measured quantities that are zero for a clean input (no perturbation)
PERTURBATION_COLUMNS = ("linf", "l2", "adv_peak_gain", "true_peak_shift")


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``Z_y - max_{c != y} Z_c`` per sample; negative means misclassified.

    >>> logit_margin(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0]))
    tensor([1.])
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


class Measurer:
    """Measures clean inputs and adversarial examples (see the module docstring).

    ``total`` is the number of evaluated samples; ``boxes`` their ground-truth boxes (or None).
    The clean CAM peaks it remembers are what the adversarial peak gain and peak shift compare to.
    """

    def __init__(
        self, model: CAMClassifier, total: int, *, cam_stats: bool, cam_topk: int | None, boxes: Tensor | None
    ) -> None:
        self.model = model
        self.cam_stats = cam_stats
        self.topk = resolve_topk(cam_topk, model.num_classes) if cam_stats else 0
        self.boxes = boxes
        # Grad-CAM maps exist for the true class and the top-k negatives only: other classes'
        # clean peaks stay NaN (an adversarial peak gain of a class not mapped clean is NaN)
        self.gradcam = isinstance(model, GradCAMClassifier)
        fill = float("nan") if self.gradcam else 0.0
        self.clean_peaks = torch.full((total, model.num_classes), fill) if cam_stats else torch.zeros(0)
        self.clean_true_peak = torch.zeros(total, 2, dtype=torch.long)
        self.image_size = (0, 0)
        # signed Grad-CAM maps carry no bias: the cvpr2016 rule's bias removal is the identity
        bias = None if self.gradcam else model.head.bias
        self.head_bias = bias.detach() if bias is not None else None
        self.thresholds = cam_thresholds(CAM_CURVE_INTERVAL)
        self.box_ious: list[Tensor] = []  # maxboxacc_v2: one (n, T) block per measured batch
        self.measured_examples = 0

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Logits (float32) and, with CAM statistics, raw maps of ``images``: every class's exact
        CAM (the third value None), or the signed Grad-CAM maps of the (N, 1 + k) classes the
        third value gives (the true class first, then the top-k negatives by logit)."""
        if not self.cam_stats:
            return self.model(images).float(), None, None
        if isinstance(self.model, GradCAMClassifier):
            logits, maps, classes = self.model.class_maps(images, labels, self.topk)
            return logits.float(), maps.float(), classes
        output = self.model.forward_cams(images)
        return output.logits.float(), output.cams.float(), None

    def forward_no_grad(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        with torch.no_grad():
            return self.forward(images, labels)

    def figure_maps(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and every class's maps (exact CAMs or signed Grad-CAM), for a few samples' figures."""
        with torch.no_grad():
            output = self.model.forward_cams(images)
        return output.logits.float(), output.cams.float()

    def figure_statistics(self, cams: Tensor, labels: Tensor, logits: Tensor | None) -> dict[str, Tensor]:
        """The negative-CAM statistics of every class's maps (``figure_maps``), as the evaluation
        records them: over every negative class for exact CAMs; for Grad-CAM maps (``logits``
        given) over the true class and the top-k negatives by logit only."""
        if not self.gradcam:
            return negative_cam_stats(cams, labels, k=self.topk)
        assert logits is not None, "Grad-CAM maps rank their negatives by the logits"
        classes = mapped_classes(logits, labels, self.topk)
        chosen = cams.gather(1, classes[:, :, None, None].expand(-1, -1, *cams.shape[2:]))
        return negative_cam_stats(chosen, torch.zeros_like(labels), k=self.topk)

    def _cam_values(
        self, cams: Tensor, labels: Tensor, pred: Tensor, rows: Tensor | slice, classes: Tensor | None
    ) -> dict[str, Tensor]:
        if classes is not None:  # the maps' own class order: the true class is column 0
            pred = _position(classes, pred)
            labels = torch.zeros_like(labels)
        stats = negative_cam_stats(cams, labels, k=self.topk)
        values = {f"adv_{name}": value.cpu() for name, value in stats.items()}
        if self.boxes is not None:
            values.update(self._localization(cams, labels, pred, self.boxes[rows]))
        return values

    def _remember_clean(self, cams: Tensor, labels: Tensor, rows: slice, classes: Tensor | None) -> None:
        peaks = cams.flatten(2).amax(2).cpu()
        index = torch.arange(len(labels), device=cams.device)
        if classes is None:
            self.clean_peaks[rows] = peaks
            true_maps = cams[index, labels]
        else:
            self.clean_peaks[rows] = self.clean_peaks[rows].scatter(1, classes.cpu(), peaks)
            true_maps = cams[:, 0]
        self.clean_true_peak[rows] = peak_location(true_maps).cpu()

    def _localization(self, cams: Tensor, labels: Tensor, pred: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        values = {
            f"adv_loc_iou_{protocol}": localization_iou(
                cams, pred, boxes, self.image_size, head_bias=self.head_bias, protocol=protocol
            )
            for protocol in TOP1_PROTOCOLS
        }
        self.box_ious.append(maxboxacc_ious(cams, labels, boxes, self.image_size, thresholds=self.thresholds))
        first = self.measured_examples
        self.measured_examples += len(labels)
        values["adv_loc_example"] = torch.arange(first, self.measured_examples)
        return values

    def absorb(self, blocks: list[Tensor]) -> None:
        """Take the maxboxacc_v2 blocks that an earlier run measured on a batch that is not
        measured again (a resumed evaluation's shard), as if measured here, in the same order."""
        self.box_ious.extend(blocks)
        self.measured_examples += sum(len(block) for block in blocks)

    def maxboxacc_table(self) -> pd.DataFrame:
        """``MAXBOXACC_FILE``: one row per measured example (``example``, the id in the
        ``clean_loc_example``/``adv_loc_example`` columns), then ``iou_at_<tau>``: the best
        box IoU of the ground-truth class's CAM at each threshold. Empty without boxes."""
        if not self.box_ious:
            return pd.DataFrame()
        columns = [f"{MAXBOXACC_PREFIX}{tau:g}" for tau in self.thresholds]
        table = pd.DataFrame(torch.cat(self.box_ious).numpy(), columns=columns)
        table.insert(0, "example", np.arange(len(table)))
        return table

    def localization_meta(self) -> dict[str, Any]:
        """What ``summary.json`` says about the localisation protocols (empty without boxes)."""
        if self.boxes is None:
            return {}
        return {
            "protocols": list(LOCALIZATION_PROTOCOLS),
            "head_bias_removed": self.head_bias is not None,
            "maxboxacc_v2": {
                "cam_curve_interval": CAM_CURVE_INTERVAL,
                "iou_thresholds": list(MAXBOXACC_IOU_THRESHOLDS),
                "file": MAXBOXACC_FILE,
            },
        }

    def measure_clean(
        self, images: Tensor, labels: Tensor, rows: slice, *, probe_gradient: bool = False
    ) -> tuple[dict[str, Tensor], int]:
        """The clean input as an example (zero perturbation); remembers its CAM peaks.

        With ``probe_gradient`` the same forward pass also gives the input gradient of the
        cross-entropy, and the second value counts samples whose gradient is all zero.
        """
        self.image_size = (int(images.shape[-2]), int(images.shape[-1]))
        zero_gradients = 0
        if probe_gradient and not self.gradcam:  # the same forward pass gives the gradient
            probe = images.clone().requires_grad_(True)
            logits, cams, classes = self.forward(probe, labels)
            zero_gradients = _zero_gradients(logits, labels, probe)
            logits, cams = logits.detach(), None if cams is None else cams.detach()
        else:  # Grad-CAM maps come from a graph cut at the CAM layer: the gradient takes a pass of its own
            if probe_gradient:
                probe = images.clone().requires_grad_(True)
                zero_gradients = _zero_gradients(self.model(probe), labels, probe)
            logits, cams, classes = self.forward_no_grad(images, labels)
        pred = logits.argmax(1)
        size = len(labels)
        values = {
            "adv_pred": pred.cpu(),
            "margin": logit_margin(logits, labels).cpu(),
            "linf": torch.zeros(size),
            "l2": torch.zeros(size),
        }
        if cams is not None:
            values.update(self._cam_values(cams, labels, pred, rows, classes))
            self._remember_clean(cams, labels, rows, classes)
            values["adv_peak_gain"] = torch.zeros(size)
            values["true_peak_shift"] = torch.zeros(size)
        return values, zero_gradients

    def measure(self, clean: Tensor, adversarial: Tensor, labels: Tensor, rows: Tensor) -> dict[str, Tensor]:
        """Measurements of adversarial examples of the clean inputs at positions ``rows``."""
        logits, cams, classes = self.forward_no_grad(adversarial, labels)
        pred = logits.argmax(1)
        delta = (adversarial - clean).flatten(1).float()
        flat = adversarial.flatten(1)
        values = {
            "adv_pred": pred.cpu(),
            "margin": logit_margin(logits, labels).cpu(),
            "linf": delta.abs().amax(1).cpu(),
            "l2": delta.norm(dim=1).cpu(),
            "in_range": ((flat.min(dim=1).values >= 0) & (flat.max(dim=1).values <= 1)).cpu(),
        }
        if cams is not None:
            values.update(self._cam_values(cams, labels, pred, rows, classes))
            index = torch.arange(len(labels), device=cams.device)
            peaks = cams.flatten(2).amax(2).cpu()
            pred_cpu = pred.cpu()
            own = pred_cpu if classes is None else _position(classes, pred).cpu()  # pred's column in ``cams``
            clean = self.clean_peaks[rows].gather(1, pred_cpu[:, None]).squeeze(1)
            values["adv_peak_gain"] = peaks.gather(1, own[:, None]).squeeze(1) - clean
            true_maps = cams[index, labels] if classes is None else cams[:, 0]
            moved = peak_location(true_maps).cpu() - self.clean_true_peak[rows]
            values["true_peak_shift"] = moved.float().norm(dim=1)
        return values


def _zero_gradients(logits: Tensor, labels: Tensor, probe: Tensor) -> int:
    """How many samples of ``probe`` get an all-zero input gradient of the cross-entropy."""
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), probe)
    return int((grad.flatten(1).abs().amax(1) == 0).sum())


def _position(classes: Tensor, chosen: Tensor) -> Tensor:
    """The column of each sample's ``chosen`` class in its row of ``classes`` (the prediction is
    always mapped: it is the true class or the top negative by logit)."""
    return (classes == chosen[:, None]).int().argmax(1)


__all__ = ["PERTURBATION_COLUMNS", "Measurer", "logit_margin"]
