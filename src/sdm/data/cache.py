"""Optional cache of images resized once so their shorter side is `size` pixels (default 256).

Resize(256) is the first step of both the train and the eval pipelines, so reading the
resized copy instead of the full-size image gives the same tensors up to JPEG re-encoding:
copies are JPEG quality 95 without chroma subsampling (mean pixel error ~2 of 255 on noisy
images). Measured on 500x375 JPEGs, such a copy decodes ~3x faster than the original plus
its resize; a lossless PNG copy decoded no faster than the original, so it would not help.

Layout: ``<dataset_root>/resized<size>/<dataset name>/<path relative to the source root>.jpg``
(``resized256`` for the default size) plus ``manifest.json``, which records the resize size
and, per source file, its size in bytes and modification time (ns). The manifest is written
last: a cache without one is incomplete. A cache is used only when its manifest matches every
source file of the dataset; otherwise it is ignored with a warning, so a stale cache can never
yield wrong images.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from torchvision.transforms import functional as TF
from tqdm import tqdm

from sdm.constants import RESIZE, RESIZED_CACHE_FOLDER
from sdm.data.images import read_rgb_image
from sdm.storage import atomic_write, write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
CACHED_SUFFIX = ".jpg"
CACHED_FORMAT = "jpeg-q95-444"
JPEG_QUALITY = 95


def resized_cache_dir(dataset_root: str | Path, dataset_name: str, size: int = RESIZE) -> Path:
    """The cache of `dataset_name` at shorter side `size`: <dataset_root>/resized<size>/<name>."""
    return Path(dataset_root) / RESIZED_CACHE_FOLDER.format(size=size) / dataset_name


def build_resized_cache(
    paths: Sequence[Path],
    source_root: Path,
    cache_dir: str | Path,
    size: int = RESIZE,
    workers: int = 2,
    read: Callable[[Path], Image.Image] = read_rgb_image,
) -> Path:
    """Resize the images at `paths` (shorter side to `size` pixels) into `cache_dir`.

    Each copy is stored under its path relative to `source_root` (which must hold all of
    `paths`); `read` decodes a source file into RGB (its errors propagate and leave the cache
    without a manifest, so unusable). Uses `workers` threads. Replaces any previous cache
    content for the same files and returns the path of the manifest, which is written last.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)
    keys = [relative_key(path, source_root) for path in paths]

    def build_one(index: int) -> list[int]:
        signature = file_signature(paths[index])
        image = TF.resize(read(paths[index]), size)
        atomic_write(
            cached_path(cache_dir, keys[index]),
            lambda stream, image=image: image.save(
                stream, format="JPEG", quality=JPEG_QUALITY, subsampling=0),
        )
        return signature

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = pool.map(build_one, range(len(keys)))
        signatures = list(tqdm(jobs, total=len(keys), desc=f"resizing into {cache_dir}"))
    manifest = {
        "version": MANIFEST_VERSION,
        "size": size,
        "format": CACHED_FORMAT,
        "files": dict(zip(keys, signatures, strict=True)),
    }
    write_text(manifest_path, json.dumps(manifest, indent=0, sort_keys=True))
    return manifest_path


def cached_image_paths(
    paths: Sequence[Path], source_root: Path, cache_dir: str | Path, size: int = RESIZE
) -> list[Path] | None:
    """Cached copies of `paths`, or None when `cache_dir` holds no valid cache for all of them.

    No folder at `cache_dir` means no cache (silently). A folder with a missing, partial or
    stale manifest is ignored with a warning that says what is wrong.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return None
    try:
        return _checked_cached_paths(paths, source_root, cache_dir, size)
    except _InvalidCache as problem:
        warnings.warn(
            f"ignoring the resized-image cache at {cache_dir}: {problem}; reading the original "
            f"images instead (rebuild it with `sdm data cache <dataset name> --size {size}`)",
            stacklevel=2,
        )
        return None


def relative_key(path: Path, source_root: Path) -> str:
    """The manifest key of a source image: its path relative to `source_root`, with '/'."""
    return Path(path).relative_to(source_root).as_posix()


def cached_path(cache_dir: Path, key: str) -> Path:
    """Where the resized copy of the source image with manifest key `key` is stored."""
    return cache_dir / (key + CACHED_SUFFIX)


def file_signature(path: Path) -> list[int]:
    """[size in bytes, modification time in ns] of a file: what the manifest records."""
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


class _InvalidCache(Exception):
    """The cache cannot be used; the message says why."""


def _checked_cached_paths(
    paths: Sequence[Path], source_root: Path, cache_dir: Path, size: int
) -> list[Path]:
    manifest_path = cache_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _InvalidCache(f"it has no {MANIFEST_NAME} (its build did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded = manifest["files"]
        settings = (manifest["version"], manifest["size"], manifest["format"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _InvalidCache(f"its manifest {manifest_path} is unreadable ({error})") from None
    expected = (MANIFEST_VERSION, size, CACHED_FORMAT)
    if settings != expected:
        raise _InvalidCache(f"it was built with (version, size, format) {settings}, not {expected}")

    result = []
    for path in paths:
        try:
            key = relative_key(path, source_root)
        except ValueError:
            raise _InvalidCache(f"{path} is outside the cached folder {source_root}") from None
        if recorded.get(key) != _signature_or_none(path):
            raise _InvalidCache(f"{path} is not in it or has changed since it was built")
        target = cached_path(cache_dir, key)
        if not target.is_file():
            raise _InvalidCache(f"the resized copy {target} is missing")
        result.append(target)
    return result


def _signature_or_none(path: Path) -> list[int] | None:
    try:
        return file_signature(path)
    except OSError:
        return None
