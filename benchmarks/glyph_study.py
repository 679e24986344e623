"""Does SDM help on real data trained here? The four paper losses, SDM off and on, over seeds,
on the glyph dataset with the small CNN (4 folds, the protocol shortened for a CPU).

    python benchmarks/glyph_study.py                       # everything: 3 seeds, + T=1 variant
    python benchmarks/glyph_study.py --seeds 0             # a part; rerun to append more
    python benchmarks/glyph_study.py --summary-only        # tables and plot from what exists

Resumable and appendable: each (loss, SDM setting, seed) is one experiment folder under
``--experiments-root``; finished folds are skipped, interrupted ones resume. Configs are
``exp_configs/glyphs/<loss>.yaml`` and ``<loss>_sdm.yaml`` (identical but for SDM), plus
``contrast_sdm_t1.yaml`` (embedding-only SDM) for the T=1 comparison. Nothing is tuned on the
test classes. Writes ``glyph_study.{md,json,png}`` into ``--output`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sdm import constants as C
from sdm import records
from sdm.config import PACKAGED_CONFIGS, load_config
from sdm.constants import CONCATENATED, SEPARATED, TABLE_ORDER
from sdm.engine.build import load_experiment_dataset
from sdm.engine.evaluate import evaluate_experiment
from sdm.engine.experiment import experiment_folder, run_experiment
from sdm.report import format_mean_std, mean_and_std
from sdm.results import read_results, results_file, write_results

CONFIGS = PACKAGED_CONFIGS / "glyphs"
LOSSES = ("contrast", "triplet", "margin", "ms")
VARIANTS = {"off": "{loss}.yaml", "paper": "{loss}_sdm.yaml", "t1": "{loss}_sdm_t1.yaml"}


def experiment_config(loss: str, variant: str, seed: int, root: Path):
    file = CONFIGS / VARIANTS[variant].format(loss=loss)
    return load_config([file], [f"training.seed={seed}", f"name={loss}_{variant}_seed{seed}",
                                f"experiments_root={root}"])


def run_one(loss: str, variant: str, seed: int, root: Path) -> None:
    config = experiment_config(loss, variant, seed, root)
    folder = experiment_folder(config)
    if results_file(folder / C.RESULTS_FOLDER, ".json").is_file():
        return
    start = time.time()
    run_experiment(config)
    dataset, splits = load_experiment_dataset(config)
    results = evaluate_experiment(config, folder, dataset, splits, pretrained=False)
    write_results(folder / C.RESULTS_FOLDER, results)
    print(f"{config.name}: {time.time() - start:.0f} s", flush=True)


def scores(folder: Path) -> dict[str, float]:
    """The six table numbers of one evaluated experiment, in percent."""
    trained = read_results(folder / C.RESULTS_FOLDER).trained
    by_mode = {SEPARATED: trained.separated.mean, CONCATENATED: trained.concatenated}
    return {f"{mode}_{metric}": 100 * by_mode[mode][metric]
            for mode in TABLE_ORDER for metric in C.METRIC_NAMES}


def collect(root: Path, seeds: list[int], t1_losses: list[str]) -> dict:
    """{(loss, variant): {seed: scores}} for every finished experiment."""
    found: dict = {}
    pairs = [(loss, v) for loss in LOSSES for v in ("off", "paper")]
    pairs += [(loss, "t1") for loss in t1_losses]
    for loss, variant in pairs:
        for seed in seeds:
            folder = root / f"{loss}_{variant}_seed{seed}"
            if results_file(folder / C.RESULTS_FOLDER, ".json").is_file():
                found.setdefault((loss, variant), {})[seed] = scores(folder)
    return found


def mean_std(values: list[float]) -> str:
    return format_mean_std(*mean_and_std(values))


def summary_table(found: dict) -> str:
    columns = [f"{mode}_{metric}" for mode in TABLE_ORDER for metric in C.METRIC_NAMES]
    header = ("| loss | SDM | seeds | Concat. P@1 | RP | MAP@R | Sep. P@1 | RP | MAP@R |\n"
              "|-|-|-|-:|-:|-:|-:|-:|-:|\n")
    lines = []
    for (loss, variant), per_seed in found.items():
        cells = [mean_std([s[c] for s in per_seed.values()]) for c in columns]
        lines.append(f"| {loss} | {variant} | {len(per_seed)} | " + " | ".join(cells) + " |")
    differences = []
    for loss in LOSSES:
        for variant in ("paper", "t1"):
            if (loss, variant) not in found or (loss, "off") not in found:
                continue
            seeds = sorted(set(found[(loss, variant)]) & set(found[(loss, "off")]))
            if not seeds:
                continue
            cells = [mean_std([found[(loss, variant)][s][c] - found[(loss, "off")][s][c]
                               for s in seeds]) for c in columns]
            differences.append(f"| {loss} | {variant} − off | {len(seeds)} | "
                               + " | ".join(cells) + " |")
    text = "Test classes, percent; mean ± standard deviation over seeds.\n\n"
    text += header + "\n".join(lines) + "\n"
    if differences:
        text += ("\nSDM minus baseline, paired by seed (points; positive = SDM better):\n\n"
                 + header + "\n".join(differences) + "\n")
    return text


def plot(found: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, mode in zip(axes, (CONCATENATED, SEPARATED), strict=True):
        column = f"{mode}_{C.MAP_AT_R}"
        variants = [v for v in ("off", "paper", "t1") if any(k[1] == v for k in found)]
        width = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            xs, means, stds = [], [], []
            for j, loss in enumerate(LOSSES):
                values = [s[column] for s in found.get((loss, variant), {}).values()]
                if values:
                    xs.append(j + i * width)
                    means.append(statistics.fmean(values))
                    stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            axis.bar(xs, means, width, yerr=stds, capsize=3, label=f"SDM {variant}")
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(LOSSES))], LOSSES)
        axis.set_title(f"glyphs test, {mode} MAP@R")
        axis.set_ylabel("MAP@R (%)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    records.save_figure(figure, path)


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
                    run_one(loss, variant, seed, args.experiments_root)
            for loss in args.t1_losses:
                run_one(loss, "t1", seed, args.experiments_root)
    found = collect(args.experiments_root, sorted({0, 1, 2, *args.seeds}), args.t1_losses)
    text = summary_table(found)
    records.write_text(args.output / "glyph_study.md", text)
    records.write_json(args.output / "glyph_study.json",
                       {f"{k[0]}|{k[1]}": v for k, v in found.items()})
    if found:
        plot(found, args.output / "glyph_study.png")
    print(text)


if __name__ == "__main__":
    main()
