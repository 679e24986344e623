"""A study's plan: what it compares, over which seeds, in which order (``sdm.studies`` runs it).

A plan is a YAML file (see ``exp_configs/studies/`` and the development guide's list of its
keys) naming its datasets (config layers), losses (a base config each), arms (config layers and
overrides on top) and steps (which arms of which dataset and loss, in priority order), plus the
ledger its runs are recorded in. ``load_plan`` reads it and checks every key, so that a plan
with a wrong key, type or name is one ``ConfigError`` naming it, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sdm.config import ConfigError, yaml_error

if TYPE_CHECKING:
    from collections.abc import Collection

REQUIRED_KEYS = ("name", "ledger", "baseline", "datasets", "losses", "arms", "steps")
OPTIONAL_KEYS = ("experiments_root", "step_costs", "seeds", "overrides", "long_baseline",
                 "arm_order", "cost_axis", "recommend_within", "notes")
ARM_KEYS = ("label", "layers", "overrides", "step_cost")
STEP_KEYS = ("dataset", "loss", "arms", "seeds")
ARM_ORDERS = ("steps", "declared")  # the report's order of arms (StudyPlan.arm_order)
COST_AXES = ("step", "compute")  # the gain/cost plot's x axis (StudyPlan.cost_axis)
BOOLEAN_HINT = ' (quote a name YAML reads as a boolean, such as "off")'


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
    different epochs). ``recommend_within``: the report names, for each (dataset, loss), the
    cheapest arm of the gain/cost front whose mean separated MAP@R gain is within this many
    points of the best arm's (None: no recommendation). ``notes``: a paragraph the report
    prints under its title."""

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
    recommend_within: float | None = None
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
    ``ConfigError`` naming the key for anything missing, of the wrong type or inconsistent."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise ConfigError(f"study plan {path} does not exist (the shipped plans are in "
                          "exp_configs/studies/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise yaml_error(path, error) from None
    shape = _Shape(path)
    shape.keys(data, REQUIRED_KEYS, OPTIONAL_KEYS, "the plan")
    here = path.parent

    def layers(items: Any, where: str) -> tuple[Path, ...]:
        return tuple((here / item).resolve() for item in shape.texts(items, where))

    arms = {}
    for name, spec in shape.mapping(data["arms"], "arms").items():
        where = f"arm {name!r}"
        spec = {} if spec is None else spec
        shape.keys(spec, (), ARM_KEYS, where)
        arms[name] = Arm(name, str(spec.get("label", name)),
                         layers(spec.get("layers"), f"{where}: layers"),
                         tuple(shape.texts(spec.get("overrides"), f"{where}: overrides")),
                         shape.number(spec.get("step_cost"), f"{where}: step_cost",
                                      "a positive number of baseline steps",
                                      zero_allowed=False))
    default_seeds = shape.seeds(data.get("seeds", [0]), "seeds")
    steps = []
    for number, step in enumerate(shape.sequence(data["steps"], "steps"), start=1):
        where = f"step {number}"
        shape.keys(step, ("dataset", "loss", "arms"), STEP_KEYS, where)
        steps.append(Step(step["dataset"], step["loss"],
                          tuple(shape.sequence(step["arms"], f"{where}: arms")),
                          shape.seeds(step["seeds"], f"{where}: seeds") if "seeds" in step
                          else default_seeds))
    long_baseline = data.get("long_baseline")
    if long_baseline is not None:
        shape.keys(long_baseline, ("ledger", "arm"), (), "long_baseline")
    name = shape.text(data["name"], "name")
    plan = StudyPlan(
        name=name, ledger=root / shape.text(data["ledger"], "ledger"),
        experiments_root=root / shape.text(data.get("experiments_root", f"experiments/{name}"),
                                           "experiments_root"),
        baseline=shape.text(data["baseline"], "baseline"),
        datasets={dataset: layers(files, f"datasets: {dataset}")
                  for dataset, files in shape.mapping(data["datasets"], "datasets").items()},
        losses={dataset: {loss: (here / shape.text(file, f"losses: {dataset}: {loss}")).resolve()
                          for loss, file in shape.mapping(losses, f"losses: {dataset}").items()}
                for dataset, losses in shape.mapping(data["losses"], "losses").items()},
        arms=arms, steps=tuple(steps),
        overrides=tuple(shape.texts(data.get("overrides"), "overrides")),
        step_costs=root / shape.text(data["step_costs"], "step_costs")
        if data.get("step_costs") else None,
        long_baseline=(root / shape.text(long_baseline["ledger"], "long_baseline: ledger"),
                       shape.text(long_baseline["arm"], "long_baseline: arm"))
        if long_baseline is not None else None,
        arm_order=str(data.get("arm_order", "steps")),
        cost_axis=str(data.get("cost_axis", "step")),
        recommend_within=shape.number(data.get("recommend_within"), "recommend_within",
                                      "a number of MAP@R points from 0",
                                      zero_allowed=True),
        notes=str(data.get("notes", "")))
    _check_plan(plan, path)
    return plan


class _Shape:
    """Checks of a plan's values for their type, each failure a ``ConfigError`` naming the
    plan, the key and the value."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, expected: str, value: Any) -> ConfigError:
        hint = BOOLEAN_HINT if isinstance(value, bool) else ""
        return ConfigError(f"study plan {self.path}: {where} must be {expected}, not "
                           f"{value!r}{hint}")

    def mapping(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping of names", value)
        for key in value:
            self.text(key, f"a name under {where}")
        return value

    def keys(self, value: Any, required: tuple[str, ...], optional: tuple[str, ...],
             where: str) -> None:
        """``value`` is a mapping holding every ``required`` key and no key outside
        ``required`` and ``optional``."""
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping of keys", value)
        missing = [key for key in required if key not in value]
        if missing:
            raise ConfigError(f"study plan {self.path}: {where} lacks {', '.join(missing)}")
        unknown = [str(key) for key in value if key not in (*required, *optional)]
        if unknown:
            raise ConfigError(f"study plan {self.path}: {where} has unknown keys "
                              f"{', '.join(unknown)}; its keys are "
                              f"{', '.join((*required, *optional))}")

    def sequence(self, value: Any, where: str) -> list:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "a non-empty list", value)
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, "a string", value)
        return value

    def texts(self, value: Any, where: str) -> list[str]:
        """A list of strings (None: empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "a list of strings", value)
        return [self.text(item, where) for item in value]

    def number(self, value: Any, where: str, expected: str, *,
               zero_allowed: bool) -> float | None:
        """A number above 0 (or 0 itself when ``zero_allowed``); None: absent."""
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                or (value == 0 and not zero_allowed)):
            raise ConfigError(f"study plan {self.path}: {where} must be {expected}, not "
                              f"{value!r}")
        return float(value)

    def seeds(self, value: Any, where: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or not all(
                isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
                for seed in value):
            raise self.fail(where, "a non-empty list of seeds (integers from 0)", value)
        return tuple(value)


def _check_plan(plan: StudyPlan, path: Path) -> None:
    if plan.arm_order not in ARM_ORDERS:
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
                              f"; arms are {', '.join(plan.arms)}{BOOLEAN_HINT}")
    for file in [*(f for files in plan.datasets.values() for f in files),
                 *(f for losses in plan.losses.values() for f in losses.values()),
                 *(f for arm in plan.arms.values() for f in arm.layers)]:
        if not file.is_file():
            raise ConfigError(f"study plan {path}: config layer {file} does not exist")
