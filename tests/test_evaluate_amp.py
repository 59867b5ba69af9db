"""``attack_amp``: attacks run in fp32 by default; under an explicit autocast only the attack
calls do, the clean pass, re-prediction and measurement stay fp32, and a flag says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustcam.attacks import get_backend
from robustcam.errors import InputError
from robustcam.evaluate import EvalResult, evaluate, matrix_config
from robustcam.evaluate import jobs as jobs_module
from robustcam.models import CAMClassifier
from robustcam.runtime import resolve_attack_amp

N = 16


class _Backend:
    """A backend that marks its calls as the attack phase and otherwise delegates."""

    def __init__(self, inner: Any, phase: list[str]) -> None:
        self.inner = inner
        self.phase = phase

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, *args: Any, **kwargs: Any) -> Tensor:
        self.phase.append("attack")
        try:
            return self.inner.run(*args, **kwargs)  # type: ignore[no-any-return]
        finally:
            self.phase.pop()


@contextmanager
def _recording(model: CAMClassifier, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bool, Any]]]:
    """(phase, autocast enabled, logits dtype) of every pass through the model's head."""
    seen: list[tuple[str, bool, Any]] = []
    phase: list[str] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen.append((phase[-1] if phase else "measure", torch.is_autocast_enabled("cpu"), output.dtype))

    monkeypatch.setattr(jobs_module, "get_backend", lambda name: _Backend(get_backend(name), phase))
    handle = model.head.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def _evaluate(model: CAMClassifier, dataset: Any, attack_amp: str) -> EvalResult:
    config = matrix_config(["pgd"], eps=["8/255"], eps_l2=None, n=N, batch_size=N, sanity=False)
    return evaluate(model, dataset, config.model_copy(update={"attack_amp": attack_amp}))


def test_attacks_run_in_fp32_by_default(
    tiny_model: CAMClassifier, digits_test: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _recording(tiny_model, monkeypatch) as seen:
        result = _evaluate(tiny_model, digits_test, "none")
    assert {phase for phase, _, _ in seen} == {"attack", "measure"}
    assert all(not enabled and dtype == torch.float32 for _, enabled, dtype in seen)
    assert "attack_amp" not in {flag.check for flag in result.flags}
    assert result.meta["attack_amp"] == "none"


def test_bf16_autocasts_only_the_attack_calls(
    tiny_model: CAMClassifier, digits_test: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _recording(tiny_model, monkeypatch) as seen:
        result = _evaluate(tiny_model, digits_test, "bf16")
    attack = [(enabled, dtype) for phase, enabled, dtype in seen if phase == "attack"]
    measure = [(enabled, dtype) for phase, enabled, dtype in seen if phase == "measure"]
    assert attack and all(enabled and dtype == torch.bfloat16 for enabled, dtype in attack)
    assert measure and all(not enabled and dtype == torch.float32 for enabled, dtype in measure)
    flags = {flag.check: flag.message for flag in result.flags}
    assert flags["attack_amp"] == (
        "attacks ran under bf16 autocast: half precision can mask gradients and overstate robustness"
    )
    assert result.meta["attack_amp"] == "bf16"
    assert result.per_sample["valid"].all()  # still checked against [0, 1] and the budget


def test_resolve_attack_amp() -> None:
    cpu = torch.device("cpu")
    assert resolve_attack_amp("none", cpu) is None
    assert resolve_attack_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(InputError, match="attack_amp must be one of none, bf16, fp16"):
        resolve_attack_amp("fp8", cpu)


def test_unsupported_autocast_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(InputError, match=r"attack_amp=fp16: torch .* has no fp16 autocast on cpu") as caught:
        resolve_attack_amp("fp16", torch.device("cpu"))
    assert "\n" not in str(caught.value)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from robustcam.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


def test_cli_attack_amp_warns_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "ce"
    code, _, _ = _cli(["train", "--epochs", "1", "--set", "model.options.width=4", "--out", str(run)], capsys)
    assert code == 0
    out = tmp_path / "eval"
    argv = ["eval", "--ckpt", str(run / "model.pt"), "--attacks", "fgsm", "--eps", "8/255", "--n", "16"]
    code, stdout, _ = _cli([*argv, "--no-sanity", "--attack-amp", "bf16", "--out", str(out)], capsys)
    assert code == 0
    assert "attacks ran under bf16 autocast: half precision can mask gradients" in " ".join(stdout.split())
    payload = json.loads((out / "summary.json").read_text())
    assert payload["config"]["eval"]["attack_amp"] == "bf16" and payload["meta"]["attack_amp"] == "bf16"
    assert "attack_amp" in {flag["check"] for flag in payload["flags"]}
    code, _, err = _cli([*argv, "--attack-amp", "fp8", "--out", str(out)], capsys)
    assert code == 2 and "--attack-amp" in err and "Traceback" not in err
