"""Signed Grad-CAM maps for classifiers whose head is not global average pooling + one linear layer.

A ViT pools a class token, ConvNeXt applies a LayerNorm after pooling, MobileNetV3 a
convolution, VGG an MLP: their logits are not the mean of any class activation map, so
robustcam's exact CAMs (``robustcam.models.base``) do not exist for them. For such a model
the maps of a class ``c`` come from Grad-CAM (Selvaraju et al., ICCV 2017) at a chosen layer
with activations ``A_k(x, y)``, **signed**:

    alpha^c_k = mean_{x,y} dS_c / dA_k(x, y),        G_c(x, y) = sum_k alpha^c_k A_k(x, y)

with no ReLU and no normalisation (Grad-CAM's usual ReLU keeps only the positive evidence;
the negative evidence is what the negative-CAM statistics measure). On a GAP + linear
model ``dS_c/dA_k = w^c_k / (hw)``, so ``G_c = (M_c - b_c) / (hw)``: the exact CAM without
its bias, up to the constant factor 1/hw (a test holds it to that).

``GradCAMClassifier`` keeps the ``CAMClassifier`` layout (``features`` maps normalised
images to the vector the head takes, ``head`` is the last ``nn.Linear``), so its state_dict
is keyed like every other model's. Its ``cam_layer`` is a submodule of ``features``. The
maps of several classes come from one forward pass and one batched backward pass
(``torch.autograd.grad(..., is_grads_batched=True)``, i.e. ``vmap`` over the classes) that
runs only through the network *after* the CAM layer: the forward pass runs without a graph
up to the layer, whose output becomes the leaf the gradients stop at.

A layer whose output is (N, T, D) tokens (a ViT block) is read as a map: the
``prefix_tokens`` (class and register tokens) are dropped and the rest reshaped to the
patch grid. Statistics on Grad-CAM maps use the true class and the top-k negative classes
by logit (``class_maps``): the maps of the other classes are not computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustcam.errors import InputError
from robustcam.models.base import CAMClassifier, ModelOutput


_RESIZING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class CAMLayerError(InputError):
    """A ``--cam-layer`` that names no layer of the model, or a layer whose output is no map."""


def tokens_to_maps(
    activation: Tensor, prefix_tokens: int, grid: tuple[int, int] | None, *, channels_last: bool = False
) -> Tensor:
    """(N, K, h, w) maps from a layer's output: as it is when 4-D (from (N, h, w, K) with
    ``channels_last``, as Swin's stages give them); (N, T, D) tokens without their
    ``prefix_tokens``, reshaped to the (h, w) patch grid (square when ``grid`` is None)."""
    if activation.ndim == 4:
        return activation.permute(0, 3, 1, 2) if channels_last else activation
    if activation.ndim != 3:
        raise CAMLayerError(f"the CAM layer's output has shape {tuple(activation.shape)}: neither maps nor tokens")
    patches = activation[:, prefix_tokens:]
    count = patches.shape[1]
    height, width = grid if grid is not None else (math.isqrt(count), math.isqrt(count))
    if height * width != count:
        raise CAMLayerError(
            f"the CAM layer's {count} patch tokens (after {prefix_tokens} prefix tokens) do not fill a "
            f"{height}x{width} grid"
        )
    return patches.transpose(1, 2).reshape(len(activation), -1, height, width)


def _batched_gradients(outputs: Tensor, leaf: Tensor, one_hot: Tensor) -> Tensor:
    """``d outputs[:, j] / d leaf`` for every column j, (m, *leaf.shape): one backward pass
    vmapped over the columns, or, where an operation of the network has no batching rule for
    that, one backward pass per column through the same graph."""
    try:
        (gradients,) = torch.autograd.grad(
            outputs, leaf, grad_outputs=one_hot, retain_graph=True, is_grads_batched=True
        )
        return gradients
    except RuntimeError as error:
        if "atching rule" not in str(error) and "vmap" not in str(error):
            raise
    columns = [torch.autograd.grad(outputs, leaf, grad_outputs=g, retain_graph=True)[0] for g in one_hot]
    return torch.stack(columns)


class GradCAMClassifier(CAMClassifier):
    """``features -> head`` with signed Grad-CAM maps at ``cam_layer`` (see the module docstring).

    Args:
        features: maps normalised images to the (N, D) vector ``head`` takes.
        head: the final ``nn.Linear(D, num_classes)``.
        cam_layer: the qualified name, inside ``features``, of the layer whose output the maps
            are made of.
        prefix_tokens, grid: for a token layer, the tokens before the patches and the patch grid.
        channels_last: the layer gives (N, h, w, K) maps (timm's ``output_fmt`` NHWC: Swin).
        in_channels, mean, std, arch, head_source: as for ``CAMClassifier``.
    """

    def __init__(
        self,
        features: nn.Module,
        head: nn.Linear,
        *,
        cam_layer: str,
        prefix_tokens: int = 0,
        grid: tuple[int, int] | None = None,
        channels_last: bool = False,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        arch: str = "custom",
        head_source: str = "head",
    ) -> None:
        super().__init__(
            features, head, in_channels=in_channels, mean=mean, std=std, arch=arch, head_source=head_source
        )
        self.prefix_tokens = prefix_tokens
        self.grid = grid
        self.channels_last = channels_last
        self.cam_layer = ""
        self.set_cam_layer(cam_layer)

    def set_cam_layer(self, name: str) -> None:
        """Take the maps at ``features``' submodule ``name``; a one-line error names the layers there are."""
        names = [n for n, _ in self.features.named_modules() if n]
        if name not in names:
            shown = ", ".join(names[-8:])
            raise CAMLayerError(f"--cam-layer {name!r} is not a layer of {self.arch} (its last layers: {shown})")
        self.cam_layer = name

    def forward(self, x: Tensor) -> Tensor:
        """Logits of [0, 1] images."""
        return self.head(self.features(self.normalize(x)))

    def _as_maps(self, activation: Tensor) -> Tensor:
        return tokens_to_maps(activation, self.prefix_tokens, self.grid, channels_last=self.channels_last)

    def _capture(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits with a graph from the CAM layer on, and that layer's output as the graph's leaf."""
        captured: list[Tensor] = []

        def hook(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
            leaf = output.detach().requires_grad_(True)  # the backward pass stops here
            captured.append(leaf)
            torch.set_grad_enabled(True)  # record the rest of the network only
            return leaf

        handle = self.features.get_submodule(self.cam_layer).register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = self.forward(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise CAMLayerError(f"the CAM layer {self.cam_layer!r} ran {len(captured)} times in one forward pass")
        return logits, captured[0]

    def _maps(self, logits: Tensor, activation: Tensor, classes: Tensor) -> Tensor:
        """Signed Grad-CAM maps (N, m, h, w) of the (N, m) ``classes``: one batched backward pass."""
        with torch.enable_grad():  # the caller may be under no_grad; the graph from the layer on is there
            selected = logits.gather(1, classes)  # (N, m)
        count = classes.shape[1]
        one_hot = torch.eye(count, dtype=selected.dtype, device=selected.device)[:, None, :].expand(
            -1, len(classes), -1
        )
        gradients = _batched_gradients(selected, activation, one_hot)
        values = self._as_maps(activation.detach())  # (N, K, h, w)
        grads = torch.stack([self._as_maps(g) for g in gradients])  # (m, N, K, h, w)
        weights = grads.mean(dim=(3, 4))  # (m, N, K)
        return torch.einsum("mnk,nkhw->nmhw", weights, values)

    def class_maps(self, x: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, the signed maps of the true class and the top-``k`` negative classes by logit
        (N, 1 + k, h, w; the true class first) and those classes (N, 1 + k, ``mapped_classes``),
        from one pass."""
        logits, activation = self._capture(x)
        classes = mapped_classes(logits.detach(), labels, k)
        maps = self._maps(logits, activation, classes)
        return logits.detach(), maps.detach(), classes

    def feature_maps(self, x: Tensor) -> Tensor:
        """The CAM layer's output as (N, K, h, w) maps."""
        _, activation = self._capture(x)
        return self._as_maps(activation.detach())

    def forward_cams(self, x: Tensor) -> ModelOutput:
        """Logits, the CAM layer's maps and the signed Grad-CAM maps of every class (for figures
        of a few samples; statistics use ``class_maps``)."""
        logits, activation = self._capture(x)
        classes = torch.arange(self.num_classes, device=logits.device).expand(len(logits), -1)
        maps = self._maps(logits, activation, classes)
        features = self._as_maps(activation.detach())
        return ModelOutput(logits.detach(), features, maps.detach())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cam_method='gradcam', cam_layer={self.cam_layer!r}"


def mapped_classes(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """The classes whose Grad-CAM maps the statistics use, (N, 1 + k): the true class first,
    then the top-``k`` negative classes by logit."""
    negatives = logits.scatter(1, labels[:, None], float("-inf")).topk(k, dim=1).indices
    return torch.cat([labels[:, None], negatives], dim=1)


def _executed_outputs(net: nn.Module, x: Tensor) -> tuple[Tensor, list[tuple[str, nn.Module, Tensor]]]:
    """The network's output on ``x`` and every submodule's (name, module, output), in the order they ran."""
    ran: list[tuple[str, nn.Module, Tensor]] = []
    handles = [
        module.register_forward_hook(
            lambda module, inputs, output, name=name: (
                ran.append((name, module, output)) if isinstance(output, Tensor) else None
            )
        )
        for name, module in net.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            output = net(x)
    finally:
        for handle in handles:
            handle.remove()
    return output, ran


def _last_map_layer(ran: list[tuple[str, nn.Module, Tensor]], before: int) -> str | None:
    """The last module that ran before position ``before`` whose output is (N, K, h, w) with h w > 1,
    adaptive pooling aside (VGG's resizes any map to 7x7: at CIFAR size, copies of one position)."""
    for name, module, output in reversed(ran[:before]):
        if isinstance(module, _RESIZING):
            continue
        if output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
            return name
    return None


def gradcam_network(
    net: nn.Module,
    *,
    arch: str,
    in_channels: int,
    input_size: tuple[int, int] = (224, 224),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> GradCAMClassifier:
    """A network whose head is not GAP + one Linear (a torchvision VGG, a user's MLP head) as a
    ``GradCAMClassifier``: its output must be the output of an ``nn.Linear`` (the head, replaced
    by the identity in the network, which becomes the features); the maps are read at the last
    layer that gives (N, K, h, w) maps with more than one position. Both are found by one
    forward pass of a zero image of ``input_size``; a one-line ``ValueError`` says what is missing."""
    parameter = next(net.parameters(), None)
    probe = torch.zeros(1, in_channels, *input_size, device=None if parameter is None else parameter.device)
    output, ran = _executed_outputs(net, probe)
    heads = [i for i, (_, module, out) in enumerate(ran) if isinstance(module, nn.Linear) and out is output]
    if not heads:
        raise ValueError(f"its output is not the output of one nn.Linear, so {arch} has no Grad-CAM head either")
    position = heads[-1]
    head_name, head = ran[position][0], ran[position][1]
    assert isinstance(head, nn.Linear)
    layer = _last_map_layer(ran, position)
    if layer is None:
        raise ValueError(f"no layer of {arch} gives feature maps (N, K, h, w) with h x w > 1 for Grad-CAM")
    parent, _, child = head_name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return GradCAMClassifier(
        net, head, cam_layer=layer, in_channels=in_channels, mean=mean, std=std, arch=arch, head_source=head_name
    )


def cam_method(model: nn.Module) -> str:
    """``exact`` (GAP + linear: logits are the mean of the CAMs) or ``gradcam``."""
    return "gradcam" if isinstance(model, GradCAMClassifier) else "exact"


def apply_cam_layer(model: CAMClassifier, name: str | None) -> None:
    """Set a Grad-CAM model's layer; refuse a layer for a model whose CAMs are exact."""
    if name is None:
        return
    if not isinstance(model, GradCAMClassifier):
        raise CAMLayerError(
            f"--cam-layer {name!r}: {model.arch} has exact CAMs (global average pooling + one linear "
            "layer), read at its last feature maps; --cam-layer chooses the layer of Grad-CAM models only"
        )
    model.set_cam_layer(name)


__all__ = [
    "CAMLayerError",
    "GradCAMClassifier",
    "apply_cam_layer",
    "cam_method",
    "gradcam_network",
    "mapped_classes",
    "tokens_to_maps",
]
