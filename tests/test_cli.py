"""The ``robustcam`` command: help everywhere, one-line errors with exit code 2, a real train run."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustcam.checkpoint import load_checkpoint
from robustcam.cli import app, main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


@pytest.mark.parametrize("command", [[], *[[c.name] for c in app.registered_commands if c.name]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([*command, "--help"], capsys)
    assert code == 0
    assert "Usage:" in out and len(out) > 200


def test_train_help_lists_the_registered_choices(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(["train", "--help"], capsys)
    flat = " ".join(out.split())
    for name in ("resnet18_cifar", "hnc", "cam_loss", "digits_scene"):
        assert name in flat


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--arch", "resnet81"], "unknown architecture 'resnet81' (did you mean 'resnet18'?)"),
        (["train", "--loss", "hcn"], "unknown loss 'hcn' (did you mean 'hnc'?)"),
        (["train", "--set", "optimizer.learning_rate=1"], "unknown key 'optimizer.learning_rate'"),
        (["train", "--config", "missing.yaml"], "config file missing.yaml does not exist"),
        (["train", "--dataset", "cifar10", "--data-root", "/nonexistent"], "/nonexistent"),
        (["train", "--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert expected in " ".join(err.split())
    assert "Traceback" not in err


def test_train_writes_a_run_and_prints_the_closing_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "smallcnn",
        "--loss",
        "focal",
        "--epochs",
        "1",
        "--set",
        "model.options.width=4",
        "--out",
        str(out),
    ]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0
    assert {"model.pt", "config.yaml", "train_log.csv", "complete.json"} <= {p.name for p in out.iterdir()}
    flat = " ".join(stdout.split())
    assert "test accuracy" in flat and "train focal" in flat
    _, meta = load_checkpoint(out / "model.pt")
    assert f"{100 * meta['metrics']['test_acc']:.2f}%" in flat
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and "already holds this finished run" in " ".join(stdout.split())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ce"
    main_args = ["train", "--epochs", "2", "--set", "model.options.width=4", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(main_args)
    return out / "model.pt"


def test_eval_writes_records_and_prints_the_matrix(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from robustcam.evaluate import summarize

    out = tmp_path / "report"
    argv = [
        "eval",
        "--ckpt",
        str(checkpoint),
        "--attacks",
        "fgsm,pgd",
        "--eps",
        "2/255,8/255",
        "--n",
        "40",
        "--steps",
        "3",
        "--out",
        str(out),
    ]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0
    flat = " ".join(stdout.split())
    assert "Linf 2/255" in flat and "Linf 8/255" in flat and "worst case" in flat
    per_sample = pd.read_csv(out / "per_sample.csv", keep_default_na=False, na_values=[""])
    summary = pd.read_csv(out / "summary.csv")
    assert len(per_sample) == 40 * 2 * 2
    recomputed = summarize(per_sample)
    pd.testing.assert_frame_equal(
        recomputed[["attack", "eps", "robust_acc"]], summary[["attack", "eps", "robust_acc"]], check_dtype=False
    )
    payload = __import__("json").loads((out / "summary.json").read_text())
    assert payload["config"]["eval"]["steps"] == 3 and payload["meta"]["versions"]["torchattacks"]
    assert payload["config"]["data"]["name"] == "digits"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--attacks", "pgdd"], "unknown attack 'pgdd' (did you mean 'pgd'?)"),
        (["--eps", "2"], "Linf eps must be in [0, 1]"),
        (["--eps", "-1/255"], "eps must be >= 0"),
        (["--backend", "fool"], "unknown backend 'fool'; valid: autoattack, foolbox, native, torchattacks"),
        (["--attacks", "cw", "--eps", "8/255"], "eps gives Linf budgets but no Linf attack runs (cw)"),
        (["--attacks", "apgd", "--backend", "foolbox"], "backends for it: native, torchattacks"),
        (["--attack-param", "cw.cc=1", "--attacks", "cw"], "unknown parameter(s) cc for attack 'cw'"),
        (["--data", "cifar10", "--data-root", "/nonexistent"], "/nonexistent"),
    ],
)
def test_eval_bad_input_is_one_line_and_exit_code_2(
    checkpoint: Path, extra: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["eval", "--ckpt", str(checkpoint), *extra], capsys)
    assert code == 2
    assert expected in " ".join(err.split())
    assert "Traceback" not in err


def test_examples_stay_consistent_with_a_batch_size_below_eight(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd
    import torch

    out = tmp_path / "small-batches"
    argv = [
        "eval",
        "--ckpt",
        str(checkpoint),
        "--attacks",
        "fgsm",
        "--eps",
        "8/255",
        "--n",
        "10",
        "--batch-size",
        "3",
        "--no-sanity",
        "--out",
        str(out),
    ]
    code, _, _ = _run(argv, capsys)
    assert code == 0
    examples = torch.load(out / "examples.pt", weights_only=True)
    kept = len(examples["images"])
    assert kept == 3, "the first batch holds 3 samples"
    assert len(examples["indices"]) == len(examples["labels"]) == len(examples["cams"]) == kept
    assert all(len(adv["images"]) == kept for adv in examples["adv"].values())
    evaluated = sorted(pd.read_csv(out / "per_sample.csv")["index"].unique())
    assert examples["indices"].tolist() == evaluated[:kept]


def test_version_and_help_exit_with_code_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--version"], capsys)
    assert code == 0 and out.startswith("robustcam ") and not err
    code, out, _ = _run(["eval", "-h"], capsys)
    assert code == 0 and "--ckpt" in out


def test_eval_of_a_bare_state_dict_needs_an_arch(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from robustcam.checkpoint import load_checkpoint as load

    model, _ = load(checkpoint)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    code, _, err = _run(["eval", "--ckpt", str(bare)], capsys)
    assert code == 2 and "has no metadata; pass --arch" in " ".join(err.split())
    code, _, err = _run(["eval", "--ckpt", str(bare), "--arch", "smallcnn"], capsys)
    assert code == 2 and "does not fit arch 'smallcnn'" in " ".join(err.split())  # trained with width 4


def test_quickstart_trains_evaluates_and_reports_then_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "quickstart"
    code, stdout, _ = _run(["quickstart", "--out", str(out), "--epochs", "1", "--n", "16"], capsys)
    assert code == 0
    for loss in ("ce", "focal", "cam_loss", "hnc"):
        assert (out / loss / "model.pt").is_file()
        assert (out / loss / "eval" / "per_sample.csv").is_file()
        assert (out / loss / "eval" / "complete.json").is_file()
    report = out / "report"
    assert {"models.csv", "correlations.csv", "samples_auroc.csv", "report.md"} <= {p.name for p in report.iterdir()}
    assert "quickstart finished" in stdout
    code, stdout, _ = _run(["quickstart", "--out", str(out), "--epochs", "1", "--n", "16"], capsys)
    flat = " ".join(stdout.split())
    assert code == 0 and flat.count("evaluation reused") == 4 and flat.count(": reused, test accuracy") == 4


def test_report_reads_saved_evaluations(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evals = []
    for seed in (0, 1):
        out = tmp_path / f"eval{seed}"
        _run(
            [
                "eval",
                "--ckpt",
                str(checkpoint),
                "--attacks",
                "fgsm",
                "--eps",
                "8/255",
                "--n",
                "24",
                "--seed",
                str(seed),
                "--no-sanity",
                "--out",
                str(out),
            ],
            capsys,
        )
        evals.append(str(out))
    code, _, _ = _run(["report", *evals, "--out", str(tmp_path / "compare"), "--bootstrap", "50"], capsys)
    assert code == 0
    models = __import__("pandas").read_csv(tmp_path / "compare" / "models.csv")
    assert len(models) == 2 and "fgsm@8/255" in models.columns
    code, _, err = _run(["report", str(tmp_path / "nothing-here")], capsys)
    assert code == 2 and "nothing-here" in err
    code, _, err = _run(["report", *evals, "--out", str(tmp_path / "c2"), "--primary", "clean_nope:fgsm@8/255"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'clean_nope' is not a CAM statistic of this report; valid: clean_neg_peak_max" in " ".join(err.split())
    code, _, _ = _run(
        ["report", *evals, "--out", str(tmp_path / "c3"), "--primary", "clean_neg_peak_max:fgsm@8/255"], capsys
    )
    correlations = __import__("pandas").read_csv(tmp_path / "c3" / "correlations.csv")
    assert code == 0 and correlations["family"].iloc[0] == "primary"


def test_cam_writes_the_grid_and_its_statistics(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cams.png"
    code, _, _ = _run(
        ["cam", "--ckpt", str(checkpoint), "--n", "3", "--attack", "fgsm", "--eps", "8/255", "--out", str(out)], capsys
    )
    assert code == 0 and out.stat().st_size > 1000
    table = __import__("pandas").read_csv(out.with_suffix(".csv"))
    assert len(table) == 3 and {"clean_neg_peak_max", "adv_neg_peak_max"} <= set(table.columns)
    code, _, err = _run(["cam", "--ckpt", str(checkpoint), "--indices", "99999", "--out", str(out)], capsys)
    assert code == 2 and "--indices must be in [0, 359]" in err


def test_eval_of_a_bare_state_dict_says_which_normalisation_it_used(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import torch

    model, meta = load_checkpoint(checkpoint)
    bare = tmp_path / "bare.pth"
    torch.save({k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}, bare)
    common = ["eval", "--ckpt", str(bare), "--arch", "smallcnn", "--model-kwargs", '{"width": 4}', "--data", "digits",
              "--attacks", "fgsm", "--eps", "8/255", "--n", "8", "--no-sanity"]  # fmt: skip
    for extra, source, name in ((["--mean", "0.25", "--std", "0.5"], "given", "custom"), ([], "dataset", "digits")):
        out = tmp_path / f"eval-{source}"
        code, stdout, _ = _run([*common, *extra, "--out", str(out)], capsys)
        assert code == 0
        record = json.loads((out / "summary.json").read_text())["config"]["normalization"]
        assert (record["source"], record["name"]) == (source, name)
        assert "--normalization NAME (imagenet, cifar10, cifar100, mnist, none)" in record["change"]
        flat = " ".join(stdout.split())
        assert f"normalisation: {name} mean={record['mean']}" in flat and "change with --normalization" in flat
    # without a choice a bare state_dict gets the evaluated dataset's statistics: the trained model's here
    assert record["mean"] == meta["mean"] and record["std"] == meta["std"]


def test_without_timm_a_timm_arch_is_one_line_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import torch

    from robustcam.models import MODELS

    monkeypatch.setitem(sys.modules, "timm", None)  # as if the timm extra were not installed
    monkeypatch.setattr(MODELS, "_resolved", {})  # names resolved earlier in the session are forgotten
    bare = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 4)}, bare)
    code, _, err = _run(["eval", "--ckpt", str(bare), "--arch", "timm:resnet50", "--data", "digits"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert 'timm architectures need the optional timm package: pip install -e ".[timm]"' in err
    code, _, err = _run(["train", "--arch", "timm:resnet50", "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and 'pip install -e ".[timm]"' in err


def test_the_attack_details_table_is_readable_at_80_columns() -> None:
    import pandas as pd
    from rich.console import Console

    from robustcam.cli import _attack_details

    rows = [
        ("pgd", "native", "Linf", 8 / 255, 0.4375, 0.5625, 0.0314, 16, 228.0),
        ("pgd", "torchattacks", "Linf", 8 / 255, 0.4375, 0.5625, 0.0314, 16, 336.0),
        ("autoattack-ta", "torchattacks", "Linf", 8 / 255, 0.375, 0.625, 0.0314, 16, 2.0),
        ("autoattack", "autoattack", "Linf", 8 / 255, 0.3125, 0.6875, 0.0314, 16, 1.0),
        ("cw", "foolbox", "L2", 0.5, 0.625, 0.375, 0.3613, 16, 24.0),
    ]
    columns = ["attack", "backend", "norm", "eps", "robust_acc", "attack_success_rate", "median_norm",
               "n_attacked", "images_per_s"]  # fmt: skip
    summary = pd.DataFrame(rows, columns=columns)
    console = Console(record=True, width=80, force_terminal=False, color_system=None)
    console.print(_attack_details(summary, summary))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for name in ("pgd/nat", "pgd/ta", "autoattack-ta/ta", "autoattack/aa", "cw/fb", "aa: autoattack"):
        assert name in " ".join(text.split()), name
