"""Studies as data: a plan of named arms run over seeds, with a committed ledger.

A plan (YAML, see ``exp_configs/studies/``) names its datasets (config layers), losses (a base
config each), arms (config layers and overrides on top) and steps (which arms of which dataset
and loss, in priority order). ``run_study`` trains, tests and records every run of the plan in
order, seed by seed within a step, so that all arms of a step have seed 0 before any has seed
1. A run is one experiment folder (interrupted runs resume from it); a finished run's numbers
go into the ledger (JSON, written atomically, committed with the repository), and a run in the
ledger is never run again: a later session on a fresh checkout continues where the last one
stopped. Tables and plots are made from the ledger alone (``sdm.study_report``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sdm import constants as C
from sdm import storage
from sdm.config import ConfigError, load_config, yaml_error
from sdm.errors import UserInputError

if TYPE_CHECKING:
    from collections.abc import Collection

    from sdm.engine.experiment import ExperimentFolder

TIMING_FILE = "study_seconds.json"
COST_AXES = ("step", "compute")  # the gain/cost plot's x axis (StudyPlan.cost_axis)


@dataclass(frozen=True)
class Arm:
    """One setting compared in a study: config layers and overrides over a dataset and loss.

    ``step_cost``: the arm's training step cost in baseline steps, used by the report instead
    of the plan's step-cost file (a cost measured elsewhere, or the one a finished study was
    reported with); None: looked up in the file."""

    name: str
    label: str
    layers: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = ()
    step_cost: float | None = None


@dataclass(frozen=True)
class Step:
    """The arms of one (dataset, loss) to run, each over ``seeds``."""

    dataset: str
    loss: str
    arms: tuple[str, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class StudyPlan:
    """A study: its runs are every step's (dataset, loss, arm, seed). Paths are absolute.

    ``long_baseline`` (ledger, arm): where the compute table finds the baseline trained longer
    than the plan's own, whose validation curve it cuts at each arm's compute (same dataset,
    loss and seed; default: the plan's baseline). ``arm_order``: the order of each (dataset,
    loss)'s arms in the report, "steps" (as the steps first name them) or "declared" (as
    ``arms`` lists them). ``cost_axis``: the x axis of the report's gain/cost plot, "step"
    (an arm's step cost) or "compute" (its compute to the end of training relative to the
    baseline's, paired by seed: fairer for runs trained to convergence, which stop at
    different epochs). ``notes``: a paragraph the report prints under its title."""

    name: str
    ledger: Path
    experiments_root: Path
    baseline: str
    datasets: dict[str, tuple[Path, ...]]
    losses: dict[str, dict[str, Path]]
    arms: dict[str, Arm]
    steps: tuple[Step, ...]
    overrides: tuple[str, ...] = ()
    step_costs: Path | None = None
    long_baseline: tuple[Path, str] | None = None
    arm_order: str = "steps"
    cost_axis: str = "step"
    notes: str = ""

    def runs(self, steps: Collection[int] | None = None) -> list[PlannedRun]:
        """Every run in run order (step by step, seed by seed within a step, arms as the
        step lists them), each once, under the first step that names it; ``steps``: only
        the runs of these steps (1-based)."""
        found: dict[str, PlannedRun] = {}
        for number, step in enumerate(self.steps, start=1):
            if steps is not None and number not in steps:
                continue
            for seed in step.seeds:
                for arm in step.arms:
                    run = PlannedRun(number, step.dataset, step.loss, arm, seed)
                    found.setdefault(run.name, run)
        return list(found.values())


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: the step (1-based) that runs it, and its dataset, loss, arm and
    seed."""

    step: int
    dataset: str
    loss: str
    arm: str
    seed: int

    @property
    def name(self) -> str:
        """The run's name: its experiment folder and its key in the ledger."""
        return run_name(self.dataset, self.loss, self.arm, self.seed)


def run_name(dataset: str, loss: str, arm: str, seed: int) -> str:
    return f"{dataset}_{loss}_{arm}_seed{seed}"


def load_plan(path: str | Path, root: str | Path = ".") -> StudyPlan:
    """The plan in YAML file ``path``. Config layers are relative to the plan's file; the
    ledger, experiments root and step-cost file relative to ``root`` (the repository).
    ``ConfigError`` naming the key for anything missing or inconsistent."""
    path, root = Path(path), Path(root)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise yaml_error(path, error) from None
    if not isinstance(data, dict):
        raise ConfigError(f"study plan {path} must be a mapping of keys")
    missing = [key for key in ("name", "ledger", "baseline", "datasets", "losses", "arms",
                               "steps") if key not in data]
    if missing:
        raise ConfigError(f"study plan {path} lacks {', '.join(missing)}")
    here = path.parent

    def layers(items: Any) -> tuple[Path, ...]:
        return tuple((here / item).resolve() for item in items or ())

    arms = {name: Arm(name, str(spec.get("label", name)), layers(spec.get("layers")),
                      tuple(spec.get("overrides") or ()), _step_cost(spec, name, path))
            for name, spec in data["arms"].items()}
    default_seeds = tuple(data.get("seeds", (0,)))
    steps = tuple(Step(step["dataset"], step["loss"], tuple(step["arms"]),
                       tuple(step.get("seeds", default_seeds))) for step in data["steps"])
    plan = StudyPlan(
        name=data["name"], ledger=root / data["ledger"],
        experiments_root=root / data.get("experiments_root", f"experiments/{data['name']}"),
        baseline=data["baseline"],
        datasets={name: layers(files) for name, files in data["datasets"].items()},
        losses={dataset: {loss: (here / file).resolve() for loss, file in losses.items()}
                for dataset, losses in data["losses"].items()},
        arms=arms, steps=steps, overrides=tuple(data.get("overrides") or ()),
        step_costs=root / data["step_costs"] if data.get("step_costs") else None,
        long_baseline=(root / data["long_baseline"]["ledger"], data["long_baseline"]["arm"])
        if data.get("long_baseline") else None,
        arm_order=str(data.get("arm_order", "steps")),
        cost_axis=str(data.get("cost_axis", "step")), notes=str(data.get("notes", "")))
    _check_plan(plan, path)
    return plan


def _step_cost(spec: dict, arm: str, path: Path) -> float | None:
    cost = spec.get("step_cost")
    if cost is None:
        return None
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost <= 0:
        raise ConfigError(f"study plan {path}: arm {arm!r}: step_cost must be a positive "
                          f"number of baseline steps, not {cost!r}")
    return float(cost)


def _check_plan(plan: StudyPlan, path: Path) -> None:
    if plan.arm_order not in ("steps", "declared"):
        raise ConfigError(f"study plan {path}: arm_order must be steps or declared, not "
                          f"{plan.arm_order!r}")
    if plan.cost_axis not in COST_AXES:
        raise ConfigError(f"study plan {path}: cost_axis must be step or compute, not "
                          f"{plan.cost_axis!r}")
    if plan.baseline not in plan.arms:
        raise ConfigError(f"study plan {path}: baseline {plan.baseline!r} is not an arm")
    for step in plan.steps:
        if step.dataset not in plan.datasets:
            raise ConfigError(f"study plan {path}: step dataset {step.dataset!r} is not one of "
                              f"{', '.join(plan.datasets)}")
        if step.loss not in plan.losses.get(step.dataset, {}):
            raise ConfigError(f"study plan {path}: no loss {step.loss!r} for dataset "
                              f"{step.dataset!r} under losses")
        unknown = [arm for arm in step.arms if arm not in plan.arms]
        if unknown:
            raise ConfigError(f"study plan {path}: unknown arms {', '.join(map(str, unknown))}"
                              f"; arms are {', '.join(plan.arms)} (quote a name YAML reads "
                              "as a boolean, such as \"off\")")
    for file in [*(f for files in plan.datasets.values() for f in files),
                 *(f for losses in plan.losses.values() for f in losses.values()),
                 *(f for arm in plan.arms.values() for f in arm.layers)]:
        if not file.is_file():
            raise ConfigError(f"study plan {path}: config layer {file} does not exist")


def run_config(plan: StudyPlan, run: PlannedRun, *, dataset_root: str | Path | None = None,
               device: str | None = None):
    """The loaded config of one run: loss base, dataset layers, arm layers, then the plan's,
    the arm's and the run's own overrides."""
    arm = plan.arms[run.arm]
    files = [plan.losses[run.dataset][run.loss], *plan.datasets[run.dataset], *arm.layers]
    overrides = [*plan.overrides, *arm.overrides, f"training.seed={run.seed}",
                 f"name={run.name}", f"experiments_root={plan.experiments_root}"]
    if dataset_root is not None:
        overrides.append(f"dataset.root={dataset_root}")
    if device is not None:
        overrides.append(f"training.device={device}")
    return load_config(files, overrides)


def read_ledger(plan: StudyPlan) -> dict[str, dict]:
    """``{run name: entry}`` of every finished run (empty before the first)."""
    return storage.read_json(plan.ledger) if plan.ledger.is_file() else {}


@dataclass(frozen=True)
class RunState:
    """Where one run of a plan stands: ``state`` is "recorded" (in the ledger), "trained"
    (tested, recorded by the next ``run_study``), "started" (its folder holds validated
    epochs) or "to run"; ``detail`` says what the ledger or the folder shows."""

    step: int
    name: str
    state: str
    detail: str = ""


def run_states(plan: StudyPlan) -> list[RunState]:
    """Every run of the plan in run order (as ``run_study`` takes them), with its state."""
    ledger = read_ledger(plan)
    return [_run_state(run, ledger.get(run.name), plan.experiments_root / run.name)
            for run in plan.runs()]


def _run_state(run: PlannedRun, entry: dict | None, folder: Path) -> RunState:
    step, name = run.step, run.name
    if entry is not None:
        scores = entry["scores"]
        seconds = f", {entry['seconds']:.0f} s" if entry.get("seconds") is not None else ""
        return RunState(step, name, "recorded", (
            f"test MAP@R {scores['separated_mean_average_precision_at_r']:.2f} separated, "
            f"{scores['concatenated_mean_average_precision_at_r']:.2f} concatenated{seconds}"))
    from sdm.engine.experiment import ExperimentFolder

    if ExperimentFolder(folder).has_results():
        return RunState(step, name, "trained", "tested; the next run of the plan records it")
    folds = []
    for fold in sorted(folder.glob("fold_*"), key=lambda path: int(path.name[5:])):
        if (fold / C.FOLD_DONE_FILE).is_file():
            folds.append(f"{fold.name} done")
        elif (fold / C.METRICS_CSV).is_file() and (rows := storage.read_csv(fold / C.METRICS_CSV)):
            folds.append(f"{fold.name} validated to epoch {rows[-1]['epoch']}")
    if folds:
        return RunState(step, name, "started", ", ".join(folds))
    return RunState(step, name, "to run")


def run_study(plan: StudyPlan, *, dataset_root: str | Path | None = None,
              device: str | None = None, steps: list[int] | None = None,
              seeds: list[int] | None = None, on_run: Any = None) -> list[str]:
    """Runs the plan's missing runs in order (``steps``: 1-based step numbers; ``seeds``: a
    subset of each step's seeds); returns the names of the runs it recorded. An interrupt
    (Ctrl-C; SIGTERM under the ``sdm`` command) keeps the seconds of the run in progress.
    ``on_run(name)`` after each.
    ``UserInputError`` for a step the plan lacks or a seed none of the chosen steps runs."""
    _check_selection(plan, steps, seeds)
    recorded = []
    for run in plan.runs(steps):
        if (seeds is not None and run.seed not in seeds) or run.name in read_ledger(plan):
            continue
        run_one(plan, run, dataset_root=dataset_root, device=device)
        recorded.append(run.name)
        if on_run is not None:
            on_run(run.name)
    return recorded


def _check_selection(plan: StudyPlan, steps: list[int] | None, seeds: list[int] | None) -> None:
    missing = sorted(set(steps or ()) - set(range(1, len(plan.steps) + 1)))
    if missing:
        raise UserInputError(f"{_numbered('step', missing)} not in study plan {plan.name}: its "
                             f"steps are 1 to {len(plan.steps)} (sdm study status lists them)")
    chosen = sorted({run.seed for run in plan.runs(steps)})
    unrun = sorted(set(seeds or ()) - set(chosen))
    if unrun:
        raise UserInputError(f"{_numbered('seed', unrun)} not run by the chosen steps of study "
                             f"plan {plan.name}: they run seeds {', '.join(map(str, chosen))}")


def _numbered(noun: str, numbers: list[int]) -> str:
    """``step 3 is`` or ``steps 0, 3 are``."""
    listed = ", ".join(map(str, numbers))
    return f"{noun}s {listed} are" if len(numbers) > 1 else f"{noun} {listed} is"


def run_one(plan: StudyPlan, run: PlannedRun, *, dataset_root: str | Path | None = None,
            device: str | None = None) -> dict:
    """Trains (resuming its folder), tests and records one run; returns its ledger entry."""
    from sdm.engine.experiment import ExperimentFolder

    config = run_config(plan, run, dataset_root=dataset_root, device=device)
    experiment = ExperimentFolder.of(config)
    if not experiment.has_results():
        start = time.time()
        try:
            experiment.run()
        finally:
            _add_seconds(experiment.path, time.time() - start)
        experiment.evaluate(pretrained=False)
    entry = ledger_entry(experiment)
    entry.update(dataset=run.dataset, loss=run.loss, arm=run.arm, seed=run.seed)
    ledger = read_ledger(plan)
    ledger[run.name] = entry
    storage.write_json(plan.ledger, ledger)
    print(f"{config.name}: {entry['seconds']:.0f} s, test MAP@R separated "
          f"{entry['scores']['separated_mean_average_precision_at_r']:.2f}", flush=True)
    return entry


def ledger_entry(experiment: ExperimentFolder) -> dict:
    """A finished (trained and evaluated) run's record: test scores (percent), validation
    curves, epochs, steps to the best epoch, wall-clock seconds, device and how its SDM
    passes ran."""
    import torch

    from sdm.engine.build import batched_passes, resolve_device
    from sdm.report import percent_scores

    config = experiment.config
    device = resolve_device(config.training.device)
    all_curves = experiment.curves()
    curves, best_epochs, last_epochs = {}, {}, {}
    for fold in config.training.folds:
        curves[str(fold)] = [[int(row["epoch"]), 100 * float(row[C.MAP_AT_R])]
                             for row in all_curves[fold]]
        done = experiment.fold_summary(fold)
        best_epochs[str(fold)], last_epochs[str(fold)] = done["best_epoch"], done["last_epoch"]
    timing = experiment.path / TIMING_FILE
    return {
        "scores": percent_scores(experiment),
        "validation": curves, "best_epoch": best_epochs, "last_epoch": last_epochs,
        "iterations_per_epoch": config.training.iterations_per_epoch,
        "max_epochs": config.training.max_epochs,
        "trunk": config.model.trunk, "crop": config.transform.crop,
        "sdm": {"enabled": config.sdm.enabled, "passes": config.sdm.passes,
                "feature_dropout": config.sdm.feature_dropout,
                "perturb_at": config.sdm.perturb_at},
        "seconds": storage.read_json(timing)["train_seconds"] if timing.is_file() else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "passes_run": ("batched" if batched_passes(config, device) else "one after another")
        if config.sdm.enabled else None,
    }


def _add_seconds(folder: Path, seconds: float) -> None:
    """Adds training and validation wall-clock seconds to the run's total over invocations."""
    if not folder.is_dir():
        return
    timing = folder / TIMING_FILE
    spent = storage.read_json(timing)["train_seconds"] if timing.is_file() else 0.0
    storage.write_json(timing, {"train_seconds": spent + seconds})
