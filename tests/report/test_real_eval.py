"""The report on folders written by the real ``evaluate`` + ``write_eval``, so the schema stays in sync."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from robustcam.attacks import build_attack
from robustcam.data import ImageDataset
from robustcam.evaluate import evaluate, write_eval
from robustcam.models import CAMClassifier
from robustcam.report import load_evaluations, model_table, summary_mismatches, write_report


@pytest.fixture(scope="module")
def real_eval(tiny_model: CAMClassifier, digits_test: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FGSM (Linf) and a short C&W (L2) on the untrained tiny model, written as ``run/eval``."""
    result = evaluate(
        tiny_model,
        digits_test,
        ["fgsm", build_attack("cw", steps=5)],
        eps=["2/255", "8/255"],
        eps_l2=["0.5"],
        n=48,
        batch_size=48,
        seed=0,
        sanity=False,
    )
    root = tmp_path_factory.mktemp("real")
    meta = {"arch": "smallcnn", "loss": {"name": "ce"}, "seed": 0}
    write_eval(result, root / "tiny" / "eval", config={"checkpoint": "tiny/model.pt", "checkpoint_meta": meta})
    return root


def test_a_real_evaluation_loads_and_recomputes_exactly(real_eval: Path) -> None:
    (evaluation,) = load_evaluations(real_eval)
    assert (evaluation.name, evaluation.loss, evaluation.noise) == ("tiny", "ce", "clean")
    assert summary_mismatches(evaluation) == []
    table = model_table([evaluation])
    summary = evaluation.summary
    checks = (("fgsm@8/255", "fgsm", "Linf"), ("cw@0.5", "cw", "L2"), ("worst@8/255", "worst", "Linf"))
    for column, attack, norm in checks:
        stored = summary[(summary["attack"] == attack) & (summary["norm"] == norm)].sort_values("eps").tail(1)
        assert table[column].item() == stored["robust_acc"].item()
    assert table["clean_acc"].item() == summary.loc[summary["attack"] == "clean", "clean_acc"].item()
    assert "cw_mean_min_l2" in table.columns


def test_a_real_evaluation_gives_a_full_report(real_eval: Path, tmp_path: Path) -> None:
    files = write_report(load_evaluations(real_eval / "tiny"), tmp_path, bootstrap=50, cv_repeats=2)
    assert files.markdown.is_file() and (tmp_path / "robust_accuracy_vs_eps.png").stat().st_size > 0
    models = pd.read_csv(files.models)
    assert models["name"].tolist() == ["tiny"]
    if files.report.evaluations[0].cam_statistics:  # once evaluate writes CAM columns
        assert "clean_neg_homogeneity" in models.columns
