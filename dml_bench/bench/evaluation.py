"""The evaluation benchmark's workloads (scripts/bench_eval.py runs each in a process of its own):
SOP-like synthetic embeddings, and the methods timed on them: ours, PML's AccuracyCalculator, a raw
FAISS k-NN search, and the matrix product alone. Imports are inside each method, so that a worker
process loads only what its method needs."""

import numpy as np

RECALL_KS = (1, 10, 100, 1000)
FAISS_K = 1001
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
    labels = np.repeat(np.arange(len(sizes)), sizes)
    superclass = rng.integers(0, NUM_SUPERCLASSES, size=len(sizes))
    super_centres = _unit(rng.standard_normal((NUM_SUPERCLASSES, dim)))
    centres = _unit(super_centres[superclass] + 1.5 * _unit(rng.standard_normal((len(sizes), dim))))
    items = _unit(centres[labels] + 2.2 * _unit(rng.standard_normal((n, dim))))
    order = rng.permutation(n)
    return items[order].astype(np.float32), labels[order]


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_ours(x, labels, backend, device):
    import torch

    from dml_bench.evaluation import retrieval_metrics

    return retrieval_metrics(
        torch.from_numpy(x).to(device),
        torch.from_numpy(labels),
        recall_ks=RECALL_KS,
        backend=backend,
    )


def run_pml(x, labels, device):
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(
        include=tuple(pml for _, pml in SHARED_METRICS),
        k="max_bin_count",
        device=torch.device(device),
    )
    accuracy = calculator.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
    return {ours: accuracy[pml] for ours, pml in SHARED_METRICS}


def run_faiss(x, labels, device):
    import faiss

    from dml_bench.evaluation import faiss_gpu

    index = faiss.IndexFlatIP(x.shape[1])
    if device != "cpu" and faiss_gpu.gpu_state() == faiss_gpu.USABLE:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    index.search(x, FAISS_K)
    return {}


def run_matmul(x, labels, device):
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
