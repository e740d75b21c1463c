"""Where each row's nearest same-group item ranks among its neighbours, counted during the
symmetric search's pass (``symmetric.py``): the items scoring above that item's score, computed
beforehand by a small product per group."""

from typing import NamedTuple

import numpy as np
import torch

from dml_bench.evaluation import knn


class GroupRank(NamedTuple):
    """Where each row's nearest same-group item ranks among the row's neighbours (0-based):
    between ``low`` and ``high``, both included; ``low`` at or beyond the search's cap means
    the item ranks there or deeper."""

    low: torch.Tensor
    high: torch.Tensor


class GroupRankCounter:
    """Counts, for each row, the items scoring above its best same-group item.

    That best score is computed beforehand, by another summation than the blocks' product, so
    the two may differ by a rounding error: items beyond ``tolerance`` of it are surely above
    or below it, items within are ``near`` (the best same-group item itself among them).
    A row stops counting once ``cap`` items are surely above.
    """

    def __init__(self, x, groups, sq_norms, cap):
        best = best_in_group(x, groups, sq_norms)
        tolerance = score_tolerance(x, sq_norms is not None)
        self.low, self.high = best - tolerance, best + tolerance
        self.above = np.zeros(len(x), np.int64)
        self.near = np.zeros(len(x), np.int64)
        self.cap = cap
        self.floor = self.low.copy()  # the lowest score a row still needs to see

    def kernel_arguments(self):
        """The counter as the compiled block pass updates it in place (``heap_kernels``)."""
        return self.low, self.high, self.above, self.near, self.floor, int(self.cap)

    def ranks(self):
        """Nearest same-group item's rank: after the items surely above it, before the others
        near it; at least ``cap`` once ``cap`` are surely above (its band was never seen)."""
        capped = self.above >= self.cap
        high = np.where(capped, self.above, self.above + self.near - 1)
        return GroupRank(torch.from_numpy(self.above), torch.from_numpy(high))


def best_in_group(x, groups, sq_norms):
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


def score_tolerance(x, l2):
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
