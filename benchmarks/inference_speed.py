"""Inference speed: embedding throughput of the trunks, and faiss search at gallery scale.

1. Embedding: images/s of ``sdm.inference.embed`` (PyTorch, eval mode) on already transformed
   inputs, and of the same model exported to ONNX and run by onnxruntime, for the small CNN
   (1x32x32), EfficientNet-Lite0 and BN-Inception (3x227x227), 128-d embedder, random weights
   (speed does not depend on them). Image decoding is not included
   (benchmarks/loading_speed.py measures it).
2. Search: synthetic 128-d unit vectors drawn around N/20 random class centres (cosine ~0.8
   to their centre, like embeddings of images of a class), 1,000 queries drawn the same way;
   for every index kind of ``sdm index`` (flat = exact; hnsw and ivf at a few search
   settings): build seconds, queries/s (all queries in one call), recall@10 against the exact
   top 10, and the index's size (serialized, about what it takes in memory).

It ends with what the numbers say: for each size, whether exact search keeps up with the
fastest model's embedding (then an approximate index buys nothing end to end).

    PYTHONPATH=src python benchmarks/inference_speed.py                    # 10^5 and 10^6
    PYTHONPATH=src python benchmarks/inference_speed.py --sizes 10000 100000 --seconds 2
    PYTHONPATH=src python benchmarks/inference_speed.py --threads 1   # on a shared machine

The default run takes about 6 minutes on 2 cores, most of it building HNSW at 10^6.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

from sdm.config import load_config
from sdm.engine import build
from sdm.inference import InferenceModel, embed
from sdm.inference.export import INPUT_NAME, export_model
from sdm.inference.index import apply_search_parameters, build_index, index_parameters
from sdm.inference.index import search_index as faiss_search
from sdm.inference.loading import experiment_input_shape

TRUNKS = {  # trunk -> config overrides (the small CNN at the glyphs' 32x32)
    "small_cnn": ["model.trunk=small_cnn", "transform.resize=32", "transform.crop=32"],
    "efficientnet_lite0": ["model.trunk=efficientnet_lite0"],
    "bninception": ["model.trunk=bninception"],
}
DIM = 128
K = 10
ITEMS_PER_CLASS = 20
NOISE = 0.75  # norm of the noise added to a unit class centre: cosine to it ~ 1/sqrt(1+0.75^2)
SEARCH_SETTINGS = {  # kind -> the search parameter varied, and its values
    "flat": ("", [None]),
    "hnsw": ("ef_search", [32, 64, 128]),
    "ivf": ("nprobe", [8, 32, 128]),
}


def model_of(trunk: str) -> InferenceModel:
    """The trunk with the paper's 128-d embedder, random weights, in eval mode."""
    config = load_config(overrides=[*TRUNKS[trunk], "model.pretrained=false",
                                    "model.embedding_sizes=[128]"])
    transform = build.image_transform(config, train=False)
    return InferenceModel([build.build_eval_model(config)], transform,
                          experiment_input_shape(config, transform), config)


def images_per_second(run: Callable[[torch.Tensor], object], shape: tuple[int, ...],
                      batch_size: int, seconds: float) -> float:
    """Images/s of ``run`` on random batches: one warm-up batch, then batches for at least
    ``seconds`` (and at least two)."""
    batch = torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(0))
    run(batch)
    done, start = 0, time.perf_counter()
    while True:
        run(batch)
        done += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 2 * batch_size:
            return done / elapsed


def embedding_throughput(batch_size: int, seconds: float, onnx: bool,
                         threads: int | None) -> dict[str, dict]:
    """{trunk: {"torch": images/s, "onnxruntime": images/s or None}}."""
    results = {}
    for trunk in TRUNKS:
        model = model_of(trunk)
        row = {"shape": model.input_shape,
               "torch": images_per_second(lambda b, m=model: embed(m, b, batch_size=batch_size),
                                          model.input_shape, batch_size, seconds),
               "onnxruntime": None}
        if onnx:
            import onnxruntime

            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{trunk}.onnx"
                export_model(model, path, "onnx")
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
                session = onnxruntime.InferenceSession(str(path), options,
                                                       providers=["CPUExecutionProvider"])
                row["onnxruntime"] = images_per_second(
                    lambda b, s=session: s.run(None, {INPUT_NAME: b.numpy()}),
                    model.input_shape, batch_size, seconds)
        print(f"  {trunk:<20} {str(row['shape']):<15} {row['torch']:>10.1f} "
              f"{row['onnxruntime'] or float('nan'):>12.1f}", flush=True)
        results[trunk] = row
    return results


def clustered_unit_vectors(count: int, centres: np.ndarray, rng: np.random.Generator
                           ) -> np.ndarray:
    """float32 (count, DIM) unit vectors, each a random centre plus Gaussian noise."""
    noise = rng.standard_normal((count, DIM), dtype=np.float32) * (NOISE / np.sqrt(DIM))
    vectors = centres[rng.integers(0, len(centres), count)] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def search_benchmark(size: int, num_queries: int) -> list[dict]:
    """One row per (kind, search setting) at ``size`` gallery items."""
    rng = np.random.default_rng(size)
    centres = rng.standard_normal((max(1, size // ITEMS_PER_CLASS), DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery = clustered_unit_vectors(size, centres, rng)
    queries = clustered_unit_vectors(num_queries, centres, rng)
    rows, exact = [], None
    for kind, (name, values) in SEARCH_SETTINGS.items():
        start = time.perf_counter()
        parameters = index_parameters(kind, size)
        index = build_index(gallery, kind, **parameters)
        built = time.perf_counter() - start
        megabytes = faiss.serialize_index(index).nbytes / 2**20
        for value in values:
            if name:
                parameters[name] = value
                apply_search_parameters(index, kind, parameters)
            start = time.perf_counter()
            _, found = faiss_search(index, queries, K)
            seconds = time.perf_counter() - start
            if exact is None:
                exact = found
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)])
            setting = ", ".join(f"{k}={v}" for k, v in parameters.items()) or "exact"
            row = {"kind": kind, "setting": setting, "build_s": built,
                   "queries_per_s": num_queries / seconds, "recall": recall, "mb": megabytes}
            print(f"  {size:>9,} {kind:<5} {setting:<40} {built:>8.1f} "
                  f"{row['queries_per_s']:>10.0f} {recall:>9.3f} {megabytes:>9.0f}", flush=True)
            rows.append(row)
        del index
    return rows


def conclusions(throughput: dict[str, dict], searches: dict[int, list[dict]]) -> list[str]:
    """For each size: for which models exact search is the limit of a query (it answers fewer
    queries/s than the model embeds images, best of torch and onnxruntime), and what the
    fastest approximate setting with recall@10 >= 0.95 gains."""
    rates = {trunk: max(row["torch"], row["onnxruntime"] or 0.0)
             for trunk, row in throughput.items()}
    lines = []
    for size, rows in searches.items():
        exact = next(r for r in rows if r["kind"] == "flat")["queries_per_s"]
        limited = [t for t, rate in rates.items() if rate > exact]
        others = [t for t in rates if t not in limited]
        line = f"N = {size:,}: exact search answers {exact:,.0f} queries/s. "
        if limited:
            line += (f"It is the limit for the models that embed faster, "
                     f"{_listed(limited, rates)}: there an approximate index pays")
        if others:
            line += ("; for " if limited else "For ") + (
                f"{_listed(others, rates)} the model is the limit, not the search: an "
                "approximate index buys nothing end to end")
        good = [r for r in rows if r["kind"] != "flat" and r["recall"] >= 0.95]
        best = max(good, key=lambda r: r["queries_per_s"], default=None)
        lines.append(line + (
            f". Fastest approximate setting with recall@10 >= 0.95: {best['kind']} "
            f"{best['setting']}, {best['queries_per_s']:,.0f} queries/s "
            f"({best['queries_per_s'] / exact:.1f}x exact)." if best else
            ". No approximate setting reached recall@10 0.95."))
    return lines


def _listed(trunks: list[str], rates: dict[str, float]) -> str:
    return ", ".join(f"{t} ({rates[t]:,.0f} images/s)" for t in trunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="time each model for at least this long")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime column")
    parser.add_argument("--threads", type=int,
                        help="threads for torch, onnxruntime and faiss (default: theirs); on a "
                             "machine shared with other jobs 1 avoids threads waiting on each "
                             "other")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss "
          f"{faiss.__version__} ({faiss.omp_get_max_threads()} threads), batch "
          f"{args.batch_size}, CPU")
    print("\nEmbedding throughput, images/s (inputs already transformed)")
    print(f"  {'trunk':<20} {'input':<15} {'torch':>10} {'onnxruntime':>12}")
    throughput = embedding_throughput(args.batch_size, args.seconds, not args.no_onnx,
                                      args.threads)
    print(f"\nSearch, {DIM}-d unit vectors around N/{ITEMS_PER_CLASS} centres, "
          f"{args.queries} queries, k={K}")
    print(f"  {'N':>9} {'kind':<5} {'setting':<40} {'build s':>8} {'queries/s':>10} "
          f"{'recall@10':>9} {'size MB':>9}")
    searches = {size: search_benchmark(size, args.queries) for size in args.sizes}
    print()
    for line in conclusions(throughput, searches):
        print(line)


if __name__ == "__main__":
    main()
