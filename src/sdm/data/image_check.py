"""A cheap check, before training, that every image file of a dataset can be opened.

``PIL.Image.open`` reads only a file's header, so checking tens of thousands of images takes
seconds, while an undecodable image of a class that is never sampled would otherwise go
unnoticed until evaluation (or never). In-memory datasets (glyphs, icons) have no files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from sdm.data.base import FileImageDataset, ImageDataset

BAD_FILES_SHOWN = 5


def image_files(dataset: ImageDataset) -> list[Path]:
    """The files the dataset decodes its images from: the resized cache's copies when it is
    in use, else the originals; none for an in-memory dataset."""
    if not isinstance(dataset, FileImageDataset):
        return []
    return list(dataset.cached_paths if dataset.cached_paths is not None else dataset.paths)


def unreadable_images(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """``(path, reason)`` for each of ``paths`` whose header PIL cannot read, in order."""
    bad = []
    for path in paths:
        try:
            with Image.open(path):
                pass
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            bad.append((Path(path), f"{type(error).__name__}: {error}"))
    return bad


def describe_unreadable(bad: list[tuple[Path, str]], checked: int, skip_hint: str) -> str:
    """A message naming the count, the first ``BAD_FILES_SHOWN`` files and how to skip."""
    shown = "\n".join(f"  {path} ({reason})" for path, reason in bad[:BAD_FILES_SHOWN])
    more = f"\n  ... and {len(bad) - BAD_FILES_SHOWN} more" if len(bad) > BAD_FILES_SHOWN else ""
    return (f"{len(bad)} of the {checked} image files cannot be opened as images:\n"
            f"{shown}{more}\nReplace or remove them (`sdm data check <dataset> "
            f"--verify-images` decodes every image), or skip this check with {skip_hint}")
