"""Leave-one-out search of every item of a set among the others. The symmetric backend computes
each score once, s(i, j) = s(j, i): half the matrix product any other exact search pays for; it
also counts, on the way, the rank of each row's nearest same-group item. Order and ties as in
``knn``; fewer rows than half the set are searched by ``knn.nearest_neighbors``.
"""

import math
from contextlib import contextmanager

import faiss
import numpy as np
import torch
from scipy import stats

from dml_bench.evaluation import knn
from dml_bench.evaluation.group_rank import GroupRank, GroupRankCounter
from dml_bench.evaluation.heaps import DepthHeaps


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
    every = len(rows) == len(embeddings) and bool((rows == torch.arange(len(rows))).all())
    return neighbors if every else neighbors[rows], ranks


def _symmetric_knn(embeddings, k, metric, groups=None, cap=0, depths=None):
    """(num, k) nearest of every embedding among the others, computing each score once; with
    ``groups``, also each row's ``GroupRank``; with ``depths`` (num,) each row's own depth (both:
    see ``leave_one_out_search``).

    Leave-one-out scores are symmetric (s(i, j) = s(j, i)), so only one block of each pair (I, J),
    (J, I) is computed: half the FLOPs of a full product, which is what a search costs. Each block
    offers its rows its scores and, through its transpose, its columns theirs, but only those above
    the row's floor: its heap's worst score, or lower while the row still counts the items above its
    best same-group score. One comparison over the block finds those few, for both sides at once.
    The floors start high: the pass begins with a random sample of rows (``_pass_order``), which
    every row meets first; each row's heap then drops what lies below a guess made from the
    sample, one that is below the row's final floor but for a small chance (``_sample_ranks``). A
    row for which the guess was too high ends with fewer than its heap's width of items above it,
    and is searched again on its own: the result is exact either way.
    For l2 a row's score is 2<i, j> - |j|^2, as in the torch backend: both sides of a block
    share the product and subtract the other side's squared norms.
    Rows come by the heap width their depth needs (``DepthHeaps``), and are mapped back at the end.
    """
    num, take = len(embeddings), min(k + 1, len(embeddings) - 1)
    takes = np.full(num, take) if depths is None else np.minimum(np.asarray(depths) + 1, take)
    # 4096 rows at the default budget, the fastest block measured; with the float32 block, an
    # l2 score block and a bool mask (9 bytes a score), the buffers stay within knn.BLOCK_BYTES.
    rows = max(4, math.isqrt(knn.BLOCK_BYTES // 16) // 4 * 4)
    order = _pass_order(takes, rows)
    x = knn.as_faiss_input(embeddings)[order]
    heaps = DepthHeaps(takes[order])
    sq_norms = knn.squared_norms(embeddings).cpu().numpy()[order] if metric == "l2" else None
    counter = None if groups is None else GroupRankCounter(x, np.asarray(groups)[order], sq_norms, cap)
    size = min(rows, num) ** 2
    product = np.empty(size, np.float32)
    side = _BlockSide(size, sq_norms)

    def floors(block):
        return heaps.worst(block) if counter is None else np.minimum(heaps.worst(block), counter.floor[block])

    def count(scores, block_i, block_j):  # rows I see every score of the block
        if counter is not None:
            row, _, values = side.above_floor(scores, counter.floor, block_i, block_j)
            counter.count(row, values)

    def offer(row_floors, column_floors, block_i, block_j):
        # the group-rank counting's floors (each row's best same-group score) differ widely
        found = side.candidates(inner, row_floors, column_floors, block_i, block_j, apart=counter is not None)
        for row, ids, values in found:
            heaps.add_sparse(row, ids, values)
            if counter is not None:
                counter.count(row, values)

    sample, others, rest = _schedule(num, rows)
    seen = min(rows, num)  # the sample's size
    with _faiss_threads(1):  # FAISS's OpenMP threads would compete with the BLAS threads
        for phase, blocks in enumerate((sample, others, rest)):
            for block_i, block_j in blocks:
                inner = _inner_products(x[block_i], x[block_j], product)
                if block_i == block_j:
                    scores = side.scores(inner, block_j, transposed=False)
                    np.fill_diagonal(scores, -np.inf)  # each row skips itself
                    heaps.add(scores, block_i.start, block_j.start)
                    count(scores, block_i, block_j)
                elif phase == 1:  # rows I meet the sample first, the sample rows them
                    scores = side.scores(inner, block_j, transposed=False)
                    ranks = _sample_ranks(heaps.widths[block_i], seen, num - 1)
                    heaps.start(block_i, scores, block_j.start, ranks)
                    count(scores, block_i, block_j)
                    offer(np.full(len(inner), np.inf, np.float32), floors(block_j), block_i, block_j)
                else:
                    offer(floors(block_i), floors(block_j), block_i, block_j)
            if phase == 0:  # the sample rows have met the sample
                heaps.raise_floors(slice(0, seen), _sample_ranks(heaps.widths[:seen], seen - 1, num - 1))
    complete = heaps.complete()  # else the sample's guess was above the row's floor
    redo = np.flatnonzero(~complete)
    back = torch.from_numpy(order)
    settled = [(heaps, back, torch.from_numpy(complete))]
    if len(redo):  # searched again, whole rows against every band, by the same product
        again = DepthHeaps(heaps.takes[redo])
        for start in range(0, len(redo), rows):
            chunk = redo[start : start + rows]
            for band in range(0, num, rows):
                block = slice(band, min(band + rows, num))
                scores = side.scores(_inner_products(x[chunk], x[block], product), block, transposed=False)
                itself = (band <= chunk) & (chunk < block.stop)
                scores[np.flatnonzero(itself), chunk[itself] - band] = -np.inf
                again.add(scores, start, band)
        settled.append((again, back[redo], torch.ones(len(redo), dtype=torch.bool)))
    neighbors = torch.full((num, k), -1, dtype=torch.long)
    twins = knn.find_twins(embeddings)
    for found, ids, keep in settled:
        for first, values, indices in found.results():
            part = slice(first, first + len(values))
            rows, values, indices = ids[part][keep[part]], values[keep[part]], indices[keep[part]]
            settle = k if values.shape[1] == take else values.shape[1] - 1
            query, itself = embeddings[rows.to(embeddings.device)], rows.to(embeddings.device)
            neighbors[rows, :settle] = knn.first_k_settled(values, back[indices], settle, query, embeddings, metric,
                                                           itself, twins)
    if counter is None:
        return neighbors, None
    ranks = GroupRank(*(torch.empty_like(rank).index_copy_(0, back, rank) for rank in counter.ranks()))
    return neighbors, ranks


# The chance that a row's floor guessed from the sample is too high, so that the row is searched again.
GUESS_FAILURE = 1e-3
SAMPLE_SEED = 0


def _pass_order(takes, rows):
    """The rows in the order of the pass: a random sample of ``rows`` rows, then the others; each
    part by take (stable), so that rows of one heap width are contiguous."""
    num = len(takes)
    sample = np.zeros(num, bool)
    sample[np.random.default_rng(SAMPLE_SEED).choice(num, min(rows, num), replace=False)] = True
    return np.concatenate([np.flatnonzero(part)[np.argsort(takes[part], kind="stable")] for part in (sample, ~sample)])


def _sample_ranks(widths, seen, others):
    """(rows,) which best score of a row among ``seen`` random others (of ``others``) to take for
    its floor, so that it lies below the row's ``width``-th best of all but with chance
    GUESS_FAILURE: the number of the sample's items among the row's ``width`` best is
    hypergeometric, bounded here by a Poisson tail (heavier than the binomial's, heavier still
    than the hypergeometric's). 0 where no rank the row's heap holds is safe enough."""
    unique, each = np.unique(widths, return_inverse=True)
    rank = stats.poisson.isf(GUESS_FAILURE, unique * (seen / others)).astype(np.int64)[each] + 1  # P(X >= rank)
    return np.where((rank <= widths) & (rank <= seen), rank, 0)


def _schedule(num, rows):
    """The pass's blocks (I, J) in three phases, which together cover each pair of rows once
    (I == J: the block holds both orders): the sample (rows 0 to ``rows``) with itself; every other
    band of ``rows`` rows against the sample, as (band, sample); the other bands among themselves.

    A band's own pairs are tiled by diagonal blocks of rows / 4, then one block of rows / 2 and two
    of rows / 4 off the diagonal, so that the diagonal costs 5/8 of its square instead of all of it.
    """
    quarter = rows // 4

    def band(start):
        end = min(start + rows, num)
        blocks = [(slice(i, min(i + quarter, end)),) * 2 for i in range(start, end, quarter)]
        for size in (rows // 2, quarter):
            for i in range(start, end, 2 * size):
                if i + size < end:
                    blocks.append((slice(i, i + size), slice(i + size, min(i + 2 * size, end))))
        return blocks

    bands = range(rows, num, rows)
    others = [(slice(i, min(i + rows, num)), slice(0, min(rows, num))) for i in bands]
    rest = [block for i in bands for block in band(i)]
    rest += [(slice(i, min(i + rows, num)), slice(j, min(j + rows, num))) for i in bands for j in bands if j > i]
    return band(0), others, rest


def _inner_products(rows_i, rows_j, buffer):
    """Inner products of rows_i x rows_j, written into the flat buffer."""
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

    def candidates(self, inner, floor_i, floor_j, rows, ids, *, apart=False):
        """Both sides of the off-diagonal block rows x ids, found in one pass over it: (row,
        id, value) of the scores above their row's floor (floor_i for ``rows``, floor_j for
        ``ids``), sorted by row; first for ``rows`` (ids: the block's columns), then for ``ids``
        (ids: the block's rows). ``apart``: compare each side with its own floors, for floors
        that differ widely from row to row (the lowest would let too much through)."""
        mask = self.mask[: inner.size].reshape(inner.shape)
        if self.sq_norms is None and not apart:
            # a score above its row's or its column's floor is above the lower of its own side's
            # floor and the other side's lowest: the side holding the lowest floor keeps its own
            if floor_i.min() <= floor_j.min():
                np.greater(inner, np.minimum(floor_i, floor_j.min())[:, None], out=mask)
            else:
                np.greater(inner, np.minimum(floor_j, floor_i.min())[None, :], out=mask)
        else:
            np.greater(self.scores(inner, ids, transposed=False), floor_i[:, None], out=mask)
            mask |= self.scores(inner, rows, transposed=True) > floor_j[None, :]
        found = np.flatnonzero(mask)
        row, column = np.divmod(found, inner.shape[1])
        product = inner.ravel()[found]
        values = self._score(product, column, ids)
        keep = values > floor_i[row]
        yield rows.start + row[keep], ids.start + column[keep], values[keep]
        values = self._score(product, row, rows)
        keep = values > floor_j[column]
        row, column, values = row[keep], column[keep], values[keep]
        # a radix sort for 16-bit keys: the blocks' widths fit, and it is O(n)
        by_column = np.argsort(column.astype(np.int16) if inner.shape[1] < 2**15 else column, kind="stable")
        yield ids.start + column[by_column], rows.start + row[by_column], values[by_column]

    def _score(self, product, other, other_ids):
        """Scores from inner products, each against item ``other`` of ``other_ids``, computed as
        ``scores`` computes them (the same float32 operations)."""
        if self.sq_norms is None:
            return product
        return product * np.float32(2) - self.sq_norms[other_ids][other]

    def above_floor(self, scores, floor, rows, ids):
        """(row, id, value) of the scores above the floor of their row, sorted by row then id."""
        mask = self.mask[: scores.size].reshape(scores.shape)
        found = np.flatnonzero(np.greater(scores, floor[rows][:, None], out=mask))
        row, column = np.divmod(found, scores.shape[1])
        return rows.start + row, ids.start + column, scores.ravel()[found]


@contextmanager
def _faiss_threads(count):
    """FAISS's OpenMP threads limited to ``count`` inside the ``with`` block; restored after."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
