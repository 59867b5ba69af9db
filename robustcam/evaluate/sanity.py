"""Sanity checks on an evaluation, in the spirit of AutoAttack's: signs of gradient masking or
of a broken evaluation, returned as flags (never as silent corrections).

- FGSM stronger than PGD at the same eps; robust accuracy rising with eps;
- examples outside [0, 1] or their budget (recorded, not counted as breaks);
- torchattacks and foolbox disagreeing by more than ``DISAGREEMENT_POINTS``;
- PGD-20 at Linf eps 0.5 not driving accuracy near 0 (``large_eps_check``);
- all-zero input gradients in the first batch (``zero_gradient_flag``);
- attacks run under half-precision autocast (``attack_amp``; ``attack_amp_warning``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from robustcam.attacks import build_attack, format_eps, get_backend
from robustcam.data import ImageDataset
from robustcam.data.batches import iterate_batches
from robustcam.evaluate.measure import logit_margin
from robustcam.evaluate.sampling import attack_seed
from robustcam.models import CAMClassifier

SANITY_LARGE_EPS = 0.5  # Linf; PGD at this budget should break (nearly) everything
SANITY_SAMPLES = 64
DISAGREEMENT_POINTS = 3.0


@dataclass(frozen=True)
class SanityFlag:
    """A warning about the evaluation itself (gradient masking, bugs, disagreement)."""

    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "message": self.message}


def sanity_flags(summary: pd.DataFrame, agreement: pd.DataFrame, *, n_samples: int) -> list[SanityFlag]:
    """Checks on the summary in the spirit of AutoAttack's: signs of gradient masking or a broken evaluation."""
    flags: list[SanityFlag] = []
    one_sample = 1.0 / max(n_samples, 1)
    attacks = summary[~summary["attack"].isin(["clean", "worst"])]
    for backend, group in attacks.groupby("backend"):
        fgsm = group[group["attack"] == "fgsm"].set_index("eps")["robust_acc"]
        pgd = group[group["attack"] == "pgd"].set_index("eps")["robust_acc"]
        for eps in fgsm.index.intersection(pgd.index):
            if fgsm[eps] < pgd[eps] - one_sample:
                flags.append(
                    SanityFlag(
                        "fgsm_stronger_than_pgd",
                        f"{backend}: FGSM ({100 * fgsm[eps]:.1f}%) beats PGD ({100 * pgd[eps]:.1f}%) at eps "
                        f"{format_eps(eps, 'Linf')}: a sign of gradient masking or too few PGD steps",
                    )
                )
    for (attack, backend), group in attacks.groupby(["attack", "backend"]):
        accuracies = group.sort_values("eps")[["eps", "robust_acc"]].to_numpy()
        for (eps_a, acc_a), (eps_b, acc_b) in itertools.pairwise(accuracies):
            if acc_b > acc_a + one_sample:
                norm = str(group["norm"].iloc[0])
                flags.append(
                    SanityFlag(
                        "robust_accuracy_rises_with_eps",
                        f"{attack}/{backend}: robust accuracy rises from {100 * acc_a:.1f}% at eps "
                        f"{format_eps(eps_a, norm)} to {100 * acc_b:.1f}% at {format_eps(eps_b, norm)}"  # type: ignore[arg-type]
                        " (the attack is not finding examples it should)",
                    )
                )
    invalid = attacks[attacks["n_invalid"] > 0]
    for row in invalid.itertuples():
        flags.append(
            SanityFlag(
                "budget_violations",
                f"{row.attack}/{row.backend} at eps {row.eps:.6g}: {row.n_invalid} adversarial examples outside "
                "[0, 1] or the eps ball; they were not counted as breaks",
            )
        )
    if not agreement.empty:
        for row in agreement[agreement["difference_points"].abs() > DISAGREEMENT_POINTS].itertuples():
            flags.append(
                SanityFlag(
                    "backends_disagree",
                    f"{row.attack} at eps {row.eps:.6g}: {row.backend_a} {100 * row.robust_acc_a:.1f}% vs "
                    f"{row.backend_b} {100 * row.robust_acc_b:.1f}% ({row.difference_points:+.1f} points)",
                )
            )
    return flags


def zero_gradient_flag(zero_gradients: int, probed: int) -> SanityFlag | None:
    """A flag when samples of the probed batch have an all-zero input gradient."""
    if not probed or not zero_gradients:
        return None
    return SanityFlag(
        "zero_gradients",
        f"{zero_gradients} of {probed} samples in the first batch have an all-zero input gradient "
        "(saturated softmax or masked gradients): gradient attacks cannot move them; compare with cw",
    )


def attack_amp_warning(attack_amp: str) -> str:
    """What an ``attack_amp`` other than ``none`` costs the result (its flag's message)."""
    return f"attacks ran under {attack_amp} autocast: half precision can mask gradients and overstate robustness"


def large_eps_check(
    model: CAMClassifier,
    dataset: ImageDataset,
    positions: Tensor,
    clean_correct: Tensor,
    *,
    seed: int,
    batch_size: int,
    eps: float = SANITY_LARGE_EPS,
    samples: int = SANITY_SAMPLES,
) -> SanityFlag | None:
    """PGD at a large Linf eps (default 0.5) on up to 64 clean-correct samples must break almost all."""
    chosen = positions[clean_correct][:samples]
    if len(chosen) == 0:
        return None
    device = next(model.parameters()).device
    attack = build_attack("pgd", steps=20)
    backend = get_backend("torchattacks")
    survived = 0
    for batch_index, batch in enumerate(iterate_batches(dataset, batch_size, order=chosen, device=device)):
        adversarial = backend.run(
            attack, model, batch.images, batch.labels, eps, seed=attack_seed(seed, "sanity", "pgd", 0, batch_index)
        )
        with torch.no_grad():
            survived += int((logit_margin(model(adversarial).float(), batch.labels) >= 0).sum())
    if survived / len(chosen) > 0.05:
        return SanityFlag(
            "pgd_large_eps_not_near_zero",
            f"PGD-20 at Linf eps {eps} leaves {survived} of {len(chosen)} samples correctly classified; at such a "
            "budget accuracy should be near 0: suspect gradient masking",
        )
    return None


__all__ = [
    "DISAGREEMENT_POINTS",
    "SANITY_LARGE_EPS",
    "SanityFlag",
    "attack_amp_warning",
    "large_eps_check",
    "sanity_flags",
    "zero_gradient_flag",
]
