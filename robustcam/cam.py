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

CAM localisation comes in three named protocols (``LOCALIZATION_PROTOCOLS``), because
the literature uses the same words for different rules:

- ``cvpr2016`` (the default; Zhou et al., "Learning Deep Features for Discriminative
  Localization", CVPR 2016): the predicted class's CAM without the head bias,
  ``M_c - b_c``, upsampled bilinearly, negatives clipped to 0, divided by its max,
  kept where ``>= 0.2``; the box of the largest 8-connected component; a top-1 hit is
  a correct prediction whose box has IoU >= 0.5 with the ground truth.
- ``minmax``: the rule of the later WSOL re-implementations, and robustcam's only
  rule before protocols were named: ``(M - min M) / (max M - min M) >= 0.2``, the
  largest 4-connected component, the same top-1 hit.
- ``maxboxacc_v2`` (Choe et al., "Evaluating Weakly Supervised Object Localization
  Methods Right", CVPR 2020): the ground-truth class's CAM, min-max normalised, every
  threshold ``tau`` of a grid, boxes of *all* components; ``BoxAcc(tau, delta)`` is the
  fraction of images with a box of IoU >= delta, ``MaxBoxAcc(delta) = max_tau
  BoxAcc(tau, delta)`` (the threshold chosen on the whole evaluation) and
  ``MaxBoxAccV2 = mean over delta in {0.3, 0.5, 0.7}``. Per sample it needs the best
  box IoU at every threshold (``maxboxacc_ious``); ``max_box_accuracy`` aggregates.
"""

from __future__ import annotations

import difflib
import math
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TOPK = 5
STAT_NAMES = (
    "neg_peak_max",
    "neg_peak_topk",
    "neg_homogeneity",
    "neg_positive_frac",
    "pos_peak",
    "peak_margin",
)


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

LocalizationProtocol = Literal["cvpr2016", "minmax", "maxboxacc_v2"]
LOCALIZATION_PROTOCOLS: tuple[LocalizationProtocol, ...] = get_args(LocalizationProtocol)
DEFAULT_LOCALIZATION_PROTOCOL: LocalizationProtocol = "cvpr2016"
# the protocols with one box per sample (the predicted class's), scored as top-1 localisation
TOP1_PROTOCOLS: tuple[LocalizationProtocol, ...] = ("cvpr2016", "minmax")
CAM_THRESHOLD = 0.2
TOP1_HIT_IOU = 0.5
MAXBOXACC_IOU_THRESHOLDS = (0.3, 0.5, 0.7)
CAM_CURVE_INTERVAL = 0.01
# minmax keeps the 4-connectivity robustcam always used, so records written before the
# protocols were named are minmax records exactly; cvpr2016 (and maxboxacc_v2, in
# threshold_box_ious) use 8, the connectivity of OpenCV's contour tracing, with which the
# CAM release code and Choe et al.'s code find their regions
_CONNECTIVITY: dict[LocalizationProtocol, int] = {"cvpr2016": 8, "minmax": 4}
_SCOREMAP_LEVELS = 255  # Choe et al. threshold the map as an 8-bit image

Box = tuple[int, int, int, int]


def check_protocol(name: str) -> LocalizationProtocol:
    """``name`` as a ``LocalizationProtocol``; a ValueError listing the valid names otherwise."""
    for protocol in LOCALIZATION_PROTOCOLS:
        if name == protocol:
            return protocol
    close = difflib.get_close_matches(str(name), LOCALIZATION_PROTOCOLS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown localisation protocol {name!r}{hint}; valid: {', '.join(LOCALIZATION_PROTOCOLS)}")


def _check_top1(protocol: str) -> LocalizationProtocol:
    checked = check_protocol(protocol)
    if checked not in TOP1_PROTOCOLS:
        raise ValueError(
            f"protocol {checked!r} has no single box per sample (use maxboxacc_ious); valid here: "
            f"{', '.join(TOP1_PROTOCOLS)}"
        )
    return checked


def max_normalized(cam: np.ndarray) -> np.ndarray | None:
    """The CVPR 2016 normalisation ``max(M, 0) / max(M)``; None when no value is above 0.

    Clipping changes no pixel above a positive threshold (``M / max M >= 0.2`` needs
    ``M > 0``); what it changes is a map with no positive value, which has no box
    instead of a box around its least negative values.
    """
    clipped = np.maximum(cam, 0.0)
    peak = float(clipped.max())
    return clipped / peak if peak > 0 else None


def minmax_normalized(cam: np.ndarray) -> np.ndarray | None:
    """``(M - min M) / (max M - min M)`` in [0, 1]; None for a constant map.

    Computed as ``normalize_scoremap`` of Choe et al. (shift, then divide by the shifted
    maximum), so the maximum is exactly 1 in the map's own precision.
    """
    shifted = cam - cam.min()
    peak = shifted.max()
    return shifted / peak if peak > 0 else None


def component_boxes(mask: np.ndarray, *, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(x0, y0, x1, y1)`` (exclusive upper corners, shape (K, 4)) and pixel counts
    (K,) of the connected components of a boolean (H, W) mask, in scipy.ndimage label order
    (raster order of each component's first pixel). ``connectivity`` is 4 or 8."""
    from scipy import ndimage

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labelled, count = ndimage.label(mask, structure=structure)
    slices = ndimage.find_objects(labelled)
    boxes = np.array([(cols.start, rows.start, cols.stop, rows.stop) for rows, cols in slices], dtype=np.int64)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    return boxes.reshape(-1, 4), sizes


def cam_box(
    cam: np.ndarray, protocol: LocalizationProtocol = DEFAULT_LOCALIZATION_PROTOCOL, *, threshold: float = CAM_THRESHOLD
) -> Box | None:
    """The single box of a top-1 protocol for one (H, W) map at image resolution.

    - ``cvpr2016``: ``max(M, 0) / max(M) >= threshold``, the largest 8-connected component.
      ``M`` must be the CAM without the head bias (``localization_iou`` removes it).
    - ``minmax``: ``(M - min M) / (max M - min M) >= threshold``, the largest 4-connected
      component (robustcam's rule before protocols were named).

    The box is the component's pixel extent, ``(x0, y0, x1, y1)`` with exclusive upper
    corners, like the ground-truth boxes of ``digits_scene``; None when the map has no box
    (constant, or for cvpr2016 nothing above 0). Ties in size go to the first component in
    raster order.

    cvpr2016 follows the paper's text ("segment the regions of which the value is above
    20% of the max value of the CAM, then take the bounding box that covers the largest
    connected component"). Its release code (zhoubolei/CAM, ``generate_bbox.m``) boxes a
    10-crop average through a distance-transform box generator at several thresholds
    that merges overlapping boxes; that generator is not reproduced here.

    >>> cam = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 3.0], [0.0, 0.0, 0.1]])
    >>> cam_box(cam)
    (1, 1, 3, 2)
    """
    checked = _check_top1(protocol)
    normalized = max_normalized(cam) if checked == "cvpr2016" else minmax_normalized(cam)
    if normalized is None:
        return None
    boxes, sizes = component_boxes(normalized >= threshold, connectivity=_CONNECTIVITY[checked])
    if not len(sizes):
        return None  # only for a threshold above 1
    x0, y0, x1, y1 = (int(v) for v in boxes[int(np.argmax(sizes))])
    return x0, y0, x1, y1


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (exclusive upper corners)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _box_ious(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``box_iou`` of each of (K, 4) boxes with one (4,) box, vectorised: (K,)."""
    boxes = boxes.astype(np.float64)
    width = (np.minimum(boxes[:, 2], truth[2]) - np.maximum(boxes[:, 0], truth[0])).clip(min=0)
    height = (np.minimum(boxes[:, 3], truth[3]) - np.maximum(boxes[:, 1], truth[1])).clip(min=0)
    inter = width * height
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (truth[2] - truth[0]) * (truth[3] - truth[1])
    union = union - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def class_maps(
    cams: Tensor, classes: Tensor, image_size: tuple[int, int], *, head_bias: Tensor | None, mode: str = "bilinear"
) -> np.ndarray:
    """Each sample's map of its class in ``classes``, without the head bias, upsampled.

    ``M_c - b_c`` for (N, C, h, w) CAMs that include the bias (``forward_cams``), with
    ``head_bias`` the head's (C,) bias (``model.head.bias``; None for a head without one),
    upsampled to ``image_size`` (``bilinear`` or ``bicubic``, ``align_corners=False``).
    The bias is removed before upsampling, which commutes with adding a constant.
    Returns float32 (N, H, W).
    """
    rows = torch.arange(len(classes), device=cams.device)
    chosen = cams.detach().float()[rows, classes.to(cams.device)]
    if head_bias is not None:
        chosen = chosen - head_bias.detach().float().to(cams.device)[classes.to(cams.device)][:, None, None]
    upsampled = F.interpolate(chosen[:, None], size=image_size, mode=mode, align_corners=False)[:, 0]
    return upsampled.cpu().numpy()


def localization_iou(
    cams: Tensor,
    classes: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    head_bias: Tensor | None,
    protocol: LocalizationProtocol = DEFAULT_LOCALIZATION_PROTOCOL,
) -> Tensor:
    """IoU between each sample's ``cam_box`` (for ``classes``) and its ground-truth box.

    ``cams`` (N, C, h, w) are raw maps with the head bias (``forward_cams``); the bias
    ``head_bias`` (``model.head.bias``) is removed and the map upsampled bilinearly to
    ``image_size`` before ``cam_box`` applies ``protocol`` (``cvpr2016`` or ``minmax``; the
    min-max rule is blind to the bias). Top-1 localisation passes ``classes`` = the
    prediction and counts a hit when it is correct and the IoU is >= 0.5. Returns
    float64 (N,) IoUs, 0 where no box is found.
    """
    checked = _check_top1(protocol)
    maps = class_maps(cams, classes, image_size, head_bias=head_bias)
    ious = []
    for cam, truth in zip(maps, boxes.cpu().tolist()):
        box = cam_box(cam, checked)
        ious.append(0.0 if box is None else box_iou(box, tuple(truth)))
    return torch.tensor(ious, dtype=torch.float64)


# --------------------------------------------------------------------------- MaxBoxAccV2


def cam_thresholds(interval: float = CAM_CURVE_INTERVAL) -> np.ndarray:
    """The threshold grid of Choe et al.: ``np.arange(0, 1, interval)``.

    Their code defaults to 0.001 and their README evaluates at 0.01; on a map quantised
    to 255 levels (``threshold_box_ious``) a finer grid adds few distinct masks.
    """
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval!r}")
    return np.arange(0, 1, interval)


def threshold_box_ious(scoremap: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The best box IoU at each CAM threshold, for one min-max normalised (H, W) map.

    Follows ``compute_bboxes_from_scoremaps`` of clovaai/wsolevaluation with
    ``multi_contour_eval``: the map becomes an 8-bit image ``L = floor(255 s)``; at
    threshold ``tau`` the mask is ``L > int(tau * max L)``; every component is boxed, and
    the value at ``tau`` is the largest IoU of any box with ``truth`` (0 for an empty mask).

    Where this differs from their code: they box the contours of ``cv2.findContours``
    (``RETR_TREE``), we the components of ``scipy.ndimage.label`` with 8-connectivity, the
    connectivity OpenCV's border following uses, so every outer contour is one of our
    components; their tree also boxes each hole's contour (a box inside its component's,
    which can only add a hit), we do not. Their ``boundingRect`` box, clipped at
    ``W - 1``/``H - 1`` and scored with inclusive corners (``+ 1``), is one pixel larger
    than the component on the right and bottom; ours is the exact pixel extent with
    exclusive corners, as the ground-truth boxes and the other protocols use. All
    components are labelled in one call: the masks are stacked and connected within a
    plane only.
    """
    from scipy import ndimage

    levels = (scoremap * _SCOREMAP_LEVELS).astype(np.uint8)
    cuts = (thresholds * int(levels.max())).astype(np.int64)  # int() of the product, as theirs
    masks = levels[None] > cuts[:, None, None]  # (T, H, W)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 2)  # 8-connected in a plane, never across
    labelled, _ = ndimage.label(masks, structure=structure)
    slices = ndimage.find_objects(labelled)
    best = np.zeros(len(thresholds))
    if slices:
        planes = np.array([s[0].start for s in slices])
        boxes = np.array([(s[2].start, s[1].start, s[2].stop, s[1].stop) for s in slices])
        np.maximum.at(best, planes, _box_ious(boxes, np.asarray(truth, dtype=np.float64)))
    return best


def maxboxacc_ious(
    cams: Tensor,
    labels: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    thresholds: np.ndarray | None = None,
) -> Tensor:
    """Per sample, the best box IoU at each CAM threshold for MaxBoxAccV2: (N, T) float64.

    The map is the ground-truth class's (``labels``; Choe et al. evaluate localisation
    with the class known), upsampled bicubically to ``image_size`` as their
    ``cv2.resize(..., INTER_CUBIC)`` (the same kernel, a = -0.75, and pixel centres), then
    min-max normalised (a constant map becomes all 0, as their ``normalize_scoremap``),
    then ``threshold_box_ious`` over ``thresholds`` (default ``cam_thresholds()``). The head
    bias is left in: min-max normalisation removes any constant.
    """
    grid = cam_thresholds() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    maps = class_maps(cams, labels, image_size, head_bias=None, mode="bicubic")
    rows = []
    for cam, truth in zip(maps, boxes.cpu().numpy()):
        normalized = minmax_normalized(cam)
        scoremap = np.zeros_like(cam) if normalized is None else normalized
        rows.append(threshold_box_ious(scoremap, truth, grid))
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, len(grid), dtype=torch.float64)


class MaxBoxAccuracy(NamedTuple):
    """``max_box_accuracy``'s result. ``box_accuracy[d, t]`` is ``BoxAcc(tau_t, delta_d)``;
    ``max_box_accuracy[d]`` its maximum over thresholds, reached first at
    ``best_thresholds[d]``; ``v2`` the mean of ``max_box_accuracy`` (MaxBoxAccV2)."""

    iou_thresholds: tuple[float, ...]
    box_accuracy: np.ndarray  # (D, T)
    max_box_accuracy: np.ndarray  # (D,)
    best_thresholds: np.ndarray  # (D,)
    v2: float


def max_box_accuracy(
    ious: np.ndarray, thresholds: np.ndarray, *, iou_thresholds: tuple[float, ...] = MAXBOXACC_IOU_THRESHOLDS
) -> MaxBoxAccuracy:
    """MaxBoxAccV2 (Choe et al., CVPR 2020) from per-sample best-box IoUs (N, T) at ``thresholds`` (T,).

    ``BoxAcc(tau, delta) = mean_i [IoU_i(tau) >= delta]``; ``MaxBoxAcc(delta) =
    max_tau BoxAcc(tau, delta)``, the threshold chosen on the whole evaluation;
    ``MaxBoxAccV2 = mean_delta MaxBoxAcc(delta)`` over ``iou_thresholds`` (0.3, 0.5, 0.7).
    Fractions, not percent. NaN for no samples.

    >>> ious = np.array([[0.6, 0.8], [0.2, 0.4]])  # two images, two thresholds
    >>> result = max_box_accuracy(ious, np.array([0.0, 0.5]))
    >>> result.max_box_accuracy.tolist(), result.v2
    ([1.0, 0.5, 0.5], 0.6666666666666666)
    """
    ious = np.asarray(ious, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[1] != len(thresholds):
        raise ValueError(
            f"ious must have shape (N, {len(thresholds)}) for {len(thresholds)} thresholds, got {ious.shape}"
        )
    deltas = np.asarray(iou_thresholds, dtype=np.float64)
    if not len(ious):
        nan = np.full(len(deltas), math.nan)
        return MaxBoxAccuracy(
            tuple(iou_thresholds), np.full((len(deltas), len(thresholds)), math.nan), nan, nan, math.nan
        )
    box_accuracy = (ious[None, :, :] >= deltas[:, None, None]).mean(axis=1)  # (D, T)
    best = box_accuracy.argmax(axis=1)
    maxima = box_accuracy.max(axis=1)
    return MaxBoxAccuracy(tuple(iou_thresholds), box_accuracy, maxima, thresholds[best], float(maxima.mean()))
