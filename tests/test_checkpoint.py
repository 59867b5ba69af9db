"""Tests for robustcam.checkpoint: round trips, atomic saves, safe loading, foreign state_dicts."""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from torch import Tensor, nn

from robustcam.checkpoint import (
    FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    checkpoint_meta,
    load_checkpoint,
    save_checkpoint,
)
from robustcam.checkpoint.adapt import NORMALIZATION_HINT, fit_model, resolve_normalization
from robustcam.errors import CheckpointError
from robustcam.models import CAMClassifier, Normalization, build_model, get_normalization, get_spec, list_models

SMALL_KWARGS = {"width": 4}
# Input sizes come from the registry: smallcnn's design size, the smallest resnet18 with 2x2 CAMs.
SMALL_SIZE = get_spec("smallcnn").input_size[1:]
RESNET_SIZE = get_spec("resnet18").min_input_size[1:]


def _touch(path: str) -> None:
    """What a malicious pickle would run on load; the flag file shows whether it ran."""
    Path(path).write_text("code ran")


class _Payload:
    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (_touch, (str(self.flag),))


class _TaggedDict(collections.OrderedDict):  # type: ignore[type-arg]
    """An OrderedDict subclass: harmless here, but not something weights-only loading may build."""


def _small_model(seed: int = 0) -> CAMClassifier:
    torch.manual_seed(seed)
    model = build_model("smallcnn", 10, 1, mean=[0.1307], std=[0.3081], **SMALL_KWARGS)
    # One training-mode pass so that BatchNorm's running statistics differ from their defaults.
    with torch.no_grad():
        model.train()(torch.rand(8, 1, *SMALL_SIZE))
    return model.eval()


@pytest.fixture(scope="module")
def small_model() -> CAMClassifier:
    return _small_model()


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(4, 1, *SMALL_SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def torchvision_resnet18() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        net.train()(torch.rand(2, 3, *RESNET_SIZE))
    return net.eval()


def _bare_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(CheckpointError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _meta() -> dict[str, Any]:
    return {
        "model_kwargs": SMALL_KWARGS,
        "dataset": {"name": "digits", "split": "train"},
        "input_shape": (1, 32, 32),  # a tuple is stored as a JSON list
        "loss": {"name": "hnc", "k": 3, "weight": 0.06, "kind": "kd"},
        "noise": None,
        "seed": 7,
        "metrics": {"test_acc": np.float64(0.875), "nan_metric": float("nan")},
    }


# --------------------------------------------------------------------------- round trips


def test_round_trip_gives_same_outputs_and_meta(
    tmp_path: Path, small_model: CAMClassifier, images: Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_checkpoint(tmp_path / "run" / "model.pt", small_model, _meta())
    assert path == tmp_path / "run" / "model.pt"
    model, meta = load_checkpoint(path)

    assert not model.training
    assert (model.arch, model.num_classes, model.in_channels) == ("smallcnn", 10, 1)
    torch.testing.assert_close(model(images), small_model(images), rtol=0, atol=0)
    for name, tensor in small_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    assert meta["arch"] == "smallcnn" and meta["num_classes"] == 10 and meta["in_channels"] == 1
    assert meta["mean"] == [0.1307] and meta["std"] == [0.3081]
    assert meta["input_shape"] == [1, 32, 32]
    assert meta["metrics"]["test_acc"] == 0.875 and type(meta["metrics"]["test_acc"]) is float
    assert set(meta["versions"]) == {"robustcam", "torch", "torchvision", "torchattacks", "foolbox", "python"}
    assert meta["loss"] == _meta()["loss"] and meta["dataset"] == _meta()["dataset"] and meta["seed"] == 7
    assert meta["noise"] is None and math.isnan(meta["metrics"]["nan_metric"])
    assert "warnings" not in meta
    assert meta.pop("normalization") == {
        "name": "mnist", "mean": [0.1307], "std": [0.3081], "source": "checkpoint",
        "origin": "the checkpoint's mean/std buffers", "change": NORMALIZATION_HINT,
    }  # fmt: skip
    assert _without_nan(checkpoint_meta(path)) == _without_nan(meta)
    run_meta = load_checkpoint(tmp_path / "run")[1]  # a run directory means its model.pt
    del run_meta["normalization"]
    assert _without_nan(run_meta) == _without_nan(meta)
    assert capsys.readouterr() == ("", "")  # library code never prints


def test_saved_file_is_a_plain_weights_only_checkpoint(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = save_checkpoint(tmp_path / "model.pt", small_model, {"model_kwargs": SMALL_KWARGS})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT
    assert set(raw) == {"format", "state_dict", "meta"}
    assert raw["meta"]["model_kwargs"] == SMALL_KWARGS


def test_safetensors_round_trip_with_meta(tmp_path: Path, small_model: CAMClassifier, images: Tensor) -> None:
    path = save_checkpoint(tmp_path / "model.safetensors", small_model, _meta())
    model, meta = load_checkpoint(path)
    torch.testing.assert_close(model(images), small_model(images), rtol=0, atol=0)
    assert meta["loss"] == {"name": "hnc", "k": 3, "weight": 0.06, "kind": "kd"}
    assert meta["model_kwargs"] == SMALL_KWARGS
    assert _without_nan(checkpoint_meta(path)) == _without_nan(meta)
    torch_meta = load_checkpoint(save_checkpoint(tmp_path / "model.pt", small_model, _meta()))[1]
    assert _without_nan(torch_meta) == _without_nan(meta)


def _without_nan(meta: dict[str, Any]) -> dict[str, Any]:
    # NaN != NaN, so equality checks leave the NaN metric out; the stored meta has no normalization record.
    kept = {key: value for key, value in meta.items() if key != "normalization"}
    return {**kept, "metrics": {k: v for k, v in meta["metrics"].items() if k != "nan_metric"}}


def test_bare_safetensors_without_meta_needs_arch(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(_bare_state_dict(small_model), str(path))
    assert checkpoint_meta(path) == {}
    assert "pass --arch" in _error(lambda: load_checkpoint(path))
    _, meta = load_checkpoint(path, arch="smallcnn", model_kwargs=SMALL_KWARGS)
    assert (meta["num_classes"], meta["in_channels"], meta["mean"]) == (10, 1, [0.1307])


# --------------------------------------------------------------------------- saving


def test_meta_must_be_plain_json(tmp_path: Path, small_model: CAMClassifier) -> None:
    with pytest.raises(TypeError, match=r"meta\['metrics'\]\['acc'\] is a torch.Tensor"):
        save_checkpoint(
            tmp_path / "a.pt",
            small_model,
            {"model_kwargs": SMALL_KWARGS, "metrics": {"acc": torch.tensor(1.0)}},
        )
    with pytest.raises(TypeError, match=r"meta\['classes'\] has a key 3"):
        save_checkpoint(tmp_path / "b.pt", small_model, {"model_kwargs": SMALL_KWARGS, "classes": {3: "three"}})
    with pytest.raises(TypeError, match=r"meta\['root'\] is a pathlib"):
        save_checkpoint(tmp_path / "c.pt", small_model, {"model_kwargs": SMALL_KWARGS, "root": tmp_path})
    assert not list(tmp_path.iterdir())


def test_meta_that_contradicts_the_model_is_refused(tmp_path: Path, small_model: CAMClassifier) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        save_checkpoint(tmp_path / "a.pt", small_model, {"model_kwargs": SMALL_KWARGS, "num_classes": 100})
    with pytest.raises(ValueError, match="normalises with mean"):
        save_checkpoint(tmp_path / "a.pt", small_model, {"model_kwargs": SMALL_KWARGS, "mean": [0.5]})


def test_model_that_cannot_be_rebuilt_is_refused(tmp_path: Path, small_model: CAMClassifier) -> None:
    with pytest.raises(ValueError, match=r"model_kwargs"):
        save_checkpoint(tmp_path / "model.pt", small_model, {})  # width=4 is not the factory default
    custom = CAMClassifier(nn.Conv2d(1, 4, 3), nn.Linear(4, 2), in_channels=1)
    with pytest.raises(ValueError, match="not a registered architecture"):
        save_checkpoint(tmp_path / "model.pt", custom, {})
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("failure", ["torch.save", "os.replace"])
def test_interrupted_save_keeps_the_old_checkpoint(
    tmp_path: Path, small_model: CAMClassifier, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    path = save_checkpoint(tmp_path / "model.pt", small_model, {"model_kwargs": SMALL_KWARGS, "seed": 1})
    before = path.read_bytes()

    def save_half(obj: object, handle: IO[bytes], *args: object, **kwargs: object) -> None:
        handle.write(before[: len(before) // 2])
        raise OSError("no space left on device")

    def refuse_rename(*args: object, **kwargs: object) -> None:
        raise OSError("rename failed")

    if failure == "torch.save":
        monkeypatch.setattr(torch, "save", save_half)
    else:
        monkeypatch.setattr(os, "replace", refuse_rename)
    with pytest.raises(OSError):
        save_checkpoint(path, _small_model(seed=1), {"model_kwargs": SMALL_KWARGS, "seed": 2})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left behind
    assert load_checkpoint(path)[1]["seed"] == 1


# --------------------------------------------------------------------------- refusing unsafe or broken files


@pytest.mark.parametrize("payload_kind", ["reduce", "dict_subclass", "function"])
def test_pickled_objects_are_refused_without_running_code(tmp_path: Path, payload_kind: str) -> None:
    flag = tmp_path / "flag"
    payloads: dict[str, object] = {
        "reduce": {"state_dict": {"head.weight": torch.zeros(2, 2)}, "extra": _Payload(flag)},
        "dict_subclass": _TaggedDict(weight=torch.zeros(2)),
        "function": {"weight": torch.zeros(2), "hook": _touch},
    }
    path = tmp_path / "model.pt"
    torch.save(payloads[payload_kind], path)

    message = _error(lambda: load_checkpoint(path, arch="smallcnn"))
    assert str(path) in message and "weights only" in message and "non-tensor object" in message
    expected_global = {"reduce": "_touch", "dict_subclass": "_TaggedDict", "function": "_touch"}[payload_kind]
    assert expected_global in message
    _error(lambda: checkpoint_meta(path))
    assert not flag.exists()

    # The same payload is live under plain unpickling, so the refusal above is what kept it from running.
    if payload_kind == "reduce":
        pickle.loads(pickle.dumps(_Payload(flag)))
        assert flag.exists()


@pytest.mark.parametrize("case", ["first_half", "empty", "text"])
def test_truncated_and_foreign_files_are_refused(tmp_path: Path, small_model: CAMClassifier, case: str) -> None:
    full = save_checkpoint(tmp_path / "full.pt", small_model, {"model_kwargs": SMALL_KWARGS}).read_bytes()
    data = {"first_half": full[: len(full) // 2], "empty": b"", "text": b"my notes, not a checkpoint\n"}[case]
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    message = _error(lambda: load_checkpoint(path))
    assert message.startswith(f"checkpoint {path} is not a readable PyTorch checkpoint")
    _error(lambda: checkpoint_meta(path))


def test_truncated_safetensors_and_non_state_dicts_are_refused(tmp_path: Path, small_model: CAMClassifier) -> None:
    tensors = save_checkpoint(tmp_path / "full.safetensors", small_model, {"model_kwargs": SMALL_KWARGS})
    (tmp_path / "half.safetensors").write_bytes(tensors.read_bytes()[:100])
    assert "not a readable safetensors file" in _error(lambda: load_checkpoint(tmp_path / "half.safetensors"))

    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    assert "holds a list, not a state_dict" in _error(lambda: load_checkpoint(tmp_path / "list.pt", arch="smallcnn"))
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "scalars.pt")
    assert "holds no state_dict" in _error(lambda: load_checkpoint(tmp_path / "scalars.pt", arch="smallcnn"))


def test_missing_file(tmp_path: Path) -> None:
    assert _error(lambda: load_checkpoint(tmp_path / "nope.pt")) == f"checkpoint {tmp_path / 'nope.pt'} not found"


def test_unknown_format_version(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "robustcam-checkpoint/2", "state_dict": small_model.state_dict(), "meta": {}}, path)
    message = _error(lambda: load_checkpoint(path))
    assert "'robustcam-checkpoint/2'" in message and FORMAT in message


def test_unknown_arch_lists_valid_ones(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": FORMAT, "state_dict": small_model.state_dict(), "meta": {"arch": "smalcnn"}}, path)
    message = _error(lambda: load_checkpoint(path))
    assert "'smalcnn'" in message and "did you mean 'smallcnn'" in message and "resnet18" in message


def test_bare_state_dict_without_arch_lists_valid_archs(tmp_path: Path, torchvision_resnet18: nn.Module) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18.state_dict(), path)
    message = _error(lambda: load_checkpoint(path))
    assert message.startswith(f"checkpoint {path} has no metadata; pass --arch (valid: ")
    assert all(name in message for name in list_models())


def test_wrong_shapes_give_a_one_line_summary(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = tmp_path / "model.pth"
    torch.save(small_model.state_dict(), path)
    message = _error(lambda: load_checkpoint(path, arch="smallcnn", num_classes=5, model_kwargs=SMALL_KWARGS))
    assert "2 size mismatches" in message
    assert "head.weight: checkpoint (10, 16) vs model (5, 16)" in message

    message = _error(lambda: load_checkpoint(path, arch="smallcnn", num_classes=10))  # default width 16
    assert "features.0.weight: checkpoint (4, 1, 3, 3) vs model (16, 1, 3, 3)" in message


def test_state_dict_of_another_arch_names_missing_and_unexpected_keys(
    tmp_path: Path, torchvision_resnet18: nn.Module
) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18.state_dict(), path)
    message = _error(lambda: load_checkpoint(path, arch="smallcnn"))
    assert "does not fit it" in message
    assert "missing keys (features.0.weight" in message and "unexpected keys (conv1.weight" in message


def test_arguments_that_contradict_the_metadata_are_refused(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = save_checkpoint(tmp_path / "model.pt", small_model, {"model_kwargs": SMALL_KWARGS})
    assert "records arch='smallcnn' but arch='resnet18'" in _error(lambda: load_checkpoint(path, arch="resnet18"))
    assert "num_classes=10 but num_classes=3" in _error(lambda: load_checkpoint(path, num_classes=3))


# --------------------------------------------------------------------------- foreign state_dicts


def test_torchvision_resnet18_state_dict_gives_the_same_logits(tmp_path: Path, torchvision_resnet18: nn.Module) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18.state_dict(), path)
    model, meta = load_checkpoint(path, arch="resnet18")  # num_classes read from fc.weight

    assert (model.num_classes, model.in_channels, model.head_source) == (10, 3, "fc")
    # no dataset named: ImageNet's statistics, said in a warning and in the record
    assert meta["mean"] == list(IMAGENET_MEAN) and meta["std"] == list(IMAGENET_STD)
    assert len(meta["warnings"]) == 1 and "ImageNet" in meta["warnings"][0]
    assert "pass normalization" in meta["warnings"][0]
    assert (meta["normalization"]["name"], meta["normalization"]["source"]) == ("imagenet", "default")
    x = torch.rand(2, 3, *RESNET_SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), torchvision_resnet18(model.normalize(x)))


def test_caller_overrides_assumed_normalisation(tmp_path: Path, torchvision_resnet18: nn.Module) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18.state_dict(), path)
    model, meta = load_checkpoint(path, arch="resnet18", num_classes=10, mean=[0.5, 0.5, 0.5], std=[0.25] * 3)
    assert meta["mean"] == [0.5] * 3 and "warnings" not in meta
    assert torch.equal(model.std.flatten(), torch.full((3,), 0.25))
    assert meta["normalization"]["source"] == "given"


@pytest.mark.parametrize("wrapper", ["data_parallel", "state_dict", "model", "net_data_parallel"])
def test_wrapped_state_dicts(tmp_path: Path, small_model: CAMClassifier, images: Tensor, wrapper: str) -> None:
    parallel = nn.DataParallel(small_model).state_dict()
    assert all(key.startswith("module.") for key in parallel)
    saved = {
        "data_parallel": parallel,
        "state_dict": {"state_dict": small_model.state_dict(), "epoch": 3},
        "model": {"model": small_model.state_dict(), "optimizer": {"lr": 0.1}},
        "net_data_parallel": {"net": parallel, "acc": 0.9},
    }[wrapper]
    path = tmp_path / "weights.pth"
    torch.save(saved, path)
    model, meta = load_checkpoint(path, arch="smallcnn", model_kwargs=SMALL_KWARGS)
    assert (meta["num_classes"], meta["in_channels"], meta["mean"]) == (10, 1, [0.1307])
    torch.testing.assert_close(model(images), small_model(images), rtol=0, atol=0)


def test_bare_state_dict_without_statistics_gets_the_datasets(tmp_path: Path, small_model: CAMClassifier) -> None:
    state = {k: v for k, v in small_model.state_dict().items() if k not in ("mean", "std")}
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    digits = Normalization("digits", (0.25,), (0.3,), "digits statistics")
    model, meta = load_checkpoint(path, arch="smallcnn", model_kwargs=SMALL_KWARGS, dataset_statistics=digits)
    assert meta["in_channels"] == 1  # read from the first convolution
    assert meta["mean"] == [0.25] and meta["std"] == [0.3] and float(model.mean) == 0.25
    assert "assumed the evaluated dataset's digits statistics" in meta["warnings"][0]
    assert meta["normalization"]["source"] == "dataset"
    # without a dataset, grey-scale inputs get neutral statistics (ImageNet's have three channels)
    _, meta = load_checkpoint(path, arch="smallcnn", model_kwargs=SMALL_KWARGS)
    assert (meta["mean"], meta["std"], meta["normalization"]["source"]) == ([0.5], [0.5], "default")


def test_torchvision_mobilenet_v3_large_state_dict_maps_its_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_large(num_classes=10)
    state = net.state_dict()
    path = tmp_path / "mobilenet.pth"
    torch.save(state, path)
    model, meta = load_checkpoint(path, arch="mobilenet_v3_large", num_classes=10)

    loaded = model.state_dict()
    hidden = state["classifier.0.weight"]
    assert torch.equal(loaded["features.features.17.0.weight"], hidden.reshape(*hidden.shape, 1, 1))
    assert torch.equal(loaded["features.features.17.0.bias"], state["classifier.0.bias"])
    assert torch.equal(loaded["head.weight"], state["classifier.3.weight"])
    assert torch.equal(loaded["features.features.0.0.weight"], state["features.0.0.weight"])
    assert meta["mean"] == list(IMAGENET_MEAN)


def test_assumed_statistics_come_from_the_spec(tmp_path: Path, torchvision_resnet18: nn.Module) -> None:
    source = tmp_path / "resnet18.pth"
    fitted = fit_model(
        source, "resnet18", torchvision_resnet18.state_dict(), num_classes=None, in_channels=None, kwargs={}
    )
    assert fitted.layout == "torchvision" and fitted.model.num_classes == 10
    # One more normalisation in the spec is all it takes: the loader has none of its own.
    other = Normalization("other", (0.25, 0.5, 0.75), (0.5,), "other statistics")
    spec = dataclasses.replace(get_spec("resnet18"), normalization=other)
    meta: dict[str, Any] = {}
    cifar10 = get_normalization("cifar10")
    warnings = resolve_normalization(source, spec, fitted, meta, dataset=cifar10)  # the architecture's win
    assert meta["mean"] == [0.25, 0.5, 0.75] and meta["std"] == [0.5, 0.5, 0.5]
    assert len(warnings) == 1
    assert "assumed the architecture's other statistics (torchvision layout): mean=[0.25, 0.5, 0.75]" in warnings[0]
    assert torch.equal(fitted.mapped["std"].flatten(), torch.full((3,), 0.5))


# --------------------------------------------------------------------------- normalisation (issue 11, part 1)


def _as_trained(net: nn.Module, x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """The network as it was trained: the statistics applied outside it."""
    return net((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))


def test_a_cifar_normalised_state_dict_with_the_cifar10_preset_gives_the_trained_logits(
    tmp_path: Path, torchvision_resnet18: nn.Module
) -> None:
    path = tmp_path / "cifar_resnet18.pth"
    torch.save(torchvision_resnet18.state_dict(), path)
    cifar10 = get_normalization("cifar10")
    x = torch.rand(8, 3, *RESNET_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        trained = _as_trained(torchvision_resnet18, x, cifar10.mean, cifar10.std)
        for kwargs in ({"normalization": "cifar10"}, {"dataset_statistics": cifar10}):
            model, meta = load_checkpoint(path, arch="resnet18", **kwargs)  # type: ignore[arg-type]
            assert float((model(x) - trained).abs().max()) < 1e-5, kwargs
            assert meta["normalization"]["name"] == "cifar10"
        assert meta["normalization"]["source"] == "dataset" and "dataset's" in meta["warnings"][0]
        imagenet, _ = load_checkpoint(path, arch="resnet18")  # what the issue saw: ImageNet's without a choice
        assert float((imagenet(x) - trained).abs().max()) > 1e-3


@pytest.mark.parametrize(("mean_key", "std_key"), [("mu", "sigma"), ("normalize.mean", "normalize.std")])
def test_normalisation_buffers_of_the_state_dict_are_used(
    tmp_path: Path, torchvision_resnet18: nn.Module, mean_key: str, std_key: str
) -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    state = {**torchvision_resnet18.state_dict(), mean_key: torch.tensor(mean).view(1, 3, 1, 1),
             std_key: torch.tensor(std).view(3, 1, 1)}  # fmt: skip
    path = tmp_path / "buffers.pth"
    torch.save({"state_dict": state}, path)
    cifar10 = get_normalization("cifar10")
    model, meta = load_checkpoint(path, arch="resnet18", dataset_statistics=cifar10)  # buffers beat the dataset
    x = torch.rand(2, 3, *RESNET_SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _as_trained(torchvision_resnet18, x, mean, std))
    assert "warnings" not in meta
    assert meta["normalization"]["source"] == "checkpoint"
    assert meta["normalization"]["origin"] == f"the checkpoint's {mean_key}/{std_key} buffers"

    _, overridden = load_checkpoint(path, arch="resnet18", normalization="none")
    assert overridden["mean"] == [0.0] * 3 and overridden["normalization"]["source"] == "given"
    assert "normalisation overridden by the caller: the checkpoint's" in overridden["warnings"][0]


def test_given_statistics_must_fit_the_model(tmp_path: Path, small_model: CAMClassifier) -> None:
    path = save_checkpoint(tmp_path / "model.pt", small_model, {"model_kwargs": SMALL_KWARGS})
    message = _error(lambda: load_checkpoint(path, normalization="cifar10"))  # a grey-scale model
    assert "CIFAR-10 statistics: mean has 3 values" in message and "the model has 1 input channel" in message
    with pytest.raises(ValueError, match="not both"):
        load_checkpoint(path, normalization="mnist", mean=[0.5], std=[0.5])
    model, meta = load_checkpoint(path, normalization=get_normalization("mnist"))
    assert float(model.mean) == pytest.approx(0.1307) and "warnings" not in meta  # the same as stored


def test_folders_and_hugging_face_caches_mean_their_weights(tmp_path: Path, small_model: CAMClassifier) -> None:
    state = small_model.state_dict()
    snapshot = tmp_path / "models--me--smallcnn" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (tmp_path / "models--me--smallcnn" / "refs").mkdir()
    (tmp_path / "models--me--smallcnn" / "refs" / "main").write_text("0123abc\n")
    bin_folder = tmp_path / "hub_download"
    bin_folder.mkdir()
    torch.save(state, bin_folder / "pytorch_model.bin")
    for folder in (tmp_path / "models--me--smallcnn", snapshot, bin_folder):
        model, _ = load_checkpoint(folder, arch="smallcnn", model_kwargs=SMALL_KWARGS)
        assert torch.equal(model.head.weight, small_model.head.weight), folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "without any of model.pt, model.safetensors, pytorch_model.bin" in _error(lambda: load_checkpoint(empty))
