"""``sdm search``: the nearest gallery items of query images, with the gallery's own model.

``GallerySearch.open(folder)`` checks everything before any query is embedded: the folder is a
complete gallery, its index was built from its embeddings, and the experiment's model today is
the one that embedded the gallery (same checkpoints, transform and input shape). Queries then
go through that model; each one must come out of the eval transform at its input shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdm import storage
from sdm.inference.embedding import Images, embed
from sdm.inference.errors import InferenceError
from sdm.inference.gallery import Gallery, read_gallery
from sdm.inference.identity import identity_differences
from sdm.inference.index import open_index, search_index
from sdm.inference.loading import InferenceModel, load_model
from sdm.inference.sources import ImageSource, load_experiment_images

if TYPE_CHECKING:
    import faiss


@dataclass(frozen=True)
class Neighbour:
    """A gallery item found for a query: its rank (1 = nearest), row, path, label and class
    name (None when unknown) and score (inner product of unit vectors = cosine similarity)."""

    rank: int
    row: int
    path: str
    label: int | None
    class_name: str | None
    score: float


@dataclass(frozen=True)
class QueryResult:
    """One query (its index among the queries, path, label, class name) and its neighbours."""

    index: int
    query: str
    label: int | None
    class_name: str | None
    neighbours: list[Neighbour]


@dataclass
class GallerySearch:
    """A gallery with its index and the model that embedded it, ready for queries."""

    gallery: Gallery
    index: faiss.Index
    index_info: dict[str, Any]
    model: InferenceModel

    @classmethod
    def open(cls, folder: str | Path, experiment_dir: str | Path | None = None,
             device: str | None = None) -> GallerySearch:
        """The gallery in ``folder``; the model comes from ``experiment_dir`` (default: where
        the gallery's experiment was when it was embedded). InferenceError when the index or
        the model is not the gallery's."""
        gallery = read_gallery(folder)
        index, info = open_index(gallery)
        recorded = gallery.identity
        if experiment_dir is None and not Path(recorded["experiment"]).is_dir():
            raise InferenceError(
                f"the experiment that embedded {gallery.folder}, {recorded['experiment']}, is no "
                "longer there; pass --experiment (experiment_dir) to say where it is now")
        model, _ = load_model(experiment_dir or recorded["experiment"],
                              None if recorded["concatenated"] else recorded["folds"][0],
                              concatenated=recorded["concatenated"], device=device)
        differences = identity_differences(recorded, model.identity)
        if differences:
            raise InferenceError(
                f"the gallery in {gallery.folder} was embedded by another model than "
                f"{model.identity['experiment']} gives now ({'; '.join(differences)}); "
                f"embed the gallery again with `sdm embed` and rebuild its index")
        return cls(gallery, index, info, model)

    def load_queries(self, queries: Images) -> ImageSource:
        """Query images in any form ``load_images`` accepts, with the experiment's options."""
        return load_experiment_images(queries, self.model.config)  # type: ignore[arg-type]

    def search(self, queries: Images, k: int = 10, *, batch_size: int | None = None,
               progress: bool = False) -> list[QueryResult]:
        """The ``k`` nearest gallery items of every query (an ImageSource, or anything
        ``load_queries`` takes), best first."""
        if not isinstance(queries, ImageSource):
            queries = self.load_queries(queries)
        config = self.model.config
        vectors = embed(self.model, queries, progress=progress,
                        batch_size=batch_size or config.training.eval_batch_size)
        scores, rows = search_index(self.index, vectors, k)
        items = self.gallery.items()
        results = []
        for q, name in enumerate(queries.names):
            label, class_name = queries.label_of(q)
            found = [_neighbour(rank, items[row], float(score))
                     for rank, (row, score) in enumerate(zip(rows[q], scores[q], strict=True),
                                                         start=1) if row >= 0]
            results.append(QueryResult(q, name, label, class_name, found))
        return results


def write_search_results(path: str | Path, results: list[QueryResult]) -> Path:
    """The results as JSON (a list of queries with their neighbours), atomically."""
    storage.write_json(path, [asdict(result) for result in results])
    return Path(path)


def format_results(results: list[QueryResult]) -> str:
    """The results as text: each query, then one line per neighbour (rank, score, path)."""
    lines = []
    for result in results:
        lines.append(f"query {result.query}" + _class(result.class_name))
        lines += [f"  {n.rank:3d}. {n.score:.4f}  {n.path}{_class(n.class_name)}"
                  for n in result.neighbours]
    return "\n".join(lines)


def _neighbour(rank: int, item: dict[str, str], score: float) -> Neighbour:
    return Neighbour(rank, int(item["row"]), item["path"],
                     int(item["label"]) if item["label"] else None,
                     item["class_name"] or None, score)


def _class(name: str | None) -> str:
    return f"  ({name})" if name else ""
