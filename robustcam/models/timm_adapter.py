"""timm models as ``CAMClassifier``s: ``--arch timm:<model name>``.

timm (pytorch-image-models, an optional extra: ``pip install -e ".[timm]"``) splits
every classifier into ``forward_features`` (the feature maps) and ``forward_head``
(pooling, dropout, classifier). A timm model has exact CAMs when its
``forward_head`` is global average pooling followed by one linear layer, with
nothing but flatten/dropout/identity steps around it: ResNets, EfficientNets,
RegNets, DenseNets, ConvNeXt with ``head_norm_first=True`` (its norm is
``norm_pre``, part of ``forward_features``), ... Whether it is is read from the head
itself: ``forward_head`` is traced with ``torch.fx`` (timm's own layers that derive
from a ``torch.nn`` layer are leaves, so a ``LayerNorm2d`` is named as such) and the
traced steps must be that.

The ``CAMClassifier``'s features are the timm network itself with its classifier
removed by timm's ``reset_classifier(0, global_pool="")``, timm's documented way to
make ``forward`` return the unpooled ``forward_features`` output; that what is left
of ``forward_head`` then passes features through unchanged is checked the same way.
The head is the network's own classifier ``nn.Linear``. So the state_dict keys are
timm's (``conv1.weight`` becomes ``features.conv1.weight``, the classifier ``head.*``)
and timm weights from a local file (``.pth``, ``.bin``, ``.safetensors``, a Hugging
Face cache's ``model.safetensors``) load through ``load_checkpoint``.

Other heads (ViT's token pooling, ConvNeXt's default LayerNorm after pooling,
MobileNetV3's ``conv_head`` after pooling, VGG's MLP) have no exact CAMs: such a model
becomes a ``GradCAMClassifier`` (``robustcam.models.gradcam``), its classifier the head
and the rest of the network the features, with signed Grad-CAM maps at the last layer of
its ``feature_info`` unless ``--cam-layer`` names another. ``cam_exact`` says which a
model is without building weights; ``head_problem`` says why a head is not exact.

Models are always built with ``pretrained=False``: nothing is downloaded. The spec's
input size and mean/std come from the model's ``pretrained_cfg`` (the tag's, for
``timm:resnet18.a1_in1k``), its smallest CAM-capable input from ``feature_info``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustcam.errors import InputError, ParameterError, RobustcamError
from robustcam.models.base import CAMClassifier
from robustcam.models.gradcam import GradCAMClassifier
from robustcam.models.registry import MODELS, Architecture
from robustcam.models.spec import ArchSpec, Normalization
from robustcam.models.torchvision_adapter import NotCAMCapableError, describe_node, is_global_pool, linear_after_pool

__all__ = [
    "TIMM_SCHEME",
    "TimmNotInstalledError",
    "build_timm",
    "cam_exact",
    "cam_head",
    "default_cam_layer",
    "head_problem",
    "import_timm",
    "timm_spec",
]

TIMM_SCHEME = "timm"
SOURCE = "timm"
# Arguments of timm.create_model that robustcam gives itself, or that would fetch or read weights
# behind the checkpoint loader's back: (argument, what to use instead).
_RESERVED = {
    "pretrained": "robustcam never downloads weights; load a local file with load_checkpoint / --ckpt",
    "pretrained_cfg_overlay": "robustcam never downloads weights; load a local file with load_checkpoint / --ckpt",
    "checkpoint_path": "load weights with load_checkpoint / --ckpt, which reads them safely",
    "num_classes": "it is build_model's own num_classes argument",
    "in_chans": "use build_model's in_channels argument",
}
# What reset_classifier(0, "") may leave in forward_head: steps that are identities in eval mode.
_IDENTITY_IN_EVAL = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_INSTALL = 'pip install -e ".[timm]" (or pip install timm)'
# The smallest input is twice the total stride; a network without feature_info is assumed to have 32.
_DEFAULT_REDUCTION = 32


class TimmNotInstalledError(RobustcamError, ImportError):
    """``timm:`` architectures need the optional timm extra."""


def import_timm() -> ModuleType:
    """The ``timm`` package, or a one-line error that says how to install it."""
    try:
        import timm
    except ImportError:
        raise TimmNotInstalledError(f"timm architectures need the optional timm package: {_INSTALL}") from None
    return timm


class _HeadTracer(fx.Tracer):
    """Traces into timm's containers (``ClassifierHead``, ``SelectAdaptivePool2d``) but keeps
    every layer that derives from a ``torch.nn`` layer (timm's ``Linear``, ``LayerNorm2d``,
    ``BatchNormAct2d``) whole, so the trace names layers rather than their arithmetic.

    ``coarse`` keeps every submodule whole: the fallback for heads with code that fx cannot
    trace (VGG's ``ConvMlp`` branches on the input size), which then still says what the head
    applies first, at the cost of not looking inside it.
    """

    _CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)

    def __init__(self, *, coarse: bool = False) -> None:
        super().__init__()
        self.coarse = coarse
        self.traced_func_name = "forward_head"

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.coarse:
            return True
        return any(cls.__module__.startswith("torch.nn") and cls not in self._CONTAINERS for cls in type(m).__mro__)


def _head_graph(net: nn.Module, *, coarse: bool = False) -> tuple[list[fx.Node], dict[str, nn.Module]]:
    """The steps of ``net.forward_head`` that depend on its input, and the modules they call."""
    graph = _HeadTracer(coarse=coarse).trace(net, concrete_args={"pre_logits": False})
    nodes = list(graph.nodes)
    dependent: set[fx.Node] = {nodes[0]}  # the features placeholder
    for node in nodes[1:]:
        if node.op != "placeholder" and any(arg in dependent for arg in node.all_input_nodes):
            dependent.add(node)
    return [node for node in nodes if node in dependent], dict(net.named_modules())


def _traced_head(net: nn.Module) -> tuple[list[fx.Node], dict[str, nn.Module], bool]:
    """``_head_graph`` at the finest level fx can trace; the flag says whether it had to go coarse."""
    for coarse in (False, True):
        try:
            return (*_head_graph(net, coarse=coarse), coarse)
        except Exception as error:  # noqa: BLE001  (fx raises TraceError, TypeError, ... on dynamic code)
            failure = error
    message = " ".join(str(failure).split())[:160]
    raise NotCAMCapableError(
        f"its forward_head cannot be traced by torch.fx ({type(failure).__name__}: {message})"
    ) from None


def cam_head(net: nn.Module) -> str:
    """The qualified name of the one ``nn.Linear`` that a timm model's ``forward_head`` applies
    after global average pooling; ``NotCAMCapableError`` says what else the head does."""
    if not callable(getattr(net, "forward_head", None)):
        raise NotCAMCapableError(f"{type(net).__name__} has no forward_head")
    steps, modules, coarse = _traced_head(net)
    steps = steps[1:]  # after the placeholder
    if not steps or not is_global_pool(steps[0], modules):
        first = describe_node(steps[0], modules) if steps else "nothing"
        raise NotCAMCapableError(f"its forward_head starts with {first}, not global average pooling")
    if coarse:
        shown = ", ".join(describe_node(node, modules) for node in steps if node.op != "output")
        raise NotCAMCapableError(f"its forward_head [{shown}] cannot be traced into to check it")
    return linear_after_pool(steps[1:], modules)


def head_problem(net: nn.Module) -> str | None:
    """What keeps a timm model's head from being GAP + one Linear, or None when it is that."""
    try:
        cam_head(net)
    except NotCAMCapableError as error:
        return str(error)
    return None


def _check_pass_through(net: nn.Module, arch: str) -> None:
    # After reset_classifier(0, "") the network's forward is forward_features followed by what
    # is left of forward_head: it must hand the feature maps on unchanged (dropout is the
    # identity in eval mode; a flatten would already be a change).
    steps, modules = _head_graph(net)
    kept = [
        describe_node(node, modules)
        for node in steps[1:]
        if node.op != "output"
        and not (node.op == "call_module" and isinstance(modules[str(node.target)], _IDENTITY_IN_EVAL))
        and not (node.op == "call_function" and node.target is F.dropout)
    ]
    if kept:
        raise NotCAMCapableError(
            f"{arch} is not CAM-capable: with its classifier removed, timm's forward_head still "
            f"applies [{', '.join(kept)}], so its logits are not the mean of its CAMs"
        )


def _classifier_name(net: nn.Module) -> str:
    classifier = net.get_classifier()  # type: ignore[operator]
    # a distilled model's classifier is a pair of heads: no one name, and no exact CAMs either
    return next((name for name, module in net.named_modules() if module is classifier), "head")


def _create(timm: ModuleType, model_name: str, **kwargs: Any) -> nn.Module:
    try:
        net: nn.Module = timm.create_model(model_name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as error:
        shown = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        message = " ".join(str(error).split())
        raise InputError(
            f"timm.create_model({model_name!r}{', ' + shown if shown else ''}) failed: "
            f"{type(error).__name__}: {message}"
        ) from None
    return net


def _checked_options(arch: str, options: Mapping[str, Any]) -> dict[str, Any]:
    for key, instead in _RESERVED.items():
        if key in options:
            raise ParameterError(key, f"architecture {arch!r} does not take option {key!r}: {instead}")
    return dict(options)


def build_timm(model_name: str, num_classes: int, in_channels: int = 3, **options: Any) -> CAMClassifier:
    """A ``CAMClassifier`` of the timm model ``model_name``, randomly initialised.

    ``options`` go to ``timm.create_model`` (``head_norm_first=True``, ``drop_rate=0.1``).
    A model whose head is not GAP + one Linear gets signed Grad-CAM maps instead
    (``GradCAMClassifier``, at ``default_cam_layer``); ``NotCAMCapableError`` when its
    classifier is not one Linear either.
    """
    arch = f"{TIMM_SCHEME}:{model_name}"
    timm = import_timm()
    net = _create(timm, model_name, num_classes=num_classes, in_chans=in_channels, **_checked_options(arch, options))
    try:
        head_name = cam_head(net)
    except NotCAMCapableError:
        return _gradcam_timm(net, arch, in_channels)
    head = net.get_submodule(head_name)
    assert isinstance(head, nn.Linear)
    net.reset_classifier(0, global_pool="")  # type: ignore[operator]
    _check_pass_through(net, arch)
    return CAMClassifier(net, head, in_channels=in_channels, arch=arch, head_source=head_name)


def default_cam_layer(net: nn.Module) -> str:
    """The layer a timm model's Grad-CAM maps are read at by default: the last entry of its
    ``feature_info`` (timm's own choice of its deepest feature maps: ``stages.3`` of a ConvNeXt,
    the last of MobileNetV3's ``blocks``, VGG's last ReLU), ``blocks.<last>.norm1`` for a
    class-token ViT."""
    feature_info = getattr(net, "feature_info", None)
    if not feature_info:
        raise NotCAMCapableError(f"{type(net).__name__} declares no feature_info to take a Grad-CAM layer from")
    last = str(feature_info[-1]["module"])
    # A class-token ViT reads only its class token after the last block: the patch tokens there
    # get zero gradient. Its maps come from the last block's first norm, the input of its
    # attention (pytorch-grad-cam's choice for ViTs).
    if getattr(net, "global_pool", None) == "token" and f"{last}.norm1" in dict(net.named_modules()):
        return f"{last}.norm1"
    return last


def _gradcam_timm(net: nn.Module, arch: str, in_channels: int) -> GradCAMClassifier:
    """A timm model whose head is not GAP + one Linear, with signed Grad-CAM maps: its
    classifier is the head, the rest of the network (token pooling, norms, MLP) the features."""
    head = net.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise NotCAMCapableError(
            f"{arch} has neither exact CAMs nor Grad-CAM maps here: its classifier is "
            f"{type(head).__name__}, not one nn.Linear"
        )
    head_name = _classifier_name(net)
    layer = default_cam_layer(net)
    net.reset_classifier(0)  # type: ignore[operator]  # forward now ends at the classifier's input
    patch_embed = getattr(net, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    return GradCAMClassifier(
        net,
        head,
        cam_layer=layer,
        prefix_tokens=int(getattr(net, "num_prefix_tokens", 0)),
        grid=None if grid is None else (int(grid[0]), int(grid[1])),
        channels_last=str(getattr(net, "output_fmt", "NCHW")) == "NHWC",
        in_channels=in_channels,
        arch=arch,
        head_source=head_name,
    )


def cam_exact(model_name: str, **options: Any) -> bool:
    """Whether ``timm:<model_name>`` built with ``options`` has exact CAMs (GAP + one Linear head).

    Builds the network on the meta device: no weights are allocated or initialised.
    """
    timm = import_timm()
    with torch.device("meta"):
        net = _create(timm, model_name, **_checked_options(f"{TIMM_SCHEME}:{model_name}", options))
    return head_problem(net) is None


def _normalization(model_name: str, config: Mapping[str, Any]) -> Normalization | None:
    """The statistics of timm's pretrained config for ``model_name``, or None when it names none."""
    mean, std = config.get("mean"), config.get("std")
    if mean is None or std is None or len(mean) not in (1, 3) or len(std) not in (1, 3):
        return None
    return Normalization(
        f"timm:{model_name}",
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        f"timm pretrained config's statistics for {model_name}",
    )


def timm_spec(model_name: str) -> ArchSpec:
    """What timm declares about ``model_name``: input size, mean/std, head name, total stride."""
    timm = import_timm()
    with torch.device("meta"):  # the spec needs the network's layout, not its weights
        net = _create(timm, model_name)
    config: Mapping[str, Any] = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
    channels, height, width = (int(n) for n in config.get("input_size", (3, 224, 224)))
    feature_info = getattr(net, "feature_info", None)
    reduction = int(feature_info[-1]["reduction"]) if feature_info else _DEFAULT_REDUCTION
    smallest = (channels, min(2 * reduction, height), min(2 * reduction, width))
    return ArchSpec(
        input_size=(channels, height, width),
        min_input_size=smallest,
        source=SOURCE,
        head=_classifier_name(net),
        normalization=_normalization(model_name, config),
    )


def _unknown_model_message(timm: ModuleType, model_name: str) -> str:
    # timm has about 1,300 architectures: suggest the nearest rather than list them.
    close = difflib.get_close_matches(model_name.partition(".")[0], timm.list_models(), n=1)
    hint = f" (did you mean {TIMM_SCHEME}:{close[0]}?)" if close else ""
    return f"unknown timm model {model_name!r}{hint}; see timm.list_models() for the names"


@MODELS.register_scheme(TIMM_SCHEME)
def resolve_timm(arch: str) -> Architecture:
    """The ``Architecture`` of ``timm:<model name>``; an unknown name suggests the nearest."""
    model_name = arch.removeprefix(f"{TIMM_SCHEME}:")
    timm = import_timm()
    if not model_name or not timm.is_model(model_name):
        raise InputError(_unknown_model_message(timm, model_name))

    def factory(num_classes: int, in_channels: int = 3, **options: Any) -> CAMClassifier:
        return build_timm(model_name, num_classes, in_channels, **options)

    factory.__name__ = f"timm_{model_name.replace('.', '_')}"
    factory.__doc__ = f"timm ``{model_name}`` (pretrained=False), split at its global average pooling."
    return Architecture(arch, factory, timm_spec(model_name), typed_options=False)
