"""Normalisation presets, checked mean/std values, and the config keys that carry them."""

from __future__ import annotations

import pytest

from robustcam.config import CheckpointReading, EvalConfig, FlagSetting, config_to_dict, load_eval_config
from robustcam.data.torchvision_datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from robustcam.errors import ConfigError, InputError
from robustcam.layout import config_digest
from robustcam.models import IMAGENET, NORMALIZATIONS, explicit_normalization, get_normalization
from robustcam.models.normalization import check_statistics


def test_the_presets_are_the_statistics_their_datasets_declare() -> None:
    assert list(NORMALIZATIONS) == ["imagenet", "cifar10", "cifar100", "mnist", "none"]
    declared = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
                "mnist": (MNIST_MEAN, MNIST_STD)}  # fmt: skip
    for name, (mean, std) in declared.items():
        assert (NORMALIZATIONS[name].mean, NORMALIZATIONS[name].std) == (mean, std), name
    assert get_normalization("imagenet") is IMAGENET
    none = get_normalization("none")
    assert none.values("mean", 3) == [0.0] * 3 and none.values("std", 3) == [1.0] * 3


def test_an_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(InputError) as info:
        get_normalization("cifar")
    message = str(info.value)
    assert "unknown normalization 'cifar' (did you mean 'cifar10'?)" in message
    assert "valid: imagenet, cifar10, cifar100, mnist, none" in message and "\n" not in message


@pytest.mark.parametrize(
    ("key", "values", "in_channels", "expected"),
    [
        ("mean", [0.5, 0.5], None, "mean has 2 values (0.5,0.5); give 1 (for every channel) or 3 (one per channel)"),
        ("mean", [0.1, 0.2, 0.3], 1, "mean has 3 values (0.1,0.2,0.3); give 1 value: the model has 1 input channel"),
        ("mean", [0.5, float("nan"), 0.5], None, "mean must be finite numbers, got 0.5,nan,0.5"),
        ("std", [float("inf")], None, "std must be finite numbers, got inf"),
        ("std", [0.2, 0.0, 0.2], 3, "std must be > 0 for every channel, got 0.2,0,0.2"),
    ],
)
def test_bad_statistics_are_one_line_naming_the_values(
    key: str, values: list[float], in_channels: int | None, expected: str
) -> None:
    with pytest.raises(InputError, match="^" + expected.replace("(", r"\(").replace(")", r"\)") + "$"):
        check_statistics(key, values, in_channels=in_channels)


def test_explicit_normalization_is_a_preset_or_mean_and_std() -> None:
    assert explicit_normalization(None, None, None) is None
    assert explicit_normalization("mnist", None, None) is NORMALIZATIONS["mnist"]
    custom = explicit_normalization(None, [0.5], [0.25, 0.5, 1.0])
    assert custom is not None and custom.values("mean", 3) == [0.5] * 3 and custom.std == (0.25, 0.5, 1.0)
    with pytest.raises(InputError, match="not both"):
        explicit_normalization("cifar10", [0.5], [0.5])
    with pytest.raises(InputError, match="give mean and std together .*; std is missing"):
        explicit_normalization(None, [0.5], None)


def test_eval_configs_take_the_checkpoint_keys() -> None:
    config = load_eval_config(None, ["normalization=cifar10", 'model_kwargs={"width": 4}'])
    assert config.chosen_normalization() is NORMALIZATIONS["cifar10"] and config.model_kwargs == {"width": 4}
    assert config.checkpoint_options() == {"normalization": NORMALIZATIONS["cifar10"], "model_kwargs": {"width": 4}}
    values = load_eval_config(None, ["mean=[0.5, 0.4, 0.3]", "std=[0.2]"]).chosen_normalization()
    assert values is not None and values.mean == (0.5, 0.4, 0.3) and values.std == (0.2,)
    assert CheckpointReading().checkpoint_options() == {"normalization": None, "model_kwargs": None}


def test_unset_checkpoint_keys_leave_the_eval_digest_alone() -> None:
    plain = EvalConfig()
    assert not {"normalization", "mean", "std", "model_kwargs"} & set(config_to_dict(plain))
    chosen = EvalConfig(normalization="none")
    assert config_to_dict(chosen)["normalization"] == "none"
    assert config_digest(chosen) != config_digest(plain)
    assert EvalConfig.model_validate({"normalization": "none"}) == chosen


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["normalization=cifar"], "unknown normalization 'cifar' (did you mean 'cifar10'?)"),
        (["mean=[.nan]", "std=[1]"], "mean[0]: nan is not a finite number"),
        (["mean=[0.1, 0.2]", "std=[1]"], "mean has 2 values (0.1,0.2)"),
        (["mean=[0.5]"], "give mean and std together (--mean and --std); std is missing"),
        (["normalization=none", "mean=[0.5]", "std=[1]"], "give normalization 'none' or mean and std"),
        (["model_kwargs=[1, 2]"], "is not a mapping"),
    ],
)
def test_bad_checkpoint_keys_are_config_errors(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_eval_config(None, overrides)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{width: 2}", "--model-kwargs: '{width: 2}' is not JSON (Expecting property name enclosed in double quotes"),
        ("[1, 2]", "--model-kwargs: '[1, 2]' is a JSON list, not an object"),
        ('{"width": 2', "--model-kwargs: '{\"width\": 2' is not JSON"),
    ],
)
def test_model_kwargs_flags_are_json_objects(text: str, expected: str) -> None:
    flag = FlagSetting("--model-kwargs", "model_kwargs", text)
    with pytest.raises(ConfigError) as info:
        load_eval_config(None, [], flags=[flag])
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert load_eval_config(None, [], flags=[flag._replace(value='{"width": 2}')]).model_kwargs == {"width": 2}
