"""Turn a torchvision classifier into a ``CAMClassifier`` by splitting it at its global pooling.

The network is traced with ``torch.fx``. The last global-average-pooling node
splits the graph: everything before it becomes ``features`` (a ``GraphModule``
that keeps the original parameter names), and what follows it must be one
``nn.Linear`` with nothing but flatten/reshape/dropout around it. A network
whose classifier is anything else (an MLP, attention pooling, ...) has no exact
CAMs and is refused with a message that names what follows the pooling.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustcam.errors import RobustcamError
from robustcam.models.base import CAMClassifier
from robustcam.models.gradcam import gradcam_network


class NotCAMCapableError(RobustcamError, ValueError):
    """A network whose classifier is not one linear layer after global average pooling."""


_FLATTEN_METHODS = {"flatten", "view", "reshape", "squeeze", "contiguous"}
# F.dropout: timm applies its head dropout as a function (an identity in eval mode).
_PASS_FUNCTIONS = {torch.flatten, torch.squeeze, torch.reshape, operator.getitem, F.dropout}
_POOL_FUNCTIONS = {F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d}
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten)


def _is_global_size(size: object) -> bool:
    return size in (1, (1, 1), [1, 1])


def _is_spatial_dims(dims: object) -> bool:
    if isinstance(dims, (list, tuple)):
        return sorted(int(d) % 4 for d in dims) == [2, 3]
    return False


def is_global_pool(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether ``node`` averages over the whole spatial extent (module, function or ``mean``)."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        return isinstance(module, nn.AdaptiveAvgPool2d) and _is_global_size(module.output_size)
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return _is_global_size(size)
    if (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    ):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return _is_spatial_dims(dims)
    return False


def describe_node(node: fx.Node, modules: Mapping[str, nn.Module]) -> str:
    """A node as messages name it: ``fc (Linear)``, ``relu``."""
    if node.op == "call_module":
        return f"{node.target} ({type(modules[str(node.target)]).__name__})"
    target = node.target
    return f"{getattr(target, '__name__', target)}"


def _replace_first_conv(net: nn.Module, in_channels: int) -> None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                kernel_size=module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                groups=1 if module.groups == module.in_channels else module.groups,
                bias=module.bias is not None,
            )
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, new)
            return
    raise NotCAMCapableError("network has no Conv2d layer to take the input channels")


def linear_after_pool(after: Sequence[fx.Node], modules: Mapping[str, nn.Module]) -> str:
    """The qualified name of the one ``nn.Linear`` among the nodes that follow global pooling.

    Flatten/reshape/dropout/identity steps may come before and after it; anything else
    (a second layer, a norm, an activation) is a ``NotCAMCapableError`` that names what
    is applied, since the logits would then not be the mean of the CAMs. The message
    says what follows the pooling; the caller names the network.
    """
    head_name: str | None = None
    for node in after:
        if node.op == "output":
            break
        if node.op == "call_module":
            module = modules[str(node.target)]
            if isinstance(module, nn.Linear) and head_name is None:
                head_name = str(node.target)
                continue
        if is_pass_through(node, modules):
            continue
        steps = ", ".join(
            describe_node(n, modules) for n in after if n.op != "output" and not is_pass_through(n, modules)
        )
        raise NotCAMCapableError(
            f"after global average pooling it applies {describe_node(node, modules)}, not only one nn.Linear "
            f"(the steps there: [{steps}])"
        )
    if head_name is None:
        raise NotCAMCapableError("no nn.Linear after global average pooling")
    return head_name


def is_pass_through(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether ``node`` only reshapes, drops out (an identity in eval mode) or reads an attribute."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _DROPOUT)
    if node.op == "call_method":
        return node.target in _FLATTEN_METHODS
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    return node.op == "get_attr"


def _trace(net: nn.Module, name: str) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(net)
    except Exception as error:  # noqa: BLE001  (fx raises TraceError, TypeError, ... on dynamic code)
        message = " ".join(str(error).split())[:160]
        raise NotCAMCapableError(
            f"{name} is not CAM-capable as far as robustcam can tell: torch.fx cannot trace it to find "
            f"its global pooling ({type(error).__name__}: {message})"
        ) from None


def split_at_global_pool(net: nn.Module, *, name: str = "network") -> tuple[fx.GraphModule, nn.Linear, str]:
    """Split ``net`` into (features, head, head's qualified name in ``net``).

    Raises ``NotCAMCapableError`` when the network does not end in global average
    pooling followed by exactly one ``nn.Linear``, or cannot be traced.
    """
    graph_module = _trace(net, name)
    modules = dict(graph_module.named_modules())
    nodes = list(graph_module.graph.nodes)
    pools = [node for node in nodes if is_global_pool(node, modules)]
    if not pools:
        raise NotCAMCapableError(f"{name} is not CAM-capable: no global average pooling found")
    pool = pools[-1]
    try:
        head_name = linear_after_pool(nodes[nodes.index(pool) + 1 :], modules)
    except NotCAMCapableError as error:
        raise NotCAMCapableError(f"{name} is not CAM-capable: {error}") from None

    features_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes[: nodes.index(pool)]:
        env[node] = features_graph.node_copy(node, lambda n: env[n])
    pooled_input = pool.args[0] if pool.args else pool.kwargs["input"]
    assert isinstance(pooled_input, fx.Node)
    features_graph.output(env[pooled_input])
    features = fx.GraphModule(graph_module, features_graph)
    head = modules[head_name]
    assert isinstance(head, nn.Linear)
    return features, head, head_name


def from_torchvision(
    net: nn.Module,
    *,
    arch: str,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    gradcam: bool = False,
) -> CAMClassifier:
    """Adapt a torchvision-style classifier: split at its global pooling (conv backbone, GAP, one
    linear head: exact CAMs), or, with ``gradcam``, a network with another head as a
    ``GradCAMClassifier`` (``robustcam.models.gradcam.gradcam_network``)."""
    if in_channels != 3:
        _replace_first_conv(net, in_channels)
    try:
        features, head, head_name = split_at_global_pool(net, name=arch)
    except NotCAMCapableError as error:
        if not gradcam:
            raise
        try:
            return gradcam_network(net, arch=arch, in_channels=in_channels, mean=mean, std=std)
        except ValueError as reason:
            raise NotCAMCapableError(f"{error}; and {reason}") from None
    return CAMClassifier(features, head, in_channels=in_channels, mean=mean, std=std, arch=arch, head_source=head_name)
