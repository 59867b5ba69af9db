"""Negative-CAM statistics inside evaluate: computed from the same forward pass, on the
right examples, without changing any robustness figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustcam.cam import (
    STAT_NAMES,
    TOP1_PROTOCOLS,
    localization_iou,
    max_box_accuracy,
    maxboxacc_ious,
    negative_cam_stats,
)
from robustcam.data import ImageDataset, TensorImageDataset, load_dataset
from robustcam.evaluate import EvalResult, evaluate, select_samples, write_eval
from robustcam.layout import EVAL_COMPLETE, MAXBOXACC_FILE
from robustcam.models import CAMClassifier
from robustcam.report import load_evaluation, model_table

EPS = ["2/255", "8/255"]


@pytest.fixture(scope="module")
def with_cams(digits_model: CAMClassifier, digits_test: ImageDataset, tmp_path_factory: pytest.TempPathFactory):
    adv_dir = tmp_path_factory.mktemp("adv")
    result = evaluate(digits_model, digits_test, ["pgd"], eps=EPS, n=64, seed=3, sanity=False, adv_dir=adv_dir)
    return result, adv_dir


def test_cam_statistics_do_not_change_robustness(
    with_cams: tuple, digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    result, _ = with_cams
    plain = evaluate(digits_model, digits_test, ["pgd"], eps=EPS, n=64, seed=3, sanity=False, cam_stats=False)
    shared = list(plain.per_sample.columns)
    assert not any(c.startswith(("clean_neg", "adv_neg")) for c in shared)
    pd.testing.assert_frame_equal(result.per_sample[shared], plain.per_sample[shared])


def test_clean_statistics_equal_the_pure_function(
    with_cams: tuple, digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    result, _ = with_cams
    assert isinstance(digits_test, TensorImageDataset)
    positions = select_samples(len(digits_test), 64, 3)
    images, labels = digits_test.batch(positions), digits_test.targets[positions]
    with torch.no_grad():
        expected = negative_cam_stats(digits_model.forward_cams(images).cams, labels)
    first = result.per_sample[result.per_sample["eps"] == result.per_sample["eps"].min()]
    for name in STAT_NAMES:
        torch.testing.assert_close(
            torch.tensor(first[f"clean_{name}"].to_numpy(), dtype=torch.float32), expected[name], rtol=1e-5, atol=1e-5
        )


def test_adversarial_statistics_are_of_the_recorded_example(
    with_cams: tuple, digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    result, adv_dir = with_cams
    assert isinstance(digits_test, TensorImageDataset)
    records = {(row.index, round(row.eps * 255)): row for row in result.per_sample.itertuples()}
    checked = 0
    for folder in sorted(Path(adv_dir).iterdir()):
        eps_255 = 2 if "2_255" in folder.name else 8
        for file in folder.glob("*.pt"):
            saved = torch.load(file, weights_only=True)
            indices, adversarial = saved["indices"], saved["images"]
            with torch.no_grad():
                output = digits_model.forward_cams(adversarial)
                clean = digits_model.forward_cams(digits_test.batch(indices))
            labels = digits_test.targets[indices]
            stats = negative_cam_stats(output.cams, labels)
            pred = output.logits.argmax(1)
            gain = output.cams.flatten(2).amax(2).gather(1, pred[:, None]) - clean.cams.flatten(2).amax(2).gather(
                1, pred[:, None]
            )
            for k, index in enumerate(indices.tolist()):
                row = records[(index, eps_255)]
                if not row.attacked:
                    continue  # an inherited row reports the example of the smaller eps
                assert row.adv_pred == int(pred[k])
                assert row.adv_neg_peak_max == pytest.approx(float(stats["neg_peak_max"][k]), rel=1e-4, abs=1e-4)
                assert row.adv_neg_homogeneity == pytest.approx(float(stats["neg_homogeneity"][k]), rel=1e-4, abs=1e-4)
                assert row.adv_peak_gain == pytest.approx(float(gain[k]), rel=1e-4, abs=1e-4)
                checked += 1
    assert checked > 0


def test_clean_errors_and_unattacked_rows_report_the_clean_example(with_cams: tuple) -> None:
    result, _ = with_cams
    rows = result.per_sample[~result.per_sample["clean_correct"]]
    for name in STAT_NAMES:
        assert (rows[f"adv_{name}"] == rows[f"clean_{name}"]).all()
    assert (rows["adv_peak_gain"] == 0).all() and (rows["true_peak_shift"] == 0).all()


def test_examples_hold_clean_and_adversarial_cams(with_cams: tuple, tmp_path: Path) -> None:
    result, _ = with_cams
    examples = result.examples
    assert examples is not None
    assert examples["images"].shape[0] == 8 and examples["cams"].shape[:2] == (8, 10)
    (key,) = examples["adv"]
    assert key == "pgd/native/8/255"  # pgd's default backend
    out = write_eval(result, tmp_path)
    loaded = torch.load(out / "examples.pt", weights_only=True)
    assert torch.equal(loaded["adv"][key]["images"], examples["adv"][key]["images"])


SCENE_EPS = ["2/255", "4/255"]
TOP1 = TOP1_PROTOCOLS  # cvpr2016, minmax


@pytest.fixture(scope="module")
def scenes() -> TensorImageDataset:
    dataset = load_dataset("digits_scene", "test", canvas=32, digit_size=(14, 24), distractor=False)
    assert isinstance(dataset, TensorImageDataset) and dataset.boxes is not None
    return dataset


@pytest.fixture(scope="module")
def scene_eval(
    digits_model: CAMClassifier, scenes: TensorImageDataset, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EvalResult, Path]:
    result = evaluate(digits_model, scenes, ["fgsm"], eps=SCENE_EPS, n=48, seed=1, sanity=False)
    return result, write_eval(result, tmp_path_factory.mktemp("scene_eval"))


def test_localization_columns_name_their_protocol(scene_eval: tuple[EvalResult, Path]) -> None:
    result, out = scene_eval
    columns = set(result.per_sample.columns)
    assert {f"{side}_loc_iou_{p}" for side in ("clean", "adv") for p in TOP1} <= columns
    assert {"clean_loc_example", "adv_loc_example"} <= columns and "clean_loc_iou" not in columns
    ious = result.per_sample[[f"{side}_loc_iou_{p}" for side in ("clean", "adv") for p in TOP1]]
    assert ((ious >= 0) & (ious <= 1)).all().all()
    localization = result.meta["cam_stats"]["localization_protocols"]
    assert result.meta["cam_stats"]["localization"] is True and localization["head_bias_removed"] is True
    assert localization["protocols"] == ["cvpr2016", "minmax", "maxboxacc_v2"]
    saved = pd.read_csv(out / MAXBOXACC_FILE)
    assert list(saved.columns[:3]) == ["example", "iou_at_0", "iou_at_0.01"] and saved.shape[1] == 101
    pd.testing.assert_frame_equal(saved, result.maxboxacc, check_exact=True)


def test_clean_localization_equals_the_pure_functions(
    scene_eval: tuple[EvalResult, Path], digits_model: CAMClassifier, scenes: TensorImageDataset
) -> None:
    result, _ = scene_eval
    positions = select_samples(len(scenes), 48, 1)
    assert scenes.boxes is not None
    images, labels, boxes = scenes.batch(positions), scenes.targets[positions], scenes.boxes[positions]
    with torch.no_grad():
        output = digits_model.forward_cams(images)
    pred, size = output.logits.argmax(1), (images.shape[-2], images.shape[-1])
    first = result.per_sample.drop_duplicates("index")
    for protocol in TOP1:
        expected = localization_iou(output.cams, pred, boxes, size, head_bias=digits_model.head.bias, protocol=protocol)
        np.testing.assert_allclose(first[f"clean_loc_iou_{protocol}"].to_numpy(), expected.numpy(), atol=1e-12)
    table = result.maxboxacc.set_index("example")
    recorded = table.loc[first["clean_loc_example"].to_numpy()].to_numpy()
    np.testing.assert_allclose(recorded, maxboxacc_ious(output.cams, labels, boxes, size).numpy(), atol=1e-12)


def test_rows_that_report_an_earlier_example_point_at_its_thresholds(scene_eval: tuple[EvalResult, Path]) -> None:
    result, _ = scene_eval
    rows = result.per_sample
    errors = rows[~rows["clean_correct"]]
    assert (errors["adv_loc_example"] == errors["clean_loc_example"]).all()
    small, large = (rows[rows["eps"] == rows["eps"].min()], rows[rows["eps"] == rows["eps"].max()])
    inherited = large[large["clean_correct"] & ~large["attacked"]].set_index("index")  # broken at 2/255
    assert len(inherited)
    earlier = small.set_index("index").loc[inherited.index]
    assert (inherited["adv_loc_example"] == earlier["adv_loc_example"]).all()
    assert (inherited["adv_loc_iou_cvpr2016"] == earlier["adv_loc_iou_cvpr2016"]).all()
    assert result.maxboxacc["example"].is_unique and len(result.maxboxacc) == 48 + int(rows["attacked"].sum())


def _top1(correct: pd.Series, iou: pd.Series) -> float:
    return float((correct.to_numpy(dtype=bool) & (iou.to_numpy() >= 0.5)).mean())


def test_report_localization_recomputes_from_the_saved_files(scene_eval: tuple[EvalResult, Path]) -> None:
    _, out = scene_eval
    (row,) = model_table([load_evaluation(out)]).to_dict("records")
    per_sample = pd.read_csv(out / "per_sample.csv")
    table = pd.read_csv(out / MAXBOXACC_FILE).set_index("example")
    thresholds = np.arange(0, 1, 0.01)
    clean = per_sample.drop_duplicates("index")
    adversarial = per_sample[per_sample["eps"] == per_sample["eps"].max()]  # the reference: fgsm at 4/255
    for side, rows, correct in (
        ("clean", clean, clean["clean_correct"]),
        ("adv", adversarial, adversarial["adv_pred"] == adversarial["label"]),
    ):
        for protocol in TOP1:
            assert row[f"{side}_loc_acc_{protocol}"] == _top1(correct, rows[f"{side}_loc_iou_{protocol}"])
        ious = table.loc[rows[f"{side}_loc_example"].to_numpy()].to_numpy()
        assert row[f"{side}_maxboxacc_v2"] == max_box_accuracy(ious, thresholds).v2
    assert 0 <= row["clean_maxboxacc_v2"] <= 1


def test_records_before_protocols_read_as_minmax(scene_eval: tuple[EvalResult, Path], tmp_path: Path) -> None:
    _, out = scene_eval
    per_sample = pd.read_csv(out / "per_sample.csv")
    named = [c for c in per_sample.columns if "_loc_" in c]
    old = per_sample.drop(columns=named).assign(
        clean_loc_iou=per_sample["clean_loc_iou_minmax"], adv_loc_iou=per_sample["adv_loc_iou_minmax"]
    )
    old.to_csv(tmp_path / "per_sample.csv", index=False)
    (tmp_path / EVAL_COMPLETE).write_text("{}")  # a finished evaluation of an earlier version
    (now,) = model_table([load_evaluation(out)]).to_dict("records")
    (before,) = model_table([load_evaluation(tmp_path)]).to_dict("records")
    localization = {k for k in before if "loc_" in k or "maxboxacc" in k}
    assert localization == {"clean_loc_acc_minmax", "adv_loc_acc_minmax"}
    assert all(before[k] == now[k] for k in localization)
