"""Confidence intervals and paired tests for the results tables (``dml_bench.comparison.aggregate`` and ``compare``).

- ``t_half_width``: half-width of the Student t confidence interval of a mean (n - 1 degrees
  of freedom), the ± of the results table.
- ``paired_test``: matched runs (same seed / fold) of two configurations: mean difference, its
  paired Student t interval and p-value (``scipy.stats.ttest_rel``) and the Wilcoxon
  signed-rank p-value (``scipy.stats.wilcoxon``).
- ``paired_randomization``: one run of each over the same test queries: the paired randomization
  (sign-flip) test's p-value, the test Smucker, Allan and Carterette (CIKM 2007) recommend for
  comparing retrieval systems, and the paired bootstrap's percentile interval of the mean
  difference, both through scipy.
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


def paired_randomization(
    differences: dict[str, np.ndarray],
    *,
    samples: int = 10000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, dict]:
    """Two runs over the same test queries, per-query differences (other - baseline, one array per
    metric). Per metric: ``n`` (queries), ``difference`` (the mean), ``p`` of the paired
    randomization test (each query's difference keeps or flips its sign at random,
    ``scipy.stats.permutation_test`` with ``permutation_type="samples"``; two-sided; exact when
    ``samples`` covers all 2^n flips) and ``ci_low``/``ci_high``, the percentile interval of the
    paired bootstrap (queries resampled with replacement, ``scipy.stats.bootstrap``). Each test
    draws ``samples`` times from ``np.random.default_rng(seed)``, the same draws for every metric."""
    if samples < 1:
        raise ValueError(f"resamples must be positive; got {samples}")
    results = {}
    for name, values in differences.items():
        d = np.asarray(values, dtype=np.float64)
        n = len(d)
        if n == 0:
            raise ValueError("a paired test needs at least one query")
        batch = max(1, (1 << 22) // n)  # resamples held in memory at once: bounded for 60,000 queries too
        mean = lambda baseline, other, axis: np.mean(other - baseline, axis=axis)  # noqa: E731
        pairs = (np.zeros(n), d)  # (baseline, other) shifted so that baseline is 0: the same differences
        test = stats.permutation_test(pairs, mean, permutation_type="samples", vectorized=True, n_resamples=samples,
                                      alternative="two-sided", batch=batch, rng=np.random.default_rng(seed))
        if np.all(d == d[0]):  # scipy's bootstrap has no interval for a constant statistic
            low = high = float(d[0])
        else:
            interval = stats.bootstrap(pairs, mean, paired=True, vectorized=True, n_resamples=samples,
                                       confidence_level=confidence, method="percentile", batch=batch,
                                       rng=np.random.default_rng(seed)).confidence_interval
            low, high = float(interval.low), float(interval.high)
        results[name] = {"n": n, "difference": float(d.mean()), "ci_low": low, "ci_high": high,
                         "p": float(min(1.0, test.pvalue))}
    return results
