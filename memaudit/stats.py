"""Intervals for rates: seeded bootstrap (what the paper reports) and Wilson (closed form).

A bootstrap resample of n Bernoulli flags with c successes has a Binomial(n, c/n) count, so the
bootstrap of a proportion is drawn directly from that binomial: identical in distribution to
resampling the flags, and O(B) instead of O(B n).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st

from ._validation import check_fraction, check_positive_int
from .results import Rate

__all__ = ["bootstrap_rate", "wilson_interval", "rate", "rate_difference", "cluster_rate"]


def wilson_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``count / n``.

    Unlike the bootstrap it does not collapse to a point at 0 or n successes: with 0 of 1,000
    flagged, the 95% upper bound is 0.38%.
    """
    if n <= 0:
        raise ValueError("a rate needs at least one item")
    z = _st.norm.ppf(0.5 + confidence / 2)
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if count == 0 else max(0.0, centre - half)  # exact bounds at the edges
    hi = 1.0 if count == n else min(1.0, centre + half)
    return float(lo), float(hi)


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def bootstrap_rate(
    count: int, n: int, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the proportion ``count / n`` (seeded)."""
    if n <= 0:
        raise ValueError("a rate needs at least one item")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, count / n, size=n_bootstrap) / n
    return _percentiles(draws, confidence)


def rate(
    flags, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0, label: str = ""
) -> Rate:
    """The fraction of true ``flags`` with its bootstrap and Wilson intervals.

    Parameters
    ----------
    flags : array-like of bool
        One flag per item.
    n_bootstrap : int, default=1000
        Bootstrap resamples (the paper uses 1,000).
    confidence : float, default=0.95
    seed : int, default=0

    Returns
    -------
    Rate
    """
    flags = np.asarray(flags, dtype=bool).ravel()
    n = flags.size
    if n == 0:
        raise ValueError(f"cannot compute a rate{' of ' + label if label else ''} on zero items")
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_fraction(confidence, "confidence")
    count = int(flags.sum())
    lo, hi = bootstrap_rate(count, n, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return Rate(
        value=count / n,
        count=count,
        n=n,
        low=lo,
        high=hi,
        confidence=confidence,
        method=f"percentile bootstrap, {n_bootstrap} resamples, seed {seed}",
        wilson=wilson_interval(count, n, confidence),
    )


def rate_difference(
    a: Rate, b: Rate, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Rate:
    """``a - b`` for two independent rates, with a bootstrap interval of the difference.

    Used for the excess of the samples' memorized fraction over the held-out control.
    """
    rng = np.random.default_rng(seed)
    da = rng.binomial(a.n, a.value, size=n_bootstrap) / a.n
    db = rng.binomial(b.n, b.value, size=n_bootstrap) / b.n
    lo, hi = _percentiles(da - db, confidence)
    return Rate(
        value=a.value - b.value,
        count=None,
        n=a.n,
        low=lo,
        high=hi,
        confidence=confidence,
        method=f"difference of independent percentile bootstraps, {n_bootstrap} resamples, seed {seed}",
        wilson=None,
    )


def cluster_rate(flags, clusters, *, n_bootstrap: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> Rate:
    """The fraction of true ``flags`` with a cluster bootstrap interval.

    Items of one cluster (overlapping windows of one series) are not independent, so the
    interval resamples whole clusters with replacement and recomputes the pooled fraction.
    """
    flags = np.asarray(flags, dtype=bool).ravel()
    clusters = np.asarray(clusters).ravel()
    if flags.size == 0:
        raise ValueError("cannot compute a rate on zero items")
    if clusters.shape != flags.shape:
        raise ValueError("flags and clusters must have the same length")
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_fraction(confidence, "confidence")
    _, inv = np.unique(clusters, return_inverse=True)
    k = inv.max() + 1
    hits = np.bincount(inv, weights=flags, minlength=k)
    sizes = np.bincount(inv, minlength=k)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_bootstrap)
    step = max(1, (1 << 22) // k)  # bounded memory for many clusters
    for b in range(0, n_bootstrap, step):
        picks = rng.integers(0, k, size=(min(step, n_bootstrap - b), k))
        draws[b : b + len(picks)] = hits[picks].sum(1) / sizes[picks].sum(1)
    lo, hi = _percentiles(draws, confidence)
    count = int(flags.sum())
    return Rate(value=count / flags.size, count=count, n=int(flags.size), low=lo, high=hi,
                confidence=confidence,
                method=f"cluster bootstrap over {k} groups, {n_bootstrap} resamples, seed {seed}",
                wilson=None)
