"""``sdm report``: finished experiments in one table beside the paper's numbers, plus plots.

Reads each experiment folder's ``config.yaml``, ``results/test_results.json`` and per-fold
``metrics.csv``; writes ``report.md``, ``report.csv``, ``validation_curves.png`` and
``sdm_vs_baseline.png`` into the output folder. The paper's numbers come from the copy of
its README tables in ``sdm/resources/paper_results.csv`` and are labelled as the paper's.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sdm import constants as C
from sdm import records
from sdm.constants import CONCATENATED, SEPARATED
from sdm.engine.experiment import ExperimentFolder
from sdm.results import markdown_table, percent_row

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


class Experiment:
    """A finished experiment folder: its config, test results and validation curves.

    A tuning study's folder (``sdm tune``) stands for its best trial.
    """

    def __init__(self, folder: str | Path):
        saved = ExperimentFolder(folder)
        study = saved.path / C.STUDY_FILE
        if study.is_file():
            summary = records.read_json(study)
            if "best_folder" not in summary:
                raise FileNotFoundError(f"study {saved.path} has no completed trial yet")
            saved = ExperimentFolder(saved.path / summary["best_folder"])
        self.folder = saved.path
        self.results = saved.results()
        self.config = saved.config
        self.name = str(self.config.name)
        if study.is_file():
            self.name = (f"{summary['study']} (tuned: best of {summary['finished_trials']} "
                         f"trials, {summary['best_folder']})")
        self.curves = saved.curves


def report_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    """One row per experiment, and the paper's row for the same loss and dataset after it."""
    paper = paper_results()
    rows = []
    for experiment in experiments:
        row = percent_row(experiment.name, experiment.results.trained)
        row["source"] = "measured"
        rows.append(row)
        method = paper_method(experiment.config)
        key = (str(experiment.config.dataset.name), method)
        if key in paper:
            rows.append({"method": f"{method} (paper, {key[0]})", **paper[key],
                         "source": "paper"})
    return rows


def plot_validation_curves(experiments: list[Experiment], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(experiments), figsize=(5 * len(experiments), 3.5),
                                squeeze=False)
    for axis, experiment in zip(axes[0], experiments, strict=True):
        for fold, rows in experiment.curves().items():
            epochs = [int(r["epoch"]) for r in rows]
            axis.plot(epochs, [100 * float(r[C.MAP_AT_R]) for r in rows], marker="o",
                      label=f"fold {fold}")
        axis.set_title(experiment.name)
        axis.set_xlabel("epoch (-1: trunk alone, 0: untrained embedder)")
        axis.set_ylabel("validation MAP@R (%)")
        axis.legend()
    figure.tight_layout()
    records.save_figure(figure, path)


def sdm_pairs(experiments: list[Experiment]) -> list[tuple[Experiment, Experiment]]:
    """(baseline, SDM) pairs: same dataset, loss and loss parameters, SDM off and on."""
    def key(e: Experiment) -> str:
        return f"{e.config.dataset.name}|{e.config.loss.name}|{OmegaConf.to_yaml(e.config.loss)}"

    baselines = {key(e): e for e in experiments if not e.config.sdm.enabled}
    return [(baselines[key(e)], e) for e in experiments
            if e.config.sdm.enabled and key(e) in baselines]


def plot_sdm_vs_baseline(pairs: list[tuple[Experiment, Experiment]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(mode, metric) for mode in (CONCATENATED, SEPARATED) for metric in C.METRIC_NAMES]
    figure, axis = plt.subplots(figsize=(max(6, 2.5 * len(pairs)), 3.5))
    width = 0.8 / max(len(metrics), 1)
    for i, (mode, metric) in enumerate(metrics):
        deltas = []
        for base, sdm in pairs:
            value = [percent_row("", e.results.trained).get(f"{mode}_{metric}", 0.0)
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
    records.save_figure(figure, path)


def write_report(experiment_folders: list[str | Path], output: str | Path) -> Path:
    """Table (Markdown and CSV) and plots for ``experiment_folders``; returns the Markdown."""
    experiments = [Experiment(folder) for folder in experiment_folders]
    if not experiments:
        raise FileNotFoundError("no experiment folders given")
    output = Path(output)
    rows = report_rows(experiments)
    records.write_csv(output / "report.csv", rows)
    text = ("# Results\n\nMeasured rows come from this project's runs; rows marked *paper* "
            "are the SDM paper's published numbers, for comparison only.\n\n"
            + markdown_table(rows))
    plot_validation_curves(experiments, output / "validation_curves.png")
    pairs = sdm_pairs(experiments)
    if pairs:
        plot_sdm_vs_baseline(pairs, output / "sdm_vs_baseline.png")
        text += "\n![SDM minus baseline](sdm_vs_baseline.png)\n"
    text += "\n![validation curves](validation_curves.png)\n"
    records.write_text(output / "report.md", text)
    return output / "report.md"
