"""The study runner (sdm.studies) and its report (sdm.study_report): plans, run order, the
ledger a fresh checkout continues, and the report's arithmetic on hand-made ledgers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_TRAINING
from sdm.config import ConfigError
from sdm.studies import load_plan, read_ledger, run_name, run_study
from sdm.study_report import (
    best_validation,
    collect,
    compute_table,
    pareto_front,
    step_cost,
    write_study_report,
)


def write_plan(folder: Path, cub_root: Path, **changes) -> Path:
    """A two-arm plan on the tiny CUB fixture: the small CNN without and with SDM."""
    (folder / "base.yaml").write_text(
        "dataset: {name: cub200}\nloss: {name: multi_similarity}\n")
    (folder / "on.yaml").write_text("sdm: {enabled: true}\n")
    plan = {
        "name": "tiny", "ledger": "results/tiny.json", "experiments_root": "runs",
        "baseline": "off", "seeds": [0, 1],
        "overrides": [*TINY_TRAINING, "training.folds=[0]", "training.max_epochs=1",
                      f"dataset.root={cub_root}"],
        "datasets": {"cub": []}, "losses": {"cub": {"ms": "base.yaml"}},
        "arms": {"off": {"label": "SDM off"},
                 "late": {"label": "SDM at block4", "layers": ["on.yaml"],
                          "overrides": ["sdm.perturb_at=block4"]}},
        "steps": [{"dataset": "cub", "loss": "ms", "arms": ["off", "late"]}],
        **changes,
    }
    path = folder / "plan.yaml"
    path.write_text(json.dumps(plan))  # JSON is YAML
    return path


def test_runs_go_seed_by_seed_within_a_step_and_each_run_once(tmp_path, cub_root):
    plan = load_plan(write_plan(tmp_path, cub_root, steps=[
        {"dataset": "cub", "loss": "ms", "arms": ["off", "late"]},
        {"dataset": "cub", "loss": "ms", "arms": ["late"], "seeds": [1, 2]}]), tmp_path)
    assert plan.runs() == [("cub", "ms", "off", 0), ("cub", "ms", "late", 0),
                           ("cub", "ms", "off", 1), ("cub", "ms", "late", 1),
                           ("cub", "ms", "late", 2)]
    assert plan.ledger == tmp_path / "results" / "tiny.json"


@pytest.mark.parametrize(("change", "message"), [
    ({"baseline": "none"}, "baseline 'none' is not an arm"),
    ({"steps": [{"dataset": "cub", "loss": "ms", "arms": [False]}]},
     'unknown arms False.*quote .* "off"'),
    ({"steps": [{"dataset": "cars", "loss": "ms", "arms": ["off"]}]}, "'cars' is not one of cub"),
    ({"arms": {"off": {"layers": ["missing.yaml"]}, "late": {}}}, "missing.yaml does not exist"),
])
def test_a_bad_plan_is_a_clear_config_error(tmp_path, cub_root, change, message):
    with pytest.raises(ConfigError, match=message):
        load_plan(write_plan(tmp_path, cub_root, **change), tmp_path)


def test_a_study_runs_records_and_a_fresh_checkout_continues_from_its_ledger(
        one_thread, tmp_path, cub_root):
    plan_file = write_plan(tmp_path, cub_root)
    plan = load_plan(plan_file, tmp_path)
    done = run_study(plan, seeds=[0])
    assert done == [run_name("cub", "ms", arm, 0) for arm in ("off", "late")]
    ledger = read_ledger(plan)
    late = ledger[run_name("cub", "ms", "late", 0)]
    assert late["sdm"] == {"enabled": True, "passes": 2, "feature_dropout": 0.1,
                           "perturb_at": "block4"}
    assert late["last_epoch"] == {"0": 1} and late["iterations_per_epoch"] == 3
    assert [epoch for epoch, _ in late["validation"]["0"]] == [-1, 0, 1]
    assert late["best_epoch"]["0"] in (0, 1)
    assert late["device"] == "cpu" and late["passes_run"] == "one after another"
    assert 0 <= late["scores"]["separated_mean_average_precision_at_r"] <= 100

    # A fresh checkout: the ledger alone (committed), no experiment folders. The recorded
    # runs are not run again; the CLI runs only what is missing, then writes the report.
    fresh = tmp_path / "fresh"
    (fresh / "results").mkdir(parents=True)
    (fresh / "results" / "tiny.json").write_text(plan.ledger.read_text())
    finished = subprocess.run(
        [sys.executable, "-m", "sdm", "study", "run", str(plan_file), "--root", str(fresh)],
        capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert not (fresh / "runs" / run_name("cub", "ms", "off", 0)).exists()
    assert (fresh / "runs" / run_name("cub", "ms", "off", 1)).is_dir()
    fresh_ledger = json.loads((fresh / "results" / "tiny.json").read_text())
    assert sorted(fresh_ledger) == sorted(run_name("cub", "ms", arm, seed)
                                          for arm in ("off", "late") for seed in (0, 1))
    assert fresh_ledger[run_name("cub", "ms", "late", 0)] == late
    report = (fresh / "results" / "tiny.md").read_text()
    assert "Arm minus SDM off, paired by seed" in report and "| SDM at block4 | 2 |" in report
    assert (fresh / "results" / "tiny.png").is_file()


# ----- the report's arithmetic on hand-made ledgers ----------------------------------------

def entry(arm: str, seed: int, separated: float, *, enabled: bool = True, point: str = "stem",
          curve: list | None = None, last_epoch: int = 4, best_epoch: int = 3) -> dict:
    scores = {f"{mode}_{metric}": separated + (1.0 if mode == "concatenated" else 0.0)
              for mode in ("concatenated", "separated")
              for metric in ("precision_at_1", "r_precision", "mean_average_precision_at_r")}
    curve = curve or [[0, 5.0], [last_epoch, separated]]
    return {"dataset": "cub", "loss": "ms", "arm": arm, "seed": seed, "scores": scores,
            "validation": {"0": curve, "1": curve}, "best_epoch": {"0": best_epoch,
                                                               "1": best_epoch},
            "last_epoch": {"0": last_epoch, "1": last_epoch}, "iterations_per_epoch": 50,
            "trunk": "small_cnn", "crop": 32, "seconds": 100.0, "device": "cpu",
            "sdm": {"enabled": enabled, "passes": 8, "feature_dropout": 0.1,
                    "perturb_at": point}}


COSTS = [{"trunk": "small_cnn", "side": 32, "device": "NVIDIA H100",
          "ratios": {"block4": {"8": 1.1}}},
         {"trunk": "small_cnn", "side": 32, "device": "cpu",
          "ratios": {"block4": {"8": 1.5}, "stem": {"8": 6.0}}},
         {"trunk": "small_cnn", "side": 64, "device": "cpu", "ratios": {"block4": {"8": 9.0}}}]


def test_step_cost_is_read_for_the_runs_trunk_side_point_and_passes():
    assert step_cost(entry("off", 0, 1.0, enabled=False), []) == 1.0
    assert step_cost(entry("late", 0, 1.0, point="block4"), COSTS) == 1.5
    assert step_cost(entry("paper", 0, 1.0), COSTS) == 6.0
    assert step_cost(entry("late", 0, 1.0, point="block2"), COSTS) is None


def test_the_pareto_front_keeps_the_points_no_cheaper_point_beats():
    points = [(1.0, 0.0), (1.5, 2.0), (2.0, 1.0), (3.0, 2.0), (6.0, 3.0), (6.0, 2.5)]
    assert pareto_front(points) == [(1.0, 0.0), (1.5, 2.0), (6.0, 3.0)]


def test_best_validation_counts_epochs_0_to_the_cut_averaged_over_folds():
    run = {"validation": {"0": [[-1, 50.0], [0, 10.0], [1, 12.0], [2, 11.0], [3, 20.0]],
                          "1": [[-1, 50.0], [0, 14.0], [1, 13.0], [2, 16.0], [3, 15.0]]}}
    assert best_validation(run) == pytest.approx(18.0)
    assert best_validation(run, 2.9) == pytest.approx(14.0)
    assert best_validation(run, 0) == pytest.approx(12.0)


def test_report_pairs_by_seed_and_cuts_the_baseline_at_each_arms_compute(tmp_path, cub_root):
    plan = load_plan(write_plan(tmp_path, cub_root, step_costs="costs.json"), tmp_path)
    (tmp_path / "costs.json").write_text(json.dumps(COSTS))
    # The baseline trained for 12 epochs; its curve reaches 7 at epoch 6 and 9 at epoch 12.
    baseline_curve = [[0, 5.0], [6, 7.0], [12, 9.0]]
    ledger = {}
    for seed, (off, late) in enumerate([(10.0, 12.0), (11.0, 15.0)]):
        ledger[run_name("cub", "ms", "off", seed)] = entry(
            "off", seed, off, enabled=False, curve=baseline_curve, last_epoch=12)
        # SDM at block4 (1.5x): 4 epochs are worth 6 baseline epochs; best validation 8.
        ledger[run_name("cub", "ms", "late", seed)] = entry(
            "late", seed, late, point="block4", curve=[[0, 5.0], [4, 8.0]])
    plan.ledger.parent.mkdir(parents=True)
    plan.ledger.write_text(json.dumps(ledger))
    groups = collect(plan, ledger)
    assert list(groups[("cub", "ms")]) == ["off", "late"]
    text = write_study_report(plan)
    # late - off: 2 and 4 -> 3.00 ± 1.41 (separated and concatenated alike)
    assert "| SDM at block4 | 2 | 3.00 ± 1.41 | 3.00 ± 1.41 | 3.00 ± 1.41 |" in text
    table = compute_table(plan, groups, COSTS)
    # late: 1.5x, 4 epochs, best epoch 3, 150 steps to best, 4 x 50 x 1.5 = 300 baseline
    # steps; validation 8 against the baseline's 7 within 6 epochs: +1.00 ± 0.00
    assert ("| cub | ms | SDM at block4 | 2 | 1.50x | 4.0 ± 0.0 | 3.0 ± 0.0 | "
            "150 ± 0 | 300 ± 0 | 100 ± 0 | 8.00 ± 0.00 | 1.00 ± 0.00 |") in table
    assert (tmp_path / "results" / "tiny_cost.png").is_file()


@pytest.mark.parametrize("plan_file", sorted(
    (Path(__file__).parents[1] / "exp_configs" / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_shipped_plans_load_and_every_run_has_a_valid_config(plan_file):
    from sdm.studies import run_config

    plan = load_plan(plan_file)
    assert plan.runs()
    for dataset, loss, arm, seed in plan.runs():
        config = run_config(plan, dataset, loss, arm, seed)
        assert config.name == run_name(dataset, loss, arm, seed)
        assert config.training.seed == seed
        assert config.sdm.enabled == (arm != plan.baseline)


def test_the_baseline_cut_needs_the_baseline_trained_to_the_arms_compute():
    from sdm.study_report import _baseline_cut

    baseline = {0: entry("off", 0, 10.0, enabled=False, curve=[[0, 5.0], [4, 6.0], [5, 9.0]],
                         last_epoch=5)}
    arm = {0: entry("late", 0, 12.0, curve=[[0, 5.0], [4, 8.0]])}
    # 4 epochs x 1.18 = 4.72 -> the baseline's best up to epoch 5: 9, so 8 - 9 = -1
    assert _baseline_cut(arm, baseline, 1.18) == "-1.00"
    # 4 x 1.5 = 6 epochs of compute: the baseline stopped at 5, no fair cut
    assert _baseline_cut(arm, baseline, 1.5) is None
    assert _baseline_cut(arm, baseline, None) is None


def test_the_cut_can_come_from_a_longer_baseline_in_another_ledger(tmp_path, cub_root):
    plan = load_plan(write_plan(tmp_path, cub_root, long_baseline={
        "ledger": "older.json", "arm": "long"}), tmp_path)
    assert plan.long_baseline == (tmp_path / "older.json", "long")
    # The plan's own baseline stops at epoch 4; the older ledger's ran 12 epochs.
    ledger = {run_name("cub", "ms", "off", 0): entry("off", 0, 10.0, enabled=False),
              run_name("cub", "ms", "late", 0): entry("late", 0, 12.0, point="block4",
                                                      curve=[[0, 5.0], [4, 8.0]])}
    older = {run_name("cub", "ms", "long", 0): entry(
        "long", 0, 15.0, enabled=False, curve=[[0, 5.0], [6, 7.5], [12, 9.0]], last_epoch=12)}
    (tmp_path / "older.json").write_text(json.dumps(older))
    table = compute_table(plan, collect(plan, ledger), COSTS)
    # 4 epochs x 1.5 = 6: the longer baseline's best up to epoch 6 is 7.5, so 8 - 7.5
    assert "| cub | ms | SDM at block4 | 1 | 1.50x |" in table and "| 0.50 |" in table
