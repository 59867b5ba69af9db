"""Negative-CAM statistics inside evaluate: computed from the same forward pass, on the
right examples, without changing any robustness figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from robustcam.cam import STAT_NAMES, negative_cam_stats
from robustcam.data import ImageDataset, TensorImageDataset, load_dataset
from robustcam.evaluate import evaluate, select_samples, write_eval
from robustcam.models import CAMClassifier

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
    assert key == "pgd/torchattacks/8/255"
    out = write_eval(result, tmp_path)
    loaded = torch.load(out / "examples.pt", weights_only=True)
    assert torch.equal(loaded["adv"][key]["images"], examples["adv"][key]["images"])


def test_localization_iou_on_a_dataset_with_boxes(digits_model: CAMClassifier) -> None:
    scenes = load_dataset("digits_scene", "test", canvas=32, digit_size=(14, 24), distractor=False)
    result = evaluate(digits_model, scenes, ["fgsm"], eps=["4/255"], n=32, sanity=False)
    ious = result.per_sample[["clean_loc_iou", "adv_loc_iou"]]
    assert ((ious >= 0) & (ious <= 1)).all().all()
    assert result.meta["cam_stats"]["localization"] is True
