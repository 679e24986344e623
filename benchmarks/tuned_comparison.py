"""Does a tuned SDM beat an equally tuned baseline? Multi-similarity tuned with and without SDM
by ``sdm tune`` with the same number of trials, then each best config trained and tested with
3 seeds.

The regime is the demo's (exp_configs/demo/ms.yaml): EfficientNet-Lite0 with its ImageNet
weights fine-tuned at 64 px on the glyph dataset, MLRC fold 0 only, 2 epochs of 50
iterations with validation after each. Objective: fold 0's best validation MAP@R (the test
classes are never looked at while tuning). TPE with ``--startup-trials`` random trials first.
Equal trials is not equal compute: an SDM trial with T passes costs about T times a baseline
trial here; the seconds are reported.

    python benchmarks/tuned_comparison.py                  # everything (resumes)
    python benchmarks/tuned_comparison.py --summary-only   # tables from what exists
    python benchmarks/tuned_comparison.py --markdown-only  # the .md from the committed .json

It runs the user's commands (printed as it goes): ``sdm tune`` for each study, then
``sdm train <study>/best.yaml training.seed=S name=...`` and ``sdm evaluate`` for each seed.
Rerunning continues where it stopped (``sdm tune --trials N`` adds only missing trials,
trained folds are skipped). Writes ``tuned_comparison.{json,md}`` under ``--output``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from sdm import constants as C
from sdm import storage
from sdm.scores import read_results, results_file

STUDIES = {"ms": ("exp_configs/demo/ms.yaml", "ms"),
           "ms_sdm": ("exp_configs/demo/ms_sdm.yaml", "ms_sdm")}
SEEDS = (0, 1, 2)
RESULT = "tuned_comparison"
TRIAL_COLUMNS = ("number", "state", "value", "seconds")


def sdm_command(*arguments: str) -> None:
    command = [sys.executable, "-m", "sdm", *arguments]
    print("$ sdm " + shlex.join(arguments), flush=True)
    subprocess.run(command, check=True)


def study_name(key: str) -> str:
    return f"tuned_{key}"


def tune(key: str, args: argparse.Namespace) -> None:
    config, space = STUDIES[key]
    sdm_command("tune", config, f"experiments_root={args.experiments_root}",
                f"dataset.root={args.dataset_root}", "--space", space,
                "--trials", str(args.trials), "--startup-trials", str(args.startup_trials),
                "--study-name", study_name(key), "--seed", "0")


def test_best(key: str, seed: int, args: argparse.Namespace) -> Path:
    study = Path(args.experiments_root) / study_name(key)
    name = f"{study_name(key)}_best_seed{seed}"
    folder = Path(args.experiments_root) / name
    if not results_file(folder / C.RESULTS_FOLDER, ".json").is_file():
        overrides = [f"training.seed={seed}", f"name={name}",
                     f"experiments_root={args.experiments_root}",
                     f"dataset.root={args.dataset_root}"]
        sdm_command("train", str(study / C.BEST_CONFIG), *overrides)
        sdm_command("evaluate", str(study / C.BEST_CONFIG), *overrides, "--no-pretrained")
    return folder


def study_summary(key: str, args: argparse.Namespace) -> dict:
    study = Path(args.experiments_root) / study_name(key)
    rows = storage.read_csv(study / C.TRIALS_CSV)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: float(r["value"]))
    tested = {}
    for seed in SEEDS:
        folder = Path(args.experiments_root) / f"{study_name(key)}_best_seed{seed}"
        if results_file(folder / C.RESULTS_FOLDER, ".json").is_file():
            trained = read_results(folder / C.RESULTS_FOLDER).trained
            tested[seed] = {metric: 100 * trained.separated.mean[metric]
                            for metric in C.METRIC_NAMES}
    return {"trials": len(complete),
            "tuning_seconds": sum(float(r["seconds"]) for r in rows if r["seconds"]),
            "best_trial": int(best["number"]), "best_val_map_at_r": 100 * float(best["value"]),
            "best_params": {k: v for k, v in best.items() if k not in TRIAL_COLUMNS and v},
            "test": tested}


def markdown(summaries: dict) -> str:
    lines = ["| study | trials | tuning s | best trial val MAP@R | seeds | test P@1 | RP "
             "| MAP@R |", "|-|-:|-:|-:|-:|-:|-:|-:|"]
    for key, found in summaries.items():
        tested = found["test"]
        cells = []
        for metric in C.METRIC_NAMES:
            values = [t[metric] for t in tested.values()]
            cells.append("-" if not values else f"{statistics.fmean(values):.2f}" + (
                f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""))
        lines.append(f"| {key} | {found['trials']} | {found['tuning_seconds']:.0f} | "
                     f"{found['best_val_map_at_r']:.2f} | {len(tested)} | " + " | ".join(cells)
                     + " |")
    text = "\n".join(lines) + "\n"
    base, sdm = summaries.get("ms"), summaries.get("ms_sdm")
    if base and sdm:
        seeds = sorted(set(base["test"]) & set(sdm["test"]))
        if seeds:
            gaps = [sdm["test"][s][C.MAP_AT_R] - base["test"][s][C.MAP_AT_R] for s in seeds]
            spread = f" ± {statistics.stdev(gaps):.2f}" if len(gaps) > 1 else ""
            text += (f"\nTuned SDM minus tuned baseline, test MAP@R paired by seed "
                     f"({len(seeds)} seeds): {statistics.fmean(gaps):+.2f}{spread} points "
                     f"(per seed: {', '.join(f'{g:+.2f}' for g in gaps)}).\n")
    for key, found in summaries.items():
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(found["best_params"].items()))
        text += f"\nBest {key} (trial {found['best_trial']}): {params}\n"
    return text


def _short(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--startup-trials", type=int, default=3)
    parser.add_argument("--experiments-root", default="experiments/tuned_comparison")
    parser.add_argument("--dataset-root", default="data")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite the Markdown from the committed JSON alone (no experiments "
                             "needed): what `make docs-tables` runs")
    args = parser.parse_args()
    if args.markdown_only:
        summaries = storage.read_json(args.output / f"{RESULT}.json")
        storage.write_text(args.output / f"{RESULT}.md", markdown(summaries))
        return
    if not args.summary_only:
        for key in STUDIES:
            tune(key, args)
        for seed in SEEDS:
            for key in STUDIES:
                test_best(key, seed, args)
    summaries = {key: study_summary(key, args) for key in STUDIES
                 if (Path(args.experiments_root) / study_name(key) / C.TRIALS_CSV).is_file()}
    storage.write_json(args.output / f"{RESULT}.json", summaries)
    storage.write_text(args.output / f"{RESULT}.md", markdown(summaries))
    print(markdown(summaries))


if __name__ == "__main__":
    main()
