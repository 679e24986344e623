"""Does SDM help on real data trained here? The four paper losses, SDM off and on, over seeds,
on the glyph dataset with the small CNN (4 folds, the protocol shortened for a CPU).

    python benchmarks/glyph_study.py                       # everything: 3 seeds, + T=1 variant
    python benchmarks/glyph_study.py --seeds 0             # a part; rerun to append more
    python benchmarks/glyph_study.py --summary-only        # tables and plot from the ledger

Resumable and appendable: each (loss, SDM setting, seed) is one experiment folder under
``--experiments-root``; finished folds are skipped, interrupted ones resume. A tested run's
numbers go into the ledger ``<output>/glyph_study.json`` (committed with the repository), and
a run in the ledger is never run again, so the tables can be rebuilt, and the study continued,
from a fresh checkout. Configs are ``exp_configs/glyphs/<loss>.yaml`` and ``<loss>_sdm.yaml``
(identical but for SDM), plus ``contrast_sdm_t1.yaml`` (embedding-only SDM) for the T=1
comparison. Nothing is tuned on the test classes. Writes ``glyph_study.{md,png}`` from the
ledger into ``--output`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sdm import constants as C
from sdm import records
from sdm.config import PACKAGED_CONFIGS, load_config
from sdm.engine.build import load_experiment_dataset
from sdm.engine.evaluate import evaluate_experiment
from sdm.engine.experiment import experiment_folder, run_experiment
from sdm.report import (
    Experiment,
    paired_differences,
    percent_scores,
    plot_paired_differences,
    seed_table,
)
from sdm.results import results_file, write_results

CONFIGS = PACKAGED_CONFIGS / "glyphs"
LOSSES = ("contrast", "triplet", "margin", "ms")
VARIANTS = {"off": "{loss}.yaml", "paper": "{loss}_sdm.yaml", "t1": "{loss}_sdm_t1.yaml"}
LEDGER = "glyph_study.json"


def experiment_config(loss: str, variant: str, seed: int, root: Path):
    file = CONFIGS / VARIANTS[variant].format(loss=loss)
    return load_config([file], [f"training.seed={seed}", f"name={loss}_{variant}_seed{seed}",
                                f"experiments_root={root}"])


def ledger_key(loss: str, variant: str) -> str:
    return f"{loss}|{variant}"


def read_ledger(output: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{"loss|variant": {seed: {column: percent}}}`` of every tested run (seeds as text)."""
    path = output / LEDGER
    return records.read_json(path) if path.is_file() else {}


def record(output: Path, loss: str, variant: str, seed: int, folder: Path) -> None:
    """Adds a tested run's six table numbers (percent) to the ledger, atomically."""
    ledger = read_ledger(output)
    ledger.setdefault(ledger_key(loss, variant), {})[str(seed)] = percent_scores(
        Experiment(folder))
    records.write_json(output / LEDGER, ledger)


def run_one(loss: str, variant: str, seed: int, args: argparse.Namespace) -> None:
    """Trains, tests and records one run unless the ledger has it."""
    if str(seed) in read_ledger(args.output).get(ledger_key(loss, variant), {}):
        return
    config = experiment_config(loss, variant, seed, args.experiments_root)
    folder = experiment_folder(config)
    start = time.time()
    if not results_file(folder / C.RESULTS_FOLDER, ".json").is_file():
        run_experiment(config)
        dataset, splits = load_experiment_dataset(config)
        write_results(folder / C.RESULTS_FOLDER,
                      evaluate_experiment(config, folder, dataset, splits, pretrained=False))
    record(args.output, loss, variant, seed, folder)
    print(f"{config.name}: {time.time() - start:.0f} s", flush=True)


def collect(ledger: dict) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
    """``{(loss, variant): {seed: scores}}`` of the ledger, losses in paper order, each loss's
    variants as off, paper, t1."""
    found = {}
    for loss in LOSSES:
        for variant in VARIANTS:
            per_seed = ledger.get(ledger_key(loss, variant), {})
            if per_seed:
                found[(loss, variant)] = {int(seed): s for seed, s in sorted(per_seed.items())}
    return found


def sdm_differences(found: dict) -> dict[str, dict[int, dict[str, float]]]:
    """``{"loss variant − off": {seed: difference}}`` for every SDM variant sharing a seed
    with its loss's baseline (percentage points)."""
    differences = {}
    for (loss, variant), per_seed in found.items():
        paired = paired_differences(per_seed, found.get((loss, "off"), {}))
        if variant != "off" and paired:
            differences[f"{loss} {variant} − off"] = paired
    return differences


def summary_table(found: dict) -> str:
    text = ("Test classes, percent; mean ± standard deviation over seeds.\n\n"
            + seed_table("loss, SDM", {f"{loss} {variant}": per_seed
                                       for (loss, variant), per_seed in found.items()}))
    differences = sdm_differences(found)
    if differences:
        text += ("\nSDM minus baseline, paired by seed (points; positive = SDM better):\n\n"
                 + seed_table("loss, SDM", differences))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--t1-losses", nargs="*", default=["contrast"],
                        help="losses also run with embedding-only SDM (T=1)")
    parser.add_argument("--experiments-root", type=Path, default=Path("experiments/glyph_study"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    if not args.summary_only:
        for seed in args.seeds:
            for loss in args.losses:
                for variant in ("off", "paper"):
                    run_one(loss, variant, seed, args)
            for loss in args.t1_losses:
                run_one(loss, "t1", seed, args)
    found = collect(read_ledger(args.output))
    text = summary_table(found)
    records.write_text(args.output / "glyph_study.md", text)
    differences = sdm_differences(found)
    if differences:
        plot_paired_differences({"glyphs, small CNN from scratch: SDM − off": differences},
                                args.output / "glyph_study.png")
    print(text)


if __name__ == "__main__":
    main()
