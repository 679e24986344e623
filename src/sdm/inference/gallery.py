"""An embeddings folder (``sdm embed``'s output): the gallery that ``sdm index`` and
``sdm search`` work on.

Files in the folder, each written atomically:

- ``embeddings.npy``: float32 (N, D), L2-normalized, row i for item i;
- ``items.csv``: ``row, path, label, class_name`` per item (label and class name empty when
  the images had no classes; path is ``<dataset>[<index>]`` for in-memory datasets);
- ``gallery.json``: the identity of the model that made the embeddings, how to load the
  images again, N, D and the SHA-256 of ``embeddings.npy``. Written last (and removed first
  when the folder is rewritten), so a folder without it is incomplete.
- ``index.faiss`` and ``index.json``, added by ``sdm index`` (``sdm.inference.index``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdm import storage
from sdm.constants import EMBEDDINGS_FILE, GALLERY_FILE, ITEMS_FILE
from sdm.inference.embedding import embed
from sdm.inference.errors import InferenceError
from sdm.inference.identity import sha256_file
from sdm.inference.loading import load_model
from sdm.inference.sources import ImageSource, load_experiment_images, load_images

# Names inside an embeddings folder (candidates for sdm.constants).


@dataclass(frozen=True)
class Gallery:
    """A complete embeddings folder: ``record`` is its ``gallery.json``."""

    folder: Path
    record: dict[str, Any]

    @property
    def identity(self) -> dict[str, Any]:
        """The identity of the model that made the embeddings."""
        return self.record["model"]

    @property
    def size(self) -> int:
        return int(self.record["rows"])

    def embeddings(self) -> np.ndarray:
        """float32 (N, D), memory-mapped read-only."""
        return np.load(self.folder / EMBEDDINGS_FILE, mmap_mode="r")

    def items(self) -> list[dict[str, str]]:
        """The rows of ``items.csv`` (strings; label and class_name empty when unknown)."""
        return storage.read_csv(self.folder / ITEMS_FILE)

    def images(self) -> ImageSource:
        """The gallery's images, loaded again from where ``sdm embed`` found them."""
        if not self.record["images"]:
            raise InferenceError(f"the images embedded in {self.folder} were given in memory: "
                                 "they cannot be loaded again")
        source = load_images(**self.record["images"])
        if len(source.names) != self.size:
            raise InferenceError(
                f"the gallery's images changed since `sdm embed`: {len(source.names)} now, "
                f"{self.size} embedded in {self.folder}; embed them again")
        return source


def write_gallery(folder: str | Path, embeddings: np.ndarray, source: ImageSource,
                  identity: dict[str, Any]) -> Gallery:
    """Writes ``embeddings`` (aligned with ``source``) and their records into ``folder``."""
    folder = Path(folder)
    if embeddings.shape[0] != len(source.names):
        raise ValueError(f"{embeddings.shape[0]} embeddings for {len(source.names)} images")
    (folder / GALLERY_FILE).unlink(missing_ok=True)
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    storage.atomic_write(folder / EMBEDDINGS_FILE, lambda stream: np.save(stream, array))
    rows = []
    for row, name in enumerate(source.names):
        label, class_name = source.label_of(row)
        rows.append({"row": row, "path": name, "label": "" if label is None else label,
                     "class_name": class_name or ""})
    storage.write_csv(folder / ITEMS_FILE, rows)
    record = {"model": identity, "images": source.spec, "labelled": source.labelled,
              "rows": int(array.shape[0]), "dim": int(array.shape[1]),
              "embeddings_sha256": sha256_file(folder / EMBEDDINGS_FILE)}
    storage.write_json(folder / GALLERY_FILE, record)
    return Gallery(folder, record)


def read_gallery(folder: str | Path) -> Gallery:
    """The embeddings folder ``folder``; InferenceError when it is not a complete one."""
    folder = Path(folder)
    if not (folder / GALLERY_FILE).is_file():
        raise InferenceError(
            f"{folder} is not a complete embeddings folder: no {GALLERY_FILE} (written last by "
            "`sdm embed EXPERIMENT_DIR IMAGES --out DIR`; run it, or rerun it if it was "
            "interrupted)")
    gallery = Gallery(folder, storage.read_json(folder / GALLERY_FILE))
    shape = gallery.embeddings().shape
    if shape != (gallery.size, gallery.record["dim"]):
        raise InferenceError(
            f"{folder / EMBEDDINGS_FILE} has shape {shape}, but {GALLERY_FILE} records "
            f"({gallery.size}, {gallery.record['dim']}); embed the images again")
    return gallery


def embed_folder(
    experiment_dir: str | Path, images: str | Path | list[str | Path], out: str | Path, *,
    fold: int | None = None, concatenated: bool = False, dataset_root: str | Path | None = None,
    device: str | None = None, batch_size: int | None = None, num_workers: int | None = None,
    progress: bool = True,
) -> Gallery:
    """``sdm embed``: embeds ``images`` with the experiment's model (see ``load_model`` for
    ``fold`` / ``concatenated`` / ``device``) and writes the embeddings folder ``out``.

    Dataset names are found below ``dataset_root`` (default: the experiment's
    ``dataset.root``); ``batch_size`` and ``num_workers`` default to the experiment's
    ``training.eval_batch_size`` and ``training.num_workers``.
    """
    model, _ = load_model(experiment_dir, fold, concatenated=concatenated, device=device)
    config = model.config
    source = load_experiment_images(images, config, dataset_root)
    embeddings = embed(
        model, source, progress=progress,
        batch_size=batch_size or config.training.eval_batch_size,
        num_workers=config.training.num_workers if num_workers is None else num_workers)
    return write_gallery(out, embeddings, source, model.identity)
