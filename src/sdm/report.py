"""``sdm report``: finished experiments in one table beside the paper's numbers, plus plots.

Reads each experiment folder's ``config.yaml``, ``results/test_results.json`` and per-fold
``metrics.csv``; writes ``report.md``, ``report.csv``, ``validation_curves.png`` and
``sdm_vs_baseline.png`` into the output folder. The paper's numbers come from the copy of
its README tables in ``sdm/resources/paper_results.csv`` and are labelled as the paper's.

Given a baseline, the report is also an ablation study over seeds: experiments named
``<group>_seed<k>`` form one group, each group is summarized over its seeds and compared with
the baseline group seed by seed, and ``ablation.png`` plots the paired MAP@R differences.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

from sdm import constants as C
from sdm import storage
from sdm.constants import CONCATENATED, SEPARATED
from sdm.engine.experiment import ExperimentFolder
from sdm.errors import UserInputError
from sdm.scores import markdown_table, percent_row

PAPER_METHODS = {
    "contrastive": "Contrast", "triplet": "Triplet", "margin": "Margin",
    "multi_similarity": "MS", "ntxent": "NT-Xent", "proxy_nca": "ProxyNCA",
    "margin_per_class": "Margin/class", "normalized_softmax": "N. Softmax",
    "cosface": "CosFace", "arcface": "ArcFace", "fastap": "FastAP",
    "snr_contrastive": "SNR", "soft_triple": "SoftTriplet",
}
PAPER_COLUMNS = {
    f"{CONCATENATED}_{C.PRECISION_AT_1}": "concat512_p_at_1",
    f"{CONCATENATED}_{C.R_PRECISION}": "concat512_r_precision",
    f"{CONCATENATED}_{C.MAP_AT_R}": "concat512_map_at_r",
    f"{SEPARATED}_{C.PRECISION_AT_1}": "separate128_p_at_1",
    f"{SEPARATED}_{C.R_PRECISION}": "separate128_r_precision",
    f"{SEPARATED}_{C.MAP_AT_R}": "separate128_map_at_r",
}
COLUMNS = tuple(f"{mode}_{metric}" for mode in C.TABLE_ORDER for metric in C.METRIC_NAMES)
SEED_SUFFIX = re.compile(r"(?P<group>.+)_seed(?P<seed>\d+)")


def paper_results() -> dict[tuple[str, str], dict[str, float]]:
    """``{(dataset, paper method name): {our column: percent}}`` from the paper's tables."""
    text = resources.files("sdm").joinpath("resources/paper_results.csv").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    table = {}
    for row in csv.DictReader(lines):
        table[(row["dataset"], row["method"])] = {
            ours: float(row[theirs]) for ours, theirs in PAPER_COLUMNS.items()}
    return table


def paper_method(config: Any) -> str | None:
    """The paper's row name for an experiment's loss and SDM setting, if it has one."""
    name = PAPER_METHODS.get(config.loss.name)
    if name is None:
        return None
    if config.loss.name == "multi_similarity" and config.loss.miner:
        name = "MS+Miner"
    return name + " + Ours" if config.sdm.enabled else name


def report_rows(experiments: list[ExperimentFolder]) -> list[dict[str, Any]]:
    """One row per experiment, and the paper's row for the same loss and dataset after it."""
    paper = paper_results()
    rows = []
    for experiment in experiments:
        row = percent_row(experiment.name, experiment.results().trained)
        row["source"] = "measured"
        rows.append(row)
        method = paper_method(experiment.config)
        key = (str(experiment.config.dataset.name), method)
        if key in paper:
            rows.append({"method": f"{method} (paper, {key[0]})", **paper[key],
                         "source": "paper"})
    return rows


def plot_validation_curves(experiments: list[ExperimentFolder], path: Path) -> None:
    """The experiments' validation MAP@R per epoch overlaid on shared axes, one panel per fold
    (every panel on the same scale), one colour per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [experiment.curves() for experiment in experiments]
    folds = sorted({fold for by_fold in curves for fold in by_fold})
    figure, axes = plt.subplots(1, max(len(folds), 1), figsize=(5 * max(len(folds), 1), 3.8),
                                squeeze=False, sharex=True, sharey=True)
    colours = plt.get_cmap("tab10")
    for axis, fold in zip(axes[0], folds, strict=False):
        for index, (experiment, by_fold) in enumerate(zip(experiments, curves, strict=True)):
            rows = by_fold.get(fold)
            if rows:
                axis.plot([int(r["epoch"]) for r in rows],
                          [100 * float(r[C.MAP_AT_R]) for r in rows], marker="o",
                          markersize=3, color=colours(index % 10), label=experiment.name)
        axis.set_title(f"fold {fold}")
        axis.set_xlabel("epoch (-1: trunk alone, 0: untrained embedder)")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation MAP@R (%)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    storage.save_figure(figure, path)


Pair = tuple[ExperimentFolder, ExperimentFolder]  # (baseline, SDM)


def sdm_pairs(experiments: list[ExperimentFolder]) -> list[Pair]:
    """(baseline, SDM) pairs: same dataset, loss and loss parameters, SDM off and on."""
    def key(e: ExperimentFolder) -> str:
        return f"{e.config.dataset.name}|{e.config.loss!r}"  # the loss with its parameters

    baselines = {key(e): e for e in experiments if not e.config.sdm.enabled}
    return [(baselines[key(e)], e) for e in experiments
            if e.config.sdm.enabled and key(e) in baselines]


def plot_sdm_vs_baseline(pairs: list[Pair], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(mode, metric) for mode in (CONCATENATED, SEPARATED) for metric in C.METRIC_NAMES]
    figure, axis = plt.subplots(figsize=(max(6, 2.5 * len(pairs)), 3.5))
    width = 0.8 / max(len(metrics), 1)
    for i, (mode, metric) in enumerate(metrics):
        deltas = []
        for base, sdm in pairs:
            value = [percent_row("", e.results().trained).get(f"{mode}_{metric}", 0.0)
                     for e in (base, sdm)]
            deltas.append(value[1] - value[0])
        axis.bar([j + i * width for j in range(len(pairs))], deltas, width,
                 label=f"{mode[:6]}. {C.METRIC_SHORT_NAMES[metric]}")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(pairs))],
                    [sdm.name for _, sdm in pairs])
    axis.set_ylabel("SDM minus baseline (points)")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    storage.save_figure(figure, path)


def group_and_seed(experiment: ExperimentFolder) -> tuple[str, int]:
    """``("icons_ms_paper", 1)`` for an experiment named ``icons_ms_paper_seed1``; a name
    without the ``_seed<k>`` suffix is a group of its own, its seed the config's
    ``training.seed``."""
    name = str(experiment.config.name)
    match = SEED_SUFFIX.fullmatch(name)
    if match:
        return match["group"], int(match["seed"])
    return name, int(experiment.config.training.seed)


def seed_groups(experiments: list[ExperimentFolder]) -> dict[str, dict[int, ExperimentFolder]]:
    """``{group: {seed: experiment}}`` (see ``group_and_seed``), groups in the order they
    first appear, seeds sorted; ValueError when two experiments are the same seed of a group."""
    groups: dict[str, dict[int, ExperimentFolder]] = {}
    for experiment in experiments:
        group, seed = group_and_seed(experiment)
        seeds = groups.setdefault(group, {})
        if seed in seeds:
            raise UserInputError(f"{seeds[seed].path} and {experiment.path} are both seed "
                             f"{seed} of group {group}")
        seeds[seed] = experiment
    return {group: dict(sorted(seeds.items())) for group, seeds in groups.items()}


def resolve_baseline(groups: dict[str, dict[int, ExperimentFolder]], name: str) -> str:
    """The group ``name`` stands for: a group name, or the config name of one of its
    experiments; ValueError listing the groups when it is neither."""
    if name in groups:
        return name
    for group, seeds in groups.items():
        if any(str(experiment.config.name) == name for experiment in seeds.values()):
            return group
    raise UserInputError(f"unknown baseline {name!r}; the groups found are: {', '.join(groups)}")


def percent_scores(experiment: ExperimentFolder) -> dict[str, float]:
    """``{column: percent}`` of the six table numbers (``COLUMNS``), unrounded; separated is
    the mean over the fold models; a mode that was not evaluated is left out."""
    trained = experiment.results().trained
    by_mode = {C.CONCATENATED: trained.concatenated,
               C.SEPARATED: trained.separated.mean if trained.separated else None}
    return {f"{mode}_{metric}": 100 * scores[metric]
            for mode, scores in by_mode.items() if scores is not None
            for metric in C.METRIC_NAMES}


def paired_differences(group: dict[int, dict[str, float]], baseline: dict[int, dict[str, float]],
                       ) -> dict[int, dict[str, float]]:
    """``{seed: {column: group minus baseline}}`` from per-seed percent scores, so in
    percentage points; only the seeds both have, and the columns both have at that seed;
    empty when they share no seed."""
    return {seed: {column: group[seed][column] - baseline[seed][column]
                   for column in COLUMNS if column in group[seed] and column in baseline[seed]}
            for seed in sorted(set(group) & set(baseline))}


def mean_and_std(values: list[float]) -> tuple[float, float | None]:
    """(mean, ``statistics.stdev`` (n - 1)) of ``values``; the standard deviation is None for
    a single value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_mean_std(mean: float, std: float | None) -> str:
    """``"12.34 ± 0.56"``, or the mean alone when there is no standard deviation."""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def seed_summary(per_seed: dict[int, dict[str, float]]) -> dict[str, tuple[float, float | None]]:
    """``{column: (mean, standard deviation)}`` over the seeds, in the values' units (percent
    or percentage points), for the columns every seed has; the standard deviation is
    ``statistics.stdev`` (n - 1), None for one seed."""
    summary = {}
    for column in COLUMNS:
        values = [scores[column] for scores in per_seed.values() if column in scores]
        if values and len(values) == len(per_seed):
            summary[column] = mean_and_std(values)
    return summary


def seed_table(label: str, rows: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown table, one row per ``{row label: per-seed values}``: the number of seeds, then
    mean ± standard deviation over seeds per column (the mean alone for one seed)."""
    lines = [f"| {label} | seeds | Concat. P@1 | RP | MAP@R | Sep. P@1 | RP | MAP@R |",
             "|-|-:|-:|-:|-:|-:|-:|-:|"]
    for name, per_seed in rows.items():
        summary = seed_summary(per_seed)
        cells = [format_mean_std(*summary[column]) if column in summary else "-"
                 for column in COLUMNS]
        lines.append(f"| {name} | {len(per_seed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_paired_differences(panels: dict[str, dict[str, dict[int, dict[str, float]]]],
                            path: Path) -> None:
    """One panel per ``{title: {bar label: {seed: {column: difference}}}}``: bars of the mean
    paired MAP@R difference (percentage points), separated and concatenated, error bars the
    standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = [max(4.5, 2 + 1.0 * len(groups)) for groups in panels.values()]
    figure, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 3.8), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    for axis, (title, groups) in zip(axes[0], panels.items(), strict=True):
        for offset, mode in ((-0.2, C.SEPARATED), (0.2, C.CONCATENATED)):
            column = f"{mode}_{C.MAP_AT_R}"
            xs, means, stds = [], [], []
            for i, per_seed in enumerate(groups.values()):
                summary = seed_summary(per_seed)
                if column in summary:
                    mean, std = summary[column]
                    xs.append(i + offset)
                    means.append(mean)
                    stds.append(math.nan if std is None else std)  # one seed: no bar
            axis.bar(xs, means, 0.4, yerr=stds, capsize=3, label=f"{mode} MAP@R")
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xlim(-0.7, max(len(groups), 2) - 0.3)
        axis.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("MAP@R difference (points)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    storage.save_figure(figure, path)


def ablation_section(groups: dict[str, dict[int, ExperimentFolder]], baseline: str,
                     output: Path) -> str:
    """The report's ablation part against the group ``baseline``: the per-group table, the
    paired differences and, when some group shares a seed with the baseline,
    ``output/ablation.png``."""
    scores = {group: {seed: percent_scores(e) for seed, e in seeds.items()}
              for group, seeds in groups.items()}
    text = (f"\n## Ablation over seeds (baseline: {baseline})\n\nExperiments named "
            "`<group>_seed<k>` form a group. Test classes, percent; mean ± standard deviation "
            "over seeds (the mean alone for one seed).\n\n" + seed_table("group", scores))
    differences = {group: paired_differences(per_seed, scores[baseline])
                   for group, per_seed in scores.items() if group != baseline}
    paired = {group: found for group, found in differences.items() if found}
    if paired:
        text += ("\nGroup minus baseline, paired by seed (percentage points, positive = better "
                 "than the baseline; only the seeds both have):\n\n"
                 + seed_table(f"group − {baseline}", paired))
        plot_paired_differences({f"group − {baseline}, paired by seed": paired},
                                output / "ablation.png")
        text += "\n![group minus baseline, MAP@R](ablation.png)\n"
    unpaired = [f"{group} (seeds {', '.join(map(str, groups[group]))})"
                for group, found in differences.items() if not found]
    if unpaired:
        text += f"\nNo seed in common with the baseline, not compared: {', '.join(unpaired)}.\n"
    if not differences:
        text += "\nOnly the baseline group was given: nothing to compare it with.\n"
    return text


def write_report(experiment_folders: list[str | Path], output: str | Path,
                 baseline: str | None = None) -> Path:
    """Table (Markdown and CSV) and plots for ``experiment_folders``; with ``baseline`` (a
    group or experiment name, see ``seed_groups``) also the ablation over seeds and
    ``ablation.png``; returns the Markdown."""
    experiments = [ExperimentFolder.open(folder) for folder in experiment_folders]
    if not experiments:
        raise FileNotFoundError("no experiment folders given")
    for experiment in experiments:
        experiment.results()  # first: an unevaluated folder is told to run `sdm evaluate`
    if baseline is not None:
        groups = seed_groups(experiments)
        baseline = resolve_baseline(groups, baseline)
    output = Path(output)
    rows = report_rows(experiments)
    storage.write_csv(output / "report.csv", rows)
    text = ("# Results\n\nMeasured rows come from this project's runs; rows marked *paper* "
            "are the SDM paper's published numbers, for comparison only.\n\n"
            + markdown_table(rows))
    plot_validation_curves(experiments, output / "validation_curves.png")
    pairs = sdm_pairs(experiments)
    if pairs:
        plot_sdm_vs_baseline(pairs, output / "sdm_vs_baseline.png")
        text += "\n![SDM minus baseline](sdm_vs_baseline.png)\n"
    text += "\n![validation curves](validation_curves.png)\n"
    if baseline is not None:
        text += ablation_section(groups, baseline, output)
    storage.write_text(output / "report.md", text)
    return output / "report.md"
