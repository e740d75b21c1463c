"""Exact k-nearest-neighbour search of queries in a gallery: blocked torch or a FAISS flat index.

Metrics: ``"inner_product"`` (cosine once the caller has L2-normalised the embeddings) and
``"l2"`` (squared Euclidean distance, smallest first).

Order: each row lists gallery indices nearest first; equally near items come by increasing gallery
index, also at the k-th place (which of several tied items make the cut). "Equally near" means an
equal score as the backend computed it in float32, which always holds for exact duplicates.
"""

import faiss
import torch

BACKENDS = ("auto", "faiss", "torch")
METRICS = ("inner_product", "l2")

# Largest score block (query rows x gallery items) the torch backend holds at once.
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
    The result lives on the query's device for the torch backend, on the CPU for FAISS.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    assert 0 < k <= len(gallery) - (exclude is not None), f"k={k} exceeds the gallery"
    if resolve_backend(backend, query.device) == "torch":
        return _torch_knn(query, gallery, k, metric, exclude)
    return _faiss_knn(query, gallery, k, metric, exclude)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that ``backend`` names for embeddings on ``device``.

    "auto" is torch on CUDA: it stays on the device, with no host round trip and no limit on k.
    Elsewhere it is FAISS: on the CPU its matrix product took about 20% less CPU time than
    torch's on SOP-sized data (2-core AMD EPYC, docs/README-evaluation.md), and it needs nothing
    from other devices.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch" if device.type == "cuda" else "faiss"
    return backend


def _torch_knn(query, gallery, k, metric, exclude):
    """Query blocks x the whole gallery, each block's scores reduced to its top k at once."""
    rows = max(1, _budget(query.device) // (4 * len(gallery) + 24 * k))
    gallery_sq_norms = (gallery * gallery).sum(1) if metric == "l2" else None
    buffer = query.new_empty(min(rows, len(query)) * len(gallery))
    neighbors = torch.empty((len(query), k), dtype=torch.long, device=query.device)
    for start in range(0, len(query), rows):
        block = slice(start, min(start + rows, len(query)))
        scores = _scores(query[block], gallery, gallery_sq_norms, buffer)
        if exclude is not None:
            scores[torch.arange(len(scores), device=scores.device), exclude[block]] = -torch.inf
        neighbors[block] = _top_k(scores, k)
    return neighbors


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
    """FAISS flat search of k + 1 neighbours (+1 more to drop the excluded one).

    Rows tied at the k-th place are searched again with the torch backend, which sees the whole
    row and so can pick the lowest gallery indices among the tied items.
    """
    skip = int(exclude is not None)
    take = min(k + 1 + skip, len(gallery))
    index = _faiss_index(metric, gallery.shape[1], take)
    index.add(_as_faiss_input(gallery))
    distances, indices = index.search(_as_faiss_input(query), take)
    values = torch.from_numpy(distances if metric == "inner_product" else -distances)
    indices = torch.from_numpy(indices)
    if skip:
        values, indices = _drop_excluded(values, indices, exclude.cpu())
    cut = _tied_at_cut(values, k)
    values, indices = values[:, :k], indices[:, :k]
    _reorder(values, indices, _has_tie(values))
    if cut.any():
        again = cut.to(query.device)
        excluded = None if exclude is None else exclude[again]
        indices[cut] = _torch_knn(query[again], gallery, k, metric, excluded).cpu()
    return indices


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
