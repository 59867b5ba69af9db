"""evaluate(): the attack matrix against independent references, the eps cascade, the
invariants of the per-sample records, validation of adversarial examples, sanity flags."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torchattacks
from torch import Tensor, nn

from robustcam.attacks import Attack, AttackNotSupportedError, build_attack, format_eps, parse_eps_list
from robustcam.attacks.backends import TorchattacksBackend
from robustcam.data import DatasetInfo, ImageDataset, TensorImageDataset
from robustcam.evaluate import (
    EvalResult,
    attack_seed,
    evaluate,
    sanity_flags,
    select_samples,
    summarize,
    write_eval,
)
from robustcam.models import CAMClassifier
from robustcam.registry import UnknownNameError

EPS = ["2/255", "4/255", "8/255"]
EPS_VALUES = parse_eps_list(EPS, norm="Linf")
N = 96
TIMING_COLUMNS = ["time_s", "images_per_s"]


def _checks(result: EvalResult) -> set[str]:
    return {flag.check for flag in result.flags}


def _rows(result: EvalResult, attack: str, backend: str = "torchattacks") -> pd.DataFrame:
    frame = result.per_sample
    return frame[(frame["attack"] == attack) & (frame["backend"] == backend)]


def _summary_rows(summary: pd.DataFrame, attack: str, backend: str = "torchattacks") -> pd.DataFrame:
    return summary[(summary["attack"] == attack) & (summary["backend"] == backend)].sort_values("eps")


def _as_tensor_dataset(dataset: ImageDataset) -> TensorImageDataset:
    assert isinstance(dataset, TensorImageDataset)
    return dataset


@pytest.fixture(scope="module")
def matrix(
    digits_model: CAMClassifier, digits_test: ImageDataset, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EvalResult, Path]:
    """FGSM and PGD on both backends at three eps, cascaded, two batches, examples saved."""
    adv_dir = tmp_path_factory.mktemp("adv")
    result = evaluate(
        digits_model,
        digits_test,
        ["fgsm", "pgd"],
        eps=EPS,
        backends=("torchattacks", "foolbox"),
        n=N,
        batch_size=64,
        seed=0,
        adv_dir=adv_dir,
    )
    return result, adv_dir


# --------------------------------------------------------------------------- independent references


def test_pgd_equals_torchattacks_called_directly_with_the_same_seed(
    digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    n, seed, eps = 64, 3, 8 / 255
    result = evaluate(
        digits_model,
        digits_test,
        ["pgd"],
        eps=["8/255"],
        n=n,
        batch_size=n,
        seed=seed,
        sanity=False,
        backends=["torchattacks"],
    )
    rows = result.per_sample

    dataset = _as_tensor_dataset(digits_test)
    positions = select_samples(len(dataset), n, seed)
    images, labels = dataset.batch(positions), dataset.targets[positions]
    with torch.no_grad():
        correct = digits_model(images).argmax(1) == labels
    assert rows["index"].tolist() == positions.tolist()
    assert rows["clean_correct"].tolist() == correct.tolist()

    def reference(attack_seed_value: int) -> tuple[Tensor, Tensor]:
        with torch.random.fork_rng():
            torch.manual_seed(attack_seed_value)
            runner = torchattacks.PGD(digits_model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)
            adversarial = runner(images[correct], labels[correct])
        with torch.no_grad():
            logits = digits_model(adversarial)
        return adversarial, logits

    adversarial, logits = reference(attack_seed(seed, "pgd", "torchattacks", 0, 0))
    attacked = rows[rows["attacked"]]
    assert attacked["index"].tolist() == positions[correct].tolist(), "exactly the clean-correct samples, in order"
    expected_success = (logits.argmax(1) != labels[correct]).numpy()
    assert 0 < expected_success.sum() < len(expected_success), "the comparison needs breaks and survivors"
    np.testing.assert_array_equal(attacked["success"].to_numpy(), expected_success)
    np.testing.assert_array_equal(attacked["adv_pred"].to_numpy(), logits.argmax(1).numpy())
    linf = (adversarial - images[correct]).flatten(1).abs().amax(1)
    np.testing.assert_allclose(attacked["linf"].to_numpy(), linf.numpy(), rtol=0, atol=1e-7)

    # the seed is what makes them equal: another seed starts elsewhere and ends elsewhere
    other_adversarial, _ = reference(attack_seed(seed, "pgd", "torchattacks", 0, 0) + 1)
    assert not torch.allclose(other_adversarial, adversarial)


def _linear_setup(eps: float) -> tuple[CAMClassifier, TensorImageDataset, dict[str, Tensor]]:
    """A CAMClassifier with identity features: logits = W mean_{x,y}(image) + b, linear in the pixels.

    For two classes the cross-entropy gradient w.r.t. a pixel of channel c is
    ``(1 - p_y) (W[y', c] - W[y, c]) / HW``, so FGSM moves every pixel of channel c by
    ``eps * sign(W[y', c] - W[y, c])`` and clips to [0, 1].
    """
    generator = torch.Generator().manual_seed(11)
    n, channels, size = 40, 3, 2
    head = nn.Linear(channels, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.5, -0.8, 0.6], [-0.7, 1.1, -0.9]]))
        head.bias.copy_(torch.tensor([0.05, -0.1]))
    model = CAMClassifier(nn.Identity(), head, in_channels=channels, mean=[0.0], std=[1.0]).eval()
    images = torch.rand(n, channels, size, size, generator=generator)
    weight, bias = head.weight.detach().double(), head.bias.detach().double()
    clean_logits = images.double().mean((2, 3)) @ weight.T + bias
    labels = clean_logits.argmax(1)
    labels[::4] = 1 - labels[::4]  # every fourth sample is a clean error: never attacked
    info = DatasetInfo("linear", 2, ("a", "b"), (0.0,) * channels, (1.0,) * channels, (channels, size, size))
    dataset = TensorImageDataset(images, labels, info)

    direction = torch.sign(weight[1 - labels] - weight[labels])  # (N, C): sign(w_y' - w_y)
    adversarial = (images.double() + eps * direction[:, :, None, None]).clamp(0.0, 1.0)
    logits = adversarial.mean((2, 3)) @ weight.T + bias
    true = logits.gather(1, labels[:, None]).squeeze(1)
    expected = {
        "clean_pred": clean_logits.argmax(1),
        "adv_pred": logits.argmax(1),
        "margin": true - logits.gather(1, (1 - labels)[:, None]).squeeze(1),
        "linf": (adversarial - images.double()).flatten(1).abs().amax(1),
        "l2": (adversarial - images.double()).flatten(1).norm(dim=1),
        "clipped": ((images.double() + eps * direction[:, :, None, None]) != adversarial).flatten(1).any(1),
    }
    return model, dataset, expected


def test_fgsm_on_a_linear_model_matches_the_closed_form() -> None:
    eps = 0.1
    model, dataset, expected = _linear_setup(eps)
    result = evaluate(model, dataset, ["fgsm"], eps=[eps], batch_size=64, sanity=False)
    rows = result.per_sample.sort_values("index")
    labels = dataset.targets
    correct = expected["clean_pred"] == labels
    assert rows["clean_correct"].tolist() == correct.tolist()

    attacked = rows[rows["attacked"]]
    mask = correct.numpy()
    assert attacked["index"].tolist() == np.flatnonzero(mask).tolist()
    np.testing.assert_array_equal(attacked["adv_pred"].to_numpy(), expected["adv_pred"][correct].numpy())
    np.testing.assert_allclose(attacked["margin"].to_numpy(), expected["margin"][correct].numpy(), atol=1e-5)
    np.testing.assert_allclose(attacked["linf"].to_numpy(), expected["linf"][correct].numpy(), atol=1e-6)
    np.testing.assert_allclose(attacked["l2"].to_numpy(), expected["l2"][correct].numpy(), atol=1e-5)
    unclipped = ~expected["clipped"][correct].numpy()
    assert unclipped.any() and (~unclipped).any(), "the setup needs clipped and unclipped samples"
    np.testing.assert_allclose(attacked["linf"].to_numpy()[unclipped], eps, atol=1e-6)
    flipped = (expected["adv_pred"] != labels)[correct].numpy()
    assert flipped.any() and (~flipped).any(), "the setup needs samples FGSM flips and samples it does not"
    np.testing.assert_array_equal(attacked["success"].to_numpy(), flipped)
    assert result.summary.set_index("attack").loc["fgsm", "robust_acc"] == pytest.approx(
        float((correct & (expected["adv_pred"] == labels)).double().mean())
    )

    clean_errors = rows[~rows["clean_correct"]]
    assert len(clean_errors) == int((~correct).sum())
    assert not clean_errors["attacked"].any() and not clean_errors["robust"].any()
    assert not clean_errors["success"].any(), "a clean error is not robust, but it is no attack success either"
    np.testing.assert_array_equal(clean_errors["adv_pred"].to_numpy(), expected["clean_pred"][~correct].numpy())


def test_torchattacks_and_foolbox_agree_on_the_trained_model(matrix: tuple[EvalResult, Path]) -> None:
    result, _ = matrix
    agreement = result.agreement
    assert len(agreement) == 2 * len(EPS_VALUES)
    assert set(agreement["attack"]) == {"fgsm", "pgd"} and sorted(set(agreement["eps"])) == EPS_VALUES
    assert (agreement["difference_points"].abs() <= 3).all(), agreement
    assert (agreement["agreement_rate"] >= 0.95).all(), agreement
    assert "backends_disagree" not in _checks(result)
    summary = result.summary
    assert set(zip(agreement["backend_a"], agreement["backend_b"])) == {("torchattacks", "foolbox")}
    for row in agreement.itertuples():
        for backend, side in (("torchattacks", "a"), ("foolbox", "b")):
            at = summary[
                (summary["attack"] == row.attack) & (summary["backend"] == backend) & (summary["eps"] == row.eps)
            ]
            assert float(at["robust_acc"].iloc[0]) == getattr(row, f"robust_acc_{side}")
    # the attacks do something: at 8/255 PGD breaks a good share of the clean-correct samples
    pgd = _summary_rows(summary, "pgd")
    assert float(pgd["robust_acc"].iloc[-1]) < float(pgd["clean_acc"].iloc[-1]) - 0.2


# --------------------------------------------------------------------------- cascade


def test_cascade_is_never_more_robust_than_independent_runs_and_attacks_fewer_samples(
    digits_model: CAMClassifier, digits_test: ImageDataset, matrix: tuple[EvalResult, Path]
) -> None:
    cascade, _ = matrix
    independent = evaluate(
        digits_model,
        digits_test,
        ["fgsm", "pgd"],
        eps=EPS,
        backends=("torchattacks", "foolbox"),  # the matrix's
        n=N,
        batch_size=64,
        seed=0,
        cascade=False,
        sanity=False,
    )
    one_sample = 1 / N
    for attack in ("fgsm", "pgd"):
        chained = _summary_rows(cascade.summary, attack)
        alone = _summary_rows(independent.summary, attack)
        robust_chained, robust_alone = chained["robust_acc"].to_numpy(), alone["robust_acc"].to_numpy()
        # the smallest eps attacks the same samples with the same seed in both modes
        assert robust_chained[0] == robust_alone[0]
        tolerance = 0.0 if attack == "fgsm" else one_sample + 1e-12
        assert (robust_chained <= robust_alone + tolerance).all(), (attack, robust_chained, robust_alone)

        attacked_chained, attacked_alone = chained["n_attacked"].to_numpy(), alone["n_attacked"].to_numpy()
        n_correct = round(float(alone["clean_acc"].iloc[0]) * N)
        assert (attacked_alone == n_correct).all(), "independent runs attack every clean-correct sample"
        assert attacked_chained[0] == n_correct
        # a cascaded eps attacks exactly the samples still robust at the previous one
        np.testing.assert_array_equal(attacked_chained[1:], np.round(robust_chained[:-1] * N).astype(int))
        assert (attacked_chained[1:] < attacked_alone[1:]).all()

    # FGSM is deterministic: the cascade is the running AND of independent robustness over eps
    chained_rows = _rows(cascade, "fgsm").pivot(index="index", columns="eps", values="robust")
    alone_rows = _rows(independent, "fgsm").pivot(index="index", columns="eps", values="robust")
    running = alone_rows[EPS_VALUES].cummin(axis=1)
    pd.testing.assert_frame_equal(chained_rows[EPS_VALUES], running)


# --------------------------------------------------------------------------- invariants


def test_summary_invariants(matrix: tuple[EvalResult, Path]) -> None:
    result, _ = matrix
    summary = result.summary
    assert (summary["robust_acc"] <= summary["clean_acc"] + 1e-12).all()
    clean = summary[summary["attack"] == "clean"]
    assert len(clean) == 1 and int(clean["n"].iloc[0]) == N
    assert float(clean["clean_acc"].iloc[0]) == pytest.approx(result.meta["clean_accuracy"])
    attacks = summary[~summary["attack"].isin(["clean", "worst"])]
    assert len(attacks) == 2 * 2 * len(EPS_VALUES)  # attack x backend x eps
    worst = summary[summary["attack"] == "worst"].set_index("eps")["robust_acc"]
    assert sorted(worst.index) == EPS_VALUES
    for row in attacks.itertuples():
        assert worst[row.eps] <= row.robust_acc
    # worst case is per sample: robust only if it survived every attack and backend
    per_sample = result.per_sample
    by_hand = per_sample.groupby(["eps", "index"])["robust"].all().groupby("eps").mean()
    np.testing.assert_array_equal(worst.sort_index().to_numpy(), by_hand.sort_index().to_numpy())


def test_worst_case_is_per_sample_not_the_minimum_of_accuracies() -> None:
    # four samples; fgsm breaks sample 0, pgd breaks sample 1, sample 3 is a clean error
    records = pd.DataFrame(
        {
            "index": [0, 1, 2, 3] * 2,
            "attack": ["fgsm"] * 4 + ["pgd"] * 4,
            "backend": "torchattacks",
            "norm": "Linf",
            "eps": 8 / 255,
            "clean_correct": [True, True, True, False] * 2,
            "success": [True, False, False, False, False, True, False, False],
            "attacked": [True, True, True, False] * 2,
            "valid": True,
            "l2": 0.0,
            "linf": [0.03, 0.0, 0.01, 0.0, 0.0, 0.02, 0.03, 0.0],
        }
    )
    records["robust"] = records["clean_correct"] & ~records["success"]
    summary = summarize(records).set_index("attack")
    assert summary.loc["fgsm", "robust_acc"] == summary.loc["pgd", "robust_acc"] == 0.5
    assert summary.loc["worst", "robust_acc"] == 0.25, "only sample 2 survives both"
    assert summary.loc["worst", "attack_success_rate"] == pytest.approx(2 / 3)
    assert summary.loc["fgsm", "median_norm"] == 0.03 and summary.loc["pgd", "median_norm"] == 0.02
    assert summary.loc["clean", "robust_acc"] == summary.loc["clean", "clean_acc"] == 0.75
    assert summary.loc["fgsm", "n_attacked"] == 3


def test_per_sample_invariants(matrix: tuple[EvalResult, Path]) -> None:
    result, _ = matrix
    rows = result.per_sample
    assert len(rows) == N * 2 * 2 * len(EPS_VALUES)
    assert not (rows["robust"] & ~rows["clean_correct"]).any(), "robust implies clean-correct"
    np.testing.assert_array_equal(rows["robust"], rows["clean_correct"] & ~rows["success"])
    assert not (rows["attacked"] & ~rows["clean_correct"]).any(), "clean errors are never attacked"
    assert not (rows["success"] & ~rows["valid"]).any()
    broken = rows[rows["success"]]
    assert (broken["adv_pred"] != broken["label"]).all()
    assert broken["source_eps"].isin(EPS_VALUES).all(), "a break records the eps that found it"
    assert (broken["source_eps"] <= broken["eps"]).all()
    assert rows.loc[~rows["success"], "source_eps"].isna().all()
    # cascade: broken at a smaller eps stays broken at every larger eps, with the same example
    for _, group in rows.groupby(["attack", "backend", "index"]):
        ordered = group.sort_values("eps")
        success = ordered["success"].to_numpy()
        assert (np.diff(success.astype(int)) >= 0).all(), ordered
        if success.any():
            first = int(np.argmax(success))
            later = ordered.iloc[first:]
            assert later["attacked"].iloc[1:].eq(False).all(), "a broken sample is not attacked again"
            assert later["linf"].nunique() == 1 and later["adv_pred"].nunique() == 1
    assert rows["success"].any() and (rows["clean_correct"] & ~rows["success"]).any()


def test_summary_recomputes_from_per_sample_records_in_memory_and_from_csv(
    matrix: tuple[EvalResult, Path], tmp_path: Path
) -> None:
    result, _ = matrix
    expected = result.summary.drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(summarize(result.per_sample), expected, check_exact=True)

    out = write_eval(result, tmp_path / "eval")
    assert {p.name for p in out.iterdir()} == {
        "per_sample.csv",
        "summary.csv",
        "summary.json",
        "examples.pt",
        "complete.json",
        ".lock",
    }
    reread = pd.read_csv(out / "per_sample.csv")
    assert len(reread) == len(result.per_sample) and list(reread.columns) == list(result.per_sample.columns)
    pd.testing.assert_frame_equal(summarize(reread), expected, check_exact=True, check_dtype=False)


# --------------------------------------------------------------------------- validation


def test_every_valid_example_is_inside_its_ball_and_its_prediction_is_the_models(
    digits_model: CAMClassifier, digits_test: ImageDataset, matrix: tuple[EvalResult, Path]
) -> None:
    result, adv_dir = matrix
    rows = result.per_sample
    assert rows["valid"].all() and (rows["violation"] == "").all()
    assert (rows["linf"] <= rows["eps"] + 1e-6).all()
    dataset = _as_tensor_dataset(digits_test)
    checked = 0
    for (attack, backend, eps), group in rows.groupby(["attack", "backend", "eps"]):
        folder = adv_dir / f"{attack}-{backend}-eps{format_eps(eps, 'Linf').replace('/', '_')}"
        saved = [torch.load(path, weights_only=True) for path in sorted(folder.glob("batch*.pt"))]
        indices = torch.cat([batch["indices"] for batch in saved])
        images = torch.cat([batch["images"] for batch in saved])
        attacked = group[group["attacked"]].set_index("index")
        assert indices.tolist() == attacked.index.tolist(), "one saved example per attacked sample"
        clean = dataset.batch(indices)
        assert float((images - clean).abs().max()) <= eps + 1e-6
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        with torch.no_grad():
            predictions = torch.cat([digits_model(batch["images"]).argmax(1) for batch in saved])
        np.testing.assert_array_equal(attacked["adv_pred"].to_numpy(), predictions.numpy())
        checked += len(indices)
    assert checked == int(result.summary["n_attacked"].sum())


def _out_of_budget_runs(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    original = TorchattacksBackend._run

    def out_of_budget(
        self: TorchattacksBackend,
        attack: Attack,
        model: CAMClassifier,
        images: Tensor,
        labels: Tensor,
        eps: float | None,
        *,
        seed: int,
    ) -> Tensor:
        assert eps is not None
        if mode == "noise":
            return images + 2 * eps * torch.sign(torch.randn_like(images))
        return original(self, attack, model, images, labels, 4 * eps, seed=seed)  # a real attack, too large

    monkeypatch.setattr(TorchattacksBackend, "_run", out_of_budget)


@pytest.mark.parametrize("mode", ["noise", "stronger_attack"])
def test_an_out_of_budget_example_is_reported_not_fixed(
    digits_model: CAMClassifier, digits_test: ImageDataset, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    _out_of_budget_runs(monkeypatch, mode)
    eps = 8 / 255
    result = evaluate(
        digits_model, digits_test, ["pgd"], eps=["8/255"], backends=["torchattacks"], n=32, batch_size=32, sanity=False
    )
    rows = result.per_sample
    attacked = rows[rows["attacked"]]
    assert len(attacked) == int(rows["clean_correct"].sum()) > 0
    assert not attacked["valid"].any()
    assert attacked["violation"].str.contains(r"Linf norm [0-9.e-]+ > eps 0\.0313725").all()
    expected_linf = 2 * eps if mode == "noise" else 4 * eps
    np.testing.assert_allclose(attacked["linf"].to_numpy(), expected_linf, rtol=1e-5)
    assert not attacked["success"].any() and attacked["robust"].all(), "invalid examples are not breaks"
    if mode == "noise":
        assert attacked["violation"].str.contains(r"outside \[0, 1\]").all(), "digits have black pixels"
    else:
        assert (attacked["adv_pred"] != attacked["label"]).any(), "misclassified, yet not counted"
    summary = _summary_rows(result.summary, "pgd")
    assert int(summary["n_invalid"].iloc[0]) == len(attacked)
    assert float(summary["robust_acc"].iloc[0]) == float(summary["clean_acc"].iloc[0])
    messages = [flag.message for flag in result.flags if flag.check == "budget_violations"]
    assert len(messages) == 1 and f"{len(attacked)} adversarial examples" in messages[0]


# --------------------------------------------------------------------------- C&W


def test_cw_runs_once_and_is_scored_at_every_l2_eps(digits_model: CAMClassifier, digits_test: ImageDataset) -> None:
    eps_l2 = ["0.25", "0.5", "1", "2"]
    result = evaluate(digits_model, digits_test, ["cw"], eps=None, eps_l2=eps_l2, n=48, batch_size=64, sanity=False)
    rows = result.per_sample
    assert set(rows["norm"]) == {"L2"} and sorted(set(rows["eps"])) == [0.25, 0.5, 1.0, 2.0]
    # one run: the example of each sample is the same at every eps
    by_sample = rows.groupby("index")
    for column in ("adv_pred", "l2", "linf", "margin", "attacked"):
        assert (by_sample[column].nunique(dropna=False) == 1).all(), column
    found = rows["clean_correct"] & rows["valid"] & (rows["adv_pred"] != rows["label"])
    np.testing.assert_array_equal(rows["success"], found & (rows["l2"] <= rows["eps"] + 1e-6))
    np.testing.assert_array_equal(rows["robust"], rows["clean_correct"] & (~found | (rows["l2"] > rows["eps"] + 1e-6)))
    # found, but larger than the smallest budget: robust there, broken at the largest
    assert (found & (rows["l2"] > rows["eps"]) & (rows["eps"] == 0.25)).any()
    assert rows.loc[rows["eps"] == 2.0, "success"].any()

    summary = _summary_rows(result.summary, "cw")
    assert (np.diff(summary["robust_acc"].to_numpy()) <= 0).all(), "robust accuracy never rises with eps"
    assert summary["robust_acc"].iloc[0] > summary["robust_acc"].iloc[-1]
    assert summary["n_attacked"].nunique() == 1, "every eps scores the same single run"


@pytest.mark.parametrize(
    ("attack", "eps", "eps_l2", "message"),
    [
        ("cw", ["8/255"], None, "cw is a minimal-perturbation L2 attack: give its budgets with --eps-l2 "),
        ("pgd_l2", ["8/255"], None, "pgd_l2 is a bounded L2 attack: give its budgets with --eps-l2 "),
        ("fgsm", None, ["0.5"], r"fgsm is a bounded Linf attack: give its budgets with --eps \(eps in a config file\)"),
    ],
)
def test_an_attack_without_budgets_of_its_norm_names_the_flag(
    tiny_model: CAMClassifier, digits_test: ImageDataset, attack: str, eps: Any, eps_l2: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(tiny_model, digits_test, [attack], eps=eps, eps_l2=eps_l2)


# --------------------------------------------------------------------------- bad input


def test_a_dataset_with_another_class_count_is_refused(tiny_model: CAMClassifier, digits_test: ImageDataset) -> None:
    dataset = _as_tensor_dataset(digits_test)
    info = dataclasses.replace(dataset.info, num_classes=5, class_names=tuple("01234"))
    five = TensorImageDataset(dataset.images, dataset.targets % 5, info)
    with pytest.raises(ValueError, match="dataset 'digits' has 5 classes but the model has 10 outputs"):
        evaluate(tiny_model, five, ["fgsm"])


def test_a_dataset_with_another_channel_count_is_refused(tiny_model: CAMClassifier) -> None:
    info = DatasetInfo("colour", 10, tuple("0123456789"), (0.5,) * 3, (0.2,) * 3, (3, 32, 32))
    colour = TensorImageDataset(torch.zeros(4, 3, 32, 32), torch.arange(4), info)
    with pytest.raises(ValueError, match="has 3 channels but the model expects 1"):
        evaluate(tiny_model, colour, ["fgsm"])


class _TooBright(TensorImageDataset):
    """Serves images outside [0, 1], as a loader that forgot to divide by 255 would."""

    def batch(self, indices: Tensor) -> Tensor:
        return super().batch(indices) * 255.0


def test_inputs_outside_the_unit_interval_are_an_error_not_a_clamp(
    tiny_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    dataset = _as_tensor_dataset(digits_test)
    bright = _TooBright(dataset.images, dataset.targets, dataset.info)
    with pytest.raises(ValueError, match=r"digits images must lie in \[0, 1\].*got values in \[0, 255\]"):
        evaluate(tiny_model, bright, ["fgsm"], n=8, sanity=False)


def test_unknown_backend_and_attack_list_the_valid_ones(tiny_model: CAMClassifier, digits_test: ImageDataset) -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown backend 'cleverhans'; valid: autoattack, foolbox, native, torchattacks"
    ):
        evaluate(tiny_model, digits_test, ["fgsm"], backends=["cleverhans"])
    with pytest.raises(UnknownNameError, match=r"unknown attack 'fsgm' \(did you mean 'fgsm'\?\)"):
        evaluate(tiny_model, digits_test, ["fsgm"])
    with pytest.raises(ValueError, match="no attacks given"):
        evaluate(tiny_model, digits_test, [])


def test_an_attack_no_chosen_backend_runs_is_an_error_naming_the_ones_that_can(
    tiny_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    with pytest.raises(
        AttackNotSupportedError,
        match="attack 'apgd' cannot run on backend 'foolbox'; backends for it: native, torchattacks",
    ):
        evaluate(tiny_model, digits_test, ["apgd"], backends=["foolbox"])


def test_an_attack_one_backend_lacks_runs_on_the_other_and_is_flagged(
    digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    result = evaluate(
        digits_model,
        digits_test,
        [build_attack("apgd", steps=5), "fgsm"],
        eps=["8/255"],
        backends=["torchattacks", "foolbox"],
        n=16,
        batch_size=16,
        sanity=False,
    )
    rows = result.per_sample
    assert set(rows.loc[rows["attack"] == "apgd", "backend"]) == {"torchattacks"}
    assert set(rows.loc[rows["attack"] == "fgsm", "backend"]) == {"torchattacks", "foolbox"}
    skipped = [flag.message for flag in result.flags if flag.check == "backend_skipped"]
    assert skipped == ["apgd has no foolbox implementation; ran it on torchattacks only"]
    assert set(result.agreement["attack"]) == {"fgsm"}


def test_every_pair_of_backends_is_compared_native_first(
    digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    result = evaluate(
        digits_model, digits_test, ["pgd"], eps=["8/255"], backends=["foolbox", "torchattacks", "native"],
        n=32, batch_size=32, sanity=False,
    )  # fmt: skip
    pairs = list(zip(result.agreement["backend_a"], result.agreement["backend_b"]))
    assert pairs == [("native", "torchattacks"), ("native", "foolbox"), ("torchattacks", "foolbox")]
    robust = result.per_sample.pivot_table(index="index", columns="backend", values="robust", aggfunc="first")
    for row in result.agreement.itertuples():
        assert row.robust_acc_a == robust[row.backend_a].mean() and row.robust_acc_b == robust[row.backend_b].mean()
        assert row.agreement_rate == (robust[row.backend_a] == robust[row.backend_b]).mean()


# --------------------------------------------------------------------------- sanity flags


def test_no_sanity_flag_fires_on_an_honest_evaluation(matrix: tuple[EvalResult, Path]) -> None:
    result, _ = matrix
    assert _checks(result) == set(), [flag.message for flag in result.flags]


class _Quantized(nn.Module):
    """Rounds the normalised input before the real features: predictions survive, gradients are zero."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.inner = features

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x))
        return out


def test_masked_gradients_are_flagged(digits_model: CAMClassifier, digits_test: ImageDataset) -> None:
    masked = CAMClassifier(
        _Quantized(digits_model.features),
        digits_model.head,
        in_channels=1,
        mean=digits_model.mean.flatten().tolist(),
        std=digits_model.std.flatten().tolist(),
    ).eval()
    result = evaluate(masked, digits_test, ["pgd"], eps=["8/255"], n=64, batch_size=64, seed=0)
    checks = _checks(result)
    assert {"zero_gradients", "pgd_large_eps_not_near_zero"} <= checks
    zero = next(flag.message for flag in result.flags if flag.check == "zero_gradients")
    assert zero.startswith("64 of 64 samples")
    pgd = _summary_rows(result.summary, "pgd", "native")  # pgd's default backend
    assert float(pgd["clean_acc"].iloc[0]) > 0.8
    assert float(pgd["robust_acc"].iloc[0]) > 0.8, "the masked model looks robust: that is what the flags are for"


def _summary(rows: list[tuple[str, float, float]], *, n_invalid: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "attack": attack,
                "backend": "torchattacks",
                "norm": "Linf",
                "eps": eps,
                "n": 100,
                "clean_acc": 0.9,
                "robust_acc": robust,
                "attack_success_rate": math.nan,
                "median_norm": math.nan,
                "n_attacked": 0,
                "n_invalid": n_invalid,
            }
            for attack, eps, robust in rows
        ]
    )


def test_sanity_flags_on_hand_made_summaries() -> None:
    honest = _summary([("fgsm", 2 / 255, 0.8), ("fgsm", 8 / 255, 0.6), ("pgd", 2 / 255, 0.7), ("pgd", 8 / 255, 0.3)])
    assert sanity_flags(honest, pd.DataFrame(), n_samples=100) == []

    fgsm_wins = _summary([("fgsm", 8 / 255, 0.40), ("pgd", 8 / 255, 0.55)])
    flags = sanity_flags(fgsm_wins, pd.DataFrame(), n_samples=100)
    assert [flag.check for flag in flags] == ["fgsm_stronger_than_pgd"]
    assert "FGSM (40.0%) beats PGD (55.0%) at eps 8/255" in flags[0].message

    rises = _summary([("pgd", 2 / 255, 0.50), ("pgd", 4 / 255, 0.60), ("pgd", 8 / 255, 0.20)])
    flags = sanity_flags(rises, pd.DataFrame(), n_samples=100)
    assert [flag.check for flag in flags] == ["robust_accuracy_rises_with_eps"]
    assert "from 50.0% at eps 2/255 to 60.0% at 4/255" in flags[0].message

    # one sample is noise, not a sign: no flag for a difference of exactly one sample
    within_one = _summary([("fgsm", 8 / 255, 0.54), ("pgd", 8 / 255, 0.55), ("pgd", 2 / 255, 0.54)])
    assert sanity_flags(within_one, pd.DataFrame(), n_samples=100) == []

    invalid = _summary([("pgd", 8 / 255, 0.5)], n_invalid=3)
    assert [flag.check for flag in sanity_flags(invalid, pd.DataFrame(), n_samples=100)] == ["budget_violations"]

    agreement = pd.DataFrame(
        [
            {
                "attack": "pgd",
                "norm": "Linf",
                "eps": 8 / 255,
                "backend_a": "torchattacks",
                "backend_b": "foolbox",
                "robust_acc_a": 0.50,
                "robust_acc_b": 0.55,
                "difference_points": -5.0,
                "agreement_rate": 0.9,
            },
            {
                "attack": "fgsm",
                "norm": "Linf",
                "eps": 8 / 255,
                "backend_a": "torchattacks",
                "backend_b": "foolbox",
                "robust_acc_a": 0.60,
                "robust_acc_b": 0.63,
                "difference_points": -3.0,
                "agreement_rate": 0.97,
            },
        ]
    )
    flags = sanity_flags(honest, agreement, n_samples=100)
    assert [flag.check for flag in flags] == ["backends_disagree"] and flags[0].message.startswith("pgd at eps")
    assert "torchattacks 50.0% vs foolbox 55.0% (-5.0 points)" in flags[0].message


# --------------------------------------------------------------------------- seeds


def test_same_seed_same_records_and_the_callers_generator_is_untouched(
    digits_model: CAMClassifier, digits_test: ImageDataset
) -> None:
    def run(seed: int) -> EvalResult:
        return evaluate(digits_model, digits_test, ["pgd"], eps=["4/255", "8/255"], n=48, batch_size=32, seed=seed)

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = run(5)
    assert torch.equal(torch.get_rng_state(), state), "evaluate draws from its own generators only"
    second = run(5)
    pd.testing.assert_frame_equal(first.per_sample, second.per_sample, check_exact=True)
    other = run(6)
    assert set(other.per_sample["index"]) != set(first.per_sample["index"])


def test_select_samples_is_seeded_sorted_and_without_repeats() -> None:
    first = select_samples(360, 50, seed=0)
    assert torch.equal(first, select_samples(360, 50, seed=0))
    assert not torch.equal(first, select_samples(360, 50, seed=1))
    assert len(first) == 50 and len(set(first.tolist())) == 50
    assert torch.equal(first, first.sort().values)
    assert int(first.min()) >= 0 and int(first.max()) < 360
    assert torch.equal(select_samples(360, None, seed=0), torch.arange(360))
    assert torch.equal(select_samples(10, 10, seed=3), torch.arange(10))
    assert torch.equal(select_samples(10, 99, seed=3), torch.arange(10))
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        select_samples(10, 0, seed=0)
