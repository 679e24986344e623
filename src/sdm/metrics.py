"""Retrieval metrics of the MLRC protocol: Precision@1, R-Precision and MAP@R.

The nearest neighbours are found exactly, by Euclidean distance on the embeddings as
given (normalize them first if the protocol asks for it: MLRC evaluates L2-normalized
embeddings). Queries are processed in blocks against all references, so memory grows
with block size x number of references, never with the square of the number of items.

Ranking and ties:
    Neighbours are ordered by squared distance, computed as ``|x|^2 - 2 <q, x>`` (the
    query's own ``|q|^2`` is the same for every neighbour and left out) in float32, or
    in float64 when the embeddings are float64 (about twice the time). In float32,
    neighbours within rounding error of each other (about 1e-6 in squared distance for
    unit-norm embeddings) may come in either order, as in faiss. Equal computed
    distances are broken by the smaller reference index. Identical reference rows are
    merged before the distance computation, so duplicates always get exactly equal
    distances and fall back to that index order. faiss (behind pytorch-metric-learning's
    AccuracyCalculator) may order exactly tied neighbours differently, so on data with
    ties the two can differ.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sdm.constants import MAP_AT_R, NUM_QUERIES, PRECISION_AT_1, R_PRECISION

# Working memory allowed for one block of queries (distances, their copies and sort scratch).
BLOCK_MEMORY_BYTES = 256 * 2**20

_INDEX_BYTES = 8  # an int64 neighbour index


def retrieval_metrics(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    reference_embeddings: torch.Tensor | np.ndarray | None = None,
    reference_labels: torch.Tensor | np.ndarray | None = None,
    *,
    block_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """P@1, R-Precision and MAP@R of retrieving each query's class among the references.

    Args:
        embeddings: queries, (N, D) floating point, finite.
        labels: class of each query, (N,) integers.
        reference_embeddings: (M, D) items to retrieve from. When omitted the queries are
            also the references and each query's own item (by index) is excluded.
        reference_labels: (M,) integers; given exactly when reference_embeddings is.
        block_size: queries per block; by default as many as fit in BLOCK_MEMORY_BYTES.
        device: where to compute; by default the device of ``embeddings`` (CPU for numpy).

    Returns:
        ``precision_at_1``, ``r_precision`` and ``mean_average_precision_at_r`` as
        fractions in [0, 1], averaged over the scored queries, and ``num_queries``, how
        many were scored. A query with R other items of its class among the references
        (R = 0 queries are skipped) scores: P@1 = 1 if its nearest neighbour is of its
        class; R-Precision = same-class items among the R nearest / R; MAP@R =
        (1/R) * sum over i <= R of P(i) * rel(i), with P(i) the precision among the i
        nearest and rel(i) = 1 if the i-th nearest is of its class.

    Raises:
        ValueError: on malformed input, or when no query has another item of its class.
    """
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError(
            "pass reference_embeddings and reference_labels together, or neither "
            "(then the queries are their own references)"
        )
    self_retrieval = reference_embeddings is None
    if device is None:
        device = embeddings.device if isinstance(embeddings, torch.Tensor) else "cpu"
    queries = _embeddings_tensor(embeddings, "embeddings", device)
    query_labels = _labels_tensor(labels, "labels", len(queries), device)
    if self_retrieval:
        references, reference_labels_tensor = queries, query_labels
    else:
        references = _embeddings_tensor(reference_embeddings, "reference_embeddings", device)
        reference_labels_tensor = _labels_tensor(
            reference_labels, "reference_labels", len(references), device
        )
        if references.shape[1] != queries.shape[1]:
            raise ValueError(
                f"queries have {queries.shape[1]} dimensions but references have "
                f"{references.shape[1]}; both must come from the same embedding space"
            )
    float64_given = torch.float64 in (queries.dtype, references.dtype)
    compute_dtype = torch.float64 if float64_given else torch.float32
    queries, references = queries.to(compute_dtype), references.to(compute_dtype)

    relevant_counts = _relevant_counts(query_labels, reference_labels_tensor, self_retrieval)
    scored = torch.nonzero(relevant_counts > 0).squeeze(1)
    if len(scored) == 0:
        raise ValueError(
            "no query has another item of its class among the references (R = 0 for all), "
            "so the metrics are undefined; every class needs at least two items "
            "(or one in the reference set when references are separate)"
        )
    if block_size is None:
        block_size = auto_block_size(len(references), references.element_size(), BLOCK_MEMORY_BYTES)
    elif block_size < 1:
        raise ValueError(f"block_size must be a positive number of queries, got {block_size}")

    reference_index = _ReferenceIndex.build(references)
    scores = []
    for start in range(0, len(scored), block_size):
        rows = scored[start : start + block_size]
        keys = reference_index.ranking_keys(queries[rows])
        if self_retrieval:
            keys[torch.arange(len(rows), device=keys.device), rows] = torch.inf
        counts = relevant_counts[rows]
        neighbours = _nearest_neighbours(keys, int(counts.max()))
        scores.append(
            _query_scores(reference_labels_tensor[neighbours], query_labels[rows], counts)
        )

    means = torch.cat(scores).mean(dim=0).tolist()
    return {
        PRECISION_AT_1: means[0],
        R_PRECISION: means[1],
        MAP_AT_R: means[2],
        NUM_QUERIES: len(scored),
    }


def nearest_neighbours(embeddings: torch.Tensor, queries: Sequence[int], k: int) -> torch.Tensor:
    """(len(queries), k) indices of each query item's ``k`` nearest other items of
    ``embeddings`` (N, D) by Euclidean distance, nearest first, equal distances by index:
    the neighbours ``retrieval_metrics`` ranks."""
    rows = torch.as_tensor(list(queries), dtype=torch.long)
    keys = _ReferenceIndex.build(embeddings).ranking_keys(embeddings[rows])
    keys[torch.arange(len(rows)), rows] = torch.inf
    return _nearest_neighbours(keys, k)


def auto_block_size(num_references: int, element_size: int, memory_bytes: int) -> int:
    """Queries per block whose working memory stays within ``memory_bytes`` (at least 1).

    Per query the block holds up to four rows of ``num_references`` distances of
    ``element_size`` bytes (distances, their expansion over duplicate references, and a
    copy and sorted copy for rows tied at the k-th neighbour) plus one row of int64 sort
    indices. 256 MiB gives 184 queries a block at 60,502 float32 references.
    """
    bytes_per_query = num_references * (4 * element_size + _INDEX_BYTES)
    return max(1, memory_bytes // bytes_per_query)


@dataclass(frozen=True)
class _ReferenceIndex:
    """References with identical rows merged, so duplicates get bitwise equal distances."""

    points: torch.Tensor  # (U, D) distinct rows
    squared_norms: torch.Tensor  # (U,)
    item_to_point: torch.Tensor | None  # (M,) row of points per reference; None if U == M

    @classmethod
    def build(cls, references: torch.Tensor) -> "_ReferenceIndex":
        points, item_to_point = torch.unique(references, dim=0, return_inverse=True)
        if len(points) == len(references):
            points, item_to_point = references, None
        return cls(points, (points * points).sum(dim=1), item_to_point)

    def ranking_keys(self, queries: torch.Tensor) -> torch.Tensor:
        """(B, M) squared distances from each query to each reference, minus ``|q|^2``."""
        if queries.device.type == "cpu":
            # numpy's BLAS (OpenBLAS in its wheels) runs this product about twice as fast as
            # torch's MKL on AMD CPUs; on CPU both share the memory, nothing is copied.
            products = torch.from_numpy(np.matmul(queries.numpy(), self.points.numpy().T))
            keys = products.mul_(-2.0).add_(self.squared_norms)
        else:
            keys = torch.addmm(self.squared_norms, queries, self.points.T, alpha=-2.0)
        if self.item_to_point is None:
            return keys
        return keys.index_select(1, self.item_to_point)


def _nearest_neighbours(keys: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) column indices of the k smallest keys per row, by key then by index."""
    fetched = min(k + 1, keys.shape[1])
    values, indices = torch.topk(keys, fetched, dim=1, largest=False, sorted=True)
    # A row without equal keys among the fetched ones is in (key, index) order already.
    tied_rows = torch.nonzero((values[:, 1:] == values[:, :-1]).any(dim=1)).squeeze(1)
    if len(tied_rows) > 0:
        indices[tied_rows] = _order_ties_by_index(
            keys, tied_rows, values[tied_rows], indices[tied_rows], k
        )
    return indices[:, :k]


def _order_ties_by_index(
    keys: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, k: int
) -> torch.Tensor:
    """The fetched (values, indices) of ``keys[rows]`` reordered by key, then by index."""
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = values.argsort(dim=1, stable=True)
    values, indices = values.gather(1, by_value), indices.gather(1, by_value)
    if indices.shape[1] < keys.shape[1]:
        # topk picks an arbitrary subset of the items tied with its last value; where
        # that tie reaches the k-th place, rank the whole row (columns are in index order).
        boundary = torch.nonzero(values[:, k - 1] == values[:, -1]).squeeze(1)
        if len(boundary) > 0:
            full_order = torch.sort(keys[rows[boundary]], dim=1, stable=True).indices
            indices[boundary] = full_order[:, : indices.shape[1]]
    return indices


def _query_scores(
    neighbour_labels: torch.Tensor, query_labels: torch.Tensor, relevant_counts: torch.Tensor
) -> torch.Tensor:
    """(B, 3) float64 P@1, R-Precision and MAP@R of each query of a block.

    Each score reads only a query's first R neighbours, through running sums, so it does
    not depend on how many neighbours the block fetched: results are bitwise the same for
    any block size.
    """
    ranks = torch.arange(1, neighbour_labels.shape[1] + 1, device=neighbour_labels.device)
    hits = (neighbour_labels == query_labels.unsqueeze(1)) & (ranks <= relevant_counts.unsqueeze(1))
    hits = hits.double()
    hits_so_far = hits.cumsum(dim=1)
    precision_sum_so_far = (hits_so_far * hits / ranks).cumsum(dim=1)
    at_r = (relevant_counts - 1).unsqueeze(1)
    r = relevant_counts.double()
    r_precision = hits_so_far.gather(1, at_r).squeeze(1) / r
    map_at_r = precision_sum_so_far.gather(1, at_r).squeeze(1) / r
    return torch.stack([hits[:, 0], r_precision, map_at_r], dim=1)


def _relevant_counts(
    query_labels: torch.Tensor, reference_labels: torch.Tensor, self_retrieval: bool
) -> torch.Tensor:
    """R per query: references of the query's class, its own item not counted."""
    classes, class_sizes = torch.unique(reference_labels, return_counts=True)
    position = torch.searchsorted(classes, query_labels).clamp(max=len(classes) - 1)
    counts = torch.where(classes[position] == query_labels, class_sizes[position], 0)
    return counts - 1 if self_retrieval else counts


def _as_tensor(values: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(values))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}")


def _embeddings_tensor(
    values: torch.Tensor | np.ndarray, name: str, device: torch.device | str
) -> torch.Tensor:
    tensor = _as_tensor(values, name)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D (items x dimensions), got shape {tensor.shape}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tensor.shape}); nothing to evaluate")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}; use .float()")
    tensor = tensor.to(device)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(
            f"{name} contains NaN or infinite values; check the model output before evaluating"
        )
    return tensor


def _labels_tensor(
    values: torch.Tensor | np.ndarray, name: str, expected_length: int, device: torch.device | str
) -> torch.Tensor:
    tensor = _as_tensor(values, name)
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per item), got shape {tensor.shape}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got {tensor.dtype}")
    if len(tensor) != expected_length:
        raise ValueError(
            f"{name} has {len(tensor)} entries but its embeddings have {expected_length} rows"
        )
    return tensor.to(device=device, dtype=torch.int64)
