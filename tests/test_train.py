"""Training: run directory contents, determinism, exact resume, label override, NaN stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import robustcam.train as train_module
from robustcam.checkpoint import load_checkpoint
from robustcam.config import TrainConfig, load_train_config
from robustcam.data import load_dataset
from robustcam.errors import NonFiniteLossError
from robustcam.losses import Loss, LossResult
from robustcam.models import ModelOutput
from robustcam.train import (
    TrainProgress,
    accuracy_and_loss,
    augment_batch,
    lr_factor,
    train,
)

FAST = ["model.options.width=4", "batch_size=128", "epochs=2"]


def _config(*overrides: str) -> TrainConfig:
    return load_train_config(None, [*FAST, *overrides])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    config = _config("loss.name=hnc", "loss.hnc.k=3")
    out = tmp_path_factory.mktemp("runs") / "hnc"
    train(config, out)
    return config, out


def test_a_run_directory_holds_model_config_log_and_marker(finished_run: tuple[TrainConfig, Path]) -> None:
    config, out = finished_run
    # and the lock file, which stays (robustcam.io.directory_lock); nothing else, no temporary file
    assert {p.name for p in out.iterdir()} == {"model.pt", "config.yaml", "train_log.csv", "complete.json", ".lock"}
    log = pd.read_csv(out / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2]
    assert {"loss", "ce", "hnc", "train_acc", "test_acc", "test_loss", "lr", "images_per_s"} <= set(log.columns)
    assert load_train_config(out / "config.yaml") == config


def test_checkpoint_metrics_recompute_from_the_saved_model(finished_run: tuple[TrainConfig, Path]) -> None:
    _, out = finished_run
    model, meta = load_checkpoint(out / "model.pt")
    test_set = load_dataset("digits", "test")
    accuracy, loss = accuracy_and_loss(model, test_set, batch_size=100, device=torch.device("cpu"))
    assert meta["metrics"]["test_acc"] == pytest.approx(accuracy, abs=1e-12)
    assert meta["metrics"]["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert meta["loss"] == {"name": "hnc", "kind": "kd", "k": 3, "temperature": 1.0, "weight": 0.06}
    assert meta["dataset"]["name"] == "digits" and meta["seed"] == 0
    marker = json.loads((out / "complete.json").read_text())
    assert marker["metrics"]["test_acc"] == meta["metrics"]["test_acc"]


def test_a_finished_run_is_reused_without_training(finished_run: tuple[TrainConfig, Path]) -> None:
    config, out = finished_run

    class Counter(TrainProgress):
        steps = 0

        def on_step(self, *, epoch: int, step: int) -> None:
            self.steps += 1

    counter = Counter()
    result = train(config, out, progress=counter)
    assert counter.steps == 0 and result.resumed_from_epoch == config.epochs


def test_same_seed_same_weights_and_another_seed_differs(tmp_path: Path) -> None:
    config = _config("epochs=1")
    first = train(config, tmp_path / "a").model.state_dict()
    second = train(config, tmp_path / "b").model.state_dict()
    other = train(_config("epochs=1", "seed=1"), tmp_path / "c").model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_hnc_with_weight_zero_trains_exactly_the_cross_entropy_model(tmp_path: Path) -> None:
    # the dose-response sweep (configs/hnc_dose_digits.yaml) uses weight 0 as its control: it is
    # only a control if it is the ce model of the same seed, bit for bit
    ce = train(_config("loss.name=ce"), tmp_path / "ce").model.state_dict()
    hnc_config = _config("loss.name=hnc", "loss.hnc.weight=0")
    hnc = train(hnc_config, tmp_path / "hnc0").model.state_dict()
    assert ce.keys() == hnc.keys()
    different = [k for k in ce if not torch.equal(ce[k], hnc[k])]
    assert not different, f"hnc weight 0 differs from ce in {different}"
    log = pd.read_csv(tmp_path / "hnc0" / "train_log.csv")
    assert (log["hnc"] > 0).all(), "the unweighted hnc term is still logged at weight 0"


class _StopAt(TrainProgress):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_step(self, *, epoch: int, step: int) -> None:
        if epoch == self.epoch and step == 3:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    config = _config("epochs=3", "loss.name=cam_loss")
    reference = train(config, tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=_StopAt(epoch=3))
    assert (tmp_path / "resumed" / "train_state.pt").is_file()
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert len(pd.read_csv(tmp_path / "resumed" / "train_log.csv")) == 2
    resumed = train(config, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 2
    ref_state, res_state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)
    columns = ["epoch", "loss", "train_acc", "test_acc"]
    pd.testing.assert_frame_equal(reference.log[columns], resumed.log[columns])


def test_resuming_with_another_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(_config("epochs=2"), tmp_path / "run", progress=_StopAt(epoch=2))
    with pytest.raises(Exception, match="different config"):
        train(_config("epochs=2", "seed=5"), tmp_path / "run")


def test_label_override_is_what_training_fits_and_test_labels_stay_clean(tmp_path: Path) -> None:
    clean = load_dataset("digits", "train").targets
    shifted = (clean + 1) % 10  # every training label wrong, consistently
    result = train(_config("epochs=4", "model.options.width=16"), tmp_path / "shifted", train_labels=shifted)
    metrics = result.meta["metrics"]
    assert metrics["train_acc"] > 0.8, "train accuracy is measured against the override labels"
    assert metrics["test_acc"] < 0.1, "the model learnt the shifted labels; clean test labels expose it"


class _NaNLoss(Loss):
    name = "nan"

    def __call__(self, output: ModelOutput, target: torch.Tensor) -> LossResult:
        total = output.logits.sum() * float("nan")
        return LossResult(total, {"nan": total.detach()})


def test_a_nan_loss_stops_training_with_a_clear_message(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(train_module, "build_loss", lambda name, **params: _NaNLoss())
    with pytest.raises(NonFiniteLossError, match="loss became NaN/inf in epoch 1.*lower the learning rate"):
        train(_config("epochs=1"), tmp_path / "nan")


def test_augment_translates_without_changing_content() -> None:
    image = torch.zeros(8, 1, 16, 16)
    image[:, :, 8, 8] = 1.0
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(image, "crop", generator, padding=2)
    assert out.shape == image.shape
    positions = out[:, 0].flatten(1).argmax(1)
    rows, cols = positions // 16, positions % 16
    assert bool(((rows - 8).abs() <= 2).all() and ((cols - 8).abs() <= 2).all())
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(8)), "the bright pixel is moved, never lost"
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 1, "different samples get different shifts"
    flipped = augment_batch(image, "crop_flip", torch.Generator().manual_seed(0), padding=1)
    assert torch.equal(flipped.sum(dim=(1, 2, 3)), torch.ones(8))


def test_learning_rate_schedules() -> None:
    cosine = _config("epochs=10", "schedule.warmup_epochs=2")
    assert lr_factor(cosine, 0, 5) == pytest.approx(1 / 10)
    assert lr_factor(cosine, 9, 5) == pytest.approx(1.0)
    assert lr_factor(cosine, 10, 5) == pytest.approx(1.0)
    assert lr_factor(cosine, 49, 5) < 0.01
    step = _config("epochs=10", "schedule.name=step", "schedule.milestones=[3, 6]", "schedule.gamma=0.5")
    assert [lr_factor(step, e * 5, 5) for e in (0, 3, 6, 9)] == [1.0, 0.5, 0.25, 0.25]
