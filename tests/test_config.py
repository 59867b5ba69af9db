from __future__ import annotations

import re
from pathlib import Path

import pytest

from robustcam.config import (
    EvalConfig,
    FlagSetting,
    TrainConfig,
    config_to_dict,
    dump_yaml,
    load_eval_config,
    load_train_config,
    parse_override,
)
from robustcam.errors import ConfigError

# train configs; the sweep configs (with a grid) are checked in tests/test_sweep.py
CONFIGS = [p for p in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")) if "grid" not in p.read_text()]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_train_configs_validate(path: Path) -> None:
    assert isinstance(load_train_config(path), TrainConfig)


def test_unknown_key_names_the_key_the_file_and_the_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "optimizer:\n  name: sgd\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown key 'optimizer.learning_rate'" in message
    assert "valid: lr, momentum, name, nesterov, weight_decay" in message
    assert "\n" not in message


def test_override_errors_name_the_override_and_the_value() -> None:
    with pytest.raises(ConfigError, match=r"^--set epochs: 0 is not >= 1$"):
        load_train_config(None, ["epochs=0"])


def test_a_value_given_as_a_flag_is_reported_as_that_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--epochs: 0 is not >= 1$"):
        load_train_config(None, flags=[FlagSetting("--epochs", "epochs", 0)])
    with pytest.raises(ConfigError, match=r"^--lr: inf is not a finite number$"):
        load_train_config(None, flags=[FlagSetting("--lr", "optimizer.lr", float("inf"))])


def test_a_set_override_wins_over_a_flag_and_is_named_instead() -> None:
    config = load_train_config(None, ["epochs=4"], flags=[FlagSetting("--epochs", "epochs", 9)])
    assert config.epochs == 4
    with pytest.raises(ConfigError, match=r"^--set epochs: 0 is not >= 1$"):
        load_train_config(None, ["epochs=0"], flags=[FlagSetting("--epochs", "epochs", 3)])


def test_errors_from_a_file_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "optimizer:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: optimizer.lr: nan is not a finite number$"):
        load_train_config(path)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("loss.focal.gamma=abc", "--set loss.focal.gamma: 'abc' is not a number"),
        ("loss.focal.gamma=-1", "--set loss.focal.gamma: gamma must be a finite number >= 0, got -1"),
        ("loss.focal.gamma=.inf", "--set loss.focal.gamma: inf is not a finite number"),
        ("loss.hnc.k=2.5", "--set loss.hnc.k: 2.5 is not an integer"),
        ("loss.hnc.k=0", "--set loss.hnc.k: k must be >= 1, got 0"),
        ("loss.hnc.kind=l1", "--set loss.hnc.kind: 'l1' is not one of 'kd' or 'mse'"),
        ("loss.hnc.weight=.nan", "--set loss.hnc.weight: nan is not a finite number"),
        ("loss.ce.label_smoothing=1", "label_smoothing must be a finite number in [0, 1), got 1"),
        ("loss.cam_loss.alpha=yes", "--set loss.cam_loss.alpha: True is not a number"),
        ("loss.focal=3", "--set loss.focal: must be a mapping of parameters, got 3"),
        ("optimizer.lr=.inf", "--set optimizer.lr: inf is not a finite number"),
        ("optimizer.weight_decay=.nan", "--set optimizer.weight_decay: nan is not a finite number"),
        ("optimizer.momentum=1", "--set optimizer.momentum: 1 is not < 1"),
        ("schedule.gamma=-.inf", "--set schedule.gamma: -inf is not a finite number"),
        ("optimizer={lr: .inf}", "--set optimizer: optimizer.lr: inf is not a finite number"),
        ("epochs=ten", "--set epochs: 'ten' is not an integer"),
        ("amp=bf17", "--set amp: 'bf17' is not one of 'auto', 'none', 'bf16' or 'fp16'"),
        ("seed=-1", "--set seed: -1 is not >= 0"),
        ("deterministic=maybe", "--set deterministic: 'maybe' is not a boolean (true or false)"),
        ("schedule.milestones=[1, x]", "schedule.milestones[1]: 'x' is not an integer"),
    ],
)
def test_values_are_typed_and_checked_where_they_enter(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(None, [override])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_noise_rate_must_be_finite() -> None:
    with pytest.raises(ConfigError, match=r"--set noise.rate: nan is not a finite number"):
        load_train_config(None, ["noise.kind=symmetric", "noise.rate=.nan"])


def test_dataset_options_are_typed_against_the_loader() -> None:
    with pytest.raises(ConfigError, match=r"^--set data.options.canvas: 'abc' is not an integer$"):
        load_train_config(None, ["data.name=digits_scene", "data.options.canvas=abc"])
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) canvs for dataset 'digits_scene'; valid: canvas"):
        load_train_config(None, ["data.name=digits_scene", "data.options.canvs=40"])
    with pytest.raises(ConfigError, match="root is not a dataset option: set data.root instead"):
        load_train_config(None, ["data.options.root=/tmp"])
    assert load_train_config(None, ["data.name=digits_scene", "data.options.digit_size=[12, 20]"]).data.options


@pytest.mark.parametrize(
    ("flags", "overrides", "expected"),
    [
        ([FlagSetting("--eps-l2", "eps_l2", ["nan"])], [], "--eps-l2: eps must be a finite number, got nan"),
        ([FlagSetting("--eps", "eps", ["inf"])], [], "--eps: eps must be a finite number, got inf"),
        (
            [FlagSetting("--attack-param pgd.step_factor", "attack_params.pgd.step_factor", float("nan"))],
            [],
            "--attack-param pgd.step_factor: nan is not a finite number",
        ),
        ([], ["attack_params.pgd.steps=abc"], "--set attack_params.pgd.steps: 'abc' is not an integer"),
        ([], ["attack_params.pgd.step_factor=-1"], "step_factor must be a finite number > 0, got -1"),
        ([], ["attack_params.cw.c=.inf", "attacks=[cw]"], "--set attack_params.cw.c: inf is not a finite number"),
        ([], ["attack_params.apgd.loss=hinge"], "--set attack_params.apgd.loss: loss must be one of ce, dlr"),
        ([], ["attack_params.pgdd.steps=3"], "unknown attack 'pgdd' (did you mean 'pgd'?)"),
        ([], ["n=0"], "--set n: 0 is not >= 1"),
    ],
)
def test_eval_values_are_typed_and_name_their_flag(
    flags: list[FlagSetting], overrides: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_eval_config(None, overrides, flags=flags)
    assert expected in str(info.value)


def test_overrides_win_over_the_file_and_parse_as_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 3\nloss: {name: ce}\n")
    config = load_train_config(path, ["epochs=7", "loss.name=hnc", "loss.hnc.k=2", "deterministic=false"])
    assert config.epochs == 7
    assert config.loss.name == "hnc" and config.loss.params() == {"k": 2}
    assert config.deterministic is False


def test_parse_override_keeps_fractions_as_text() -> None:
    assert parse_override("eval.eps=8/255") == (["eval", "eps"], "8/255")
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(ConfigError, match="expects key=value"):
        parse_override("epochs")


def test_switching_the_loss_keeps_every_losss_parameters() -> None:
    config = load_train_config(None, ["loss.hnc.k=3", "loss.focal.gamma=1.5", "loss.name=focal"])
    assert config.loss.params() == {"gamma": 1.5}
    assert config.loss.params("hnc") == {"k": 3}


def test_loss_sections_are_validated_against_the_loss_signature() -> None:
    with pytest.raises(ConfigError, match="unknown parameter.*gama.*for loss 'focal'"):
        load_train_config(None, ["loss.focal.gama=2"])
    with pytest.raises(ConfigError, match="did you mean 'hnc'"):
        load_train_config(None, ["loss.name=hcn"])


def test_unknown_dataset_and_arch_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'cifar11'.*valid:.*cifar10"):
        load_train_config(None, ["data.name=cifar11"])
    with pytest.raises(ConfigError, match="unknown architecture 'resnet99'"):
        load_train_config(None, ["model.arch=resnet99"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_train_config(None, ["loss.name=hnc", "loss.hnc.weight=0.1", "seed=3"])
    path = _write(tmp_path, dump_yaml(config_to_dict(config)))
    assert load_train_config(path) == config


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_train_config(path)


def test_the_eval_digest_is_what_runs_the_resolved_backend_of_each_attack() -> None:
    default = EvalConfig(attacks=["pgd", "fgsm"])
    chosen = list(default.jobs()[0])
    assert [(attack.name, backend) for attack, backend in chosen] == [("pgd", "native"), ("fgsm", "torchattacks")]
    assert EvalConfig(attacks=["pgd"]).digest() == EvalConfig(attacks=["pgd"], backends=["native"]).digest()
    assert EvalConfig(attacks=["pgd"]).digest() != EvalConfig(attacks=["pgd"], backends=["torchattacks"]).digest()
    assert EvalConfig(attacks=["pgd"], device="cpu").digest() == EvalConfig(attacks=["pgd"]).digest()
    assert EvalConfig(attacks=["pgd"], n=10).digest() != EvalConfig(attacks=["pgd"]).digest()
