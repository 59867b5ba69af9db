"""model_table: every number recomputes from the per-sample records (checked by hand)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustcam.cam import STAT_NAMES
from robustcam.report import (
    check_evaluations,
    headline_target,
    load_evaluations,
    model_table,
    reference_setting,
    robust_accuracies,
    robustness_columns,
    statistic_columns,
    summary_mismatches,
)

from .synthetic import N, make_records, sweep_stats, write_folder, write_sweep


def _one(tmp_path: Path, records: pd.DataFrame, **kwargs: object) -> pd.DataFrame:
    write_folder(tmp_path / "m", records, **kwargs)  # type: ignore[arg-type]
    return model_table(load_evaluations(tmp_path / "m"))


def test_robust_accuracy_worst_case_and_clean_accuracy_by_hand(tmp_path: Path) -> None:
    # 10 samples, 0..7 correct. PGD breaks {0} at 4/255 and {0, 1, 2} at 8/255; FGSM breaks {3} and {3, 4}.
    records = make_records(
        n=10,
        correct=range(8),
        broken={("pgd", "4/255"): {0}, ("pgd", "8/255"): {0, 1, 2}, ("fgsm", "4/255"): {3}, ("fgsm", "8/255"): {3, 4}},
    )
    (row,) = _one(tmp_path, records).to_dict("records")
    assert row["n_samples"] == 10 and row["clean_acc"] == 0.8
    assert row["pgd@4/255"] == 0.7 and row["pgd@8/255"] == 0.5
    assert row["fgsm@4/255"] == 0.7 and row["fgsm@8/255"] == 0.6
    assert row["worst@4/255"] == 0.6  # 8 correct minus {0} minus {3}
    assert row["worst@8/255"] == 0.3  # 8 correct minus {0, 1, 2, 3, 4}


def test_columns_are_ordered_and_named_readably(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=2)
    table = model_table(load_evaluations(tmp_path))
    assert list(table.columns[:5]) == ["name", "loss", "noise", "n_samples", "clean_acc"]
    assert robustness_columns(table) == [
        "pgd@4/255",
        "pgd@8/255",
        "fgsm@4/255",
        "fgsm@8/255",
        "cw@0.5",
        "cw@1",
        "worst@4/255",
        "worst@8/255",
        "worst_l2@0.5",
        "worst_l2@1",
        "cw_mean_min_l2",
        "test_acc",
    ]
    assert headline_target(table) == "worst@8/255"
    assert statistic_columns(table)[:6] == [f"clean_{s}" for s in STAT_NAMES]


def test_the_sweep_has_the_values_it_was_built_with(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    table = model_table(load_evaluations(tmp_path))
    np.testing.assert_allclose(table["pgd@8/255"], [(4 + 2 * j) / N for j in range(5)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(table["pgd@4/255"], [(8 + 2 * j) / N for j in range(5)], rtol=0, atol=1e-15)
    assert (table["clean_acc"] == 0.8).all()


def test_cam_statistics_are_means_over_samples_not_over_rows(tmp_path: Path) -> None:
    stats = {s: np.arange(N, dtype=float) * (k + 1) for k, s in enumerate(STAT_NAMES)}
    records = make_records(n=N, clean_stats=stats, adv_shift=0.25)
    (row,) = _one(tmp_path, records).to_dict("records")
    for k, stat in enumerate(STAT_NAMES):
        assert row[f"clean_{stat}"] == pytest.approx(9.5 * (k + 1), abs=1e-12)
        assert row[f"adv_{stat}"] == pytest.approx(9.5 * (k + 1) + 0.25, abs=1e-12)
    assert row["adv_setting"] == "pgd@8/255" and row["adv_peak_gain"] == 1.0 and row["true_peak_shift"] == 2.0


def test_adversarial_statistics_come_from_the_reference_setting(tmp_path: Path) -> None:
    records = make_records(n=N, clean_stats=sweep_stats(0, set()))
    pgd8 = (records["attack"] == "pgd") & (records["eps"] == 8 / 255)
    records.loc[pgd8, "adv_neg_homogeneity"] = 7.0
    (row,) = _one(tmp_path, records).to_dict("records")
    assert row["adv_neg_homogeneity"] == 7.0


def test_reference_setting_is_pgd_at_its_largest_eps_else_the_first_bounded_attack(tmp_path: Path) -> None:
    write_folder(tmp_path / "a", make_records(broken={("fgsm", "2/255"): set(), ("fgsm", "4/255"): set()}, cw={}))
    evaluations = load_evaluations(tmp_path / "a")
    setting = reference_setting(evaluations)
    assert setting is not None and (setting.attack, setting.eps) == ("fgsm", 4 / 255)
    write_folder(tmp_path / "b", make_records())
    setting = reference_setting(load_evaluations(tmp_path))
    assert setting is not None and (setting.attack, setting.eps) == ("pgd", 8 / 255)


def test_cw_mean_minimal_l2_is_over_the_samples_it_broke(tmp_path: Path) -> None:
    # found on 0, 1, 2 with norms 0.2, 0.4, 1.5; sample 18 is a clean error and is never attacked
    records = make_records(n=N, cw={0: 0.2, 1: 0.4, 2: 1.5, 18: 0.1})
    (row,) = _one(tmp_path, records).to_dict("records")
    assert row["cw_mean_min_l2"] == pytest.approx(0.7, abs=1e-12)
    assert row["cw@0.5"] == (16 - 2) / N and row["cw@1"] == (16 - 2) / N


def test_localisation_accuracy_counts_correct_predictions_with_iou_at_least_half(tmp_path: Path) -> None:
    clean_iou = np.zeros(N)
    clean_iou[[0, 1, 2, 17]] = [0.5, 0.9, 0.49, 0.9]  # 17 is a clean error: no hit
    adv_iou = np.zeros(N)
    adv_iou[[0, 5, 6]] = 0.8  # 0 is broken at 8/255: no hit
    records = make_records(n=N, broken={("pgd", "8/255"): {0, 1}}, loc_iou=(clean_iou, adv_iou))
    (row,) = _one(tmp_path, records).to_dict("records")
    # the synthetic records use the unnamed columns of records written before the protocols: minmax
    assert row["clean_loc_acc_minmax"] == 2 / N
    assert row["adv_loc_acc_minmax"] == 2 / N


def test_columns_without_data_are_left_out(tmp_path: Path) -> None:
    (row,) = _one(tmp_path, make_records()).to_dict("records")
    assert not any(k.startswith(("clean_neg", "adv_")) or "_loc_acc" in k or "maxboxacc" in k for k in row)
    assert "cw_mean_min_l2" not in row


def test_several_backends_put_the_backend_in_the_column_names(tmp_path: Path) -> None:
    broken = {("pgd", "8/255"): {0}}
    records = pd.concat(
        [make_records(broken=broken), make_records(broken={("pgd", "8/255"): {0, 1}}, backend="foolbox")],
        ignore_index=True,
    )
    (row,) = _one(tmp_path, records).to_dict("records")
    assert row["pgd/torchattacks@8/255"] == 15 / N and row["pgd/foolbox@8/255"] == 14 / N
    assert row["worst@8/255"] == 14 / N


def test_long_table_matches_the_wide_one(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=2)
    evaluations = load_evaluations(tmp_path)
    long, table = robust_accuracies(evaluations), model_table(evaluations)
    for row in long.itertuples():
        assert table.loc[table["name"] == row.name, row.column].item() == row.robust_acc


def test_summary_csv_agrees_with_the_records_and_a_mismatch_is_a_warning(tmp_path: Path) -> None:
    write_sweep(tmp_path, count=1)
    (evaluation,) = load_evaluations(tmp_path)
    assert summary_mismatches(evaluation) == []

    records = make_records()
    from robustcam.evaluate import summarize

    tampered = summarize(records)
    tampered.loc[tampered["attack"] == "pgd", "robust_acc"] += 1e-9
    write_folder(tmp_path / "bad", records, summary=tampered)
    (bad,) = load_evaluations(tmp_path / "bad")
    messages = summary_mismatches(bad)
    assert len(messages) == 2 and all("robust_acc" in m and "pgd/torchattacks" in m for m in messages)
    assert set(messages) <= set(check_evaluations([bad]))
    # the table still uses the records
    assert model_table([bad])["pgd@8/255"].item() == 1.0 * 16 / N


def test_check_evaluations_reports_flags_missing_cam_columns_and_differing_data(tmp_path: Path) -> None:
    flag = {"check": "zero_gradients", "message": "3 of 20 samples have an all-zero input gradient"}
    write_folder(tmp_path / "a", make_records(), flags=[flag])
    write_folder(tmp_path / "b", make_records(n=12))
    warnings = check_evaluations(load_evaluations(tmp_path))
    assert "a: zero_gradients: 3 of 20 samples have an all-zero input gradient" in warnings
    assert any(w.startswith("none of the evaluations has CAM statistic columns") for w in warnings)
    assert any("different numbers of samples (a: 20, b: 12)" in w for w in warnings)


def test_partial_cam_columns_are_named(tmp_path: Path) -> None:
    records = make_records(clean_stats=sweep_stats(0, set())).drop(columns=["clean_pos_peak"])
    write_folder(tmp_path / "a", records)
    (evaluation,) = load_evaluations(tmp_path)
    assert "a: per_sample.csv lacks the CAM statistics pos_peak" in check_evaluations([evaluation])
    assert math.isfinite(model_table([evaluation])["clean_neg_homogeneity"].item())


def test_evaluations_without_cam_columns_are_named(tmp_path: Path) -> None:
    write_sweep(tmp_path / "with", count=1)
    write_folder(tmp_path / "without", make_records())
    warnings = check_evaluations(load_evaluations(tmp_path))
    assert any(w.startswith("without: no CAM statistic columns in per_sample.csv") for w in warnings)


def test_noise_table_groups_test_accuracy_by_kind_rate_and_loss(tmp_path: Path) -> None:
    from robustcam.report import noise_table, plot_noise

    write_sweep(tmp_path, count=4)  # every other checkpoint trained with symmetric 0.4 noise
    table = model_table(load_evaluations(tmp_path))
    assert table["noise_kind"].tolist() == ["none", "symmetric", "none", "symmetric"]
    assert table["noise_rate"].tolist() == [0.0, 0.4, 0.0, 0.4]
    assert (table["test_acc"] == 0.9).all()  # from the checkpoints' training records
    noise = noise_table(table)
    expected = table.groupby(["noise_kind", "noise_rate", "loss"])["test_acc"].mean()
    assert noise.set_index(["noise_kind", "noise_rate", "loss"])["test_acc"].equals(expected)
    assert plot_noise(noise, tmp_path / "noise.png").stat().st_size > 1000
    assert noise_table(table[table["noise_rate"] == 0]).empty, "one noise rate is no noise comparison"
