"""What is known about an architecture, declared beside it in the registry (timm's ``default_cfg``).

Each registered architecture carries one ``ArchSpec``: the input size it is
designed for, the network its weights come from (``source``), how that network
names its parameters relative to the ``CAMClassifier`` (the head's name and any
prefix renames) and the statistics its weights were trained with. The
checkpoint loader reads these facts from the spec and holds none of its own, so
a new family of foreign weights (timm, RobustBench layouts, a user's factory) is
one more registry entry, not a new branch in the loader.

    @register_model("mobilenet_v3_large", spec=ArchSpec(
        input_size=(3, 224, 224), min_input_size=(3, 64, 64),
        source="torchvision", head="classifier.3",
        renames=(("classifier.0.", "features.features.17.0."),),
    ))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "HEAD_FROM_SPLIT",
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NATIVE_SOURCE",
    "NEUTRAL",
    "ArchSpec",
    "Normalization",
]

InputSize = tuple[int, int, int]  # (C, H, W), as in DatasetInfo.input_shape
# The key layout of networks defined here: their state_dicts are keyed like the CAMClassifier.
NATIVE_SOURCE = "robustcam"
# The head of an architecture known only once built (a user's factory): the name the split found
# in the built network (``CAMClassifier.head_source``), which may depend on the factory's options.
HEAD_FROM_SPLIT = "<split>"


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics a network normalises its [0, 1] inputs with.

    A single value stands for every channel, as in ``build_model(mean=[0.5])``.
    ``description`` says where the values come from; it ends up in the warning a
    loader gives when it has to assume them.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str

    def __post_init__(self) -> None:
        for key, stats in (("mean", self.mean), ("std", self.std)):
            if len(stats) not in (1, 3):
                raise ValueError(f"normalization {self.name!r} needs 1 or 3 values for {key}, got {key}={stats}")

    def fits(self, in_channels: int) -> bool:
        """Whether these statistics can normalise ``in_channels`` channels."""
        return len(self.mean) in (1, in_channels) and len(self.std) in (1, in_channels)

    def values(self, key: str, in_channels: int) -> list[float]:
        """``mean`` or ``std`` as one value per channel."""
        if key not in ("mean", "std"):
            raise ValueError(f"key must be 'mean' or 'std', got {key!r}")
        stats = self.mean if key == "mean" else self.std
        return list(stats) * in_channels if len(stats) == 1 else list(stats)


# The statistics torchvision's ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = Normalization("imagenet", IMAGENET_MEAN, IMAGENET_STD, "ImageNet statistics")
# CAMClassifier's own default: inputs mapped from [0, 1] to [-1, 1], no dataset assumed.
NEUTRAL = Normalization("neutral", (0.5,), (0.5,), "neutral")


@dataclass(frozen=True)
class ArchSpec:
    """Facts about one registered architecture.

    Args:
        input_size: (C, H, W) the architecture is designed for (timm's ``input_size``).
        min_input_size: the smallest (C, H, W) whose CAMs still have spatial extent
            (2x2, i.e. twice the network's total stride); what quick checks and tests run at.
        source: key layout of the network the weights come from: ``"robustcam"`` for
            networks defined here (their state_dicts are keyed like the
            ``CAMClassifier``), ``"torchvision"`` for adapted torchvision networks.
        head: the head's name in the source network (``fc``, ``classifier``); its
            parameters become ``head.*``. ``HEAD_FROM_SPLIT``: the name the split of the
            built network found (a user's factory, whose head may depend on its options).
        renames: ``(old prefix, new prefix)`` rules for source keys that the generic
            rule (``features.<key>``, ``<head>.* -> head.*``) does not place, tried in
            order before it; e.g. a classifier layer rebuilt as a 1x1 convolution.
        normalization: the statistics the architecture fixes for its inputs, when it fixes
            them: RobustBench's zoo networks take raw [0, 1] pixels (``none``), a timm model's
            pretrained config names its own. A state_dict that carries no statistics gets
            them; ``None`` (torchvision's and robustcam's architectures, whose weights are
            trained on anything) leaves the choice to the loader: the evaluated dataset's
            statistics, else ImageNet's (``robustcam.checkpoint.adapt.resolve_normalization``).
        tiny_options: options that build a small network of the same layout and key names
            (``(("depth", 10), ("width", 1))`` for a WideResNet), for quick checks and the tests
            that run every registered architecture; empty when the default is small enough.
    """

    input_size: InputSize
    min_input_size: InputSize
    source: str = NATIVE_SOURCE
    head: str = "head"
    renames: tuple[tuple[str, str], ...] = ()
    normalization: Normalization | None = None
    tiny_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name, size in (("input_size", self.input_size), ("min_input_size", self.min_input_size)):
            if len(size) != 3 or any(n < 1 for n in size):
                raise ValueError(f"{name} must be (C, H, W) with positive sizes, got {size}")
        if not self.head:
            raise ValueError("head must name the head in the source network (e.g. 'fc'), got ''")

    @property
    def tiny(self) -> dict[str, Any]:
        """``tiny_options`` as the keyword arguments ``build_model`` takes."""
        return dict(self.tiny_options)

    @property
    def foreign(self) -> bool:
        """Whether state_dicts in the source layout are keyed unlike the ``CAMClassifier``."""
        return self.source != NATIVE_SOURCE
