"""faiss indexes over a gallery's embeddings, by inner product (= cosine: rows are unit length).

Kinds (``INDEX_KINDS``):

- ``flat``: exact search (``IndexFlatIP``), the default; every query is compared with every
  item.
- ``hnsw``: a graph (``IndexHNSWFlat``): ``m`` links per item, ``ef_construction`` candidates
  while building, ``ef_search`` while searching (higher: better recall, slower).
- ``ivf``: inverted lists (``IndexIVFFlat``): k-means into ``nlist`` cells (default sqrt(N),
  at most N/39 so that each cell has the 39 training points faiss asks for), each query looks
  in its ``nprobe`` nearest cells.

The defaults (hnsw m 16, ef_search 64; ivf nprobe 32) found 99.6% and 95% of the exact top 10
of clustered synthetic 128-d unit vectors at N = 10^5 (benchmarks/inference_speed.py).

``write_index`` stores ``index.faiss`` with ``index.json`` beside it (kind, parameters, and
the SHA-256 of the embeddings it was built from, written last); ``open_index`` refuses an
index that was not built from the gallery's embeddings as they are now.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from sdm import storage
from sdm.constants import INDEX_FILE, INDEX_INFO_FILE
from sdm.inference.errors import InferenceError
from sdm.inference.gallery import Gallery
from sdm.inference.options import FLAT, HNSW, INDEX_KINDS, INDEX_PARAMETERS, IVF

if TYPE_CHECKING:
    import faiss

IVF_MIN_POINTS_PER_CELL = 39  # faiss warns below this many training points per centroid


def faiss_module() -> Any:
    """The faiss module: an optional dependency (the ``search`` extra), imported on first use;
    InferenceError saying how to install it when it is missing."""
    try:
        import faiss
    except ImportError:
        raise InferenceError(
            "sdm index and sdm search need faiss, an optional dependency: "
            "pip install 'sdm-metric-learning[search]' (or pip install faiss-cpu)") from None
    return faiss


def index_parameters(kind: str, size: int, **given: int | None) -> dict[str, int]:
    """The parameters of a ``kind`` index over ``size`` items: ``given`` ones (None = unset)
    over the defaults. InferenceError for an unknown kind, a parameter of another kind or a
    value below 1."""
    if kind not in INDEX_KINDS:
        raise InferenceError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    given = {name: value for name, value in given.items() if value is not None}
    foreign = sorted(set(given) - set(INDEX_PARAMETERS[kind]))
    if foreign:
        raise InferenceError(
            f"{', '.join(foreign)} do(es) not apply to a {kind} index; its parameters: "
            f"{', '.join(INDEX_PARAMETERS[kind]) or 'none'}")
    small = {name: value for name, value in given.items() if value < 1}
    if small:
        raise InferenceError(f"index parameters must be at least 1, got {small}")
    parameters = {**INDEX_PARAMETERS[kind], **given}
    if kind == IVF and parameters["nlist"] is None:
        parameters["nlist"] = max(1, min(round(math.sqrt(size)),
                                         size // IVF_MIN_POINTS_PER_CELL))
    if kind == IVF and parameters["nlist"] > size:
        raise InferenceError(f"nlist {parameters['nlist']} exceeds the {size} items to index")
    return parameters  # type: ignore[return-value]


def build_index(embeddings: np.ndarray, kind: str = FLAT, **parameters: int) -> faiss.Index:
    """A ``kind`` index holding ``embeddings`` (float32 (N, D), unit rows), with the
    parameters of ``index_parameters``; id i is row i."""
    faiss = faiss_module()
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    size, dim = vectors.shape
    parameters = index_parameters(kind, size, **parameters)
    if kind == FLAT:
        index = faiss.IndexFlatIP(dim)
    elif kind == HNSW:
        index = faiss.IndexHNSWFlat(dim, parameters["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = parameters["ef_construction"]
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, parameters["nlist"],
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    index.add(vectors)
    apply_search_parameters(index, kind, parameters)
    return index


def apply_search_parameters(index: faiss.Index, kind: str, parameters: dict[str, int]) -> None:
    """Sets the search-time parameters (``ef_search``, ``nprobe``), which faiss's files do not
    keep."""
    faiss = faiss_module()
    if kind == HNSW:
        faiss.downcast_index(index).hnsw.efSearch = parameters["ef_search"]
    elif kind == IVF:
        faiss.downcast_index(index).nprobe = parameters["nprobe"]


def write_index(gallery: Gallery, kind: str = FLAT, **parameters: int | None) -> dict[str, Any]:
    """``sdm index``: builds a ``kind`` index over the gallery's embeddings and writes it into
    the gallery's folder; returns what ``index.json`` records."""
    faiss = faiss_module()
    embeddings = np.asarray(gallery.embeddings())
    chosen = index_parameters(kind, len(embeddings), **parameters)
    index = build_index(embeddings, kind, **chosen)
    info = {"kind": kind, "parameters": chosen, "size": int(index.ntotal),
            "dim": int(index.d), "embeddings_sha256": gallery.record["embeddings_sha256"],
            "model": gallery.identity, "faiss": faiss.__version__}
    (gallery.folder / INDEX_INFO_FILE).unlink(missing_ok=True)
    storage.atomic_write(gallery.folder / INDEX_FILE,
                         lambda stream: faiss.write_index(index, faiss.PyCallbackIOWriter(
                             stream.write)))
    storage.write_json(gallery.folder / INDEX_INFO_FILE, info)
    return info


def open_index(gallery: Gallery) -> tuple[faiss.Index, dict[str, Any]]:
    """(the gallery's index ready to search, its ``index.json``).

    InferenceError when there is none, or when it was built from other embeddings than the
    gallery's (by another model, or before the images were embedded again).
    """
    faiss = faiss_module()
    info_path = gallery.folder / INDEX_INFO_FILE
    if not info_path.is_file() or not (gallery.folder / INDEX_FILE).is_file():
        raise InferenceError(
            f"no index in {gallery.folder}: build one with `sdm index {gallery.folder}`")
    info = storage.read_json(info_path)
    if info["embeddings_sha256"] != gallery.record["embeddings_sha256"]:
        raise InferenceError(
            f"the index in {gallery.folder} was built from other embeddings (model "
            f"{_describe(info['model'])}) than the gallery's (model "
            f"{_describe(gallery.identity)}); rebuild it: `sdm index {gallery.folder}`")
    index = faiss.read_index(str(gallery.folder / INDEX_FILE))
    apply_search_parameters(index, info["kind"], info["parameters"])
    return index, info


def search_index(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each (Q, min(k, N)): the nearest gallery rows by inner product, best
    first. An approximate index may find fewer than k for a query: its missing places have
    row -1."""
    if k < 1:
        raise InferenceError(f"k must be at least 1, got {k}")
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32),
                                min(k, index.ntotal))
    return scores, rows


def _describe(identity: dict[str, Any]) -> str:
    what = "concatenated folds" if identity["concatenated"] else "fold"
    folds = ", ".join(map(str, identity["folds"]))
    return f"{identity['experiment']} {what} {folds}"
