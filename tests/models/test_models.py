"""Every registered architecture is a CAM-capable classifier: logits == mean of CAMs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustcam.models import (
    CAMClassifier,
    NotCAMCapableError,
    build_model,
    class_activation_maps,
    get_spec,
    list_models,
    split_at_global_pool,
)


def _height_width(arch: str, *, smallest: bool = False) -> tuple[int, int]:
    """The input size the registry declares for ``arch``: its design size, or the smallest with 2x2 CAMs."""
    spec = get_spec(arch)
    _, height, width = spec.min_input_size if smallest else spec.input_size
    return height, width


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("arch", list_models())
def test_logits_are_the_mean_of_the_cams(arch: str, in_channels: int) -> None:
    torch.manual_seed(0)
    options = get_spec(arch).tiny  # a small network of the same layout (WRN-10-1 for the WideResNets)
    model = build_model(arch, 7, in_channels, mean=[0.4] * in_channels, std=[0.2] * in_channels, **options).eval()
    x = torch.rand(2, in_channels, *_height_width(arch, smallest=True))
    with torch.no_grad():
        output = model.forward_cams(x)
        logits = model(x)
    assert output.cams.shape[:2] == (2, 7)
    assert output.cams.shape[2] * output.cams.shape[3] > 1, "CAMs must have spatial extent"
    assert output.features.shape[1] == model.head.in_features
    torch.testing.assert_close(output.cams.mean(dim=(2, 3)), output.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, output.logits, atol=1e-5, rtol=1e-5)
    assert isinstance(model.head, nn.Linear) and model.num_classes == 7


def test_cams_include_the_head_bias(tiny_model: CAMClassifier) -> None:
    x = torch.rand(1, 1, *_height_width(tiny_model.arch))
    with torch.no_grad():
        features = tiny_model.feature_maps(x)
        expected = torch.einsum("nkhw,ck->nchw", features, tiny_model.head.weight)
        expected += tiny_model.head.bias[None, :, None, None]
        torch.testing.assert_close(class_activation_maps(features, tiny_model.head), expected)


def test_normalisation_lives_in_the_model() -> None:
    torch.manual_seed(0)
    model = build_model("smallcnn", 3, 3, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 0.125], width=4).eval()
    x = torch.rand(2, 3, *_height_width("smallcnn"))
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = model.head(model.features((x - mean) / std).mean(dim=(2, 3)))
        torch.testing.assert_close(model(x), by_hand)
    assert {"mean", "std"} <= set(model.state_dict())


def test_torchvision_parameter_names_are_kept() -> None:
    model = build_model("resnet18", 10)
    keys = set(model.state_dict())
    assert {"features.conv1.weight", "features.layer4.1.bn2.running_var", "head.weight", "head.bias"} <= keys
    assert model.head_source == "fc"


def test_resnet18_cifar_has_a_3x3_stem_and_no_maxpool() -> None:
    model = build_model("resnet18_cifar", 10)
    with torch.no_grad():
        features = model.feature_maps(torch.rand(1, 3, *_height_width("resnet18_cifar")))
    assert features.shape[-2:] == (4, 4)
    stem = model.features.get_submodule("conv1")
    assert isinstance(stem, nn.Conv2d) and stem.kernel_size == (3, 3) and stem.stride == (1, 1)


class _MLPHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.conv(x)), 1))


class _NoPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


class _FunctionalPool(nn.Module):
    """Like densenet: ReLU and pooling are functional calls in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


def test_refuses_a_classifier_that_is_not_one_linear_layer() -> None:
    with pytest.raises(NotCAMCapableError, match=r"not CAM-capable: after global average pooling.*ReLU"):
        split_at_global_pool(_MLPHead(), name="mlp")


def test_refuses_a_network_without_global_pooling() -> None:
    with pytest.raises(NotCAMCapableError, match="no global average pooling"):
        split_at_global_pool(_NoPool(), name="nopool")


def test_functional_pooling_splits_after_the_relu() -> None:
    net = _FunctionalPool().eval()
    features, head, head_name = split_at_global_pool(net)
    model = CAMClassifier(features, head, mean=[0.0] * 3, std=[1.0] * 3)
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))
        assert bool((model.feature_maps(x) >= 0).all()), "the ReLU before pooling belongs to the features"
    assert head_name == "classifier"


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        build_model("resnet81", 10)
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        build_model("smallcnn", 10, 2)
    with pytest.raises(ValueError, match="mean/std has 2 values"):
        build_model("smallcnn", 10, 3, mean=[0.5, 0.5])
