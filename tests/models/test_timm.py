"""timm models as CAMClassifiers (``timm:<name>``): the same logits, exact CAMs, one-line refusals.

Parametrised over timm's own tiny test configurations (``test_resnet`` and friends, a few
hundred thousand parameters) with random weights, so every case runs in about a second.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

from robustcam.checkpoint import load_checkpoint
from robustcam.config import ModelConfig
from robustcam.errors import CheckpointError, InputError, RobustcamError
from robustcam.models import MODELS, TimmNotInstalledError, build_model, cam_exact, get_spec
from robustcam.models.gradcam import GradCAMClassifier
from robustcam.models.timm_adapter import head_problem

timm = pytest.importorskip("timm")

# (timm model, options): heads that are global average pooling + one Linear.
EXACT: list[tuple[str, dict[str, Any]]] = [
    ("test_resnet", {}),
    ("test_efficientnet", {}),
    ("test_byobnet", {}),
    ("test_convnext", {"head_norm_first": True}),  # its norm moves before the pooling
]
# (timm model, options, the step the message must name)
NOT_EXACT: list[tuple[str, dict[str, Any], str]] = [
    ("test_vit", {}, "starts with getitem, not global average pooling"),
    ("test_convnext", {}, "head.norm (LayerNorm2d)"),
]


def _timm_net(name: str, options: dict[str, Any], num_classes: int = 5) -> nn.Module:
    """A timm network with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=num_classes, **options)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize(("name", "options"), EXACT, ids=[name for name, _ in EXACT])
def test_a_timm_state_dict_gives_the_timm_logits_and_exact_cams(
    name: str, options: dict[str, Any], tmp_path: Path
) -> None:
    net = _timm_net(name, options)
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model, meta = load_checkpoint(path, arch=f"timm:{name}", model_kwargs=options)

    x = torch.rand(2, 3, *get_spec(f"timm:{name}").min_input_size[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = model.forward_cams(x)
        torch.testing.assert_close(output.logits, net(model.normalize(x)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.cams.mean(dim=(2, 3)), output.logits, atol=1e-5, rtol=1e-5)
    assert output.cams.shape[:2] == (2, 5) and output.cams.shape[2] * output.cams.shape[3] > 1
    # mean/std of timm's pretrained config, since the file carries none
    config: dict[str, Any] = net.pretrained_cfg  # type: ignore[assignment]
    assert meta["mean"] == list(config["mean"]) and meta["std"] == list(config["std"])
    assert meta["normalization"]["source"] == "architecture"
    assert cam_exact(name, **options)


def test_timm_files_load_from_pth_bin_and_a_hugging_face_cache(tmp_path: Path) -> None:
    net = _timm_net("test_resnet", {}, num_classes=3)
    state = net.state_dict()
    torch.save(state, tmp_path / "weights.pth")
    torch.save(state, tmp_path / "pytorch_model.bin")
    cache = tmp_path / "models--timm--test_resnet.r160_in1k"
    snapshot = cache / "snapshots" / "5e1a7c"
    snapshot.mkdir(parents=True)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("5e1a7c")
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for source in (tmp_path / "weights.pth", tmp_path / "pytorch_model.bin", cache):
        model, meta = load_checkpoint(source, arch="timm:test_resnet")
        assert meta["num_classes"] == 3  # read from the classifier, fc.weight
        with torch.no_grad():
            torch.testing.assert_close(model(x), net(model.normalize(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options", "step"), NOT_EXACT, ids=[f"{n}-{len(o)}" for n, o, _ in NOT_EXACT])
def test_heads_that_are_not_gap_and_one_linear_are_named_and_get_gradcam(
    name: str, options: dict[str, Any], step: str
) -> None:
    problem = head_problem(timm.create_model(name, pretrained=False, num_classes=5, **options))
    assert problem is not None and step in problem and "\n" not in problem
    model = build_model(f"timm:{name}", 5, **options)
    assert isinstance(model, GradCAMClassifier), "no exact CAMs: signed Grad-CAM maps (tests/models/test_gradcam.py)"
    assert not cam_exact(name, **options)


def test_unknown_timm_models_suggest_the_nearest_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown timm model 'resnet1888' \(did you mean timm:resnet18\?\)"):
        get_spec("timm:resnet1888")
    assert "timm:resnet1888" not in MODELS
    path = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"^checkpoint .*weights.pth: unknown timm model 'resnet1888'"):
        load_checkpoint(path, arch="timm:resnet1888")


def test_options_go_to_timm_and_weights_are_never_fetched() -> None:
    model = build_model("timm:test_resnet", 4, in_channels=1, drop_rate=0.5)
    assert model.in_channels == 1 and model.num_classes == 4
    for reserved in ("pretrained", "checkpoint_path", "in_chans"):
        with pytest.raises(InputError, match=f"does not take option '{reserved}'"):
            options: dict[str, Any] = {reserved: True}
            build_model("timm:test_resnet", 4, **options)
    with pytest.raises(InputError, match=r"timm.create_model\('test_resnet', .*no_such_option=1\) failed"):
        build_model("timm:test_resnet", 4, no_such_option=1)
    # training configs take a timm architecture with timm's own options (timm checks them)
    assert ModelConfig(arch="timm:test_resnet", options={"drop_rate": 0.1}).options == {"drop_rate": 0.1}


def test_without_timm_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    monkeypatch.setattr(MODELS, "_resolved", {})  # names resolved earlier in the session are forgotten
    with pytest.raises(TimmNotInstalledError) as info:
        get_spec("timm:test_byobnet_never_resolved")
    message = str(info.value)
    assert (
        message == 'timm architectures need the optional timm package: pip install -e ".[timm]" (or pip install timm)'
    )
    assert isinstance(info.value, RobustcamError)
