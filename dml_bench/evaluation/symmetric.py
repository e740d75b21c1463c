"""Leave-one-out search of every item of a set among the others. The symmetric backend computes
each score once, s(i, j) = s(j, i): half the matrix product any other exact search pays for; it
also counts, on the way, the rank of each row's nearest same-group item. Order and ties as in
``knn``; fewer rows than half the set are searched by ``knn.nearest_neighbors``.
"""

import math
from contextlib import contextmanager
from typing import NamedTuple

import faiss
import numpy as np
import torch

from dml_bench.evaluation import knn
from dml_bench.evaluation.heaps import DepthHeaps


class GroupRank(NamedTuple):
    """Where each row's nearest same-group item ranks among the row's neighbours (0-based):
    between ``low`` and ``high``, both included; ``low`` at or beyond the search's cap means
    the item ranks there or deeper."""

    low: torch.Tensor
    high: torch.Tensor


def leave_one_out_search(
    embeddings: torch.Tensor,
    rows: torch.Tensor,
    k: int,
    *,
    metric: str,
    backend: str = "auto",
    groups: torch.Tensor | None = None,
    cap: int = 0,
    depths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, GroupRank | None]:
    """Indices (len(rows), k), int64, of the k nearest of ``embeddings[rows]`` among all the
    embeddings, each row skipping its own index; order as in ``nearest_neighbors``.

    The symmetric backend searches every row at the cost of half a matrix product, so it serves
    more than half of the rows; fewer are searched as "faiss" does, at their share of a product.
    groups: (num,) ints, or None. The symmetric search then also returns the ``GroupRank`` of
    ``rows``: where each row's nearest other member of its group ranks, counted up to ``cap``
    however deep that is (a row alone in its group gets an empty range, high < low). The other
    searches return None for it.
    depths: (len(rows),) ints from 1 to k, or None: each row needs only its depths[i] nearest. The
    symmetric search then keeps fewer neighbours for the rows that need fewer, which is faster, and
    lists -1 past a row's own depth (from at least that depth on); the others return all k.
    """
    symmetric = knn.resolve_backend(backend, embeddings.device) == "symmetric"
    if not symmetric or 2 * len(rows) <= len(embeddings):
        query = embeddings if len(rows) == len(embeddings) else embeddings[rows]
        neighbors = knn.nearest_neighbors(query, embeddings, k, metric=metric, backend=backend, exclude=rows)
        return neighbors, None
    knn.check_search(metric, k, len(embeddings) - 1)
    rows = rows.cpu()
    every_depth = None
    if depths is not None:  # the rows not searched for need one neighbour (a heap of two): the least there is
        every_depth = np.ones(len(embeddings), np.int64)
        every_depth[rows.numpy()] = depths.cpu().numpy()
    neighbors, ranks = _symmetric_knn(embeddings, k, metric, None if groups is None else groups.cpu(), cap,
                                      every_depth)
    if ranks is not None:
        ranks = GroupRank(*(rank[rows].to(embeddings.device) for rank in ranks))
    return neighbors[rows], ranks


def _symmetric_knn(embeddings, k, metric, groups=None, cap=0, depths=None):
    """(num, k) nearest of every embedding among the others, computing each score once; with
    ``groups``, also each row's ``GroupRank``; with ``depths`` (num,) each row's own depth (both:
    see ``leave_one_out_search``).

    Leave-one-out scores are symmetric (s(i, j) = s(j, i)), so only the blocks (I, J) with
    J >= I are computed: half the FLOPs of a full product, which is what a search costs. The
    diagonal blocks go first and fill every row's running top k + 1 (FAISS heaps); then each
    block (I, J) offers rows I its scores and rows J its transposed scores, but only those above
    the row's current floor: its heap's worst score, or lower while the row still counts the items
    above its best same-group score. A comparison and a scan find those few scores, so no
    transposed copy is ever made.
    For l2 a row's score is 2<i, j> - |j|^2, as in the torch backend: both sides of a block
    share the product and subtract the other side's squared norms.
    The pass runs over the rows sorted by the heap width their depth needs (``DepthHeaps``), and
    maps the rows and ids back at the end.
    """
    num, take = len(embeddings), min(k + 1, len(embeddings) - 1)
    takes = np.full(num, take) if depths is None else np.minimum(np.asarray(depths) + 1, take)
    order = np.argsort(takes, kind="stable")
    x = knn.as_faiss_input(embeddings)
    x = x if depths is None else x[order]  # without depths the order is the identity
    heaps = DepthHeaps(takes[order])
    sq_norms = knn.squared_norms(embeddings).cpu().numpy()[order] if metric == "l2" else None
    counter = None if groups is None else _GroupRankCounter(x, np.asarray(groups)[order], sq_norms, cap)
    # 4096 rows at the default budget, the fastest block measured; with the float32 block, an
    # l2 score block and a bool mask (9 bytes a score), the buffers stay within knn.BLOCK_BYTES.
    rows = max(4, math.isqrt(knn.BLOCK_BYTES // 16) // 4 * 4)
    size = min(rows, num) ** 2
    product = np.empty(size, np.float32)
    side = _BlockSide(size, sq_norms)
    with _faiss_threads(1):  # FAISS's OpenMP threads would compete with the BLAS threads
        for block_i, block_j in _blocks(num, rows):
            inner = _inner_products(x, block_i, block_j, product)
            if block_i == block_j:
                scores = side.scores(inner, block_j, transposed=False)
                np.fill_diagonal(scores, -np.inf)  # each row skips itself
                heaps.add(scores, block_i.start, block_i.start)
                if counter is not None:
                    row, _, values = side.above_floor(scores, counter.floor, block_i, block_j, False)
                    counter.count(row, values)
                continue
            for rows_here, rows_there, transposed in ((block_i, block_j, False), (block_j, block_i, True)):
                if counter is None and not transposed:  # FAISS's heaps scan a row-major block in one pass
                    heaps.add(side.scores(inner, rows_there, transposed=False), rows_here.start, rows_there.start)
                    continue
                floor = heaps.worst() if counter is None else np.minimum(heaps.worst(), counter.floor)
                row, ids, values = side.find(inner, floor, rows_here, rows_there, transposed)
                heaps.add_sparse(row, ids, values)
                if counter is not None:
                    counter.count(row, values)
    twins = knn.find_twins(embeddings)
    neighbors = torch.full((num, k), -1, dtype=torch.long)
    back = torch.from_numpy(order)
    for first, values, indices in heaps.results():
        rows = back[first : first + len(values)]
        settle = k if values.shape[1] == take else values.shape[1] - 1
        query, itself = embeddings[rows.to(embeddings.device)], rows.to(embeddings.device)
        found = knn.first_k_settled(values, back[indices], settle, query, embeddings, metric, itself, twins)
        neighbors[rows, :settle] = found
    if counter is None:
        return neighbors, None
    ranks = GroupRank(*(torch.empty_like(rank).index_copy_(0, back, rank) for rank in counter.ranks()))
    return neighbors, ranks


def _blocks(num, rows):
    """Pairs of row ranges (I, J) whose blocks cover each pair of rows once (I == J: the block
    holds both orders), diagonal blocks first.

    The diagonal is tiled by blocks of rows / 4, whose scores alone fill the heaps; the rest of
    each band of ``rows`` rows by one block of rows / 2 and two of rows / 4, so the diagonal
    costs 5/8 of its square instead of all of it; the other blocks are rows x rows.
    """
    quarter = rows // 4
    blocks = [(slice(i, min(i + quarter, num)),) * 2 for i in range(0, num, quarter)]
    for band in range(0, num, rows):
        end = min(band + rows, num)
        for size in (rows // 2, quarter):
            for i in range(band, end, 2 * size):
                if i + size < end:
                    blocks.append((slice(i, i + size), slice(i + size, min(i + 2 * size, end))))
        blocks += [(slice(band, end), slice(j, min(j + rows, num))) for j in range(end, num, rows)]
    return blocks


def _inner_products(x, block_i, block_j, buffer):
    """Inner products of rows I x rows J, written into the flat buffer."""
    rows_i, rows_j = x[block_i], x[block_j]
    inner = buffer[: len(rows_i) * len(rows_j)].reshape(len(rows_i), len(rows_j))
    return np.matmul(rows_i, rows_j.T, out=inner)  # numpy's BLAS: the fastest on the CPUs measured


class _BlockSide:
    """Finds a block's scores above their rows' floors, seen from either side of the block: its
    rows, or its columns (``transposed``)."""

    def __init__(self, size, sq_norms):
        self.sq_norms = sq_norms
        self.mask = np.empty(size, bool)
        self.l2_scores = None if sq_norms is None else np.empty(size, np.float32)

    def scores(self, inner, ids, *, transposed):
        """The block's scores (larger = nearer) from its inner products: themselves, or for l2
        2<i, j> - |j|^2 in a buffer, j in ``ids``: the block's columns, or its rows when
        ``transposed``."""
        if self.sq_norms is None:
            return inner
        scores = self.l2_scores[: inner.size].reshape(inner.shape)
        np.multiply(inner, 2, out=scores)
        scores -= self.sq_norms[ids][:, None] if transposed else self.sq_norms[ids][None, :]
        return scores

    def find(self, inner, floor, rows, ids, transposed):
        """``above_floor`` of the block's scores."""
        return self.above_floor(self.scores(inner, ids, transposed=transposed), floor, rows, ids, transposed)

    def above_floor(self, scores, floor, rows, ids, transposed):
        """(row, id, value) of the scores above the floor of their row, rows counted from 0
        (rows: this side's, ids: the other side's), sorted by row then id."""
        row_floor = floor[rows]
        mask = self.mask[: scores.size].reshape(scores.shape)
        np.greater(scores, row_floor[None, :] if transposed else row_floor[:, None], out=mask)
        found = np.flatnonzero(mask)
        row, column = np.divmod(found, scores.shape[1])
        values = scores.ravel()[found]
        if transposed:
            # a radix sort for 16-bit keys: the blocks' widths fit, and it is O(n)
            keys = column.astype(np.int16) if scores.shape[1] < 2**15 else column
            by_row = np.argsort(keys, kind="stable")
            row, column, values = column[by_row], row[by_row], values[by_row]
        return rows.start + row, ids.start + column, values


@contextmanager
def _faiss_threads(count):
    """FAISS's OpenMP threads limited to ``count`` inside the ``with`` block; restored after."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class _GroupRankCounter:
    """Counts, for each row, the items scoring above its best same-group item.

    That best score is computed beforehand, by another summation than the blocks' product, so
    the two may differ by a rounding error: items beyond ``tolerance`` of it are surely above
    or below it, items within are ``near`` (the best same-group item itself among them).
    A row stops counting once ``cap`` items are surely above.
    """

    def __init__(self, x, groups, sq_norms, cap):
        best = _best_in_group(x, groups, sq_norms)
        tolerance = _score_tolerance(x, sq_norms is not None)
        self.low, self.high = best - tolerance, best + tolerance
        self.above = np.zeros(len(x), np.int64)
        self.near = np.zeros(len(x), np.int64)
        self.cap = cap
        self.floor = self.low.copy()  # the lowest score a row still needs to see

    def count(self, row, values):
        counted = values > self.low[row]
        row, values = row[counted], values[counted]
        above = values > self.high[row]
        self.above += np.bincount(row[above], minlength=len(self.above))
        self.near += np.bincount(row[~above], minlength=len(self.near))
        self.floor[self.above >= self.cap] = np.inf

    def ranks(self):
        """Nearest same-group item's rank: after the items surely above it, before the others
        near it; at least ``cap`` once ``cap`` are surely above (its band was never seen)."""
        capped = self.above >= self.cap
        high = np.where(capped, self.above, self.above + self.near - 1)
        return GroupRank(torch.from_numpy(self.above), torch.from_numpy(high))


def _best_in_group(x, groups, sq_norms):
    """(num,) each row's best score among the other rows of its group; +inf for a row alone
    (it counts nothing). Groups are searched by size: a batched product per chunk of groups."""
    groups = np.asarray(groups)
    best = np.full(len(x), np.inf, np.float32)
    order = np.argsort(groups, kind="stable")
    _, first, size = np.unique(groups[order], return_index=True, return_counts=True)
    for m in np.unique(size[size > 1]):
        members = order[first[size == m][:, None] + np.arange(m)]  # (groups of size m, m)
        # each step holds (groups, rows, m) scores and (groups, m, dim) embeddings
        groups_per_step = max(1, knn.BLOCK_BYTES // (4 * m * max(m, x.shape[1])))
        rows_per_step = min(m, max(1, knn.BLOCK_BYTES // (4 * m)))  # < m only for one huge group
        for g in range(0, len(members), groups_per_step):
            group = members[g : g + groups_per_step]
            embeddings = x[group]  # (groups, m, dim)
            for r in range(0, m, rows_per_step):
                rows = group[:, r : r + rows_per_step]
                scores = np.matmul(embeddings[:, r : r + rows_per_step], embeddings.transpose(0, 2, 1))
                if sq_norms is not None:
                    scores = 2 * scores - sq_norms[group][:, None, :]
                itself = np.arange(rows.shape[1])
                scores[:, itself, r + itself] = -np.inf
                best[rows] = scores.max(2)
    return best


def _score_tolerance(x, l2):
    """(num,) bound on how far two float32 computations of a row's score may differ.

    Any summation order of a d-term dot product errs by at most gamma_d |q| |g| (Higham, eq. 3.5);
    the two computations twice that, with |g| at most the largest norm. For l2 the score
    2<q, g> - |g|^2 doubles the product's error and rounds once more.
    """
    unit = 2.0**-24
    gamma = (x.shape[1] + 2) * unit / (1 - (x.shape[1] + 2) * unit)
    norms = np.linalg.norm(x, axis=1).astype(np.float64)
    largest = norms.max()
    bound = 2 * gamma * norms * largest
    if l2:
        bound = 2 * bound + 4 * unit * (2 * norms * largest + largest**2)
    return bound.astype(np.float32) * 2  # margin: float32 rounding of the bound itself


