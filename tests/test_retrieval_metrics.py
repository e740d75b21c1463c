"""retrieval_metrics against a plain float64 loop over the definitions (docs/reference/metrics.md), hand-computed cases
and pytorch-metric-learning's AccuracyCalculator."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from dml_bench.evaluation import group_rank, knn, retrieval_metrics, symmetric
from dml_bench.evaluation.metric_names import (
    MAP_AT_R,
    NMI,
    NUM_QUERIES,
    R_PRECISION,
    recall_key,
)
from dml_bench.evaluation.retrieval import QUERY_INDEX, per_query_means

BACKENDS = ("torch", "faiss", "symmetric")
ATOL = 1e-6  # float32 search, metrics accumulated in float64


def brute_force(query, query_labels, gallery, gallery_labels, recall_ks, distance, drop_first=False):
    """Metrics by the book: full float64 distance matrix, one query at a time.

    gallery None means leave-one-out: the query set is the gallery and each query skips itself.
    """
    values = brute_force_per_query(query, query_labels, gallery, gallery_labels, recall_ks, distance, drop_first)
    kept = len(values.pop(QUERY_INDEX))
    return {key: sum(value) / kept for key, value in values.items()} | {NUM_QUERIES: kept}


def brute_force_per_query(query, query_labels, gallery, gallery_labels, recall_ks, distance, drop_first=False):
    """Each kept query's hit within each K, AP@R and R-Precision (lists), and its index.

    drop_first (leave-one-out): rank every item, the query included, and drop the nearest,
    whichever it is, as the paper's official code does; R stays the query's class size - 1.
    """
    leave_one_out = gallery is None
    if leave_one_out:
        gallery, gallery_labels = query, query_labels
    query, gallery = query.astype(np.float64), gallery.astype(np.float64)
    if distance == "cosine":  # a zero row stays zero: it scores 0 with every item
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        dist = -query @ gallery.T
    else:
        dist = ((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1)
    values = {recall_key(k): [] for k in recall_ks} | {MAP_AT_R: [], R_PRECISION: [], QUERY_INDEX: []}
    for q in range(len(query)):
        candidates = [g for g in range(len(gallery)) if drop_first or not (leave_one_out and g == q)]
        ranked = sorted(candidates, key=lambda g: (dist[q, g], g))[int(drop_first):]
        rel = [gallery_labels[g] == query_labels[q] for g in ranked]
        r = sum(gallery_labels[g] == query_labels[q] for g in range(len(gallery))) - leave_one_out
        if r == 0:
            continue
        values[QUERY_INDEX].append(q)
        for k in recall_ks:
            values[recall_key(k)].append(any(rel[:k]))
        values[R_PRECISION].append(sum(rel[:r]) / r)
        values[MAP_AT_R].append(sum(sum(rel[: i + 1]) / (i + 1) for i in range(r) if rel[i]) / r)
    return values


def assert_metrics_equal(actual, expected):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=ATOL), key


def clustered(num, dim, num_classes, seed, spread=1.0):
    """Float32 embeddings (num, dim) around one random centre per class, and int labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num)
    centres = rng.standard_normal((num_classes, dim))
    x = centres[labels] + spread * rng.standard_normal((num, dim))
    return x.astype(np.float32), labels


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def small_blocks(monkeypatch):
    """A few query rows per torch block, so blocking and block edges are exercised."""
    monkeypatch.setattr(knn, "BLOCK_BYTES", 4 * 1024)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_leave_one_out_matches_brute_force(backend, distance, small_blocks):
    x, labels = clustered(150, 8, 12, seed=0)
    ks = (1, 2, 4, 8, 16)
    actual = retrieval_metrics(x, labels, recall_ks=ks, distance=distance, backend=backend)
    assert_metrics_equal(actual, brute_force(x, labels, None, None, ks, distance))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_query_gallery_matches_brute_force(backend, distance, small_blocks):
    """Query classes 20-24 are not in the gallery: those queries are left out."""
    x, labels = clustered(260, 8, 25, seed=1)
    gallery = labels < 20
    query = ~gallery | (np.arange(len(x)) % 3 == 0)
    args = (x[query], labels[query], x[gallery], labels[gallery])
    ks = (1, 5, 10)
    actual = retrieval_metrics(*args, recall_ks=ks, distance=distance, backend=backend)
    expected = brute_force(*args, ks, distance)
    assert expected[NUM_QUERIES] < query.sum()
    assert_metrics_equal(actual, expected)


def test_deep_recall_matches_brute_force(backend, small_blocks):
    """Pairs of random points: R = 1, so most queries are searched again, as deep as K = 60."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((120, 4)).astype(np.float32)
    labels = np.arange(120) // 2
    ks = (1, 3, 60, 500)
    actual = retrieval_metrics(x, labels, recall_ks=ks, backend=backend)
    expected = brute_force(x, labels, None, None, ks, "cosine")
    assert expected["recall@3"] < 0.5
    assert_metrics_equal(actual, expected)


@pytest.mark.parametrize("separate_gallery", [False, True])
def test_exact_ties_match_brute_force(backend, separate_gallery, small_blocks):
    """Points on a 3x3x3 integer grid: many exact duplicates and equal distances, all of them
    across several blocks, broken by gallery index as the brute force does."""
    rng = np.random.default_rng(9)
    x = rng.integers(0, 3, size=(130, 3)).astype(np.float32)
    labels = rng.integers(0, 6, size=130)
    args = (x[:40], labels[:40], x[40:], labels[40:]) if separate_gallery else (x, labels)
    ks = (1, 3, 10, 40)
    actual = retrieval_metrics(*args, recall_ks=ks, distance="euclidean", backend=backend)
    expected = brute_force(*(args if separate_gallery else (*args, None, None)), ks, "euclidean")
    assert_metrics_equal(actual, expected)


@pytest.mark.parametrize("separate_gallery", [False, True])
def test_per_query_values_match_brute_force_and_average_to_the_metrics(backend, separate_gallery, small_blocks):
    """Each kept query's values, in query order with its index; their means are the metrics
    exactly. With a gallery, every third item is a query and classes 20-24 are not in the gallery
    (left out); pairs of one class (R <= 1) send queries to the deep search, as far as K = 60."""
    x, labels = clustered(200, 6, 25, seed=12, spread=0.5)
    labels[:40] = 30 + np.arange(40) // 2
    if separate_gallery:
        query = np.arange(len(x)) % 3 == 0
        gallery = ~query & ((labels < 20) | (labels >= 30))
        args = (x[query], labels[query], x[gallery], labels[gallery])
    else:
        args = (x, labels, None, None)
    ks = (1, 3, 60)
    metrics, values = retrieval_metrics(*(a for a in args if a is not None), recall_ks=ks, backend=backend,
                                        per_query=True)
    expected = brute_force_per_query(*args, ks, "cosine")
    assert values.keys() == expected.keys()
    assert values[QUERY_INDEX].tolist() == expected[QUERY_INDEX]
    assert (len(expected[QUERY_INDEX]) < len(args[0])) == separate_gallery  # leave-one-out keeps them all
    assert 0 < sum(expected[recall_key(1)]) < sum(expected[recall_key(60)]) < len(expected[QUERY_INDEX])
    for k in ks:
        assert values[recall_key(k)].dtype == np.bool_
        assert values[recall_key(k)].tolist() == expected[recall_key(k)], k
    for name in (MAP_AT_R, R_PRECISION):
        np.testing.assert_allclose(values[name], expected[name], rtol=0, atol=ATOL)
    assert per_query_means(values) == metrics
    for name, value in metrics.items():
        assert value == (len(values[QUERY_INDEX]) if name == NUM_QUERIES else values[name].mean()), name
    assert metrics == retrieval_metrics(*(a for a in args if a is not None), recall_ks=ks, backend=backend)


def test_hand_computed_line(backend):
    """Six points on a line; worked out by hand from the definitions in docs/reference/metrics.md.

    positions 0, 1, 1.5, 3, 3.2, 10 with labels A A B A B C (C alone: left out).
    Neighbour labels, query skipped: 0 -> A B A B (R=2), 1 -> B A A B (R=2),
    2 -> A A A B (R=1), 3 -> B B A A (R=2), 4 -> A B A A (R=1).
    """
    x = np.array([[0.0], [1.0], [1.5], [3.0], [3.2], [10.0]], dtype=np.float32)
    labels = np.array([0, 0, 1, 0, 1, 2])
    actual = retrieval_metrics(x, labels, recall_ks=(1, 2, 4, 100), distance="euclidean", backend=backend)
    expected = {
        "recall@1": 1 / 5,
        "recall@2": 3 / 5,
        "recall@4": 1.0,
        "recall@100": 1.0,  # beyond the gallery: everything retrieved
        MAP_AT_R: (1 / 2 + 1 / 4) / 5,
        R_PRECISION: (1 / 2 + 1 / 2) / 5,
        NUM_QUERIES: 5,
    }
    assert_metrics_equal(actual, expected)


@pytest.mark.parametrize("recall_ks", [(1, 2), (1, 2, 3, 4)])
def test_duplicate_trap(backend, recall_ks):
    """Exact duplicates: the query is skipped by its index, not as "the first neighbour".

    positions 0, 0, 5, 5, 10 with labels A B A A B. Item 1 duplicates item 0 with another
    label: its nearest neighbour is item 0, a miss (dropping the first neighbour would drop
    item 0 and keep item 1 itself, a false hit). Item 3 duplicates item 2 with the same label:
    a hit. From item 2, items 0, 1 and 4 tie at distance 5; by gallery index 0 (A) comes
    first, and with k = 2 that tie sits on the search's cut.
    Neighbour labels: 0 -> B A A B, 1 -> A A A B, 2 -> A A B B, 3 -> A A B B, 4 -> A A A B.
    """
    x = np.array([[0.0], [0.0], [5.0], [5.0], [10.0]], dtype=np.float32)
    labels = np.array([0, 1, 0, 0, 1])
    actual = retrieval_metrics(x, labels, recall_ks=recall_ks, distance="euclidean", backend=backend)
    recall = {1: 2 / 5, 2: 3 / 5, 3: 3 / 5, 4: 1.0}
    expected = {recall_key(k): recall[k] for k in recall_ks}
    expected |= {MAP_AT_R: (1 / 4 + 1 + 1) / 5, R_PRECISION: (1 / 2 + 1 + 1) / 5, NUM_QUERIES: 5}
    assert_metrics_equal(actual, expected)


def cross_class_duplicates(num=300, pairs=40, seed=3):
    """Clustered points in which ``pairs`` points each get an exact copy carrying another label."""
    x, labels = clustered(num - pairs, 8, 20, seed=seed, spread=1.5)
    rng = np.random.default_rng(seed)
    copied = rng.choice(len(x), size=pairs, replace=False)
    copy_labels = (labels[copied] + rng.integers(1, 20, size=pairs)) % 20
    order = rng.permutation(num)  # the copies land before or after their originals
    return np.concatenate([x, x[copied]])[order], np.concatenate([labels, copy_labels])[order]


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_first_neighbor_exclusion_reproduces_the_official_code_and_differs_on_duplicates(backend, distance):
    x, labels = cross_class_duplicates()
    ks = (1, 2, 4, 8)
    # Two BLAS threads: numpy's BLAS then scores some copies an ulp apart (at different places of
    # a block), which moved the symmetric backend's hits before copies were given one score.
    with threadpool_limits(2):
        by_index = retrieval_metrics(x, labels, recall_ks=ks, distance=distance, backend=backend)
        official = retrieval_metrics(x, labels, recall_ks=ks, distance=distance, backend=backend,
                                     exclude="first_neighbor")
    assert_metrics_equal(by_index, brute_force(x, labels, None, None, ks, distance))
    assert_metrics_equal(official, brute_force(x, labels, None, None, ks, distance, drop_first=True))
    # A query whose cross-class copy ranks first keeps itself among its neighbours: a false hit.
    assert official[recall_key(1)] > by_index[recall_key(1)] + 0.02


def test_first_neighbor_exclusion_equals_by_index_without_duplicates(backend):
    x, labels = clustered(120, 6, 10, seed=4)
    assert retrieval_metrics(x, labels, backend=backend, exclude="first_neighbor") == pytest.approx(
        retrieval_metrics(x, labels, backend=backend), abs=ATOL)


def test_first_neighbor_exclusion_is_for_leave_one_out_only():
    x, labels = clustered(20, 4, 4, seed=5)
    with pytest.raises(ValueError, match="applies to leave-one-out"):
        retrieval_metrics(x, labels, x, labels, exclude="first_neighbor")
    with pytest.raises(ValueError, match="exclude must be one of index, first_neighbor"):
        retrieval_metrics(x, labels, exclude="self")


def test_ties_ordered_by_gallery_index(backend):
    """Many equal scores around the cut: both backends pick and order them by index."""
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    gallery = np.array([[0.0, 1.0]] * 4 + [[1.0, 0.0]] + [[0.0, -1.0]] * 3, dtype=np.float32)
    neighbors = knn.nearest_neighbors(
        torch.from_numpy(query),
        torch.from_numpy(gallery),
        3,
        metric="inner_product",
        backend=backend,
    )
    assert neighbors.tolist() == [[4, 0, 1]]


def nudged_up(score):
    return np.nextafter(np.float32(score), np.float32(np.inf))


def test_copies_scored_an_ulp_apart_still_tie_in_the_torch_search(monkeypatch):
    """Rows 1 and 4 are one item; the score block is made to round row 4 an ulp higher, as a
    multi-threaded BLAS can: they still tie, and come by index, also at the cut."""
    gallery = torch.tensor([[0.0, 1.0], [0.6, 0.8], [-1.0, 0.0], [0.0, -1.0], [0.6, 0.8]])
    scores = knn._scores

    def rounding_apart(query, gallery, sq_norms, buffer):
        out = scores(query, gallery, sq_norms, buffer)
        out[:, 4] = torch.from_numpy(nudged_up(out[:, 4].numpy()))
        return out

    monkeypatch.setattr(knn, "_scores", rounding_apart)
    query = torch.tensor([[0.6, 0.8]])
    for k, expected in ((1, [1]), (3, [1, 4, 0])):
        assert knn.nearest_neighbors(query, gallery, k, metric="inner_product", backend="torch").tolist() == [expected]
    assert knn.find_twins(gallery).first.tolist() == [0, 1, 2, 3, 1]
    assert knn.find_twins(gallery[:4]) is None


def test_twins_are_rows_equal_as_numbers_among_many():
    """Among 20,000 random rows, the copies are found whatever their place (their first copy the
    lowest index), -0.0 equals 0.0, and rows that differ in one coordinate are not twins."""
    gallery = torch.randn(20_000, 16)
    gallery[[7, 19_999]] = gallery[12_345].clone()
    gallery[100, 3] = 0.0
    gallery[101] = gallery[100].clone()
    gallery[101, 3] = -0.0
    gallery[200] = gallery[300].clone()
    gallery[200, 15] = torch.nextafter(gallery[300, 15], torch.tensor(10.0))
    twins = knn.find_twins(gallery)
    assert twins.copies.tolist() == [101, 12_345, 19_999]
    assert twins.first[[7, 12_345, 19_999, 100, 101, 200, 300]].tolist() == [7, 7, 7, 100, 100, 200, 300]


def test_copies_listed_an_ulp_apart_tie_in_the_faiss_and_symmetric_lists():
    """The (rows, k + 1) lists the FAISS and symmetric searches settle: the copies 1 and 4 of an
    item, listed an ulp apart with 4 first, come by index; at the cut the lower index gets in."""
    gallery = torch.tensor([[0.0, 1.0], [0.6, 0.8], [-1.0, 0.0], [0.0, -1.0], [0.6, 0.8]])
    query = torch.tensor([[0.6, 0.8]])
    twins = knn.find_twins(gallery)
    for k, expected in ((1, [1]), (2, [1, 4])):
        values = torch.tensor([[nudged_up(1.0), 1.0, 0.8][: k + 1]])
        indices = torch.tensor([[4, 1, 0][: k + 1]])
        settled = knn.first_k_settled(values, indices, k, query, gallery, "inner_product", None, twins)
        assert settled.tolist() == [expected]

def test_torch_and_numpy_inputs_agree(backend):
    x, labels = clustered(120, 6, 10, seed=2)
    from_numpy = retrieval_metrics(x, labels, backend=backend)
    from_torch = retrieval_metrics(torch.from_numpy(x), torch.from_numpy(labels), backend=backend)
    assert from_numpy == from_torch


@pytest.mark.parametrize("separate_gallery", [False, True])
def test_agrees_with_pml(separate_gallery):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    x, labels = clustered(300, 16, 30, seed=3, spread=1.5)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # PML searches L2: same order as cosine
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    if separate_gallery:
        args = (x[:100], labels[:100], x[100:], labels[100:])
        pml = calculator.get_accuracy(*map(torch.from_numpy, args), ref_includes_query=False)
    else:
        args = (x, labels)
        pml = calculator.get_accuracy(*map(torch.from_numpy, args))
    ours = retrieval_metrics(*args, recall_ks=(1,))
    assert ours["recall@1"] == pytest.approx(pml["precision_at_1"], abs=ATOL)
    assert ours[R_PRECISION] == pytest.approx(pml["r_precision"], abs=ATOL)
    assert ours[MAP_AT_R] == pytest.approx(pml["mean_average_precision_at_r"], abs=ATOL)


def test_nmi_sanity():
    x, labels = clustered(200, 8, 5, seed=4, spread=0.05)
    assert retrieval_metrics(x, labels, nmi=True)[NMI] > 0.95
    shuffled = np.random.default_rng(0).permutation(labels)
    assert retrieval_metrics(x, shuffled, nmi=True)[NMI] < 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "annoy"}, "backend must be one of auto, faiss, torch"),
        ({"distance": "dot"}, "distance must be one of cosine, euclidean"),
        ({"recall_ks": (0, 5)}, "recall_ks must be positive integers"),
        ({"gallery": np.zeros((3, 4), np.float32)}, "pass gallery and gallery_labels together"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    x, labels = clustered(10, 4, 2, seed=5)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(x, labels, **kwargs)


def test_numpy_views_with_negative_strides_are_accepted(backend):
    x, labels = clustered(120, 6, 10, seed=14)
    views = (x[::-1], labels[::-1], x[::-2, ::-1], labels[::-2])  # the gallery reversed along both axes
    ks = (1, 4)
    copies = [np.ascontiguousarray(view) for view in views]
    with_gallery = retrieval_metrics(views[0][:, ::-1], views[1], *views[2:], recall_ks=ks, backend=backend)
    assert_metrics_equal(with_gallery, brute_force(copies[0][:, ::-1], *copies[1:], ks, "cosine"))
    leave_one_out = retrieval_metrics(*views[:2], recall_ks=ks, backend=backend)
    assert_metrics_equal(leave_one_out, brute_force(*copies[:2], None, None, ks, "cosine"))


def test_labels_of_any_hashable_kind_name_classes(backend):
    """Strings (a numpy array, a list) and an object array of ints, strings and tuples give the
    metrics of the integer labels they stand for, in query and gallery alike."""
    x, labels = clustered(150, 6, 12, seed=15)
    names = np.array([f"class {label}" for label in labels])
    mixed = np.empty(len(labels), dtype=object)
    mixed[:] = [[label, f"c{label}", ("t", label)][label % 3] for label in labels]
    ks = (1, 2, 8)
    expected = brute_force(x[:50], labels[:50], x[50:], labels[50:], ks, "cosine")
    for query_labels, gallery_labels in ((names[:50], list(names[50:])), (mixed[:50], mixed[50:])):
        actual = retrieval_metrics(x[:50], query_labels, x[50:], gallery_labels, recall_ks=ks, backend=backend)
        assert_metrics_equal(actual, expected)
    actual = retrieval_metrics(x, mixed, recall_ks=ks, backend=backend)
    assert_metrics_equal(actual, brute_force(x, labels, None, None, ks, "cosine"))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.arange(6) / 2, r"query_labels must be 6 labels in a 1-D array of integers or hashable values.*float64"),
        (np.zeros((6, 1), int), r"query_labels must be 6 labels .* got shape \(6, 1\)"),
        (np.array([[0], [1], [0], [1], [0], [1]] + [None], dtype=object)[:6], "query_labels must be integers or hash"),
    ],
)
def test_labels_that_name_no_class_are_refused(labels, message):
    x, _ = clustered(6, 4, 2, seed=5)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(x, labels)


def test_embeddings_without_dimensions_are_refused():
    labels = np.arange(6) % 2
    refused = r"query must be a \(num, dim\) float array with num, dim >= 1; got shape \(6, 0\)"
    with pytest.raises(ValueError, match=refused):
        retrieval_metrics(np.zeros((6, 0), np.float32), labels)
    with pytest.raises(ValueError, match=r"gallery must be a \(num, dim\) .* got shape \(6, 0\)"):
        retrieval_metrics(np.ones((6, 4), np.float32), labels, np.zeros((6, 0), np.float32), labels)


def test_cosine_does_not_depend_on_the_scale_of_a_row(backend):
    """Rows scaled by 1e-30 to 1e30 (their squared norms overflow or fall below F.normalize's
    epsilon in float32) rank as the unscaled rows do; two rows of zeros score 0 with every item."""
    x, labels = clustered(150, 8, 12, seed=16)
    scales = 10.0 ** np.random.default_rng(16).uniform(-30, 30, size=(len(x), 1))
    scaled = (x * scales).astype(np.float32)
    scaled[[3, 77]] = 0
    ks = (1, 4, 16)
    assert (scales < 1e-14).any() and (scales > 1e20).any()
    for args in ((scaled, labels, None, None), (scaled[:50], labels[:50], scaled[50:], labels[50:])):
        actual = retrieval_metrics(*(a for a in args if a is not None), recall_ks=ks, backend=backend)
        assert_metrics_equal(actual, brute_force(*args, ks, "cosine"))


@pytest.mark.parametrize("offset", [0, 100, 1000, 10_000])
@pytest.mark.parametrize("dim", [8, 32])
def test_euclidean_far_from_the_origin_matches_float64(backend, dim, offset, small_blocks):
    """Clusters offset from the origin: float32 scores 2<q, g> - |g|^2 of the raw coordinates lose
    the distances' digits there; the metrics stay those of a float64 brute force."""
    x, labels = clustered(200, dim, 25, seed=17, spread=0.4)
    x = (x + np.float32(offset)).astype(np.float32)
    ks = (1, 2, 8)
    for args in ((x, labels, None, None), (x[:60], labels[:60], x[60:], labels[60:])):
        actual = retrieval_metrics(*(a for a in args if a is not None), recall_ks=ks, distance="euclidean",
                                   backend=backend)
        assert_metrics_equal(actual, brute_force(*args, ks, "euclidean"))


def test_no_query_with_a_positive_is_an_error():
    x, labels = clustered(10, 4, 2, seed=6)
    with pytest.raises(ValueError, match="no query has a same-label item"):
        retrieval_metrics(x, labels, x, labels + 100)


@pytest.mark.gpu  # skipped without CUDA by tests/conftest.py
def test_cuda_matches_cpu(backend):
    x, labels = clustered(300, 16, 20, seed=7)
    on_cpu = retrieval_metrics(x, labels, recall_ks=(1, 4, 16), backend=backend)
    on_cuda = retrieval_metrics(
        torch.from_numpy(x).cuda(),
        torch.from_numpy(labels).cuda(),
        recall_ks=(1, 4, 16),
        backend=backend,
    )
    assert_metrics_equal(on_cuda, on_cpu)


def with_duplicates(x, labels):
    """Every 7th item made an exact copy of the next one; every 14th of them with another label."""
    x, labels = x.copy(), labels.copy()
    copies = np.arange(0, len(x) - 1, 7)
    x[copies] = x[copies + 1]
    labels[copies] = labels[copies + 1] + (copies % 14 == 0)
    return x, labels


@pytest.mark.parametrize("metric", knn.METRICS)
def test_symmetric_search_equals_plain_search(metric, small_blocks):
    """Half the scores, mirrored across blocks, give the plain search's neighbours exactly.

    Integer grid points: every score is exact in float32, so the many equal scores (duplicates,
    equal distances) are ties for both searches, settled by gallery index. Rows: all but one,
    so the symmetric search serves them; k up to the whole gallery.
    """
    rng = np.random.default_rng(10)
    x = torch.from_numpy(rng.integers(-2, 3, size=(150, 3)).astype(np.float32))
    rows = torch.arange(1, len(x))
    for k in (1, 4, 13, len(x) - 1):
        by_halves, plain = (
            symmetric.leave_one_out_search(x, rows, k, metric=metric, backend=backend)[0]
            for backend in ("symmetric", "torch")
        )
        assert torch.equal(by_halves, plain), k


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_symmetric_metrics_equal_plain_metrics(distance, small_blocks):
    """Random clustered data with exact duplicates, of the same label and of another one."""
    x, labels = with_duplicates(*clustered(160, 8, 15, seed=11))
    ks = (1, 2, 8, 100)
    by_halves, plain = (
        retrieval_metrics(x, labels, recall_ks=ks, distance=distance, backend=backend)
        for backend in ("symmetric", "torch")
    )
    assert_metrics_equal(by_halves, plain)
    assert_metrics_equal(by_halves, brute_force(x, labels, None, None, ks, distance))


@pytest.mark.parametrize("metric", knn.METRICS)
def test_symmetric_search_ranks_nearest_group_member(metric, small_blocks):
    """The symmetric search's rank range for each row's nearest same-group item holds the rank a
    float64 ranking gives it, is a single rank for (almost) every row, and says "at least cap"
    for the rows ranking deeper."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    groups = rng.integers(0, 40, size=300)
    cap = 40
    _, ranks = symmetric.leave_one_out_search(
        torch.from_numpy(x),
        torch.arange(300),
        3,
        metric=metric,
        backend="symmetric",
        groups=torch.from_numpy(groups),
        cap=cap,
    )
    x64 = x.astype(np.float64)
    distance = -x64 @ x64.T if metric == "inner_product" else ((x64[:, None] - x64[None]) ** 2).sum(-1)
    expected = []
    for q in range(len(x)):
        ranked = sorted((g for g in range(len(x)) if g != q), key=lambda g: (distance[q, g], g))
        expected.append(next(i for i, g in enumerate(ranked) if groups[g] == groups[q]))
    expected = torch.tensor(expected)
    deep = expected >= cap
    assert 0 < deep.sum() < len(x) // 2
    assert (ranks.low[deep] >= cap).all()
    low, high = ranks.low[~deep], ranks.high[~deep]
    assert ((low <= expected[~deep]) & (expected[~deep] <= high)).all()
    assert (low == high).float().mean() > 0.95


@pytest.mark.parametrize("num", [1, 3, 15, 16, 17, 33, 129])
@pytest.mark.parametrize("rows", [4, 8, 16])
def test_symmetric_blocks_cover_each_pair_once(num, rows):
    """The pass's three phases together cover each pair once: the sample (the first ``rows`` rows)
    with itself, then every other row with the sample, then the others among themselves."""
    covered = np.zeros((num, num), int)
    sample = min(rows, num)
    for phase, blocks in enumerate(symmetric._schedule(num, rows)):
        for block_i, block_j in blocks:
            covered[block_i, block_j] += 1
            if block_i != block_j:
                covered[block_j, block_i] += 1
            if phase == 0:
                assert block_i.stop <= sample and block_j.stop <= sample
            elif phase == 1:
                assert block_i.start >= sample and block_j == slice(0, sample)
            else:
                assert block_i.start >= sample and block_j.start >= sample
    assert (covered == 1).all()


@pytest.mark.parametrize("metric", knn.METRICS)
def test_best_in_group_scores(metric, small_blocks):
    """Each row's best score among the rest of its group, by groups of several sizes, one of
    them larger than a block (so its rows go in steps); a row alone gets +inf."""
    rng = np.random.default_rng(13)
    groups = np.concatenate([np.repeat(np.arange(20), 3), np.full(100, 20), [21, 22, 22]])
    x = rng.standard_normal((len(groups), 5)).astype(np.float32)
    sq_norms = (x * x).sum(1) if metric == "l2" else None
    best = group_rank.best_in_group(x, groups, sq_norms)
    x64 = x.astype(np.float64)
    scores = x64 @ x64.T if metric == "inner_product" else 2 * x64 @ x64.T - (x64 * x64).sum(1)[None, :]
    same = (groups[:, None] == groups[None, :]) & ~np.eye(len(x), dtype=bool)
    expected = np.where(same, scores, -np.inf).max(1)
    expected[~same.any(1)] = np.inf
    np.testing.assert_allclose(best, expected, rtol=1e-5, atol=1e-5)


def test_rows_of_ordinary_size_are_normalised_bit_for_bit_as_before():
    """The rescaling that guards extreme rows is by a power of two: ordinary rows come out exactly as
    plain L2 normalisation makes them, so earlier runs' numbers stay what they were."""
    from dml_bench.evaluation.retrieval import _unit_rows

    x = torch.from_numpy(clustered(500, 32, 10, seed=7)[0]) * 3.7
    assert torch.equal(_unit_rows(x.clone()), torch.nn.functional.normalize(x, dim=1))
