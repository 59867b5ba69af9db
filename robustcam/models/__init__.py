"""CAM-capable classifiers and the architecture registry, each architecture with its spec.

Architectures are the registered entries (``list_models()``: robustcam's own, torchvision's,
RobustBench's CIFAR layouts) and two open families resolved by name: ``timm:<model name>``
and a user's factory ``module.path:function`` / ``path/to/file.py:function``. Input
statistics are named by the presets of ``robustcam.models.normalization``.
"""

from robustcam.models import architectures as _architectures  # noqa: F401  (fills the registry)
from robustcam.models import robustbench_zoo as _robustbench_zoo  # noqa: F401  (fills the registry)
from robustcam.models import timm_adapter as _timm_adapter  # noqa: F401  (the timm: scheme)
from robustcam.models import user_factory as _user_factory  # noqa: F401  (module:function names)
from robustcam.models.base import CAMClassifier, ModelOutput, class_activation_maps
from robustcam.models.normalization import (
    NO_NORMALIZATION,
    NORMALIZATIONS,
    NormalizationError,
    explicit_normalization,
    get_normalization,
)
from robustcam.models.registry import MODELS, Architecture, build_model, get_spec, list_models, register_model
from robustcam.models.spec import IMAGENET, NEUTRAL, ArchSpec, Normalization
from robustcam.models.timm_adapter import TimmNotInstalledError, cam_exact
from robustcam.models.torchvision_adapter import NotCAMCapableError, from_torchvision, split_at_global_pool
from robustcam.models.user_factory import FactoryError

__all__ = [
    "IMAGENET",
    "MODELS",
    "NEUTRAL",
    "NORMALIZATIONS",
    "NO_NORMALIZATION",
    "ArchSpec",
    "Architecture",
    "CAMClassifier",
    "FactoryError",
    "ModelOutput",
    "Normalization",
    "NormalizationError",
    "NotCAMCapableError",
    "TimmNotInstalledError",
    "build_model",
    "cam_exact",
    "class_activation_maps",
    "explicit_normalization",
    "from_torchvision",
    "get_normalization",
    "get_spec",
    "list_models",
    "register_model",
    "split_at_global_pool",
]
