"""Attack registry, hyperparameters, eps parsing and the backend support matrix."""

from __future__ import annotations

import re

import pytest
import torchattacks

from robustcam.attacks import (
    ATTACKS,
    NORMS,
    AttackNotSupportedError,
    BoundedAttack,
    BuildContext,
    MinimalAttack,
    build_attack,
    check_supported,
    format_eps,
    get_backend,
    list_attacks,
    parse_eps,
    parse_eps_list,
)
from robustcam.attacks.library import PGD
from robustcam.errors import InputError, ParameterError
from robustcam.models import CAMClassifier
from robustcam.registry import UnknownNameError

ALL_ATTACKS = ["apgd", "autoattack-ta", "cw", "fgsm", "pgd", "pgd_l2"]  # those torchattacks runs
OFFICIAL_ATTACKS = ["apgd-ce", "apgd-t", "autoattack", "autoattack_l2", "fab-t", "square"]  # the authors' code
REGISTERED = sorted([*ALL_ATTACKS, *OFFICIAL_ATTACKS])
FOOLBOX_ATTACKS = {"cw", "fgsm", "pgd", "pgd_l2"}
NATIVE_ATTACKS = {"apgd", "fgsm", "pgd", "pgd_l2"}


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_attack() -> None:
    assert list_attacks() == REGISTERED


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_builds_with_defaults_and_its_repr_shows_its_parameters(name: str) -> None:
    attack = build_attack(name)
    assert attack.name == name and attack.norm in NORMS
    text = repr(attack)
    assert text.startswith(f"{name}(") and text.endswith(")")
    for key, value in attack.params().items():
        assert f"{key}={value!r}" in text
    assert build_attack(name, **attack.params()) == attack, "params() rebuilds an equal attack"


def test_repr_shows_given_hyperparameters() -> None:
    assert repr(build_attack("pgd", steps=7)) == "pgd(steps=7, step_factor=2.5, random_start=True, restarts=1)"
    assert repr(build_attack("fgsm")) == "fgsm()"
    assert repr(build_attack("cw", c=0.5)) == "cw(c=0.5, kappa=0.0, steps=100, lr=0.01)"


def test_attacks_compare_and_hash_by_parameters() -> None:
    assert build_attack("pgd", steps=5) == build_attack("pgd", steps=5)
    assert build_attack("pgd", steps=5) != build_attack("pgd", steps=6)
    assert build_attack("pgd") != build_attack("pgd_l2"), "same parameters, different attack"
    assert len({build_attack("pgd", steps=5), build_attack("pgd", steps=5), build_attack("fgsm")}) == 2


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown parameter\(s\) stepz for attack 'pgd'; valid: steps, step_factor, random_start, restarts",
    ):
        build_attack("pgd", stepz=3)
    with pytest.raises(ValueError, match="valid: none"):
        build_attack("fgsm", eps=0.1)


def test_unknown_attack_suggests_the_closest_name() -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"unknown attack 'pgdd' \(did you mean 'pgd'\?\); valid: " + ", ".join(REGISTERED),
    ):
        build_attack("pgdd")


@pytest.mark.parametrize(
    ("name", "params", "argument"),
    [
        ("pgd", {"steps": 0}, "steps"),
        ("pgd", {"step_factor": 0.0}, "step_factor"),
        ("cw", {"c": -1.0}, "c"),
        ("cw", {"lr": 0.0}, "lr"),
        ("apgd", {"loss": "hinge"}, "loss"),
        ("autoattack", {"version": "fast"}, "version"),
        ("autoattack-ta", {"version": "fast"}, "version"),
    ],
)
def test_bad_hyperparameters_name_the_argument(name: str, params: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        build_attack(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("pgd", {"steps": "abc"}, "pgd.steps: 'abc' is not an integer"),
        ("pgd", {"steps": 2.5}, "pgd.steps: 2.5 is not an integer"),
        ("pgd", {"step_factor": float("nan")}, "pgd.step_factor: nan is not a finite number"),
        ("pgd", {"random_start": "no"}, "pgd.random_start: 'no' is not a boolean"),
        ("cw", {"lr": float("inf")}, "cw.lr: inf is not a finite number"),
        ("cw", {"kappa": "big"}, "cw.kappa: 'big' is not a number"),
        ("apgd", {"restarts": 0}, "restarts must be an integer >= 1, got 0"),
        ("pgd", {"restarts": 0}, "restarts must be an integer >= 1, got 0"),
    ],
)
def test_hyperparameters_are_typed_from_the_class_annotations(
    name: str, params: dict[str, object], expected: str
) -> None:
    with pytest.raises(ParameterError, match=expected) as info:
        build_attack(name, **params)
    assert info.value.parameter == next(iter(params))


def test_bad_eps_is_an_input_error() -> None:
    for text in ("nan", "inf", "abc", "1/0"):
        with pytest.raises(InputError, match=text.split("/")[0]):
            parse_eps_list([text], norm="L2")


def test_bounded_attacks_need_an_eps(tiny_model: CAMClassifier) -> None:
    with pytest.raises(ValueError, match="'pgd' is bounded: it needs an eps"):
        build_attack("pgd").build("torchattacks", BuildContext(tiny_model, None, 10, 0))
    assert isinstance(build_attack("cw"), MinimalAttack) and isinstance(build_attack("pgd"), BoundedAttack)
    assert build_attack("cw").kind == "minimal" and build_attack("pgd").kind == "bounded"


# --------------------------------------------------------------------------- eps


def test_parse_eps_fractions_are_exact() -> None:
    assert parse_eps("8/255") == 8 / 255
    assert parse_eps(" 8 / 255 ") == 8 / 255
    assert parse_eps("0.5") == 0.5
    assert parse_eps("1e-2") == 0.01
    assert parse_eps(0.25) == 0.25 and parse_eps(1) == 1.0


@pytest.mark.parametrize("text", ["abc", "8/", "1/2/3", ""])
def test_parse_eps_rejects_text_that_is_not_a_number(text: str) -> None:
    with pytest.raises(ValueError, match="is not a number or a fraction such as 8/255"):
        parse_eps(text)


def test_parse_eps_rejects_division_by_zero() -> None:
    with pytest.raises(ValueError, match="divides by zero"):
        parse_eps("8/0")


def test_parse_eps_list_sorts_and_deduplicates() -> None:
    assert parse_eps_list("8/255, 2/255,,4/255", norm="Linf") == [2 / 255, 4 / 255, 8 / 255]
    assert parse_eps_list(["0.5", 0.5, "1/2", 0.25], norm="Linf") == [0.25, 0.5]
    assert parse_eps_list(None, norm="Linf") == []


def test_parse_eps_list_rejects_negative_eps() -> None:
    with pytest.raises(ValueError, match=r"eps must be >= 0, got -0\.1"):
        parse_eps_list(["-0.1", "0.2"], norm="L2")


def test_linf_eps_above_one_is_an_error_but_l2_eps_is_not() -> None:
    with pytest.raises(ValueError, match=r"Linf eps must be in \[0, 1\].*got 1\.5"):
        parse_eps_list("1.5", norm="Linf")
    with pytest.raises(ValueError, match="got 8"):
        parse_eps_list(["8"], norm="Linf")  # 8 instead of 8/255: the classic slip
    assert parse_eps_list("2.5, 0.5", norm="L2") == [0.5, 2.5]
    assert parse_eps_list("1", norm="Linf") == [1.0]


def test_format_eps() -> None:
    assert format_eps(8 / 255, "Linf") == "8/255"
    assert format_eps(parse_eps("1/255"), "Linf") == "1/255"
    assert format_eps(0.5, "Linf") == "0.5"  # 127.5/255 is no whole 255th
    assert format_eps(0.03, "Linf") == "0.03"
    assert format_eps(1.0, "Linf") == "255/255"
    assert format_eps(8 / 255, "L2") == "0.0313725", "L2 budgets are never written as 255ths"
    assert format_eps(2.0, "L2") == "2"


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_backend_support_matrix(name: str) -> None:
    attack = build_attack(name)
    assert get_backend("torchattacks").supports(attack)
    assert get_backend("foolbox").supports(attack) == (name in FOOLBOX_ATTACKS)
    assert get_backend("native").supports(attack) == (name in NATIVE_ATTACKS)
    expected = "native" if name in ("pgd", "pgd_l2") else "torchattacks"  # issue 10's benchmark decided
    assert attack.default_backend() == expected, name


@pytest.mark.parametrize(("name", "able"), [("apgd", "native, torchattacks"), ("autoattack-ta", "torchattacks")])
def test_check_supported_names_the_backends_that_can_run_it(name: str, able: str) -> None:
    check_supported(build_attack(name), "torchattacks")
    with pytest.raises(
        AttackNotSupportedError,
        match=rf"attack '{name}' cannot run on backend 'foolbox'; backends for it: {able}$",
    ):
        check_supported(build_attack(name), "foolbox")


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(
        UnknownNameError,
        match=re.escape("unknown backend 'cleverhans'; valid: autoattack, foolbox, native, torchattacks"),
    ):
        get_backend("cleverhans")


# --------------------------------------------------------------------------- PGD step size


@pytest.mark.parametrize(("steps", "step_factor", "eps"), [(10, 2.5, 8 / 255), (20, 2.0, 4 / 255), (7, 1.0, 0.3)])
def test_pgd_step_size_is_step_factor_times_eps_over_steps(
    tiny_model: CAMClassifier, steps: int, step_factor: float, eps: float
) -> None:
    attack = build_attack("pgd", steps=steps, step_factor=step_factor)
    assert isinstance(attack, PGD)
    expected = step_factor * eps / steps
    assert attack.step_size(eps) == pytest.approx(expected, rel=1e-12)
    runner = attack.build("torchattacks", BuildContext(tiny_model, eps, 10, 0))
    assert isinstance(runner, torchattacks.PGD)
    assert (runner.eps, runner.steps, runner.random_start) == (eps, steps, True)
    assert runner.alpha == pytest.approx(expected, rel=1e-12)
    fb_runner = attack.build("foolbox", BuildContext(tiny_model, eps, 10, 0))
    assert fb_runner.abs_stepsize == pytest.approx(expected, rel=1e-12) and fb_runner.steps == steps


def test_default_pgd_is_madry_ten_steps_of_a_quarter_eps() -> None:
    attack = build_attack("pgd")
    assert isinstance(attack, PGD)
    assert attack.step_size(8 / 255) == pytest.approx(2.5 * (8 / 255) / 10, rel=1e-12)
    assert attack.step_size(0.1) == pytest.approx(0.025, rel=1e-12)
