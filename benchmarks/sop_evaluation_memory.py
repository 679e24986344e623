"""Peak memory of a whole test evaluation at Stanford Online Products size.

``sdm evaluate`` on SOP embeds the MLRC test half (60,502 images in 11,317 classes) with each
of the 4 fold models and scores separated (128-d) and concatenated (512-d) retrieval. This runs
that path (``sdm.engine.evaluate.evaluate_models``) on a stand-in of the same shape: tiny 16x16
images and a cheap model, so that what is measured is the evaluation's own memory (embeddings,
blockwise metrics), not a trunk's activations. It prints the process's peak RSS before and
after; the bound to compare with is ``retrieval_metrics`` alone at N = 60,502, 512-d
(902 MB peak in benchmarks/results/evaluation_speed.txt, shown on docs/performance.md).

    PYTHONPATH=src .venv/bin/python benchmarks/sop_evaluation_memory.py
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from torch import nn

from sdm import constants as C
from sdm.config import load_config
from sdm.data.datasets import ArrayImageDataset
from sdm.data.transforms import build_transform
from sdm.engine.evaluate import evaluate_models
from sdm.models.embedder import Embedder
from sdm.models.embedding_model import EmbeddingModel

SOP_TEST_IMAGES = 60502
SOP_TEST_CLASSES = 11317


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sop_sized_test_set(images: int, classes: int, side: int = 16) -> ArrayImageDataset:
    """``images`` items in ``classes`` classes of 2 to 12 items (SOP's range), random pixels."""
    rng = np.random.default_rng(0)
    sizes = np.full(classes, 2)
    extra = rng.multinomial(images - 2 * classes, np.ones(classes) / classes)
    sizes += np.minimum(extra, 10)
    while sizes.sum() < images:  # put back what the cap at 12 removed
        sizes[np.flatnonzero(sizes < 12)[: images - sizes.sum()]] += 1
    labels = np.repeat(np.arange(classes), sizes)
    pixels = rng.integers(0, 256, (images, side, side), dtype=np.uint8)
    return ArrayImageDataset(pixels, labels, "sop_sized",
                             transform=build_transform(C.GLYPH_INPUT, train=False))


def cheap_model(side: int = 16, dim: int = 128) -> EmbeddingModel:
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 64))
    return EmbeddingModel(trunk, Embedder(64, [dim]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=SOP_TEST_IMAGES)
    parser.add_argument("--classes", type=int, default=SOP_TEST_CLASSES)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = load_config(overrides=["training.device=cpu", "training.num_workers=0",
                                    "training.eval_batch_size=1024"])
    test_set = sop_sized_test_set(args.images, args.classes)
    models = [cheap_model() for _ in range(C.NUM_FOLDS)]
    before = peak_rss_mb()
    start = time.time()
    result = evaluate_models(models, test_set, config)
    seconds = time.time() - start
    print(f"test set: {len(test_set)} images, {len(test_set.classes)} classes; "
          f"{len(models)} models, {result.dims}")
    print(f"evaluate_models: {seconds:.0f} s, peak RSS {before:.0f} MB before -> "
          f"{peak_rss_mb():.0f} MB after (bound: 902 MB, retrieval_metrics alone at 512-d)")
    print(f"concatenated MAP@R {result.concatenated[C.MAP_AT_R]:.4f} (random model)")


if __name__ == "__main__":
    main()
