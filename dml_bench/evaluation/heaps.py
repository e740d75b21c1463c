"""The running nearest neighbours of every row of a search: a min-heap per row, each as wide as
its row needs, all in one flat array that the compiled block pass updates (``heap_kernels``).

A deep search where few rows need the depth (MAP@R on iNaturalist: one class of 1,003 images makes
every row search 1,003 deep, while most rows need far fewer; docs/evaluation.md) then keeps and
updates small heaps for most rows, and their floors, higher, let fewer scores through at all.
"""

import numpy as np
import torch

from dml_bench.evaluation import heap_kernels
from dml_bench.evaluation.threads import share

PENDING = 2**18  # columns' scores that wait for their heaps, per thread (28 bytes each)


class DepthHeaps:
    """Heaps for rows 0..num-1 where row i keeps its ``takes[i]`` best, in a heap of that width:
    no wider, so that its floor is as high as it can be. Rows of one width that come together form
    a run, a dense (rows, width) view of the heaps (rows that come by take make few runs).

    ``counter`` (``GroupRankCounter`` or None): the scores the block pass offers are counted there
    first, and a row's floor is also at most the counter's. ``threads``: the search's (``Threads``).
    sq_norms: None for inner products, else the squared norms of the ids, for l2; num_ids: how many
    ids there are (default: one per heap).
    """

    def __init__(self, takes, threads, counter=None, sq_norms=None, num_ids=None):
        self.threads = threads
        # for l2 a row's score is 2<i, j> - |j|^2, j's squared norm from sq_norms (ids 0..num_ids-1)
        self.l2 = sq_norms is not None
        self.sq_norms = np.zeros(num_ids or len(takes), np.float32) if sq_norms is None else sq_norms
        self.takes = takes = np.asarray(takes, np.int64)
        self.offsets = np.r_[0, np.cumsum(takes)]
        self.values = np.full(self.offsets[-1], heap_kernels.EMPTY, np.float32)
        self.ids = np.full(self.offsets[-1], -1, np.int32)  # ids below 2**31: half the cache lines of int64
        self.floors = np.full(len(takes), heap_kernels.EMPTY, np.float32)  # see heap_kernels
        self._heaps = self.values, self.ids, self.offsets, self.floors
        self.starts = np.flatnonzero(np.r_[True, takes[1:] != takes[:-1]])
        self.ends = np.r_[self.starts[1:], len(takes)]
        self._counts = heap_kernels.no_counts() if counter is None else counter.kernel_arguments()
        self._pending = [heap_kernels.new_pending(PENDING) for _ in range(threads.count)]  # one per thread

    def offer(self, inner, first_row, first_column, *, column_side=False, part=0):
        """Heaps first_row + i see the scores of row i of the block of inner products ``inner``
        (C-contiguous; ids first_column + j); with ``column_side``, heaps first_column + j also see
        those of column j (ids first_row + i): the block's transpose, for an off-diagonal block whose
        columns are rows of the search too. The columns see theirs at ``offer_pending(part)``, all
        of a heap together (``heap_kernels.offer_pending``). Calls for disjoint heaps, of distinct
        ``part``, may run at once (threads)."""
        rows, columns = inner.shape
        norms = self.sq_norms
        heap_kernels.offer_block(inner, first_row, first_column, column_side, self.l2,
                                 norms[first_row : first_row + rows] if column_side else norms[:0],
                                 norms[first_column : first_column + columns], self._heaps, self._counts,
                                 self._pending[part])

    def offer_pending(self, part):
        """The columns' scores that ``offer(..., part=part)`` left waiting, offered to their heaps."""
        heap_kernels.offer_pending(self._heaps, self._counts, self._pending[part])

    def start(self, inner, first_row, first_column, ranks):
        """Heaps first_row + i, empty, see row i of ``inner`` first: with ranks[i] > 0, they take
        only the scores above the row's ranks[i]-th best g, and hold placeholders (g, id -1) for
        the rest, as ``raise_floors`` would leave them; with ranks[i] = 0, the best."""
        heap_kernels.start_rows(inner, first_row, first_column, ranks, self.l2,
                                self.sq_norms[first_column : first_column + inner.shape[1]], self._heaps,
                                self._counts)

    def offer_columns(self, inner, first_row, first_column, columns, part=0):
        """Heaps first_column + j, for j in the slice ``columns``, see column j of ``inner`` (ids
        first_row + i), at ``offer_pending(part)``."""
        heap_kernels.offer_columns(inner, first_row, first_column, columns.start, columns.stop, self.l2,
                                   self.sq_norms[first_row : first_row + len(inner)], self._heaps, self._counts,
                                   self._pending[part])

    def _runs(self, first, last):
        """(values, ids, rows from, to, the first of them counted from ``first``) of each run that
        rows first..last-1 overlap; values and ids are (rows, width) views of the run's heaps."""
        for start, end in zip(self.starts, self.ends):
            if start < last and first < end:
                lo, hi, width = max(first, start), min(last, end), self.takes[start]
                flat = slice(self.offsets[lo], self.offsets[hi])
                yield self.values[flat].reshape(hi - lo, width), self.ids[flat].reshape(hi - lo, width), lo - first

    def raise_floors(self, rows, ranks):
        """For each row of the slice ``rows`` with ranks[i] > 0: every entry of its heap up to its
        ranks[i]-th best score g becomes a placeholder (g, id -1), so the heap takes only scores
        above g from now on. A heap that ends with a placeholder has met fewer than its width of
        items above g, and is incomplete."""
        for values, indices, offset in self._runs(rows.start, rows.stop):
            rank = ranks[offset : offset + len(values)]
            best = -np.sort(-values, axis=1)
            floor = np.where(rank > 0, best[np.arange(len(best)), np.maximum(rank, 1) - 1], -np.inf)
            below = values <= floor[:, None]  # raising every value to at least g keeps each heap a heap
            values[below] = np.broadcast_to(floor[:, None], values.shape)[below]
            indices[below] = -1
        heap_kernels.refresh_floors(self._heaps, self._counts, rows.start, rows.stop)

    def complete(self):
        """(num,) bool: the row's heap holds no placeholder (``raise_floors``)."""
        return np.concatenate([(ids >= 0).all(1) for _, ids, _ in self._runs(0, len(self.takes))])

    def results(self):
        """Per run: (first row, rows' scores and ids (int32) nearest first, (rows, width) each)."""
        def step(part, parts):  # each thread an equal share of the entries, not of the heaps
            own = share(slice(0, len(self.values)), part, parts)
            first, last = np.searchsorted(self.offsets, (own.start, own.stop))
            heap_kernels.sort_heaps(self.values, self.ids, self.offsets, first, last)

        self.threads.run(step)
        return [(int(first), torch.from_numpy(values), torch.from_numpy(ids))
                for first, (values, ids, _) in zip(self.starts, self._runs(0, len(self.takes)))]

