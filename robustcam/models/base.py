"""CAM-capable classifiers: a feature extractor, global average pooling, one linear head.

With last-layer features ``f_k(x, y)``, head weights ``w^c_k`` and bias ``b_c``,
the class activation map (Zhou et al., CVPR 2016) of class ``c`` is

    M_c(x, y) = sum_k w^c_k f_k(x, y) + b_c

and because the head follows global average pooling, the logit is exactly
``S_c = mean_{x,y} M_c(x, y)``. ``CAMClassifier`` keeps that identity by
construction: the head bias is included in the maps.

Normalisation (mean/std) lives inside the model as buffers, so every caller
(training, attacks, statistics) works in [0, 1] pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from robustcam.models.spec import NEUTRAL


class ModelOutput(NamedTuple):
    """Everything one forward pass of a ``CAMClassifier`` gives."""

    logits: Tensor  # (N, C)
    features: Tensor  # (N, K, h, w): last-layer feature maps, before pooling
    cams: Tensor  # (N, C, h, w): raw class activation maps, head bias included


def class_activation_maps(features: Tensor, head: nn.Linear) -> Tensor:
    """Raw CAMs ``M_c = sum_k w^c_k f_k + b_c`` of every class, shape (N, C, h, w)."""
    cams = torch.einsum("nkhw,ck->nchw", features, head.weight)
    if head.bias is not None:
        cams = cams + head.bias[None, :, None, None]
    return cams


def _channel_stats(values: Sequence[float] | None, in_channels: int, default: Sequence[float]) -> Tensor:
    if values is None:
        values = default
    stats = torch.as_tensor(list(values), dtype=torch.float32)
    if stats.numel() == 1:
        stats = stats.repeat(in_channels)
    if stats.numel() != in_channels:
        raise ValueError(f"mean/std has {stats.numel()} values but the model has in_channels={in_channels}")
    return stats.view(1, in_channels, 1, 1)


class CAMClassifier(nn.Module):
    """``features -> global average pooling -> head`` with normalisation inside.

    Args:
        features: maps normalised images (N, in_channels, H, W) to feature maps (N, K, h, w).
        head: the final ``nn.Linear(K, num_classes)``.
        in_channels: 1 (grey) or 3 (colour).
        mean, std: per-channel normalisation applied to [0, 1] inputs; ``NEUTRAL``
            (0.5 for every channel) when not given.
        arch: registry name, recorded in checkpoints.
        head_source: name of the head in the network that was split (``fc``,
            ``classifier``). Loading foreign state_dicts reads the source network's names
            from the architecture's ``ArchSpec`` instead: a rebuilt classifier
            (mobilenet_v3_large's) has another name there.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        features: nn.Module,
        head: nn.Linear,
        *,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        arch: str = "custom",
        head_source: str = "head",
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if not isinstance(head, nn.Linear):
            raise TypeError(f"head must be nn.Linear, got {type(head).__name__}")
        self.features = features
        self.head = head
        self.in_channels = in_channels
        self.arch = arch
        self.head_source = head_source
        self.register_buffer("mean", _channel_stats(mean, in_channels, NEUTRAL.mean))
        self.register_buffer("std", _channel_stats(std, in_channels, NEUTRAL.std))

    def set_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Set the per-channel statistics the model normalises its [0, 1] inputs with."""
        self.mean.copy_(_channel_stats(mean, self.in_channels, NEUTRAL.mean))
        self.std.copy_(_channel_stats(std, self.in_channels, NEUTRAL.std))

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def num_features(self) -> int:
        return self.head.in_features

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def feature_maps(self, x: Tensor) -> Tensor:
        """Last-layer feature maps (N, K, h, w) of [0, 1] images."""
        return self.features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of [0, 1] images; the entry point attack libraries call."""
        return self.head(self.feature_maps(x).mean(dim=(2, 3)))

    def forward_cams(self, x: Tensor) -> ModelOutput:
        """Logits, feature maps and raw CAMs from one pass over the backbone."""
        features = self.feature_maps(x)
        logits = self.head(features.mean(dim=(2, 3)))
        return ModelOutput(logits, features, class_activation_maps(features, self.head))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, in_channels={self.in_channels}"
