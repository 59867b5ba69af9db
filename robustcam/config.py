"""Validated config models, YAML loading and ``--set a.b=value`` overrides.

YAML goes into pydantic models that reject unknown keys; the error names the
key, the file (or the flag or override it came from), the bad value and what is
valid. CLI flags (``FlagSetting``) and ``--set`` overrides are applied to the raw
mapping before validation, so they are validated exactly like the file; an error
names the flag a value came from (``--epochs: 0 is not >= 1``).

Floats must be finite everywhere (NaN passes every range check). Loss, attack
and dataset parameters are typed from the plugin's keyword-only arguments
(``robustcam.registry.check_parameters``) and range-checked by building the
plugin, so ``loss.focal.gamma: abc`` is "'abc' is not a number" at load time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from robustcam.attacks import (
    ATTACKS,
    BACKENDS,
    Attack,
    Norm,
    attack_parameters,
    build_attack,
    check_supported,
    parse_eps_list,
)
from robustcam.data import DATASETS
from robustcam.errors import ConfigError, InputError, ParameterError, describe_invalid, show_value
from robustcam.layout import DEFAULT_EPS, DEFAULT_EPS_L2, digest, placement_free
from robustcam.losses import LOSSES
from robustcam.models import MODELS, Normalization
from robustcam.models.normalization import check_statistics, explicit_normalization, get_normalization
from robustcam.noise import NOISE_KINDS, NoiseSpec
from robustcam.registry import check_parameters, keyword_parameters, unknown_parameters

Loc = tuple[str | int, ...]


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment,
    floats must be finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- plugin parameters


def _problem(loc: Loc, message: str, value: object) -> InitErrorDetails:
    # the message is a template argument, not the template: braces in it stay as they are
    error = PydanticCustomError("robustcam_invalid", "{message}", {"message": message})
    return InitErrorDetails(type=error, loc=loc, input=value)


def located_error(title: str, problems: list[InitErrorDetails]) -> ValidationError:
    """A ``ValidationError`` whose errors sit at ``loc`` inside the model being validated;
    raised in a validator, pydantic puts the model's own location in front."""
    return ValidationError.from_exception_data(title, problems)


def parameter_problems(
    factory: Callable[..., Any],
    params: Mapping[str, Any],
    *,
    what: str,
    loc: Loc,
    build: bool = True,
    exclude: tuple[str, ...] = (),
) -> list[InitErrorDetails]:
    """What is wrong with ``params`` for ``factory``, each problem at ``loc + (parameter,)``:
    an unknown name, values of the wrong type or NaN/inf, then (``build``) the range checks
    the factory itself makes beside each parameter. ``exclude``: arguments the caller gives."""
    unknown = unknown_parameters(factory, params, what=what, exclude=exclude)
    if unknown is not None:
        first = next(name for name in params if name not in keyword_parameters(factory, exclude))
        return [_problem((*loc, first), str(unknown), params[first])]
    try:
        check_parameters(factory, params, what=what, exclude=exclude)
    except ValidationError as error:
        seen: dict[str, InitErrorDetails] = {}
        for item in error.errors():  # a union type reports once per member: keep the first
            name = str(item["loc"][0]) if item["loc"] else ""
            seen.setdefault(name, _problem((*loc, name), describe_invalid(item), item.get("input")))
        return list(seen.values())
    if build:
        try:
            factory(**params)
        except ParameterError as error:
            return [_problem((*loc, error.parameter), str(error), params.get(error.parameter))]
    return []


class DataConfig(StrictModel):
    name: str = Field("digits", description="registered dataset name")
    root: str | None = Field(None, description="data root; default $ROBUSTCAM_DATA or ~/.robustcam/data")
    download: bool = Field(False, description="download missing torchvision datasets")
    options: dict[str, Any] = Field(default_factory=dict, description="loader options, e.g. canvas: 64")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        DATASETS.get(value)
        return value

    @model_validator(mode="after")
    def _check_options(self) -> DataConfig:
        # types only: building a dataset loads it; its loader checks the ranges
        factory = DATASETS.get(self.name)
        problems = [
            _problem(("options", k), f"{k} is not a dataset option: set data.{k} instead", self.options[k])
            for k in self.options
            if k in LOADER_ARGUMENTS
        ]
        if not problems:
            problems = parameter_problems(
                factory,
                self.options,
                what=f"dataset {self.name!r}",
                loc=("options",),
                build=False,
                exclude=LOADER_ARGUMENTS,
            )
        if problems:
            raise located_error("DataConfig", problems)
        return self


LOADER_ARGUMENTS = ("root", "download")  # given by DataConfig's own fields, not as options


class ModelConfig(StrictModel):
    arch: str = Field("smallcnn", description="registered architecture")
    options: dict[str, Any] = Field(default_factory=dict, description="architecture options, e.g. width: 32")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        MODELS.get(value)
        return value

    @model_validator(mode="after")
    def _check_options(self) -> ModelConfig:
        # types only (building a model here would be slow); the options are the factory's keyword-only arguments
        entry = MODELS.get(self.arch)
        if not entry.typed_options:  # timm's and user factories' options are checked by their own code
            return self
        factory = getattr(entry, "factory", entry)
        problems = parameter_problems(
            factory, self.options, what=f"architecture {self.arch!r}", loc=("options",), build=False
        )
        if problems:
            raise located_error("ModelConfig", problems)
        return self


class LossConfig(BaseModel):
    """``name`` selects the loss; a section per loss holds that loss's parameters.

    Keeping every loss's parameters side by side lets a sweep switch ``loss.name``
    without dropping or invalidating the others::

        loss: {name: hnc, hnc: {k: 3, weight: 0.06}, focal: {gamma: 2}}
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "ce"

    @field_validator("name")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        LOSSES.get(value)
        return value

    @model_validator(mode="after")
    def _check_sections(self) -> LossConfig:
        problems: list[InitErrorDetails] = []
        for section, params in (self.model_extra or {}).items():
            if section not in LOSSES:
                message = f"key {section!r} is neither 'name' nor a loss section: " + LOSSES.unknown_message(section)
                problems.append(_problem((section,), message, params))
            elif not isinstance(params, Mapping):
                problems.append(_problem((section,), f"must be a mapping of parameters, got {params!r}", params))
            else:
                problems += parameter_problems(LOSSES.get(section), params, what=f"loss {section!r}", loc=(section,))
        if problems:
            raise located_error("LossConfig", problems)
        return self

    def params(self, name: str | None = None) -> dict[str, Any]:
        """Parameters given for loss ``name`` (default: the selected loss)."""
        return dict((self.model_extra or {}).get(name or self.name, {}))


class OptimizerConfig(StrictModel):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)


class ScheduleConfig(StrictModel):
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    milestones: list[int] = Field(default_factory=list, description="step schedule: epochs where lr *= gamma")
    gamma: float = Field(0.1, gt=0)


class NoiseConfig(StrictModel):
    """Label noise applied to the training split (test labels stay clean); see ``robustcam.noise``.

    ``kind: none`` trains on clean labels. ``seed`` defaults to the run's seed.
    """

    kind: str = Field("none", description="none, symmetric, asymmetric, pairflip, matrix or human")
    rate: float | None = Field(None, description="flip rate in [0, 1] (not for matrix/human)")
    convention: Literal["other", "uniform"] = "other"
    sampling: Literal["exact", "bernoulli"] = "exact"
    class_map: dict[int, int] | None = Field(None, description="asymmetric: {source: destination}")
    path: str | None = Field(None, description="matrix: .yaml/.npy file; human: CIFAR-N label file")
    key: str | None = Field(None, description="human: which labels, e.g. worse_label")
    seed: int | None = Field(None, ge=0)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value != "none" and value not in NOISE_KINDS:
            raise ValueError(f"{NOISE_KINDS.unknown_message(value)}, none")
        return value

    @model_validator(mode="after")
    def _check_spec(self) -> NoiseConfig:
        self.spec()
        return self

    def spec(self) -> NoiseSpec | None:
        """The validated noise spec, or None for clean labels."""
        if self.kind == "none":
            defaults = {name: field.default for name, field in type(self).model_fields.items()}
            given = sorted(k for k in self.model_fields_set if k != "kind" and getattr(self, k) != defaults[k])
            if given:
                raise ValueError(f"{', '.join(given)} set but noise.kind is none; set noise.kind (e.g. symmetric)")
            return None
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise kind: {NOISE_KINDS.unknown_message(self.kind)}, none")
        fields = self.model_dump(exclude={"seed"})
        return NoiseSpec.from_dict({k: v for k, v in fields.items() if v is not None or k == "kind"})


Device = str
AMP = Literal["auto", "none", "bf16", "fp16"]
Augment = Literal["auto", "none", "crop", "crop_flip"]


class TrainConfig(StrictModel):
    """Everything that determines a training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    seed: int = Field(0, ge=0)
    deterministic: bool = True
    amp: AMP = "auto"
    device: Device = "auto"
    augment: Augment = "auto"
    num_workers: int = Field(0, ge=0)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device(value)


def check_device(value: str) -> str:
    """``value`` if it names a device (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``); whether
    that device is present is checked when it is used."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise InputError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return value


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as YAML: numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. loss.name=focal), got {text!r}")
    path = key.strip().split(".")
    if any(not part for part in path):
        raise ConfigError(f"--set has an empty key part in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*/\s*\d+\s*", value):
        value = raw.strip()  # keep fractions such as 8/255 as text; eps parsing handles them
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set each dotted key in a nested mapping, creating intermediate mappings."""
    for path, value in overrides:
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{file}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


class FlagSetting(NamedTuple):
    """A config value given as a CLI flag: the flag as the user wrote it (``--epochs``, or
    ``--attack-param pgd.steps``), the dotted key it sets, and the value."""

    flag: str
    key: str
    value: Any


def _dotted(loc: tuple[Any, ...]) -> str:
    """``("eps", 0)`` -> ``eps[0]``; ``("loss", "focal", "gamma")`` -> ``loss.focal.gamma``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _origin(named: str, origins: Mapping[str, str]) -> tuple[str, bool] | None:
    """Where the value at key ``named`` came from (flags and overrides), and whether that
    origin says the key already (it is the key or inside it); None for the file or the defaults."""
    if not named:
        return None
    matches = sorted(k for k in origins if k == named or k.startswith(f"{named}.") or named.startswith(f"{k}."))
    if not matches:
        return None
    deeper = all(named.startswith(f"{k}.") for k in matches)
    return ", ".join(dict.fromkeys(origins[k] for k in matches)), not deeper


def _describe_one(item: Any, model: type[BaseModel], source: str, origins: Mapping[str, str]) -> str:
    loc = tuple(item["loc"])
    key = _dotted(loc)
    named = ".".join(str(p) for p in loc if not isinstance(p, int))  # list positions are not keys
    found = _origin(named, origins)
    if found is not None:
        origin, exact = found
        prefix, show_key = f"{origin}: ", not exact or key != named
    else:
        # a file names the key; the defaults never fail alone, so a keyless error is about the combination
        prefix, show_key = (f"{source}: " if source != "defaults" else ""), True
    if item["type"] == "extra_forbidden":
        valid = _valid_keys(model, loc)
        hint = f" (valid: {', '.join(valid)})" if valid else ""
        return f"{prefix}unknown key {key!r}{hint}"
    where = f"{key}: " if key and show_key else ""
    return f"{prefix}{where}{describe_invalid(item)}"


def describe_validation_error(
    error: ValidationError, model: type[BaseModel], source: str, overridden: Iterable[str] | Mapping[str, str]
) -> str:
    """One line naming each bad key, where it came from, the bad value and what is valid.

    ``overridden`` maps each dotted key set outside ``source`` to where it was set (a flag
    such as ``--epochs``); plain key names mean ``--set`` overrides.
    """
    origins = dict(overridden) if isinstance(overridden, Mapping) else {k: f"--set {k}" for k in overridden}
    problems = [_describe_one(item, model, source, origins) for item in _one_per_union(error.errors())]
    return "; ".join(dict.fromkeys(problems))


def _is_union_tag(part: object) -> bool:
    # pydantic names the member of a union a value failed: "str", "float", "dict[str,list]", ...
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "tuple", "set", "none"})


def _one_per_union(errors: list[Any]) -> list[Any]:
    """The errors with union members' tags taken out of their locations, keeping for each union
    the error that reaches deepest into the value (a union fails once per member)."""
    kept: dict[tuple[Any, ...], Any] = {}
    plain: list[Any] = []
    for item in errors:
        loc = tuple(item["loc"])
        tags = [i for i, part in enumerate(loc) if _is_union_tag(part)]
        if not tags:
            plain.append(item)
            continue
        union, stripped = loc[: tags[0]], tuple(p for p in loc if not _is_union_tag(p))
        best = kept.get(union)
        if best is None or len(stripped) > len(best["loc"]):
            kept[union] = {**item, "loc": stripped}
    return [*plain, *kept.values()]


def validate_config(
    model: type[StrictModel],
    raw: Mapping[str, Any],
    *,
    source: str = "config",
    overridden: Iterable[str] | Mapping[str, str] = (),
) -> Any:
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, model, source, overridden)) from None


def apply_settings(
    raw: dict[str, Any], overrides: Iterable[str] = (), flags: Iterable[FlagSetting] = ()
) -> dict[str, str]:
    """Apply CLI flags, then ``--set`` overrides (which win), to ``raw``; return each set key's origin."""
    origins: dict[str, str] = {}
    settings = list(flags)
    apply_overrides(raw, [(setting.key.split("."), setting.value) for setting in settings])
    origins.update({setting.key: setting.flag for setting in settings})
    for path, value in (parse_override(text) for text in overrides):
        apply_overrides(raw, [(path, value)])
        key = ".".join(path)
        for replaced in [k for k in origins if k == key or k.startswith(f"{key}.")]:
            del origins[replaced]
        origins[key] = f"--set {key}"
    return origins


def load_train_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), *, flags: Iterable[FlagSetting] = ()
) -> TrainConfig:
    """Read a train config (or the defaults), apply CLI flags and ``--set`` overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    origins = apply_settings(raw, overrides, flags)
    source = str(path) if path is not None else "defaults"
    config: TrainConfig = validate_config(TrainConfig, raw, source=source, overridden=origins)
    return config


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """Plain, YAML/JSON-ready data (what is saved next to results)."""
    return config.model_dump(mode="json")


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- evaluation


def _budgets(values: Iterable[str]) -> list[str | float]:
    budgets: list[str | float] = list(values)
    return budgets


# NaN/inf pass the type so that parse_eps_list refuses them in its own words ("eps must be a finite number")
EpsList = list[str | Annotated[float, AllowInfNan()]]


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``--model-kwargs '{"width": 2}'``: a JSON object of architecture options."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{show_value(text)} is not JSON ({error.msg} at column {error.colno}); "
            "write an object such as '{\"width\": 2}'"
        ) from None
    if not isinstance(value, dict):
        raise InputError(f'{show_value(text)} is a JSON {type(value).__name__}, not an object such as {{"width": 2}}')
    return value


# Keys of CheckpointReading left out of a dump while unset, so digests of configs from before them stay.
_READING_KEYS = ("normalization", "mean", "std", "model_kwargs", "cam_layer")


class CheckpointReading(StrictModel):
    """How to read a checkpoint for ``robustcam eval`` and ``robustcam cam``: the statistics
    its model normalises inputs with and its architecture's options (bare state_dicts above all).

    ``normalization`` names a preset (``robustcam.models.normalization``) or ``mean`` and
    ``std`` give the values; unset, the loader decides (``robustcam.checkpoint.load_checkpoint``).
    """

    normalization: str | None = Field(None, description="input statistics preset: imagenet, cifar10, ..., none")
    mean: list[float] | None = Field(None, description="per-channel mean, with std, instead of a preset")
    std: list[float] | None = Field(None, description="per-channel std, with mean, instead of a preset")
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="the architecture's options (JSON on the command line)"
    )
    cam_layer: str | None = Field(
        None, description="Grad-CAM models: the layer the maps are read at (default: the family's last feature maps)"
    )

    @field_validator("normalization")
    @classmethod
    def _known_normalization(cls, value: str | None) -> str | None:
        if value is not None:
            get_normalization(value)
        return value

    @field_validator("mean", "std")
    @classmethod
    def _valid_statistics(cls, values: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if values is not None:
            check_statistics(str(info.field_name), values)
        return values

    @field_validator("model_kwargs", mode="before")
    @classmethod
    def _json_model_kwargs(cls, value: object) -> object:
        return parse_model_kwargs(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_choice(self) -> CheckpointReading:
        self.chosen_normalization()  # a preset and values together, or mean without std
        return self

    @model_serializer(mode="wrap")
    def _unset_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in _READING_KEYS:
            if key in data and data[key] in (None, {}):
                del data[key]
        return data

    def chosen_normalization(self) -> Normalization | None:
        """The statistics the user chose, or None to leave the choice to the loader."""
        return explicit_normalization(self.normalization, self.mean, self.std)

    def checkpoint_options(self) -> dict[str, Any]:
        """The ``load_checkpoint`` keyword arguments these settings give."""
        return {"normalization": self.chosen_normalization(), "model_kwargs": self.model_kwargs or None}


def load_checkpoint_reading(flags: Iterable[FlagSetting]) -> CheckpointReading:
    """``CheckpointReading`` from command-line flags only (``robustcam cam``), validated."""
    raw: dict[str, Any] = {}
    origins = apply_settings(raw, flags=flags)
    reading: CheckpointReading = validate_config(CheckpointReading, raw, source="command line", overridden=origins)
    return reading


class EvalConfig(CheckpointReading):
    """The attack matrix for ``robustcam eval`` (also the ``eval:`` section of sweep configs),
    and how to read the checkpoint (``CheckpointReading``: normalization, mean, std, model_kwargs).
    """

    attacks: list[str] = Field(default_factory=lambda: ["pgd"], description="registered attack names")
    eps: EpsList = Field(default_factory=lambda: _budgets(DEFAULT_EPS), description="Linf, pixel units")
    eps_l2: EpsList = Field(default_factory=lambda: _budgets(DEFAULT_EPS_L2), description="L2 budgets")
    backends: list[str] | None = Field(
        None,
        description="attack libraries; default: each attack's own "
        "(native for pgd and pgd_l2, the authors' for AutoAttack, else torchattacks)",
    )
    n: int | None = Field(None, ge=1, description="evaluate a seeded random subset of this size")
    batch_size: int = Field(256, ge=1)
    split: Literal["test", "train"] = "test"
    seed: int = Field(0, ge=0)
    cascade: bool = True
    sanity: bool = True
    cam_stats: bool = Field(True, description="record negative-CAM statistics of every example")
    cam_topk: int | None = Field(None, ge=1, description="k of the top-k negative-class statistics")
    steps: int | None = Field(None, ge=1, description="steps of every iterative attack")
    attack_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-attack parameters, e.g. cw: {c: 0.5}"
    )
    device: Device = "auto"
    save_adv: bool = False
    attack_amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="autocast dtype of the attack calls; none: fp32 (half precision can mask gradients)"
    )

    @field_validator("attacks")
    @classmethod
    def _known_attacks(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError(f"give at least one attack; valid: {', '.join(ATTACKS.names())}")
        for name in values:
            ATTACKS.get(name)
        return list(dict.fromkeys(values))

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError(f"give at least one backend; valid: {', '.join(BACKENDS.names())}")
        for name in values:
            BACKENDS.get(name)
        return list(dict.fromkeys(values))

    @field_validator("eps", "eps_l2")
    @classmethod
    def _valid_eps(cls, values: list[str | float], info: ValidationInfo) -> list[str | float]:
        parse_eps_list(values, norm="Linf" if info.field_name == "eps" else "L2")
        return values

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("attack_params")
    @classmethod
    def _check_attack_params(cls, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        problems: list[InitErrorDetails] = []
        for name, params in values.items():
            if name not in ATTACKS:
                problems.append(_problem((name,), ATTACKS.unknown_message(name), params))
            else:
                problems += parameter_problems(ATTACKS.get(name), params, what=f"attack {name!r}", loc=(name,))
        if problems:
            raise located_error("EvalConfig.attack_params", problems)
        return values

    @model_validator(mode="after")
    def _check_matrix(self) -> EvalConfig:
        for attack in self.build_attacks():
            if not (self.eps if attack.norm == "Linf" else self.eps_l2):
                flag = "eps" if attack.norm == "Linf" else "eps_l2"
                kind = "minimal-perturbation" if attack.kind == "minimal" else "bounded"
                raise ValueError(
                    f"{attack.name} is a {kind} {attack.norm} attack: give its budgets with "
                    f"--{flag.replace('_', '-')} ({flag} in a config file)"
                )
            if self.backends is not None and not any(attack.supports(b) for b in self.backends):
                check_supported(attack, self.backends[0])
        norms = {attack.norm for attack in self.build_attacks()}
        for field, norm in (("eps", "Linf"), ("eps_l2", "L2")):
            if field in self.model_fields_set and self.__dict__[field] and norm not in norms:
                names = ", ".join(self.attacks)
                other = "eps_l2 (--eps-l2)" if norm == "Linf" else "eps (--eps)"
                raise ValueError(
                    f"{field} gives {norm} budgets but no {norm} attack runs ({names}); give their budgets in {other}"
                )
        return self

    def build_attacks(self) -> list[Attack]:
        """The configured attacks; ``steps`` applies to every attack that has steps, and
        ``attack_params`` (more specific) wins over it."""
        built = []
        for name in self.attacks:
            params: dict[str, Any] = {}
            if self.steps is not None and "steps" in attack_parameters(ATTACKS.get(name)):
                params["steps"] = self.steps
            params.update(self.attack_params.get(name, {}))
            built.append(build_attack(name, **params))
        return built

    def budgets(self) -> dict[Norm, list[float]]:
        """The parsed, ascending eps lists per norm."""
        return {"Linf": parse_eps_list(list(self.eps), norm="Linf"), "L2": parse_eps_list(list(self.eps_l2), norm="L2")}

    def digest(self) -> str:
        """The id of what this evaluation computes (``robustcam.layout.digest``): the config
        without its placement, and the (attack, backend) jobs it resolves to, so that a change
        of an attack's default backend makes a different evaluation, not a reused one."""
        jobs = [[attack.name, backend] for attack, backend in self.jobs()[0]]
        config = placement_free(self)
        del config["backends"]  # the jobs say what they resolve to: None and each default are one evaluation
        return digest({"config": config, "jobs": jobs})

    def backends_used(self) -> list[str]:
        """The backends the jobs run on, in job order (each attack's default when none are chosen)."""
        return list(dict.fromkeys(backend for _, backend in self.jobs()[0]))

    def jobs(self) -> tuple[list[tuple[Attack, str]], list[str]]:
        """(attack, backend) pairs to run, in attack order, and notes on the pairs left out
        because a backend has no implementation of the attack (another backend runs it).
        Without ``backends``, each attack runs on its own default backend."""
        jobs: list[tuple[Attack, str]] = []
        skipped: list[str] = []
        for attack in self.build_attacks():
            chosen = self.backends if self.backends is not None else [attack.default_backend()]
            able = [b for b in chosen if attack.supports(b)]
            skipped += [
                f"{attack.name} has no {b} implementation; ran it on {', '.join(able)} only"
                for b in chosen
                if b not in able
            ]
            jobs += [(attack, b) for b in able]
        return jobs, skipped


def load_eval_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), *, flags: Iterable[FlagSetting] = ()
) -> EvalConfig:
    """Read an eval config (a file that is one, or the ``eval:`` section of a file), apply CLI
    flags and ``--set`` overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    if "eval" in raw and isinstance(raw["eval"], dict):
        raw = raw["eval"]
    origins = apply_settings(raw, overrides, flags)
    source = str(path) if path is not None else "defaults"
    config: EvalConfig = validate_config(EvalConfig, raw, source=source, overridden=origins)
    return config
