"""Which samples an evaluation attacks, and the seed of every attack run.

Both are derived streams of one seed (``robustcam.runtime.derived_generator``), so the
same seed picks the same samples and the same random starts on every run, and a resumed
evaluation draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustcam.runtime import derived_generator

_SELECTION_STREAM = 7


def select_samples(total: int, n: int | None, seed: int) -> Tensor:
    """Positions of the evaluated samples: all of them, or a seeded random ``n``, sorted."""
    if n is None or n >= total:
        return torch.arange(total)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return torch.randperm(total, generator=derived_generator(seed, _SELECTION_STREAM))[:n].sort().values


def attack_seed(seed: int, attack: str, backend: str, eps_index: int, batch_index: int) -> int:
    """The seed a backend run uses; derived so that every (attack, backend, eps, batch) differs."""
    stream = [sum(ord(c) * 31**i for i, c in enumerate(f"{attack}/{backend}")) % 2**31, eps_index, batch_index]
    return int(torch.randint(0, 2**31 - 1, (1,), generator=derived_generator(seed, *stream)))


__all__ = ["attack_seed", "select_samples"]
