"""A picture of search results: one row per query, the query first (titled with its class, or
its file name), then its neighbours titled with their score and class; when both sides have
classes, hits are framed green and misses red, otherwise grey."""

from __future__ import annotations

from pathlib import Path

from sdm import records
from sdm.data.base import ImageDataset
from sdm.inference.retrieval import QueryResult

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
    return records.save_figure(figure, path, dpi=100)
