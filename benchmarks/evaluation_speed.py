"""Speed and peak memory of retrieval_metrics beside pytorch-metric-learning's AccuracyCalculator.

Compares, on random clustered L2-normalized embeddings (float32, self-retrieval):
  - retrieval_metrics (sdm.metrics, exact blockwise kNN),
  - AccuracyCalculator(k="max_bin_count") with its default faiss IndexFlatL2 on CPU,
  - a floor for this design: the blocked query x reference products alone, and with the
    top-k selection (k = max R + 1), at retrieval_metrics' own block size and BLAS.
Settings: Cars196-like (8,131 items, ~83 per class) and CUB-like (5,924 items, ~59 per class)
test sets at 512-d and 128-d, and an SOP-sized set (60,502 items at 512-d, 2-12 per class)
mainly for peak memory. Every method runs in its own subprocess, so peak RSS
(resource.getrusage) and thread pools do not mix; seconds are the best of --repeats calls.

    PYTHONPATH=src .venv/bin/python benchmarks/evaluation_speed.py [--quick]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdm import storage
from sdm.constants import METRIC_NAMES

RETRIEVAL_METRICS = "retrieval_metrics"
ACCURACY_CALCULATOR = "AccuracyCalculator"
PRODUCTS = "products (floor)"
PRODUCTS_TOPK = "products+topk (floor)"


@dataclass(frozen=True)
class Setting:
    name: str
    num_items: int
    dim: int
    class_sizes: tuple[int, int]  # inclusive range of items per class
    methods: tuple[str, ...]
    repeats: int


def make_settings(quick: bool) -> list[Setting]:
    repeats = 1 if quick else 3
    speed = (RETRIEVAL_METRICS, ACCURACY_CALCULATOR, PRODUCTS, PRODUCTS_TOPK)
    large = (RETRIEVAL_METRICS,) if quick else (RETRIEVAL_METRICS, ACCURACY_CALCULATOR)
    return [
        Setting("cars-like", 8131, 512, (60, 106), speed, repeats),
        Setting("cars-like", 8131, 128, (60, 106), speed, repeats),
        Setting("cub-like", 5924, 512, (50, 68), speed, repeats),
        Setting("cub-like", 5924, 128, (50, 68), speed, repeats),
        Setting("sop-sized", 60502, 512, (2, 12), large, 1),
    ]


def clustered_embeddings(
    num_items: int, dim: int, class_sizes: tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalized float32 points around random class centres, and int64 labels."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < num_items:
        sizes.append(int(rng.integers(class_sizes[0], class_sizes[1] + 1)))
    sizes[-1] -= sum(sizes) - num_items
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    centres = rng.standard_normal((len(sizes), dim), dtype=np.float32)
    spread = 0.63 * dim**0.25  # keeps retrieval about as hard at every dim (MAP@R ~0.3)
    points = centres[labels] + spread * rng.standard_normal((num_items, dim), dtype=np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points, labels.astype(np.int64)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def method_call(method: str, embeddings: np.ndarray, labels: np.ndarray):
    """A zero-argument function running `method` once; it returns metrics or None."""
    import torch

    queries, classes = torch.from_numpy(embeddings), torch.from_numpy(labels)
    if method == RETRIEVAL_METRICS:
        from sdm.metrics import retrieval_metrics

        return lambda: retrieval_metrics(queries, classes)
    if method == ACCURACY_CALCULATOR:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=METRIC_NAMES, k="max_bin_count")
        return lambda: calculator.get_accuracy(queries, classes)

    from sdm.metrics import BLOCK_MEMORY_BYTES, auto_block_size

    block = auto_block_size(len(embeddings), embeddings.itemsize, BLOCK_MEMORY_BYTES)
    k = int(np.bincount(labels).max())  # max R + 1 for the query itself

    def products(select_top_k: bool) -> None:
        for start in range(0, len(embeddings), block):
            keys = torch.from_numpy(np.matmul(embeddings[start : start + block], embeddings.T))
            if select_top_k:
                torch.topk(keys, k, dim=1, largest=True)

    return lambda: products(select_top_k=method == PRODUCTS_TOPK)


def run_worker(method: str, data_file: str, repeats: int) -> None:
    """Time `method` on the saved data; print one JSON line with seconds, memory, metrics."""
    data = np.load(data_file)
    embeddings, labels = data["embeddings"], data["labels"]
    call = method_call(method, embeddings, labels)
    rss_before = current_rss_mb()
    best_wall = best_cpu = float("inf")
    metrics = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = call()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    report = {
        "wall_s": best_wall,
        "cpu_s": best_cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "metrics": metrics,
    }
    print(json.dumps(report))


def measure(method: str, data_file: Path, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", method, str(data_file), str(repeats)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def describe_machine() -> str:
    try:
        import faiss
    except ImportError:
        sys.exit("this benchmark compares with pytorch-metric-learning's faiss kNN: "
                 "pip install -e '.[search]' first")
    import pytorch_metric_learning
    import torch

    return (
        f"{storage.cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), faiss {faiss.__version__}, pytorch-metric-learning "
        f"{pytorch_metric_learning.__version__}, load average {os.getloadavg()[0]:.1f}"
    )


def print_agreement(results: dict[str, dict]) -> None:
    ours = results[RETRIEVAL_METRICS]["metrics"]
    shown = "  ".join(f"{name}={ours[name]:.6f}" for name in METRIC_NAMES)
    if ACCURACY_CALCULATOR not in results:
        print(f"    metrics: {shown}")
        return
    theirs = results[ACCURACY_CALCULATOR]["metrics"]
    largest = max(abs(ours[name] - theirs[name]) for name in METRIC_NAMES)
    print(f"    metrics: {shown}; max |retrieval_metrics - AccuracyCalculator| = {largest:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat; SOP size: ours only")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "DATA", "REPEATS"), help="internal")
    arguments = parser.parse_args()
    if arguments.worker:
        method, data_file, repeats = arguments.worker
        run_worker(method, data_file, int(repeats))
        return

    print(describe_machine())
    header = (
        f"{'setting':<28} {'method':<22} {'wall s':>7} {'cpu s':>7} {'wall vs AC':>10} "
        f"{'RSS before MB':>13} {'peak RSS MB':>11}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for setting in make_settings(arguments.quick):
            embeddings, labels = clustered_embeddings(
                setting.num_items, setting.dim, setting.class_sizes
            )
            data_file = Path(folder) / "data.npz"
            np.savez(data_file, embeddings=embeddings, labels=labels)
            counts = np.bincount(labels)
            title = f"{setting.name} N={setting.num_items} d={setting.dim}"
            print(f"\n{title}: {len(counts)} classes, max R = {counts.max() - 1}")
            print(header)
            results = {m: measure(m, data_file, setting.repeats) for m in setting.methods}
            reference = results.get(ACCURACY_CALCULATOR, {}).get("wall_s")
            for method, result in results.items():
                ratio = f"{result['wall_s'] / reference:.2f}x" if reference else "-"
                print(
                    f"{title:<28} {method:<22} {result['wall_s']:>7.2f} {result['cpu_s']:>7.2f} "
                    f"{ratio:>10} {result['rss_before_mb']:>13.0f} {result['peak_rss_mb']:>11.0f}"
                )
            print_agreement(results)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
