"""Training on noisy labels: the config's noise section, clean test labels, memorisation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from robustcam.config import load_train_config
from robustcam.data import load_dataset
from robustcam.errors import ConfigError
from robustcam.noise import corrupt_labels
from robustcam.train import accuracy_and_loss, train

FAST = ["model.options.width=8", "batch_size=128", "epochs=2"]


def test_noisy_training_records_the_noise_and_the_memorisation(tmp_path: Path) -> None:
    config = load_train_config(None, [*FAST, "noise.kind=symmetric", "noise.rate=0.4"])
    result = train(config, tmp_path / "noisy")
    noise = result.meta["noise"]
    assert noise["kind"] == "symmetric" and noise["rate"] == 0.4 and noise["seed"] == 0
    clean = load_dataset("digits", "train").targets
    expected = corrupt_labels(clean, "symmetric", 0.4, num_classes=10, seed=0)
    assert noise["realized_rate"] == pytest.approx(expected.realized_rate)
    assert abs(noise["realized_rate"] - 0.4) < 0.01  # exact sampling: round(0.4 n_c) flips per class
    log = pd.read_csv(tmp_path / "noisy" / "train_log.csv")
    assert log["memorization"].between(0, 1).all()
    assert result.meta["metrics"]["memorization"] == log["memorization"].iloc[-1]
    # test labels stay clean: the recorded test accuracy is against the clean test set
    test_acc, _ = accuracy_and_loss(
        result.model, load_dataset("digits", "test"), batch_size=512, device=torch.device("cpu")
    )
    assert result.meta["metrics"]["test_acc"] == pytest.approx(test_acc)


def test_memorisation_grows_when_the_model_fits_the_noise(tmp_path: Path) -> None:
    config = load_train_config(
        None, ["model.options.width=16", "epochs=6", "noise.kind=pairflip", "noise.rate=0.45", "augment=none"]
    )
    log = train(config, tmp_path / "pairflip").log
    assert log["memorization"].iloc[-1] > log["memorization"].iloc[0]


def test_noise_in_the_config_and_a_label_override_together_are_refused(tmp_path: Path) -> None:
    config = load_train_config(None, [*FAST, "noise.kind=symmetric", "noise.rate=0.2"])
    with pytest.raises(ValueError, match="either in the config"):
        train(config, tmp_path / "both", train_labels=load_dataset("digits", "train").targets)


def test_bad_noise_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'symmetric'"):
        load_train_config(None, ["noise.kind=symetric", "noise.rate=0.2"])
    with pytest.raises(ConfigError, match=r"rate must be in \[0, 1\], got 1.5"):
        load_train_config(None, ["noise.kind=symmetric", "noise.rate=1.5"])
    with pytest.raises(ConfigError, match="rate is required"):
        load_train_config(None, ["noise.kind=asymmetric"])
