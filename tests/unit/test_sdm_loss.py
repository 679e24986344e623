"""SDMLoss: hand-computed values, a brute-force reference, reduction to the base loss, errors."""

import copy
import math

import pytest
import torch
from pytorch_metric_learning import distances, losses, miners, regularizers

from sdm import SDMLoss, sensitivity_matrix
from sdm.sdm_loss import _PrecomputedMatrix, perturbed_copies

# Two deterministic "passes" (T=2, p=0, masks=1: the copies are exactly these) of three 2D points
# with easy norms; labels 0, 0, 1. After L2 normalization:
#   pass 1: (1, 0), (0, 1), (-1, 0)       pass 2: (0.6, 0.8), (0, 1), (0, -1)
TWO_PASSES = torch.tensor(
    [[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], [[3.0, 4.0], [0.0, 1.0], [0.0, -5.0]]],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 0, 1])
ALPHA = 2.0


def softmax_weighted(values: list[float], scale: float) -> float:
    """sum_k softmax_k(scale * v_k) * v_k, written out."""
    exps = [math.exp(scale * v) for v in values]
    return sum(e * v for e, v in zip(exps, values, strict=True)) / sum(exps)


def euclidean_s_by_hand() -> tuple[float, float, float]:
    """S01 (positive: soft max), S02 and S12 (negatives: soft min) of the Euclidean distances."""
    s01 = softmax_weighted([math.sqrt(2.0), math.sqrt(0.6**2 + 0.2**2)], ALPHA)
    s02 = softmax_weighted([2.0, math.sqrt(0.6**2 + 1.8**2)], -ALPHA)
    s12 = softmax_weighted([math.sqrt(2.0), 2.0], -ALPHA)
    return s01, s02, s12


def sdm(base_loss, masks=1, p=0.0, alpha=ALPHA):
    return SDMLoss(base_loss, masks=masks, embedding_dropout=p, alpha=alpha)


# ---------------------------------------------------------------- perturbed copies


def test_copies_without_dropout_are_the_passes_and_draw_no_random_numbers():
    passes = torch.randn(3, 4, 5)
    rng_before = torch.get_rng_state()
    copies = perturbed_copies(passes, masks=1, p=0.0)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(copies, passes)
    assert torch.equal(perturbed_copies(passes[0], masks=1, p=0.0), passes[:1])
    repeated = perturbed_copies(passes, masks=2, p=0.0)
    assert torch.equal(repeated, passes.repeat_interleave(2, dim=0))


def test_copies_are_inverted_dropout_of_their_pass_and_a_seed_fixes_them():
    passes = torch.rand(2, 50, 40) + 1.0  # no zeros of its own
    p, masks = 0.25, 3
    torch.manual_seed(7)
    copies = perturbed_copies(passes, masks=masks, p=p)
    torch.manual_seed(7)
    assert torch.equal(perturbed_copies(passes, masks=masks, p=p), copies)
    assert copies.shape == (6, 50, 40)
    source = passes.repeat_interleave(masks, dim=0)  # copy k = t*masks + m comes from pass t
    dropped = copies == 0
    assert torch.allclose(copies[~dropped], source[~dropped] / (1 - p))
    assert abs(dropped.double().mean().item() - p) < 0.02  # 12000 draws, seeded
    assert not torch.equal(copies[0], copies[1])  # masks are independent


# ---------------------------------------------------------------- hand-computed values


def test_sensitivity_matrix_by_hand():
    s01, s02, s12 = euclidean_s_by_hand()
    expected = torch.tensor(
        [[0.0, s01, s02], [s01, 0.0, s12], [s02, s12, 0.0]], dtype=torch.float64
    )
    got = sensitivity_matrix(TWO_PASSES, LABELS, distances.LpDistance(), ALPHA)
    assert torch.allclose(got, expected, atol=1e-12)


def test_contrastive_by_hand():
    s01, s02, s12 = euclidean_s_by_hand()
    # Positives (0,1),(1,0): loss S01 each. Negatives: relu(1.6 - S02) = 0 (S02 ~ 1.94),
    # relu(1.6 - S12) twice (S12 ~ 1.55). AvgNonZero per sub-loss, then summed.
    assert s02 > 1.6 > s12
    expected = s01 + (1.6 - s12)
    loss = sdm(losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.6))(TWO_PASSES, LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_triplet_by_hand():
    s01, s02, s12 = euclidean_s_by_hand()
    # Triplets (0,1,2): relu(S01 - S02 + 0.5) = 0; (1,0,2): relu(S01 - S12 + 0.5) > 0.
    assert s01 - s02 + 0.5 < 0 < s01 - s12 + 0.5
    expected = s01 - s12 + 0.5
    loss = sdm(losses.TripletMarginLoss(margin=0.5))(TWO_PASSES, LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_margin_by_hand():
    s01, s02, s12 = euclidean_s_by_hand()
    beta, margin = 1.375, 0.2  # beta exact in float32, the dtype PML stores it in
    # Triplets (0,1,2), (1,0,2): positive parts relu(S01 - beta + margin) twice (> 0),
    # negative parts relu(beta - S02 + margin) = 0 and relu(beta - S12 + margin) > 0.
    # DivisorReducer: the sum over the 3 non-zero parts.
    assert s01 - beta + margin > 0 and beta - s02 + margin < 0 < beta - s12 + margin
    expected = (2 * (s01 - beta + margin) + (beta - s12 + margin)) / 3
    loss = sdm(losses.MarginLoss(margin=margin, beta=beta))(TWO_PASSES, LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_multi_similarity_by_hand():
    # Cosine similarities: pass 1: s01 = 0, s02 = -1, s12 = 0; pass 2: 0.8, -0.8, -1.
    # A similarity: positives take the soft min, negatives the soft max.
    s01 = softmax_weighted([0.0, 0.8], -ALPHA)
    s02 = softmax_weighted([-1.0, -0.8], ALPHA)
    s12 = softmax_weighted([0.0, -1.0], ALPHA)
    a, b, base = 2.0, 10.0, 0.5

    def pos_term(similarities):
        return math.log(1 + sum(math.exp(-a * (s - base)) for s in similarities)) / a

    def neg_term(similarities):
        return math.log(1 + sum(math.exp(b * (s - base)) for s in similarities)) / b

    rows = [
        pos_term([s01]) + neg_term([s02]),
        pos_term([s01]) + neg_term([s12]),
        neg_term([s02, s12]),  # point 2 has no positive
    ]
    expected = sum(rows) / 3  # MeanReducer over the rows
    loss = sdm(losses.MultiSimilarityLoss(alpha=a, beta=b, base=base))(TWO_PASSES, LABELS)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- brute-force reference


def brute_force_s(copies: list, labels: list, alpha: float) -> list:
    """S by explicit loops: L2-normalize every copy, Euclidean distance, softmax over copies."""
    normalized = [
        [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in copy_] for copy_ in copies
    ]
    size = len(labels)
    s = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(size):
            dists = [
                math.sqrt(sum((a - b) ** 2 for a, b in zip(c[i], c[j], strict=True)))
                for c in normalized
            ]
            sign = 1.0 if labels[i] == labels[j] else -1.0
            s[i][j] = softmax_weighted(dists, sign * alpha)
    return s


def avg_non_zero(values: list) -> float:
    kept = [v for v in values if v > 0]
    return sum(kept) / len(kept) if kept else 0.0


@pytest.fixture
def perturbed_batch():
    torch.manual_seed(3)
    passes = torch.randn(2, 8, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    return passes, labels


def test_contrastive_matches_brute_force_with_dropout(perturbed_batch):
    passes, labels = perturbed_batch
    masks, p, alpha, pos_margin, neg_margin = 3, 0.2, 4.0, 0.1, 1.2
    torch.manual_seed(11)
    copies = perturbed_copies(passes, masks, p).tolist()
    s = brute_force_s(copies, labels.tolist(), alpha)
    pos, neg = [], []
    for i in range(8):
        for j in range(8):
            if i != j and labels[i] == labels[j]:
                pos.append(max(s[i][j] - pos_margin, 0.0))
            elif labels[i] != labels[j]:
                neg.append(max(neg_margin - s[i][j], 0.0))
    expected = avg_non_zero(pos) + avg_non_zero(neg)
    torch.manual_seed(11)
    base = losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin)
    loss = SDMLoss(base, masks=masks, embedding_dropout=p, alpha=alpha)(passes, labels)
    assert loss.item() == pytest.approx(expected, abs=1e-10)


def test_triplet_matches_brute_force_with_dropout(perturbed_batch):
    passes, labels = perturbed_batch
    masks, p, alpha, margin = 3, 0.2, 4.0, 0.3
    torch.manual_seed(12)
    copies = perturbed_copies(passes, masks, p).tolist()
    s = brute_force_s(copies, labels.tolist(), alpha)
    per_triplet = [
        max(s[a][q] - s[a][n] + margin, 0.0)
        for a in range(8)
        for q in range(8)
        for n in range(8)
        if a != q and labels[a] == labels[q] and labels[a] != labels[n]
    ]
    assert len(per_triplet) == 8 * 1 * 6
    torch.manual_seed(12)
    loss = SDMLoss(losses.TripletMarginLoss(margin=margin), masks=masks, embedding_dropout=p,
                   alpha=alpha)(passes, labels)
    assert loss.item() == pytest.approx(avg_non_zero(per_triplet), abs=1e-10)


# ---------------------------------------------------------------- reduction to the base loss

REDUCING_CASES = {
    "contrastive": lambda: losses.ContrastiveLoss(),
    "contrastive_cosine": lambda: losses.ContrastiveLoss(
        pos_margin=1, neg_margin=0, distance=distances.CosineSimilarity()
    ),
    "snr_contrastive": lambda: losses.SignalToNoiseRatioContrastiveLoss(),
    "triplet": lambda: losses.TripletMarginLoss(margin=0.2),
    "triplet_swap_squared": lambda: losses.TripletMarginLoss(
        margin=0.2, swap=True, distance=distances.LpDistance(power=2)
    ),
    "triplet_regularized": lambda: losses.TripletMarginLoss(
        embedding_regularizer=regularizers.LpRegularizer()
    ),
    "margin_learned_beta": lambda: losses.MarginLoss(learn_beta=True, nu=0.1),
    "margin_per_class": lambda: losses.MarginLoss(learn_beta=True, num_classes=4),
    "multi_similarity": lambda: losses.MultiSimilarityLoss(),
    "ntxent": lambda: losses.NTXentLoss(),
    "supcon": lambda: losses.SupConLoss(),
    "circle": lambda: losses.CircleLoss(),
    "lifted": lambda: losses.LiftedStructureLoss(),
    "generalized_lifted": lambda: losses.GeneralizedLiftedStructureLoss(),
    "fast_ap": lambda: losses.FastAPLoss(),
    "nca": lambda: losses.NCALoss(),
    "nca_cosine": lambda: losses.NCALoss(distance=distances.CosineSimilarity()),
    "histogram": lambda: losses.HistogramLoss(),
    "intra_pair_variance": lambda: losses.IntraPairVarianceLoss(),
    "tuplet_margin": lambda: losses.TupletMarginLoss(),
    "ranked_list": lambda: losses.RankedListLoss(margin=0.4, Tn=1.0),
    "instance": lambda: losses.InstanceLoss(),
    "pnp": lambda: losses.PNPLoss(),
    "dynamic_soft_margin": lambda: losses.DynamicSoftMarginLoss(),
}


def loss_and_gradient(loss_fn, embeddings, labels, **kwargs):
    embeddings = embeddings.clone().requires_grad_(True)
    loss = loss_fn(embeddings, labels, **kwargs)
    loss.backward()
    return loss.detach(), embeddings.grad


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")  # HistogramLoss's
@pytest.mark.parametrize("name", list(REDUCING_CASES))
def test_one_copy_without_dropout_is_the_base_loss(name):
    torch.manual_seed(5)
    embeddings = torch.randn(12, 6, dtype=torch.float64)
    labels = torch.arange(12) % 4
    base = REDUCING_CASES[name]()
    reference = copy.deepcopy(base)
    wrapped = SDMLoss(base, masks=1, embedding_dropout=0.0, alpha=32.0)
    want, want_grad = loss_and_gradient(reference, embeddings, labels)
    for given in (embeddings, embeddings.unsqueeze(0)):  # (B, D) and (T=1, B, D)
        got, got_grad = loss_and_gradient(copy.deepcopy(wrapped), given, labels)
        assert torch.allclose(got, want, rtol=0, atol=1e-12), name
        assert torch.allclose(got_grad, want_grad.view_as(got_grad), rtol=0, atol=1e-12), name


@pytest.mark.parametrize(
    ("make_loss", "make_miner"),
    [
        (losses.ContrastiveLoss, miners.MultiSimilarityMiner),
        (
            losses.TripletMarginLoss,
            lambda: miners.TripletMarginMiner(margin=0.2, type_of_triplets="hard"),
        ),
    ],
)
def test_miner_indices_are_used_as_given(make_loss, make_miner):
    torch.manual_seed(6)
    embeddings = torch.randn(12, 6, dtype=torch.float64)
    labels = torch.arange(12) % 3
    indices = make_miner()(embeddings, labels)
    want = make_loss()(embeddings, labels, indices)
    got = SDMLoss(make_loss(), masks=1, embedding_dropout=0.0)(embeddings, labels, indices)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    assert not torch.allclose(got, make_loss()(embeddings, labels))  # the miner mattered


def test_base_distance_is_restored_even_when_the_base_loss_raises():
    base = losses.RankedListLoss(margin=0.4, Tn=1.0)
    original = base.distance
    wrapped = SDMLoss(base)
    indices = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    with pytest.raises(ValueError):
        wrapped(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), indices)  # not supported by it
    assert base.distance is original
    wrapped(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))
    assert base.distance is original


def test_stand_in_distance_refuses_other_inputs():
    embeddings = torch.randn(3, 2)
    stand_in = _PrecomputedMatrix(torch.zeros(3, 3), embeddings, distances.LpDistance())
    assert torch.equal(stand_in(embeddings), torch.zeros(3, 3))
    with pytest.raises(RuntimeError, match="other inputs"):
        stand_in(embeddings, torch.randn(5, 2))


# ---------------------------------------------------------------- randomness, gradients, dtypes


def test_a_seed_fixes_the_loss_and_dropout_changes_it():
    passes = torch.randn(2, 8, 6)
    labels = torch.arange(8) % 4
    wrapped = SDMLoss(losses.TripletMarginLoss(margin=0.5), masks=8, embedding_dropout=0.05)
    torch.manual_seed(1)
    first = wrapped(passes, labels)
    torch.manual_seed(1)
    assert torch.equal(wrapped(passes, labels), first)
    torch.manual_seed(2)
    assert not torch.equal(wrapped(passes, labels), first)


def test_gradients_reach_embeddings_and_learnable_beta():
    torch.manual_seed(4)
    passes = torch.randn(2, 8, 6, requires_grad=True)
    labels = torch.arange(8) % 4
    wrapped = SDMLoss(losses.MarginLoss(learn_beta=True, beta=1.0), masks=8, embedding_dropout=0.05)
    beta = wrapped.base_loss.beta
    assert any(parameter is beta for parameter in wrapped.parameters())
    wrapped(passes, labels).backward()
    assert passes.grad is not None and torch.isfinite(passes.grad).all()
    assert passes.grad.abs().sum() > 0
    assert beta.grad is not None and torch.isfinite(beta.grad).all() and beta.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "distance", [distances.LpDistance(), distances.CosineSimilarity()], ids=["lp", "cosine"]
)
def test_large_alpha_approaches_the_hard_worst_case(dtype, distance):
    torch.manual_seed(8)
    copies = torch.randn(3, 6, 4, dtype=dtype)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    per_copy = torch.stack([distance(c) for c in copies])
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    if distance.is_inverted:  # similarity: positives least similar, negatives most similar
        hard = torch.where(same, per_copy.min(dim=0).values, per_copy.max(dim=0).values)
    else:
        hard = torch.where(same, per_copy.max(dim=0).values, per_copy.min(dim=0).values)
    got = sensitivity_matrix(copies, labels, distance, alpha=1e4)
    assert got.dtype == dtype
    # The soft value trails the hard one by at most (K-1) * max_g g*exp(-alpha*g) = 2/(e*1e4).
    assert torch.allclose(got, hard, rtol=0, atol=1e-3)
    soft = sensitivity_matrix(copies, labels, distance, alpha=32.0)
    assert torch.isfinite(soft).all()
    assert (soft >= per_copy.min(dim=0).values - 1e-6).all()
    assert (soft <= per_copy.max(dim=0).values + 1e-6).all()


@pytest.mark.parametrize(
    "distance", [distances.LpDistance(), distances.CosineSimilarity()], ids=["lp", "cosine"]
)
def test_alpha_zero_is_the_plain_mean_over_copies(distance):
    copies = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]],
                           [[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    unit = [[[a / (a * a + b * b) ** 0.5, b / (a * a + b * b) ** 0.5] for a, b in c]
            for c in copies.tolist()]
    by_hand = [[0.0] * 3 for _ in range(3)]
    for points in unit:
        for i in range(3):
            for j in range(3):
                (a, b), (c, d) = points[i], points[j]
                cosine, euclidean = a * c + b * d, ((a - c) ** 2 + (b - d) ** 2) ** 0.5
                by_hand[i][j] += (cosine if distance.is_inverted else euclidean) / len(unit)
    got = sensitivity_matrix(copies, labels, distance, alpha=0.0)
    assert torch.allclose(got, torch.tensor(by_hand, dtype=torch.float64), rtol=0, atol=1e-12)
    loss = SDMLoss(losses.ContrastiveLoss(), masks=1, embedding_dropout=0.0, alpha=0.0)
    assert torch.isfinite(loss(copies.float(), labels))


def test_loop_path_for_distances_that_cannot_be_vmapped_gives_the_same_matrix():
    torch.manual_seed(9)
    copies = torch.randn(4, 6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    vmapped = sensitivity_matrix(copies, labels, distances.LpDistance())
    looped = sensitivity_matrix(copies, labels, distances.LpDistance(collect_stats=True))
    assert torch.allclose(vmapped, looped, rtol=0, atol=1e-12)
    half = sensitivity_matrix(copies.half(), labels, distances.LpDistance())
    assert half.dtype == torch.float16
    assert torch.allclose(half.double(), vmapped, atol=1e-2)


def test_loss_decreases_in_an_optimizer_loop():
    torch.manual_seed(0)
    centers = torch.randn(4, 16) * 2
    labels = torch.arange(32) % 4
    embedder = torch.nn.Linear(16, 8)
    wrapped = SDMLoss(losses.MarginLoss(learn_beta=True), masks=8, embedding_dropout=0.05)
    beta_before = wrapped.base_loss.beta.item()
    optimizer = torch.optim.Adam([*embedder.parameters(), *wrapped.parameters()], lr=0.02)
    history = []
    for _ in range(50):
        points = centers[labels] + torch.randn(32, 16)
        passes = torch.stack([embedder(points), embedder(points)])  # T = 2
        loss = wrapped(passes, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert wrapped.base_loss.beta.item() != beta_before


# ---------------------------------------------------------------- errors and edge cases


@pytest.mark.parametrize("make_loss", [losses.TripletMarginLoss, losses.MarginLoss])
def test_batch_without_positive_pair_gives_zero_loss_and_zero_gradient(make_loss):
    passes = torch.randn(2, 4, 3, requires_grad=True)
    loss = SDMLoss(make_loss(), masks=2, embedding_dropout=0.05)(passes, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(passes.grad, torch.zeros_like(passes))


@pytest.mark.parametrize(
    "unsupported",
    [
        lambda: losses.ProxyAnchorLoss(num_classes=3, embedding_size=4),
        lambda: losses.ProxyNCALoss(num_classes=3, embedding_size=4),
        lambda: losses.ArcFaceLoss(num_classes=3, embedding_size=4),
        lambda: losses.SoftTripleLoss(num_classes=3, embedding_size=4),
        lambda: losses.AngularLoss(),
        lambda: losses.NPairsLoss(),
        lambda: losses.CrossBatchMemory(losses.ContrastiveLoss(), embedding_size=4),
        lambda: torch.nn.MSELoss(),
    ],
)
def test_loss_without_pairwise_matrix_is_refused(unsupported):
    base = unsupported()
    with pytest.raises(TypeError, match=f"cannot wrap {type(base).__name__}: SDM needs"):
        SDMLoss(base)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"masks": 0}, "masks"),
        ({"masks": 2.0}, "masks"),
        ({"embedding_dropout": 1.0}, "embedding_dropout must be in"),
        ({"embedding_dropout": -0.1}, "embedding_dropout must be in"),
        ({"p": 1.0}, "embedding_dropout must be in"),
        ({"alpha": -1.0}, r"alpha \(inverse temperature of the soft worst case\)"),
        ({"alpha": float("inf")}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
    ],
)
@pytest.mark.filterwarnings("ignore:SDMLoss\\(p=:FutureWarning")
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SDMLoss(losses.ContrastiveLoss(), **settings)


def test_the_rate_s_earlier_name_p_still_works_with_a_warning():
    passes, labels = torch.randn(2, 6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    torch.manual_seed(3)
    expected = SDMLoss(losses.ContrastiveLoss(), masks=4, embedding_dropout=0.2)(passes, labels)
    with pytest.warns(FutureWarning, match=r"SDMLoss\(embedding_dropout=\.\.\.\)"):
        old = SDMLoss(losses.ContrastiveLoss(), masks=4, p=0.2)
    assert old.embedding_dropout == 0.2
    torch.manual_seed(3)
    assert torch.equal(old(passes, labels), expected)


@pytest.mark.parametrize(
    ("embeddings", "labels", "message"),
    [
        (torch.randn(5, 3), torch.arange(4), "5 samples but labels hold 4"),
        (torch.randn(2, 5, 3), torch.arange(4), "5 samples but labels hold 4"),
        (torch.randn(4), torch.arange(4), "shape"),
        (torch.randn(1, 2, 4, 3), torch.arange(4), "shape"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.arange(2), "NaN or inf"),
        (torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), torch.arange(2), "NaN or inf"),
        (torch.ones(4, 3, dtype=torch.long), torch.arange(4), "floating-point"),
        (torch.randn(4, 3), torch.zeros(4, 1), "1D"),
    ],
)
def test_bad_inputs_are_refused(embeddings, labels, message):
    with pytest.raises(ValueError, match=message):
        SDMLoss(losses.ContrastiveLoss())(embeddings, labels)


def test_bad_arguments_to_the_functions_are_refused():
    with pytest.raises(ValueError, match="masks"):
        perturbed_copies(torch.randn(4, 3), masks=0, p=0.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        sensitivity_matrix(torch.randn(2, 4, 3), torch.arange(5), distances.LpDistance())
    with pytest.raises(ValueError, match="copies must have shape"):
        sensitivity_matrix(torch.randn(4, 3), torch.arange(4), distances.LpDistance())
    with pytest.raises(TypeError, match="BaseDistance"):
        sensitivity_matrix(torch.randn(2, 4, 3), torch.arange(4), torch.nn.Identity())
