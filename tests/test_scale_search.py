"""Evaluation at iNaturalist scale, tried on small cases: long-tailed classes whose queries need
searches of very different depths, a class larger than FAISS's GPU k limit (forced down to 4),
and score blocks forced tiny; every backend against the float64 brute force."""

import faiss
import numpy as np
import pytest
import torch

from dml_bench.bench.evaluation import inat_class_sizes, search_depth, synthetic_inat
from dml_bench.evaluation import faiss_gpu, heap_kernels, knn, retrieval_metrics, symmetric
from dml_bench.evaluation import heaps as depth_heaps
from dml_bench.evaluation.heaps import DepthHeaps
from dml_bench.evaluation.threads import Threads
from tests.test_retrieval_metrics import BACKENDS, assert_metrics_equal, brute_force


@pytest.fixture
def small_blocks(monkeypatch):
    """Score blocks of a few rows (16-row symmetric blocks), so every search crosses many."""
    monkeypatch.setattr(knn, "BLOCK_BYTES", 4 * 1024)


def long_tailed(seed, sizes=(40, 17, 9, 6, 5, 4, 3, 3, 2, 2, 2, 2), dim=6):
    """Clustered embeddings of classes of ``sizes`` (one far larger than the others), shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    centres = rng.standard_normal((len(sizes), dim))
    return (centres[labels] + 1.2 * rng.standard_normal((len(labels), dim))).astype(np.float32), labels


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("ks", [(1, 2, 4), (1, 8, 60)])
def test_long_tailed_classes_match_brute_force(distance, ks, small_blocks):
    """(1, 2, 4): every K within the largest R, each query searched to its own depth; (1, 8, 60):
    K beyond it, the deeper ranks counted. Every backend gives the brute force's numbers."""
    x, labels = long_tailed(seed=0)
    expected = brute_force(x, labels, None, None, ks, distance)
    for backend in BACKENDS:
        assert_metrics_equal(retrieval_metrics(x, labels, recall_ks=ks, distance=distance, backend=backend), expected)


@pytest.mark.parametrize("metric", knn.METRICS)
def test_own_depths_give_the_exact_neighbours_to_each_depth(metric, small_blocks):
    """With a depth per row, the symmetric search lists each row's exact nearest up to its depth
    (at least), as the plain search orders them, and -1 only beyond it."""
    x, _ = long_tailed(seed=1)
    x = torch.from_numpy(x)
    rows = torch.arange(len(x))
    depths = torch.from_numpy(np.random.default_rng(2).integers(1, 40, size=len(x)))
    depths[5] = 60  # one row as deep as the search
    found, _ = symmetric.leave_one_out_search(x, rows, 60, metric=metric, backend="symmetric", depths=depths)
    plain, _ = symmetric.leave_one_out_search(x, rows, 60, metric=metric, backend="torch")
    within = torch.arange(60) < depths[:, None]
    assert torch.equal(found[within], plain[within])
    listed = found >= 0
    assert (listed | ~within).all() and torch.equal(found[listed], plain[listed])
    assert (~listed).any()  # the shallow rows' heaps were smaller


@pytest.mark.parametrize("metric", knn.METRICS)
def test_hits_from_the_lists_are_those_of_the_plain_neighbours(metric, small_blocks):
    """leave_one_out_hits, for a subset of the rows in another order and a depth each, tells of
    each row's own depth of neighbours what the plain search's neighbours tell, as many rows as
    asked in their order."""
    x, labels = long_tailed(seed=7)
    x, groups = torch.from_numpy(x), torch.from_numpy(labels)
    rng = np.random.default_rng(8)
    rows = torch.from_numpy(rng.permutation(len(x))[: len(x) * 3 // 4])
    depths = torch.from_numpy(rng.integers(1, 40, size=len(rows)))
    hits, _ = symmetric.leave_one_out_hits(x, rows, 40, groups, metric=metric, backend="symmetric", depths=depths)
    plain, _ = symmetric.leave_one_out_search(x, rows, 40, metric=metric, backend="torch")
    within = torch.arange(40) < depths[:, None]
    expected = symmetric.same_group(plain, groups, groups[rows])
    assert hits.shape == (len(rows), 40) and torch.equal(hits[within], expected[within])
    assert expected[within].any() and (~expected[within]).any()


def test_depth_heaps_keep_each_row_its_take():
    """A heap per row, as wide as the row's take; rows of one take in a row make a run; a block
    offered to the rows leaves each its best, listed best first."""
    with Threads(2) as threads:
        heaps = DepthHeaps([2, 2, 3, 1, 3], threads)
        assert heaps.starts.tolist() == [0, 2, 3, 4] and heaps.ends.tolist() == [2, 3, 4, 5]
        assert (heaps.floors == heap_kernels.EMPTY).all()
        scores = np.array([[3, 1, 2], [1, 3, 2], [2, 1, 3], [1, 2, 3], [3, 2, 1]], np.float32)
        heaps.offer(scores, 0, 100)
        assert heaps.floors.tolist() == [2, 2, 1, 3, 1]  # each heap's worst
        assert heaps.complete().all()
        runs = heaps.results()
    assert [first for first, _, _ in runs] == [0, 2, 3, 4]
    assert runs[0][1].tolist() == [[3, 2], [3, 2]] and runs[0][2].tolist() == [[100, 102], [101, 102]]
    assert runs[1][1].tolist() == [[3, 2, 1]] and runs[1][2].tolist() == [[102, 100, 101]]
    assert runs[2][2].tolist() == [[102]] and runs[3][2].tolist() == [[100, 101, 102]]


@pytest.mark.parametrize("pending", [3, depth_heaps.PENDING])
@pytest.mark.parametrize("metric", knn.METRICS)
def test_block_pass_offers_rows_and_columns_what_a_plain_loop_keeps(metric, pending, monkeypatch):
    """offer with column_side, then offer_pending: each row's heap and each column's heap end with
    what a plain loop over the scores keeps, l2's scores 2<i, j> - |j|^2 included; floors are the
    heaps' worst. With room for 3 waiting scores, offer offers them whenever the room is full."""
    monkeypatch.setattr(depth_heaps, "PENDING", pending)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    sq_norms = (x * x).sum(1) if metric == "l2" else None
    rows, columns, take = slice(0, 12), slice(12, 30), 4
    inner = x[rows] @ x[columns].T
    with Threads(1) as threads:
        heaps = DepthHeaps(np.full(30, take), threads, sq_norms=sq_norms)
        heaps.offer(np.ascontiguousarray(inner), rows.start, columns.start, column_side=True)
        if pending > inner.size:  # the columns' scores wait
            assert heaps.floors[columns].tolist() == [heap_kernels.EMPTY] * 18
        heaps.offer_pending(0)
        found = torch.cat([ids for _, _, ids in heaps.results()])
    norms = np.zeros(30, np.float32) if sq_norms is None else sq_norms
    two = 2 if metric == "l2" else 1
    row_scores = two * inner - norms[columns][None, :]
    column_scores = two * inner.T - norms[rows][None, :]
    for i in range(12):
        assert found[i].tolist() == (12 + np.argsort(-row_scores[i], kind="stable")[:take]).tolist()
    for j in range(18):
        assert found[12 + j].tolist() == np.argsort(-column_scores[j], kind="stable")[:take].tolist()


@pytest.mark.parametrize("threads", [1, 3])
def test_symmetric_search_is_the_same_on_any_number_of_threads(threads, small_blocks, monkeypatch):
    """The pass splits blocks into tiles per thread: 1 or 3 threads list what 2 do."""
    x, _ = long_tailed(seed=6)
    x = torch.from_numpy(x)
    rows = torch.arange(len(x))
    expected, _ = symmetric.leave_one_out_search(x, rows, 20, metric="l2", backend="symmetric")
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    found, _ = symmetric.leave_one_out_search(x, rows, 20, metric="l2", backend="symmetric")
    assert torch.equal(found, expected)


class LimitedGpuIndex:
    """FAISS's GPU flat index as far as k goes: it refuses k above ``knn.FAISS_GPU_MAX_K``, as the
    GPU one does (its selection kernels stop at 2,048); the search itself is the CPU index's."""

    asked: list[int] = []

    def __init__(self, index):
        self.index = index

    def add(self, x):
        self.index.add(x)

    def search(self, x, k):
        assert k <= knn.FAISS_GPU_MAX_K, f"a GPU search of k={k} > {knn.FAISS_GPU_MAX_K}"
        LimitedGpuIndex.asked.append(k)
        return self.index.search(x, k)


@pytest.fixture
def gpu_limit_of_4(monkeypatch):
    monkeypatch.setattr(knn, "FAISS_GPU_MAX_K", 4)
    monkeypatch.setattr(faiss_gpu, "gpu_state", lambda: faiss_gpu.USABLE)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", LimitedGpuIndex)
    LimitedGpuIndex.asked = []


@pytest.mark.parametrize("backend", BACKENDS)
def test_classes_larger_than_the_gpu_k_limit(backend, gpu_limit_of_4, small_blocks):
    """MAP@R of a class of 40 (R = 39) with a GPU limit of k = 4: searches deeper than the limit go
    to the CPU index, shallow ones (a separate gallery of pairs) to the "GPU"; all exact."""
    x, labels = long_tailed(seed=3)
    ks = (1, 2, 4)
    assert_metrics_equal(retrieval_metrics(x, labels, recall_ks=ks, backend=backend),
                         brute_force(x, labels, None, None, ks, "cosine"))
    gallery = np.isin(labels, np.arange(8, 12)) & (np.arange(len(x)) % 2 == 0)  # classes of two: one each
    args = (x[~gallery], labels[~gallery], x[gallery], labels[gallery])
    assert_metrics_equal(retrieval_metrics(*args, recall_ks=(1, 2), backend=backend),
                         brute_force(*args, (1, 2), "cosine"))
    if backend != "torch":
        assert LimitedGpuIndex.asked and max(LimitedGpuIndex.asked) <= 4


def test_inat_like_sizes_and_search_depth():
    sizes = inat_class_sizes(136_093, 2_452, np.random.default_rng(0))
    assert sizes.sum() == 136_093 and len(sizes) == 2_452 and sizes.min() >= 2 and sizes.max() == 1_003
    assert np.median(sizes) < sizes.mean() < 2 * np.median(sizes)  # long-tailed
    x, labels = synthetic_inat(6_000, 8, seed=0)
    assert x.shape == (6_000, 8) and np.bincount(labels).max() == 1_003
    assert search_depth(labels, (1, 4, 16, 32)) == 1_003 and search_depth(np.repeat(np.arange(5), 3), (1, 10)) == 11


def test_depth_heaps_keep_only_what_lies_above_a_guessed_floor():
    """``start`` (from a first block) and ``raise_floors`` (after ``offer``) leave the same heaps:
    with a rank, the scores above that best score g and placeholders (g, id -1) that mark the
    heap incomplete; without one (rank 0), the heap's width of the best."""
    scores = np.array([[5, 1, 4, 2, 3], [5, 1, 4, 2, 3]], np.float32)
    ranks = np.array([2, 0])
    with Threads(1) as threads:
        started, added = DepthHeaps([3, 3], threads), DepthHeaps([3, 3], threads)
        started.start(scores, 0, 10, ranks)
        added.offer(scores, 0, 10)
        added.raise_floors(slice(0, 2), ranks)
        for heaps in (started, added):
            assert heaps.floors.tolist() == [4, 3]
            assert heaps.complete().tolist() == [False, True]
            _, values, ids = heaps.results()[0]
            assert values.tolist() == [[5, 4, 4], [5, 4, 3]]
            assert ids.tolist() == [[10, -1, -1], [10, 12, 14]]


@pytest.mark.parametrize("metric", knn.METRICS)
@pytest.mark.parametrize("failure", [0.9, symmetric.GUESS_FAILURE])
def test_rows_whose_guessed_floor_was_too_high_are_searched_again(metric, failure, small_blocks, monkeypatch):
    """With floors guessed from the sample at a 0.9 chance of being too high, many rows end
    incomplete and are searched again; the neighbours are the plain search's either way."""
    monkeypatch.setattr(symmetric, "GUESS_FAILURE", failure)
    incomplete = []
    complete = DepthHeaps.complete
    monkeypatch.setattr(DepthHeaps, "complete", lambda self: incomplete.append(~complete(self)) or complete(self))
    x, _ = long_tailed(seed=3, sizes=(60, 30, 20, 12, 9, 8, 7, 6, 5, 4, 4, 3, 3, 2, 2, 2))
    x = torch.from_numpy(x)
    rows = torch.arange(len(x))
    depths = torch.from_numpy(np.random.default_rng(4).integers(8, 60, size=len(x)))
    found, _ = symmetric.leave_one_out_search(x, rows, 60, metric=metric, backend="symmetric", depths=depths)
    plain, _ = symmetric.leave_one_out_search(x, rows, 60, metric=metric, backend="torch")
    within = torch.arange(60) < depths[:, None]
    assert torch.equal(found[within], plain[within])
    assert incomplete[0].sum() > (10 if failure == 0.9 else -1)


def test_sorted_heaps_list_best_score_first_then_lowest_id():
    """sort_heaps' integer keys order as a plain sort by (-score, id) does: negative, tied and
    infinite scores, the empty entry's score and placeholder ids (-1) included."""
    rng = np.random.default_rng(14)
    widths = rng.integers(1, 40, 200)
    offsets = np.r_[0, np.cumsum(widths)]
    values = rng.standard_normal(offsets[-1]).astype(np.float32)
    ids = rng.integers(0, 2**31 - 1, len(values)).astype(np.int32)
    for special in (np.float32(0.5), np.float32(-np.inf), heap_kernels.EMPTY):
        values[rng.integers(0, len(values), 40)] = special
    ids[rng.integers(0, len(values), 40)] = -1
    sorted_values, sorted_ids = values.copy(), ids.copy()
    heap_kernels.sort_heaps(sorted_values, sorted_ids, offsets, 0, len(widths))
    for start, stop in zip(offsets[:-1], offsets[1:]):
        order = sorted(range(start, stop), key=lambda j: (-values[j], ids[j]))
        assert sorted_values[start:stop].tolist() == values[order].tolist()
        assert sorted_ids[start:stop].tolist() == ids[order].tolist()
