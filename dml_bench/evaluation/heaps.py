"""The running nearest neighbours of every row of a search, kept in FAISS min-heaps.

``RowHeaps`` keeps the same number of neighbours for each of its rows; ``DepthHeaps`` keeps for
each row only as many as that row needs, rows grouped by need into ``RowHeaps`` of a power-of-two
width. A deep search where few rows need the depth (MAP@R on iNaturalist: one class of 1,003
images makes every row search 1,003 deep, while the median row needs 33) then keeps and updates
small heaps for most rows, and their floors, higher, let fewer scores through at all.
"""

import faiss
import numpy as np
import torch


class RowHeaps:
    """The running top ``take`` of ``num`` rows: FAISS min-heaps, fed dense blocks or sparse scores."""

    def __init__(self, num, take):
        num, take = int(num), int(take)
        self.take = take
        # empty heaps, as FAISS's heapify leaves them (equal values make a heap), filled faster
        self.values = np.full((num, take), np.finfo(np.float32).min, np.float32)
        self.indices = np.full((num, take), -1, np.int64)
        self.heaps = faiss.float_minheap_array_t()
        self.heaps.nh, self.heaps.k = num, take
        self.heaps.val, self.heaps.ids = faiss.swig_ptr(self.values), faiss.swig_ptr(self.indices)

    def worst(self):
        """(num,) the score a row's heap drops next (float32's lowest while it is not full)."""
        return self.values[:, 0]

    def add(self, scores, first_row, first_id):
        """Rows first_row... of the heaps see the dense block's scores (C-contiguous), ids from first_id."""
        self.heaps.addn(scores.shape[1], faiss.swig_ptr(scores), int(first_id), int(first_row), len(scores))

    def add_sparse(self, row, ids, values):
        """Heap row[i] sees values[i] with id ids[i]; entries sorted by row."""
        keep = values > self.worst()[row]  # most offered scores never enter a heap
        row, ids, values = row[keep], ids[keep], values[keep]
        if len(row) == 0:
            return
        first_row = row[0]
        per_row = np.bincount(row - first_row)
        width = int(per_row.max())
        place = np.arange(len(row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        padded_values = np.full((len(per_row), width), -np.inf, np.float32)
        padded_ids = np.full((len(per_row), width), -1, np.int64)
        padded_values[row - first_row, place], padded_ids[row - first_row, place] = values, ids
        self.heaps.addn_with_ids(width, faiss.swig_ptr(padded_values), faiss.swig_ptr(padded_ids), width,
                                 int(first_row), len(per_row))

    def result(self):
        """(num, take) scores and ids, nearest first."""
        self.heaps.reorder()
        return torch.from_numpy(self.values), torch.from_numpy(self.indices)


class DepthHeaps:
    """Heaps for rows 0..num-1 where row i keeps its ``takes[i]`` best: each run of consecutive
    rows of one width shares a ``RowHeaps``, the width the next power of two of their takes (at
    most the largest take), so each row's heap is at most twice its need; rows that come by take
    make few runs. (Widths closer to the takes were tried: they move where a row's list is cut, and
    with it which rows tied at the cut are searched again by torch, whose float32 rounding can
    order near-ties otherwise; the gain was small.)"""

    def __init__(self, takes):
        self.takes = takes = np.asarray(takes)
        self.widths = np.minimum(2 ** np.ceil(np.log2(np.maximum(takes, 1))).astype(np.int64), takes.max())
        self.starts = np.flatnonzero(np.r_[True, self.widths[1:] != self.widths[:-1]])
        self.ends = np.r_[self.starts[1:], len(takes)]
        self.groups = [RowHeaps(end - start, int(self.widths[start])) for start, end in zip(self.starts, self.ends)]

    def worst(self, rows=slice(0, None)):
        """The score each row of the slice ``rows`` (all rows by default) drops next."""
        last = len(self.takes) if rows.stop is None else rows.stop
        return np.concatenate([group.worst()[lo:hi] for group, lo, hi, _ in self._pieces(rows.start, last)])

    def _pieces(self, first, last):
        """(group, its rows from, to, and the first of them counted from ``first``) of each group
        that rows first..last-1 overlap."""
        for group, start, end in zip(self.groups, self.starts, self.ends):
            if start < last and first < end:
                yield group, int(max(first, start) - start), int(min(last, end) - start), int(max(first, start) - first)

    def add(self, scores, first_row, first_id):
        """Rows first_row... see the dense block's scores, ids from first_id."""
        for group, lo, hi, offset in self._pieces(first_row, first_row + len(scores)):
            group.add(scores[offset : offset + hi - lo], lo, first_id)

    def add_sparse(self, row, ids, values):
        """Row row[i] sees values[i] with id ids[i]; entries sorted by row."""
        cuts = np.r_[np.searchsorted(row, self.starts), len(row)]
        for group, start, a, b in zip(self.groups, self.starts, cuts[:-1], cuts[1:]):
            if b > a:
                group.add_sparse(row[a:b] - start, ids[a:b], values[a:b])

    def raise_floors(self, rows, ranks):
        """For each row of the slice ``rows`` with ranks[i] > 0: every entry of its heap up to its
        ranks[i]-th best score g becomes a placeholder (g, id -1), so the heap takes only scores
        above g from now on. A heap that ends with a placeholder has met fewer than its width of
        items above g, and is incomplete."""
        for group, lo, hi, offset in self._pieces(rows.start, rows.stop):
            rank = ranks[offset : offset + hi - lo]
            values, indices = group.values[lo:hi], group.indices[lo:hi]
            best = -np.sort(-values, axis=1)
            floor = np.where(rank > 0, best[np.arange(len(best)), np.maximum(rank, 1) - 1], -np.inf)
            below = values <= floor[:, None]  # raising every value to at least g keeps each heap a heap
            values[below] = np.broadcast_to(floor[:, None], values.shape)[below]
            indices[below] = -1

    def start(self, rows, scores, first_id, ranks):
        """The empty heaps of the slice ``rows`` from their first scores, a dense block (ids from
        first_id), as ``raise_floors`` would leave them after ``add``: with ranks[i] > 0, the scores
        above the ranks[i]-th best g and placeholders (g, id -1); else the heap's width of the best.
        A selection of the few best per row (torch's multi-threaded ``topk``), not a heap pass."""
        take = np.where(ranks > 0, ranks, np.minimum(self.widths[rows], scores.shape[1]))
        values, ids = (t.numpy() for t in torch.from_numpy(scores).topk(int(take.max()), dim=1))
        floor = np.where(ranks > 0, values[np.arange(len(values)), take - 1], -np.inf).astype(np.float32)
        for group, lo, hi, offset in self._pieces(rows.start, rows.stop):
            group.values[lo:hi] = floor[offset : offset + hi - lo, None]
            group.indices[lo:hi] = -1
        row, place = np.nonzero(np.arange(values.shape[1]) < take[:, None])
        self.add_sparse(rows.start + row, first_id + ids[row, place], values[row, place])

    def complete(self):
        """(num,) bool: the row's heap holds no placeholder (``raise_floors``)."""
        return np.concatenate([(group.indices >= 0).all(1) for group in self.groups])

    def results(self):
        """Per group: (first row, rows' scores and ids nearest first, (rows, width) each)."""
        return [(int(start), *group.result()) for group, start in zip(self.groups, self.starts)]
