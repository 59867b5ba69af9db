"""CAM-capable classifiers and the architecture registry, each architecture with its spec."""

from robustcam.models import architectures as _architectures  # noqa: F401  (fills the registry)
from robustcam.models.base import CAMClassifier, ModelOutput, class_activation_maps
from robustcam.models.registry import MODELS, Architecture, build_model, get_spec, list_models, register_model
from robustcam.models.spec import IMAGENET, NEUTRAL, ArchSpec, Normalization
from robustcam.models.torchvision_adapter import NotCAMCapableError, from_torchvision, split_at_global_pool

__all__ = [
    "IMAGENET",
    "MODELS",
    "NEUTRAL",
    "ArchSpec",
    "Architecture",
    "CAMClassifier",
    "ModelOutput",
    "Normalization",
    "NotCAMCapableError",
    "build_model",
    "class_activation_maps",
    "from_torchvision",
    "get_spec",
    "list_models",
    "register_model",
    "split_at_global_pool",
]
