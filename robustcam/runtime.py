"""Device, seeding, determinism and mixed precision: what training and evaluation share.

"Same seed, same device, same results": ``seed_everything`` seeds torch's
generators, and ``set_deterministic`` asks PyTorch for deterministic kernels
(cuDNN and cuBLAS included) on top of that.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from robustcam.errors import InputError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable device is a ``ValueError``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available; valid here: auto, cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r} requested but MPS is not available; valid here: auto, cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or None for full precision.

    ``auto`` means bf16 on CUDA devices that support it and full precision
    elsewhere; an explicit ``bf16``/``fp16`` off CUDA is an error.
    """
    if amp == "none":
        return None
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp not in AMP_DTYPES:
        raise InputError(f"amp must be one of auto, none, bf16, fp16, got {amp!r}")
    if device.type != "cuda":
        raise InputError(f"amp={amp} needs a CUDA device, got {device.type}; use amp=none or amp=auto")
    return AMP_DTYPES[amp]


def resolve_attack_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype the attacks of an evaluation run under (``attack_amp``), or None.

    None (``none``, the default) means fp32 even for a model trained with AMP: half precision
    can round small input gradients to zero (gradient masking by the evaluator, not the
    model), which overstates robustness. A dtype torch cannot autocast to on ``device`` is an
    ``InputError`` in one line.
    """
    if amp == "none":
        return None
    if amp not in AMP_DTYPES:
        raise InputError(f"attack_amp must be one of none, bf16, fp16, got {amp!r}")
    dtype = AMP_DTYPES[amp]
    if not _autocast_supported(device, dtype):
        raise InputError(
            f"attack_amp={amp}: torch {torch.__version__} has no {amp} autocast on {device.type}; "
            "use attack_amp=none (fp32) or bf16"
        )
    return dtype


def _autocast_supported(device: torch.device, dtype: torch.dtype) -> bool:
    # torch disables an unsupported CPU autocast dtype with a warning and refuses one on CUDA
    # with an error; either way, the attacks would not run in the dtype the config names
    if not torch.amp.is_autocast_available(device.type):
        return False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autocast(device_type=device.type, dtype=dtype):
                enabled = torch.is_autocast_enabled(device.type)
        except RuntimeError:
            return False
    return enabled and not any("autocast" in str(w.message).lower() for w in caught)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask for deterministic kernels (warn, do not fail, where an op has none)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def derived_generator(seed: int, *streams: int) -> torch.Generator:
    """A CPU generator for one named stream of randomness (e.g. seed, epoch).

    Deriving every stream from (seed, stream ids) instead of drawing from one
    global generator makes a resumed run draw exactly what an uninterrupted run
    would have drawn.
    """
    mixed = np.random.SeedSequence([seed % 2**32, *streams]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator()
    generator.manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def library_versions() -> dict[str, str]:
    """Versions of robustcam and the libraries its numbers depend on, as plain strings.

    ``torch.__version__`` is a str subclass that ``weights_only`` loading refuses, hence ``str()``.
    """
    import foolbox
    import torchattacks
    import torchvision

    import robustcam

    return {
        "robustcam": str(robustcam.__version__),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "torchattacks": str(torchattacks.__version__),
        "foolbox": str(foolbox.__version__),
        "python": platform.python_version(),
    }
