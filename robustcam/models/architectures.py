"""The registered architectures: one decorated factory each, with its ``ArchSpec``.

Every factory takes ``num_classes`` and ``in_channels`` (1 or 3) and returns a
``CAMClassifier`` whose ``mean``/``std`` buffers are set by ``build_model``.
Weights are always randomly initialised: robustcam never downloads weights.
What is known about an architecture (input size, the network its weights come
from and how that network names its parameters) is declared in its spec.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustcam.errors import ParameterError
from robustcam.models.base import CAMClassifier
from robustcam.models.registry import register_model
from robustcam.models.spec import ArchSpec
from robustcam.models.torchvision_adapter import from_torchvision


def _torchvision_models() -> Any:
    import torchvision  # imported when a torchvision architecture is built: keeps `import robustcam` fast

    return torchvision.models


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


@register_model("smallcnn", spec=ArchSpec(input_size=(3, 32, 32), min_input_size=(3, 8, 8)))
def smallcnn(num_classes: int, in_channels: int = 3, *, width: int = 16) -> CAMClassifier:
    """Five 3x3 conv layers, two max-pools: 8x8 CAMs for 32x32 inputs; for digits and tests."""
    if width < 1:
        raise ParameterError("width", f"width must be >= 1, got {width}")
    features = nn.Sequential(
        *_conv_bn_relu(in_channels, width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(width, 2 * width),
        *_conv_bn_relu(2 * width, 2 * width),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * width, 4 * width),
        *_conv_bn_relu(4 * width, 4 * width),
    )
    return CAMClassifier(features, nn.Linear(4 * width, num_classes), in_channels=in_channels, arch="smallcnn")


# Keyed like torchvision's resnet18 (only conv1 and the max-pool differ). Torchvision layouts
# fix no statistics: weights in them are trained on anything, so a bare state_dict gets the
# evaluated dataset's statistics (else ImageNet's) unless --normalization says otherwise.
@register_model(
    "resnet18_cifar",
    spec=ArchSpec(input_size=(3, 32, 32), min_input_size=(3, 16, 16), source="torchvision", head="fc"),
)
def resnet18_cifar(num_classes: int, in_channels: int = 3) -> CAMClassifier:
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem and no max-pool (4x4 CAMs)."""
    net = _torchvision_models().resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()  # type: ignore[assignment]
    return from_torchvision(net, arch="resnet18_cifar", in_channels=in_channels)


def _torchvision_spec(head: str, renames: tuple[tuple[str, str], ...] = ()) -> ArchSpec:
    # torchvision's ImageNet classifiers take 224x224 inputs and have a total stride of 32.
    return ArchSpec(
        input_size=(3, 224, 224),
        min_input_size=(3, 64, 64),
        source="torchvision",
        head=head,
        renames=renames,
    )


def _register_torchvision(name: str, head: str) -> None:
    def factory(num_classes: int, in_channels: int = 3) -> CAMClassifier:
        constructor = getattr(_torchvision_models(), name)
        return from_torchvision(constructor(num_classes=num_classes), arch=name, in_channels=in_channels)

    factory.__name__ = name
    factory.__doc__ = f"torchvision ``{name}``, split at its global average pooling."
    register_model(name, spec=_torchvision_spec(head))(factory)


for _name, _head in (
    ("resnet18", "fc"),
    ("resnet34", "fc"),
    ("resnet50", "fc"),
    ("wide_resnet50_2", "fc"),
    ("densenet121", "classifier"),
):
    _register_torchvision(_name, _head)


@register_model(
    "mobilenet_v3_large",
    spec=_torchvision_spec(
        "classifier.3",
        # torchvision's hidden Linear 960->1280 is the 1x1 convolution appended to the features.
        renames=(("classifier.0.", "features.features.17.0."),),
    ),
)
def mobilenet_v3_large(num_classes: int, in_channels: int = 3) -> CAMClassifier:
    """torchvision ``mobilenet_v3_large`` made CAM-capable.

    Its classifier is an MLP (Linear 960->1280, Hardswish, Dropout, Linear), which
    has no exact CAMs. The hidden layer is moved before the pooling as a 1x1
    convolution + Hardswish applied at every position (the CAM paper's recipe
    of replacing fully connected layers by convolutions), leaving one linear
    head after pooling. Weights for this variant keep their torchvision names,
    except ``classifier.0`` which becomes the 1x1 convolution ``features.17`` (the
    spec's rename) and ``classifier.3``, the head.
    """
    net = _torchvision_models().mobilenet_v3_large(num_classes=num_classes)
    hidden = net.classifier[0]
    assert isinstance(hidden, nn.Linear)
    conv = nn.Conv2d(hidden.in_features, hidden.out_features, kernel_size=1)
    net.features.append(nn.Sequential(conv, nn.Hardswish(inplace=True)))
    net.classifier = nn.Sequential(nn.Dropout(p=0.2, inplace=True), net.classifier[3])
    return from_torchvision(net, arch="mobilenet_v3_large", in_channels=in_channels)
