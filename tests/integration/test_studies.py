"""The study runner (sdm.studies) and its report (sdm.study_report): plans, run order, the
ledger a fresh checkout continues, and the report's arithmetic on hand-made ledgers."""

import json
import multiprocessing
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_TRAINING
from sdm import storage
from sdm.config import ConfigError
from sdm.errors import UserInputError
from sdm.studies import read_ledger, record, run_study
from sdm.study_plan import load_plan, run_name
from sdm.study_report import (
    arm_step_cost,
    baseline_cut,
    best_validation,
    collect,
    compared_arms,
    compute_table,
    cost_point,
    pareto_front,
    recommended_point,
    step_cost,
    training_compute,
    write_study_report,
)
from training_helpers import TIMEOUT, held, held_environment

REPOSITORY = Path(__file__).parents[2]
PLANS = REPOSITORY / "exp_configs" / "studies"


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
    assert [(run.step, run.dataset, run.loss, run.arm, run.seed) for run in plan.runs()] == [
        (1, "cub", "ms", "off", 0), (1, "cub", "ms", "late", 0),
        (1, "cub", "ms", "off", 1), (1, "cub", "ms", "late", 1),
        (2, "cub", "ms", "late", 2)]
    assert [run.name for run in plan.runs(steps=[2])] == [
        "cub_ms_late_seed1", "cub_ms_late_seed2"]
    assert plan.ledger == tmp_path / "results" / "tiny.json"


@pytest.mark.parametrize(("change", "message"), [
    ({"baseline": "none"}, "baseline 'none' is not an arm"),
    ({"steps": [{"dataset": "cub", "loss": "ms", "arms": [False]}]},
     'unknown arms False.*quote .* "off"'),
    ({"steps": [{"dataset": "cars", "loss": "ms", "arms": ["off"]}]}, "'cars' is not one of cub"),
    ({"arms": {"off": {"layers": ["missing.yaml"]}, "late": {}}}, "missing.yaml does not exist"),
    ({"arms": {"off": {}, "late": {"step_cost": 0}}}, "'late': step_cost must be a positive"),
    ({"arms": {"off": {}, "late": {"step_cost": "7.7x"}}}, "step_cost must be a positive"),
    ({"arms": {"off": {}, "late": {"step_cost": True}}},
     "arm 'late': step_cost must be a positive number of baseline steps, not True$"),
    ({"arm_order": "alphabetical"}, "arm_order must be steps or declared, not 'alphabetical'"),
    ({"cost_axis": "wall"}, "cost_axis must be step or compute, not 'wall'"),
    ({"recommend_within": -0.5}, "recommend_within must be a number of MAP@R points from 0, "
                                 "not -0.5$"),
    ({"recommend_within": "0.5"}, "recommend_within must be a number"),
    ({"arms": ["off", "late"]}, r"arms must be a mapping of names, not \['off', 'late'\]$"),
    ({"steps": [{"dataset": "cub", "arms": ["off"]}]}, "step 1 lacks loss$"),
    ({"steps": []}, r"steps must be a non-empty list, not \[\]$"),
    ({"seeds": 3}, r"seeds must be a non-empty list of seeds \(integers from 0\), not 3$"),
    ({"steps": [{"dataset": "cub", "loss": "ms", "arms": ["off"], "seeds": [-1]}]},
     r"step 1: seeds must be a non-empty list of seeds \(integers from 0\), not \[-1\]$"),
    ({"arm_oder": "declared"}, "the plan has unknown keys arm_oder; its keys are name, ledger, "),
    ({"arms": {"off": {}, "late": {"layer": ["on.yaml"]}}},
     "arm 'late' has unknown keys layer; its keys are label, layers, overrides, step_cost$"),
    ({"arms": {"off": {}, "late": {"layers": "on.yaml"}}},
     "arm 'late': layers must be a list of strings, not 'on.yaml'$"),
    ({"overrides": "training.max_epochs=1"}, "overrides must be a list of strings"),
    ({"long_baseline": {"ledger": "older.json"}}, "long_baseline lacks arm$"),
    ({"losses": {"cub": ["base.yaml"]}}, r"losses: cub must be a mapping of names, not "),
])
def test_a_bad_plan_is_a_clear_config_error(tmp_path, cub_root, change, message):
    with pytest.raises(ConfigError, match=message):
        load_plan(write_plan(tmp_path, cub_root, **change), tmp_path)


def test_an_unquoted_off_or_a_missing_plan_is_one_line_naming_it(tmp_path, cub_root):
    """YAML reads ``off`` as false: as an arm's name or the baseline, the error says to quote
    it; ``sdm study`` prints a bad plan as one line with exit status 2."""
    plan = json.loads(write_plan(tmp_path, cub_root).read_text())
    plan["arms"] = {False: plan["arms"]["off"], "late": plan["arms"]["late"]}
    (tmp_path / "unquoted.yaml").write_text(yaml.safe_dump(plan))
    expected = ('a name under arms must be a string, not False (quote a name YAML reads as a '
                'boolean, such as "off")')
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_plan(tmp_path / "unquoted.yaml", tmp_path)
    for plan_file, message in [
            (tmp_path / "unquoted.yaml", "a name under arms must be a string, not False"),
            (tmp_path / "none.yaml", f"study plan {tmp_path / 'none.yaml'} does not exist")]:
        shown = subprocess.run([sys.executable, "-m", "sdm", "study", "status", str(plan_file)],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 2
        [line] = shown.stderr.splitlines()
        assert line.startswith("sdm study: error: study plan ") and message in line


@pytest.mark.parametrize(("selection", "message"), [
    ({"steps": [3, 2, 0]},
     "steps 0, 3 are not in study plan tiny: its steps are 1 to 2 (sdm study status lists them)"),
    ({"steps": [2], "seeds": [0, 1, 5]},
     "seeds 0, 5 are not run by the chosen steps of study plan tiny: they run seeds 1, 2"),
])
def test_a_step_or_seed_the_plan_does_not_run_is_refused_before_anything_runs(
        tmp_path, cub_root, monkeypatch, selection, message):
    import sdm.studies

    plan = load_plan(write_plan(tmp_path, cub_root, steps=[
        {"dataset": "cub", "loss": "ms", "arms": ["off", "late"]},
        {"dataset": "cub", "loss": "ms", "arms": ["late"], "seeds": [1, 2]}]), tmp_path)
    monkeypatch.setattr(sdm.studies, "run_one", lambda *args, **kwargs: pytest.fail("ran"))
    with pytest.raises(UserInputError, match=f"^{re.escape(message)}$"):
        run_study(plan, **selection)


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


def test_sigterm_stops_a_study_with_one_line_keeping_the_seconds_of_the_run_in_progress(
        tmp_path, cub_root):
    """SIGTERM (``kill``, a scheduler's time limit) while the first run trains: exit 143, one
    line, no traceback; the run's seconds so far are kept, and the rerun records both runs."""
    plan_file = write_plan(tmp_path, cub_root, seeds=[0])
    command = ["study", "run", str(plan_file), "--root", str(tmp_path)]
    with held(command, "step:1:2", subprocess.PIPE) as job:
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate()
    assert job.returncode == 143, stderr[-4000:]
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("sdm study:")] == [
        "sdm study: stopped (SIGTERM); the finished runs are in the ledger and the run in "
        "progress resumes from its folder: rerun the same command to continue"]
    stopped = tmp_path / "runs" / run_name("cub", "ms", "off", 0)
    seconds_before = storage.read_json(stopped / "study_seconds.json")["train_seconds"]
    assert seconds_before > 0
    assert not (tmp_path / "results" / "tiny.json").exists()

    finished = subprocess.run([sys.executable, "-m", "sdm", *command], capture_output=True,
                              text=True, timeout=TIMEOUT, env=held_environment())
    assert finished.returncode == 0, finished.stderr[-4000:]
    ledger = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert sorted(ledger) == [run_name("cub", "ms", arm, 0) for arm in ("late", "off")]
    assert ledger[run_name("cub", "ms", "off", 0)]["seconds"] > seconds_before


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


def test_the_recommended_point_is_the_cheapest_within_the_margin_of_the_best_gain():
    points = {"off": (1.0, 0.0), "pooled": (1.2, 0.6), "stage7": (1.3, 1.1),
              "stage7 T16": (1.3, 1.3), "stage6": (1.7, 1.2), "paper": (7.7, 1.6)}
    # best 1.6: within 0.5 are 1.1 and up; the cheapest is at 1.3, where 1.3 beats 1.1
    assert recommended_point(points, 0.5) == "stage7 T16"
    assert recommended_point(points, 0.3) == "stage7 T16"  # 1.3 = 1.6 - 0.3: inclusive
    assert recommended_point(points, 0.2) == "paper"
    assert recommended_point(points, 1.6) == "off"
    assert recommended_point({"off": (1.0, 0.0), "late": (1.5, -0.4)}, 0.5) == "off"


def test_the_front_compares_the_baseline_and_the_arms_over_the_most_seeds():
    arms = {"off": (1.0, 0.0, None, 1), "late": (1.3, 1.2, 0.4, 3), "sweep": (1.5, 2.0, None, 1),
            "paper": (7.7, 1.6, 0.3, 3)}
    assert compared_arms(arms, "off") == ["off", "late", "paper"]
    assert compared_arms({"off": arms["off"], "sweep": arms["sweep"]}, "off") == ["off", "sweep"]


def test_best_validation_counts_epochs_0_to_the_cut_averaged_over_folds():
    run = {"validation": {"0": [[-1, 50.0], [0, 10.0], [1, 12.0], [2, 11.0], [3, 20.0]],
                          "1": [[-1, 50.0], [0, 14.0], [1, 13.0], [2, 16.0], [3, 15.0]]}}
    assert best_validation(run) == pytest.approx(18.0)
    assert best_validation(run, 2.9) == pytest.approx(14.0)
    assert best_validation(run, 2) == pytest.approx(14.0)
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
    assert "## Recommended" not in text  # the plan asks for none
    table = compute_table(plan, groups, COSTS)
    # late: 1.5x, 4 epochs, best epoch 3, 150 steps to best, 4 x 50 x 1.5 = 300 baseline
    # steps, 100 s as the baseline's (1.0x); validation 8 against the baseline's 7 within 6
    # epochs: +1.00 ± 0.00
    assert ("| cub | ms | SDM at block4 | 2 | 1.50x | 4.0 ± 0.0 | 3.0 ± 0.0 | "
            "150 ± 0 | 300 ± 0 | 100 ± 0 | 1.0x | 8.00 ± 0.00 | 7.00 ± 0.00 | 1.00 ± 0.00 |"
            ) in table
    assert (tmp_path / "results" / "tiny_cost.png").is_file()


@pytest.mark.parametrize(("within", "recommended"), [
    (0.5, "SDM at stem: 6.00x, +4.00"), (1.0, "SDM at block4: 1.50x, +3.00"),
    (4.0, "SDM off: 1.00x, +0.00")])
def test_the_report_recommends_among_the_arms_with_the_most_seeds(tmp_path, cub_root, within,
                                                                   recommended):
    arms = {"off": {"label": "SDM off"},
            "late": {"label": "SDM at block4", "layers": ["on.yaml"]},
            "paper": {"label": "SDM at stem", "layers": ["on.yaml"]},
            "once": {"label": "SDM at stem, one seed", "layers": ["on.yaml"]}}
    steps = [{"dataset": "cub", "loss": "ms", "arms": ["off", "late", "paper"]},
             {"dataset": "cub", "loss": "ms", "arms": ["once"], "seeds": [0]}]
    plan = load_plan(write_plan(tmp_path, cub_root, step_costs="costs.json", arms=arms,
                                steps=steps, recommend_within=within), tmp_path)
    (tmp_path / "costs.json").write_text(json.dumps(COSTS))
    # gains paired by seed: block4 (1.5x) 2 and 4, stem (6x) 3.5 and 4.5, one seed 9
    ledger = {}
    for seed, (off, late, paper) in enumerate([(10.0, 12.0, 13.5), (11.0, 15.0, 15.5)]):
        ledger[run_name("cub", "ms", "off", seed)] = entry("off", seed, off, enabled=False)
        ledger[run_name("cub", "ms", "late", seed)] = entry("late", seed, late, point="block4")
        ledger[run_name("cub", "ms", "paper", seed)] = entry("paper", seed, paper)
    ledger[run_name("cub", "ms", "once", 0)] = entry("once", 0, 19.0)
    plan.ledger.parent.mkdir(parents=True)
    plan.ledger.write_text(json.dumps(ledger))
    text = write_study_report(plan)
    assert (f"| cub, ms | 2 | SDM off: 1.00x, +0.00; SDM at block4: 1.50x, +3.00; SDM at stem: "
            f"6.00x, +4.00 | SDM at stem: 6.00x, +4.00 | {recommended} |") in text


@pytest.mark.parametrize("plan_file", sorted(
    (Path(__file__).parents[2] / "exp_configs" / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_shipped_plans_load_and_every_run_has_a_valid_config(plan_file):
    from sdm.studies import run_config

    plan = load_plan(plan_file)
    assert plan.runs()
    # SDM is off in the baseline alone, and in the ablation's arm (g), the baseline trained
    # 16x longer
    sdm_off = {"ablation_study": {plan.baseline, "converged"}}.get(plan.name, {plan.baseline})
    for run in plan.runs():
        config = run_config(plan, run)
        assert config.name == run.name
        assert config.training.seed == run.seed
        assert config.sdm.enabled == (run.arm not in sdm_off)


def test_the_plan_of_the_development_page_uses_every_key_and_loads(tmp_path):
    """The documented plan (docs/development.md) is a valid plan over the shipped configs."""
    import yaml

    from docs_examples import blocks
    from sdm.studies import run_config
    from sdm.study_plan import OPTIONAL_KEYS, REQUIRED_KEYS

    page = REPOSITORY / "docs" / "development.md"
    [text] = [block for block in blocks(page, "yaml") if block.startswith("name: my_study")]
    documented = set(yaml.safe_load(text))
    assert documented == {*REQUIRED_KEYS, *OPTIONAL_KEYS}
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "my_study.yaml").write_text(text)
    for shipped in ("icons", "ablation", "sdm_cheap.yaml"):
        (tmp_path / shipped).symlink_to(PLANS.parent / shipped)
    plan = load_plan(tmp_path / "studies" / "my_study.yaml", tmp_path)
    assert (plan.cost_axis, plan.arms["late"].step_cost) == ("step", 1.6)
    assert [run.name for run in plan.runs()][-2:] == ["icons_ms_late_seed3",
                                                      "icons_ms_late_seed4"]
    for run in plan.runs():
        config = run_config(plan, run)
        assert config.sdm.enabled == (run.arm == "late")
        assert config.training.max_epochs == 100 and config.training.seed == run.seed
    assert config.sdm.passes == 16


def test_the_gpu_script_runs_every_paper_setting_run_not_yet_recorded():
    """benchmarks/gpu_studies.sh names the convergence study's steps by number: they must stay
    the paper setting's, and cover each of its runs the committed ledger lacks."""
    script = (REPOSITORY / "benchmarks" / "gpu_studies.sh").read_text()
    [numbers] = re.findall(r"convergence_study\.yaml --device cuda --steps ([\d ]+)\n", script)
    plan = load_plan(PLANS / "convergence_study.yaml", REPOSITORY)
    chosen = plan.runs([int(number) for number in numbers.split()])
    assert chosen and {run.arm for run in chosen} == {"paper"}
    recorded = read_ledger(plan)
    missing = [run.name for run in plan.runs() if run.arm == "paper" and run.name not in recorded]
    assert set(missing) <= {run.name for run in chosen}


def test_the_baseline_cut_needs_the_baseline_trained_to_the_arms_compute():
    baseline = {0: entry("off", 0, 10.0, enabled=False, curve=[[0, 5.0], [4, 6.0], [5, 9.0]],
                         last_epoch=5)}
    arm = {0: entry("late", 0, 12.0, curve=[[0, 5.0], [4, 8.0]])}
    # 4 epochs x 1.18 = 4.72 -> the baseline's best up to epoch 5: 9, against the arm's 8
    assert baseline_cut(arm, baseline, 1.18) == {0: (9.0, 8.0)}
    # 4 x 1.5 = 6 epochs of compute: the baseline stopped at 5, no fair cut
    assert baseline_cut(arm, baseline, 1.5) is None
    assert baseline_cut(arm, baseline, None) is None
    # a seed the baseline did not run is left out of the pairs
    assert baseline_cut({**arm, 1: entry("late", 1, 12.0)}, baseline, 1.18) == {0: (9.0, 8.0)}
    # a baseline that early stopping ended at epoch 5 (of at most 100) counts whole: 6
    # epochs of compute buy its best, 9; one that stopped at its max_epochs does not
    assert baseline_cut(arm, {0: {**baseline[0], "max_epochs": 100}}, 1.5) == {0: (9.0, 8.0)}
    assert baseline_cut(arm, {0: {**baseline[0], "max_epochs": 5}}, 1.5) is None


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


def test_on_the_compute_axis_an_arm_sits_at_its_compute_to_the_end_over_the_baselines(
        tmp_path, cub_root):
    plan = load_plan(write_plan(tmp_path, cub_root, cost_axis="compute"), tmp_path)
    baseline = {0: entry("off", 0, 10.0, enabled=False, last_epoch=30),
                1: entry("off", 1, 10.0, enabled=False, last_epoch=20)}
    # SDM at block4 costs 1.5x a step: 20 epochs are 30 baseline epochs, 10 are 15
    late = {0: entry("late", 0, 12.0, point="block4", last_epoch=20),
            1: entry("late", 1, 12.0, point="block4", last_epoch=10),
            2: entry("late", 2, 12.0, point="block4", last_epoch=40)}  # no baseline: left out
    # seed 0: 30 / 30 = 1; seed 1: 15 / 20 = 0.75; mean 0.875
    assert cost_point(plan, "late", late, baseline, COSTS) == pytest.approx(0.875)
    assert cost_point(plan, "off", baseline, baseline, COSTS) == 1.0
    assert cost_point(plan, "late", late, {}, COSTS) is None
    assert training_compute(late[0], 1.5) == 20 * 50 * 1.5
    step_axis = load_plan(write_plan(tmp_path, cub_root), tmp_path)
    assert cost_point(step_axis, "late", late, baseline, COSTS) == 1.5


def test_an_arms_step_cost_in_the_plan_comes_before_the_measured_one(tmp_path, cub_root):
    plan = load_plan(write_plan(tmp_path, cub_root, arms={
        "off": {"label": "SDM off"},
        "late": {"label": "SDM at block4", "layers": ["on.yaml"], "step_cost": 7.7}}), tmp_path)
    assert plan.arms["late"].step_cost == 7.7 and plan.arms["off"].step_cost is None
    late = entry("late", 0, 1.0, point="block4")
    assert arm_step_cost(plan, "late", late, COSTS) == 7.7
    assert arm_step_cost(plan, "off", entry("off", 0, 1.0, enabled=False), COSTS) == 1.0
    # an entry that does not say its SDM setting (a ledger of scores alone): unknown
    assert arm_step_cost(plan, "off", {"scores": {}}, COSTS) is None


def equal_compute_plan(folder: Path, cub_root: Path) -> Path:
    """The ablation's shape: SDM off, SDM's T=8 at 7.7 baseline steps (the plan's cost) and
    the baseline trained longer, an arm of the same ledger."""
    return write_plan(
        folder, cub_root, long_baseline={"ledger": "results/tiny.json", "arm": "converged"},
        arm_order="declared",
        arms={"off": {"label": "(a) off"},
              "paper": {"label": "(b) paper", "layers": ["on.yaml"], "step_cost": 7.7},
              "converged": {"label": "(g) off, longer"}},
        steps=[{"dataset": "cub", "loss": "ms", "arms": ["paper", "off"]},
               {"dataset": "cars", "loss": "ms", "arms": ["off", "paper"]},
               {"dataset": "cub", "loss": "ms", "arms": ["converged"]}],
        datasets={"cub": [], "cars": []},
        losses={"cub": {"ms": "base.yaml"}, "cars": {"ms": "base.yaml"}})


def test_the_equal_compute_cut_pairs_the_long_baselines_curve_by_seed(tmp_path, cub_root):
    plan = load_plan(equal_compute_plan(tmp_path, cub_root), tmp_path)
    # (b)'s 4 epochs x 7.7 = 30.8 -> the long baseline's best up to epoch 31, not 32
    ledger = {}
    for seed, (off, paper, cut, later) in enumerate([(10.0, 12.0, 15.0, 16.0),
                                                     (11.0, 14.0, 15.0, 18.0)]):
        ledger[run_name("cub", "ms", "off", seed)] = entry(
            "off", seed, 0.0, enabled=False, curve=[[0, off]])
        ledger[run_name("cub", "ms", "paper", seed)] = entry("paper", seed, 0.0,
                                                             curve=[[0, paper]])
        ledger[run_name("cub", "ms", "converged", seed)] = entry(
            "converged", seed, 0.0, enabled=False, curve=[[0, 5.0], [31, cut], [32, later]],
            last_epoch=32)
        ledger[run_name("cars", "ms", "off", seed)] = entry("off", seed, 0.0, enabled=False)
        ledger[run_name("cars", "ms", "paper", seed)] = entry("paper", seed, 0.0)
    ledger[run_name("cub", "ms", "off", 0)]["seconds"] = 200.0
    ledger[run_name("cub", "ms", "paper", 0)]["seconds"] = 1000.0
    ledger[run_name("cub", "ms", "paper", 1)]["seconds"] = 500.0
    storage.write_json(plan.ledger, ledger)
    groups = collect(plan, ledger)
    # the arms as the plan declares them, whatever order the steps name them in
    assert list(groups[("cub", "ms")]) == ["off", "paper", "converged"]
    table = compute_table(plan, groups, [])
    # (a) off: 10, 11 -> 10.50 ± 0.71; 200 and 100 s
    assert ("| cub | ms | (a) off | 2 | 1.00x | 4.0 ± 0.0 | 3.0 ± 0.0 | 150 ± 0 | 200 ± 0 | "
            "150 ± 71 | - | 10.50 ± 0.71 | - | - |") in table
    # (b) paper: 7.70x, 4 x 50 x 7.7 = 1540 baseline steps; 1000 / 200 and 500 / 100 s ->
    # 5.0x; validation 12, 14 -> 13.00 ± 1.41; (g) up to epoch 31: 15, 15 -> 15.00 ± 0.00;
    # (b) - (g) cut: -3, -1 -> -2.00 ± 1.41
    assert ("| cub | ms | (b) paper | 2 | 7.70x | 4.0 ± 0.0 | 3.0 ± 0.0 | 150 ± 0 | "
            "1540 ± 0 | 750 ± 354 | 5.0x | 13.00 ± 1.41 | 15.00 ± 0.00 | -2.00 ± 1.41 |") in table
    # (g) all epochs: 16, 18 -> 17.00 ± 1.41; 100 / 200 and 100 / 100 s -> 0.75x; not cut
    # against itself
    assert ("| cub | ms | (g) off, longer | 2 | 1.00x | 32.0 ± 0.0 | 3.0 ± 0.0 | 150 ± 0 | "
            "1600 ± 0 | 100 ± 0 | 0.8x | 17.00 ± 1.41 | - | - |") in table
    # cars has no long baseline: no cut
    assert "| cars | ms | (b) paper | 2 | 7.70x |" in table
    assert table.split("| cars | ms | (b) paper |")[1].split("\n")[0].endswith("| - | - |")
    assert compute_table(plan, {}, []) == ""


def test_a_cut_over_fewer_seeds_than_the_arm_names_them(tmp_path, cub_root):
    plan = load_plan(equal_compute_plan(tmp_path, cub_root), tmp_path)
    ledger = {run_name("cub", "ms", "paper", seed): entry("paper", seed, 0.0,
                                                          curve=[[0, 10.0 + seed]])
              for seed in (0, 1)}
    ledger[run_name("cub", "ms", "converged", 1)] = entry(
        "converged", 1, 0.0, enabled=False, curve=[[0, 5.0], [31, 12.3]], last_epoch=31)
    storage.write_json(plan.ledger, ledger)
    table = compute_table(plan, collect(plan, ledger), [])
    # seed 1 alone: 12.30 within 31 epochs, 11 - 12.3 = -1.30, no spread
    assert "| 10.50 ± 0.71 | 12.30 (seed 1) | -1.30 (seed 1) |" in table


def scores(value: float) -> dict[str, float]:
    return {f"{mode}_{metric}": value for mode in ("concatenated", "separated")
            for metric in ("precision_at_1", "r_precision", "mean_average_precision_at_r")}


def test_a_ledger_of_test_scores_alone_gets_its_tables_paired_by_seed(tmp_path, cub_root):
    """The glyph study's shape: losses in the plan's order, each one's arms; no curves, so no
    compute table; one seed's difference without a spread."""
    (tmp_path / "contrast.yaml").write_text(
        "dataset: {name: cub200}\nloss: {name: contrastive}\n")
    plan = load_plan(write_plan(
        tmp_path, cub_root, losses={"cub": {"contrast": "contrast.yaml", "ms": "base.yaml"}},
        arms={"off": {"label": "SDM off"}, "paper": {"label": "SDM", "layers": ["on.yaml"]},
              "t1": {"label": "SDM T=1", "layers": ["on.yaml"]}},
        steps=[{"dataset": "cub", "loss": loss, "arms": ["off", "paper"], "seeds": [seed]}
               for seed in (0, 1, 2) for loss in ("contrast", "ms")]
        + [{"dataset": "cub", "loss": "contrast", "arms": ["t1"], "seeds": [2]}]), tmp_path)
    ledger = {run_name("cub", loss, arm, seed): {"scores": scores(value)}
              for loss, arm, seed, value in [
                  ("ms", "paper", 1, 60.0), ("ms", "paper", 0, 57.0), ("ms", "off", 0, 55.0),
                  ("ms", "off", 1, 56.0), ("ms", "off", 2, 50.0), ("contrast", "t1", 2, 40.0),
                  ("contrast", "off", 2, 45.0)]}
    storage.write_json(plan.ledger, ledger)
    before = plan.ledger.read_bytes()
    groups = collect(plan, ledger)
    assert list(groups) == [("cub", "contrast"), ("cub", "ms")]
    assert list(groups[("cub", "contrast")]) == ["off", "t1"]
    assert list(groups[("cub", "ms")]["paper"]) == [0, 1]
    text = write_study_report(plan)
    assert plan.ledger.read_bytes() == before
    contrast, ms = text.split("## cub, contrast")[1].split("## cub, ms")
    # ms off over seeds 0-2: 55, 56, 50 -> mean 53.67, stdev 3.21
    assert "| SDM off | 3 | " + " | ".join(["53.67 ± 3.21"] * 6) + " |" in ms
    # ms paper - off, seeds 0 and 1 only: 2 and 4 -> 3.00 ± 1.41; seed 2 has no pair
    assert "| SDM | 2 | " + " | ".join(["3.00 ± 1.41"] * 6) + " |" in ms
    # one seed: the difference alone, without a spread
    assert "| SDM T=1 | 1 | " + " | ".join(["-5.00"] * 6) + " |" in contrast
    assert "## Compute" not in text
    assert (tmp_path / "results" / "tiny.png").is_file()
    assert not (tmp_path / "results" / "tiny_cost.png").exists()


def _record_many(plan, prefix: str, count: int, start) -> None:
    start.wait()
    for index in range(count):
        record(plan, f"{prefix}{index}", {"scores": scores(float(index))})


def test_studies_recording_side_by_side_keep_each_others_entries(tmp_path, cub_root):
    """Two processes recording into one ledger at once (parts of a plan run side by side):
    every entry of both is kept."""
    plan = load_plan(write_plan(tmp_path, cub_root), tmp_path)
    context = multiprocessing.get_context("fork")  # the children only write JSON
    start = context.Event()
    writers = [context.Process(target=_record_many, args=(plan, prefix, 100, start))
               for prefix in ("a", "b")]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(timeout=300)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert sorted(read_ledger(plan)) == sorted(f"{p}{i}" for p in "ab" for i in range(100))


def test_a_run_in_the_ledger_is_never_run_again(tmp_path, cub_root, monkeypatch):
    import sdm.studies

    plan = load_plan(write_plan(tmp_path, cub_root), tmp_path)
    storage.write_json(plan.ledger, {run.name: {"scores": scores(50.0)}
                                     for run in plan.runs()})

    def no_training(*args, **kwargs):
        raise AssertionError(f"{args[1].name} is in the ledger and must not be run again")

    monkeypatch.setattr(sdm.studies, "run_one", no_training)
    assert run_study(plan) == []
    assert not plan.experiments_root.exists()


def test_status_names_each_run_in_run_order_with_what_its_ledger_or_folder_shows(
        tmp_path, cub_root, capsys):
    from sdm.cli import main

    plan_file = write_plan(tmp_path, cub_root, steps=[
        {"dataset": "cub", "loss": "ms", "arms": ["off", "late"]},
        {"dataset": "cub", "loss": "ms", "arms": ["late"], "seeds": [2]}])
    storage.write_json(tmp_path / "results" / "tiny.json",
                       {"cub_ms_off_seed0": entry("off", 0, 12.5),
                        "cub_ms_early_seed0": entry("early", 0, 11.0),
                        "cub_ms_off_seed9": entry("off", 9, 10.0)})
    runs = tmp_path / "runs"
    (runs / "cub_ms_late_seed0" / "results").mkdir(parents=True)
    (runs / "cub_ms_late_seed0" / "results" / "test_results.json").write_text("{}")
    started = runs / "cub_ms_off_seed1"
    storage.write_csv(started / "fold_0" / "metrics.csv", [{"epoch": e} for e in (-1, 0, 1)])
    storage.write_json(started / "fold_1" / "done.json", {})
    (runs / "cub_ms_late_seed1" / "fold_0").mkdir(parents=True)  # nothing validated yet
    assert main(["study", "status", str(plan_file), "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"study tiny: 5 runs; 1 recorded, 1 trained, 1 started, 2 to run "
        f"(ledger {tmp_path / 'results' / 'tiny.json'})",
        "step 1   cub_ms_off_seed0   recorded: test MAP@R 12.50 separated, 13.50 concatenated, "
        "100 s",
        "step 1   cub_ms_late_seed0  trained: tested; the next run of the plan records it",
        "step 1   cub_ms_off_seed1   started: fold_0 validated to epoch 1, fold_1 done",
        "step 1   cub_ms_late_seed1  to run",
        "step 2   cub_ms_late_seed2  to run",
        "2 ledger entries are no run of this plan (an arm, loss or seed renamed or removed?), "
        "and the report leaves them out: cub_ms_early_seed0, cub_ms_off_seed9"]


# ----- the committed studies: their plans and converted ledgers ----------------------------

COMMITTED = ["ablation_study", "glyph_study"]


@pytest.mark.parametrize("name", COMMITTED)
def test_every_run_in_a_committed_ledger_is_a_run_of_its_plan(name):
    """So ``sdm study run`` reruns none of them."""
    plan = load_plan(PLANS / f"{name}.yaml", REPOSITORY)
    assert plan.ledger == REPOSITORY / "benchmarks" / "results" / f"{name}.json"
    ledger = read_ledger(plan)
    runs = {run.name: run for run in plan.runs()}
    assert ledger and set(ledger) <= set(runs)
    for key, recorded in ledger.items():
        run = runs[key]
        assert (recorded["dataset"], recorded["loss"], recorded["arm"],
                recorded["seed"]) == (run.dataset, run.loss, run.arm, run.seed)
        assert len(recorded["scores"]) == 6


def test_the_committed_ablation_ledger_has_what_the_compute_table_reads():
    plan = load_plan(PLANS / "ablation_study.yaml", REPOSITORY)
    assert plan.long_baseline == (plan.ledger, "converged") and plan.arm_order == "declared"
    assert {arm: spec.step_cost for arm, spec in plan.arms.items() if spec.step_cost} == {
        "paper": 7.7, "mean": 7.7}
    for recorded in read_ledger(plan).values():
        assert {"validation", "best_epoch", "last_epoch", "iterations_per_epoch", "trunk",
                "crop", "sdm", "seconds", "device", "passes_run"} <= set(recorded)
        for fold, curve in recorded["validation"].items():
            assert recorded["last_epoch"][fold] == curve[-1][0]


def test_the_committed_reports_keep_the_studies_numbers(tmp_path):
    """A few numbers of the studies' tables, as the scripts before the runner printed them."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    for name in COMMITTED:
        (results / f"{name}.json").write_bytes(
            (REPOSITORY / "benchmarks" / "results" / f"{name}.json").read_bytes())
    ablation = write_study_report(load_plan(PLANS / "ablation_study.yaml", tmp_path))
    assert ("| (b) paper | 3 | 1.72 ± 0.54 | 1.20 ± 1.00 | 0.95 ± 0.81 | 3.04 ± 0.68 | "
            "1.84 ± 0.91 | 1.50 ± 0.72 |") in ablation
    assert ("| (g) off, 16x epochs, early stop | 1 | 37.18 | 19.87 | 16.42 | 33.77 | 17.62 | "
            "14.35 |") in ablation
    # the equal-compute table: (a), (b), (g) cut at 31 epochs, (g) all, (b) - (g) cut
    assert ("| icons | ms | (a) off | 3 | 1.00x | 4.0 ± 0.0 | 3.8 ± 0.3 | 192 ± 14 | 200 ± 0 | "
            "235 ± 55 | - | 10.00 ± 0.34 | - | - |") in ablation
    assert ("| icons | ms | (b) paper | 3 | 7.70x | 4.0 ± 0.0 | 4.0 ± 0.0 | 200 ± 0 | 1540 ± 0 "
            "| 1797 ± 395 | 8.1x | 11.59 ± 0.16 | 14.51 ± 0.21 | -2.92 ± 0.14 |") in ablation
    assert "| 1738 ± 305 | 7.7x | 15.13 ± 0.38 | - | - |" in ablation
    assert "| 10.19 ± 0.34 | 12.30 (seed 0) | -1.77 (seed 0) |" in ablation
    glyphs = write_study_report(load_plan(PLANS / "glyph_study.yaml", tmp_path))
    assert ("| SDM embedding-only (T=1) | 3 | -1.15 ± 1.05 | -4.45 ± 2.23 | -5.48 ± 2.48 | "
            "-7.87 ± 2.27 | -10.44 ± 2.38 | -12.54 ± 2.55 |") in glyphs
    assert ("| SDM paper setting | 3 | 0.53 ± 0.59 | -0.19 ± 1.71 | -0.26 ± 2.08 | -0.01 ± 0.59 "
            "| -0.00 ± 1.90 | 0.01 ± 2.27 |") in glyphs
