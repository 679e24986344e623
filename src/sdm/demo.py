"""``sdm demo``: a baseline loss and the same loss with SDM, same seed, at equal compute,
where SDM is meant to work: a pretrained trunk (EfficientNet-Lite0, ImageNet weights)
fine-tuned at 64 px.

Builds the dataset when missing (the glyph set by default, or the icon set), measures what an
SDM step costs in baseline steps on this machine (``STEP_COST_FILE`` in the experiments root
keeps it for reruns), trains SDM in the project's recommended cheap setting
(exp_configs/sdm_cheap.yaml) and the baseline for as many more iterations as that ratio, both
on MLRC fold 0 with a short schedule (exp_configs/demo/), evaluates them on the test classes
and prints the table, the difference as measured (and says so plainly when SDM did not beat
the baseline), where everything was written, and its wall time. About 6 minutes on 2 CPU
cores.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from sdm import constants as C
from sdm import storage
from sdm.config import PACKAGED_CONFIGS, load_config
from sdm.engine.experiment import ExperimentFolder
from sdm.scores import TestResults, markdown_table, result_rows

CONFIG_FOLDER = PACKAGED_CONFIGS / "demo"
DEMO_CONFIGS = {"baseline": "ms.yaml", "sdm": "ms_sdm.yaml"}
DEMO_DATASETS = (C.GLYPHS, C.ICONS)
QUICK_OVERRIDES = ["training.max_epochs=1", "training.iterations_per_epoch=3",
                   "training.batch_size=16"]
STEP_COST_FILE = "step_cost.json"


def run_demo(dataset_root: str = C.DEFAULT_DATASET_ROOT,
             experiments_root: str = "experiments/demo", quick: bool = False,
             dataset: str = C.GLYPHS) -> dict[str, TestResults]:
    """Trains and evaluates the two demo experiments; returns their results by label."""
    start = time.time()
    build_demo_dataset(dataset, dataset_root)
    configs = {}
    for label, file in DEMO_CONFIGS.items():
        overrides = [f"dataset.name={dataset}", f"dataset.root={dataset_root}",
                     f"experiments_root={experiments_root}"]
        if quick:
            overrides += [*QUICK_OVERRIDES, f"name=quick_{label}"]
        configs[label] = load_config([CONFIG_FOLDER / file], overrides)
    cost = demo_step_cost(configs["baseline"], configs["sdm"], Path(experiments_root), quick)
    iterations = configs["sdm"].training.iterations_per_epoch
    configs["baseline"].training.iterations_per_epoch = math.ceil(iterations * cost)
    print(f"an SDM step ({describe_sdm(configs['sdm'])}) costs {cost:.2f} baseline steps "
          f"here, so the baseline trains {configs['baseline'].training.iterations_per_epoch} "
          f"iterations an epoch against SDM's {iterations}: equal compute", flush=True)
    measured, rows, train_seconds = {}, [], {}
    for label, config in configs.items():
        print(f"== {config.name}: {config.loss.name} on {dataset}, SDM "
              f"{describe_sdm(config) if config.sdm.enabled else 'off'}", flush=True)
        started = time.time()
        experiment = ExperimentFolder.of(config)
        experiment.run()
        train_seconds[label] = time.time() - started
        results = experiment.evaluate(pretrained=label == "baseline")
        measured[label] = results
        rows += result_rows(config.name, results, pretrained_label="Pretrained (epoch 0)")
    print()
    print(markdown_table(rows))
    print(verdict(measured["baseline"], measured["sdm"]))
    print(compute_note(train_seconds["baseline"], train_seconds["sdm"]))
    print(f"experiments, per-epoch CSVs and checkpoints: {experiments_root}/")
    print(f"TensorBoard curves: tensorboard --logdir {experiments_root}")
    print(f"demo wall time: {time.time() - start:.0f} s")
    return measured


def describe_sdm(config) -> str:
    """SDM's setting in a few words."""
    sdm = config.sdm
    return (f"T={sdm.passes} passes with feature dropout {sdm.feature_dropout} at "
            f"{sdm.perturb_at}, M={sdm.masks} masks at {sdm.embedding_dropout}, alpha "
            f"{sdm.alpha:g}")


def demo_step_cost(baseline, sdm, experiments_root: Path, quick: bool) -> float:
    """SDM's step cost in baseline steps: read from ``STEP_COST_FILE`` when an earlier demo
    measured it there, else measured now (interleaved rounds, see ``step_cost``) and saved."""
    from sdm.engine.step_cost import step_cost_ratio

    path = experiments_root / (f"quick_{STEP_COST_FILE}" if quick else STEP_COST_FILE)
    if path.is_file():
        return float(storage.read_json(path)["ratio"])
    rounds = 1 if quick else 5
    ratio = step_cost_ratio(baseline, sdm, rounds=rounds, warmup=1)
    storage.write_json(path, {"ratio": ratio, "rounds": rounds, "measured": time.ctime()})
    return ratio


def build_demo_dataset(dataset: str, dataset_root: str) -> None:
    """Builds the demo's dataset below ``dataset_root`` unless it is there already."""
    if dataset not in DEMO_DATASETS:
        raise ValueError(f"the demo runs on {' or '.join(DEMO_DATASETS)}, not {dataset!r}")
    if dataset == C.GLYPHS:
        from sdm.builders.glyphs import build_glyph_dataset

        build_glyph_dataset(dataset_root)
    else:
        from sdm.builders.icons import build_icon_dataset

        build_icon_dataset(dataset_root)


def verdict(baseline: TestResults, sdm: TestResults) -> str:
    """What the two runs measured, in words: SDM minus baseline in test MAP@R."""
    assert baseline.trained.separated is not None and sdm.trained.separated is not None
    base = 100 * baseline.trained.separated.mean[C.MAP_AT_R]
    with_sdm = 100 * sdm.trained.separated.mean[C.MAP_AT_R]
    text = (f"SDM minus baseline at equal compute, test MAP@R: {with_sdm - base:+.2f} points "
            f"({with_sdm:.2f} vs {base:.2f}; one seed, one fold).")
    if with_sdm <= base:
        return (text + " At equal compute SDM did not beat the baseline here; the seeded "
                "studies (docs/results/placement.md, docs/results/convergence.md) say how "
                "often it does.")
    return (text + " One seed can mislead: the seeded studies (docs/results/placement.md, "
            "docs/results/convergence.md) have the spread over seeds.")


def compute_note(baseline_seconds: float, sdm_seconds: float) -> str:
    """The two runs' wall-clock training times (validation included), measured."""
    return (f"Wall-clock, validation included: SDM trained for {sdm_seconds:.0f} s, the "
            f"baseline for {baseline_seconds:.0f} s ({sdm_seconds / baseline_seconds:.1f}x).")
