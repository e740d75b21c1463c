"""Evaluation at iNaturalist scale, tried on small cases: long-tailed classes whose queries need
searches of very different depths, a class larger than FAISS's GPU k limit (forced down to 4),
and score blocks forced tiny; every backend against the float64 brute force."""

import faiss
import numpy as np
import pytest
import torch

from dml_bench.bench.evaluation import inat_class_sizes, search_depth, synthetic_inat
from dml_bench.evaluation import faiss_gpu, knn, retrieval_metrics, symmetric
from dml_bench.evaluation.heaps import DepthHeaps
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


def test_depth_heaps_group_rows_by_power_of_two_width():
    heaps = DepthHeaps([2, 2, 3, 5, 8, 9, 40, 40, 33, 3])
    assert [group.take for group in heaps.groups] == [2, 4, 8, 16, 40, 4]  # a run per width
    assert heaps.starts.tolist() == [0, 2, 3, 5, 6, 9] and heaps.ends.tolist() == [2, 3, 5, 6, 9, 10]
    empty = np.finfo(np.float32).min  # what FAISS fills a heap with
    assert (heaps.worst() == empty).all()
    scores = np.arange(30, dtype=np.float32).reshape(10, 3)
    heaps.add(scores, 0, 100)
    assert heaps.worst().tolist() == [1, 4] + [empty] * 8  # only the width-2 heaps are full
    assert heaps.worst(slice(1, 3)).tolist() == [4, empty]


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
    """``start`` (from a first block) and ``raise_floors`` (after ``add``) leave the same heaps:
    with a rank, the scores above that best score and placeholders (it, id -1) that mark the heap
    incomplete; without one (rank 0), the heap's width of the best."""
    scores = np.array([[5, 1, 4, 2, 3], [5, 1, 4, 2, 3]], np.float32)
    ranks = np.array([2, 0])
    started, added = DepthHeaps([3, 3]), DepthHeaps([3, 3])
    started.start(slice(0, 2), scores, 10, ranks)
    added.add(scores, 0, 10)
    added.raise_floors(slice(0, 2), ranks)
    for heaps in (started, added):
        assert heaps.worst().tolist() == [4, 3]
        assert heaps.complete().tolist() == [False, True]
        _, values, ids = heaps.results()[0]  # FAISS lists placeholders last, at float32's lowest
        lowest = np.finfo(np.float32).min
        assert values.tolist() == [[5, lowest, lowest], [5, 4, 3]]
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
