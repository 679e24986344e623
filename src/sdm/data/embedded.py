"""The embedded sets: image arrays in one .npz archive below the dataset root, made once by a
builder (`sdm data glyphs`, `sdm data icons`; see sdm.builders) and read here.

An archive holds images uint8 (N, H, W) or (N, H, W, 3), labels int64 (N,) and class_names (C,),
class id = position; other arrays in it (font_ids, theme_ids) index the manifest beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdm.constants import GLYPHS, GLYPHS_ARCHIVE, ICONS, ICONS_ARCHIVE


@dataclass(frozen=True)
class EmbeddedSet:
    """Where a set's archive lies below the dataset root, what to call it, and how to build it
    (`{dataset_root}` stands for the root searched)."""

    archive: str
    noun: str
    how_to_build: str


EMBEDDED_SETS = {
    GLYPHS: EmbeddedSet(
        GLYPHS_ARCHIVE,
        "glyph",
        "`sdm data glyphs --dataset-root {dataset_root}` (or `make demo`)",
    ),
    ICONS: EmbeddedSet(
        ICONS_ARCHIVE,
        "icon",
        "`sdm data icons --dataset-root {dataset_root}` after installing the icon themes "
        "(as root on Debian: `bash scripts/install_icons.sh`)",
    ),
}


def load_embedded_arrays(
    name: str, dataset_root: str | os.PathLike[str] = "data"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 (N, H, W) or (N, H, W, 3), labels int64 (N,) and class names of the built
    embedded set `name` (a key of EMBEDDED_SETS). Raises FileNotFoundError, saying where it
    looked and how to build it, when the archive is missing; ValueError for another name."""
    if name not in EMBEDDED_SETS:
        raise ValueError(f"no embedded set {name!r}; expected one of {', '.join(EMBEDDED_SETS)}")
    embedded = EMBEDDED_SETS[name]
    archive = Path(dataset_root) / embedded.archive
    if not archive.is_file():
        raise FileNotFoundError(
            f"{embedded.noun} dataset not found at {archive}; build it with "
            + embedded.how_to_build.format(dataset_root=dataset_root)
        )
    with np.load(archive, allow_pickle=False) as arrays:
        return (
            arrays["images"].astype(np.uint8, copy=False),
            arrays["labels"].astype(np.int64, copy=False),
            [str(class_name) for class_name in arrays["class_names"]],
        )
