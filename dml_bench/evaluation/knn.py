"""Exact k-nearest-neighbour search of queries in a gallery: blocked torch or a FAISS flat index;
for leave-one-out on a whole set also a symmetric search that computes half the scores.

Metrics: ``"inner_product"`` (cosine once the caller has L2-normalised the embeddings) and
``"l2"`` (squared Euclidean distance, smallest first).

Order: each row lists gallery indices nearest first; equally near items come by increasing gallery
index, also at the k-th place (which of several tied items make the cut). "Equally near" means an
equal score as the backend computed it in float32, which always holds for exact duplicates.
"""

import math

import faiss
import numpy as np
import torch

BACKENDS = ("auto", "faiss", "torch", "symmetric")
METRICS = ("inner_product", "l2")

# Largest score block (query rows x gallery items) the torch backend holds at once; the symmetric
# backend holds two blocks (one and its transpose) of half this size.
BLOCK_BYTES = 256 * 2**20
# FAISS GPU flat search selects at most this many neighbours; larger k searches on the CPU.
FAISS_GPU_MAX_K = 2048


def nearest_neighbors(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    *,
    metric: str,
    backend: str = "auto",
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gallery indices (num_query, k), int64, of each query's k nearest gallery items.

    query: (num_query, dim) and gallery: (num_gallery, dim), float32 on one device.
    exclude: (num_query,) gallery index each query may not return (in leave-one-out, the query's
    own index), or None.
    k must not exceed the gallery items a query can return.
    The result lives on the query's device for the torch backend, on the CPU otherwise
    ("symmetric" searches a separate gallery as "faiss" does).
    """
    _check_search(metric, k, len(gallery) - (exclude is not None))
    if resolve_backend(backend, query.device) == "torch":
        return _torch_knn(query, gallery, k, metric, exclude)
    return _faiss_knn(query, gallery, k, metric, exclude)


def leave_one_out_neighbors(
    embeddings: torch.Tensor, rows: torch.Tensor, k: int, *, metric: str, backend: str = "auto"
) -> torch.Tensor:
    """Indices (len(rows), k), int64, of the k nearest of ``embeddings[rows]`` among all the
    embeddings, each row skipping its own index; order as in ``nearest_neighbors``.

    The symmetric backend searches every row at the cost of half a matrix product, so it serves
    more than half of the rows; fewer are searched as "faiss" does, at their share of a product.
    """
    symmetric = resolve_backend(backend, embeddings.device) == "symmetric"
    if not symmetric or 2 * len(rows) <= len(embeddings):
        query = embeddings if len(rows) == len(embeddings) else embeddings[rows]
        return nearest_neighbors(query, embeddings, k, metric=metric, backend=backend, exclude=rows)
    _check_search(metric, k, len(embeddings) - 1)
    return _symmetric_knn(embeddings, k, metric)[rows.cpu()]


def _check_search(metric, k, candidates):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    assert 0 < k <= candidates, f"k={k} exceeds the gallery"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that ``backend`` names for embeddings on ``device``.

    "auto" is torch on CUDA: it stays on the device, with no host round trip and no limit on k.
    Elsewhere it is symmetric (FAISS for a separate gallery): on SOP-sized leave-one-out data it
    computes half the scores, and it took the least CPU time of the three on a 2-core AMD EPYC
    (docs/README-evaluation.md).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch" if device.type == "cuda" else "symmetric"
    return backend


def _torch_knn(query, gallery, k, metric, exclude):
    """Query blocks x the whole gallery, each block's scores reduced to its top k at once."""
    rows = max(1, _budget(query.device) // (4 * len(gallery) + 24 * k))
    gallery_sq_norms = _squared_norms(gallery) if metric == "l2" else None
    buffer = query.new_empty(min(rows, len(query)) * len(gallery))
    neighbors = torch.empty((len(query), k), dtype=torch.long, device=query.device)
    for start in range(0, len(query), rows):
        block = slice(start, min(start + rows, len(query)))
        scores = _scores(query[block], gallery, gallery_sq_norms, buffer)
        if exclude is not None:
            scores[torch.arange(len(scores), device=scores.device), exclude[block]] = -torch.inf
        neighbors[block] = _top_k(scores, k)
    return neighbors


def _squared_norms(embeddings):
    return (embeddings * embeddings).sum(1)


def _scores(query, gallery, gallery_sq_norms, buffer):
    """(num_query, num_gallery) similarities, larger = nearer, written into the flat buffer.

    For l2 the score is 2<q, g> - |g|^2 = |q|^2 - |q - g|^2: the same order per query as the
    distance, without the |q|^2 term that does not change it.
    """
    out = buffer[: len(query) * len(gallery)].view(len(query), len(gallery))
    if gallery_sq_norms is None:
        return torch.mm(query, gallery.T, out=out)
    return torch.addmm(gallery_sq_norms, query, gallery.T, beta=-1, alpha=2, out=out)


def _top_k(scores, k):
    """(rows, k) column indices of every row's k largest scores, by score then index."""
    take = min(k + 1, scores.shape[1])  # one look-ahead column shows a tie at the k-th place
    values, indices = scores.topk(take, dim=1)
    cut = _tied_at_cut(values, k)
    values, indices = values[:, :k], indices[:, :k]
    if cut.any():
        indices[cut] = _first_k_by_index(scores[cut], values[cut, k - 1], k)
        values[cut] = scores[cut].gather(1, indices[cut])
    _reorder(values, indices, cut | _has_tie(values))
    return indices


def _budget(device):
    """Bytes for one score block: BLOCK_BYTES, and at most a quarter of free GPU memory."""
    if device.type == "cuda":
        return min(BLOCK_BYTES, torch.cuda.mem_get_info(device)[0] // 4)
    return BLOCK_BYTES


def _tied_at_cut(values, k):
    """(rows,) bool: the k-th score equals the look-ahead (k+1)-th, so the cut is ambiguous."""
    if values.shape[1] <= k:
        return torch.zeros(len(values), dtype=torch.bool, device=values.device)
    return values[:, k - 1] == values[:, k]


def _first_k_by_index(scores, kth_score, k):
    """(rows, k) gallery indices: every score above the k-th, then the tied ones by index."""
    above = scores > kth_score[:, None]
    tied = scores == kth_score[:, None]
    room = k - above.sum(1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(1) <= room))
    return chosen.nonzero()[:, 1].view(-1, k)


def _has_tie(values):
    """(rows,) bool: two neighbours of the row have an equal score."""
    return (values[:, 1:] == values[:, :-1]).any(1)


def _reorder(values, indices, rows):
    """Sort the chosen rows (bool mask) by score, descending, then by index; in place."""
    if rows.any():
        values[rows], indices[rows] = _by_score_then_index(values[rows], indices[rows])


def _by_score_then_index(values, indices):
    indices, by_index = indices.sort(dim=1)
    values, by_score = values.gather(1, by_index).sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, by_score)


def _faiss_knn(query, gallery, k, metric, exclude):
    """FAISS flat search of k + 1 neighbours (+1 more to drop the excluded one)."""
    skip = int(exclude is not None)
    take = min(k + 1 + skip, len(gallery))
    index = _faiss_index(metric, gallery.shape[1], take)
    index.add(_as_faiss_input(gallery))
    distances, indices = index.search(_as_faiss_input(query), take)
    values = torch.from_numpy(distances if metric == "inner_product" else -distances)
    indices = torch.from_numpy(indices)
    if skip:
        values, indices = _drop_excluded(values, indices, exclude.cpu())
    return _first_k_settled(values, indices, k, query, gallery, metric, exclude)


def _first_k_settled(values, indices, k, query, gallery, metric, exclude):
    """The first k of (rows, k + 1) neighbours found by score alone, ordered by score then index.

    Rows tied at the k-th place are searched again with the torch backend, which sees the whole
    row and so can pick the lowest gallery indices among the tied items.
    """
    cut = _tied_at_cut(values, k)
    values, indices = values[:, :k], indices[:, :k]
    _reorder(values, indices, _has_tie(values))
    if cut.any():
        again = cut.to(query.device)
        excluded = None if exclude is None else exclude[again]
        indices[cut] = _torch_knn(query[again], gallery, k, metric, excluded).cpu()
    return indices


def _symmetric_knn(embeddings, k, metric):
    """(num, k) nearest of every embedding among the others, computing each score once.

    Leave-one-out scores are symmetric (s(i, j) = s(j, i)), so only the blocks (I, J) with
    J >= I are computed: half the FLOPs of a full product, which is what a search costs. Each
    block feeds the running top k + 1 of its rows I, and through its transpose those of its rows
    J (FAISS min-heaps, which skip the many scores below a row's current (k+1)-th).
    For l2 a row's score is 2<i, j> - |j|^2, as in the torch backend: both sides of a block
    share the product and subtract the other side's squared norms.
    """
    x = _as_faiss_input(embeddings)
    num, take = len(x), min(k + 1, len(x) - 1)
    values = np.empty((num, take), np.float32)
    indices = np.empty((num, take), np.int64)
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k = num, take
    heaps.val, heaps.ids = faiss.swig_ptr(values), faiss.swig_ptr(indices)
    heaps.heapify()
    sq_norms = _squared_norms(embeddings).cpu().numpy() if metric == "l2" else None
    rows = math.isqrt(BLOCK_BYTES // 16)  # a block and its transpose: half of BLOCK_BYTES
    buffers = np.empty((2, min(rows, num) ** 2), np.float32)
    for i in range(0, num, rows):
        block_i = slice(i, min(i + rows, num))
        for j in range(i, num, rows):
            block_j = slice(j, min(j + rows, num))
            blocks = _symmetric_scores(x, block_i, block_j, sq_norms, buffers)
            if i == j:
                np.fill_diagonal(blocks[0], -np.inf)  # each row skips itself
            for (first_row, first_id), block in zip(((i, j), (j, i)), blocks):
                heaps.addn(block.shape[1], faiss.swig_ptr(block), first_id, first_row, len(block))
    heaps.reorder()
    values, indices = torch.from_numpy(values), torch.from_numpy(indices)
    itself = torch.arange(num, device=embeddings.device)
    return _first_k_settled(values, indices, k, embeddings, embeddings, metric, itself)


def _symmetric_scores(x, block_i, block_j, sq_norms, buffers):
    """Scores of rows I x rows J, and of rows J x rows I unless I is J (larger = nearer)."""
    rows_i, rows_j = x[block_i], x[block_j]
    scores = buffers[0, : len(rows_i) * len(rows_j)].reshape(len(rows_i), len(rows_j))
    torch.mm(torch.from_numpy(rows_i), torch.from_numpy(rows_j).T, out=torch.from_numpy(scores))
    if block_i == block_j:
        blocks = [scores]
    else:
        transposed = buffers[1, : scores.size].reshape(scores.shape[::-1])
        torch.from_numpy(transposed).copy_(torch.from_numpy(scores).T)  # torch's is blocked
        blocks = [scores, transposed]
    if sq_norms is not None:
        for block, across in zip(blocks, (block_j, block_i)):
            block *= 2
            block -= sq_norms[across]
    return blocks


def _faiss_index(metric, dim, take):
    index = faiss.IndexFlatIP(dim) if metric == "inner_product" else faiss.IndexFlatL2(dim)
    if faiss.get_num_gpus() > 0 and take <= FAISS_GPU_MAX_K:
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def _as_faiss_input(embeddings):
    return embeddings.detach().to("cpu", torch.float32).contiguous().numpy()


def _drop_excluded(values, indices, exclude):
    """Remove each row's excluded index, or its last column when the excluded one is not listed."""
    dropped = indices == exclude[:, None]
    dropped[~dropped.any(1), -1] = True
    width = indices.shape[1] - 1
    return values[~dropped].view(-1, width), indices[~dropped].view(-1, width)
