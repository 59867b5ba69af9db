"""Hostile input to every command: exit code 2, one line on stderr that names the bad value.

Each case is a command line that a user could type by mistake (a typo in a name, NaN for a
learning rate, a broken YAML file, a folder that holds no evaluation). Most fail while their
values are checked, before any work; the eval and cam cases share one tiny checkpoint and the
report cases one tiny evaluation, made once for the module. A real bug is the exception: its
traceback and a request to report it, with exit code 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustcam.cli import BUG_REPORT, main

# (id, argv with {ckpt} / {files} / {eval} placeholders, the text the one line must hold); a case's own
# options come after the defaults the command gets below, so that they win where both give one
Case = tuple[str, list[str], str]

TRAIN_CASES: list[Case] = [
    ("epochs-zero", ["--epochs", "0"], "--epochs: 0 is not >= 1"),
    ("epochs-negative", ["--epochs", "-3"], "--epochs: -3 is not >= 1"),
    ("epochs-ten", ["--epochs", "ten"], "--epochs: 'ten' is not an integer"),
    ("epochs-float", ["--epochs", "2.5"], "--epochs: 2.5 is not an integer"),
    ("lr-inf", ["--lr", "inf"], "--lr: inf is not a finite number"),
    ("lr-nan", ["--lr", "nan"], "--lr: nan is not a finite number"),
    ("lr-zero", ["--lr", "0"], "--lr: 0.0 is not > 0"),
    ("lr-text", ["--lr", "fast"], "--lr: 'fast' is not a number"),
    ("batch-size-zero", ["--batch-size", "0"], "--batch-size: 0 is not >= 1"),
    ("seed-negative", ["--seed", "-1"], "--seed: -1 is not >= 0"),
    ("arch-typo", ["--arch", "resnet81"], "--arch: unknown architecture 'resnet81' (did you mean 'resnet18'?)"),
    ("loss-typo", ["--loss", "hcn"], "--loss: unknown loss 'hcn' (did you mean 'hnc'?)"),
    ("dataset-typo", ["--dataset", "cifar11"], "--dataset: unknown dataset 'cifar11'"),
    ("device", ["--device", "tpu"], "--device: device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("amp", ["--amp", "bf17"], "--amp: 'bf17' is not one of 'auto', 'none', 'bf16' or 'fp16'"),
    ("focal-gamma-text", ["--set", "loss.focal.gamma=abc"], "loss.focal.gamma: 'abc' is not a number"),
    ("focal-gamma-negative", ["--set", "loss.focal.gamma=-1"], "gamma must be a finite number >= 0, got -1"),
    ("hnc-k-float", ["--set", "loss.hnc.k=2.5"], "loss.hnc.k: 2.5 is not an integer"),
    ("hnc-kind", ["--set", "loss.hnc.kind=l1"], "loss.hnc.kind: 'l1' is not one of 'kd' or 'mse'"),
    ("hnc-weight-nan", ["--set", "loss.hnc.weight=.nan"], "loss.hnc.weight: nan is not a finite number"),
    ("loss-param-typo", ["--set", "loss.focal.gama=2"], "unknown parameter(s) gama for loss 'focal'; valid: gamma"),
    ("loss-section-typo", ["--set", "loss.focl.gamma=2"], "unknown loss 'focl' (did you mean 'focal'?)"),
    ("momentum-one", ["--set", "optimizer.momentum=1"], "--set optimizer.momentum: 1 is not < 1"),
    ("weight-decay-nan", ["--set", "optimizer.weight_decay=.nan"], "optimizer.weight_decay: nan is not a finite"),
    ("schedule-gamma-inf", ["--set", "schedule.gamma=.inf"], "--set schedule.gamma: inf is not a finite number"),
    ("unknown-key", ["--set", "optimizer.learning_rate=0.1"], "unknown key 'optimizer.learning_rate'"),
    ("override-without-value", ["--set", "epochs"], "--set expects key=value (e.g. loss.name=focal), got 'epochs'"),
    (
        "noise-kind-typo",
        ["--set", "noise.kind=symetric", "--set", "noise.rate=0.2"],
        "--set noise.kind: unknown noise kind 'symetric' (did you mean 'symmetric'?)",
    ),
    (
        "noise-rate-high",
        ["--set", "noise.kind=symmetric", "--set", "noise.rate=1.5"],
        "rate must be in [0, 1], got 1.5",
    ),
    (
        "noise-rate-nan",
        ["--set", "noise.kind=symmetric", "--set", "noise.rate=.nan"],
        "noise.rate: nan is not a finite",
    ),
    ("noise-rate-without-kind", ["--set", "noise.rate=0.3"], "rate set but noise.kind is none"),
    ("noise-human-without-path", ["--set", "noise.kind=human"], "noise kind 'human' needs path"),
    ("noise-matrix-without-path", ["--set", "noise.kind=matrix"], "noise kind 'matrix' needs path"),
    (
        "noise-human-key-typo",
        ["--set", "noise.kind=symmetric", "--set", "noise.rate=0.1", "--set", "noise.key=worse"],
        "does not take key",
    ),
    (
        "noise-human-missing-file",
        ["--set", "noise.kind=human", "--set", "noise.path=nowhere.pt"],
        "human label file nowhere.pt does not exist",
    ),
    (
        "data-option-type",
        ["--set", "data.name=digits_scene", "--set", "data.options.canvas=big"],
        "data.options.canvas: 'big' is not an integer",
    ),
    ("data-option-typo", ["--set", "data.options.sise=16"], "unknown parameter(s) sise for dataset 'digits'"),
    ("missing-config", ["--config", "{files}/missing.yaml"], "missing.yaml does not exist"),
    ("invalid-yaml", ["--config", "{files}/invalid.yaml"], "invalid.yaml: not valid YAML (line"),
    ("yaml-list", ["--config", "{files}/list.yaml"], "list.yaml: expected a mapping at the top level, got list"),
    ("yaml-nan-lr", ["--config", "{files}/nan_lr.yaml"], "nan_lr.yaml: optimizer.lr: nan is not a finite number"),
    ("unknown-option", ["--epoch", "3"], "No such option: --epoch"),
    ("model-option-type", ["--set", "model.options.width=wide"], "--set model.options.width: 'wide' is not an integer"),
    ("model-option-typo", ["--set", "model.options.widht=4"], "unknown parameter(s) widht for architecture 'smallcnn'"),
    (
        "hnc-k-too-large",
        ["--loss", "hnc", "--set", "loss.hnc.k=10", "--epochs", "1", "--out", "{files}/runs/k10"],
        "loss.hnc.k=10 must be smaller than the number of classes (10)",
    ),
    (
        "data-option-range",
        ["--set", "data.name=digits_scene", "--set", "data.options.canvas=4", "--out", "{files}/runs/canvas"],
        "canvas must be an int >= 6, got 4",
    ),
    (
        "imagefolder-without-path",
        ["--dataset", "imagefolder", "--out", "{files}/runs/folder"],
        "imagefolder needs the option path",
    ),
    ("out-is-a-file", ["--out", "{files}/invalid.yaml"], "--out: {files}/invalid.yaml is a file, not a folder"),
]

# How a checkpoint is read: its normalisation and its architecture's options (eval and cam alike).
NORMALIZATION_CASES: list[Case] = [
    (
        "normalization-typo",
        ["--normalization", "cifar"],
        "--normalization: unknown normalization 'cifar' (did you mean 'cifar10'?); valid: imagenet, cifar10, "
        "cifar100, mnist, none",
    ),
    ("mean-nan", ["--mean", "nan", "--std", "1"], "--mean: mean[0]: 'nan' is not a finite number"),
    ("mean-text", ["--mean", "grey", "--std", "1"], "--mean: mean[0]: 'grey' is not a number"),
    ("mean-two-values", ["--mean", "0.1,0.2", "--std", "1"], "--mean: mean has 2 values (0.1,0.2); give 1"),
    ("std-zero", ["--mean", "0.5", "--std", "0"], "--std: std must be > 0 for every channel, got 0"),
    ("mean-without-std", ["--mean", "0.5"], "give mean and std together (--mean and --std); std is missing"),
    ("normalization-and-mean", ["--normalization", "none", "--mean", "0.5", "--std", "1"], "not both"),
    # braces doubled: the cases are str.format templates
    ("model-kwargs-not-json", ["--model-kwargs", "{{width: 4}}"], "--model-kwargs: '{{width: 4}}' is not JSON"),
    ("model-kwargs-a-list", ["--model-kwargs", "[4]"], "--model-kwargs: '[4]' is a JSON list, not an object"),
]

EVAL_CASES: list[Case] = [
    ("eps-nan", ["--eps", "nan"], "--eps: eps must be a finite number, got nan"),
    ("eps-two", ["--eps", "2"], "--eps: Linf eps must be in [0, 1]"),
    ("eps-negative", ["--eps", "-1/255"], "eps must be >= 0, got -0.00392157"),
    ("eps-text", ["--eps", "big"], "--eps: eps 'big' is not a number or a fraction such as 8/255"),
    ("eps-divides-by-zero", ["--eps", "8/0"], "eps '8/0' divides by zero"),
    ("eps-l2-nan", ["--attacks", "pgd_l2", "--eps-l2", "nan"], "--eps-l2: eps must be a finite number, got nan"),
    ("eps-l2-inf", ["--attacks", "pgd_l2", "--eps-l2", "inf"], "--eps-l2: eps must be a finite number, got inf"),
    ("eps-l2-nan-without-l2-attack", ["--eps-l2", "nan"], "--eps-l2: eps must be a finite number, got nan"),
    ("step-factor-nan", ["--attack-param", "pgd.step_factor=.nan"], "--attack-param pgd.step_factor: nan is not a"),
    ("step-factor-zero", ["--attack-param", "pgd.step_factor=0"], "step_factor must be a finite number > 0, got 0"),
    ("attack-steps-text", ["--attack-param", "pgd.steps=many"], "--attack-param pgd.steps: 'many' is not an integer"),
    (
        "attack-param-typo",
        ["--attacks", "cw", "--eps-l2", "0.5", "--attack-param", "cw.cc=1"],
        "unknown parameter(s) cc for attack 'cw'",
    ),
    ("attack-param-unknown-attack", ["--attack-param", "pgdd.steps=3"], "unknown attack 'pgdd' (did you mean 'pgd'?)"),
    ("attack-param-form", ["--attack-param", "steps=3"], "--attack-param expects attack.param=value"),
    ("cw-lr-inf", ["--attacks", "cw", "--eps-l2", "0.5", "--attack-param", "cw.lr=.inf"], "cw.lr: inf is not a finite"),
    ("attack-typo", ["--attacks", "pgdd"], "--attacks: unknown attack 'pgdd' (did you mean 'pgd'?)"),
    ("backend-typo", ["--backend", "fool"], "--backend: unknown backend 'fool'"),
    ("backend-unsupported", ["--attacks", "apgd", "--backend", "foolbox"], "backends for it: native, torchattacks"),
    ("linf-budget-for-l2-attack", ["--attacks", "cw", "--eps", "8/255"], "no Linf attack runs (cw)"),
    ("n-zero", ["--n", "0"], "--n: 0 is not >= 1"),
    ("n-text", ["--n", "all"], "--n: 'all' is not an integer"),
    ("steps-zero", ["--steps", "0"], "--steps: 0 is not >= 1"),
    ("batch-size-zero", ["--batch-size", "0"], "--batch-size: 0 is not >= 1"),
    ("seed-negative", ["--seed", "-2"], "--seed: -2 is not >= 0"),
    ("device", ["--device", "gpu"], "--device: device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("eval-set-unknown-key", ["--set", "epss=[1/255]"], "unknown key 'epss'"),
    ("eval-missing-config", ["--config", "{files}/missing.yaml"], "missing.yaml does not exist"),
    ("dataset-typo", ["--data", "digitz"], "--data: unknown dataset 'digitz' (did you mean 'digits'?)"),
    ("split", ["--set", "split=val"], "--set split: 'val' is not one of 'test' or 'train'"),
    ("num-classes-one", ["--arch", "smallcnn", "--num-classes", "1"], "--num-classes: 1 is not >= 2"),
    ("attack-params-not-a-mapping", ["--set", "attack_params.pgd=3"], "--set attack_params.pgd: 3 is not a mapping"),
    ("cam-topk-too-large", ["--set", "cam_topk=20"], "cam_topk: 20 must be smaller than the number of classes (10)"),
    ("out-is-a-file", ["--out", "{files}/invalid.yaml"], "--out: {files}/invalid.yaml is a file, not a folder"),
    *NORMALIZATION_CASES,
    ("normalization-set-typo", ["--set", "normalization=imagenett"], "unknown normalization 'imagenett' (did you"),
    ("mean-for-three-channels", ["--mean", "0.1,0.2,0.3", "--std", "1"], "give 1 value: the model has 1 input channel"),
    (
        "model-kwargs-contradict-the-checkpoint",
        ["--model-kwargs", '{{"width": 8}}'],
        "records model_kwargs['width']=4 but 8 was passed",
    ),
]

# A bare state_dict needs --arch: the architecture names of timm and of user factories.
BARE = ["eval", "--ckpt", "{files}/bare.pt", "--data", "digits", "--arch"]
EVAL_CHECKPOINT_CASES: list[Case] = [
    ("missing-checkpoint", ["eval", "--ckpt", "{files}/nowhere.pt"], "nowhere.pt"),
    ("garbage-checkpoint", ["eval", "--ckpt", "{files}/garbage.pt"], "garbage.pt"),
    ("missing-ckpt-option", ["eval"], "Missing option '--ckpt'"),
    ("timm-unknown-model", [*BARE, "timm:resnet1888"], "unknown timm model 'resnet1888' (did you mean timm:resnet18?)"),
    ("factory-missing-file", [*BARE, "{files}/nowhere.py:build"], "model factory file {files}/nowhere.py not found"),
    ("factory-missing-function", [*BARE, "{files}/factory.py:buld"], "factory.py has no function 'buld' (its"),
    ("factory-not-a-module", [*BARE, "{files}/factory.py:build"], "returned None of type NoneType, not a torch"),
]

CAM_CASES: list[Case] = [
    ("indices-text", ["--indices", "abc"], "--indices must be comma-separated integers, got 'abc'"),
    ("indices-out-of-range", ["--indices", "99999"], "--indices must be in [0, 359], got 99999"),
    ("n-zero", ["--n", "0"], "--n: 0 is not >= 1"),
    ("eps-nan", ["--eps", "nan"], "--eps: eps must be a finite number, got nan"),
    ("eps-text", ["--eps", "lots"], "--eps: eps 'lots' is not a number"),
    ("attack-typo", ["--attack", "fgms"], "--attack: unknown attack 'fgms' (did you mean 'fgsm'?)"),
    ("backend-unsupported", ["--attack", "apgd", "--backend", "foolbox"], "--backend: attack 'apgd' cannot run on"),
    ("backend-typo", ["--backend", "fool"], "--backend: unknown backend 'fool'"),
    ("device", ["--device", "tpu"], "--device: device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("dataset-typo", ["--data", "cifar11"], "--data: unknown dataset 'cifar11'"),
    ("out-not-an-image", ["--out", "{files}/cams.txt"], "--out: '{files}/cams.txt' is not an image file name"),
    *NORMALIZATION_CASES,
]

REPORT_CASES: list[Case] = [
    ("missing-folder", ["{files}/no-such-folder"], "no-such-folder does not exist"),
    ("a-file", ["{files}/invalid.yaml"], "invalid.yaml is a file, not an evaluation"),
    ("empty-folder", ["{files}/empty"], "no evaluation in"),
    ("not-per-sample", ["{files}/broken-eval"], "is not a robustcam per_sample.csv: it lacks the columns"),
    ("primary-statistic", ["{eval}", "--primary", "clean_nope:fgsm@8/255"], "'clean_nope' is not a CAM statistic"),
    (
        "primary-target",
        ["{eval}", "--primary", "clean_neg_peak_max:pgd@9/255"],
        "'pgd@9/255' is not a robustness column of this report",
    ),
    ("bootstrap-negative", ["{eval}", "--bootstrap", "-1"], "--bootstrap: -1 is not >= 0"),
    ("bootstrap-text", ["{eval}", "--bootstrap", "many"], "--bootstrap: 'many' is not an integer"),
    ("no-paths", [], "Missing argument 'paths'"),
    ("out-is-a-file", ["{eval}", "--out", "{files}/invalid.yaml"], "--out: {files}/invalid.yaml is a file, not a"),
]

SWEEP_CASES: list[Case] = [
    ("missing-file", ["{files}/missing-sweep.yaml"], "missing-sweep.yaml does not exist"),
    ("invalid-yaml", ["{files}/invalid.yaml"], "invalid.yaml: not valid YAML"),
    ("unknown-key", ["{files}/sweep_unknown_key.yaml"], "unknown key 'grids'"),
    ("grid-not-a-list", ["{files}/sweep_grid_scalar.yaml"], "grid.loss.name: 'ce' is not a list"),
    ("grid-empty-list", ["{files}/sweep_grid_empty.yaml"], "grid.loss.name must be a non-empty list of values"),
    ("grid-bad-value", ["{files}/sweep_grid_nan.yaml"], "optimizer.lr: nan is not a finite number"),
    ("missing-base", ["{files}/sweep_missing_base.yaml"], "nowhere.yaml does not exist"),
    ("bad-eval", ["{files}/sweep_bad_eval.yaml"], "unknown attack 'pgdd' (did you mean 'pgd'?)"),
    ("executor-typo", ["{files}/sweep_ok.yaml", "--executor", "rey"], "--executor: unknown executor 'rey'"),
    ("workers-zero", ["{files}/sweep_ok.yaml", "--workers", "0"], "--workers must be >= 1, got 0"),
    ("workers-text", ["{files}/sweep_ok.yaml", "--workers", "two"], "--workers: 'two' is not an integer"),
    ("out-is-a-file", ["{files}/sweep_ok.yaml", "--out", "{files}/invalid.yaml"], "--out: {files}/invalid.yaml is a"),
]

QUICKSTART_CASES: list[Case] = [
    ("epochs-zero", ["--epochs", "0"], "--epochs: 0 is not >= 1"),
    ("n-zero", ["--n", "0"], "--n: 0 is not >= 1"),
    ("device", ["--device", "npu"], "--device: device must be auto, cpu, cuda, cuda:N or mps, got 'npu'"),
]

ALL_CASES = [
    *[("train", (f"train-{i}", ["train", *argv], e)) for i, argv, e in TRAIN_CASES],
    *[("eval", (f"eval-{i}", ["eval", "--ckpt", "{ckpt}", *argv], e)) for i, argv, e in EVAL_CASES],
    *[("eval", case) for case in EVAL_CHECKPOINT_CASES],
    *[
        ("cam", (f"cam-{i}", ["cam", "--ckpt", "{ckpt}", "--out", "{files}/cams.png", *argv], e))
        for i, argv, e in CAM_CASES
    ],
    *[("report", (f"report-{i}", ["report", "--out", "{files}/report", *argv], e)) for i, argv, e in REPORT_CASES],
    *[("sweep", (f"sweep-{i}", ["sweep", *argv, "--dry-run"], e)) for i, argv, e in SWEEP_CASES],
    *[
        ("quickstart", (f"quickstart-{i}", ["quickstart", "--out", "{files}/quickstart", *argv], e))
        for i, argv, e in QUICKSTART_CASES
    ],
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Broken config, sweep, checkpoint and evaluation files, one of each kind of mistake."""
    root = tmp_path_factory.mktemp("hostile")
    texts = {
        "invalid.yaml": "epochs: [1,\n",
        "list.yaml": "- epochs: 3\n",
        "nan_lr.yaml": "optimizer:\n  lr: .nan\n",
        "sweep_ok.yaml": "base: {epochs: 1}\ngrid: {seed: [0]}\n",
        "sweep_unknown_key.yaml": "base: {epochs: 1}\ngrids: {seed: [0]}\n",
        "sweep_grid_scalar.yaml": "grid:\n  loss.name: ce\n",
        "sweep_grid_empty.yaml": "grid:\n  loss.name: []\n",
        "sweep_grid_nan.yaml": "grid:\n  optimizer.lr: [0.1, .nan]\n",
        "sweep_missing_base.yaml": "base: nowhere.yaml\ngrid: {seed: [0]}\n",
        "sweep_bad_eval.yaml": "grid: {seed: [0]}\neval: {attacks: [pgdd]}\n",
        "broken-eval/per_sample.csv": "index,label\n0,1\n",
    }
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "garbage.pt").write_bytes(os.urandom(256))
    (root / "factory.py").write_text("def build(num_classes):\n    return None\n")
    torch.save({"conv.weight": torch.zeros(2, 1, 3, 3)}, root / "bare.pt")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile-run") / "ce"
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "1", "--set", "model.options.width=4", "--out", str(out)])
    return out / "model.pt"


@pytest.fixture(scope="module")
def evaluation(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile-eval") / "eval"
    with pytest.raises(SystemExit):
        main(
            [
                "eval",
                "--ckpt",
                str(checkpoint),
                "--attacks",
                "fgsm",
                "--eps",
                "8/255",
                "--n",
                "12",
                "--no-sanity",
                "--out",
                str(out),
            ]
        )
    return out


def test_the_matrix_covers_every_command_with_at_least_60_cases() -> None:
    commands = {command for command, _ in ALL_CASES}
    assert commands == {"train", "eval", "cam", "report", "sweep", "quickstart"}
    assert len(ALL_CASES) >= 60
    assert len({case[0] for _, case in ALL_CASES}) == len(ALL_CASES), "case ids are unique"


@pytest.mark.parametrize(("command", "case"), ALL_CASES, ids=[case[0] for _, case in ALL_CASES])
def test_hostile_input_is_one_line_naming_the_bad_value(
    command: str, case: Case, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    _, argv, expected = case
    places = {"files": request.getfixturevalue("files")}
    if any("{ckpt}" in part for part in argv):
        places["ckpt"] = request.getfixturevalue("checkpoint")
    if any("{eval}" in part for part in argv):
        places["eval"] = request.getfixturevalue("evaluation")
    code, _, err = _run([part.format(**places) for part in argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert expected.format(**places) in lines[0], lines[0]


def test_a_bug_shows_its_traceback_and_asks_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import robustcam.config

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("no such thing")

    monkeypatch.setattr(robustcam.config, "load_train_config", broken)
    code, _, err = _run(["train", "--epochs", "1"], capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "KeyError: 'no such thing'" in err
    assert err.strip().splitlines()[-1] == f"error: {BUG_REPORT}"


def test_debug_mode_raises_user_errors_with_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustcam.errors import ConfigError

    monkeypatch.setenv("ROBUSTCAM_DEBUG", "1")
    with pytest.raises(ConfigError, match=r"--epochs: 0 is not >= 1"):
        main(["train", "--epochs", "0"])
