"""The one picture of retrieval results: one row per query, the query first (titled with its
class, or its file name), then its neighbours titled with their score and class; when both
sides have classes, hits are framed green and misses red, otherwise grey. ``sdm search`` draws
its results with it, ``sdm evaluate`` / ``sdm report --retrieval-picture`` an experiment's
test classes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sdm import constants as C
from sdm import storage
from sdm.data.base import ImageDataset
from sdm.inference.retrieval import Neighbour, QueryResult
from sdm.inference.sources import item_names

if TYPE_CHECKING:
    from sdm.engine.experiment import ExperimentFolder

MAX_PICTURE_QUERIES = 16  # rows drawn at most; later queries are left out of the picture
NAME_CHARACTERS = 14


def draw_search_picture(results: list[QueryResult], queries: ImageDataset,
                        gallery: ImageDataset, path: str | Path) -> Path:
    """Draws the first ``MAX_PICTURE_QUERIES`` results (query images from ``queries``,
    neighbours from ``gallery`` by row) into the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = results[:MAX_PICTURE_QUERIES]
    columns = 1 + max((len(r.neighbours) for r in shown), default=0)
    figure, axes = plt.subplots(len(shown), columns, squeeze=False,
                                figsize=(1.6 * columns, 1.8 * len(shown)))
    for row, result in enumerate(shown):
        caption = result.class_name or Path(result.query).name
        cells = [(queries.load_image(result.index), "query", "blue", caption)]
        for neighbour in result.neighbours:
            known = result.class_name is not None and neighbour.class_name is not None
            hit = known and neighbour.class_name == result.class_name
            colour = ("green" if hit else "red") if known else "gray"
            cells.append((gallery.load_image(neighbour.row), f"{neighbour.score:.3f}", colour,
                          neighbour.class_name))
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(cells):
                axis.axis("off")
                continue
            image, title, colour, class_name = cells[column]
            axis.imshow(image, cmap="gray" if image.mode == "L" else None)
            if class_name:
                title += f"\n{class_name[:NAME_CHARACTERS]}"
            axis.set_title(title, fontsize=7, color=colour)
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    figure.tight_layout()
    return storage.save_figure(figure, path, dpi=100)


def draw_test_set_picture(experiment: ExperimentFolder, path: str | Path,
                          num_queries: int = 6, k: int = 5) -> Path:
    """``num_queries`` random test items of ``experiment`` (drawn with its
    ``training.seed``), each with its ``k`` nearest other test items under the best model of
    its first trained fold, as ``retrieval_metrics`` ranks them; scores are cosine
    similarities. Drawn into the PNG file ``path``."""
    from sdm.engine import build
    from sdm.engine.embeddings import evaluation_embeddings
    from sdm.metrics import nearest_neighbours

    config = experiment.config
    fold = experiment.trained_folds(config.training.folds)[0]
    model = build.load_checkpoint_model(config, experiment.checkpoint(fold, C.BEST_CHECKPOINT))
    test_set = build.test_dataset(config, *experiment.data())
    device = build.resolve_device(config.training.device)
    embeddings, _ = evaluation_embeddings(model.to(device), test_set, device=device,
                                          batch_size=config.training.eval_batch_size)
    generator = torch.Generator().manual_seed(config.training.seed)
    queries = torch.randperm(len(test_set), generator=generator)[:num_queries].tolist()
    neighbours = nearest_neighbours(embeddings, queries, k)
    names = item_names(test_set)

    def described(item: int) -> tuple[int, str]:
        label = int(test_set.labels[item])
        return label, test_set.class_names.get(label, str(label))

    results = []
    for index, query in enumerate(queries):
        found = [Neighbour(rank, row, names[row], *described(row),
                           float(embeddings[query] @ embeddings[row]))
                 for rank, row in enumerate(neighbours[index].tolist(), start=1)]
        results.append(QueryResult(query, names[query], *described(query), found))
    return draw_search_picture(results, test_set, test_set, path)
