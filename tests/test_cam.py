"""Negative-CAM statistics and CAM localisation on hand-built maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustcam.cam import (
    STAT_NAMES,
    box_iou,
    cam_box,
    localization_iou,
    negative_cam_stats,
    peak_shift,
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
    assert cam_box(cam) == (1, 1, 5, 4)
    assert cam_box(np.full((4, 4), 3.0)) is None


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_localization_iou_upsamples_the_cam_of_the_given_class() -> None:
    cams = torch.zeros(1, 2, 4, 4)
    cams[0, 1, 1:3, 1:3] = 5.0  # class 1 lights up the centre
    cams[0, 0, 0, 0] = 5.0  # class 0 a corner
    truth = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    centre = localization_iou(cams, torch.tensor([1]), truth, (32, 32))
    corner = localization_iou(cams, torch.tensor([0]), truth, (32, 32))
    assert float(centre) >= 0.5 > float(corner)
