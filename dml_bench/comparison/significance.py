"""Confidence intervals and paired tests for the results tables (``dml_bench.comparison.aggregate`` and ``compare``).

- ``t_half_width``: half-width of the Student t confidence interval of a mean (n - 1 degrees
  of freedom), the ± of the results table.
- ``paired_test``: matched runs (same seed / fold) of two configurations: mean difference, its
  paired Student t interval and p-value (``scipy.stats.ttest_rel``) and the Wilcoxon
  signed-rank p-value (``scipy.stats.wilcoxon``).
- ``paired_bootstrap``: one run of each over the same test queries: resampling the queries
  (with replacement, both runs together), the percentile interval of the mean difference and a
  two-sided p-value.
- ``holm``: Holm's step-down correction of a family of p-values.
"""

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """t_{(1+confidence)/2, n-1} * s / sqrt(n): the mean ± this is the Student t interval
    (None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    return float(stats.t.ppf((1 + confidence) / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def paired_test(baseline: Sequence[float], other: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Compare matched values (``other[i]`` against ``baseline[i]``): ``n``, ``difference`` (mean
    of other - baseline), ``ci_low``/``ci_high`` (paired Student t), ``p`` (paired t),
    ``p_wilcoxon`` and ``notes`` saying why a value is None (n < 2, constant differences)."""
    base, oth = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.shape != oth.shape or base.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of one length; got {base.shape} and {oth.shape}")
    d = oth - base
    n = len(d)
    result = {"n": n, "difference": float(d.mean()) if n else None, "ci_low": None, "ci_high": None,
              "p": None, "p_wilcoxon": None, "notes": []}
    if n < 2:
        result["notes"] += ["t n/a: n < 2", "Wilcoxon n/a: n < 2"]
        return result
    half = t_half_width(d, confidence)
    result.update(ci_low=result["difference"] - half, ci_high=result["difference"] + half)
    if np.all(d == d[0]):
        result["notes"].append("t n/a: all differences equal")
    else:
        result["p"] = float(stats.ttest_rel(oth, base).pvalue)
    if np.all(d == 0):
        result["notes"].append("Wilcoxon n/a: all differences zero")
    else:
        result["p_wilcoxon"] = float(stats.wilcoxon(oth, base).pvalue)
    return result


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the given order; None entries stay None and are not counted
    in the family. The i-th smallest of m (from 0) becomes max over j <= i of (m - j) p_(j),
    at most 1: rejecting where the adjusted p < alpha controls the family-wise error at alpha."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_bootstrap(
    differences: dict[str, np.ndarray],
    *,
    samples: int = 10000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, dict]:
    """Per-query differences (other - baseline, one array per metric, the same queries in each)
    resampled: each of ``samples`` draws picks len(queries) queries with replacement, the same
    for every metric, from ``np.random.default_rng(seed)``. Per metric: ``n`` (queries),
    ``difference`` (the mean), ``ci_low``/``ci_high`` (percentile interval of the resampled
    means) and ``p``: two-sided, 2 * min of the shares of resampled means <= 0 and >= 0, each
    counted as (1 + count) / (1 + samples), at most 1."""
    if samples < 1:
        raise ValueError(f"bootstrap samples must be positive; got {samples}")
    names = list(differences)
    d = np.stack([np.asarray(differences[name], dtype=np.float64) for name in names], axis=1)
    n = len(d)
    if n == 0:
        raise ValueError("a bootstrap needs at least one query")
    rng = np.random.default_rng(seed)
    means = np.empty((samples, len(names)))
    chunk = max(1, min(samples, (1 << 22) // n))
    for start in range(0, samples, chunk):
        rows = min(chunk, samples - start)
        picks = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=rows * n).reshape(rows, n)
        means[start : start + rows] = counts @ d / n
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    below, above = (means <= 0).sum(0), (means >= 0).sum(0)
    p = np.minimum(1.0, 2 * np.minimum(below + 1, above + 1) / (samples + 1))
    return {name: {"n": n, "difference": float(d[:, j].mean()), "ci_low": float(low[j]), "ci_high": float(high[j]),
                   "p": float(p[j])} for j, name in enumerate(names)}
