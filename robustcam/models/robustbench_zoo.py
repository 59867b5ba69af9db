"""The CIFAR architectures of RobustBench's model zoo, keyed like the zoo's checkpoints.

RobustBench (Croce et al., NeurIPS 2021 Datasets and Benchmarks) publishes its CIFAR-10/100
models as state_dicts of a few network layouts. Each layout here is written from the
published description of the network, with the module names the zoo's state_dicts use,
so a checkpoint from the zoo loads by architecture name through ``load_checkpoint``: its
keys are the zoo's, the classifier (``fc``, ``linear`` or ``logits``, the spec's ``head``)
becomes ``head.*`` and every other key ``features.<key>``. All of them end in
(BN-activation-) global average pooling and one linear layer, so their CAMs are exact;
the zoo's fixed ``avg_pool2d(8)``/``avg_pool2d(4)`` is the global average at 32x32.

================================  ==========================================================  ========
name                              layout (zoo checkpoints that use it)                        head
================================  ==========================================================  ========
``wrn-28-10`` ``wrn-34-10``       WideResNet of Zagoruyko & Komodakis with pre-activation     ``fc``
``wrn-34-20`` ``wrn-70-16``       basic blocks, as in TRADES (Zhang 2019, Carmon 2019, Rice
                                  2020, Sehwag 2021, Addepalli 2022, Jia 2022, ...)
``dm-wrn-28-10`` ``dm-wrn-70-16`` DeepMind's WideResNet with SiLU/Swish and "SAME" padding    ``logits``
                                  (Gowal 2020/2021, Rebuffi 2021, Pang 2022, Wang 2023, ...)
``preact-resnet18``               PreActResNet-18 (He et al. 2016; Wong 2020, Andriushchenko  ``linear``
                                  2020)
``preact-resnet18-v2``            the zoo's PreActBlockV2 variant, BN-ReLU before pooling     ``linear``
                                  (Rice 2020 L2, Kireev 2021)
``dm-preact-resnet18``            DeepMind's PreActResNet-18 (Rebuffi 2021, Gowal 2021, Rade) ``logits``
``resnet18-robustbench``          the CIFAR ResNet-18 of Madry et al.'s ``robustness``        ``linear``
                                  library (Sehwag 2021, Addepalli 2021/2022)
================================  ==========================================================  ========

Normalisation: most zoo networks either take [0, 1] pixels as they are or keep their
statistics in the state_dict (``mu``/``sigma`` buffers in the TRADES-style networks,
``mean``/``std`` in DeepMind's); the loader uses buffers it finds, else the spec's
statistics: none (mean 0, std 1) for the TRADES-style layouts, CIFAR-10's for
DeepMind's (their default; CIFAR-100 checkpoints of that layout without buffers need
``mean``/``std`` passed). A few zoo networks normalise in code without buffers
(Hendrycks 2019: ``2x - 1``, i.e. mean 0.5, std 0.5): pass their statistics.

Many TRADES-style WideResNet checkpoints also carry ``sub_block1``, a block the
network builds but never applies: build with ``sub_block1=True`` (``--model-kwargs
'{"sub_block1": true}'``) to load them; a few have a classifier without bias
(``head_bias=False``). The WideResNets take ``depth`` and ``width`` options that default
to their names' (the tests build ``wrn-10-1``-sized networks of every layout this way).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from robustcam.errors import ParameterError
from robustcam.models.base import CAMClassifier
from robustcam.models.registry import ModelFactory, register_model
from robustcam.models.normalization import NO_NORMALIZATION
from robustcam.models.spec import ArchSpec, Normalization

__all__ = ["CIFAR10", "RAW_PIXELS", "SOURCE"]

SOURCE = "robustbench"
RAW_PIXELS = dataclasses.replace(NO_NORMALIZATION, description="no normalisation (RobustBench's zoo takes raw pixels)")
# The size the tests build of every WideResNet layout: WRN-10-1, one block per group.
_TINY_WIDE = (("depth", 10), ("width", 1))
# DeepMind's WideResNet normalises with these unless built for CIFAR-100.
CIFAR10 = Normalization(
    "cifar10", (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), "CIFAR-10 statistics (DeepMind's default)"
)
Activation = Literal["silu", "relu"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=padding, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _init_weights(network: nn.Module) -> None:
    # He initialisation with fan-out, BN at identity: the WideResNet paper's (and the zoo's) choice.
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _classifier(
    features: nn.Module, width: int, num_classes: int, *, in_channels: int, arch: str, head: str, bias: bool = True
) -> CAMClassifier:
    _init_weights(features)
    linear = nn.Linear(width, num_classes, bias=bias)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return CAMClassifier(features, linear, in_channels=in_channels, arch=arch, head_source=head)


# --------------------------------------------------------------------------- WideResNet (TRADES layout)


class WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the input.

    Where the width or resolution changes, the shortcut is a 1x1 convolution
    (``convShortcut``) of the activated input; elsewhere it is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_planes, out_planes)
        self.convShortcut = _conv1x1(in_planes, out_planes, stride) if in_planes != out_planes else None

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + self.conv2(self.relu2(self.bn2(self.conv1(activated))))


class WideGroup(nn.Module):
    """``blocks`` WideBlocks (``layer.<i>``), the first of them changing width and stride."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


def _blocks_per_group(depth: int) -> int:
    if depth < 10 or (depth - 4) % 6:
        raise ParameterError("depth", f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
    return (depth - 4) // 6


class WideResNetFeatures(nn.Module):
    """WRN-depth-width up to its final BN-ReLU: conv1, block1..3 (strides 1, 2, 2), bn1, relu.

    ``sub_block1`` is a copy of ``block1`` that some zoo networks build and store but
    never apply; it is here only so that their checkpoints load, and it is not applied.
    """

    def __init__(self, depth: int, width: int, in_channels: int, *, sub_block1: bool = False) -> None:
        super().__init__()
        blocks = _blocks_per_group(depth)
        channels = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = _conv3x3(in_channels, channels[0])
        self.block1 = WideGroup(blocks, channels[0], channels[1], 1)
        if sub_block1:
            self.sub_block1 = WideGroup(blocks, channels[0], channels[1], 1)
        self.block2 = WideGroup(blocks, channels[1], channels[2], 2)
        self.block3 = WideGroup(blocks, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = channels[3]

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))


# --------------------------------------------------------------------------- WideResNet (DeepMind layout)


def _activation(name: Activation) -> nn.Module:
    if name == "silu":
        return nn.SiLU()  # Swish, x * sigmoid(x): what DeepMind's networks use
    if name == "relu":
        return nn.ReLU()
    raise ParameterError("activation", f"activation must be 'silu' or 'relu', got {name!r}")


def _same_padding(x: Tensor, stride: int) -> Tensor:
    # TensorFlow's "SAME" padding for a 3x3 kernel: symmetric at stride 1, bottom/right only at 2.
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class DMWideBlock(nn.Module):
    """DeepMind's pre-activation block: the WideBlock with "SAME" padding before the first conv."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: Activation) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ParameterError("stride", f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = _activation(activation)
        self.conv_0 = _conv3x3(in_planes, out_planes, stride, padding=0)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = _activation(activation)
        self.conv_1 = _conv3x3(out_planes, out_planes)
        self.shortcut = _conv1x1(in_planes, out_planes, stride) if in_planes != out_planes else None

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu_0(self.batchnorm_0(x))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv_0(_same_padding(activated, self.stride))
        return shortcut + self.conv_1(self.relu_1(self.batchnorm_1(out)))


class DMWideGroup(nn.Module):
    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(
                DMWideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation)
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DMWideResNetFeatures(nn.Module):
    """DeepMind's WRN-depth-width up to its final BN-activation: init_conv, layer.0..2, batchnorm, relu."""

    def __init__(self, depth: int, width: int, in_channels: int, activation: Activation) -> None:
        super().__init__()
        blocks = _blocks_per_group(depth)
        channels = (16, 16 * width, 32 * width, 64 * width)
        self.init_conv = _conv3x3(in_channels, channels[0])
        self.layer = nn.Sequential(
            *(DMWideGroup(blocks, channels[i], channels[i + 1], 1 if i == 0 else 2, activation) for i in range(3))
        )
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.relu = _activation(activation)
        self.out_channels = channels[3]

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.batchnorm(self.layer(self.init_conv(x))))


# --------------------------------------------------------------------------- ResNet-18 and PreActResNet-18


class PreActBlock(nn.Module):
    """He et al.'s pre-activation block (BN-ReLU-conv, twice, plus the input).

    Where width or stride changes the shortcut is a 1x1 convolution (``shortcut.0``) of
    the raw input, or with ``shortcut_activated`` (the zoo's PreActBlockV2) of the
    activated input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, *, shortcut_activated: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut_activated = shortcut_activated
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(_conv1x1(in_planes, planes, stride))

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        if self.shortcut is None:
            shortcut = x
        else:
            shortcut = self.shortcut(activated if self.shortcut_activated else x)
        return shortcut + self.conv2(F.relu(self.bn2(self.conv1(activated))))


class BasicBlock(nn.Module):
    """The original ResNet block: conv-BN-ReLU-conv-BN, plus the input (1x1 conv-BN where it changes), ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(_conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


_RESNET18_PLANES = (64, 128, 256, 512)


class ResNet18Features(nn.Module):
    """The CIFAR ResNet-18 trunk: 3x3 stem (conv1, and bn1 unless pre-activation), layer1..4 of two blocks.

    ``block`` is ``"basic"`` (ResNet-18), ``"preact"`` or ``"preact-v2"`` (PreActResNet-18; the
    v2 variant takes shortcuts from the activated input and ends in ``bn`` + ReLU).
    """

    def __init__(self, block: Literal["basic", "preact", "preact-v2"], in_channels: int) -> None:
        super().__init__()
        self.block = block
        self.conv1 = _conv3x3(in_channels, 64)
        if block == "basic":
            self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for index, planes in enumerate(_RESNET18_PLANES, start=1):
            stride = 1 if index == 1 else 2
            layer = nn.Sequential(self._block(in_planes, planes, stride), self._block(planes, planes, 1))
            self.add_module(f"layer{index}", layer)
            in_planes = planes
        if block == "preact-v2":
            self.bn = nn.BatchNorm2d(512)
        self.out_channels = 512

    def _block(self, in_planes: int, planes: int, stride: int) -> nn.Module:
        if self.block == "basic":
            return BasicBlock(in_planes, planes, stride)
        return PreActBlock(in_planes, planes, stride, shortcut_activated=self.block == "preact-v2")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if self.block == "basic":
            out = F.relu(self.bn1(out))
        for index in range(1, 5):
            out = self.get_submodule(f"layer{index}")(out)
        if self.block == "preact-v2":
            out = F.relu(self.bn(out))
        return out


class DMPreActBlock(nn.Module):
    """DeepMind's pre-activation block: "SAME" padding, and a 3x3 shortcut of the raw input."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = _activation(activation)
        self.conv_2d_1 = _conv3x3(in_planes, planes, stride, padding=0)
        self.batchnorm_1 = nn.BatchNorm2d(planes)
        self.relu_1 = _activation(activation)
        self.conv_2d_2 = _conv3x3(planes, planes)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = _conv3x3(in_planes, planes, stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(_same_padding(x, self.stride))
        out = self.conv_2d_1(_same_padding(self.relu_0(self.batchnorm_0(x)), self.stride))
        return shortcut + self.conv_2d_2(self.relu_1(self.batchnorm_1(out)))


class DMPreActResNet18Features(nn.Module):
    """DeepMind's PreActResNet-18 up to its final BN-activation: conv_2d, layer_0..3, batchnorm, relu."""

    def __init__(self, in_channels: int, activation: Activation) -> None:
        super().__init__()
        self.conv_2d = _conv3x3(in_channels, 64)
        in_planes = 64
        for index, planes in enumerate(_RESNET18_PLANES):
            stride = 1 if index == 0 else 2
            blocks = (
                DMPreActBlock(in_planes, planes, stride, activation),
                DMPreActBlock(planes, planes, 1, activation),
            )
            self.add_module(f"layer_{index}", nn.Sequential(*blocks))
            in_planes = planes
        self.batchnorm = nn.BatchNorm2d(512)
        self.relu = _activation(activation)
        self.out_channels = 512

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_2d(x)
        for index in range(4):
            out = self.get_submodule(f"layer_{index}")(out)
        return self.relu(self.batchnorm(out))


# --------------------------------------------------------------------------- registry entries


def _spec(head: str, smallest: int, normalization: Normalization, tiny: tuple[tuple[str, int], ...] = ()) -> ArchSpec:
    # CIFAR inputs; the smallest input gives 2x2 CAMs: WideResNets have total stride 4, ResNet-18s 8.
    return ArchSpec(
        input_size=(3, 32, 32),
        min_input_size=(3, smallest, smallest),
        source=SOURCE,
        head=head,
        normalization=normalization,
        tiny_options=tiny,
    )


def _wide_resnet(name: str, default_depth: int, default_width: int) -> ModelFactory:
    def factory(
        num_classes: int,
        in_channels: int = 3,
        *,
        depth: int = default_depth,
        width: int = default_width,
        sub_block1: bool = False,
        head_bias: bool = True,
    ) -> CAMClassifier:
        _check_width(width)
        features = WideResNetFeatures(depth, width, in_channels, sub_block1=sub_block1)
        return _classifier(
            features, features.out_channels, num_classes, in_channels=in_channels, arch=name, head="fc", bias=head_bias
        )

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = f"WideResNet-{default_depth}-{default_width} in RobustBench's TRADES-style layout."
    return factory


def _dm_wide_resnet(name: str, default_depth: int, default_width: int) -> ModelFactory:
    def factory(
        num_classes: int,
        in_channels: int = 3,
        *,
        depth: int = default_depth,
        width: int = default_width,
        activation: Activation = "silu",
    ) -> CAMClassifier:
        _check_width(width)
        features = DMWideResNetFeatures(depth, width, in_channels, activation)
        return _classifier(
            features, features.out_channels, num_classes, in_channels=in_channels, arch=name, head="logits"
        )

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = f"WideResNet-{default_depth}-{default_width} in DeepMind's layout (SiLU, SAME padding)."
    return factory


def _check_width(width: int) -> None:
    if width < 1:
        raise ParameterError("width", f"WideResNet width must be >= 1, got {width}")


for _depth, _width in ((28, 10), (34, 10), (34, 20), (70, 16)):
    _name = f"wrn-{_depth}-{_width}"
    register_model(_name, spec=_spec("fc", 8, RAW_PIXELS, _TINY_WIDE))(_wide_resnet(_name, _depth, _width))
for _depth, _width in ((28, 10), (70, 16)):
    _name = f"dm-wrn-{_depth}-{_width}"
    register_model(_name, spec=_spec("logits", 8, CIFAR10, _TINY_WIDE))(_dm_wide_resnet(_name, _depth, _width))


@register_model("preact-resnet18", spec=_spec("linear", 16, RAW_PIXELS))
def preact_resnet18(num_classes: int, in_channels: int = 3) -> CAMClassifier:
    """PreActResNet-18 as RobustBench's zoo keys it (PreActBlock; no BN before pooling)."""
    features = ResNet18Features("preact", in_channels)
    return _classifier(features, 512, num_classes, in_channels=in_channels, arch="preact-resnet18", head="linear")


@register_model("preact-resnet18-v2", spec=_spec("linear", 16, RAW_PIXELS))
def preact_resnet18_v2(num_classes: int, in_channels: int = 3) -> CAMClassifier:
    """PreActResNet-18 with the zoo's PreActBlockV2 and BN-ReLU before pooling (``bn_before_fc``)."""
    features = ResNet18Features("preact-v2", in_channels)
    return _classifier(features, 512, num_classes, in_channels=in_channels, arch="preact-resnet18-v2", head="linear")


@register_model("dm-preact-resnet18", spec=_spec("logits", 16, CIFAR10))
def dm_preact_resnet18(num_classes: int, in_channels: int = 3, *, activation: Activation = "silu") -> CAMClassifier:
    """PreActResNet-18 in DeepMind's layout (SiLU, SAME padding, 3x3 shortcuts)."""
    features = DMPreActResNet18Features(in_channels, activation)
    return _classifier(features, 512, num_classes, in_channels=in_channels, arch="dm-preact-resnet18", head="logits")


@register_model("resnet18-robustbench", spec=_spec("linear", 16, RAW_PIXELS))
def resnet18_robustbench(num_classes: int, in_channels: int = 3) -> CAMClassifier:
    """The CIFAR ResNet-18 of Madry et al.'s ``robustness`` library, as RobustBench's zoo keys it."""
    features = ResNet18Features("basic", in_channels)
    return _classifier(features, 512, num_classes, in_channels=in_channels, arch="resnet18-robustbench", head="linear")
