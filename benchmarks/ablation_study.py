"""Which part of SDM does the work, where the paper uses it: a pretrained trunk, fine-tuned.

EfficientNet-Lite0 with its ImageNet weights at 64 px on the icon dataset (and, to tell the
trunk's role from the data's, on the glyph dataset), each ablation arm changing one thing
against SDM's paper setting (exp_configs/ablation/): (a) off, (b) paper, (c) trunk dropout
only, (d) mean over copies (alpha 0), (e) embedding masks only, (f) T = 2 and 4, (g) the
baseline given at least SDM's compute (16x the epochs, validation-based early stopping).

The MLRC protocol, shortened to fit a 2-core CPU: folds 0 and 1 of the 4 (so "separated" is
the mean of 2 fold models and "concatenated" joins 2 x 128 = 256 dimensions), 4 epochs of 50
iterations with validation after each, the best epoch by validation MAP@R tested on the
held-out half of the classes. Seeds 0, 1, 2. Nothing is tuned on the test classes.

    python benchmarks/ablation_study.py                    # the whole plan, in priority order
    python benchmarks/ablation_study.py --steps 1 2        # a part; rerun to append more
    python benchmarks/ablation_study.py --summary-only     # tables and plot from what exists

Resumable and appendable: each run is one experiment folder under ``--experiments-root``;
interrupted runs resume from it. A finished run's numbers go into the ledger
``<output>/ablation_study.json`` (committed with the repository), and a run in the ledger is
never run again, so a later session on a fresh checkout continues where the last one stopped.
Each run's wall-clock seconds are summed over invocations in its ``study_seconds.json`` (stop
the study with ``kill PID``, SIGTERM, so that the run in progress adds its seconds; a process
started in the background with ``&`` ignores Ctrl-C's SIGINT, and SIGKILL loses them), and
the ledger says how its SDM passes ran ("batched" for the runs made before the engine ran them
one after another on a CPU by default; the same method, other random draws).
Writes ``ablation_study.{md,png}`` from the ledger.
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import time
from pathlib import Path

from sdm import constants as C
from sdm import records
from sdm.config import PACKAGED_CONFIGS, load_config
from sdm.engine.build import batched_passes, load_experiment_dataset, resolve_device
from sdm.engine.evaluate import evaluate_experiment
from sdm.engine.experiment import ExperimentFolder, experiment_folder, run_experiment
from sdm.report import (
    COLUMNS,
    Experiment,
    format_mean_std,
    mean_and_std,
    paired_differences,
    percent_scores,
    plot_paired_differences,
    seed_summary,
)
from sdm.results import results_file, write_results

SEEDS = (0, 1, 2)
ARMS = ("off", "paper", "dropout_only", "mean", "masks_only", "t2", "t4", "converged")
ARM_LABELS = {"off": "(a) off", "paper": "(b) paper", "dropout_only": "(c) trunk dropout only",
              "mean": "(d) mean, alpha 0", "masks_only": "(e) masks only, T=1",
              "t2": "(f) T=2", "t4": "(f) T=4", "converged": "(g) off, 16x epochs, early stop"}
DATASETS = {"icons": [], "glyphs": [PACKAGED_CONFIGS / "glyphs_pretrained.yaml"]}
SHORTENED = ["training.folds=[0,1]"]
TIMING_FILE = "study_seconds.json"
# SDM's T=8 step, its passes one after another with the shared stem, costs 7.7 baseline steps
# of EfficientNet-Lite0 at 64 px on this CPU (`python benchmarks/sdm_cost.py --trunk
# efficientnet_lite0 --side 64 --loss multi_similarity`), so the paper arm's epochs are worth
# 7.7 times as many baseline epochs (rounded up).
STEP_COST_T8 = 7.7
PAPER_EPOCHS = 4
COMPUTE_MATCHED_EPOCHS = math.ceil(PAPER_EPOCHS * STEP_COST_T8)
LEDGER = "ablation_study.json"

# The plan in priority order: (dataset, loss, arms); every step runs all seeds.
PLAN = [
    ("icons", "ms", ("off", "paper")),
    ("glyphs", "ms", ("off", "paper", "dropout_only")),
    ("icons", "ms", ("dropout_only", "masks_only")),
    ("icons", "ms", ("converged",)),
    ("icons", "ms", ("mean",)),
    ("icons", "ms", ("t2", "t4")),
    ("icons", "contrast", ("off", "paper")),
    ("icons", "contrast", ("dropout_only", "mean", "masks_only")),
    ("icons", "contrast", ("converged",)),
    ("icons", "contrast", ("t2", "t4")),
    ("icons", "triplet", ("off", "paper", "converged")),
    ("icons", "margin", ("off", "paper", "converged")),
]


def run_name(dataset: str, loss: str, arm: str, seed: int) -> str:
    return f"{dataset}_{loss}_{arm}_seed{seed}"


def experiment_config(dataset: str, loss: str, arm: str, seed: int, args: argparse.Namespace):
    files = [PACKAGED_CONFIGS / "icons" / f"{loss}.yaml", *DATASETS[dataset],
             PACKAGED_CONFIGS / "ablation" / f"{arm}.yaml"]
    return load_config(files, [*SHORTENED, f"training.seed={seed}",
                               f"name={run_name(dataset, loss, arm, seed)}",
                               f"experiments_root={args.experiments_root}",
                               f"dataset.root={args.dataset_root}"])


def run_one(dataset: str, loss: str, arm: str, seed: int, args: argparse.Namespace) -> None:
    """Trains, tests and records one run unless the ledger has it."""
    ledger = read_ledger(args.output)
    if run_name(dataset, loss, arm, seed) in ledger:
        return
    config = experiment_config(dataset, loss, arm, seed, args)
    folder = experiment_folder(config)
    if results_file(folder / C.RESULTS_FOLDER, ".json").is_file():
        record(args.output, dataset, loss, arm, seed, folder)
        return
    start = time.time()
    try:
        run_experiment(config)
    finally:
        timing = folder / TIMING_FILE
        spent = records.read_json(timing)["train_seconds"] if timing.is_file() else 0.0
        if folder.is_dir():
            records.write_json(timing, {"train_seconds": spent + time.time() - start})
    data, splits = load_experiment_dataset(config)
    write_results(folder / C.RESULTS_FOLDER,
                  evaluate_experiment(config, folder, data, splits, pretrained=False))
    record(args.output, dataset, loss, arm, seed, folder)
    print(f"{config.name}: {time.time() - start:.0f} s", flush=True)


def read_ledger(output: Path) -> dict[str, dict]:
    """``{run name: {dataset, loss, arm, seed, scores}}`` of every finished run."""
    path = output / LEDGER
    return records.read_json(path) if path.is_file() else {}


def record(output: Path, dataset: str, loss: str, arm: str, seed: int, folder: Path) -> None:
    """Adds a tested run's numbers to the ledger (atomically)."""
    ledger = read_ledger(output)
    config = ExperimentFolder(folder).config
    batched = batched_passes(config, resolve_device(config.training.device))
    ledger[run_name(dataset, loss, arm, seed)] = {
        "dataset": dataset, "loss": loss, "arm": arm, "seed": seed, "scores": scores(folder),
        "passes_run": "batched" if batched else "one after another",
        "validation": validation_curves(folder, config.training.folds)}
    records.write_json(output / LEDGER, ledger)


def validation_curves(folder: Path, folds: list[int]) -> dict[str, list[list[float]]]:
    """``{fold: [[epoch, validation MAP@R in percent], ...]}`` from each fold's metrics.csv."""
    curves = {}
    for fold in folds:
        rows = records.read_csv(folder / C.FOLD_FOLDER.format(fold=fold) / C.METRICS_CSV)
        curves[str(fold)] = [[int(row["epoch"]), 100 * float(row[C.MAP_AT_R])] for row in rows]
    return curves


def scores(folder: Path) -> dict[str, float]:
    """The six table numbers of one evaluated run in percent, and its training seconds."""
    found = percent_scores(Experiment(folder))
    found["seconds"] = records.read_json(folder / TIMING_FILE)["train_seconds"]
    return found


def collect(ledger: dict[str, dict]) -> dict[tuple[str, str, str], dict[int, dict[str, float]]]:
    """{(dataset, loss, arm): {seed: scores}} of the ledger: (dataset, loss) in the plan's
    order, each one's arms in ``ARMS`` order, (a) to (g)."""
    found: dict = {}
    for dataset, loss in dict.fromkeys((d, loss) for d, loss, _ in PLAN):
        for arm in ARMS:
            for seed in SEEDS:
                entry = ledger.get(run_name(dataset, loss, arm, seed))
                if entry is not None:
                    found.setdefault((dataset, loss, arm), {})[seed] = entry["scores"]
    return found


HEADER = ("| data | loss | arm | seeds | Concat. P@1 | RP | MAP@R | Sep. P@1 | RP | MAP@R "
          "| train s |\n|-|-|-|-|-:|-:|-:|-:|-:|-:|-:|\n")


def summary_table(found: dict) -> str:
    lines, differences = [], []
    for (dataset, loss, arm), per_seed in found.items():
        summary = seed_summary(per_seed)
        seconds, spread = mean_and_std([scores["seconds"] for scores in per_seed.values()])
        lines.append(f"| {dataset} | {loss} | {ARM_LABELS[arm]} | {len(per_seed)} | "
                     + " | ".join(format_mean_std(*summary[c]) for c in COLUMNS)
                     + f" | {seconds:.0f}{'' if spread is None else f' ± {spread:.0f}'} |")
        base = found.get((dataset, loss, "off"), {})
        paired = paired_differences(per_seed, base)
        if arm == "off" or not paired:
            continue
        summary = seed_summary(paired)
        ratio = statistics.fmean(per_seed[s]["seconds"] / base[s]["seconds"] for s in paired)
        differences.append(f"| {dataset} | {loss} | {ARM_LABELS[arm]} − off | {len(paired)} | "
                           + " | ".join(format_mean_std(*summary[c]) for c in COLUMNS)
                           + f" | {ratio:.1f}x |")
    text = ("Test classes, percent; mean ± standard deviation over seeds; train s = wall-clock "
            "seconds of training and validation (2 folds).\n\n" + HEADER + "\n".join(lines) + "\n")
    if differences:
        text += ("\nArm minus SDM off, paired by seed (points; positive = better than the "
                 "baseline; last column: training time relative to the baseline's):\n\n"
                 + HEADER.replace("| train s |", "| time |") + "\n".join(differences) + "\n")
    return text


def best_validation(entry: dict, last_epoch: int | None = None) -> float:
    """Best validation MAP@R (percent) over epochs 0..last_epoch (all when None), the epochs
    the engine picks its best from, averaged over the run's folds."""
    return statistics.fmean(
        max(value for epoch, value in curve
            if epoch >= 0 and (last_epoch is None or epoch <= last_epoch))
        for curve in entry["validation"].values())


def compute_matched_table(ledger: dict[str, dict]) -> str:
    """Validation MAP@R of (a), (b) and (g), the latter also cut at SDM's compute, per
    (dataset, loss) with all three recorded (with curves) for the same seeds."""
    lines = []
    for dataset, loss in dict.fromkeys((d, loss) for d, loss, _ in PLAN):
        runs = {arm: {seed: ledger.get(run_name(dataset, loss, arm, seed)) for seed in SEEDS}
                for arm in ("off", "paper", "converged")}
        seeds = [s for s in SEEDS if all(runs[a][s] and "validation" in runs[a][s] for a in runs)]
        if not seeds:
            continue
        paper = [best_validation(runs["paper"][s]) for s in seeds]
        matched = [best_validation(runs["converged"][s], COMPUTE_MATCHED_EPOCHS) for s in seeds]
        columns = [[best_validation(runs["off"][s]) for s in seeds], paper, matched,
                   [best_validation(runs["converged"][s]) for s in seeds],
                   [m - p for m, p in zip(matched, paper, strict=True)]]
        lines.append(f"| {dataset} | {loss} | {len(seeds)} | "
                     + " | ".join(format_mean_std(*mean_and_std(c)) for c in columns) + " |")
    if not lines:
        return ""
    return (f"\nValidation MAP@R at equal compute (percent; best epoch, mean of the folds; "
            f"mean ± std over seeds). SDM's T=8 step costs {STEP_COST_T8}x a baseline step "
            f"here, so (b)'s {PAPER_EPOCHS} epochs are worth {COMPUTE_MATCHED_EPOCHS} baseline "
            "epochs. A best over more epochs is favoured by its own selection, so the longer "
            "columns lean optimistic:\n\n"
            "| data | loss | seeds | (a) off | (b) paper | (g) ≤ "
            f"{COMPUTE_MATCHED_EPOCHS} epochs | (g) all epochs | (g) ≤ {COMPUTE_MATCHED_EPOCHS}"
            " − (b) |\n|-|-|-|-:|-:|-:|-:|-:|\n" + "\n".join(lines) + "\n")


def plot(found: dict, path: Path) -> None:
    """One panel per (dataset, loss): each arm minus SDM off, paired by seed."""
    panels: dict = {}
    for (dataset, loss, arm), per_seed in found.items():
        paired = paired_differences(per_seed, found.get((dataset, loss, "off"), {}))
        if arm != "off" and paired:
            panels.setdefault(f"{dataset}, {loss}: arm − off", {})[ARM_LABELS[arm]] = paired
    if panels:
        plot_paired_differences(panels, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=list(range(1, len(PLAN) + 1)),
                        help="which steps of the plan to run (1-based, in this order)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--dataset-root", type=Path, default=Path(C.DEFAULT_DATASET_ROOT))
    parser.add_argument("--experiments-root", type=Path,
                        default=Path("experiments/ablation_study"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop_on_terminate)
    if not args.summary_only:
        for step in args.steps:
            dataset, loss, arms = PLAN[step - 1]
            for seed in args.seeds:
                for arm in arms:
                    run_one(dataset, loss, arm, seed, args)
                write_summary(args)
    write_summary(args)


def stop_on_terminate(signum: int, frame: object) -> None:
    """SIGTERM ends the study as Ctrl-C does: the run in progress adds the seconds it spent to
    its ``study_seconds.json`` before exiting (a SIGKILL loses them)."""
    raise SystemExit(128 + signum)


def write_summary(args: argparse.Namespace) -> None:
    ledger = read_ledger(args.output)
    found = collect(ledger)
    text = summary_table(found) + compute_matched_table(ledger)
    records.write_text(args.output / "ablation_study.md", text)
    plot(found, args.output / "ablation_study.png")
    print(text, flush=True)


if __name__ == "__main__":
    main()
