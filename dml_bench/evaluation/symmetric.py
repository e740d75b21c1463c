"""Leave-one-out search of every item of a set among the others. The symmetric backend computes
each score once, s(i, j) = s(j, i): half the matrix product any other exact search pays for; it
also counts, on the way, the rank of each row's nearest same-group item. Order and ties as in
``knn``; fewer rows than half the set are searched by ``knn.nearest_neighbors``.
"""

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from dml_bench.evaluation import knn
from dml_bench.evaluation.group_rank import GroupRank, GroupRankCounter
from dml_bench.evaluation.threads import Threads, share


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
    found = _search(embeddings, rows, k, metric, backend, groups, cap, depths)
    return found.neighbors(), found.ranks


def leave_one_out_hits(
    embeddings: torch.Tensor,
    rows: torch.Tensor,
    k: int,
    groups: torch.Tensor,
    *,
    metric: str,
    backend: str = "auto",
    cap: int = 0,
    depths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, GroupRank | None]:
    """(len(rows), k) bool: the i-th nearest of ``embeddings[rows]`` among the others (as
    ``leave_one_out_search`` finds it) is of the row's group, ``groups`` (num,) ints; with
    ``depths``, from at least a row's own depth on it may be False whatever the neighbour. And
    with ``cap`` > 0 the rows' ``GroupRank`` (as ``leave_one_out_search`` gives it), else None.

    The symmetric search tells the group of each row's own depth of neighbours only, not of the
    (num, k) neighbours of a dense list: on a long-tailed set most rows need far fewer than k.
    """
    found = _search(embeddings, rows, k, metric, backend, groups if cap else None, cap, depths)
    return found.hits(groups), found.ranks


def same_group(neighbors: torch.Tensor, gallery_groups: torch.Tensor, query_groups: torch.Tensor) -> torch.Tensor:
    """(rows, k) bool: neighbour (index into the gallery; -1: none) is of its query's group."""
    return (gallery_groups[neighbors.clamp(min=0)] == query_groups[:, None]) & (neighbors >= 0)


class _Found(NamedTuple):
    """A search's result for ``rows`` of ``num`` embeddings: a dense (rows, k) tensor of
    neighbours (``dense``), or lists (``lists``: pairs of embedding indices (n,) and their
    neighbours, (n, depth) each, every embedding in one pair); and ranks (``GroupRank`` or None)."""

    rows: torch.Tensor
    num: int
    k: int
    dense: torch.Tensor | None
    lists: list | None
    ranks: GroupRank | None

    def neighbors(self):
        if self.dense is not None:
            return self.dense
        neighbors = torch.full((len(self.rows), self.k), -1, dtype=torch.long)
        for at, _, found in self._requested():
            neighbors[at, : found.shape[1]] = found
        return neighbors

    def hits(self, groups):
        if self.dense is not None:
            return same_group(self.dense, groups, groups[self.rows])
        groups = groups.cpu()
        hits = torch.zeros((len(self.rows), self.k), dtype=torch.bool)
        for at, ids, found in self._requested():
            hits[at, : found.shape[1]] = groups[found] == groups[ids, None]
        return hits

    def _requested(self):
        """(positions in ``rows``, embedding indices, their neighbours) of each list's rows that
        are in ``rows``."""
        position = torch.full((self.num,), -1, dtype=torch.long)
        position[self.rows] = torch.arange(len(self.rows))
        for ids, found in self.lists:
            at = position[ids]
            wanted = at >= 0
            yield at[wanted], ids[wanted], found[wanted]


def _search(embeddings, rows, k, metric, backend, groups, cap, depths):
    """The search of ``leave_one_out_search``, as a ``_Found``."""
    symmetric = knn.resolve_backend(backend, embeddings.device) == "symmetric"
    if not symmetric or 2 * len(rows) <= len(embeddings):
        query = embeddings if len(rows) == len(embeddings) else embeddings[rows]
        neighbors = knn.nearest_neighbors(query, embeddings, k, metric=metric, backend=backend, exclude=rows)
        return _Found(rows, len(embeddings), k, neighbors, None, None)
    knn.check_search(metric, k, len(embeddings) - 1)
    rows = rows.cpu()
    every_depth = None
    if depths is not None:  # the rows not searched for need one neighbour (a heap of two): the least there is
        every_depth = np.ones(len(embeddings), np.int64)
        every_depth[rows.numpy()] = depths.cpu().numpy()
    lists, ranks = _symmetric_knn(embeddings, k, metric, None if groups is None else groups.cpu(), cap, every_depth)
    if ranks is not None:
        ranks = GroupRank(*(rank[rows].to(embeddings.device) for rank in ranks))
    return _Found(rows, len(embeddings), k, None, lists, ranks)


def _symmetric_knn(embeddings, k, metric, groups=None, cap=0, depths=None):
    """The k nearest of every embedding among the others, computing each score once, as lists
    (``_Found``): each row's first k, or with ``depths`` (num,) its own depth's; with ``groups``,
    also each row's ``GroupRank`` (both: see ``leave_one_out_search``).

    Leave-one-out scores are symmetric (s(i, j) = s(j, i)), so only one block of each pair (I, J),
    (J, I) is computed: half the FLOPs of a full product, which is what a search costs. Each block
    offers its rows its scores and, through its transpose, its columns theirs, but only those above
    the row's floor: its heap's worst score, or lower while the row still counts the items above its
    best same-group score (``heap_kernels``; the threads share the blocks tile by tile, ``_pass``).
    The floors start high: the pass begins with a random sample of rows (``_pass_order``), which
    every row meets first; each row's heap then drops what lies below a guess made from the
    sample, one that is below the row's final floor but for a small chance (``_sample_ranks``). A
    row for which the guess was too high ends with fewer than its heap's width of items above it,
    and is searched again on its own: the result is exact either way.
    For l2 a row's score is 2<i, j> - |j|^2, as in the torch backend: both sides of a block
    share the product and subtract the other side's squared norms.
    Rows come by their depth (``DepthHeaps``), and are mapped back at the end.
    """
    num, take = len(embeddings), min(k + 1, len(embeddings) - 1)
    takes = np.full(num, take) if depths is None else np.minimum(np.asarray(depths) + 1, take)
    # bands of 4096 rows at the default budget; the sample's block, kept whole while the rows start
    # from it (_start_block), a sixteenth of knn.BLOCK_BYTES.
    rows = max(4, math.isqrt(knn.BLOCK_BYTES // 16) // 4 * 4)
    order = _pass_order(takes, rows)
    x = knn.as_faiss_input(embeddings)[order]
    sq_norms = knn.squared_norms(embeddings).cpu().numpy()[order] if metric == "l2" else None
    counter = None if groups is None else GroupRankCounter(x, np.asarray(groups)[order], sq_norms, cap)
    from dml_bench.evaluation.heaps import DepthHeaps  # numba's: loaded by the first search, not every process

    with Threads(torch.get_num_threads()) as threads:
        heaps = DepthHeaps(takes[order], threads, counter, sq_norms)
        _pass(heaps, x, rows)
        complete = heaps.complete()  # else the sample's guess was above the row's floor
        back = torch.from_numpy(order)
        settled = [(heaps.results(), back, torch.from_numpy(complete))]
        redo = np.flatnonzero(~complete)
        if len(redo):
            again = DepthHeaps(heaps.takes[redo], threads, sq_norms=sq_norms, num_ids=num)
            _search_again(again, redo, x, rows)
            settled.append((again.results(), back[redo], torch.ones(len(redo), dtype=torch.bool)))
    lists = []
    twins = knn.find_twins(embeddings)
    for results, ids, keep in settled:
        for first, values, indices in results:
            part = slice(first, first + len(values))
            row_ids, values, indices = ids[part][keep[part]], values[keep[part]], indices[keep[part]]
            settle = k if values.shape[1] == take else values.shape[1] - 1
            itself = row_ids.to(embeddings.device)
            lists.append((row_ids, knn.first_k_settled(values, back[indices], settle, embeddings[itself], embeddings,
                                                       metric, itself, twins)))
    if counter is None:
        return lists, None
    ranks = GroupRank(*(torch.empty_like(rank).index_copy_(0, back, rank) for rank in counter.ranks()))
    return lists, ranks


def _pass(heaps, x, rows):
    """The pass over the blocks of ``_schedule``, each computed once and offered to its rows and
    columns; the floors guessed from the sample once a row has met it. The sample's blocks and
    those against it go one after the other, all threads on each (``_offer_block``,
    ``_start_block``); the rest as tiles that each thread takes as it comes free, so that no
    thread waits for another's tile to end (``Threads.run_apart``)."""
    num = len(x)
    seen = min(rows, num)  # the sample's size
    sample, others, rest = _schedule(num, rows)
    for block_i, block_j in sample:
        _offer_block(heaps, x, block_i, block_j)
    heaps.raise_floors(slice(0, seen), _sample_ranks(heaps.takes[:seen], seen - 1, num - 1))
    whole = np.empty(min(rows, num) * seen, np.float32) if others else None
    for block_i, block_j in others:  # rows I meet the sample first
        _start_block(heaps, x, block_i, block_j, _sample_ranks(heaps.takes[block_i], seen, num - 1), whole)
    tasks = _tiles(rest, rows, heaps.threads.count)
    heaps.threads.run_apart(tasks, lambda part, tile: _offer_tile(heaps, x, *tile, part))


def _start_block(heaps, x, block_i, block_j, ranks, whole):
    """The block (block_i, the sample) offered to its rows, whose heaps start with it (``start``),
    each thread a share of the rows, then to its columns, each thread a share of the columns: the
    block is kept whole in between, in the buffer ``whole``."""
    threads = heaps.threads
    inner = whole[: (block_i.stop - block_i.start) * (block_j.stop - block_j.start)].reshape(
        block_i.stop - block_i.start, block_j.stop - block_j.start)

    def rows(part, parts):
        for strip in threads.strips(share(block_i, part, parts), inner.shape[1]):
            local = slice(strip.start - block_i.start, strip.stop - block_i.start)
            np.matmul(x[strip], x[block_j].T, out=inner[local])
            heaps.start(inner[local], strip.start, block_j.start, ranks[local])

    def columns(part, parts):
        heaps.offer_columns(inner, block_i.start, block_j.start, share(slice(0, inner.shape[1]), part, parts), part)
        heaps.offer_pending(part)

    threads.run(rows)
    threads.run(columns)


def _offer_block(heaps, x, block_i, block_j):
    """The block (block_i, block_j) of the pass offered to its rows and, off the diagonal, to its
    columns, by all the threads. With p threads, an off-diagonal block is cut into p x p tiles and
    taken in p steps: in step s thread t takes tile (t, t + s mod p), so that no two threads touch
    one heap."""
    threads = heaps.threads
    diagonal = block_i == block_j

    def tile(part, parts, step):
        columns = block_j if diagonal else share(block_j, (part + step) % parts, parts)
        _offer_tile(heaps, x, share(block_i, part, parts), columns, part, diagonal)

    for step in range(1 if diagonal else threads.count):
        threads.run(lambda part, parts: tile(part, parts, step))  # noqa: B023  run returns within the step


def _tiles(blocks, rows, parts):
    """The blocks as tasks for ``Threads.run_apart``: an off-diagonal block cut into parts x parts
    tiles (as ``_offer_block`` cuts it), a diagonal one whole; each tile keyed by the pieces of
    ``rows // parts`` rows whose heaps it changes, so that no two tiles changing one heap run at
    once."""
    unit = max(1, rows // parts)

    def keys(rows):
        return set(range(rows.start // unit, (rows.stop - 1) // unit + 1))

    tiles = []
    for block_i, block_j in blocks:
        if block_i == block_j:
            tiles.append((block_i, block_j))
        else:
            tiles += [(share(block_i, a, parts), share(block_j, b, parts)) for a in range(parts) for b in range(parts)]
    return [(keys(tile_i) | keys(tile_j), (tile_i, tile_j)) for tile_i, tile_j in tiles if tile_i.stop > tile_i.start
            and tile_j.stop > tile_j.start]


def _offer_tile(heaps, x, rows, columns, part, diagonal=None):
    """The tile (rows, columns) offered to its rows and, off the diagonal (rows == columns, or
    ``diagonal``: rows within columns), to its columns, by thread ``part``: made strip by strip,
    each strip offered while it is in the core's cache."""
    threads = heaps.threads
    diagonal = rows == columns if diagonal is None else diagonal
    for strip in threads.strips(rows, columns.stop - columns.start):
        inner = threads.product(part, x[strip], x[columns])
        if diagonal:  # each row skips itself
            inner[np.arange(len(inner)), np.arange(strip.start, strip.stop) - columns.start] = -np.inf
        heaps.offer(inner, strip.start, columns.start, column_side=not diagonal, part=part)
    heaps.offer_pending(part)


def _search_again(heaps, redo, x, rows):
    """Rows ``redo`` of x searched again (heap i for row redo[i]): whole rows against every band,
    by the same product, each row skipping itself."""
    num, threads = len(x), heaps.threads

    def share_of(part, parts, band):
        for strip in threads.strips(share(slice(0, len(redo)), part, parts), band.stop - band.start):
            ids = redo[strip]
            inner = threads.product(part, x[ids], x[band])
            itself = (band.start <= ids) & (ids < band.stop)
            inner[np.flatnonzero(itself), ids[itself] - band.start] = -np.inf
            heaps.offer(inner, strip.start, band.start)

    for start in range(0, num, rows):
        band = slice(start, min(start + rows, num))
        threads.run(lambda part, parts: share_of(part, parts, band))  # noqa: B023  run returns within the step


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
