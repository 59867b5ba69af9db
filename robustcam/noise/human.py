"""Human label noise: CIFAR-10N and CIFAR-100N annotations read safely from their files.

CIFAR-N (Wei et al., "Learning with Noisy Labels Revisited: A Study Using
Real-World Human Annotations", ICLR 2022) re-annotated the 50,000 CIFAR
training images on Amazon Mechanical Turk. Its files hold one label array per
annotation set, in the order of the CIFAR training split:

- ``CIFAR-10_human.pt``: ``clean_label``, ``aggre_label`` (majority vote, ~9%
  wrong), ``worse_label`` (~40% wrong), ``random_label1..3`` (~17% wrong).
- ``CIFAR-100_human.pt``: ``clean_label``, ``noisy_label`` (~40% wrong), and the
  same for the 20 superclasses: ``clean_coarse_label``, ``noisy_coarse_label``.
  Those fit a 20-class dataset only; for CIFAR-100's 100 classes they are refused
  (every label would count as flipped).

Human noise is a per-sample label replacement, not a transition matrix; the
realised matrix is measured afterwards (``realized_transition_matrix``).

Loading never runs code from the file:

- ``.pt``/``.pth``: ``torch.load(weights_only=True)``. The originals are a dict
  of *numpy* arrays written with ``torch.save``, which pickles them by
  reference to numpy's array reconstruction; torch's weights-only unpickler
  refuses those globals by default. They are allowed, for this one load
  only, through ``torch.serialization.safe_globals``: exactly
  ``numpy._core.multiarray._reconstruct`` (also under its numpy 1.x name
  ``numpy.core.multiarray._reconstruct``), ``numpy.ndarray``, ``numpy.dtype``
  and the dtype classes of bool, integer and float arrays. Nothing else (no
  object arrays, no other classes or functions) is allowed, so a file that
  references anything else is refused before it runs. Dicts of torch tensors
  load without any of this. The allowance is added to torch's process-wide
  list for the duration of the load and removed afterwards (entries the
  caller had already allowed are left in place); do not load untrusted
  checkpoints on another thread at the same moment.
- ``.npy``: ``numpy.load(allow_pickle=False)``. A ``.npy`` holding a pickled
  dict (``np.save(path, {...})``) cannot be read without pickle and is refused;
  save a plain label array (then ``key`` is not needed) or a structured array
  whose field names are the keys, or use ``.npz`` (``np.savez(path, **labels)``).
- ``.npz``: ``numpy.load(allow_pickle=False)``; the array names are the keys.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robustcam.noise.checks import NoiseFileError, as_path, one_line

CIFAR10N_KEYS = ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")
CIFAR100N_KEYS = ("noisy_label",)
# CIFAR-100N's superclass annotations and the class count they are labels of
COARSE_KEY_CLASSES = {"noisy_coarse_label": 20, "clean_coarse_label": 20}
# the clean labels a key's annotations are checked against, where it is not CLEAN_KEY
CLEAN_KEY_OF = {"noisy_coarse_label": "clean_coarse_label", "clean_coarse_label": "clean_coarse_label"}
CLEAN_KEY = "clean_label"
LABEL_FILE_SUFFIXES = (".pt", ".pth", ".npy", ".npz")

# dtypes whose arrays a label file may hold (their dtype classes are allow-listed for .pt files).
_ARRAY_DTYPES = (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
)

SafeGlobal = Callable[..., Any] | tuple[Callable[..., Any], str]


def _numpy_reconstruct() -> Callable[..., Any]:
    # numpy 2 moved numpy.core to numpy._core; import the real module, not numpy.core's deprecation shim.
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, "_reconstruct", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    raise ImportError("numpy has no multiarray._reconstruct")


def numpy_array_globals() -> list[SafeGlobal]:
    """The globals a pickled numpy array of bool/int/float dtype needs, for ``torch.serialization.safe_globals``."""
    reconstruct = _numpy_reconstruct()
    allowed: list[SafeGlobal] = [
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    allowed.extend(type(np.dtype(dtype)) for dtype in _ARRAY_DTYPES)
    return allowed


def _weights_only_reason(message: str) -> str:
    """The one informative sentence of torch's multi-paragraph weights-only refusal."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"it references {found.group(1)}"
    match = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", message, re.DOTALL)
    if match and match.group(1).strip():
        return one_line(match.group(1))[:300]
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file", "(1)", "(2)")
    paragraphs = [p for p in re.split(r"\n\s*\n", message) if p.strip() and not p.strip().startswith(boilerplate)]
    return one_line(paragraphs[0] if paragraphs else message)[:300]


def _refusal(file: Path, message: str) -> str:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # noqa: BLE001  (not a zip checkpoint, or unreadable: fall back to torch's message)
        found = []
    allowed_names = {
        entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
        for entry in numpy_array_globals()
    }
    refused = [name for name in found if name not in allowed_names]
    reason = f"it references {', '.join(refused)}" if refused else _weights_only_reason(message)
    return (
        f"refusing to load label file {file}: {reason}; label files are read with "
        f"torch.load(weights_only=True), which allows tensors, numpy bool/int/float arrays and plain "
        f"containers only (re-save the labels as such, or as .npy/.npz)"
    )


def _load_pt(file: Path) -> object:
    already = set(torch.serialization.get_safe_globals())
    extra = [entry for entry in numpy_array_globals() if entry not in already]
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise NoiseFileError(_refusal(file, str(exc))) from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise NoiseFileError(f"cannot read label file {file}: {one_line(exc)}") from None


def _load_numpy(file: Path) -> object:
    try:
        content = np.load(file, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise NoiseFileError(
                f"refusing to load label file {file}: it is a pickled object (e.g. a dict saved with np.save), "
                f"which cannot be read without running pickle; save a plain label array, a structured array "
                f"with one field per key, or an .npz (np.savez(path, **labels))"
            ) from None
        raise NoiseFileError(f"cannot read label file {file}: {one_line(exc)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NoiseFileError(f"cannot read label file {file}: {one_line(exc)}") from None
    if isinstance(content, np.lib.npyio.NpzFile):
        with content:
            try:
                return {name: content[name] for name in content.files}
            except ValueError as exc:
                raise NoiseFileError(
                    f"refusing to load label file {file}: an array in it is pickled ({one_line(exc)})"
                ) from None
    return content


def read_label_file(path: str | Path) -> dict[str, np.ndarray] | np.ndarray:
    """Everything in a label file: a dict ``{key: array}`` or, for a plain array file, the array.

    Structured ``.npy`` arrays come back as a dict of their fields.
    """
    file = as_path(path, what="human label")
    suffix = file.suffix.lower()
    if suffix not in LABEL_FILE_SUFFIXES:
        raise NoiseFileError(
            f"label file {file}: unsupported suffix {file.suffix!r}; use {', '.join(LABEL_FILE_SUFFIXES)}"
        )
    content = _load_pt(file) if suffix in (".pt", ".pth") else _load_numpy(file)
    if isinstance(content, np.ndarray) and content.dtype.names:
        return {name: np.asarray(content[name]) for name in content.dtype.names}
    if isinstance(content, (np.ndarray, Tensor)):
        return _as_array(content)
    if isinstance(content, dict):
        arrays: dict[str, np.ndarray] = {}
        for name, value in content.items():
            if not isinstance(name, str):
                raise NoiseFileError(f"label file {file}: keys must be strings, got {name!r}")
            if isinstance(value, (np.ndarray, Tensor)):
                arrays[name] = _as_array(value)
        if not arrays:
            raise NoiseFileError(f"label file {file}: holds no label arrays (keys: {', '.join(map(str, content))})")
        return arrays
    raise NoiseFileError(
        f"label file {file}: holds a {type(content).__name__}, expected a dict of label arrays or one array"
    )


def _as_array(value: np.ndarray | Tensor) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


def _as_labels(array: np.ndarray, file: Path, key: str | None) -> np.ndarray:
    what = f"{key!r}" if key is not None else "its array"
    if array.ndim != 1:
        raise NoiseFileError(f"label file {file}: {what} has shape {tuple(array.shape)}, expected 1-D labels")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise NoiseFileError(f"label file {file}: {what} holds non-integer values")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise NoiseFileError(f"label file {file}: {what} has dtype {array.dtype}, expected integer labels")
    labels = array.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise NoiseFileError(f"label file {file}: {what} holds negative labels (min {int(labels.min())})")
    return labels


def human_labels(path: str | Path, key: str | None = None) -> np.ndarray:
    """The 1-D int64 label array ``key`` of a CIFAR-N style label file (see the module docstring).

    ``key`` names the annotation set (``aggre_label``, ``worse_label``,
    ``random_label1..3`` for CIFAR-10N; ``noisy_label`` for CIFAR-100N). A file
    holding one plain array needs no key. An unknown or missing key is an error
    that lists the keys present.
    """
    file = as_path(path, what="human label")
    content = read_label_file(file)
    return _select(content, file, key)


def _select(content: dict[str, np.ndarray] | np.ndarray, file: Path, key: str | None) -> np.ndarray:
    if isinstance(content, np.ndarray):
        if key is not None:
            raise NoiseFileError(f"label file {file} holds one unnamed label array; pass key=None, not {key!r}")
        return _as_labels(content, file, None)
    present = ", ".join(sorted(content))
    if key is None:
        raise NoiseFileError(f"label file {file} holds several label arrays; pass key= one of: {present}")
    if key not in content:
        raise NoiseFileError(f"label file {file} has no key {key!r}; keys present: {present}")
    return _as_labels(content[key], file, key)


def check_labels_fit(
    noisy: np.ndarray, true: np.ndarray, *, file: str | Path, key: str | None, num_classes: int
) -> None:
    """Refuse human labels that are not labels of the dataset's classes, naming the key and the counts.

    Beyond the range [0, C): a key known to hold another class set (CIFAR-100N's 20
    superclasses for 100 classes), and labels that use at most half as many classes as
    the true labels do (annotators of a class set use all of it; a coarser set does not).
    """
    what = f"{key!r}" if key is not None else "its labels"
    if noisy.size and int(noisy.max()) >= num_classes:
        raise NoiseFileError(
            f"label file {file}: {what} has label {int(noisy.max())}, outside [0, {num_classes - 1}] "
            f"for {num_classes} classes"
        )
    expected = COARSE_KEY_CLASSES.get(key or "")
    if expected is not None and expected != num_classes:
        raise NoiseFileError(
            f"label file {file}: {what} holds {expected}-class superclass labels but the dataset has {num_classes} "
            f"classes; use noisy_label for CIFAR-100's fine classes"
        )
    used, present = int(np.unique(noisy).size), int(np.unique(true).size)
    if present >= 4 and 2 * used <= present:
        raise NoiseFileError(
            f"label file {file}: {what} uses {used} distinct labels but the true labels use {present} of the "
            f"{num_classes} classes; these are not labels of this dataset's classes (a coarse label set?)"
        )


def human_and_clean_labels(path: str | Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels ``key`` and, when the file has one, its clean labels of the same class set
    (``clean_label``, or ``clean_coarse_label`` for superclass keys), for a sanity check."""
    file = as_path(path, what="human label")
    content = read_label_file(file)
    labels = _select(content, file, key)
    clean_key = CLEAN_KEY_OF.get(key or "", CLEAN_KEY)
    clean = (
        _as_labels(content[clean_key], file, clean_key) if isinstance(content, dict) and clean_key in content else None
    )
    return labels, clean
