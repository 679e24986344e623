"""A study's tables and plots, made from its ledger alone (see ``sdm.studies``).

Written next to the ledger as ``<name>.md`` and ``<name>.png`` (each arm minus the baseline,
paired by seed) and, when the plan names a step-cost file, ``<name>_cost.png`` (gain against
measured step cost, or against compute to the end of training, as the plan's ``cost_axis``
says; the Pareto front drawn). The compute table (validation curves, epochs,
wall-clock seconds, the baseline cut at each arm's compute) covers the runs whose entries
have validation curves; a ledger of test scores alone gets the score tables. Scores are
test-class percent; differences are percentage points; spreads are standard deviations over
seeds (n - 1).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import storage
from sdm.report import (
    format_mean_std,
    mean_and_std,
    paired_differences,
    plot_paired_differences,
    seed_table,
)
from sdm.studies import read_ledger
from sdm.study_plan import StudyPlan, run_name

SEPARATED_MAP = f"{C.SEPARATED}_{C.MAP_AT_R}"
CONCATENATED_MAP = f"{C.CONCATENATED}_{C.MAP_AT_R}"
Groups = dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]]


def collect(plan: StudyPlan, ledger: dict[str, dict]) -> Groups:
    """``{(dataset, loss): {arm: {seed: ledger entry}}}`` of the recorded runs: (dataset,
    loss) in the order the plan's steps first name them, the arms of each in the order the
    steps first name them for it, or as the plan's ``arms`` lists them (``arm_order:
    declared``), whatever was recorded first; seeds in order."""
    order: Groups = {}
    for run in plan.runs():
        seeds = order.setdefault((run.dataset, run.loss), {}).setdefault(run.arm, {})
        if run.name in ledger:
            seeds[run.seed] = ledger[run.name]
    declared = list(plan.arms)
    found: Groups = {}
    for group, arms in order.items():
        names = sorted(arms, key=declared.index) if plan.arm_order == "declared" else arms
        recorded = {arm: dict(sorted(arms[arm].items())) for arm in names if arms[arm]}
        if recorded:
            found[group] = recorded
    return found


def step_cost(entry: dict, costs: list[dict]) -> float | None:
    """An entry's training step cost in baseline steps (1 with SDM off), from the measured
    ``costs`` (records of ``benchmarks/sdm_cost.py --json``) of its trunk, input side,
    device, number of passes and perturbation point; None when not measured."""
    sdm = entry["sdm"]
    if not sdm["enabled"]:
        return 1.0
    for record in costs:
        if (record["trunk"], record["side"], record["device"]) == (
                entry.get("trunk"), entry.get("crop"), entry.get("device")):
            ratio = record["ratios"].get(sdm["perturb_at"], {}).get(str(sdm["passes"]))
            if ratio is not None:
                return float(ratio)
    return None


def arm_step_cost(plan: StudyPlan, arm: str, entry: dict, costs: list[dict]) -> float | None:
    """The arm's step cost in baseline steps: the plan's ``step_cost`` for the arm when it
    names one, else measured (``step_cost``); None when unknown (or the entry does not say
    its SDM setting)."""
    if plan.arms[arm].step_cost is not None:
        return plan.arms[arm].step_cost
    return step_cost(entry, costs) if "sdm" in entry else None


def format_step_cost(cost: float | None) -> str:
    """``1.27x``: the step cost to 2 decimals, rounded half up from its decimal digits as
    stored (the cost files keep 3: 1.265 -> 1.27, as the benchmark's own printout rounds
    the unrounded ratio); ``-`` when unknown."""
    if cost is None:
        return "-"
    return f"{Decimal(repr(cost)).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)}x"


def best_validation(entry: dict, last_epoch: float | None = None) -> float:
    """Best validation MAP@R (percent) over epochs 0..last_epoch (all when None), averaged
    over the run's folds: what the engine would have tested had it stopped there."""
    return statistics.fmean(
        max(value for epoch, value in curve
            if epoch >= 0 and (last_epoch is None or epoch <= last_epoch))
        for curve in entry["validation"].values())


CURVE_KEYS = ("validation", "best_epoch", "last_epoch", "iterations_per_epoch")


def has_curves(*entries: dict) -> bool:
    """Whether every entry records its validation curves and epochs (``CURVE_KEYS``)."""
    return all(key in entry for entry in entries for key in CURVE_KEYS)


def compute_table(plan: StudyPlan, groups: Groups, costs: list[dict]) -> str:
    """Per arm with validation curves: step cost, epochs run and to the best epoch, compute
    (steps x step cost, in baseline steps), wall-clock seconds and their ratio to the
    baseline's (paired by seed), best validation, and the baseline's best validation within
    the arm's compute with the arm's minus it, paired by seed (the plan's ``long_baseline``
    when it names one); empty when no arm has curves (a ledger of test scores alone)."""
    lines = []
    for (dataset, loss), arms in groups.items():
        baseline = arms.get(plan.baseline, {})
        cut_from = long_baseline_runs(plan, dataset, loss, arms)
        for arm, per_seed in arms.items():
            entries = list(per_seed.values())
            if not has_curves(*entries):
                continue
            cost = arm_step_cost(plan, arm, entries[0], costs)
            epochs = [_mean_over_folds(e["last_epoch"]) for e in entries]
            best = [_mean_over_folds(e["best_epoch"]) for e in entries]
            steps = [b * e["iterations_per_epoch"] for b, e in zip(best, entries, strict=True)]
            compute = [] if cost is None else [training_compute(e, cost) for e in entries]
            cut = None if arm == plan.baseline or _is_long_baseline(plan, arm) else \
                baseline_cut(per_seed, cut_from, cost)
            lines.append(
                f"| {dataset} | {loss} | {plan.arms[arm].label} | {len(per_seed)} | "
                f"{format_step_cost(cost)} | "
                f"{_spread(epochs, 1)} | {_spread(best, 1)} | {_spread(steps, 0)} | "
                f"{_spread(compute, 0) if compute else '-'} | "
                f"{_spread([e['seconds'] for e in entries if e.get('seconds')], 0) or '-'} | "
                f"{'-' if arm == plan.baseline else _time_ratio(per_seed, baseline) or '-'} | "
                f"{format_mean_std(*mean_and_std([best_validation(e) for e in entries]))} | "
                f"{_cut_cells(cut, per_seed)} |")
    if not lines:
        return ""
    return ("| data | loss | arm | seeds | step cost | epochs run | best epoch | steps to best "
            "| compute (baseline steps) | wall-clock s | wall-clock / baseline | val MAP@R "
            "| baseline within the arm's compute | arm − baseline within its compute |\n"
            "|-|-|-|-:|-:|-:|-:|-:|-:|-:|-:|-:|-:|-:|\n" + "\n".join(lines) + "\n")


def training_compute(entry: dict, cost: float) -> float:
    """A run's compute to the end of its training, in baseline steps: epochs run (mean over
    folds) x iterations per epoch x ``cost`` (its step cost)."""
    return _mean_over_folds(entry["last_epoch"]) * entry["iterations_per_epoch"] * cost


def cost_point(plan: StudyPlan, arm: str, per_seed: dict[int, dict],
               baseline: dict[int, dict], costs: list[dict]) -> float | None:
    """The arm's x on the gain/cost plot, as the plan's ``cost_axis`` says: its step cost, or
    its compute to the end of training over the baseline's (``training_compute``), mean over
    the seeds both ran with curves (1 for the baseline itself); None when unknown."""
    cost = arm_step_cost(plan, arm, next(iter(per_seed.values())), costs)
    if cost is None or plan.cost_axis == "step":
        return cost
    if arm == plan.baseline:
        return 1.0
    if not baseline:
        return None
    base_cost = arm_step_cost(plan, plan.baseline, next(iter(baseline.values())), costs)
    ratios = [training_compute(entry, cost) / training_compute(baseline[seed], base_cost)
              for seed, entry in per_seed.items()
              if seed in baseline and base_cost is not None
              and has_curves(entry, baseline[seed])]
    return statistics.fmean(ratios) if ratios else None


def long_baseline_runs(plan: StudyPlan, dataset: str, loss: str,
                       arms: dict[str, dict[int, dict]]) -> dict[int, dict]:
    """``{seed: entry}`` of the baseline whose validation curve is cut at an arm's compute:
    the plan's ``long_baseline`` runs of this dataset, loss and the arms' seeds, else the
    plan's own baseline arm."""
    if not plan.long_baseline:
        return arms.get(plan.baseline, {})
    long_runs = storage.read_json(plan.long_baseline[0])
    seeds = {seed for per_seed in arms.values() for seed in per_seed}
    names = {seed: run_name(dataset, loss, plan.long_baseline[1], seed) for seed in seeds}
    return {seed: long_runs[name] for seed, name in names.items() if name in long_runs}


def _is_long_baseline(plan: StudyPlan, arm: str) -> bool:
    """Whether ``arm`` is the plan's long baseline itself (an arm of this plan's ledger)."""
    return plan.long_baseline is not None and plan.long_baseline == (plan.ledger, arm)


def baseline_cut(per_seed: dict[int, dict], baseline: dict[int, dict],
                 cost: float | None) -> dict[int, tuple[float, float]] | None:
    """``{seed: (baseline's best validation within the arm's compute, the arm's best
    validation)}`` for the seeds both ran: the arm's compute is its epochs run x ``cost``,
    rounded up to whole epochs (the baseline's validations). A baseline fold that early
    stopping ended before that compute counts whole (its best is what more compute buys). None
    without a cost, or when the baseline's curve stops short of that compute otherwise (its
    schedule's end) at some seed."""
    if cost is None:
        return None
    found = {}
    for seed, entry in per_seed.items():
        base = baseline.get(seed)
        if base is None:
            continue
        budget = math.ceil(_mean_over_folds(entry["last_epoch"]) * cost - 1e-9)
        if any(max(epoch for epoch, _ in curve) < budget and not _stopped_early(base, fold)
               for fold, curve in base["validation"].items()):
            return None
        found[seed] = (best_validation(base, budget), best_validation(entry))
    return found


def _stopped_early(entry: dict, fold: str) -> bool:
    """Whether the fold's training ended by early stopping, before its ``max_epochs`` (a
    ledger entry that does not record ``max_epochs`` says nothing): then its best is what any
    larger compute buys, as the protocol would have stopped it there."""
    max_epochs = entry.get("max_epochs")
    return max_epochs is not None and entry["last_epoch"][fold] < max_epochs


def _cut_cells(cut: dict[int, tuple[float, float]] | None, per_seed: dict[int, dict]) -> str:
    """The compute table's last two cells: the baseline within the arm's compute and the
    arm minus it, over the paired seeds (named when fewer than the arm's)."""
    if not cut:
        return "- | -"
    seeds = "" if len(cut) == len(per_seed) else \
        f" (seed{'s' if len(cut) > 1 else ''} {', '.join(map(str, cut))})"
    base = format_mean_std(*mean_and_std([base for base, _ in cut.values()]))
    difference = format_mean_std(*mean_and_std([arm - base for base, arm in cut.values()]))
    return f"{base}{seeds} | {difference}{seeds}"


def _time_ratio(per_seed: dict[int, dict], baseline: dict[int, dict]) -> str | None:
    """Mean over the seeds both ran (with seconds) of the arm's wall-clock seconds over the
    baseline's, as ``8.1x``; None without such a seed."""
    ratios = [entry["seconds"] / baseline[seed]["seconds"] for seed, entry in per_seed.items()
              if entry.get("seconds") and baseline.get(seed, {}).get("seconds")]
    return f"{statistics.fmean(ratios):.1f}x" if ratios else None


def _mean_over_folds(by_fold: dict[str, int]) -> float:
    return statistics.fmean(by_fold.values())


def _spread(values: list[float], digits: int) -> str:
    """``mean ± std`` of ``values`` with ``digits`` decimals (the mean alone for one value,
    empty for none)."""
    if not values:
        return ""
    mean, std = mean_and_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, gain) points no other point beats on both (no costlier-or-equal point has
    a gain as high with a lower cost), sorted by cost."""
    front = []
    for cost, gain in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or gain > front[-1][1]:
            front.append((cost, gain))
    return front


def recommended_point(points: dict[str, tuple[float, float]], within: float) -> str:
    """Of ``{label: (cost, gain)}``, the label of the cheapest point whose gain is within
    ``within`` of the best gain (inclusive; at equal cost the higher gain). That point is on
    the Pareto front: a cheaper point as good would be within too."""
    best = max(gain for _, gain in points.values())
    eligible = [(cost, -gain, label) for label, (cost, gain) in points.items()
                if gain >= best - within - 1e-9]
    return min(eligible)[2]


CostPoint = tuple[float, float, float | None, int]  # cost, mean gain, its std, seeds paired


def compared_seeds(arms: dict[str, CostPoint], baseline: str) -> int:
    """The most seeds any arm of ``{label: CostPoint}`` but the baseline is paired over."""
    return max((count for label, (*_, count) in arms.items() if label != baseline), default=0)


def compared_arms(arms: dict[str, CostPoint], baseline: str) -> list[str]:
    """The labels of ``{label: CostPoint}`` that the gain/cost front and the recommendation
    compare: the baseline (label ``baseline``, gain 0) and the arms paired over
    ``compared_seeds`` (an arm over fewer seeds is another draw of the seeds, not
    comparable)."""
    seeds = compared_seeds(arms, baseline)
    return [label for label, (*_, count) in arms.items()
            if label == baseline or count == seeds]


def recommendation_table(panels: dict[str, dict[str, CostPoint]], within: float,
                         baseline: str) -> str:
    """One row per ``{"dataset, loss": {arm label: CostPoint}}``: of its ``compared_arms``,
    the gain/cost front, the best arm and ``recommended_point``."""
    rows = ["| dataset, loss | seeds | gain/cost front | best | recommended |",
            "|---|---|---|---|---|"]
    for title, arms in panels.items():
        compared = compared_arms(arms, baseline)
        points = {label: arms[label][:2] for label in compared}
        seeds = compared_seeds(arms, baseline)
        front = set(pareto_front(list(points.values())))
        shown = {label: f"{label}: {format_step_cost(cost)}, {gain:+.2f}"
                 for label, (cost, gain) in points.items()}
        best = max(points, key=lambda label: (points[label][1], -points[label][0]))
        rows.append(f"| {title} | {seeds} | "
                    + "; ".join(shown[label] for label, point in
                                sorted(points.items(), key=lambda item: item[1])
                                if point in front)
                    + f" | {shown[best]} | {shown[recommended_point(points, within)]} |")
    return "\n".join(rows) + "\n"


COST_AXIS_LABELS = {
    "step": "training step cost (baseline steps, measured)",
    "compute": "compute to the end of training (relative to SDM off's, paired by seed)",
}


def plot_gain_against_cost(panels: dict[str, dict[str, CostPoint]], path: Path,
                           baseline: str, cost_axis: str = "step") -> None:
    """One panel per ``{title: {arm label: CostPoint}}``, two to a row: each arm a point with
    its spread over seeds, the Pareto front of the ``compared_arms`` as a line and the arms
    over fewer seeds hollow; log-scale cost axis, which is the step cost or the relative
    compute (``cost_axis``, see ``cost_point``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.6 * rows),
                                squeeze=False)
    for axis, (title, arms) in zip(axes.flat, panels.items(), strict=False):
        compared = compared_arms(arms, baseline)
        for label, (cost, gain, std, _) in arms.items():
            drawn = axis.errorbar(cost, gain, yerr=0 if std is None else std, fmt="o",
                                  capsize=3)
            if label not in compared:
                drawn.lines[0].set_markerfacecolor("none")
            axis.annotate(label, (cost, gain), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
        front = pareto_front([arms[label][:2] for label in compared])
        axis.plot(*zip(*front, strict=True), color="gray", linestyle="--", linewidth=1,
                  label="Pareto front" if len(compared) == len(arms)
                  else "Pareto front (hollow: fewer seeds, not on it)")
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        costs = [cost for cost, *_ in arms.values()]
        ticks = [t for t in (0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 32)
                 if min(costs) / 1.1 <= t <= max(costs) * 1.1]
        labels = [f"{t:g}x" for t in ticks]
        if len(ticks) < 2:  # a narrow range: its ends
            ticks = sorted({min(costs), max(costs)})
            labels = [f"{t:.2f}x" for t in ticks]
        axis.set_xticks(ticks, labels)
        axis.minorticks_off()
        axis.set_xlabel(COST_AXIS_LABELS[cost_axis])
        axis.set_ylabel("separated MAP@R − SDM off (points)")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    storage.save_figure(figure, path)


def read_step_costs(plan: StudyPlan) -> list[dict]:
    """The plan's measured step costs (records of ``benchmarks/sdm_cost.py --json``); empty
    when it names none or the file is not there."""
    if plan.step_costs and plan.step_costs.is_file():
        return storage.read_json(plan.step_costs)
    return []


MeanStd = tuple[float, float | None]


@dataclass(frozen=True)
class ArmSummary:
    """One arm of one (dataset, loss) of a study, against the plan's baseline arm. Gains
    are test MAP@R differences in percentage points, paired by seed, as (mean, std over
    seeds; None for one seed); ``equal_compute`` is the arm's best validation MAP@R minus the
    baseline's within the arm's compute (see ``baseline_cut``), paired likewise. None where
    not measured (the baseline's own gains, a cost not measured, no validation curves)."""

    dataset: str
    loss: str
    arm: str
    label: str
    seeds: int
    step_cost: float | None
    separated_gain: MeanStd | None
    concatenated_gain: MeanStd | None
    equal_compute: MeanStd | None
    equal_compute_seeds: int


def arm_summaries(plan: StudyPlan) -> list[ArmSummary]:
    """Every recorded arm of the study, in the report's order."""
    groups = collect(plan, read_ledger(plan))
    costs = read_step_costs(plan)
    found = []
    for (dataset, loss), arms in groups.items():
        base = {seed: e["scores"] for seed, e in arms.get(plan.baseline, {}).items()}
        cut_from = long_baseline_runs(plan, dataset, loss, arms)
        for arm, per_seed in arms.items():
            entries = list(per_seed.values())
            cost = arm_step_cost(plan, arm, entries[0], costs)
            paired = {} if arm == plan.baseline else paired_differences(
                {seed: e["scores"] for seed, e in per_seed.items()}, base)
            curves = has_curves(*entries)
            cut = None if arm == plan.baseline or _is_long_baseline(plan, arm) or \
                not curves else baseline_cut(per_seed, cut_from, cost)
            found.append(ArmSummary(
                dataset, loss, arm, plan.arms[arm].label, len(per_seed), cost,
                _paired_mean(paired, SEPARATED_MAP), _paired_mean(paired, CONCATENATED_MAP),
                mean_and_std([a - b for b, a in cut.values()]) if cut else None,
                len(cut) if cut else 0))
    return found


def _paired_mean(paired: dict[int, dict[str, float]], column: str) -> MeanStd | None:
    values = [d[column] for d in paired.values() if column in d]
    return mean_and_std(values) if values else None


def write_study_report(plan: StudyPlan) -> str:
    """Writes ``<name>.md`` and its plots next to the ledger; returns the Markdown."""
    text = study_report(plan, draw=True)
    storage.write_text(plan.ledger.parent / f"{plan.name}.md", text)
    return text


def study_report(plan: StudyPlan, *, draw: bool = False) -> str:
    """The study's Markdown report from its ledger alone; ``draw`` also writes its plots
    (``<name>.png``, ``<name>_cost.png``) next to the ledger."""
    ledger = read_ledger(plan)
    groups = collect(plan, ledger)
    costs = read_step_costs(plan)
    output = plan.ledger.parent
    text = (f"# Study {plan.name}\n\n{len(ledger)} runs recorded in "
            f"`{plan.ledger.name}`. Test classes, percent; mean ± standard deviation over "
            "seeds (the mean alone for one seed).\n")
    if plan.notes:
        text += f"\n{plan.notes.strip()}\n"
    differences: dict[str, dict[str, dict]] = {}
    cost_panels: dict[str, dict[str, CostPoint]] = {}
    for (dataset, loss), arms in groups.items():
        scores = {plan.arms[arm].label: {seed: e["scores"] for seed, e in per_seed.items()}
                  for arm, per_seed in arms.items()}
        text += f"\n## {dataset}, {loss}\n\n" + seed_table("arm", scores)
        base = {seed: e["scores"] for seed, e in arms.get(plan.baseline, {}).items()}
        paired = {plan.arms[arm].label: paired_differences(
                      {seed: e["scores"] for seed, e in per_seed.items()}, base)
                  for arm, per_seed in arms.items() if arm != plan.baseline}
        paired = {label: found for label, found in paired.items() if found}
        if paired:
            text += (f"\nArm minus {plan.arms[plan.baseline].label}, paired by seed "
                     "(percentage points; positive = better):\n\n"
                     + seed_table(f"arm − {plan.baseline}", paired))
            differences[f"{dataset}, {loss}: arm − {plan.baseline}"] = paired
        for arm, per_seed in arms.items():
            label = plan.arms[arm].label
            cost = cost_point(plan, arm, per_seed, arms.get(plan.baseline, {}), costs)
            if cost is not None and (arm == plan.baseline or label in paired):
                gains = [0.0] if arm == plan.baseline else [
                    d[SEPARATED_MAP] for d in paired[label].values()]
                mean, std = mean_and_std(gains)
                cost_panels.setdefault(f"{dataset}, {loss}", {})[label] = (
                    cost, mean, std, len(gains))
    table = compute_table(plan, groups, costs) if groups else ""
    if table:
        cut_from = (f"`{plan.long_baseline[1]}` in `{plan.long_baseline[0].name}`"
                    if plan.long_baseline else plan.arms[plan.baseline].label)
        text += ("\n## Compute\n\nStep cost measured on the run's device (`step_costs`) or "
                 "given by the plan (an arm's `step_cost`); compute = epochs run x iterations "
                 "x step cost; wall-clock / baseline is the mean ratio of the arm's seconds to "
                 "the baseline's, paired by seed; validation MAP@R is the best epoch's, mean "
                 "of the folds. The last two columns: the best validation MAP@R of the "
                 f"baseline ({cut_from}) within the arm's compute, rounded up to whole epochs, "
                 "and the arm's minus it, paired by seed (the seeds named where fewer than the "
                 "arm's; - where the baseline did not train that far). A best over more epochs "
                 "is favoured by its own selection, so a longer baseline's best leans "
                 "optimistic.\n\n" + table)
    if differences:
        if draw:
            plot_paired_differences(differences, output / f"{plan.name}.png")
        text += f"\n![arm minus baseline]({plan.name}.png)\n"
    cost_panels = {title: arms for title, arms in cost_panels.items() if len(arms) > 1}
    if plan.step_costs is not None and cost_panels:
        if draw:
            plot_gain_against_cost(cost_panels, output / f"{plan.name}_cost.png",
                                   plan.arms[plan.baseline].label, plan.cost_axis)
        against = "step cost" if plan.cost_axis == "step" else "compute to the end of training"
        text += f"\n![gain against {against}]({plan.name}_cost.png)\n"
        if plan.recommend_within is not None:
            text += (f"\n## Recommended\n\nBy (dataset, loss): the cheapest arm of the gain/cost "
                     f"front whose separated MAP@R gain over {plan.arms[plan.baseline].label} "
                     f"is within {plan.recommend_within:g} points of the best arm's, each arm "
                     f"at ({against}, mean gain over seeds). Only the arms run for the most "
                     "seeds of the (dataset, loss) compete (seeds: how many); "
                     f"{plan.arms[plan.baseline].label} itself is the recommendation where no "
                     "arm gains more than that.\n\n"
                     + recommendation_table(cost_panels, plan.recommend_within,
                                            plan.arms[plan.baseline].label))
    return text
