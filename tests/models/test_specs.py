"""Every registered architecture declares an ArchSpec, and the spec's facts are true of it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from robustcam.checkpoint.adapt import map_keys
from robustcam.registry import keyword_parameters
from robustcam.models import (
    IMAGENET,
    MODELS,
    NEUTRAL,
    ArchSpec,
    Normalization,
    build_model,
    get_spec,
    list_models,
    register_model,
)

# Torchvision-sourced architectures whose source network torchvision builds under the same name.
_TORCHVISION_NAMED = [
    arch for arch in list_models() if get_spec(arch).source == "torchvision" and hasattr(torchvision.models, arch)
]


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_has_a_spec(arch: str) -> None:
    spec = get_spec(arch)
    assert isinstance(spec, ArchSpec) and MODELS.get(arch).spec is spec
    assert spec.input_size[0] == 3 and spec.min_input_size[0] == 3
    assert all(small <= full for small, full in zip(spec.min_input_size, spec.input_size))
    assert spec.source in ("robustcam", "torchvision", "robustbench")
    assert spec.normalization is None or spec.normalization.fits(3)
    assert set(spec.tiny) <= set(keyword_parameters(MODELS.get(arch).factory)), "tiny options are factory options"


@pytest.mark.parametrize("arch", list_models())
def test_the_spec_input_sizes_build_and_run(arch: str) -> None:
    spec = get_spec(arch)
    torch.manual_seed(0)
    model = build_model(arch, 5, **spec.tiny).eval()
    with torch.no_grad():
        output = model.forward_cams(torch.rand(1, *spec.input_size))
        smallest = model.forward_cams(torch.rand(1, *spec.min_input_size))
    assert output.logits.shape == (1, 5)
    assert output.cams.shape[2] * output.cams.shape[3] > 1, "CAMs must have spatial extent"
    torch.testing.assert_close(output.cams.mean(dim=(2, 3)), output.logits, atol=1e-5, rtol=1e-5)
    assert tuple(smallest.cams.shape[2:]) == (2, 2), "min_input_size is the smallest with 2x2 CAMs"


@pytest.mark.parametrize("arch", _TORCHVISION_NAMED)
def test_the_spec_maps_every_key_of_the_torchvision_network(arch: str) -> None:
    spec = get_spec(arch)
    net = getattr(torchvision.models, arch)(num_classes=5)
    head = net.get_submodule(spec.head)
    assert isinstance(head, nn.Linear) and head.out_features == 5, f"{spec.head} is not {arch}'s head"
    source_keys = list(net.state_dict())
    for old, _ in spec.renames:
        assert any(key.startswith(old) for key in source_keys), f"rename {old!r} matches no key of {arch}"

    expected = {k: v for k, v in build_model(arch, 5).state_dict().items() if k not in ("mean", "std")}
    layout, mapped = map_keys(spec, expected, net.state_dict())
    assert layout == "torchvision"
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in expected.items()}


def test_mobilenet_renames_live_in_the_spec() -> None:
    spec = get_spec("mobilenet_v3_large")
    assert spec.renames == (("classifier.0.", "features.features.17.0."),) and spec.head == "classifier.3"
    source = torchvision.models.mobilenet_v3_large(num_classes=4).state_dict()
    expected = build_model("mobilenet_v3_large", 4).state_dict()

    _, mapped = map_keys(spec, expected, source)
    hidden = source["classifier.0.weight"]
    assert torch.equal(mapped["features.features.17.0.weight"], hidden.reshape(*hidden.shape, 1, 1))
    assert torch.equal(mapped["head.weight"], source["classifier.3.weight"])

    # Without the spec's rename the loader has no other knowledge of where classifier.0 goes.
    _, unrenamed = map_keys(dataclasses.replace(spec, renames=()), expected, source)
    assert "features.classifier.0.weight" in unrenamed and "features.features.17.0.weight" not in unrenamed


def test_native_specs_leave_keys_alone() -> None:
    spec = get_spec("smallcnn")
    assert not spec.foreign and spec.normalization is None
    state = {"0.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    assert map_keys(spec, {"features.0.weight": torch.zeros(1)}, state) == ("robustcam", state)


def test_torchvision_and_native_specs_fix_no_statistics() -> None:
    # weights in these layouts are trained on anything: the loader decides (dataset's, else ImageNet's)
    assert IMAGENET.mean == (0.485, 0.456, 0.406) and IMAGENET.std == (0.229, 0.224, 0.225)
    assert all(get_spec(arch).normalization is None for arch in [*_TORCHVISION_NAMED, "resnet18_cifar", "smallcnn"])
    assert IMAGENET.values("std", 3) == [0.229, 0.224, 0.225] and not IMAGENET.fits(1)
    assert NEUTRAL.values("mean", 3) == [0.5, 0.5, 0.5] and NEUTRAL.fits(1)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\).*\(32, 32\)"):
        ArchSpec(input_size=(32, 32), min_input_size=(3, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="head must name"):
        ArchSpec(input_size=(3, 32, 32), min_input_size=(3, 8, 8), head="")
    with pytest.raises(ValueError, match=r"normalization 'odd' needs 1 or 3 values for std, got std=\(\)"):
        Normalization("odd", (0.5,), (), "no std")
    with pytest.raises(TypeError, match=r"spec of architecture 'toy' must be an ArchSpec, got dict"):
        register_model("toy", spec={"input_size": (3, 32, 32)})  # type: ignore[arg-type]
    assert "toy" not in MODELS
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        get_spec("resnet81")
