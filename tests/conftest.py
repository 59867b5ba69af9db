"""Shared fixtures: tiny seeded models and data, CPU only."""

from __future__ import annotations

import pytest
import torch

from robustcam.config import load_train_config
from robustcam.data import ImageDataset, load_dataset
from robustcam.models import CAMClassifier, build_model
from robustcam.train import train

# A few seconds on two CPU cores and > 90% test accuracy. AdamW because the default
# SGD recipe needs more steps than 3-4 epochs of batch 64-128 give it on 1,437 images.
DIGITS_MODEL_CONFIG = (
    "model.options.width=8",
    "epochs=3",
    "batch_size=64",
    "optimizer.name=adamw",
    "optimizer.lr=0.01",
)


@pytest.fixture(scope="session")
def tiny_model() -> CAMClassifier:
    """An untrained 10-class smallcnn (width 4) on 1x32x32 inputs, seeded."""
    torch.manual_seed(0)
    return build_model("smallcnn", 10, 1, mean=[0.3], std=[0.3], width=4).eval()


@pytest.fixture(scope="session")
def digits_test() -> ImageDataset:
    """The digits test split: 360 images, 1x32x32, 10 classes."""
    return load_dataset("digits", "test")


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> CAMClassifier:
    """A small cross-entropy smallcnn trained on digits (> 90% test accuracy), in eval mode.

    Shared by the whole session: tests must not train or modify it.
    """
    result = train(load_train_config(None, DIGITS_MODEL_CONFIG), tmp_path_factory.mktemp("digits_model"))
    assert result.meta["metrics"]["test_acc"] > 0.9, result.meta["metrics"]
    return result.model.eval()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
