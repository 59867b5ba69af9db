"""Losses against hand-derived values on tiny tensors, and their structural properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustcam.errors import ParameterError
from robustcam.losses import (
    LOSSES,
    build_loss,
    cam_loss,
    focal_loss,
    hnc_loss,
    top_negative_classes,
)
from robustcam.models import CAMClassifier, ModelOutput


def test_focal_with_gamma_zero_equals_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))


def test_focal_matches_the_formula_by_hand() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p_y = 3/4 for y = 0
    expected = -((1 - 0.75) ** 2) * math.log(0.75)
    assert float(focal_loss(logits, torch.tensor([0]), gamma=2.0)) == pytest.approx(expected, rel=1e-6)


def _tiny_cams() -> tuple[torch.Tensor, torch.Tensor]:
    # One image, 4 classes, 2x2 maps; true class 0.
    cams = torch.tensor(
        [
            [
                [[9.0, 9.0], [9.0, 9.0]],  # class 0 (true): ignored
                [[1.0, 0.0], [0.0, 0.0]],  # class 1: logit 0.25
                [[2.0, 2.0], [2.0, 0.0]],  # class 2: logit 1.5  (highest negative)
                [[0.0, 0.0], [0.0, 0.4]],  # class 3: logit 0.1
            ]
        ]
    )
    return cams, torch.tensor([0])


def _kd_by_hand(values: list[float], temperature: float = 1.0) -> float:
    exps = [math.exp(v / temperature) for v in values]
    total = sum(exps)
    return -sum(math.log(e / total) for e in exps) / len(values)


def test_hnc_kd_equals_the_design_formula_by_hand() -> None:
    cams, target = _tiny_cams()
    # top-2 negatives by logit: classes 2 and 1
    expected = _kd_by_hand([2.0, 2.0, 2.0, 0.0]) + _kd_by_hand([1.0, 0.0, 0.0, 0.0])
    assert float(hnc_loss(cams, target, k=2, kind="kd")) == pytest.approx(expected, rel=1e-6)
    expected_t = _kd_by_hand([2.0, 2.0, 2.0, 0.0], 2.0)
    assert float(hnc_loss(cams, target, k=1, kind="kd", temperature=2.0)) == pytest.approx(expected_t, rel=1e-6)


def test_hnc_mse_equals_the_mean_square_of_the_selected_maps() -> None:
    cams, target = _tiny_cams()
    expected = (3 * 4.0 + 0.0 + 1.0) / 8  # classes 2 and 1, 8 values
    assert float(hnc_loss(cams, target, k=2, kind="mse")) == pytest.approx(expected, rel=1e-6)


def test_hnc_kd_is_averaged_over_the_batch() -> None:
    cams, target = _tiny_cams()
    single = hnc_loss(cams, target, k=2)
    doubled = hnc_loss(torch.cat([cams, cams]), torch.cat([target, target]), k=2)
    torch.testing.assert_close(single, doubled)


def test_flat_negative_cams_give_the_kd_minimum() -> None:
    torch.manual_seed(0)
    k, hw = 3, 16
    flat = torch.randn(4, 6, 1, 1).expand(4, 6, 4, 4).contiguous()
    target = torch.randint(0, 6, (4,))
    minimum = k * math.log(hw)
    assert float(hnc_loss(flat, target, k=k)) == pytest.approx(minimum, rel=1e-6)
    for _ in range(5):
        bumpy = flat + 0.5 * torch.randn_like(flat)
        assert float(hnc_loss(bumpy, target, k=k)) > minimum


def test_top_negative_classes_never_pick_the_target() -> None:
    logits = torch.tensor([[5.0, 1.0, 3.0, 2.0], [0.0, 9.0, 8.0, 7.0]])
    chosen = top_negative_classes(logits, torch.tensor([0, 1]), 2)
    assert chosen.tolist() == [[2, 3], [2, 3]]
    with pytest.raises(ValueError, match=r"k must be in .*= \[1, 3\], got 4"):
        top_negative_classes(logits, torch.tensor([0, 1]), 4)


def test_hnc_k_must_be_smaller_than_the_class_count() -> None:
    loss = build_loss("hnc", k=10)
    loss.check_num_classes(11)
    with pytest.raises(ValueError, match=r"k=10 must be smaller than the number of classes \(10\)"):
        loss.check_num_classes(10)


def test_cam_loss_is_zero_when_cam_and_caam_agree() -> None:
    features = torch.rand(2, 3, 4, 4)
    weight = torch.ones(5, 3)  # CAM_y = sum_k f_k = CAAM for every class
    assert float(cam_loss(features, weight, torch.tensor([1, 4]))) == pytest.approx(0.0, abs=1e-6)


def test_cam_loss_by_hand() -> None:
    # one image, 2 channels, 1x2 map; CAM_y uses weights (1, 0) -> channel 0; CAAM = sum.
    features = torch.tensor([[[[0.0, 1.0]], [[3.0, 0.0]]]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # norm(CAM) = [0, 1]; CAAM = [3, 1] -> norm = [1, 0]; L1 mean = 1
    assert float(cam_loss(features, weight, torch.tensor([0]))) == pytest.approx(1.0, abs=1e-5)


def test_cam_term_sends_no_gradient_into_the_head(tiny_model: CAMClassifier) -> None:
    model = tiny_model
    model.zero_grad()
    x, target = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    output = model.forward_cams(x)
    cam_loss(output.features, model.head.weight, target).backward()
    assert model.head.weight.grad is None or bool((model.head.weight.grad == 0).all())
    first_conv = next(model.features.parameters())
    assert first_conv.grad is not None and float(first_conv.grad.abs().sum()) > 0
    model.zero_grad()


def test_cam_loss_head_gradient_equals_cross_entropys(tiny_model: CAMClassifier) -> None:
    model = tiny_model
    x, target = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = build_loss("cam_loss", alpha=5.0).bind(model)
    model.zero_grad()
    loss(model.forward_cams(x), target).total.backward()
    assert model.head.weight.grad is not None
    with_cam = model.head.weight.grad.clone()
    model.zero_grad()
    F.cross_entropy(model(x), target).backward()
    torch.testing.assert_close(with_cam, model.head.weight.grad)
    model.zero_grad()


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_returns_its_parts(name: str, tiny_model: CAMClassifier) -> None:
    loss = build_loss(name).bind(tiny_model)
    x, target = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    output: ModelOutput = tiny_model.forward_cams(x)
    result = loss(output, target)
    assert result.total.ndim == 0 and result.total.requires_grad
    assert result.parts, "every loss reports at least one part"
    for part in result.parts.values():
        assert part.ndim == 0 and not part.requires_grad and torch.isfinite(part)
    assert name in repr(loss)


def test_combined_losses_add_their_weighted_parts(tiny_model: CAMClassifier) -> None:
    x, target = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    output = tiny_model.forward_cams(x)
    result = build_loss("hnc", k=3, weight=0.5)(output, target)
    torch.testing.assert_close(result.total.detach(), result.parts["ce"] + 0.5 * result.parts["hnc"])
    torch.testing.assert_close(result.parts["hnc"], hnc_loss(output.cams, target, k=3).detach())


def test_build_loss_rejects_unknown_parameters_and_values() -> None:
    with pytest.raises(ValueError, match="unknown parameter.*gama.*valid: gamma"):
        build_loss("focal", gama=2)
    with pytest.raises(ValueError, match="loss.hnc.kind: 'l1' is not one of 'kd' or 'mse'"):
        build_loss("hnc", kind="l1")
    with pytest.raises(ValueError, match="did you mean 'focal'"):
        build_loss("focall")


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("focal", {"gamma": "abc"}, "loss.focal.gamma: 'abc' is not a number"),
        ("focal", {"gamma": float("nan")}, "loss.focal.gamma: nan is not a finite number"),
        ("hnc", {"k": 2.5}, "loss.hnc.k: 2.5 is not an integer"),
        ("hnc", {"k": True}, "loss.hnc.k: True is not an integer"),
        ("hnc", {"weight": float("inf")}, "loss.hnc.weight: inf is not a finite number"),
        ("cam_loss", {"alpha": -1.0}, "alpha must be a finite number >= 0, got -1.0"),
        ("ce", {"label_smoothing": 1.0}, r"label_smoothing must be a finite number in \[0, 1\), got 1.0"),
    ],
)
def test_parameters_are_typed_and_finite(name: str, params: dict[str, object], expected: str) -> None:
    with pytest.raises(ParameterError, match=expected) as info:
        build_loss(name, **params)
    assert info.value.parameter == next(iter(params))


def test_constructors_refuse_nan_that_passes_every_comparison() -> None:
    from robustcam.losses import HNC, Focal

    with pytest.raises(ParameterError, match="gamma must be a finite number >= 0, got nan"):
        Focal(gamma=float("nan"))
    with pytest.raises(ParameterError, match="temperature must be a finite number > 0, got nan"):
        HNC(temperature=float("nan"))


def test_an_int_for_a_float_parameter_is_kept_as_given() -> None:
    assert build_loss("focal", gamma=1).params() == {"gamma": 1}
