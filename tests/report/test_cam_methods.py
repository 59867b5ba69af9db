"""The report says when it pools exact CAMs and Grad-CAM maps in one model-level correlation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from report.synthetic import make_records, write_folder

from robustcam.cam import STAT_NAMES
from robustcam.report import load_evaluations
from robustcam.report.document import build_report, pooled_methods_sentences


def test_records_say_their_cam_method_and_pooling_two_methods_is_said(tmp_path: Path) -> None:
    stats = {name: np.linspace(0.0, 1.0, 20) for name in STAT_NAMES}
    exact = make_records(clean_stats=stats)
    gradcam = make_records(clean_stats=stats)
    gradcam["cam_method"] = "gradcam"
    write_folder(tmp_path / "resnet", exact)  # written before the column: exact CAMs
    write_folder(tmp_path / "vit", gradcam, loss="focal")
    evaluations = load_evaluations(tmp_path)
    assert {e.name: e.cam_method for e in evaluations} == {"resnet": "exact", "vit": "gradcam"}
    (sentence,) = pooled_methods_sentences(evaluations)
    assert "exact: resnet; gradcam: vit" in sentence and "pools two methods" in sentence
    assert pooled_methods_sentences([e for e in evaluations if e.name == "vit"]) == []
    report = build_report(evaluations, bootstrap=100, cv_repeats=1)
    assert set(report.correlations["cam_methods"]) == {"exact+gradcam"} and "pools two methods" in report.reading
