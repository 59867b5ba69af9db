"""Negative-CAM statistics and CAM localisation (cvpr2016, minmax, maxboxacc_v2) on hand-built maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustcam.cam import (
    LOCALIZATION_PROTOCOLS,
    STAT_NAMES,
    box_iou,
    cam_box,
    cam_thresholds,
    check_protocol,
    localization_iou,
    max_box_accuracy,
    maxboxacc_ious,
    negative_cam_stats,
    peak_shift,
    threshold_box_ious,
)
from robustcam.losses import hnc_loss


def test_flat_negative_maps() -> None:
    cams = torch.full((2, 4, 3, 3), -0.5)
    cams[:, 0] = 2.0  # true class 0 everywhere
    stats = negative_cam_stats(cams, torch.tensor([0, 0]), k=3)
    assert set(stats) == set(STAT_NAMES)
    torch.testing.assert_close(stats["neg_homogeneity"], torch.zeros(2))
    torch.testing.assert_close(stats["neg_peak_max"], torch.full((2,), -0.5))
    torch.testing.assert_close(stats["neg_peak_topk"], torch.full((2,), -0.5))
    torch.testing.assert_close(stats["neg_positive_frac"], torch.zeros(2))
    torch.testing.assert_close(stats["pos_peak"], torch.full((2,), 2.0))
    torch.testing.assert_close(stats["peak_margin"], torch.full((2,), 2.5))


def test_a_single_spike() -> None:
    cams = torch.zeros(1, 3, 2, 2)
    cams[0, 2, 1, 1] = 4.0  # spike in negative class 2; true class 1
    stats = negative_cam_stats(cams, torch.tensor([1]), k=1)
    assert float(stats["neg_peak_max"]) == 4.0
    assert float(stats["neg_peak_topk"]) == 4.0  # class 2 has the top negative logit (1.0 vs 0)
    assert float(stats["neg_positive_frac"]) == pytest.approx(1 / 8)
    # KL(U || softmax([0,0,0,4])) = -log 4 - mean log p
    logz = math.log(3 + math.exp(4))
    expected = -math.log(4) - (3 * (0 - logz) + (4 - logz)) / 4
    assert float(stats["neg_homogeneity"]) == pytest.approx(expected, rel=1e-6)
    assert float(stats["peak_margin"]) == -4.0


def test_topk_ranks_negatives_by_logit_not_by_peak() -> None:
    cams = torch.zeros(1, 4, 2, 2)
    cams[0, 1] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # logit 1, peak 1
    cams[0, 2] = torch.tensor([[3.0, 0.0], [0.0, 0.0]])  # logit 0.75, peak 3
    cams[0, 3] = torch.tensor([[-1.0, -1.0], [-1.0, 2.5]])  # logit -0.125, peak 2.5
    stats = negative_cam_stats(cams, torch.tensor([0]), k=2)
    assert float(stats["neg_peak_topk"]) == pytest.approx((1.0 + 3.0) / 2)
    assert float(stats["neg_peak_max"]) == 3.0


def test_homogeneity_is_the_hnc_kd_quantity_minus_its_minimum() -> None:
    torch.manual_seed(0)
    cams, target = torch.randn(5, 6, 4, 4), torch.randint(0, 6, (5,))
    k = 3
    stats = negative_cam_stats(cams, target, k=k)
    per_sample = torch.stack([hnc_loss(cams[i : i + 1], target[i : i + 1], k=k) for i in range(5)])
    torch.testing.assert_close(stats["neg_homogeneity"], per_sample / k - math.log(16), rtol=1e-5, atol=1e-5)


def test_default_k_and_bad_k() -> None:
    cams = torch.randn(2, 3, 2, 2)
    default = negative_cam_stats(cams, torch.tensor([0, 1]))  # k = min(5, C-1) = 2
    explicit = negative_cam_stats(cams, torch.tensor([0, 1]), k=2)
    torch.testing.assert_close(default["neg_peak_topk"], explicit["neg_peak_topk"])
    with pytest.raises(ValueError, match=r"k must be in \[1, 2\] for 3 classes, got 3"):
        negative_cam_stats(cams, torch.tensor([0, 1]), k=3)
    with pytest.raises(ValueError, match="shape"):
        negative_cam_stats(cams[0], torch.tensor([0]))


def test_peak_shift_in_cam_cells() -> None:
    clean = torch.zeros(2, 4, 4)
    adversarial = torch.zeros(2, 4, 4)
    clean[0, 0, 0] = clean[1, 2, 2] = 1.0
    adversarial[0, 3, 4 - 1] = adversarial[1, 2, 2] = 1.0
    torch.testing.assert_close(peak_shift(clean, adversarial), torch.tensor([math.hypot(3, 3), 0.0]))


def test_cam_box_keeps_the_largest_component_above_20_percent() -> None:
    cam = np.zeros((10, 10))
    cam[1:4, 1:5] = 1.0  # 12 pixels: the largest blob
    cam[7:9, 7:9] = 0.9  # 4 pixels: a second blob
    cam[5, 5] = 0.1  # below 20%
    for protocol in ("cvpr2016", "minmax"):
        assert cam_box(cam, protocol) == (1, 1, 5, 4)
    # a constant map has no range (minmax) but is its own maximum everywhere (cvpr2016)
    assert cam_box(np.full((4, 4), 3.0), "minmax") is None
    assert cam_box(np.full((4, 4), 3.0), "cvpr2016") == (0, 0, 4, 4)


def test_max_and_minmax_normalisation_give_different_boxes() -> None:
    # a raised floor: 10 everywhere, 12 on a 3x3 block, 15 at its centre
    cam = np.full((5, 5), 10.0)
    cam[1:4, 1:4] = 12.0
    cam[2, 2] = 15.0
    # cvpr2016: cam / 15 >= 0.2 holds everywhere (10 / 15 = 0.67): the whole image
    assert cam_box(cam, "cvpr2016") == (0, 0, 5, 5)
    # minmax: (cam - 10) / 5 >= 0.2 means cam >= 11: the block
    assert cam_box(cam, "minmax") == (1, 1, 4, 4)


def test_cvpr2016_clips_negative_values() -> None:
    negative = np.full((4, 4), -3.0)
    negative[0, 0] = -1.0
    assert cam_box(negative, "cvpr2016") is None  # nothing above 0: no box
    assert cam_box(negative, "minmax") == (0, 0, 1, 1)  # min-max lifts the least negative pixel to 1
    # a deep trough: min-max counts -2 as (-2 + 10) / 12 = 0.67 of the range, cvpr2016 drops it
    trough = np.array([[-10.0, -2.0, -2.0, 2.0]])
    assert cam_box(trough, "cvpr2016") == (3, 0, 4, 1)
    assert cam_box(trough, "minmax") == (1, 0, 4, 1)


def test_cvpr2016_uses_8_and_minmax_4_connectivity() -> None:
    cam = np.zeros((5, 5))
    cam[0, 0] = cam[1, 1] = cam[2, 2] = 1.0  # a diagonal: one 8-connected component of 3 pixels
    cam[4, 0] = cam[4, 1] = 0.5  # two 4-connected pixels
    assert cam_box(cam, "cvpr2016") == (0, 0, 3, 3)
    assert cam_box(cam, "minmax") == (0, 4, 2, 5)  # 4-connected, the diagonal is three 1-pixel parts


def _old_minmax_box(cam: np.ndarray) -> tuple[int, int, int, int] | None:
    """robustcam's rule before the protocols were named, as it was written then."""
    from scipy import ndimage

    low, high = float(cam.min()), float(cam.max())
    if not high > low:
        return None
    mask = (cam - low) / (high - low) >= 0.2
    labelled, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labelled, index=np.arange(1, count + 1))
    rows, cols = np.nonzero(labelled == int(np.argmax(sizes)) + 1)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def test_minmax_is_the_rule_of_records_written_before_protocols() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        cam = rng.normal(size=(12, 12)).astype(np.float32) * 3 - 1
        assert cam_box(cam, "minmax") == _old_minmax_box(cam)


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_localization_iou_upsamples_the_cam_of_the_given_class() -> None:
    cams = torch.zeros(1, 2, 4, 4)
    cams[0, 1, 1:3, 1:3] = 5.0  # class 1 lights up the centre
    cams[0, 0, 0, 0] = 5.0  # class 0 a corner
    truth = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    for protocol in ("cvpr2016", "minmax"):
        centre = localization_iou(cams, torch.tensor([1]), truth, (32, 32), head_bias=None, protocol=protocol)
        corner = localization_iou(cams, torch.tensor([0]), truth, (32, 32), head_bias=None, protocol=protocol)
        assert float(centre) >= 0.5 > float(corner)


def test_cvpr2016_removes_the_head_bias() -> None:
    # raw maps M_c = f_c + b_c at image resolution (upsampling to the same size is the identity)
    features = torch.zeros(1, 2, 6, 6)
    features[0, 1, 2:4, 2:4] = 1.0
    bias = torch.tensor([0.0, 4.0])
    cams = features + bias[None, :, None, None]
    truth = torch.tensor([[2.0, 2.0, 4.0, 4.0]])
    label = torch.tensor([1])
    without_bias = localization_iou(cams, label, truth, (6, 6), head_bias=bias, protocol="cvpr2016")
    assert float(without_bias) == 1.0  # f / 1 >= 0.2 only on the block
    # left in, the bias lifts every pixel to 4 / 5 = 0.8 of the max: the whole image, IoU 4 / 36
    with_bias = localization_iou(cams, label, truth, (6, 6), head_bias=None, protocol="cvpr2016")
    assert float(with_bias) == pytest.approx(4 / 36)
    # min-max normalisation removes any constant: the bias does not matter there
    for head_bias in (bias, None):
        assert float(localization_iou(cams, label, truth, (6, 6), head_bias=head_bias, protocol="minmax")) == 1.0


def _two_blobs() -> np.ndarray:
    scoremap = np.zeros((10, 10))
    scoremap[0:4, 0:6] = 1.0  # 24 pixels: the largest component
    scoremap[6:9, 6:9] = 0.5  # 9 pixels, on the object
    return scoremap


def test_maxboxacc_v2_boxes_every_component_but_cvpr2016_only_the_largest() -> None:
    scoremap, truth = _two_blobs(), np.array([6, 6, 9, 9])
    assert cam_box(scoremap, "cvpr2016") == (0, 0, 6, 4)  # IoU 0 with the object
    # 8-bit levels: the small blob is floor(0.5 * 255) = 127, kept while int(tau * 255) < 127,
    # i.e. for tau = 0.00 ... 0.49; the large blob (255) is kept at every tau of the grid
    ious = threshold_box_ious(scoremap, truth, cam_thresholds())
    np.testing.assert_array_equal(ious, [1.0] * 50 + [0.0] * 50)


def test_maxboxacc_ious_use_the_ground_truth_class_min_max_normalised() -> None:
    cams = torch.zeros(1, 3, 10, 10, dtype=torch.float64)
    cams[0, 2] = torch.from_numpy(_two_blobs()) * 6.0 - 2.0  # min-max normalisation undoes the scale and shift
    cams[0, 1, 0, 0] = 9.0  # another class peaks elsewhere
    truth = torch.tensor([[6.0, 6.0, 9.0, 9.0]])
    ious = maxboxacc_ious(cams, torch.tensor([2]), truth, (10, 10))
    assert ious.shape == (1, 100) and ious.dtype == torch.float64
    torch.testing.assert_close(ious[0], torch.tensor([1.0] * 50 + [0.0] * 50, dtype=torch.float64))
    constant = maxboxacc_ious(cams, torch.tensor([0]), truth, (10, 10))
    assert (constant == 0).all()  # a constant map is all 0 after normalisation: no box at any tau


def test_max_box_accuracy_chooses_one_threshold_per_delta_over_all_images() -> None:
    thresholds = np.array([0.0, 0.5, 0.9])
    ious = np.array(
        [
            [0.35, 0.60, 0.80],
            [0.40, 0.55, 0.10],
            [0.30, 0.20, 0.75],
        ]
    )
    result = max_box_accuracy(ious, thresholds)
    # delta 0.3: tau 0 hits all three (0.30 counts: >=); delta 0.5: tau 0.5 first reaches 2 of 3;
    # delta 0.7: only tau 0.9 hits (the first and the last)
    np.testing.assert_allclose(result.box_accuracy, [[1, 2 / 3, 2 / 3], [0, 2 / 3, 2 / 3], [0, 0, 2 / 3]])
    np.testing.assert_allclose(result.max_box_accuracy, [1, 2 / 3, 2 / 3])
    np.testing.assert_array_equal(result.best_thresholds, [0.0, 0.5, 0.9])
    assert result.v2 == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # a threshold per image would score delta 0.5 at 1.0: the grid maximum is over the evaluation
    assert result.max_box_accuracy[1] < (ious.max(axis=1) >= 0.5).mean()
    assert math.isnan(max_box_accuracy(np.zeros((0, 3)), thresholds).v2)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        max_box_accuracy(np.zeros((2, 4)), thresholds)


def test_cam_thresholds_are_the_authors_grid() -> None:
    np.testing.assert_array_equal(cam_thresholds(), np.arange(0, 1, 0.01))
    assert len(cam_thresholds()) == 100


def test_unknown_protocols_list_the_valid_ones() -> None:
    assert LOCALIZATION_PROTOCOLS == ("cvpr2016", "minmax", "maxboxacc_v2")
    assert [check_protocol(p) for p in LOCALIZATION_PROTOCOLS] == list(LOCALIZATION_PROTOCOLS)
    with pytest.raises(
        ValueError, match=r"unknown localisation protocol 'cvpr'.*valid: cvpr2016, minmax, maxboxacc_v2"
    ):
        check_protocol("cvpr")
    with pytest.raises(ValueError, match="maxboxacc_ious"):
        cam_box(np.eye(3), "maxboxacc_v2")
