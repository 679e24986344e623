"""The ablation study's own arithmetic (benchmarks/ablation_study.py) on a hand-made ledger."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "ablation_study.py"
spec = importlib.util.spec_from_file_location("ablation_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def entry(fold_curves: dict[str, list[tuple[int, float]]]) -> dict:
    return {"validation": {fold: [list(point) for point in curve]
                           for fold, curve in fold_curves.items()}}


def test_best_validation_takes_epochs_0_to_the_cut_and_averages_the_folds():
    run = entry({"0": [(-1, 50.0), (0, 10.0), (1, 12.0), (2, 11.0), (3, 20.0)],
                 "1": [(-1, 50.0), (0, 14.0), (1, 13.0), (2, 16.0), (3, 15.0)]})
    # epoch -1 (trunk only) never counts; folds: max 20 and 16 -> 18
    assert study.best_validation(run) == pytest.approx(18.0)
    # up to epoch 2: 12 and 16 -> 14; up to epoch 0: 10 and 14 -> 12
    assert study.best_validation(run, 2) == pytest.approx(14.0)
    assert study.best_validation(run, 0) == pytest.approx(12.0)


def test_the_equal_compute_table_pairs_g_cut_at_sdm_compute_with_b_by_seed():
    cut = study.COMPUTE_MATCHED_EPOCHS
    assert cut == 31  # ceil(4 epochs x 7.7)

    def curve(before_cut: float, after_cut: float) -> list[tuple[int, float]]:
        return [(0, 5.0), (cut, before_cut), (cut + 1, after_cut)]

    ledger = {}
    for seed, (off, paper, matched, later) in enumerate([(10.0, 12.0, 15.0, 16.0),
                                                         (11.0, 14.0, 15.0, 18.0)]):
        for arm, folds in (("off", {"0": [(0, off)], "1": [(0, off)]}),
                           ("paper", {"0": [(0, paper)], "1": [(0, paper)]}),
                           ("converged", {"0": curve(matched, later),
                                          "1": curve(matched, later)})):
            ledger[study.run_name("icons", "ms", arm, seed)] = entry(folds)
    text = study.compute_matched_table(ledger)
    # off 10, 11 -> 10.50 ± 0.71; paper 12, 14 -> 13.00 ± 1.41; (g) cut 15, 15 -> 15.00 ± 0.00;
    # (g) all 16, 18 -> 17.00 ± 1.41; (g) cut - paper 3, 1 -> 2.00 ± 1.41
    assert ("| icons | ms | 2 | 10.50 ± 0.71 | 13.00 ± 1.41 | 15.00 ± 0.00 | 17.00 ± 1.41 "
            "| 2.00 ± 1.41 |") in text
    assert "glyphs" not in text
    assert study.compute_matched_table({}) == ""


def test_each_loss_lists_its_arms_from_a_to_g_whatever_the_plan_order():
    ledger = {study.run_name(dataset, "ms", arm, 0): {"scores": {"seconds": 1.0}}
              for dataset in ("glyphs", "icons")
              for arm in ("converged", "t4", "mean", "off", "paper")}
    found = study.collect(ledger)
    assert list(found) == [("icons", "ms", arm) for arm in ("off", "paper", "mean", "t4",
                                                            "converged")] + [
        ("glyphs", "ms", arm) for arm in ("off", "paper", "mean", "t4", "converged")]
