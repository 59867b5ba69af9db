"""Negative-CAM peak statistics and CAM localisation.

A negative CAM is the map ``M_c`` of a class ``c`` that is not the true class
``y``; a peak in it is evidence for an absent class. The statistics here work
on raw CAMs (``CAMClassifier.forward_cams``): normalising a map would destroy
exactly the peak magnitudes they measure. Every function is a pure function on
tensors that returns one value per sample.

- ``neg_peak_max``: the highest value in any negative CAM.
- ``neg_peak_topk``: the mean, over the top-k negative classes by logit, of each map's maximum.
- ``neg_homogeneity``: the HNC ``kd`` quantity (Sun et al., ECCV 2020) as a divergence:
  ``KL(U || softmax(M_c))`` of the uniform map from the spatial softmax, averaged
  over the top-k negative classes; 0 exactly when every such map is flat.
- ``neg_positive_frac``: the fraction of negative-CAM pixels above 0.
- ``pos_peak``: the maximum of the true class's CAM; ``peak_margin = pos_peak - neg_peak_max``.

Localisation follows the CAM paper (Zhou et al., CVPR 2016): threshold the
(min-max normalised) map at 20% of its maximum, box the largest connected
component, and count a hit when the box overlaps the ground truth with IoU >= 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TOPK = 5
STAT_NAMES = (
    "neg_peak_max", "neg_peak_topk", "neg_homogeneity", "neg_positive_frac", "pos_peak", "peak_margin",
)  # fmt: skip


def _check(cams: Tensor, target: Tensor) -> None:
    if cams.ndim != 4:
        raise ValueError(f"cams must have shape (N, C, h, w), got {tuple(cams.shape)}")
    if target.shape != (cams.shape[0],):
        raise ValueError(f"target must have shape ({cams.shape[0]},), got {tuple(target.shape)}")
    if cams.shape[1] < 2:
        raise ValueError("cams need at least 2 classes to have negative classes")


def resolve_topk(k: int | None, num_classes: int) -> int:
    """``k`` negative classes, default ``min(5, C - 1)``; must be in [1, C - 1]."""
    chosen = min(DEFAULT_TOPK, num_classes - 1) if k is None else k
    if not 1 <= chosen < num_classes:
        raise ValueError(f"k must be in [1, {num_classes - 1}] for {num_classes} classes, got {chosen}")
    return chosen


def negative_cam_stats(cams: Tensor, target: Tensor, *, k: int | None = None) -> dict[str, Tensor]:
    """Per-sample statistics of the negative CAMs (raw maps, shape (N, C, h, w)).

    Returns a dict of float tensors of shape (N,) with the keys in ``STAT_NAMES``.
    Top-k negative classes are ranked by logit ``mean_{x,y} M_c``; ``k`` defaults to
    ``min(5, C - 1)``.

    >>> cams = torch.zeros(1, 3, 2, 2); cams[0, 1, 0, 0] = 4.0  # a spike in class 1's map
    >>> stats = negative_cam_stats(cams, torch.tensor([0]), k=1)
    >>> float(stats["neg_peak_max"]), float(stats["neg_positive_frac"]), float(stats["peak_margin"])
    (4.0, 0.125, -4.0)
    """
    _check(cams, target)
    cams = cams.detach().float()
    n, num_classes, height, width = cams.shape
    k = resolve_topk(k, num_classes)
    rows = torch.arange(n, device=cams.device)
    flat = cams.flatten(2)  # (N, C, hw)
    peaks = flat.amax(dim=2)  # (N, C)
    negative = torch.ones_like(peaks, dtype=torch.bool)
    negative[rows, target] = False

    neg_peak_max = peaks.masked_fill(~negative, float("-inf")).amax(dim=1)
    logits = flat.mean(dim=2).masked_fill(~negative, float("-inf"))
    top = logits.topk(k, dim=1).indices  # (N, k)
    top_peaks = peaks.gather(1, top)
    top_maps = flat.gather(1, top[:, :, None].expand(-1, -1, flat.shape[2]))
    # KL(U || p) = -log(hw) - mean_j log p_j; 0 for a flat map
    log_p = F.log_softmax(top_maps, dim=2)
    homogeneity = (-math.log(height * width) - log_p.mean(dim=2)).clamp_min(0.0).mean(dim=1)
    positive = (flat > 0) & negative[:, :, None]
    positive_frac = positive.flatten(1).sum(dim=1).float() / ((num_classes - 1) * height * width)
    pos_peak = peaks[rows, target]
    return {
        "neg_peak_max": neg_peak_max,
        "neg_peak_topk": top_peaks.mean(dim=1),
        "neg_homogeneity": homogeneity,
        "neg_positive_frac": positive_frac,
        "pos_peak": pos_peak,
        "peak_margin": pos_peak - neg_peak_max,
    }


def peak_location(maps: Tensor) -> Tensor:
    """(row, col) of each (h, w) map's maximum, shape (N, 2), for maps of shape (N, h, w)."""
    flat_index = maps.flatten(1).argmax(dim=1)
    width = maps.shape[-1]
    return torch.stack([flat_index // width, flat_index % width], dim=1)


def peak_shift(clean_maps: Tensor, adversarial_maps: Tensor) -> Tensor:
    """Euclidean distance, in CAM cells, between the argmax locations of two sets of maps (N, h, w)."""
    return (peak_location(clean_maps) - peak_location(adversarial_maps)).float().norm(dim=1)


# --------------------------------------------------------------------------- localisation


def cam_box(cam: np.ndarray, *, threshold: float = 0.2) -> tuple[int, int, int, int] | None:
    """The CVPR 2016 box: keep the values above ``threshold`` of the map's range, box the
    largest connected component (scipy.ndimage, 4-connectivity).

    ``cam`` is a (H, W) map at image resolution. Raw CAMs can be negative (the head
    bias is included), so the map is min-max normalised first, as the usual WSOL
    evaluation code does. Returns ``(x0, y0, x1, y1)`` with an exclusive upper corner,
    or None for a constant map.
    """
    from scipy import ndimage

    low, high = float(cam.min()), float(cam.max())
    if not high > low:
        return None
    mask = (cam - low) / (high - low) >= threshold
    labelled, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labelled, index=np.arange(1, count + 1))
    largest = int(np.argmax(sizes)) + 1
    rows, cols = np.nonzero(labelled == largest)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (exclusive upper corners)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def localization_iou(cams: Tensor, classes: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """IoU between each sample's CAM box (for ``classes``) and its ground-truth box.

    ``cams`` (N, C, h, w) raw maps are upsampled bilinearly to ``image_size`` before
    thresholding, as in the CAM paper. Returns (N,) IoUs (0 where no box is found).
    """
    chosen = cams.detach().float()[torch.arange(len(classes)), classes][:, None]
    upsampled = F.interpolate(chosen, size=image_size, mode="bilinear", align_corners=False)[:, 0]
    ious = []
    for cam, truth in zip(upsampled.cpu().numpy(), boxes.cpu().tolist()):
        box = cam_box(cam)
        ious.append(0.0 if box is None else box_iou(box, tuple(truth)))
    return torch.tensor(ious)
