"""A study's tables and plots, made from its ledger alone (see ``sdm.studies``).

Written next to the ledger as ``<name>.md`` and ``<name>.png`` (each arm minus the baseline,
paired by seed) and, when the plan names a step-cost file, ``<name>_cost.png`` (gain against
measured step cost, the Pareto front drawn). Scores are test-class percent; differences are
percentage points; spreads are standard deviations over seeds (n - 1).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import records
from sdm.report import (
    format_mean_std,
    mean_and_std,
    paired_differences,
    plot_paired_differences,
    seed_table,
)
from sdm.studies import StudyPlan, read_ledger, run_name

SEPARATED_MAP = f"{C.SEPARATED}_{C.MAP_AT_R}"
CONCATENATED_MAP = f"{C.CONCATENATED}_{C.MAP_AT_R}"
Groups = dict[tuple[str, str], dict[str, dict[int, dict[str, Any]]]]


def collect(plan: StudyPlan, ledger: dict[str, dict]) -> Groups:
    """``{(dataset, loss): {arm: {seed: ledger entry}}}`` of the recorded runs, in the plan's
    order of steps and of arms within them."""
    found: Groups = {}
    for step in plan.steps:
        for arm in step.arms:
            for seed in step.seeds:
                entry = ledger.get(run_name(step.dataset, step.loss, arm, seed))
                if entry is not None:
                    arms = found.setdefault((step.dataset, step.loss), {})
                    arms.setdefault(arm, {})[seed] = entry
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


def best_validation(entry: dict, last_epoch: float | None = None) -> float:
    """Best validation MAP@R (percent) over epochs 0..last_epoch (all when None), averaged
    over the run's folds: what the engine would have tested had it stopped there."""
    return statistics.fmean(
        max(value for epoch, value in curve
            if epoch >= 0 and (last_epoch is None or epoch <= last_epoch))
        for curve in entry["validation"].values())


def compute_table(plan: StudyPlan, groups: Groups, costs: list[dict]) -> str:
    """Per arm: step cost, epochs run and to the best epoch, compute (steps x step cost, in
    baseline steps) and the baseline's best validation within that compute against the
    arm's own, paired by seed (the plan's ``long_baseline`` when it names one)."""
    lines = []
    long_runs = records.read_json(plan.long_baseline[0]) if plan.long_baseline else {}
    for (dataset, loss), arms in groups.items():
        baseline = arms.get(plan.baseline, {})
        if plan.long_baseline:
            seeds = {seed for per_seed in arms.values() for seed in per_seed}
            names = {seed: run_name(dataset, loss, plan.long_baseline[1], seed) for seed in seeds}
            baseline = {seed: long_runs[name] for seed, name in names.items() if name in long_runs}
        for arm, per_seed in arms.items():
            entries = list(per_seed.values())
            cost = step_cost(entries[0], costs)
            epochs = [_mean_over_folds(e["last_epoch"]) for e in entries]
            best = [_mean_over_folds(e["best_epoch"]) for e in entries]
            steps = [b * e["iterations_per_epoch"] for b, e in zip(best, entries, strict=True)]
            compute = [] if cost is None else [
                epoch * e["iterations_per_epoch"] * cost
                for epoch, e in zip(epochs, entries, strict=True)]
            cut = _baseline_cut(per_seed, baseline, cost) if arm != plan.baseline else None
            lines.append(
                f"| {dataset} | {loss} | {plan.arms[arm].label} | {len(per_seed)} | "
                f"{'-' if cost is None else f'{cost:.2f}x'} | "
                f"{_spread(epochs, 1)} | {_spread(best, 1)} | {_spread(steps, 0)} | "
                f"{_spread(compute, 0) if compute else '-'} | "
                f"{_spread([e['seconds'] for e in entries if e.get('seconds')], 0) or '-'} | "
                f"{format_mean_std(*mean_and_std([best_validation(e) for e in entries]))} | "
                f"{cut or '-'} |")
    return ("| data | loss | arm | seeds | step cost | epochs run | best epoch | steps to best "
            "| compute (baseline steps) | wall-clock s | val MAP@R | arm − baseline cut at "
            "its compute |\n|-|-|-|-:|-:|-:|-:|-:|-:|-:|-:|-:|\n" + "\n".join(lines) + "\n")


def _baseline_cut(per_seed: dict[int, dict], baseline: dict[int, dict],
                  cost: float | None) -> str | None:
    """Arm's best validation minus the baseline's best within the arm's compute (rounded up
    to whole epochs, the baseline's validations), paired by seed; None without a cost, or
    when the baseline's curve stops short of that compute."""
    if cost is None:
        return None
    differences = []
    for seed, entry in per_seed.items():
        base = baseline.get(seed)
        if base is None:
            continue
        budget = math.ceil(_mean_over_folds(entry["last_epoch"]) * cost - 1e-9)
        reached = min(max(epoch for epoch, _ in curve) for curve in base["validation"].values())
        if reached < budget:
            return None
        differences.append(best_validation(entry) - best_validation(base, budget))
    return format_mean_std(*mean_and_std(differences)) if differences else None


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


def plot_gain_against_cost(panels: dict[str, dict[str, tuple[float, float, float | None]]],
                           path: Path) -> None:
    """One panel per ``{title: {arm label: (step cost, mean gain, std or None)}}``: each arm a
    point with its spread over seeds, the Pareto front as a line; log-scale cost axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2),
                                squeeze=False)
    for axis, (title, arms) in zip(axes[0], panels.items(), strict=True):
        for label, (cost, gain, std) in arms.items():
            axis.errorbar(cost, gain, yerr=0 if std is None else std, fmt="o", capsize=3)
            axis.annotate(label, (cost, gain), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
        front = pareto_front([(cost, gain) for cost, gain, _ in arms.values()])
        axis.plot(*zip(*front, strict=True), color="gray", linestyle="--", linewidth=1,
                  label="Pareto front")
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        costs = [cost for cost, _, _ in arms.values()]
        ticks = [t for t in (1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 32)
                 if min(costs) / 1.1 <= t <= max(costs) * 1.1]
        axis.set_xticks(ticks, [f"{t:g}x" for t in ticks])
        axis.minorticks_off()
        axis.set_xlabel("training step cost (baseline steps, measured)")
        axis.set_ylabel("separated MAP@R − SDM off (points)")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    records.save_figure(figure, path)


def write_study_report(plan: StudyPlan) -> str:
    """Writes ``<name>.md`` (and its plots) next to the ledger; returns the Markdown."""
    ledger = read_ledger(plan)
    groups = collect(plan, ledger)
    costs = records.read_json(plan.step_costs) if plan.step_costs and \
        plan.step_costs.is_file() else []
    output = plan.ledger.parent
    text = (f"# Study {plan.name}\n\n{len(ledger)} runs recorded in "
            f"`{plan.ledger.name}`. Test classes, percent; mean ± standard deviation over "
            "seeds (the mean alone for one seed).\n")
    differences: dict[str, dict[str, dict]] = {}
    cost_panels: dict[str, dict[str, tuple]] = {}
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
            cost = step_cost(next(iter(per_seed.values())), costs)
            if cost is not None and (arm == plan.baseline or label in paired):
                gains = [0.0] if arm == plan.baseline else [
                    d[SEPARATED_MAP] for d in paired[label].values()]
                mean, std = mean_and_std(gains)
                cost_panels.setdefault(f"{dataset}, {loss}", {})[label] = (cost, mean, std)
    if groups:
        cut_from = (f"`{plan.long_baseline[1]}` in `{plan.long_baseline[0].name}`"
                    if plan.long_baseline else plan.arms[plan.baseline].label)
        text += ("\n## Compute\n\nStep cost measured on the run's device (`step_costs`); "
                 "compute = epochs run x iterations x step cost; the last column is the "
                 "arm's best validation MAP@R minus that of the baseline "
                 f"({cut_from}) within the arm's compute, rounded up to whole epochs, paired "
                 "by seed (- where the baseline did not train that far).\n\n"
                 + compute_table(plan, groups, costs))
    if differences:
        plot_paired_differences(differences, output / f"{plan.name}.png")
        text += f"\n![arm minus baseline]({plan.name}.png)\n"
    if cost_panels:
        plot_gain_against_cost(cost_panels, output / f"{plan.name}_cost.png")
        text += f"\n![gain against step cost]({plan.name}_cost.png)\n"
    records.write_text(output / f"{plan.name}.md", text)
    return text
