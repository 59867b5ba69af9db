from __future__ import annotations

from pathlib import Path

import pytest

from robustcam.config import (
    TrainConfig,
    config_to_dict,
    dump_yaml,
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


def test_override_errors_name_the_override() -> None:
    with pytest.raises(ConfigError, match=r"--set epochs: epochs: Input should be greater than or equal to 1"):
        load_train_config(None, ["epochs=0"])


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
