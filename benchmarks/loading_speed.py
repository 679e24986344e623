"""Images per second through the train pipeline, from original JPEGs and from the resized cache.

By default it times ~200 generated 500x375 JPEGs (CUB-like sizes); with --dataset it times
the first --limit images of a dataset on disk. The cache is built in a temporary folder, so
nothing is written next to the user's data. The settings take turns for --repeats passes
after a warm-up pass each; the best pass of each is shown.

    PYTHONPATH=src python benchmarks/loading_speed.py
    PYTHONPATH=src python benchmarks/loading_speed.py --dataset cub200 --dataset-root data
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from sdm.constants import BNINCEPTION_INPUT, DATASET_NAMES, DEFAULT_DATASET_ROOT
from sdm.data.cache import build_resized_cache
from sdm.data.datasets import FileImageDataset, load_dataset
from sdm.data.transforms import build_transform


def generate_jpegs(folder: Path, count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """Write `count` noisy JPEGs of `size` (width, height) into 10 class folders."""
    rng = np.random.default_rng(0)
    width, height = size
    for index in range(count):
        base = rng.integers(0, 256, (height // 25, width // 25, 3), dtype=np.uint8)
        smooth = np.kron(base, np.ones((25, 25, 1), dtype=np.uint8))
        noise = rng.integers(0, 20, smooth.shape, dtype=np.uint8)
        path = folder / f"class_{index % 10}" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth + noise).save(path, quality=90)
    return folder


def seconds_per_pass(loader: DataLoader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def best_images_per_second(loaders: dict[str, DataLoader], repeats: int) -> dict[str, float]:
    """Images/s of each loader: best of `repeats` passes, the loaders taking turns.

    Taking turns and keeping the best pass makes the comparison fair on a machine whose load
    changes while it runs. One untimed pass each first warms up files and workers.
    """
    for loader in loaders.values():
        seconds_per_pass(loader)
    best = dict.fromkeys(loaders, float("inf"))
    for _ in range(repeats):
        for name, loader in loaders.items():
            best[name] = min(best[name], seconds_per_pass(loader))
    return {name: len(loaders[name].dataset) / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="time a dataset on disk")
    parser.add_argument("--dataset-root", default=DEFAULT_DATASET_ROOT)
    parser.add_argument("--path", help="folder or CSV for --dataset folder/csv")
    parser.add_argument("--limit", type=int, default=200, help="images to time (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (best is shown)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sdm-loading-") as scratch:
        scratch = Path(scratch)
        if args.dataset is None:
            source = load_dataset("folder", path=generate_jpegs(scratch / "images", args.limit))
            described = f"{len(source)} generated 500x375 JPEGs"
        else:
            source = load_dataset(
                args.dataset, args.dataset_root, args.path, allow_partial=True, use_cache=False
            )
            if not isinstance(source, FileImageDataset):
                parser.error(f"{args.dataset} is held in memory; there is nothing to cache")
            described = f"the first {min(args.limit, len(source))} images of {args.dataset}"
        files = FileImageDataset(
            source.paths[: args.limit],
            source.labels[: args.limit],
            source.name,
            source_root=source.source_root,
        )
        start = time.perf_counter()
        build_resized_cache(files, scratch / "cache", workers=2)
        build_seconds = time.perf_counter() - start
        cached = FileImageDataset(
            files.paths,
            files.labels,
            files.name,
            cache_dir=scratch / "cache",
            source_root=files.source_root,
        )
        assert cached.uses_cache

        transform = build_transform(BNINCEPTION_INPUT, train=True)
        print(f"{described}; train transform ({BNINCEPTION_INPUT}), batch {args.batch_size}")
        print(f"cache build: {build_seconds:.1f} s ({len(files) / build_seconds:.0f} images/s)")
        loaders = {
            (label, workers): DataLoader(
                dataset.with_transform(transform),
                batch_size=args.batch_size,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            for workers in (0, 2)
            for label, dataset in (("originals", files), ("cache", cached))
        }
        speeds = best_images_per_second(loaders, args.repeats)
        print(f"{'images from':<12} {'workers':>7} {'images/s':>9}")
        for (label, workers), speed in speeds.items():
            print(f"{label:<12} {workers:>7} {speed:>9.0f}")


if __name__ == "__main__":
    main()
