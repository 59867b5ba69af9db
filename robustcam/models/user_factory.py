"""A user's own model factory: ``--arch my_models.py:build_net`` or ``--arch my_pkg.nets:build_net``.

**This is the one place where robustcam runs user code, and it runs only code the user
names**, on the command line (``--arch``) or in a config (``model.arch``): the named
file is imported (once per process, under a unique module name, so two files called
``models.py`` do not collide), or the named module is imported like any Python module,
and the named function is called. Nothing else is imported or executed; checkpoints
never name code to run.

The factory is called as ``function(num_classes=..., **model_kwargs)``, with
``in_channels=...`` too when it has a parameter of that name (otherwise the first
convolution is rebuilt for a grey-scale dataset, as for torchvision models). It returns
an ``nn.Module``: a ``CAMClassifier`` is used as it is; any other network goes through
the same adapter as torchvision models (``from_torchvision``: split at its global
average pooling when one ``nn.Linear`` follows it, for exact CAMs; else a
``GradCAMClassifier`` whose head is the ``nn.Linear`` that gives the output), so its
state_dict keys are the network's own (``features.<key>``, the head ``head.*``).

What the spec knows comes from the factory's result, built once on the meta device
(no weights are allocated): input size and mean/std when the network carries a
timm-style ``pretrained_cfg``/``default_cfg`` dict; else the defaults (3x224x224 inputs,
no statistics of its own, so the loader's rule decides). The head's name is read from
each built model, since it may depend on the factory's options. A network that
normalises its inputs itself should be evaluated with ``--normalization none``.

Every failure is one line: no such file or module, no such function, the function
raised (its name and message), the result is not an ``nn.Module``, it has the wrong
number of classes, or it has neither exact CAMs nor a Linear output for Grad-CAM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from robustcam.errors import InputError, show_value
from robustcam.models.base import CAMClassifier
from robustcam.models.registry import MODELS, USER_FACTORY_SCHEME, Architecture
from robustcam.models.spec import HEAD_FROM_SPLIT, ArchSpec, Normalization
from robustcam.models.torchvision_adapter import from_torchvision

__all__ = ["FactoryError", "build_from_factory", "load_factory", "resolve_factory"]

SOURCE = "user"
_DEFAULT_INPUT = (3, 224, 224)
# Modules imported from files, by resolved path: each file runs once per process.
_FILE_MODULES: dict[Path, ModuleType] = {}


class FactoryError(InputError):
    """A user factory that cannot be found, called or adapted."""


def _split(arch: str) -> tuple[str, str]:
    target, _, function = arch.rpartition(":")
    if not target or not function.isidentifier():
        raise FactoryError(
            f"architecture {arch!r} is not a factory: write <module.path>:<function> or "
            "<path/to/file.py>:<function>, with a Python function name after the last ':'"
        )
    return target, function


def _import_file(path: Path) -> ModuleType:
    resolved = path.expanduser().resolve()
    if resolved in _FILE_MODULES:
        return _FILE_MODULES[resolved]
    if not resolved.is_file():
        raise FactoryError(f"model factory file {path} not found")
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    name = f"_robustcam_user_factory_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise FactoryError(f"model factory file {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001  (whatever the user's file raises: one line naming it)
        del sys.modules[name]
        raise FactoryError(f"importing model factory file {path} raised {_one_line(error)}") from None
    _FILE_MODULES[resolved] = module
    return module


def _import_module(dotted: str) -> ModuleType:
    if not all(part.isidentifier() for part in dotted.split(".")):
        raise FactoryError(
            f"{dotted!r} is neither a .py file nor a dotted module name (write my_pkg.models or path/to/file.py)"
        )
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as error:
        if error.name is not None and dotted.startswith(error.name):
            raise FactoryError(
                f"no module named {dotted!r} for the model factory (is its folder on PYTHONPATH?)"
            ) from None
        raise FactoryError(f"importing module {dotted!r} raised {_one_line(error)}") from None
    except Exception as error:  # noqa: BLE001  (whatever the user's module raises at import)
        raise FactoryError(f"importing module {dotted!r} raised {_one_line(error)}") from None


def load_factory(arch: str) -> Callable[..., Any]:
    """The function ``arch`` names (``file.py:function`` or ``module.path:function``), imported once."""
    target, function_name = _split(arch)
    module = _import_file(Path(target)) if target.endswith(".py") else _import_module(target)
    function = getattr(module, function_name, None)
    if function is None:
        public = sorted(
            name
            for name, value in vars(module).items()
            if callable(value) and not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        )
        shown = ", ".join(public[:20]) + (", ..." if len(public) > 20 else "")
        raise FactoryError(f"{target} has no function {function_name!r} (its functions: {shown or 'none'})")
    if not callable(function):
        raise FactoryError(
            f"{target}:{function_name} is {show_value(function)} of type {type(function).__name__}, not a function"
        )
    return function  # type: ignore[no-any-return]


def _parameters(function: Callable[..., Any]) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or C function without a signature: the call will tell
        return None


def _call(arch: str, function: Callable[..., Any], num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    parameters = _parameters(function)
    if parameters is not None:
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if "num_classes" not in parameters and not any_keyword:
            raise FactoryError(f"model factory {arch} must take a num_classes argument")
        # Only a factory that names in_channels gets it: **kwargs may well not expect it.
        if "in_channels" in parameters:
            kwargs["in_channels"] = in_channels
    try:
        result = function(num_classes=num_classes, **kwargs)
    except Exception as error:  # noqa: BLE001  (the user's code: name it and its message, on one line)
        raise FactoryError(f"model factory {arch} raised {_one_line(error)}") from None
    if not isinstance(result, nn.Module):
        raise FactoryError(
            f"model factory {arch} returned {show_value(result)} of type {type(result).__name__}, not a torch nn.Module"
        )
    return result


def build_from_factory(
    arch: str, function: Callable[..., Any], num_classes: int, in_channels: int = 3, **kwargs: Any
) -> CAMClassifier:
    """Call the user's ``function`` and make its result a ``CAMClassifier`` named ``arch``."""
    net = _call(arch, function, num_classes, in_channels, **kwargs)
    if isinstance(net, CAMClassifier):
        if net.in_channels != in_channels:
            raise FactoryError(
                f"model factory {arch} returned a CAMClassifier with in_channels={net.in_channels}, not {in_channels}"
            )
        model = net
        model.arch = arch
    else:
        model = from_torchvision(net, arch=arch, in_channels=in_channels, gradcam=True)
    if model.num_classes != num_classes:
        raise FactoryError(
            f"model factory {arch} returned a network with {model.num_classes} classes, not num_classes={num_classes}"
        )
    return model


def _config_of(net: nn.Module) -> Mapping[str, Any]:
    for key in ("pretrained_cfg", "default_cfg"):
        config = getattr(net, key, None)
        if isinstance(config, Mapping):
            return config
    return {}


def _spec_of(arch: str, function: Callable[..., Any]) -> ArchSpec:
    """What the factory's result tells about itself; the defaults where it says nothing or fails.

    The head's name is the split's (``HEAD_FROM_SPLIT``), read from each built model, since it
    may depend on the factory's options; a network that is itself a ``CAMClassifier`` is keyed
    like one, which the loader tells from the keys.
    """
    default = ArchSpec(input_size=_DEFAULT_INPUT, min_input_size=_DEFAULT_INPUT, source=SOURCE, head=HEAD_FROM_SPLIT)
    try:
        with torch.device("meta"):  # the network's declared facts are wanted, not weights
            config = _config_of(_call(arch, function, 2, 3))
        input_size = tuple(int(n) for n in config.get("input_size", _DEFAULT_INPUT))
        smallest = tuple(int(n) for n in config.get("min_input_size", input_size))
        normalization = None
        if "mean" in config and "std" in config:
            normalization = Normalization(
                f"{arch} config",
                tuple(map(float, config["mean"])),
                tuple(map(float, config["std"])),
                f"statistics of {arch}'s pretrained_cfg",
            )
        return dataclasses.replace(
            default,
            input_size=input_size,  # type: ignore[arg-type]
            min_input_size=smallest,  # type: ignore[arg-type]
            normalization=normalization,
        )
    except Exception:  # noqa: BLE001  (a factory that needs options, meta tensors it cannot use, odd configs)
        return default


@MODELS.register_scheme(USER_FACTORY_SCHEME)
def resolve_factory(arch: str) -> Architecture:
    """The ``Architecture`` of a user factory name: the function imported once, its spec probed."""
    function = load_factory(arch)

    def factory(num_classes: int, in_channels: int = 3, **kwargs: Any) -> CAMClassifier:
        return build_from_factory(arch, function, num_classes, in_channels, **kwargs)

    factory.__name__ = getattr(function, "__name__", "user_factory")
    factory.__doc__ = f"the user's factory {arch}, adapted like a torchvision network."
    return Architecture(arch, factory, _spec_of(arch, function), typed_options=False)


def _one_line(error: BaseException) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
