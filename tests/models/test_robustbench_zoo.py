"""RobustBench's CIFAR layouts load zoo-keyed state_dicts and give the zoo networks' logits.

The reference networks below are written here from the published descriptions of the
architectures (Zagoruyko & Komodakis 2016 for WideResNets, with the pre-activation blocks
and module names of the TRADES code; He et al. 2016 for (PreAct)ResNet-18 on CIFAR; Gowal
et al. 2020 for DeepMind's WideResNet with Swish and "SAME" padding), each with the
parameter names the zoo's state_dicts use. A state_dict of a reference with random weights
is saved the way zoo files are (wrapped, ``module.`` prefixes) and loaded by architecture
name. Tests build the WideResNets as WRN-16-2 (two blocks per group: both kinds of shortcut)
and check the published depths and widths on the meta device, without allocating them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustcam.checkpoint import load_checkpoint
from robustcam.errors import CheckpointError
from robustcam.models import build_model, get_normalization, get_spec

TINY_WIDE = {"depth": 16, "width": 2}


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)


# --------------------------------------------------------------------------- TRADES-style WideResNet


class TradesUnit(nn.Module):
    """BN-ReLU, conv3x3 (stride), BN-ReLU, conv3x3; the shortcut is a 1x1 conv of the activated
    input where the width changes, else the input itself."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = _conv(cin, cout, stride=stride)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = _conv(cout, cout)
        if cin != cout:
            self.convShortcut = _conv(cin, cout, kernel=1, stride=stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        residual = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return residual + (self.convShortcut(pre) if hasattr(self, "convShortcut") else x)


class TradesGroup(nn.Module):
    def __init__(self, units: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[TradesUnit(cout if i else cin, cout, 1 if i else stride) for i in range(units)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class TradesWideResNet(nn.Module):
    """WRN-depth-width on 32x32: (depth - 4) / 6 units per group at widths 16k, 32k, 64k."""

    mu: Tensor
    sigma: Tensor

    def __init__(self, depth: int, width: int, classes: int, *, mu_sigma: bool = False, unused: bool = False) -> None:
        super().__init__()
        units = (depth - 4) // 6
        self.conv1 = _conv(3, 16)
        self.block1 = TradesGroup(units, 16, 16 * width, 1)
        if unused:  # some zoo networks store a group they never apply
            self.sub_block1 = TradesGroup(units, 16, 16 * width, 1)
        self.block2 = TradesGroup(units, 16 * width, 32 * width, 2)
        self.block3 = TradesGroup(units, 32 * width, 64 * width, 2)
        self.bn1, self.relu = nn.BatchNorm2d(64 * width), nn.ReLU()
        self.fc = nn.Linear(64 * width, classes)
        if mu_sigma:
            self.register_buffer("mu", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
            self.register_buffer("sigma", torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "mu"):
            x = (x - self.mu) / self.sigma
        out = self.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


# --------------------------------------------------------------------------- DeepMind's WideResNet


def _same(x: Tensor, stride: int) -> Tensor:
    return F.pad(x, [1, 1, 1, 1] if stride == 1 else [0, 1, 0, 1])


class DeepMindUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.batchnorm_0, self.relu_0 = nn.BatchNorm2d(cin), nn.SiLU()
        self.conv_0 = _conv(cin, cout, stride=stride, padding=0)
        self.batchnorm_1, self.relu_1 = nn.BatchNorm2d(cout), nn.SiLU()
        self.conv_1 = _conv(cout, cout)
        if cin != cout:
            self.shortcut = _conv(cin, cout, kernel=1, stride=stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu_0(self.batchnorm_0(x))
        residual = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(_same(pre, self.stride)))))
        return residual + (self.shortcut(pre) if hasattr(self, "shortcut") else x)


class DeepMindGroup(nn.Module):
    def __init__(self, units: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*[DeepMindUnit(cout if i else cin, cout, 1 if i else stride) for i in range(units)])

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DeepMindWideResNet(nn.Module):
    """Normalises inside with ``mean``/``std`` buffers of shape (3, 1, 1)."""

    mean: Tensor
    std: Tensor

    def __init__(self, depth: int, width: int, classes: int) -> None:
        super().__init__()
        units, widths = (depth - 4) // 6, (16, 16 * width, 32 * width, 64 * width)
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2471, 0.2435, 0.2616]).view(3, 1, 1))
        self.init_conv = _conv(3, 16)
        self.layer = nn.Sequential(*[DeepMindGroup(units, widths[g], widths[g + 1], 2 if g else 1) for g in range(3)])
        self.batchnorm, self.relu = nn.BatchNorm2d(widths[3]), nn.SiLU()
        self.logits = nn.Linear(widths[3], classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.batchnorm(self.layer(self.init_conv((x - self.mean) / self.std))))
        return self.logits(F.avg_pool2d(out, 8).flatten(1))


# --------------------------------------------------------------------------- ResNet-18 and PreActResNet-18 on CIFAR


class PostActUnit(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the input (1x1 conv + BN where the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, stride=stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout), nn.BatchNorm2d(cout)
        changes = stride != 1 or cin != cout
        self.shortcut = (
            nn.Sequential(_conv(cin, cout, 1, stride, 0), nn.BatchNorm2d(cout)) if changes else nn.Sequential()
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class PreActUnit(nn.Module):
    """BN-ReLU-conv twice plus the input; a 1x1 conv shortcut of the raw input (``of_activated``:
    of the activated input, the zoo's second variant) where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, of_activated: bool = False) -> None:
        super().__init__()
        self.of_activated = of_activated
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, stride=stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride, 0))

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        skip = self.shortcut(pre if self.of_activated else x) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(pre)))) + skip


class CifarResNet18(nn.Module):
    """3x3 stem, four stages of two units at widths 64..512 (strides 1, 2, 2, 2), 4x4 average pool."""

    def __init__(self, kind: str, classes: int) -> None:
        super().__init__()
        self.kind = kind
        self.conv1 = _conv(3, 64)
        if kind == "post":
            self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for stage, cout in enumerate((64, 128, 256, 512), start=1):
            stride = 1 if stage == 1 else 2
            units = [self._unit(cin, cout, stride), self._unit(cout, cout, 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*units))
            cin = cout
        if kind == "pre-v2":
            self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, classes)

    def _unit(self, cin: int, cout: int, stride: int) -> nn.Module:
        if self.kind == "post":
            return PostActUnit(cin, cout, stride)
        return PreActUnit(cin, cout, stride, of_activated=self.kind == "pre-v2")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if self.kind == "post":
            out = F.relu(self.bn1(out))
        for stage in range(1, 5):
            out = self.get_submodule(f"layer{stage}")(out)
        if self.kind == "pre-v2":
            out = F.relu(self.bn(out))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


class DeepMindPreActUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.batchnorm_0, self.relu_0 = nn.BatchNorm2d(cin), nn.SiLU()
        self.conv_2d_1 = _conv(cin, cout, stride=stride, padding=0)
        self.batchnorm_1, self.relu_1 = nn.BatchNorm2d(cout), nn.SiLU()
        self.conv_2d_2 = _conv(cout, cout)
        if stride != 1 or cin != cout:
            self.shortcut = _conv(cin, cout, stride=stride, padding=0)  # a 3x3 of the raw input

    def forward(self, x: Tensor) -> Tensor:
        skip = self.shortcut(_same(x, self.stride)) if hasattr(self, "shortcut") else x
        out = self.conv_2d_1(_same(self.relu_0(self.batchnorm_0(x)), self.stride))
        return self.conv_2d_2(self.relu_1(self.batchnorm_1(out))) + skip


class DeepMindPreActResNet18(nn.Module):
    mean: Tensor
    std: Tensor

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5071, 0.4865, 0.4409]).view(3, 1, 1))  # a CIFAR-100 network
        self.register_buffer("std", torch.tensor([0.2673, 0.2564, 0.2762]).view(3, 1, 1))
        self.conv_2d = _conv(3, 64)
        cin = 64
        for stage, cout in enumerate((64, 128, 256, 512)):
            stride = 1 if stage == 0 else 2
            units = [DeepMindPreActUnit(cin, cout, stride), DeepMindPreActUnit(cout, cout, 1)]
            setattr(self, f"layer_{stage}", nn.Sequential(*units))
            cin = cout
        self.batchnorm, self.relu = nn.BatchNorm2d(512), nn.SiLU()
        self.logits = nn.Linear(512, classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_2d((x - self.mean) / self.std)
        for stage in range(4):
            out = self.get_submodule(f"layer_{stage}")(out)
        return self.logits(F.avg_pool2d(self.relu(self.batchnorm(out)), 4).flatten(1))


# --------------------------------------------------------------------------- the cases

# (arch, reference, options, where the normalisation comes from)
Case = tuple[str, Callable[[int], nn.Module], dict[str, Any], str]
CASES: list[Case] = [
    *[
        (f"wrn-{d}-{w}", lambda c: TradesWideResNet(16, 2, c), TINY_WIDE, "architecture")
        for d, w in ((28, 10), (34, 10), (34, 20), (70, 16))
    ],
    ("wrn-28-10", lambda c: TradesWideResNet(16, 2, c, mu_sigma=True), TINY_WIDE, "checkpoint"),
    ("wrn-34-10", lambda c: TradesWideResNet(16, 2, c, unused=True), {**TINY_WIDE, "sub_block1": True}, "architecture"),
    *[
        (f"dm-wrn-{d}-{w}", lambda c: DeepMindWideResNet(16, 2, c), TINY_WIDE, "checkpoint")
        for d, w in ((28, 10), (70, 16))
    ],
    ("preact-resnet18", lambda c: CifarResNet18("pre", c), {}, "architecture"),
    ("preact-resnet18-v2", lambda c: CifarResNet18("pre-v2", c), {}, "architecture"),
    ("resnet18-robustbench", lambda c: CifarResNet18("post", c), {}, "architecture"),
    ("dm-preact-resnet18", DeepMindPreActResNet18, {}, "checkpoint"),
]


def _with_random_statistics(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return net.eval()


@pytest.mark.parametrize(("arch", "reference", "options", "statistics"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])  # fmt: skip
def test_a_zoo_state_dict_loads_by_name_and_gives_the_zoo_logits(
    arch: str, reference: Callable[[int], nn.Module], options: dict[str, Any], statistics: str, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    net = _with_random_statistics(reference(10))
    path = tmp_path / "zoo.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 99}, path)
    # the evaluated dataset's statistics lose to the zoo's: the file's own, else none
    model, meta = load_checkpoint(path, arch=arch, model_kwargs=options,
                                  dataset_statistics=get_normalization("cifar10"))  # fmt: skip

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        output = model.forward_cams(x)
        torch.testing.assert_close(output.logits, net(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.cams.mean(dim=(2, 3)), output.logits, atol=1e-5, rtol=1e-5)
    assert meta["num_classes"] == 10 and meta["normalization"]["source"] == statistics
    if statistics == "architecture":
        assert meta["normalization"]["name"] == "none" and meta["mean"] == [0.0] * 3


def test_published_depths_and_widths_have_the_zoo_keys_and_sizes() -> None:
    with torch.device("meta"):  # WRN-70-16 has 267M parameters: shapes only
        for arch, depth, width, millions in (("wrn-28-10", 28, 10, 36.5), ("wrn-34-10", 34, 10, 46.2),
                                             ("wrn-70-16", 70, 16, 266.8)):  # fmt: skip
            ours = build_model(arch, 10)
            theirs = TradesWideResNet(depth, width, 10)
            expected = {f"features.{k}": v.shape for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
            expected |= {"head.weight": theirs.fc.weight.shape, "head.bias": theirs.fc.bias.shape}
            found = {k: v.shape for k, v in ours.state_dict().items() if k not in ("mean", "std")}
            assert found == expected, arch
            assert sum(p.numel() for p in ours.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)
        assert sum(p.numel() for p in build_model("dm-wrn-70-16", 10).parameters()) / 1e6 == pytest.approx(
            266.8, abs=0.1
        )


def test_zoo_specs_are_cifar_layouts_without_statistics_of_their_own() -> None:
    for arch in ("wrn-28-10", "wrn-34-10", "wrn-70-16", "preact-resnet18", "resnet18-robustbench"):
        spec = get_spec(arch)
        assert spec.source == "robustbench" and spec.input_size == (3, 32, 32)
        assert spec.normalization is not None and spec.normalization.name == "none"
    assert get_spec("dm-wrn-28-10").normalization.mean == (0.4914, 0.4822, 0.4465)  # type: ignore[union-attr]


def test_a_stored_unused_group_needs_its_option(tmp_path: Path) -> None:
    net = TradesWideResNet(16, 2, 10, unused=True)
    path = tmp_path / "zoo.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected keys? \(features.sub_block1"):
        load_checkpoint(path, arch="wrn-28-10", model_kwargs=TINY_WIDE)
    without_bias = TradesWideResNet(16, 2, 10)
    without_bias.fc = nn.Linear(128, 10, bias=False)
    torch.save(without_bias.state_dict(), path)
    model, _ = load_checkpoint(path, arch="wrn-28-10", model_kwargs={**TINY_WIDE, "head_bias": False})
    assert model.head.bias is None
