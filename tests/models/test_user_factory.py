"""A user's own model factory (``file.py:function``, ``module.path:function``): adapted like a
torchvision network, its own state_dict keys load, and every failure is one line naming the value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from robustcam.checkpoint import load_checkpoint
from robustcam.config import ModelConfig
from robustcam.errors import CheckpointError
from robustcam.models import CAMClassifier, FactoryError, NotCAMCapableError, build_model, get_spec
from robustcam.models.gradcam import GradCAMClassifier
from robustcam.models.normalization import NORMALIZATIONS
from robustcam.models.user_factory import load_factory

FACTORIES = """
import torch
from torch import nn

from robustcam.models import build_model


class Net(nn.Module):
    def __init__(self, num_classes, width, in_channels=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.body(x)), 1))


def build_net(num_classes, width=4):
    return Net(num_classes, width)


def build_grey(num_classes, in_channels, width=3):
    return Net(num_classes, width, in_channels)


def needs_depth(num_classes, *, depth):
    return Net(num_classes, depth)


def build_cam_classifier(num_classes, in_channels=3):
    return build_model("smallcnn", num_classes, in_channels, width=2)


def build_mlp_head(num_classes):
    net = Net(num_classes, 4)
    net.classifier = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, num_classes))
    return net


def build_softmax_head(num_classes):
    net = Net(num_classes, 4)
    net.classifier = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, num_classes), nn.Softmax(dim=1))
    return net


def returns_a_number(num_classes):
    return 42


def raises(num_classes):
    raise RuntimeError("out of\\nmemory")


def wrong_classes(num_classes):
    return Net(num_classes + 1, 4)


def no_num_classes():
    return Net(2, 4)


NOT_A_FUNCTION = 3
"""


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "my_models.py"
    path.write_text(textwrap.dedent(FACTORIES))
    return path


def test_a_factory_network_is_split_at_its_pooling_and_loads_its_own_keys(factories: Path, tmp_path: Path) -> None:
    arch = f"{factories}:build_net"
    model = build_model(arch, 6, width=5)
    assert isinstance(model, CAMClassifier) and model.arch == arch and model.head_source == "classifier"
    assert (model.num_classes, model.num_features) == (6, 5)
    assert get_spec(arch).source == "user"

    namespace: dict[str, object] = {}
    exec(compile(factories.read_text(), str(factories), "exec"), namespace)  # the test's own copy of the network
    torch.manual_seed(0)
    net = namespace["build_net"](num_classes=6, width=5).eval()  # type: ignore[operator]
    path = tmp_path / "mine.pt"
    torch.save(net.state_dict(), path)  # keyed body.0.weight ... classifier.weight, as the user saved it
    loaded, meta = load_checkpoint(path, arch=arch, model_kwargs={"width": 5}, normalization="none")
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = loaded.forward_cams(x)
        torch.testing.assert_close(output.logits, net(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(output.cams.mean(dim=(2, 3)), output.logits, atol=1e-6, rtol=1e-6)
    assert meta["model_kwargs"] == {"width": 5} and meta["num_classes"] == 6


def test_in_channels_go_to_a_factory_that_takes_them(factories: Path) -> None:
    model = build_model(f"{factories}:build_grey", 3, in_channels=1)
    assert model.in_channels == 1 and model.features.get_submodule("body.0").in_channels == 1
    rebuilt = build_model(f"{factories}:build_net", 3, in_channels=1)  # the first convolution is replaced
    assert rebuilt.features.get_submodule("body.0").in_channels == 1


def test_a_factory_can_return_a_cam_classifier(factories: Path, tmp_path: Path) -> None:
    arch = f"{factories}:build_cam_classifier"
    model = build_model(arch, 4, in_channels=1)
    assert model.arch == arch and model.num_classes == 4
    path = tmp_path / "cam.pt"
    torch.save(model.state_dict(), path)  # keyed like a CAMClassifier, mean/std included
    loaded, meta = load_checkpoint(path, arch=arch)
    assert torch.equal(loaded.head.weight, model.head.weight) and meta["normalization"]["source"] == "checkpoint"


def test_a_module_path_names_a_factory_too(factories: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(factories.parent))
    assert build_model("my_models:build_net", 2).head_source == "classifier"
    # user options are the factory's business: a config takes them as they are
    assert ModelConfig(arch="my_models:build_net", options={"width": 8}).options == {"width": 8}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("missing.py:build_net", "model factory file missing.py not found"),
        ("{file}:build_nett", "has no function 'build_nett' (its functions: Net, build_cam_classifier, build_grey"),
        ("{file}:NOT_A_FUNCTION", "{file}:NOT_A_FUNCTION is 3 of type int, not a function"),
        ("{file}:returns_a_number", "model factory {file}:returns_a_number returned 42 of type int, not a torch"),
        ("{file}:raises", "model factory {file}:raises raised RuntimeError: out of memory"),
        ("{file}:wrong_classes", "returned a network with 3 classes, not num_classes=2"),
        ("{file}:no_num_classes", "model factory {file}:no_num_classes must take a num_classes argument"),
        ("{file}:needs_depth", "raised TypeError"),
        ("no_such_module_here:build", "no module named 'no_such_module_here' for the model factory"),
        ("{file}:", "is not a factory: write <module.path>:<function> or <path/to/file.py>:<function>"),
    ],
)
def test_factory_errors_are_one_line_naming_the_value(factories: Path, target: str, expected: str) -> None:
    arch, wanted = target.format(file=factories), expected.format(file=factories)
    with pytest.raises(FactoryError) as info:
        build_model(arch, 2)
    assert wanted in str(info.value) and "\n" not in str(info.value)


def test_a_head_that_is_not_one_linear_gets_gradcam_maps_and_its_own_keys_load(factories: Path, tmp_path: Path) -> None:
    arch = f"{factories}:build_mlp_head"
    model = build_model(arch, 2)
    assert isinstance(model, GradCAMClassifier) and model.head_source == "classifier.2"
    assert model.cam_layer == "body", "the last layer with maps of more than one position (the pooling has one)"
    torch.manual_seed(5)
    net = load_factory(arch)(2).eval()  # the user's network itself, saved in its own keys
    path = tmp_path / "mine.pt"
    torch.save(net.state_dict(), path)
    loaded, _ = load_checkpoint(path, arch=arch, normalization=NORMALIZATIONS["none"])
    assert isinstance(loaded, GradCAMClassifier)
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
        _, maps, classes = loaded.class_maps(x, torch.tensor([0, 1, 1]), 1)
    assert maps.shape == (3, 2, 12, 12) and torch.equal(classes[:, 0], torch.tensor([0, 1, 1]))


def test_a_network_whose_output_is_no_linear_has_no_gradcam_either(factories: Path) -> None:
    with pytest.raises(NotCAMCapableError, match=r"is not the output of one nn.Linear") as info:
        build_model(f"{factories}:build_softmax_head", 2)
    assert "\n" not in str(info.value)


def test_loading_through_a_bad_factory_is_one_checkpoint_error(factories: Path, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"classifier.weight": torch.zeros(2, 4)}, path)
    for arch, expected in ((str(tmp_path / "gone.py:f"), "gone.py not found"),
                           (f"{factories}:returns_a_number", "returned 42 of type int")):  # fmt: skip
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, arch=arch)
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_never_names_code_to_run(factories: Path, tmp_path: Path) -> None:
    from robustcam.checkpoint import save_checkpoint

    arch = f"{factories}:build_net"
    path = save_checkpoint(tmp_path / "model.pt", build_model(arch, 3), {})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)  # its meta names the factory; only the user may
    message = str(info.value)
    assert f"was built by the model factory {arch!r}; robustcam runs only code you name: pass --arch {arch}" in message
    assert load_checkpoint(path, arch=arch)[0].arch == arch
    assert load_checkpoint(path, factory_from_meta=True)[1]["arch"] == arch  # a run of the user's own config
