"""CAM-capable classifiers and the architecture registry."""

from robustcam.models import architectures as _architectures  # noqa: F401  (fills the registry)
from robustcam.models.base import CAMClassifier, ModelOutput, class_activation_maps
from robustcam.models.registry import MODELS, build_model, list_models, register_model
from robustcam.models.torchvision_adapter import NotCAMCapableError, from_torchvision, split_at_global_pool

__all__ = [
    "MODELS",
    "CAMClassifier",
    "ModelOutput",
    "NotCAMCapableError",
    "build_model",
    "class_activation_maps",
    "from_torchvision",
    "list_models",
    "register_model",
    "split_at_global_pool",
]
