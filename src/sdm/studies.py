"""Running a study: a plan of named arms (``sdm.study_plan``) run over seeds, with a committed
ledger.

``run_study`` trains, tests and records every run of the plan in
order, seed by seed within a step, so that all arms of a step have seed 0 before any has seed
1. A run is one experiment folder (interrupted runs resume from it); a finished run's numbers
go into the ledger (JSON, written atomically, committed with the repository), and a run in the
ledger is never run again: a later session on a fresh checkout continues where the last one
stopped. Tables and plots are made from the ledger alone (``sdm.study_report``).
"""

from __future__ import annotations

import fcntl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdm import constants as C
from sdm import storage
from sdm.config import load_config
from sdm.errors import UserInputError
from sdm.study_plan import PlannedRun, StudyPlan

if TYPE_CHECKING:
    from sdm.engine.experiment import ExperimentFolder

TIMING_FILE = "study_seconds.json"
LEDGER_LOCK = ".ledger.lock"  # in the experiments root: one process updates the ledger at a time


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


def unplanned_entries(plan: StudyPlan) -> list[str]:
    """The ledger's entries that are no run of the plan (an arm, loss or seed renamed or
    removed from it), sorted: the report leaves them out."""
    planned = {run.name for run in plan.runs()}
    return sorted(name for name in read_ledger(plan) if name not in planned)


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
    record(plan, run.name, entry)
    print(f"{config.name}: {entry['seconds']:.0f} s, test MAP@R separated "
          f"{entry['scores']['separated_mean_average_precision_at_r']:.2f}", flush=True)
    return entry


def record(plan: StudyPlan, name: str, entry: dict) -> None:
    """Adds ``entry`` to the plan's ledger under ``name``: read, updated and written (atomically)
    under an exclusive lock (``flock`` on ``LEDGER_LOCK`` in the experiments root), so that
    processes running parts of the same plan side by side (other seeds or steps, other
    devices) never lose each other's entries."""
    plan.experiments_root.mkdir(parents=True, exist_ok=True)
    with open(plan.experiments_root / LEDGER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        ledger = read_ledger(plan)
        ledger[name] = entry
        storage.write_json(plan.ledger, ledger)


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
