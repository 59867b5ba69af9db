"""Resumable evaluations: a killed evaluation, run again, computes only its missing (job, batch)
shards and writes the files an uninterrupted one writes; shards of another evaluation are
never mixed in, and a damaged shard is one line naming it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustcam.attacks import get_backend
from robustcam.checkpoint import save_checkpoint
from robustcam.cli import main
from robustcam.config import EvalConfig, load_eval_config
from robustcam.data import ImageDataset, load_dataset
from robustcam.evaluate import EvalProgress, ShardMismatchError, attack_seed
from robustcam.io import CorruptFileError
from robustcam.layout import SHARDS_DIR, SHARDS_IDENTITY_FILE, TIMING_COLUMNS, shard_batch_index
from robustcam.models import CAMClassifier
from robustcam.runs import evaluate_into

BATCH = 16
N = 64  # four batches


class _Killed(Exception):
    """Stands in for a kill: raised from the progress hooks after some batches."""


class _Recorder(EvalProgress):
    """Records the progress events; raises ``_Killed`` after ``kill_after`` attack batches."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.kill_after = kill_after
        self.batches = 0

    def on_job_resume(self, name: str, completed: int) -> None:
        self.events.append(("resume", name, completed))

    def on_job_advance(self, name: str, completed: int) -> None:
        self.events.append(("advance", name, completed))
        if name != "clean":
            self.batches += 1
            if self.batches == self.kill_after:
                raise _Killed


class _Unsafe:
    """An object that ``torch.load(weights_only=True)`` refuses to unpickle."""


class _Calls:
    """The seeds of the attack runs, in call order; a run whose seed is in ``fatal`` raises ``_Killed``."""

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self.fatal: set[int] = set()


class _CountingBackend:
    """A backend that records the seed of every attack run, then runs the real one."""

    def __init__(self, inner: Any, calls: _Calls) -> None:
        self.inner, self.calls = inner, calls

    def run(self, *args: Any, seed: int, **kwargs: Any) -> torch.Tensor:
        if seed in self.calls.fatal:
            raise _Killed
        self.calls.seeds.append(seed)
        return self.inner.run(*args, seed=seed, **kwargs)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self.inner.notes)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> _Calls:
    """The attack runs of the jobs (not those of the sanity checks)."""
    recorded = _Calls()
    monkeypatch.setattr(
        "robustcam.evaluate.jobs.get_backend", lambda name: _CountingBackend(get_backend(name), recorded)
    )
    return recorded


def _config(*overrides: str) -> EvalConfig:
    base = ["attacks=[fgsm, pgd]", "eps=[2/255, 8/255]", "steps=2", f"n={N}", f"batch_size={BATCH}", "sanity=false"]
    return load_eval_config(None, [*base, *overrides])


def _backend(config: EvalConfig, attack: str) -> str:
    """The backend the config runs ``attack`` with (one each here)."""
    (backend,) = [backend for job, backend in config.jobs()[0] if job.name == attack]
    return backend


def _seed(config: EvalConfig, attack: str, eps_index: int, batch: int) -> int:
    return attack_seed(config.seed, attack, _backend(config, attack), eps_index, batch)


def _batches_of(seeds: list[int], config: EvalConfig, batches: int) -> set[tuple[str, int]]:
    """(attack, batch) of every attack run that ``seeds`` holds."""
    known = {
        _seed(config, attack, eps_index, batch): (attack, batch)
        for attack in config.attacks
        for eps_index in range(len(config.eps))
        for batch in range(batches)
    }
    return {known[seed] for seed in seeds}


def _shard_path(folder: Path, config: EvalConfig, attack: str, batch: int) -> Path:
    return folder / SHARDS_DIR / attack / _backend(config, attack) / f"batch{batch:05d}.pt"


def _shards(folder: Path) -> set[tuple[str, int]]:
    """(attack, batch) of the shards in an eval folder."""
    root = folder / SHARDS_DIR
    return {
        (path.parent.parent.name, index)
        for path in root.glob("*/*/*")
        if (index := shard_batch_index(path.name)) is not None
    }


def _assert_same_files(folder: Path, reference: Path) -> None:
    """per_sample.csv byte for byte, summary.csv but for its timing columns, the other files equal."""
    assert (folder / "per_sample.csv").read_bytes() == (reference / "per_sample.csv").read_bytes()
    summary, expected = (pd.read_csv(f / "summary.csv").drop(columns=list(TIMING_COLUMNS)) for f in (folder, reference))
    pd.testing.assert_frame_equal(summary, expected)
    for name in ("maxboxacc_v2.csv",):
        assert (folder / name).is_file() == (reference / name).is_file()
        if (reference / name).is_file():
            assert (folder / name).read_bytes() == (reference / name).read_bytes()
    examples, expected_examples = (torch.load(f / "examples.pt", weights_only=True) for f in (folder, reference))
    assert examples.keys() == expected_examples.keys() and examples["adv"].keys() == expected_examples["adv"].keys()
    for key, record in expected_examples["adv"].items():
        for name, value in record.items():
            assert torch.equal(examples["adv"][key][name], value), (key, name)
    assert not (folder / SHARDS_DIR).exists(), "the shards go once the evaluation is written"


def _interrupted(folder: Path, model: CAMClassifier, data: ImageDataset, config: EvalConfig, after: int) -> None:
    with pytest.raises(_Killed):
        evaluate_into(folder, model, data, config, progress=_Recorder(kill_after=after))
    assert not (folder / "complete.json").exists()


@pytest.fixture(scope="module")
def reference(digits_model: CAMClassifier, digits_test: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted evaluation of the default test config."""
    folder = tmp_path_factory.mktemp("reference") / "eval"
    result = evaluate_into(folder, digits_model, digits_test, _config())
    eight = result.per_sample[(result.per_sample["eps"] > 0.02) & result.per_sample["clean_correct"]]
    # the cascade did something in these records: samples broken at 2/255 are not attacked at 8/255
    assert (eight["success"] & ~eight["attacked"]).any() and eight["attacked"].any()
    return folder


# --------------------------------------------------------------------------- (a) an interrupted run, resumed


def test_an_interrupted_evaluation_resumes_with_only_the_missing_shards_and_the_same_files(
    digits_model: CAMClassifier,
    digits_test: ImageDataset,
    reference: Path,
    tmp_path: Path,
    calls: _Calls,
) -> None:
    folder = tmp_path / "eval"
    config = _config()
    _interrupted(folder, digits_model, digits_test, config, after=6)  # fgsm's 4 batches, pgd's first 2
    finished = _shards(folder)
    assert finished == {("fgsm", b) for b in range(4)} | {("pgd", 0), ("pgd", 1)}
    calls.seeds.clear()
    progress = _Recorder()
    evaluate_into(folder, digits_model, digits_test, config, progress=progress)
    assert _batches_of(calls.seeds, config, 4) == {("pgd", 2), ("pgd", 3)}  # only the missing shards ran
    _assert_same_files(folder, reference)
    fgsm, pgd = (f"{attack}/{_backend(config, attack)}" for attack in ("fgsm", "pgd"))
    resumed = [event for event in progress.events if event[0] == "resume"]
    assert resumed == [("resume", fgsm, N), ("resume", pgd, 2 * BATCH)]
    assert [event for event in progress.events if event[1] == pgd] == [
        ("resume", pgd, 2 * BATCH),
        ("advance", pgd, 3 * BATCH),
        ("advance", pgd, N),
    ]


def test_a_kill_between_two_eps_of_a_batch_runs_that_batch_again_from_its_clean_inputs(
    digits_model: CAMClassifier, digits_test: ImageDataset, reference: Path, tmp_path: Path, calls: _Calls
) -> None:
    # killed in pgd's batch 1 after its 2/255 run, before its 8/255 run: that batch has no shard
    # and runs again at every eps (its cascade starts from the clean inputs again), while the
    # finished batch 0 is read back with the cascade it ran (who broke at 2/255)
    folder = tmp_path / "eval"
    config = _config()
    calls.fatal.add(_seed(config, "pgd", 1, 1))
    with pytest.raises(_Killed):
        evaluate_into(folder, digits_model, digits_test, config)
    assert _shards(folder) == {("fgsm", b) for b in range(4)} | {("pgd", 0)}
    assert _seed(config, "pgd", 0, 1) in calls.seeds
    calls.fatal.clear()
    calls.seeds.clear()
    evaluate_into(folder, digits_model, digits_test, config)
    assert calls.seeds[:2] == [_seed(config, "pgd", 0, 1), _seed(config, "pgd", 1, 1)]
    assert _batches_of(calls.seeds, config, 4) == {("pgd", 1), ("pgd", 2), ("pgd", 3)}
    _assert_same_files(folder, reference)


def test_resume_keeps_the_maxboxacc_table_and_its_example_ids(digits_model: CAMClassifier, tmp_path: Path) -> None:
    scenes = load_dataset("digits_scene", "test", canvas=32, digit_size=(14, 24), distractor=False)
    config = _config("attacks=[fgsm]", "n=32")
    evaluate_into(tmp_path / "reference", digits_model, scenes, config)
    _interrupted(tmp_path / "eval", digits_model, scenes, config, after=1)
    evaluate_into(tmp_path / "eval", digits_model, scenes, config)
    _assert_same_files(tmp_path / "eval", tmp_path / "reference")


# --------------------------------------------------------------------------- (c) another evaluation


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(("steps=3",), "the eval config differs"), (("eps=[4/255, 8/255]",), "the eval config differs")],
)
def test_a_changed_config_refuses_to_mix_shards_and_says_how_to_start_over(
    digits_model: CAMClassifier,
    digits_test: ImageDataset,
    tmp_path: Path,
    overrides: tuple[str, ...],
    expected: str,
) -> None:
    folder = tmp_path / "eval"
    _interrupted(folder, digits_model, digits_test, _config(), after=2)
    before = _shards(folder)
    with pytest.raises(ShardMismatchError) as info:
        evaluate_into(folder, digits_model, digits_test, _config(*overrides))
    message = str(info.value)
    assert "\n" not in message and expected in message and f"{folder / SHARDS_DIR}" in message
    assert "--no-resume" in message
    assert _shards(folder) == before, "a refused resume leaves the shards alone"
    evaluate_into(folder, digits_model, digits_test, _config(*overrides), resume=False)
    assert (folder / "complete.json").is_file() and not (folder / SHARDS_DIR).exists()


def test_another_checkpoint_refuses_to_mix_shards(
    digits_model: CAMClassifier, tiny_model: CAMClassifier, digits_test: ImageDataset, tmp_path: Path
) -> None:
    folder = tmp_path / "eval"
    _interrupted(folder, digits_model, digits_test, _config(), after=1)
    with pytest.raises(ShardMismatchError, match=r"\(the checkpoint differs\); run with --no-resume"):
        evaluate_into(folder, tiny_model, digits_test, _config())


def test_a_shard_of_other_samples_is_refused(
    digits_model: CAMClassifier, digits_test: ImageDataset, tmp_path: Path
) -> None:
    folder = tmp_path / "eval"
    _interrupted(folder, digits_model, digits_test, _config(), after=2)
    config = _config()
    first, second = (_shard_path(folder, config, "fgsm", batch) for batch in (0, 1))
    first.replace(second)  # batch 0's rows where batch 1's belong
    with pytest.raises(ShardMismatchError, match=r"batch00001.pt has other samples"):
        evaluate_into(folder, digits_model, digits_test, _config())


# --------------------------------------------------------------------------- (d) damaged shards


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01not a shard" * 40)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path: Path) -> None:
    torch.save({"format": 1, "rows": {"index": [torch.arange(3)]}}, path)


def _code(path: Path) -> None:
    torch.save({"format": 1, "payload": _Unsafe()}, path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_garbage, "is not a readable PyTorch file"),
        (_truncated, "is not a readable PyTorch file"),
        (_foreign, "lacks the times, attacked counts or notes of its 2 eps"),
        (_code, "refused: robustcam loads weights only"),
    ],
)
def test_a_damaged_shard_is_one_line_naming_it_and_only_its_batch_is_computed_again(
    digits_model: CAMClassifier,
    digits_test: ImageDataset,
    reference: Path,
    tmp_path: Path,
    calls: _Calls,
    damage: Any,
    expected: str,
) -> None:
    folder = tmp_path / "eval"
    config = _config()
    _interrupted(folder, digits_model, digits_test, config, after=3)
    shard = _shard_path(folder, config, "fgsm", 1)
    damage(shard)
    with pytest.raises(CorruptFileError) as info:
        evaluate_into(folder, digits_model, digits_test, config)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"eval shard {shard} ") and expected in message, message
    assert "delete it and run the same eval again" in message
    shard.unlink()
    calls.seeds.clear()
    evaluate_into(folder, digits_model, digits_test, config)
    assert _batches_of(calls.seeds, config, 4) == {("fgsm", 1), ("fgsm", 3)} | {("pgd", b) for b in range(4)}
    _assert_same_files(folder, reference)


def test_a_corrupt_shard_identity_file_is_one_line_naming_it(
    digits_model: CAMClassifier, digits_test: ImageDataset, tmp_path: Path
) -> None:
    folder = tmp_path / "eval"
    _interrupted(folder, digits_model, digits_test, _config(), after=1)
    identity = folder / SHARDS_DIR / SHARDS_IDENTITY_FILE
    identity.write_text("{not json")
    with pytest.raises(CorruptFileError, match=f"{re.escape(str(identity))} is not valid JSON .*--no-resume"):
        evaluate_into(folder, digits_model, digits_test, _config())


# --------------------------------------------------------------------------- (b) a real SIGKILL


@pytest.fixture(scope="module")
def checkpoint(digits_model: CAMClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume_ckpt") / "model.pt"
    return save_checkpoint(path, digits_model, {"data": {"name": "digits"}, "model_kwargs": {"width": 8}})


def _eval_argv(checkpoint: Path, out: Path, eps: str = "2/255,8/255") -> list[str]:
    return [
        "eval", "--ckpt", str(checkpoint), "--attacks", "pgd", "--steps", "3", "--eps", eps, "--n", "96",
        "--batch-size", str(BATCH), "--no-sanity", "--out", str(out),
    ]  # fmt: skip


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


@pytest.fixture
def killed(checkpoint: Path, tmp_path: Path) -> Iterator[Path]:
    """``robustcam eval`` in a subprocess, killed with SIGKILL once it has written a shard."""
    out = tmp_path / "killed"
    script = "import sys; from robustcam.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-c", script, *_eval_argv(checkpoint, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not _shards(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert process.poll() is None, "the eval ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
        yield out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow  # a fresh interpreter imports torch and robustcam before the eval starts: > 10 s
def test_an_eval_killed_with_sigkill_resumes_to_the_files_of_an_uninterrupted_one(
    killed: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], calls: _Calls
) -> None:
    finished = _shards(killed)
    assert finished and not (killed / "complete.json").exists() and len(finished) < 6
    # another eps list is refused in one line, and leaves the shards alone
    code, err = _cli(_eval_argv(checkpoint, killed, eps="4/255,8/255"), capsys)
    assert code == 2 and err.startswith("error: ") and "the eval config differs" in err, err
    assert "--no-resume" in " ".join(err.split()) and "Traceback" not in err and _shards(killed) == finished
    calls.seeds.clear()
    code, err = _cli(_eval_argv(checkpoint, killed), capsys)
    assert code == 0, err
    config = _config("attacks=[pgd]", "steps=3", "n=96")
    assert _batches_of(calls.seeds, config, 6) == {("pgd", b) for b in range(6)} - finished
    code, err = _cli(_eval_argv(checkpoint, tmp_path / "uninterrupted"), capsys)
    assert code == 0, err
    assert list(killed.rglob("*.tmp")) == []
    _assert_same_files(killed, tmp_path / "uninterrupted")
