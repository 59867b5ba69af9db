"""Signed Grad-CAM maps for heads that are not GAP + linear (issue 11, part 5).

The properties: on a GAP + linear model the signed Grad-CAM map is the exact CAM minus its
bias, divided by hw; its ReLU is torchcam's unnormalised Grad-CAM; ViT tokens become the
patch grid; timm models with other heads evaluate end to end with ``cam_method`` gradcam;
CAM losses refuse them.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import safetensors.torch
import torch
from data.written_files import write_cifar10
from torch import Tensor, nn

from robustcam.checkpoint import load_checkpoint
from robustcam.cli import main
from robustcam.config import load_train_config
from robustcam.errors import InputError
from robustcam.io import CorruptFileError
from robustcam.models import CAMClassifier, build_model
from robustcam.report import plot_cam_grid
from robustcam.models.gradcam import CAMLayerError, GradCAMClassifier, apply_cam_layer, cam_method, tokens_to_maps
from robustcam.train import train


class _Pool(nn.Module):
    def forward(self, features: Tensor) -> Tensor:
        return features.mean(dim=(2, 3))


def _as_gradcam(model: CAMClassifier) -> GradCAMClassifier:
    """The same network as a Grad-CAM model read at its last feature maps."""
    net = nn.Sequential(OrderedDict(body=model.features, pool=_Pool()))
    wrapped = GradCAMClassifier(net, model.head, cam_layer="body", in_channels=model.in_channels).eval()
    wrapped.set_normalization(model.mean.flatten().tolist(), model.std.flatten().tolist())
    return wrapped


def _smallcnn() -> CAMClassifier:
    torch.manual_seed(0)
    model = build_model("smallcnn", 10, 1).eval()
    with torch.no_grad():
        model.head.bias.uniform_(-1, 1)  # a bias the comparison must take out
    return model


def test_on_a_gap_linear_model_signed_gradcam_is_the_exact_cam_without_bias_over_hw() -> None:
    model = _smallcnn()
    wrapped = _as_gradcam(model)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        exact = model.forward_cams(x)
        signed = wrapped.forward_cams(x)
    hw = exact.cams.shape[2] * exact.cams.shape[3]
    torch.testing.assert_close(signed.logits, exact.logits)
    torch.testing.assert_close(signed.cams, (exact.cams - model.head.bias[None, :, None, None]) / hw)
    assert (signed.cams < 0).any(), "signed: the negative evidence is kept"

    labels = torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        _, maps, classes = wrapped.class_maps(x, labels, 3)
    assert torch.equal(classes[:, 0], labels) and maps.shape == (4, 4, *exact.cams.shape[2:])
    others = exact.logits.detach().scatter(1, labels[:, None], float("-inf"))
    assert torch.equal(classes[:, 1:], others.topk(3, dim=1).indices), "the top-3 negatives by logit"
    torch.testing.assert_close(maps, signed.cams.gather(1, classes[:, :, None, None].expand(-1, -1, *maps.shape[2:])))
    assert cam_method(wrapped) == "gradcam" and cam_method(model) == "exact"


def test_without_a_batching_rule_the_maps_come_one_class_at_a_time_and_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrapped = _as_gradcam(_smallcnn())
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        batched = wrapped.forward_cams(x).cams
    grad = torch.autograd.grad

    def no_vmap(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::is_nonzero. We could not generate a fallback.")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    with torch.no_grad():
        looped = wrapped.forward_cams(x).cams
    torch.testing.assert_close(looped, batched)


def test_relu_of_the_signed_map_is_torchcams_unnormalised_gradcam() -> None:
    torchcam = pytest.importorskip("torchcam.methods")
    torch.manual_seed(2)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 6, 3, padding=1),
            act=nn.ReLU(),
            conv2=nn.Conv2d(6, 8, 3, padding=1),
            flat=nn.Flatten(),  # an MLP head: no exact CAMs
            hidden=nn.Linear(8 * 6 * 6, 16),
            tanh=nn.Tanh(),
        )
    )
    model = GradCAMClassifier(net, nn.Linear(16, 5), cam_layer="conv2", mean=[0.0] * 3, std=[1.0] * 3).eval()
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    classes = [4, 0, 2]
    extractor = torchcam.GradCAM(model, target_layer="features.conv2")
    scores = model(x)
    (theirs,) = extractor(classes, scores, normalized=False)
    extractor.remove_hooks()
    with torch.no_grad():
        ours = model.forward_cams(x).cams[torch.arange(3), torch.tensor(classes)]
    torch.testing.assert_close(ours.clamp_min(0), theirs, atol=1e-6, rtol=1e-5)


def test_vit_tokens_become_the_patch_grid_without_the_class_token() -> None:
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # 1 class token + 3 x 2 patches
    maps = tokens_to_maps(tokens, 1, (3, 2))
    assert maps.shape == (2, 3, 3, 2)
    assert torch.equal(maps[1, 2, 0, 1], tokens[1, 1 + 1, 2]) and torch.equal(maps[0, 0, 2, 1], tokens[0, 1 + 5, 0])
    with pytest.raises(CAMLayerError, match="do not fill a 2x2 grid"):
        tokens_to_maps(tokens, 1, (2, 2))


timm = pytest.importorskip("timm")


@pytest.mark.parametrize(("name", "options"), [("test_vit", {"img_size": 32}), ("test_convnext", {})])
def test_timm_heads_that_are_not_gap_linear_get_gradcam_with_timms_logits(
    name: str, options: dict[str, Any], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=5, **options).eval()
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model, _ = load_checkpoint(path, arch=f"timm:{name}", model_kwargs=options)
    last = net.feature_info[-1]["module"]
    assert isinstance(model, GradCAMClassifier)
    # a class-token ViT: after its last block only the class token counts, so the maps are read before
    assert model.cam_layer == (f"{last}.norm1" if name == "test_vit" else last)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(model.normalize(x)), atol=1e-5, rtol=1e-5)
        _, maps, _ = model.class_maps(x, torch.tensor([1, 4]), 2)
    assert maps.shape[:2] == (2, 3) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    expected = (2, 2) if name == "test_vit" else (1, 1)
    assert tuple(maps.shape[2:]) == expected
    with pytest.raises(CAMLayerError, match=r"--cam-layer 'blocks\.99' is not a layer of timm:") as info:
        apply_cam_layer(model, "blocks.99")
    assert "\n" not in str(info.value)
    with pytest.raises(CAMLayerError, match="has exact CAMs"):
        apply_cam_layer(build_model("smallcnn", 10, 1), "features")


def test_cam_losses_refuse_a_model_without_exact_cams(tmp_path: Path) -> None:
    config = load_train_config(
        None,
        ["loss.name=hnc", "model.arch=timm:test_vit", "epochs=1", 'model.options={"img_size": 8, "patch_size": 4}'],
    )
    with pytest.raises(InputError, match="loss 'hnc' trains class activation maps, which timm:test_vit does not"):
        train(config, tmp_path / "run")


@pytest.mark.parametrize(
    ("name", "options", "method"),
    [("resnet18", {}, "exact"), ("vit_tiny_patch16_224", {"img_size": 32}, "gradcam")],
)
def test_issue_targets_timm_resnet18_and_vit_tiny_evaluate_on_a_cifar10_root(
    name: str, options: dict[str, Any], method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cifar10(tmp_path / "cifar", per_batch=4)
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10, **options)
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    out = tmp_path / "eval"
    argv = ["eval", "--ckpt", str(path), "--arch", f"timm:{name}", "--model-kwargs", json.dumps(options),
            "--data", "cifar10", "--data-root", str(tmp_path / "cifar"), "--attacks", "pgd", "--eps", "8/255",
            "--steps", "2", "--out", str(out), "--no-sanity"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code in (0, None), capsys.readouterr().err
    rows = pd.read_csv(out / "per_sample.csv")
    assert set(rows["cam_method"]) == {method} and len(rows) == 4
    assert rows[["clean_neg_peak_max", "clean_neg_homogeneity", "adv_neg_peak_max"]].notna().all().all()


def test_a_timm_vit_evaluates_end_to_end_with_gradcam_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cifar10(tmp_path / "cifar", per_batch=8)
    torch.manual_seed(0)
    net = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32, patch_size=8)
    path = tmp_path / "vit.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    out = tmp_path / "eval"
    argv = ["eval", "--ckpt", str(path), "--arch", "timm:test_vit", "--num-classes", "10",
            "--model-kwargs", json.dumps({"img_size": 32, "patch_size": 8}), "--data", "cifar10",
            "--data-root", str(tmp_path / "cifar"), "--attacks", "pgd", "--eps", "8/255", "--steps", "2",
            "--cam-layer", "blocks.4", "--out", str(out), "--no-sanity"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    printed = capsys.readouterr()
    assert info.value.code in (0, None), printed.err
    assert "signed Grad-CAM maps at layer 'blocks.4'" in " ".join(printed.out.split())
    rows = pd.read_csv(out / "per_sample.csv")
    assert set(rows["cam_method"]) == {"gradcam"} and len(rows) == 8
    for column in ("clean_neg_peak_max", "clean_neg_homogeneity", "adv_neg_peak_max", "clean_pos_peak"):
        assert rows[column].notna().all(), column
    summary = json.loads((out / "summary.json").read_text())
    examples = torch.load(out / "examples.pt", weights_only=True)
    assert examples["cam_method"] == "gradcam" and examples["logits"].shape == (8, 10)
    figure = plot_cam_grid(out / "examples.pt", tmp_path / "grid.png")
    assert figure.stat().st_size > 0
    examples["logits"] = torch.zeros(8, 3)
    with pytest.raises(CorruptFileError, match=r"'logits' of shape \(8, 3\), not \(N, K\)"):
        plot_cam_grid(examples, tmp_path / "bad.png")
    cams = summary["meta"]["cam_stats"]
    assert cams["method"] == "gradcam" and cams["cam_layer"] == "blocks.4"


def test_swins_channels_last_stages_are_read_as_maps() -> None:
    options: dict[str, Any] = {"img_size": 64, "window_size": 2, "embed_dim": 8, "depths": (1, 1, 1, 1)}
    options["num_heads"] = (1, 1, 1, 1)
    torch.manual_seed(0)
    model = build_model("timm:swin_tiny_patch4_window7_224", 5, **options).eval()
    assert isinstance(model, GradCAMClassifier) and model.channels_last and model.cam_layer == "layers.3"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        _, maps, classes = model.class_maps(x, torch.tensor([0, 3]), 2)
    assert maps.shape == (2, 3, 2, 2)
    # by hand, in the stage's own (N, h, w, K) layout
    captured: list[Tensor] = []
    handle = model.features.get_submodule("layers.3").register_forward_hook(lambda m, i, o: captured.append(o))
    logits = model(x)
    handle.remove()
    (activation,) = captured
    for j in range(3):
        chosen = logits.gather(1, classes[:, j : j + 1]).sum()
        (grad,) = torch.autograd.grad(chosen, activation, retain_graph=True)
        expected = torch.einsum("nk,nhwk->nhw", grad.mean(dim=(1, 2)), activation)
        torch.testing.assert_close(maps[:, j], expected.detach(), atol=1e-6, rtol=1e-5)


def test_robustcam_cams_statistics_from_all_maps_equal_the_evaluations_from_the_mapped_classes() -> None:
    from robustcam.cam import negative_cam_stats
    from robustcam.evaluate.measure import Measurer

    wrapped = _as_gradcam(_smallcnn())
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    measurer = Measurer(wrapped, 6, cam_stats=True, cam_topk=3, boxes=None)
    logits, every = measurer.figure_maps(x)  # what robustcam cam keeps: every class's map
    with torch.no_grad():
        _, maps, _ = wrapped.class_maps(x, labels, 3)  # what the evaluation measures
    expected = negative_cam_stats(maps, torch.zeros_like(labels), k=3)
    for name, values in measurer.figure_statistics(every, labels, logits).items():
        torch.testing.assert_close(values, expected[name], msg=name)
