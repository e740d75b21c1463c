"""Exact k-nearest-neighbour search of queries in a gallery: blocked torch or a FAISS flat index.
Leave-one-out on a whole set also has a symmetric search, which computes half the scores
(``symmetric.py``); both modules settle ties as below.

Metrics: ``"inner_product"`` (cosine once the caller has L2-normalised the embeddings) and
``"l2"`` (squared Euclidean distance, smallest first).

Order: each row lists gallery indices nearest first; equally near items come by increasing gallery
index, also at the k-th place (which of several tied items make the cut). "Equally near" means an
equal score as the backend computed it in float32, and always holds for exact duplicates: a
multi-threaded BLAS can round their scores an ulp apart, so every search gives all the copies of
an item one score (``Twins``).
"""

from typing import NamedTuple

import faiss
import torch

from dml_bench.evaluation import faiss_gpu

BACKENDS = ("auto", "faiss", "torch", "symmetric")
METRICS = ("inner_product", "l2")

# Largest score block (query rows x gallery items) the torch backend holds at once; the symmetric
# backend's blocks are a sixteenth of it (4096 x 4096 scores), made and searched in strips (threads.py).
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
    ("symmetric" searches a separate gallery as "faiss" does). Where a GPU build of FAISS cannot
    run on this machine (``faiss_gpu.gpu_state``), the FAISS searches use the torch backend.
    """
    check_search(metric, k, len(gallery) - (exclude is not None))
    twins = find_twins(gallery)
    if resolve_backend(backend, query.device) == "torch" or faiss_gpu.gpu_state() == faiss_gpu.BROKEN:
        return _torch_knn(query, gallery, k, metric, exclude, twins)
    return _faiss_knn(query, gallery, k, metric, exclude, twins)


class Twins(NamedTuple):
    """A gallery's exact copies: ``first`` (num_gallery,) each item's lowest-index identical item
    (its own index for most), ``copies`` the indices of the items that are not their own first."""

    first: torch.Tensor
    copies: torch.Tensor


def find_twins(gallery: torch.Tensor) -> Twins | None:
    """The gallery's groups of identical rows, or None when all rows differ.

    Identical items score identically in exact arithmetic, but a multi-threaded BLAS can round
    two copies' float32 scores an ulp apart when they sit at different places of a block. Every
    search therefore gives all the copies of an item one score, so that they tie and come by
    index as any tie does.
    """
    ids = torch.arange(len(gallery), device=gallery.device)
    shared = _shared_hash(gallery)  # only rows whose bits hash alike can be identical
    if not shared.any():
        return None
    rows = ids[shared]
    unique, inverse = torch.unique(gallery[rows], dim=0, return_inverse=True)  # sorts the rows: few here
    if len(unique) == len(rows):
        return None
    lowest = torch.full((len(unique),), len(gallery), device=gallery.device).scatter_reduce(0, inverse, rows, "amin")
    first = ids.clone()
    first[rows] = lowest[inverse]
    return Twins(first, (first != ids).nonzero().squeeze(1))


HASH_ROWS = 8192  # rows hashed at once: (rows, dim) int64 at a time


def _shared_hash(x):
    """(num,) bool: the row's bits hash as another row's do (identical rows always do). The hash
    is a sum of the rows' bits times fixed random weights, in int64 arithmetic (wrapping)."""
    weights = torch.randint(-(2**62), 2**62, (x.shape[1],), generator=torch.Generator().manual_seed(0))
    weights = weights.to(x.device)
    bits = (x + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes 0.0, which it equals
    hashed = torch.cat([(bits[i : i + HASH_ROWS].long() * weights).sum(1) for i in range(0, len(x), HASH_ROWS)])
    _, inverse, counts = torch.unique(hashed, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def check_search(metric, k, candidates):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    assert 0 < k <= candidates, f"k={k} exceeds the gallery"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that ``backend`` names for embeddings on ``device``.

    "auto" is torch on CUDA: it stays on the device, with no host round trip and no limit on k.
    Elsewhere it is symmetric (FAISS for a separate gallery): on SOP-sized leave-one-out data it
    computes half the scores, and it took the least CPU time of the three on a 2-core AMD EPYC
    (docs/evaluation.md).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch" if device.type == "cuda" else "symmetric"
    return backend


def _torch_knn(query, gallery, k, metric, exclude, twins):
    """Query blocks x the whole gallery, each block's scores reduced to its top k at once; an
    item's copies (``twins``) take its score."""
    rows = max(1, _budget(query.device) // (4 * len(gallery) + 24 * k))
    gallery_sq_norms = squared_norms(gallery) if metric == "l2" else None
    buffer = query.new_empty(min(rows, len(query)) * len(gallery))
    neighbors = torch.empty((len(query), k), dtype=torch.long, device=query.device)
    for start in range(0, len(query), rows):
        block = slice(start, min(start + rows, len(query)))
        scores = _scores(query[block], gallery, gallery_sq_norms, buffer)
        if twins is not None:
            scores[:, twins.copies] = scores[:, twins.first[twins.copies]]
        if exclude is not None:
            scores[torch.arange(len(scores), device=scores.device), exclude[block]] = -torch.inf
        neighbors[block] = _top_k(scores, k)
    return neighbors


def squared_norms(embeddings):
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


def _faiss_knn(query, gallery, k, metric, exclude, twins):
    """FAISS flat search of k + 1 neighbours (+1 more to drop the excluded one)."""
    skip = int(exclude is not None)
    take = min(k + 1 + skip, len(gallery))
    index = _faiss_index(metric, gallery.shape[1], take)
    index.add(as_faiss_input(gallery))
    distances, indices = index.search(as_faiss_input(query), take)
    values = torch.from_numpy(distances if metric == "inner_product" else -distances)
    indices = torch.from_numpy(indices)
    if skip:
        values, indices = _drop_excluded(values, indices, exclude.cpu())
    return first_k_settled(values, indices, k, query, gallery, metric, exclude, twins)


def first_k_settled(values, indices, k, query, gallery, metric, exclude, twins):
    """The first k of (rows, k + 1) neighbours found by score alone, ordered by score then index;
    copies of one item listed in a row (``twins``) first get the best of their scores.

    Rows tied at the k-th place are searched again with the torch backend, which sees the whole
    row and so can pick the lowest gallery indices among the tied items.
    """
    if twins is not None:
        _tie_twins(values, indices, twins.first.cpu())
    cut = _tied_at_cut(values, k)
    values, indices = values[:, :k], indices[:, :k]
    _reorder(values, indices, _has_tie(values))
    if cut.any():
        again = cut.to(query.device)
        excluded = None if exclude is None else exclude[again]
        indices[cut] = _torch_knn(query[again], gallery, k, metric, excluded, twins).cpu()
    return indices


def _tie_twins(values, indices, first):
    """In place: in each row that lists several copies of one item, every copy gets the best of
    their scores, and the row is sorted by score then index."""
    group = first[indices]  # (rows, take): each listed item's first copy
    in_order = group.sort(dim=1).values
    rows = (in_order[:, 1:] == in_order[:, :-1]).any(1).nonzero().squeeze(1)
    if len(rows) == 0:
        return
    keys = group[rows] + rows[:, None] * len(first)  # one key per (row, item)
    _, slot = torch.unique(keys, return_inverse=True)
    best = values.new_full((int(slot.max()) + 1,), -torch.inf).scatter_reduce(0, slot.ravel(), values[rows].ravel(),
                                                                               "amax")
    values[rows], indices[rows] = _by_score_then_index(best[slot], indices[rows])


def _faiss_index(metric, dim, take):
    index = faiss.IndexFlatIP(dim) if metric == "inner_product" else faiss.IndexFlatL2(dim)
    if take <= FAISS_GPU_MAX_K and faiss_gpu.gpu_state() == faiss_gpu.USABLE:
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def as_faiss_input(embeddings):
    return embeddings.detach().to("cpu", torch.float32).contiguous().numpy()


def _drop_excluded(values, indices, exclude):
    """Remove each row's excluded index, or its last column when the excluded one is not listed."""
    dropped = indices == exclude[:, None]
    dropped[~dropped.any(1), -1] = True
    width = indices.shape[1] - 1
    return values[~dropped].view(-1, width), indices[~dropped].view(-1, width)
