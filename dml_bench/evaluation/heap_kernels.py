"""The symmetric search's inner loop, compiled (numba): a strip of inner products offered to the
running top lists of its rows and of its columns.

``heaps`` is (values, ids, offsets, floors): row r's min-heap at values[offsets[r]:offsets[r + 1]]
(its worst score first) with its ids, and floors[r] the lowest score the row still takes: its
heap's worst, or lower while the row counts the items above its best same-group score
(``counter``, from ``GroupRankCounter.kernel_arguments``: low, high, above, near, floor, cap).
Most scores lie below their row's floor: a stretch of scores is compared with the floors at once
(SIMD), the results read a word of flags at a time, and only the scores above a floor are offered
one by one: into the row's heap at once (its heap is in cache, the row's pushes come together),
into a column's heap later (a column's pushes come one or two a strip, each a cache miss at every
level of its heap): they wait in a list (``pending``) and are offered heap by heap at the end of
the tile (``offer_pending``). Scores are computed from the products as ``knn`` computes them, in
float32: the product itself, or for l2 2<i, j> - |j|^2. A call changes only the heaps it is given rows or columns of,
so calls for disjoint heaps may run at once, on threads of their own (the GIL released).
Compiled once and cached on disk (numba's ``cache=True``).
"""

import numba
import numpy as np

WORD = 8  # flags read at once: one uint64
CHUNK = 512  # a row's scores compared with one floor, which then rises with what entered the heap
TWO = np.float32(2)
EMPTY = np.finfo(np.float32).min  # an empty heap entry: any score replaces it
NO_NORMS, NO_IDS = np.zeros(1, np.float32), np.zeros(0, np.int32)  # _push's arguments where unused
SIGN, LOW, SHIFT = np.uint64(2**31), np.uint64(2**32 - 1), np.uint64(32)  # sort_heaps' keys


@numba.njit(cache=True, nogil=True)
def offer_block(inner, first_row, first_column, column_side, l2, row_sq_norms, column_sq_norms, heaps, counter,
                pending):
    """Heaps first_row + i see the scores of row i of ``inner`` (ids first_column + j); with
    ``column_side``, heaps first_column + j also see those of column j (ids first_row + i): the
    transpose, for an off-diagonal block whose columns are rows of the search too. The columns'
    scores above their floors wait in ``pending`` (``new_pending``) until ``offer_pending``."""
    above, found = _flag_buffers(max(CHUNK, inner.shape[1]))
    for i in range(inner.shape[0]):
        _offer_row(inner[i], first_row + i, first_column, l2, column_sq_norms, heaps, counter, above, found)
    if column_side:
        _collect_columns(inner, first_row, first_column, 0, inner.shape[1], l2, row_sq_norms, heaps, counter, pending,
                         above, found)


@numba.njit(cache=True)
def new_pending(size):
    """Room for ``size`` scores waiting for their heaps: (heaps, scores, ids, count, order)."""
    return (np.empty(size, np.int64), np.empty(size, np.float32), np.empty(size, np.int32), np.zeros(1, np.int64),
            np.empty(size, np.int64))


@numba.njit(cache=True, nogil=True)
def offer_pending(heaps, counter, pending):
    """The waiting scores offered, heap by heap: each heap's pushes then come together, its entries
    in cache after the first, where a push into a column's heap as its score comes is a cache miss
    at every level (a column's heap sees about one score of a strip)."""
    targets, scores, ids, count, order = pending
    n = count[0]
    if n == 0:
        return
    low, high = targets[:n].min(), targets[:n].max()
    starts = np.zeros(high - low + 2, np.int64)  # a counting sort by heap, stable
    for k in range(n):
        starts[targets[k] - low + 1] += 1
    starts = np.cumsum(starts)
    placed = starts[:-1].copy()
    for k in range(n):
        order[placed[targets[k] - low]] = k
        placed[targets[k] - low] += 1
    for heap in range(low, high + 1):
        first, last = starts[heap - low], starts[heap - low + 1]
        if last > first:
            _push(scores, NO_NORMS, 0, order[first:last], last - first, heap, 0, 0, 0, ids, False, heaps, counter)
    count[0] = 0


@numba.njit(cache=True, nogil=True)
def offer_columns(inner, first_row, first_column, start, stop, l2, row_sq_norms, heaps, counter, pending):
    """Heaps first_column + j, j from start to stop - 1, see the scores of column j of ``inner``
    (ids first_row + i), at ``offer_pending``, as ``offer_block``'s columns."""
    above, found = _flag_buffers(stop - start)
    _collect_columns(inner, first_row, first_column, start, stop, l2, row_sq_norms, heaps, counter, pending, above,
                     found)


@numba.njit(cache=True, nogil=True)
def start_rows(inner, first_row, first_column, ranks, l2, column_sq_norms, heaps, counter):
    """Heaps first_row + i, empty, see their first scores, row i of ``inner`` (ids first_column +
    j). With ranks[i] > 0 the heap is first filled with placeholders (g, id -1), g the row's
    ranks[i]-th best score, so that it takes only the scores above g (a floor guessed from these
    scores, ``symmetric``); with ranks[i] = 0 it takes the row as ``offer_block`` offers it."""
    values, ids, offsets, floors = heaps
    above, found = _flag_buffers(max(CHUNK, inner.shape[1]))
    most = max(1, ranks.max())
    best = (np.empty(most, np.float32), np.empty(most, np.int32), np.zeros(2, np.int64),
            np.empty(1, np.float32))  # one heap of ranks[i]: the row's best
    uncounted = no_counts()
    for i in range(inner.shape[0]):
        heap = first_row + i
        if ranks[i] > 0:
            best[0][: ranks[i]] = EMPTY
            best[2][1] = ranks[i]
            best[3][0] = EMPTY
            _offer_row(inner[i], 0, first_column, l2, column_sq_norms, best, uncounted, above, found)
            values[offsets[heap] : offsets[heap + 1]] = best[0][0]
            ids[offsets[heap] : offsets[heap + 1]] = -1
            floors[heap] = _floor(heap, heaps, counter)
        _offer_row(inner[i], heap, first_column, l2, column_sq_norms, heaps, counter, above, found)


@numba.njit(cache=True, nogil=True)
def refresh_floors(heaps, counter, first, last):
    """floors of heaps first..last-1 read anew from the heaps (after they were changed elsewhere)."""
    for heap in range(first, last):
        heaps[3][heap] = _floor(heap, heaps, counter)


@numba.njit(cache=True, nogil=True)
def sort_heaps(values, ids, offsets, first, last):
    """Heaps first..last-1 sorted in place, best score first (equal scores by id). Each entry is
    sorted as one uint64 key, its score's bits (``_descending``) then its id's: a sort of plain
    integers instead of an argsort and two gathers."""
    bits = values.view(np.uint32)
    keys = np.empty(np.max(offsets[first + 1 : last + 1] - offsets[first:last]) if last > first else 0, np.uint64)
    for heap in range(first, last):
        start, width = offsets[heap], offsets[heap + 1] - offsets[heap]
        for i in range(width):
            keys[i] = _descending(np.uint64(bits[start + i])) << SHIFT | (np.uint64(ids[start + i]) ^ SIGN) & LOW
        ordered = np.sort(keys[:width])
        for i in range(width):
            bits[start + i] = np.uint32(_descending(ordered[i] >> SHIFT))
            ids[start + i] = np.int64(ordered[i] & LOW) - np.int64(2**31)


@numba.njit(cache=True)
def no_counts():
    """The counter when nothing is counted (cap -1)."""
    return (np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros(0, np.float32), -1)


@numba.njit
def _offer_row(row, heap, first_column, l2, column_sq_norms, heaps, counter, above, found):
    """Heap ``heap`` sees the scores of ``row`` (ids first_column + j)."""
    floors = heaps[3]
    for start in range(0, len(row), CHUNK):
        scores, sq_norms = row[start : start + CHUNK], column_sq_norms[start : start + CHUNK]  # slices vectorize
        width, floor = len(scores), floors[heap]
        if l2:
            for j in range(width):
                above[j] = scores[j] * TWO - sq_norms[j] > floor
        else:
            for j in range(width):
                above[j] = scores[j] > floor
        _push(scores, sq_norms, 1, found, _flagged(above, width, found), heap, 0, first_column + start, 1, NO_IDS, l2,
              heaps, counter)


@numba.njit
def _collect_columns(inner, first_row, first_column, start, stop, l2, row_sq_norms, heaps, counter, pending, above,
                     found):
    """The scores of column j of ``inner``, j from start to stop - 1, that lie above its floor
    (heap first_column + j; ids first_row + i) added to ``pending``, offered first where it is full."""
    targets, scores, ids, count, _ = pending
    width = stop - start
    floors = heaps[3][first_column + start : first_column + stop]  # kept up to date by _push
    for i in range(inner.shape[0]):
        row = inner[i, start:stop]
        sq_norm = row_sq_norms[i]
        if l2:
            for j in range(width):
                above[j] = row[j] * TWO - sq_norm > floors[j]
        else:
            for j in range(width):
                above[j] = row[j] > floors[j]
        for f in range(_flagged(above, width, found)):
            if count[0] == len(targets):
                offer_pending(heaps, counter, pending)
            j, k = found[f], count[0]
            targets[k], scores[k], ids[k] = first_column + start + j, _score(row[j], sq_norm, l2), first_row + i
            count[0] = k + 1


@numba.njit
def _push(scores, sq_norms, norm_step, found, count, first_heap, heap_step, first_id, id_step, listed, l2, heaps,
          counter):
    """The flagged scores scores[found[f]], f < count, offered where they lie above their heap's
    floor (which may have risen since they were flagged): scores[j] to heap first_heap + heap_step
    * j, as id first_id + id_step * j (or listed[j], where ``listed`` is not empty), its squared
    norm sq_norms[norm_step * j]. The counter counts each first, then it enters the heap if above
    the heap's worst, sifted down to its place.

    One loop for a row's scores (heap_step 0) and a column's (id_step 0), with the push written
    out in it: a call per push, its arrays passed as arguments, cost twice the push itself.
    """
    values, ids, offsets, floors = heaps
    low, high, above, near, count_floor, cap = counter
    for f in range(count):
        j = found[f]
        heap = first_heap + heap_step * j
        value = _score(scores[j], sq_norms[norm_step * j], l2)
        if value <= floors[heap]:
            continue
        if cap >= 0 and value > low[heap]:
            if value > high[heap]:
                above[heap] += 1
                if above[heap] >= cap:
                    count_floor[heap] = np.inf
            else:
                near[heap] += 1
        offset, width = offsets[heap], offsets[heap + 1] - offsets[heap]
        if value > values[offset]:  # the worst replaced, the new entry sifted down to its place
            i = 0
            while True:
                child = 2 * i + 1
                if child >= width:
                    break
                if child + 1 < width:
                    child += values[offset + child + 1] < values[offset + child]
                if values[offset + child] >= value:
                    break
                values[offset + i] = values[offset + child]
                ids[offset + i] = ids[offset + child]
                i = child
            values[offset + i] = value
            ids[offset + i] = listed[j] if len(listed) else first_id + id_step * j
        floors[heap] = min(values[offset], count_floor[heap]) if cap >= 0 else values[offset]


@numba.njit
def _flag_buffers(width):
    """Flags for ``width`` scores, in whole words, and room for their positions."""
    return np.empty((width + WORD - 1) // WORD * WORD, np.uint8), np.empty(width, np.int64)


@numba.njit
def _flagged(above, count, found):
    """Writes into ``found`` the positions j < count where above[j] is set, and returns how many,
    reading a word of flags at a time (most hold none)."""
    for j in range(count, (count + WORD - 1) // WORD * WORD):
        above[j] = 0
    words = above.view(np.uint64)
    n = 0
    for w in range((count + WORD - 1) // WORD):
        if words[w]:
            for j in range(w * WORD, w * WORD + WORD):
                found[n] = j
                n += above[j]
    return n


@numba.njit
def _descending(bits):
    """A float32's bits (in a uint64) made an integer that orders as the negated float does, and
    back: a negative float's bits as they are, a positive one's with all but the sign flipped."""
    return bits if bits & SIGN else bits ^ LOW ^ SIGN


@numba.njit
def _score(product, sq_norm, l2):
    return product * TWO - sq_norm if l2 else product


@numba.njit
def _floor(heap, heaps, counter):
    worst = heaps[0][heaps[2][heap]]
    return min(worst, counter[4][heap]) if counter[5] >= 0 else worst
