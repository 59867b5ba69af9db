"""Training losses: cross-entropy, focal, CAM-loss and HNC.

Each loss is a registered factory that returns a ``Loss``: a callable
``loss(output: ModelOutput, target) -> LossResult(total, parts)`` whose parts
(detached, unweighted) are logged per epoch. The functional forms
(``focal_loss``, ``cam_loss``, ``hnc_loss``) are plain functions on tensors.

- Focal loss (Lin et al., ICCV 2017): ``-(1 - p_y)^gamma log p_y``; gamma = 0 is CE.
- CAM-loss (Wang et al., ICCV 2021): L1 distance between the per-image min-max
  normalised CAM of the true class and the normalised class-agnostic activation
  map ``CAAM = sum_k f_k``. The CAM uses detached head weights, so the term
  shapes the backbone only. Added to cross-entropy with weight ``alpha``.
- HNC (homogeneous negative CAMs; Sun et al., ECCV 2020, "Fixing Localization
  Errors to Improve Image Classification"): flattens the CAMs of the top-k
  negative classes (ranked by logit), either by distilling the uniform map into
  their spatial softmax (``kd``) or by pushing them to zero (``mse``). Added to
  cross-entropy with ``weight`` (official: 0.0065 for kd on ImageNet with
  k=100 of 1000 classes; 0.06 is a common CIFAR choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustcam.errors import ParameterError
from robustcam.models.base import CAMClassifier, ModelOutput
from robustcam.registry import Registry, build_checked, keyword_parameters

HNCKind = Literal["kd", "mse"]
HNC_KINDS: tuple[HNCKind, ...] = ("kd", "mse")


def _check_range(name: str, value: float, *, low: float, low_inclusive: bool, high: float | None = None) -> None:
    """Raise ``ParameterError`` unless ``value`` is finite and in the range; NaN would pass every comparison."""
    above = value >= low if low_inclusive else value > low
    below = high is None or value < high
    if not (math.isfinite(value) and above and below):
        bound = f"{'>=' if low_inclusive else '>'} {low:g}" if high is None else f"in [{low:g}, {high:g})"
        raise ParameterError(name, f"{name} must be a finite number {bound}, got {value}")


class LossResult(NamedTuple):
    """The scalar to back-propagate and its named, detached, unweighted parts."""

    total: Tensor
    parts: dict[str, Tensor]


# --------------------------------------------------------------------------- functional forms


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0) -> Tensor:
    """Mean focal loss ``-(1 - p_y)^gamma log p_y`` over the batch.

    >>> logits = torch.tensor([[2.0, 0.0]]); target = torch.tensor([0])
    >>> bool(torch.isclose(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target)))
    True
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    if gamma == 0:
        return -log_p.mean()
    return -((1.0 - log_p.exp()).clamp_min(0.0).pow(gamma) * log_p).mean()


def _minmax_per_image(maps: Tensor, eps: float = 1e-6) -> Tensor:
    """Min-max normalise each (h, w) map of a (N, h, w) tensor to [0, 1]."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low + eps)).view_as(maps)


def cam_loss(features: Tensor, head_weight: Tensor, target: Tensor) -> Tensor:
    """The CAM-loss term ``mean |norm(CAM_y) - norm(CAAM)|`` (ICCV 2021).

    ``CAM_y = sum_k w^y_k f_k`` uses ``head_weight.detach()``: the term sends no
    gradient into the head, only into the backbone through ``features``. The head
    bias is omitted because min-max normalisation removes any constant.

    Args:
        features: last-layer feature maps (N, K, h, w).
        head_weight: the head's weight (C, K).
        target: true labels (N,).
    """
    features = features.float()
    cam_true = torch.einsum("nkhw,nk->nhw", features, head_weight.detach().float()[target])
    caam = features.sum(dim=1)
    return (_minmax_per_image(cam_true) - _minmax_per_image(caam)).abs().mean()


def top_negative_classes(logits: Tensor, target: Tensor, k: int) -> Tensor:
    """Indices (N, k) of the k highest-logit classes other than ``target``."""
    num_classes = logits.shape[1]
    if not 1 <= k < num_classes:
        raise ValueError(f"k must be in [1, num_classes - 1] = [1, {num_classes - 1}], got {k}")
    masked = logits.detach().clone()
    masked.scatter_(1, target[:, None], float("-inf"))
    return masked.topk(k, dim=1).indices


def hnc_loss(
    cams: Tensor,
    target: Tensor,
    *,
    k: int,
    temperature: float = 1.0,
    kind: HNCKind = "kd",
) -> Tensor:
    """Homogeneous-negative-CAM loss on the top-k negative classes (ECCV 2020).

    Negative classes are ranked by logit ``mean_{x,y} M_c`` (no gradient through
    the ranking). With the selected maps ``M_{i,c}`` of ``HW`` positions:

    - ``kd``: ``(1/N) sum_i sum_c -(1/HW) sum_j log softmax_j(M_{i,c} / T)``, the
      cross-entropy of the uniform map against the spatial softmax; its minimum,
      ``k log(HW)``, is reached exactly when every selected map is flat.
    - ``mse``: the mean of ``M_{i,c}(x, y)^2`` over the selected maps.

    >>> import math
    >>> flat = torch.zeros(1, 3, 2, 2); target = torch.tensor([0])
    >>> round(float(hnc_loss(flat, target, k=2)), 4) == round(2 * math.log(4), 4)
    True
    """
    if kind not in HNC_KINDS:
        raise ValueError(f"kind must be one of {', '.join(HNC_KINDS)}, got {kind!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    cams = cams.float()
    chosen = top_negative_classes(cams.mean(dim=(2, 3)), target, k)
    selected = cams.gather(1, chosen[:, :, None, None].expand(-1, -1, *cams.shape[2:]))
    if kind == "mse":
        return selected.pow(2).mean()
    per_map = -F.log_softmax(selected.flatten(2) / temperature, dim=2).mean(dim=2)
    return per_map.sum(dim=1).mean()


# --------------------------------------------------------------------------- loss objects


class Loss:
    """A training loss: ``loss(output, target) -> LossResult``.

    ``needs_cams`` tells the trainer whether to call ``forward_cams`` (CAMs and
    features) or the cheaper ``forward`` (logits only).
    """

    name: str = "loss"
    needs_cams: bool = False

    def __call__(self, output: ModelOutput, target: Tensor) -> LossResult:
        raise TypeError(f"{type(self).__name__} does not define __call__")

    def check_num_classes(self, num_classes: int) -> None:
        """Raise ``ValueError`` if the loss cannot be used with ``num_classes`` classes."""

    def bind(self, model: CAMClassifier) -> Loss:
        """Give the loss the model it trains; losses that read parameters keep what they need."""
        return self

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


class CrossEntropy(Loss):
    name = "ce"

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        _check_range("label_smoothing", label_smoothing, low=0.0, low_inclusive=True, high=1.0)
        self.label_smoothing = label_smoothing

    def __call__(self, output: ModelOutput, target: Tensor) -> LossResult:
        ce = F.cross_entropy(output.logits.float(), target, label_smoothing=self.label_smoothing)
        return LossResult(ce, {"ce": ce.detach()})


class Focal(Loss):
    name = "focal"

    def __init__(self, *, gamma: float = 2.0) -> None:
        _check_range("gamma", gamma, low=0.0, low_inclusive=True)
        self.gamma = gamma

    def __call__(self, output: ModelOutput, target: Tensor) -> LossResult:
        focal = focal_loss(output.logits, target, gamma=self.gamma)
        return LossResult(focal, {"focal": focal.detach()})


class CAMLoss(Loss):
    name = "cam_loss"
    needs_cams = True

    def __init__(self, *, alpha: float = 1.0) -> None:
        _check_range("alpha", alpha, low=0.0, low_inclusive=True)
        self.alpha = alpha
        self._head: nn.Linear | None = None

    def bind(self, model: CAMClassifier) -> CAMLoss:
        """Keep the model's head: the CAM term needs its (detached) weights."""
        self._head = model.head
        return self

    def __call__(self, output: ModelOutput, target: Tensor) -> LossResult:
        if self._head is None:
            raise RuntimeError("cam_loss needs the model's head: call loss.bind(model) first")
        ce = F.cross_entropy(output.logits.float(), target)
        cam = cam_loss(output.features, self._head.weight, target)
        return LossResult(ce + self.alpha * cam, {"ce": ce.detach(), "cam": cam.detach()})


class HNC(Loss):
    name = "hnc"
    needs_cams = True

    def __init__(self, *, kind: HNCKind = "kd", k: int = 5, temperature: float = 1.0, weight: float = 0.06) -> None:
        if kind not in HNC_KINDS:
            raise ParameterError("kind", f"kind must be one of {', '.join(HNC_KINDS)}, got {kind!r}")
        if k < 1:
            raise ParameterError("k", f"k must be >= 1, got {k}")
        _check_range("temperature", temperature, low=0.0, low_inclusive=False)
        _check_range("weight", weight, low=0.0, low_inclusive=True)
        self.kind: HNCKind = kind
        self.k = k
        self.temperature = temperature
        self.weight = weight

    def check_num_classes(self, num_classes: int) -> None:
        if self.k >= num_classes:
            raise ParameterError(
                "k",
                f"loss.hnc.k={self.k} must be smaller than the number of classes ({num_classes}); "
                f"choose k in [1, {num_classes - 1}]",
            )

    def __call__(self, output: ModelOutput, target: Tensor) -> LossResult:
        ce = F.cross_entropy(output.logits.float(), target)
        hnc = hnc_loss(output.cams, target, k=self.k, temperature=self.temperature, kind=self.kind)
        return LossResult(ce + self.weight * hnc, {"ce": ce.detach(), "hnc": hnc.detach()})


# --------------------------------------------------------------------------- registry

LossFactory = Callable[..., Loss]
LOSSES: Registry[LossFactory] = Registry("loss")
LOSSES.register("ce")(CrossEntropy)
LOSSES.register("focal")(Focal)
LOSSES.register("cam_loss")(CAMLoss)
LOSSES.register("hnc")(HNC)


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Register a loss factory ``(**params) -> Loss``."""
    return LOSSES.register(name)


def list_losses() -> list[str]:
    return LOSSES.names()


def loss_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of loss ``name`` and their defaults."""
    return keyword_parameters(LOSSES.get(name))


def build_loss(name: str, **params: Any) -> Loss:
    """Build loss ``name``; unknown parameters and values of the wrong type are an ``InputError``
    that names them (and lists the valid parameters)."""
    return build_checked(LOSSES.get(name), params, what=f"loss {name!r}", key=f"loss.{name}")


__all__ = [
    "HNC",
    "HNC_KINDS",
    "LOSSES",
    "CAMLoss",
    "CrossEntropy",
    "Focal",
    "Loss",
    "LossResult",
    "build_loss",
    "cam_loss",
    "focal_loss",
    "hnc_loss",
    "list_losses",
    "loss_parameters",
    "register_loss",
    "top_negative_classes",
]
