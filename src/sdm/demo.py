"""``sdm demo``: a baseline loss and the same loss with SDM, same seed, on the glyph dataset.

Runs on a CPU in about five minutes: builds the glyph dataset when missing, trains both
experiments over the 4 MLRC folds with a shortened schedule, evaluates them on the test
classes and prints the table, where everything was written, and its own wall time.
"""

from __future__ import annotations

import time

from sdm import constants as C
from sdm.config import PACKAGED_CONFIGS, load_config
from sdm.engine.experiment import run_experiment
from sdm.results import markdown_table, result_rows, write_results

CONFIG_FOLDER = PACKAGED_CONFIGS / "glyphs"
DEMO_CONFIGS = {"baseline": "contrast.yaml", "sdm": "contrast_sdm_t1.yaml"}
QUICK_OVERRIDES = ["training.max_epochs=1", "training.iterations_per_epoch=5",
                   "training.folds=[0,1]"]


def run_demo(dataset_root: str = C.DEFAULT_DATASET_ROOT,
             experiments_root: str = "experiments/demo", quick: bool = False) -> list[dict]:
    """Trains and evaluates the two demo experiments; returns their table rows."""
    from sdm.data.glyphs import build_glyph_dataset
    from sdm.engine.build import load_experiment_dataset
    from sdm.engine.evaluate import evaluate_experiment
    from sdm.engine.experiment import experiment_folder

    start = time.time()
    build_glyph_dataset(dataset_root)
    rows = []
    for label, file in DEMO_CONFIGS.items():
        overrides = [f"dataset.root={dataset_root}", f"experiments_root={experiments_root}"]
        if quick:
            overrides += QUICK_OVERRIDES + [f"name=quick_{label}"]
        config = load_config([CONFIG_FOLDER / file], overrides)
        print(f"== {config.name}: {config.loss.name}, SDM {'on' if config.sdm.enabled else 'off'}")
        run_experiment(config)
        dataset, splits = load_experiment_dataset(config)
        results = evaluate_experiment(config, experiment_folder(config), dataset, splits,
                                      pretrained=label == "baseline")
        write_results(experiment_folder(config) / C.RESULTS_FOLDER, results)
        rows += result_rows(config.name, results, pretrained_label="Pretrained (epoch 0)")
    print()
    print(markdown_table(rows))
    print(f"experiments, per-epoch CSVs and checkpoints: {experiments_root}/")
    print(f"TensorBoard curves: tensorboard --logdir {experiments_root}")
    print(f"demo wall time: {time.time() - start:.0f} s")
    return rows
