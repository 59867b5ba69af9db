"""Shared fixtures: tiny seeded models and data, CPU only."""

from __future__ import annotations

import pytest
import torch

from robustcam.models import CAMClassifier, build_model


@pytest.fixture(scope="session")
def tiny_model() -> CAMClassifier:
    """An untrained 10-class smallcnn (width 4) on 1x32x32 inputs, seeded."""
    torch.manual_seed(0)
    return build_model("smallcnn", 10, 1, mean=[0.3], std=[0.3], width=4).eval()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
