"""Retrieval metrics from exact nearest neighbours: Recall@K, MAP@R, R-Precision.

Definitions (pytorch-metric-learning's), for a query with R same-label gallery items (the query
itself not counted in leave-one-out); queries with R = 0 are left out of every metric:
- Recall@K: 1 if any of the K nearest has the query's label.
- R-Precision: same-label items among the R nearest, divided by R.
- MAP@R: (1/R) * sum over i <= R of P(i) * rel(i), P(i) = same-label items among the i nearest / i.

Each metric is the mean over the kept queries of a per-query value (hit within K, AP@R,
R-Precision): ``retrieval_metrics(..., per_query=True)`` returns those values too, under the
metric's own key, with ``query_index`` (see ``per_query_values``); ``per_query.py`` saves them.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dml_bench.evaluation.clustering import kmeans_nmi
from dml_bench.evaluation.knn import nearest_neighbors
from dml_bench.evaluation.metric_names import MAP_AT_R, NMI, NUM_QUERIES, R_PRECISION, recall_key
from dml_bench.evaluation.symmetric import GroupRank, leave_one_out_hits, same_group

DISTANCES = {"cosine": "inner_product", "euclidean": "l2"}
EXCLUDE_MODES = ("index", "first_neighbor")  # how leave-one-out leaves the query out
QUERY_INDEX = "query_index"  # per-query values: each kept query's index in the query set

Array = torch.Tensor | np.ndarray


def retrieval_metrics(
    query: Array,
    query_labels: Array,
    gallery: Array | None = None,
    gallery_labels: Array | None = None,
    *,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    distance: str = "cosine",
    backend: str = "auto",
    nmi: bool = False,
    per_query: bool = False,
    exclude: str = "index",
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of retrieving each query's class among the gallery, by exact k-NN search.

    query: (num_query, dim) embeddings, query_labels: (num_query,) integers or other hashable
    values such as strings (equal labels are one class, in both sets); gallery and
    gallery_labels likewise, or both None for leave-one-out on the query set (each query is
    excluded by its index, so an exact duplicate of it still counts as a neighbour).
    distance: "cosine" (L2-normalised, inner product) or "euclidean" (squared L2); see
    ``_prepared`` for how each keeps float32 accurate at any scale and offset.
    backend: "torch", "faiss" or "auto" (see ``knn.resolve_backend``).
    Returns ``recall@K`` per K, ``map@r``, ``r_precision`` (fractions) and ``num_queries`` (the
    queries with R > 0); with ``nmi=True`` also ``nmi`` of a k-means clustering of the queries.
    A K at or beyond the gallery size gives Recall@K = 1: every gallery item is then retrieved.
    With ``per_query=True`` returns (metrics, per-query values): numpy arrays, one entry per
    kept query, whose means are the metrics exactly (see ``per_query_values``).
    exclude (leave-one-out only): ``"index"`` leaves each query out by its index (the
    definition); ``"first_neighbor"`` searches one neighbour more and drops the nearest, taking it
    for the query, as the paper's official code does: with an exact duplicate of the query ranked
    first, the query itself stays among its neighbours (docs/reference/metrics.md).
    """
    if (gallery is None) != (gallery_labels is None):
        raise ValueError("pass gallery and gallery_labels together, or neither (leave-one-out)")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}; got {distance!r}")
    ks = _checked_ks(recall_ks)
    if exclude not in EXCLUDE_MODES:
        raise ValueError(f"exclude must be one of {', '.join(EXCLUDE_MODES)}; got {exclude!r}")
    if exclude != "index" and gallery is not None:
        raise ValueError(f"exclude={exclude!r} applies to leave-one-out; with a gallery no query is excluded")
    query = _checked_embeddings("query", query)
    if gallery is not None:
        gallery = _checked_embeddings("gallery", gallery)
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(f"gallery has dim {gallery.shape[1]}, query has {query.shape[1]}")
        gallery = gallery.to(query.device)
    query_labels, gallery_labels = _label_ids(query_labels, len(query), gallery_labels,
                                              None if gallery is None else len(gallery))
    query, gallery = _prepared(query, gallery, distance)

    search = _LabelSearch(query, query_labels, gallery, gallery_labels, metric=DISTANCES[distance], backend=backend,
                          drop_first=exclude == "first_neighbor")
    kept = (search.positives > 0).nonzero().squeeze(1)
    if len(kept) == 0:
        raise ValueError("no query has a same-label item in the gallery; check the labels")
    # The R nearest serve MAP@R and R-Precision. Queries without a same-label item among them
    # need the rank of their nearest one, as deep as the largest K: the symmetric search counts
    # it on the way; otherwise, or where rounding leaves it unsure, they are searched again that
    # deep. Neither Recall@K nor MAP@R is ever truncated.
    depth = int(search.positives.max())
    deepest = min(max(ks), search.candidates)
    goes_deeper = deepest > depth  # else every K is within the R nearest
    # Each query needs its own R nearest, and those of the K within ``depth``: on a long-tailed
    # dataset far fewer than ``depth`` for most (the symmetric search then keeps fewer); the
    # neighbours past a query's own depth are not looked at, whatever the backend.
    own_depth = search.positives[kept].clamp(min=min(deepest, depth))
    hits, ranks = search.hits(kept, depth, cap=deepest if goes_deeper else 0, depths=own_depth)
    first_hit = _first_true(hits)
    missed = first_hit == depth
    if goes_deeper and missed.any():
        unsure = missed.clone()
        if ranks is not None:
            low, high = ranks.low[missed], ranks.high[missed]
            sure = (low <= high) & ~_any_k_between(ks, low, high)
            first_hit[missed] = torch.where(sure, low.clamp(min=depth), first_hit[missed])
            unsure[missed] = ~sure
        if unsure.any():
            # Scores computed twice may differ in the last bit: keep the first search's verdict.
            deeper, _ = search.hits(kept[unsure], deepest)
            first_hit[unsure] = _first_true(deeper).clamp(min=depth)
    values = per_query_values(hits, first_hit, search.positives[kept], ks)
    values[QUERY_INDEX] = kept.cpu().numpy()
    metrics = per_query_means(values)
    if nmi:
        metrics[NMI] = kmeans_nmi(query, query_labels)
    return (metrics, values) if per_query else metrics


def per_query_values(
    hits: torch.Tensor, first_hit: torch.Tensor, positives: torch.Tensor, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Each query's value of each metric, from its neighbours: ``recall@K`` (bool: a same-label
    item among the K nearest), ``map@r`` (AP@R) and ``r_precision`` (float64), numpy on the CPU.

    hits (num_query, depth) bool: the i-th nearest has the query's label, depth >= every R;
    first_hit (num_query,): position (0-based) of the nearest same-label item, or any value
    >= max(ks) when it is beyond; positives (num_query,): each query's R >= 1.
    """
    values = {recall_key(k): first_hit < k for k in ks}
    r = positives.double()
    depth = int(positives.max())
    relevant = hits[:, :depth] & (torch.arange(depth, device=hits.device) < positives[:, None])  # rel(i), i <= R
    # Only the relevant positions are visited, not (num_query, depth) float64 arrays (1.1 GB each at
    # iNaturalist's depth of 1,002). Row-major order lists each row's hits nearest first.
    row, position = relevant.nonzero(as_tuple=True)
    count = torch.bincount(row, minlength=len(hits))  # same-label items among the R nearest
    correct = torch.arange(1, len(row) + 1, device=hits.device) - (count.cumsum(0) - count)[row]
    precision = correct.double() / (position + 1).double()  # P(i) at each relevant i
    values[MAP_AT_R] = torch.zeros_like(r).index_add_(0, row, precision) / r
    values[R_PRECISION] = count.double() / r
    return {name: value.cpu().numpy() for name, value in values.items()}


def per_query_means(values: dict[str, np.ndarray]) -> dict[str, float]:
    """The metrics of per-query values: the float64 mean of each array, and ``num_queries``
    (``query_index``, when present, is not a metric)."""
    metrics = {name: float(np.mean(value, dtype=np.float64)) for name, value in values.items() if name != QUERY_INDEX}
    metrics[NUM_QUERIES] = len(next(iter(values.values())))
    return metrics


def metrics_from_hits(hits: torch.Tensor, first_hit: torch.Tensor, positives: torch.Tensor, ks: Sequence[int]) -> dict:
    """Metrics of num_query queries from their neighbours: the means of ``per_query_values``."""
    return per_query_means(per_query_values(hits, first_hit, positives, ks))


class _LabelSearch:
    """Exact search of queries in a gallery (gallery None: the queries themselves, each query
    skipping its own index, or with ``drop_first`` its nearest neighbour whichever it is),
    telling which neighbours share the query's label."""

    def __init__(self, query, query_labels, gallery, gallery_labels, *, metric, backend, drop_first=False):
        self.leave_one_out = gallery is None
        self.drop_first = drop_first
        if self.leave_one_out:
            gallery, gallery_labels = query, query_labels
        self.query, self.gallery = query, gallery
        self.metric, self.backend = metric, backend
        self.candidates = len(gallery) - self.leave_one_out  # gallery items a query can return
        codes = torch.unique(torch.cat([query_labels, gallery_labels]), return_inverse=True)[1]
        codes = codes.to(query.device, torch.int32)  # int32: small to gather (num_query, k) of
        self.query_codes, self.gallery_codes = codes[: len(query)], codes[len(query) :]
        class_sizes = torch.bincount(self.gallery_codes, minlength=int(codes.max()) + 1)
        # R of each query: same-label gallery items, itself not counted
        self.positives = class_sizes[self.query_codes] - int(self.leave_one_out)

    def hits(self, rows: torch.Tensor, k: int, cap: int = 0,
             depths: torch.Tensor | None = None) -> tuple[torch.Tensor, GroupRank | None]:
        """(len(rows), k) bool: the i-th nearest gallery item of query ``rows`` has its label
        (False from ``depths[row]`` on, where given: a row's own depth); and, where the search can
        tell it (see ``symmetric.leave_one_out_hits``), the rank of each query's nearest
        same-label item, counted up to ``cap``."""
        options = {"metric": self.metric, "backend": self.backend}
        if self.leave_one_out and not self.drop_first:
            hits, ranks = leave_one_out_hits(self.query, rows, k, self.query_codes, cap=cap, depths=depths, **options)
            hits = hits.to(rows.device)
        else:
            query = self.query if len(rows) == len(self.query) else self.query[rows]
            dropped = int(self.drop_first)  # one neighbour more, then the nearest goes: taken for the query
            neighbors, ranks = nearest_neighbors(query, self.gallery, k + dropped, **options)[:, dropped:], None
            hits = same_group(neighbors.to(rows.device), self.gallery_codes, self.query_codes[rows])
        if depths is not None:
            hits &= torch.arange(k, device=hits.device) < depths.to(hits.device)[:, None]
        return hits, ranks


def _any_k_between(ks, low, high):
    """(rows,) bool: some K has low < K <= high, so Recall@K depends on where in [low, high] the
    first same-label item ranks."""
    ks = torch.tensor(ks, device=low.device)
    return ((low[:, None] < ks) & (ks <= high[:, None])).any(1)


def _first_true(hits):
    """(rows,) position of each row's first True, or the row length when there is none."""
    found = hits.any(1)
    return torch.where(found, hits.to(torch.uint8).argmax(1), hits.shape[1])


def _checked_ks(recall_ks):
    if not recall_ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in recall_ks):
        raise ValueError(f"recall_ks must be positive integers; got {recall_ks!r}")
    return [int(k) for k in recall_ks]


def _checked_embeddings(name, embeddings):
    """(num, dim) float32 embeddings on their device, num and dim >= 1, all finite."""
    if isinstance(embeddings, np.ndarray):
        embeddings = np.ascontiguousarray(embeddings)  # torch refuses negative strides (x[::-1])
    embeddings = torch.as_tensor(embeddings).detach()
    if embeddings.ndim != 2 or 0 in embeddings.shape or not embeddings.is_floating_point():
        raise ValueError(f"{name} must be a (num, dim) float array with num, dim >= 1; got {_describe(embeddings)}")
    embeddings = embeddings.float()
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return embeddings


def _label_ids(query_labels, num_query, gallery_labels, num_gallery):
    """(num_query,) and (num_gallery,) int64 class ids on the CPU (gallery None: None).

    Integer labels are kept; labels of any other hashable kind (strings, tuples in an object
    array) get ids in order of first appearance, query then gallery, equal labels the same id.
    """
    sets = [("query", query_labels, num_query)]
    if gallery_labels is not None:
        sets.append(("gallery", gallery_labels, num_gallery))
    arrays = [_label_array(f"{name}_labels", labels, num) for name, labels, num in sets]
    if all(array.dtype.kind in "iub" for array in arrays):
        ids = [torch.from_numpy(array.astype(np.int64)) for array in arrays]
    else:
        codes = {}
        ids = []
        for (name, _, _), array in zip(sets, arrays):
            try:
                ids.append(torch.tensor([codes.setdefault(value, len(codes)) for value in array.tolist()]))
            except TypeError as error:  # an unhashable label, such as a list
                raise ValueError(f"{name}_labels must be integers or hashable values; {error}") from None
    return ids[0], ids[1] if len(ids) > 1 else None


def _label_array(name, labels, num):
    """The labels as a 1-D numpy array of ``num`` integers, strings or other objects."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (num,) or labels.dtype.kind not in "iubUSO":
        raise ValueError(f"{name} must be {num} labels in a 1-D array of integers or hashable values such as "
                         f"strings; got shape {labels.shape} of {labels.dtype}")
    return labels


def _prepared(query, gallery, distance):
    """The embeddings as the search takes them (gallery None stays None).

    Cosine: rows at unit length, each scaled to its largest magnitude first, so that the norm
    neither overflows (rows of 1e20) nor falls below ``F.normalize``'s epsilon (rows of 1e-14);
    a zero row stays zero and scores 0 with every item.
    Euclidean: shifted by one common vector near the mean, which leaves every distance as it is
    but keeps the float32 score 2<q, g> - |g|^2 as accurate far from the origin as near it. Each
    coordinate's shift is rounded to a multiple of the largest power of two within the
    coordinate's range, so data on a binary grid (integers) stays on it and its exact ties stay
    exact.
    """
    sets = [query] if gallery is None else [query, gallery]
    if distance == "cosine":
        sets = [_unit_rows(x) for x in sets]
    else:
        shift = _grid_mean(sets)
        sets = [x - shift for x in sets]
    return sets[0], sets[1] if gallery is not None else None


def _unit_rows(x):
    """Rows divided by the power of two nearest below their largest magnitude, then normalised: a
    power-of-two scale is exact, so rows of ordinary size come out bit for bit as without it."""
    _, exponent = torch.frexp(x.abs().amax(1, keepdim=True))  # a zero row: exponent 0, scale 1
    x = torch.ldexp(x, -exponent)
    return F.normalize(x, dim=1, out=x)


def _grid_mean(sets):
    """(dim,) float32: the mean of all rows of ``sets``, each coordinate rounded to a multiple of the
    largest power of two not above that coordinate's range (a constant coordinate: its value)."""
    low = torch.stack([x.amin(0) for x in sets]).amin(0).double()
    high = torch.stack([x.amax(0) for x in sets]).amax(0).double()
    mean = sum(x.sum(0, dtype=torch.float64) for x in sets) / sum(len(x) for x in sets)
    spread = high - low
    step = torch.exp2(torch.floor(torch.log2(torch.where(spread > 0, spread, 1))))
    return torch.where(spread > 0, torch.round(mean / step) * step, low).float()


def _describe(x):
    return f"shape {tuple(x.shape)} of {x.dtype}"
