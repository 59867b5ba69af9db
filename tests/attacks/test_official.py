"""The authors' AutoAttack through robustcam: the same examples as calling their code directly,
their checks captured as notes, and a one-line error when the package is missing."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
import torch

from robustcam.attacks import build_attack
from robustcam.attacks.official import AutoAttackUnavailableError, run_autoattack
from robustcam.data import ImageDataset
from robustcam.data.batches import iterate_batches
from robustcam.errors import ParameterError
from robustcam.evaluate import evaluate
from robustcam.evaluate.sampling import attack_seed
from robustcam.models import CAMClassifier

pyautoattack = pytest.importorskip("pyautoattack")


def _batch(dataset: ImageDataset, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, _ = next(iterate_batches(dataset, size))
    return images, labels


@pytest.mark.parametrize("part", ["apgd-ce", pytest.param("apgd-t", marks=pytest.mark.slow)])
def test_a_part_gives_exactly_what_the_authors_code_gives(
    digits_model: CAMClassifier, digits_test: ImageDataset, part: str
) -> None:
    images, labels = _batch(digits_test, 3)
    ours = run_autoattack(digits_model, images, labels, eps=8 / 255, parts=[part], seed=3, num_classes=10)
    theirs = pyautoattack.AutoAttack(digits_model, norm="Linf", eps=8 / 255, version="standard", seed=3)
    theirs.attacks_to_run = [part]
    expected, _ = theirs.run_standard_evaluation(images, labels, batch_size=len(images))
    assert torch.equal(ours.adversarial, expected)
    assert float((ours.adversarial - images).abs().max()) <= 8 / 255 + 1e-6


def test_the_authors_checks_become_notes(digits_model: CAMClassifier, digits_test: ImageDataset) -> None:
    images, labels = _batch(digits_test)
    softmax = torch.nn.Sequential(digits_model, torch.nn.Softmax(dim=1))  # what their range check looks for
    run = run_autoattack(softmax, images, labels, eps=8 / 255, parts=["apgd-ce"], seed=0, num_classes=10)
    assert any("probability distribution" in note for note in run.notes), run.notes


def test_fewer_than_ten_classes_use_fewer_target_classes_and_say_so() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    images = torch.rand(3, 1, 4, 4)
    run = run_autoattack(model, images, torch.tensor([0, 1, 2]), eps=0.5, parts=["apgd-t"], seed=0, num_classes=4)
    assert "4 classes: the targeted attacks use 3 target classes instead of 9" in run.notes


def test_unknown_parts_and_a_missing_package_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    images, labels = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(ParameterError, match="unknown AutoAttack part.*fab; valid: apgd-ce, apgd-t, fab-t, square"):
        run_autoattack(model, images, labels, eps=0.1, parts=["fab"], num_classes=10)
    real_import = builtins.__import__

    def no_pyautoattack(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pyautoattack":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyautoattack)
    with pytest.raises(AutoAttackUnavailableError, match=r'pip install -e "\.\[autoattack\]"'):
        run_autoattack(model, images, labels, eps=0.1, num_classes=10)


def test_through_the_evaluator_the_records_are_the_authors_examples(
    digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    """``apgd-ce`` in an evaluation runs on the ``autoattack`` backend by default, on the clean-correct
    samples only, and each sample's verdict is the authors' own on that sample."""
    result = evaluate(digits_model, digits_test, ["apgd-ce"], eps=["8/255"], eps_l2=None, n=24, sanity=False)
    rows = result.per_sample[result.per_sample["attack"] == "apgd-ce"]
    assert set(rows["backend"]) == {"autoattack"} and result.meta["backends"] == ["autoattack"]
    positions = torch.as_tensor(rows["index"].to_numpy().copy())
    images = torch.stack([digits_test[int(i)][0] for i in positions])
    labels = torch.as_tensor(rows["label"].to_numpy().copy())
    correct = torch.as_tensor(rows["clean_correct"].to_numpy(dtype=bool).copy())
    seed = attack_seed(0, "apgd-ce", "autoattack", 0, 0)  # the evaluator's seed of the one batch's run
    run = run_autoattack(
        digits_model, images[correct], labels[correct], eps=8 / 255, parts=["apgd-ce"], seed=seed, num_classes=10
    )
    with torch.no_grad():
        broken_by_them = digits_model(run.adversarial).argmax(1) != labels[correct]
    ours_broken = torch.as_tensor(rows["success"].to_numpy(dtype=bool).copy())[correct]
    assert broken_by_them.any(), "8/255 should break some digits samples"
    assert torch.equal(ours_broken, broken_by_them)
    assert not torch.as_tensor(rows["success"].to_numpy(dtype=bool).copy())[~correct].any(), (
        "clean errors are not attacked"
    )
    summary = result.summary[result.summary["attack"] == "apgd-ce"].iloc[0]
    assert summary["robust_acc"] <= summary["clean_acc"]


def test_default_backends_and_the_torchattacks_version_under_its_own_name() -> None:
    from robustcam.attacks import attack_class

    assert attack_class("autoattack").default_backend() == "autoattack"
    assert attack_class("autoattack_l2").norm == "L2"
    assert attack_class("autoattack-ta").default_backend() == "torchattacks"
    assert not build_attack("autoattack").supports("torchattacks")
    assert attack_class("pgd").default_backend() == "native"
    assert attack_class("fgsm").default_backend() == "torchattacks"
