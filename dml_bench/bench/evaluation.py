"""The evaluation benchmark's workloads (scripts/bench_eval.py runs each in a process of its own):
synthetic embeddings shaped like a benchmark's test set (``CASES``), and the methods timed on
them: ours, PML's AccuracyCalculator, a raw FAISS k-NN search of the depth ours searches, and the
matrix product alone. Imports are inside each method, so that a worker process loads only what
its method needs."""

from typing import NamedTuple

import numpy as np

OTHERS = ("pml", "faiss", "matmul")  # what ours is compared with
NUM_SUPERCLASSES = 12  # SOP's product categories
# Checked between ours and PML: (our key, PML's key).
SHARED_METRICS = (
    ("recall@1", "precision_at_1"),
    ("r_precision", "r_precision"),
    ("map@r", "mean_average_precision_at_r"),
)
TOLERANCE = 1e-4


def synthetic_sop(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n, dim) float32, L2-normalised, and labels (n,): classes of 2-12 items.

    Class centres scatter around 12 superclass centres and items around their class centre,
    so neighbours of other classes of the same superclass compete, as in SOP.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 13, size=n // 2 + 1)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n, side="right")]
    rest = n - sizes.sum()
    if rest >= 2:
        sizes = np.append(sizes, rest)
    elif rest == 1:
        sizes[np.argmax(sizes < 12)] += 1
    return _clustered(sizes, dim, NUM_SUPERCLASSES, rng)


INAT_TEST = (136_093, 2_452)  # iNaturalist 2018's test split (Smooth-AP): images, species
INAT_LARGEST_CLASS = 1_003  # iNaturalist 2018 caps a species' training images at 1,000 (+3 val)


def inat_class_sizes(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``num_classes`` sizes summing to ``n``, long-tailed as iNaturalist's: log-normal, clipped to
    2..INAT_LARGEST_CLASS, the largest exactly that (MAP@R then searches 1,002 deep)."""
    sizes = np.clip(rng.lognormal(3.3, 1.0, num_classes), 2, INAT_LARGEST_CLASS)
    sizes = np.maximum(2, np.round(sizes * (n - INAT_LARGEST_CLASS) / sizes[1:].sum())).astype(np.int64)
    sizes[0] = INAT_LARGEST_CLASS
    excess = sizes.sum() - n  # rounding: take from / give to the largest of the others
    order = np.argsort(sizes[1:])[::-1] + 1
    for i in order[: abs(excess)]:
        sizes[i] -= np.sign(excess)
    return sizes


def synthetic_inat(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n, dim) float32, L2-normalised, and labels (n,): ``n * 2452 / 136093`` classes
    of iNaturalist-like sizes (``inat_class_sizes``), around 10 superclass centres (kingdoms and
    classes of life), as ``synthetic_sop``."""
    rng = np.random.default_rng(seed)
    num_classes = max(2, round(n * INAT_TEST[1] / INAT_TEST[0]))
    sizes = inat_class_sizes(n, num_classes, rng) if n >= 4 * INAT_LARGEST_CLASS else _even_sizes(n, num_classes)
    return _clustered(sizes, dim, 10, rng)


def _even_sizes(n, num_classes):
    sizes = np.full(num_classes, n // num_classes)
    sizes[: n % num_classes] += 1
    return sizes


def _clustered(sizes, dim, num_superclasses, rng):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    superclass = rng.integers(0, num_superclasses, size=len(sizes))
    super_centres = _unit(rng.standard_normal((num_superclasses, dim)))
    centres = _unit(super_centres[superclass] + 1.5 * _unit(rng.standard_normal((len(sizes), dim))))
    items = _unit(centres[labels] + 2.2 * _unit(rng.standard_normal((len(labels), dim))))
    order = rng.permutation(len(labels))
    return items[order].astype(np.float32), labels[order]


class Case(NamedTuple):
    """A benchmark's test set in synthetic form: its size, embedding size, the published K."""

    n: int
    dim: int
    recall_ks: tuple[int, ...]
    data: object  # (n, dim, seed) -> (embeddings, labels)


CASES = {
    "sop": Case(60_502, 512, (1, 10, 100, 1000), lambda n, dim, seed: synthetic_sop(n, dim, seed)),
    "inat": Case(INAT_TEST[0], 128, (1, 4, 16, 32), lambda n, dim, seed: synthetic_inat(n, dim, seed)),
}


def search_depth(labels: np.ndarray, recall_ks) -> int:
    """How many neighbours an exact search keeps for MAP@R and every Recall@K in one pass: the
    largest R (class size - 1) or the largest K, whichever is larger; plus one for the query
    itself, as a raw FAISS search returns it."""
    return max(int(np.bincount(labels).max()) - 1, max(recall_ks)) + 1


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_ours(x, labels, backend, device, recall_ks):
    import torch

    from dml_bench.evaluation import retrieval_metrics

    return retrieval_metrics(
        torch.from_numpy(x).to(device),
        torch.from_numpy(labels),
        recall_ks=recall_ks,
        backend=backend,
    )


def run_pml(x, labels, device, recall_ks):
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(
        include=tuple(pml for _, pml in SHARED_METRICS),
        k="max_bin_count",
        device=torch.device(device),
    )
    accuracy = calculator.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
    return {ours: accuracy[pml] for ours, pml in SHARED_METRICS}


def run_faiss(x, labels, device, recall_ks):
    """A bare exact k-NN search of every item, k = ``search_depth``: FAISS's flat index (on the
    GPU where FAISS's GPU path runs and k is within its limit), else torch's blocked product and
    ``topk`` on CUDA."""
    import faiss

    from dml_bench.evaluation import faiss_gpu, knn

    k = search_depth(labels, recall_ks)
    if device != "cpu" and (k > knn.FAISS_GPU_MAX_K or faiss_gpu.gpu_state() != faiss_gpu.USABLE):
        return _torch_search(x, k, device)
    index = faiss.IndexFlatIP(x.shape[1])
    if device != "cpu":
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    index.search(x, k)
    return {}


def _torch_search(x, k, device):
    import torch

    from dml_bench.evaluation import knn

    x = torch.from_numpy(x).to(device)
    rows = max(1, knn.BLOCK_BYTES // (4 * len(x)))
    for start in range(0, len(x), rows):
        torch.mm(x[start : start + rows], x.T).topk(k, dim=1)
    torch.cuda.synchronize(device)
    return {}


def run_matmul(x, labels, device, recall_ks):
    """Only the matrix product any exact leave-one-out search must do, and no more: the blocks
    (I, J >= I) of the symmetric score matrix, as large as ours. A floor for every method."""
    import math

    import torch

    from dml_bench.evaluation import knn

    rows = math.isqrt(knn.BLOCK_BYTES // 16)
    if device == "cpu":  # numpy's BLAS, as ours uses on the CPU
        product, out = np.matmul, np.empty((rows, rows), np.float32)
    else:
        x = torch.from_numpy(x).to(device)
        product, out = torch.mm, x.new_empty(rows, rows)
    for i in range(0, len(x), rows):
        for j in range(i, len(x), rows):
            block_i, block_j = x[i : i + rows], x[j : j + rows]
            product(block_i, block_j.T, out=out[: len(block_i), : len(block_j)])
    if device != "cpu":
        torch.cuda.synchronize(device)
    return {}
