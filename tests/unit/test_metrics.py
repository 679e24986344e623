"""retrieval_metrics against hand-computed values and an independent brute-force reference."""

import numpy as np
import pytest
import torch

import sdm
import sdm.metrics
from fixtures import TIE_MARGIN, ranking_margin
from sdm.constants import MAP_AT_R, NUM_QUERIES, PRECISION_AT_1, R_PRECISION
from sdm.metrics import auto_block_size, retrieval_metrics

METRICS = (PRECISION_AT_1, R_PRECISION, MAP_AT_R)


def brute_force_metrics(queries, query_labels, references=None, reference_labels=None):
    """MLRC metrics by full sorting, one query at a time: distance, then reference index."""
    self_retrieval = references is None
    if self_retrieval:
        references, reference_labels = queries, query_labels
    queries = np.asarray(queries, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    totals = dict.fromkeys(METRICS, 0.0)
    scored = 0
    for i, (query, label) in enumerate(zip(queries, query_labels, strict=True)):
        others = [j for j in range(len(references)) if not (self_retrieval and j == i)]
        relevant = sum(int(reference_labels[j] == label) for j in others)
        if relevant == 0:
            continue
        ranked = sorted(others, key=lambda j: (float(np.sum((references[j] - query) ** 2)), j))
        hits = [reference_labels[j] == label for j in ranked[:relevant]]
        precisions = [sum(hits[: rank + 1]) / (rank + 1) for rank in range(relevant)]
        totals[PRECISION_AT_1] += hits[0]
        totals[R_PRECISION] += sum(hits) / relevant
        totals[MAP_AT_R] += (
            sum(p for p, hit in zip(precisions, hits, strict=True) if hit) / relevant
        )
        scored += 1
    return {name: total / scored for name, total in totals.items()}, scored


def assert_matches(result, expected, scored, tolerance=1e-12):
    assert result[NUM_QUERIES] == scored
    for name in METRICS:
        assert result[name] == pytest.approx(expected[name], abs=tolerance), name


def random_set(seed, num_items=50, dim=4, num_classes=10, num_singletons=3):
    """Gaussian embeddings; classes of random sizes plus some single-item classes."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate(
        [rng.integers(0, num_classes, num_items), 1000 + np.arange(num_singletons)]
    )
    embeddings = rng.normal(size=(len(labels), dim))
    return embeddings, labels


def test_hand_computed_1d_example():
    # Points 0, 1, 3, 4, 9, 20 with labels 0, 0, 1, 0, 1, 2. The last is alone in its class
    # (R = 0) and is skipped. Neighbours by distance:
    #   x=0 (R=2): 1 (same), 3 (other)          -> P@1 1, RP 1/2, MAP@R (1/2)(1)       = 1/2
    #   x=1 (R=2): 0 (same), 3 (other)          -> P@1 1, RP 1/2, MAP@R (1/2)(1)       = 1/2
    #   x=3 (R=1): 4 (other)                    -> P@1 0, RP 0,   MAP@R 0
    #   x=4 (R=2): 3 (other), 1 (same, d=3)     -> P@1 0, RP 1/2, MAP@R (1/2)(0 + 1/2) = 1/4
    #   x=9 (R=1): 4 (other)                    -> P@1 0, RP 0,   MAP@R 0
    # Means over 5 queries: P@1 2/5, RP 1.5/5 = 0.3, MAP@R 1.25/5 = 0.25.
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [4.0], [9.0], [20.0]])
    labels = torch.tensor([0, 0, 1, 0, 1, 2])
    result = retrieval_metrics(embeddings, labels)
    assert result == {PRECISION_AT_1: 0.4, R_PRECISION: 0.3, MAP_AT_R: 0.25, NUM_QUERIES: 5}
    assert all(type(result[name]) is float for name in METRICS)
    assert type(result[NUM_QUERIES]) is int


def test_identical_embeddings_exclude_self_by_index_and_rank_by_index():
    # Six identical points, labels 0 1 0 1 0 1, so every distance ties and each query's
    # R = 2 neighbours are the two lowest other indices:
    #   q0: 1, 2 -> miss, hit: P@1 0, RP 1/2, MAP@R (1/2)(1/2) = 1/4
    #   q1: 0, 2 -> miss, miss: 0, 0, 0
    #   q2: 0, 1 -> hit, miss:  1, 1/2, 1/2
    #   q3: 0, 1 -> miss, hit:  0, 1/2, 1/4
    #   q4: 0, 1 -> hit, miss:  1, 1/2, 1/2
    #   q5: 0, 1 -> miss, hit:  0, 1/2, 1/4
    # Means: P@1 2/6, RP 2.5/6 = 5/12, MAP@R 1.75/6 = 7/24.
    embeddings = np.full((6, 3), 0.25, dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    result = retrieval_metrics(embeddings, labels)
    assert result[NUM_QUERIES] == 6
    assert result[PRECISION_AT_1] == pytest.approx(1 / 3, abs=1e-12)
    assert result[R_PRECISION] == pytest.approx(5 / 12, abs=1e-12)
    assert result[MAP_AT_R] == pytest.approx(7 / 24, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force_on_random_sets(seed):
    embeddings, labels = random_set(seed)
    expected, scored = brute_force_metrics(embeddings, labels)
    assert scored == len(labels) - 3 - sum(np.bincount(labels[:-3]) == 1)
    assert_matches(retrieval_metrics(embeddings, labels), expected, scored)
    as_float32 = torch.from_numpy(embeddings).float()
    assert_matches(retrieval_metrics(as_float32, torch.from_numpy(labels)), expected, scored)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separate_query_and_reference_sets(seed):
    queries, query_labels = random_set(seed, num_items=20)
    # References lack classes 7-9 and the single-item classes: those queries are skipped.
    references, reference_labels = random_set(
        seed + 100, num_items=40, num_classes=7, num_singletons=0
    )
    expected, scored = brute_force_metrics(queries, query_labels, references, reference_labels)
    assert 0 < scored == sum(label < 7 for label in query_labels) < len(query_labels)
    result = retrieval_metrics(queries, query_labels, references, reference_labels)
    assert_matches(result, expected, scored)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_ties_broken_by_reference_index(seed):
    # Points on a 3 x 3 integer grid: distances are small integers, computed exactly, and
    # tie everywhere, including across the k-th neighbour.
    rng = np.random.default_rng(seed)
    embeddings = rng.integers(0, 3, size=(60, 2)).astype(np.float32)
    labels = rng.integers(0, 4, size=60)
    expected, scored = brute_force_metrics(embeddings, labels)
    for block_size in (None, 3, 1):
        result = retrieval_metrics(embeddings, labels, block_size=block_size)
        assert_matches(result, expected, scored)
    queries, query_labels = embeddings[:25], labels[:25]
    expected, scored = brute_force_metrics(queries, query_labels, embeddings, labels)
    result = retrieval_metrics(queries, query_labels, embeddings, labels, block_size=4)
    assert_matches(result, expected, scored)


def test_duplicated_rows_among_random_embeddings():
    # BLAS kernels may round the products of identical rows differently (seen with
    # OpenBLAS at 48 dimensions), which would order duplicates by rounding noise.
    embeddings, labels = random_set(7, num_items=80, dim=48)
    duplicated = np.concatenate([embeddings, embeddings[:12], embeddings[:5]])
    duplicate_labels = np.concatenate([labels, (labels[:12] + 1) % 10, labels[:5]])
    expected, scored = brute_force_metrics(duplicated, duplicate_labels)
    for dtype in (torch.float32, torch.float64):
        result = retrieval_metrics(torch.tensor(duplicated, dtype=dtype), duplicate_labels)
        assert_matches(result, expected, scored)


def test_small_blocks_give_the_same_result_as_one_block():
    embeddings, labels = random_set(11, num_items=80, dim=6)
    whole = retrieval_metrics(embeddings, labels, block_size=len(labels))
    assert retrieval_metrics(embeddings, labels, block_size=3) == whole
    assert retrieval_metrics(embeddings, labels, block_size=1) == whole


def test_agrees_with_pytorch_metric_learning():
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 15, size=300)
    centers = rng.normal(size=(15, 16))
    embeddings = torch.tensor(centers[labels] + rng.normal(size=(300, 16)), dtype=torch.float32)
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    labels = torch.from_numpy(labels)
    # Two float32 computations of the distances: no near-tie may let rounding reorder them.
    assert ranking_margin(embeddings, labels) > TIE_MARGIN
    assert ranking_margin(embeddings[:100], labels[:100], embeddings[100:],
                          labels[100:]) > TIE_MARGIN
    # PML's own exact kNN in torch: faiss (its default) is an optional extra of this project.
    calculator = AccuracyCalculator(include=METRICS, k="max_bin_count",
                                    knn_func=CustomKNN(LpDistance(normalize_embeddings=False)))

    ours = retrieval_metrics(embeddings, labels)
    theirs = calculator.get_accuracy(embeddings, labels)
    for name in METRICS:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name

    ours = retrieval_metrics(embeddings[:100], labels[:100], embeddings[100:], labels[100:])
    theirs = calculator.get_accuracy(embeddings[:100], labels[:100], embeddings[100:], labels[100:])
    for name in METRICS:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name


def test_auto_block_size_stays_within_the_memory_budget():
    budget = 256 * 2**20
    rows = auto_block_size(60502, 4, budget)
    assert rows == budget // (60502 * (4 * 4 + 8)) == 184
    assert rows * 60502 * 4 < budget
    assert auto_block_size(10**9, 8, budget) == 1


def test_default_block_size_follows_the_memory_budget(monkeypatch):
    embeddings, labels = random_set(3, num_items=500, dim=4, num_classes=20)
    expected = retrieval_metrics(embeddings, labels)
    # float64 embeddings: 8-byte distances, so a block row costs 503 * (4 * 8 + 8) bytes.
    monkeypatch.setattr(sdm.metrics, "BLOCK_MEMORY_BYTES", 5 * 503 * 40)
    block_shapes = []
    nearest_neighbours = sdm.metrics._nearest_neighbours

    def recording_nearest_neighbours(keys, k):
        block_shapes.append(tuple(keys.shape))
        return nearest_neighbours(keys, k)

    monkeypatch.setattr(sdm.metrics, "_nearest_neighbours", recording_nearest_neighbours)
    result = retrieval_metrics(embeddings, labels)
    assert max(rows for rows, _ in block_shapes) == 5
    assert {columns for _, columns in block_shapes} == {503}
    assert sum(rows for rows, _ in block_shapes) == result[NUM_QUERIES] == 500
    assert result == expected


def test_public_name():
    assert sdm.retrieval_metrics is retrieval_metrics


GOOD_EMBEDDINGS = np.arange(12, dtype=np.float32).reshape(6, 2)
GOOD_LABELS = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    ("arguments", "keywords", "message"),
    [
        ((GOOD_EMBEDDINGS, GOOD_LABELS[:5]), {}, "labels has 5 entries"),
        ((GOOD_EMBEDDINGS[:, 0], GOOD_LABELS), {}, "must be 2-D"),
        ((GOOD_EMBEDDINGS, GOOD_LABELS[:, None]), {}, "must be 1-D"),
        ((GOOD_EMBEDDINGS, GOOD_LABELS.astype(np.float32)), {}, "integer class ids"),
        ((GOOD_EMBEDDINGS.astype(np.int64), GOOD_LABELS), {}, "floating point"),
        ((GOOD_EMBEDDINGS[:0], GOOD_LABELS[:0]), {}, "empty"),
        ((np.where(GOOD_LABELS[:, None] == 1, np.nan, GOOD_EMBEDDINGS), GOOD_LABELS), {}, "NaN"),
        ((np.where(GOOD_LABELS[:, None] == 1, np.inf, GOOD_EMBEDDINGS), GOOD_LABELS), {}, "NaN"),
        ((GOOD_EMBEDDINGS, np.arange(6)), {}, "no query has another item of its class"),
        (
            (GOOD_EMBEDDINGS, GOOD_LABELS, GOOD_EMBEDDINGS, np.arange(10, 16)),
            {},
            "no query has another item of its class",
        ),
        (
            (GOOD_EMBEDDINGS, GOOD_LABELS, np.zeros((6, 3), np.float32), GOOD_LABELS),
            {},
            "same embedding space",
        ),
        (
            (GOOD_EMBEDDINGS, GOOD_LABELS, GOOD_EMBEDDINGS, GOOD_LABELS[:4]),
            {},
            "reference_labels has 4 entries",
        ),
        ((GOOD_EMBEDDINGS, GOOD_LABELS, GOOD_EMBEDDINGS), {}, "together"),
        ((GOOD_EMBEDDINGS, GOOD_LABELS), {"block_size": 0}, "block_size"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(arguments, keywords, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(*arguments, **keywords)


def test_non_array_input_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        retrieval_metrics(GOOD_EMBEDDINGS.tolist(), GOOD_LABELS)
