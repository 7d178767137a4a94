"""Intervals for rates and the ROC points of a membership attack.

Every rate carries two intervals at the same confidence:

- a seeded **percentile bootstrap** (what the papers report). A bootstrap resample of n Bernoulli
  flags with c successes has a Binomial(n, c/n) count, so it is drawn directly from that binomial:
  identical in distribution to resampling the flags, and O(B) instead of O(B n). It collapses to a
  point at 0 and n successes (every resample is then 0 or n).
- a closed-form **score interval** that stays informative at 0 and n: Wilson (1927) for a
  proportion; Newcombe (1998)'s hybrid score interval ("method 10") for a difference of two
  independent proportions; for a pooled fraction over clusters, Wilson at the Kish effective number
  of clusters, the worst case over any dependence inside a cluster.

The ROC helpers take every distinct score as a threshold ("member when score >= threshold") plus
+inf (nothing flagged), so no point is dropped on a straight segment: TPR at a fixed FPR and the AUC
are read from every point, ties included, and the bootstrap uses the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from ._validation import check_fraction, check_positive_int
from .results import Rate

__all__ = ["bootstrap_rate", "wilson_interval", "newcombe_interval", "mover_interval", "rate",
           "rate_difference", "cluster_rate", "roc_points", "roc_auc", "tpr_at_fpr",
           "fpr_resolved", "auc_score_interval", "seed_label", "spawn", "StatsConfig"]


@dataclass(frozen=True)
class StatsConfig:
    """How every interval in memaudit is computed: the one home of these defaults.

    Probes and runners take these three settings and read their defaults from here
    (``StatsConfig.n_bootstrap`` etc.), so a change lands everywhere at once.

    Parameters
    ----------
    n_bootstrap : int
        Bootstrap resamples behind each percentile interval.
    confidence : float
        Two-sided confidence of every interval, in (0, 1).
    seed : int
        Root of the random streams (``numpy.random.SeedSequence(seed).spawn``) that draw the
        resamples; the same seed gives the same report.
    """

    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        check_positive_int(self.n_bootstrap, "n_bootstrap")
        check_fraction(self.confidence, "confidence", low_open=True, high_open=True)


def spawn(seed, n: int) -> list:
    """``n`` independent random streams derived from ``seed`` (an int or a
    :class:`numpy.random.SeedSequence`) by ``SeedSequence(seed).spawn(n)``: the one way memaudit
    derives several streams from one seed (never ``seed + 1``)."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return root.spawn(n)


def seed_label(seed) -> str:
    """How a seed is named in a ``method`` string: "seed 3", or "seed 3, stream (1,)" for a spawned
    :class:`numpy.random.SeedSequence`."""
    if isinstance(seed, np.random.SeedSequence):
        key = f", stream {tuple(seed.spawn_key)}" if seed.spawn_key else ""
        return f"seed {seed.entropy}{key}"
    return f"seed {seed}"


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2))


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's interval at proportion ``p`` over ``n`` draws (``n`` may be fractional)."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if p <= 0 else max(0.0, centre - half)  # exact bounds at the edges
    hi = 1.0 if p >= 1 else min(1.0, centre + half)
    return float(lo), float(hi)


def wilson_interval(count: int, n: int, confidence: float = StatsConfig.confidence) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``count / n`` (Wilson 1927).

    Unlike the bootstrap it does not collapse to a point at 0 or n successes: with 0 of 1,000
    flagged, the 95% upper bound is 0.38%.
    """
    if n <= 0:
        raise ValueError("a rate needs at least one item")
    return _wilson(count / n, n, _z(confidence))


# Zou & Donner 2008, "Construction of confidence limits about effect measures" (MOVER): the limits
# of sum_i w_i theta_i from independent intervals (l_i, u_i) around estimates v_i.
def mover_interval(values, intervals, weights) -> tuple[float, float]:
    """Interval of a linear combination of independent estimates, recovered from their intervals.

    ``L = sum w v - sqrt(sum (w_i (v_i - l_i*))^2)`` and ``U = sum w v + sqrt(sum (w_i (u_i* -
    v_i))^2)`` where ``(l_i*, u_i*)`` is ``(l_i, u_i)`` for a positive weight and ``(u_i, l_i)`` for
    a negative one. With Wilson intervals and weights (1, -1) this is Newcombe (1998)'s method 10.
    """
    est = lo2 = hi2 = 0.0
    for v, (lo, hi), w in zip(values, intervals, weights):
        est += w * v
        a, b = (lo, hi) if w >= 0 else (hi, lo)
        lo2 += (w * (v - a)) ** 2
        hi2 += (w * (b - v)) ** 2
    return float(est - np.sqrt(lo2)), float(est + np.sqrt(hi2))


def newcombe_interval(count_a: int, n_a: int, count_b: int, n_b: int,
                      confidence: float = StatsConfig.confidence) -> tuple[float, float]:
    """Newcombe (1998)'s hybrid score interval for ``count_a/n_a - count_b/n_b`` ("method 10").

    Built from the two Wilson intervals (``mover_interval``); informative when both rates are 0:
    0/10 - 0/20 gives [-16.11%, 27.75%] where the bootstrap of the difference gives [0, 0].
    """
    return mover_interval((count_a / n_a, count_b / n_b),
                          (wilson_interval(count_a, n_a, confidence),
                           wilson_interval(count_b, n_b, confidence)), (1, -1))


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def bootstrap_rate(
    count: int, n: int, *, n_bootstrap: int = StatsConfig.n_bootstrap,
    confidence: float = StatsConfig.confidence, seed=StatsConfig.seed
) -> tuple[float, float]:
    """Percentile bootstrap interval of the proportion ``count / n`` (seeded: an int or a
    :class:`numpy.random.SeedSequence`)."""
    if n <= 0:
        raise ValueError("a rate needs at least one item")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, count / n, size=n_bootstrap) / n
    return _percentiles(draws, confidence)


def rate(flags, *, n_bootstrap: int = StatsConfig.n_bootstrap,
         confidence: float = StatsConfig.confidence, seed=StatsConfig.seed, label: str = "") -> Rate:
    """The fraction of true ``flags`` with its bootstrap and Wilson intervals.

    Parameters
    ----------
    flags : array-like of bool
        One flag per item.
    n_bootstrap : int, default=StatsConfig.n_bootstrap
        Bootstrap resamples (the paper uses 1,000).
    confidence : float, default=StatsConfig.confidence
    seed : int or numpy.random.SeedSequence, default=StatsConfig.seed
        Drives the bootstrap only (the Wilson interval is closed form).

    Returns
    -------
    Rate
        ``low``/``high`` the bootstrap, ``wilson`` and ``score_interval`` the Wilson interval.
    """
    flags = np.asarray(flags, dtype=bool).ravel()
    n = flags.size
    if n == 0:
        raise ValueError(f"cannot compute a rate{' of ' + label if label else ''} on zero items")
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_fraction(confidence, "confidence")
    count = int(flags.sum())
    lo, hi = bootstrap_rate(count, n, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    wilson = wilson_interval(count, n, confidence)
    return Rate(
        value=count / n,
        count=count,
        n=n,
        low=lo,
        high=hi,
        confidence=confidence,
        method=f"percentile bootstrap, {n_bootstrap} resamples, {seed_label(seed)}",
        wilson=wilson,
        score_interval=wilson,
        score_method="Wilson",
    )


def _score_limits(r: Rate, confidence: float) -> tuple[float, float]:
    if r.score_interval is not None and r.confidence == confidence:
        return r.score_interval
    if r.count is None:
        raise ValueError("a difference of rates needs each rate's count or its score interval")
    return wilson_interval(r.count, r.n, confidence)


def rate_difference(a: Rate, b: Rate, *, n_bootstrap: int = StatsConfig.n_bootstrap,
                    confidence: float = StatsConfig.confidence, seed=StatsConfig.seed) -> Rate:
    """``a - b`` for two independent rates, with a bootstrap and a hybrid score interval.

    Used for the excess of the samples' memorized fraction over the held-out control. The score
    interval is Newcombe (1998)'s method 10 when both rates are plain proportions (their Wilson
    intervals), and the same recovery (``mover_interval``) from whatever score intervals the rates
    carry otherwise (e.g. clustered rates).

    Parameters
    ----------
    a, b : Rate
    n_bootstrap : int, default=StatsConfig.n_bootstrap
    confidence : float, default=StatsConfig.confidence
    seed : int or numpy.random.SeedSequence, default=StatsConfig.seed
        One stream: the resamples of ``a`` are drawn first, then those of ``b``.

    Returns
    -------
    Rate
        ``count`` None, ``n`` that of ``a``, ``wilson`` None, ``score_interval`` the hybrid score
        interval.
    """
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_fraction(confidence, "confidence")
    rng = np.random.default_rng(seed)
    da = rng.binomial(a.n, a.value, size=n_bootstrap) / a.n
    db = rng.binomial(b.n, b.value, size=n_bootstrap) / b.n
    lo, hi = _percentiles(da - db, confidence)
    plain = a.score_method == "Wilson" and b.score_method == "Wilson"
    score = mover_interval((a.value, b.value),
                           (_score_limits(a, confidence), _score_limits(b, confidence)), (1, -1))
    return Rate(
        value=a.value - b.value,
        count=None,
        n=a.n,
        low=lo,
        high=hi,
        confidence=confidence,
        method=f"difference of independent percentile bootstraps, {n_bootstrap} resamples, "
               f"{seed_label(seed)}",
        wilson=None,
        score_interval=score,
        score_method="Newcombe hybrid score" if plain else "hybrid score (MOVER)",
    )


def cluster_rate(flags, clusters, *, n_bootstrap: int = StatsConfig.n_bootstrap,
                 confidence: float = StatsConfig.confidence, seed=StatsConfig.seed) -> Rate:
    """The fraction of true ``flags`` with a cluster bootstrap and a clustered Wilson interval.

    Items of one cluster (overlapping windows of one series) are not independent, so the
    bootstrap resamples whole clusters with replacement and recomputes the pooled fraction. The
    score interval is Wilson's at the Kish effective number of clusters ``(sum s_i)^2 / sum s_i^2``
    (``s_i`` the cluster sizes): the pooled fraction is a weighted mean of the clusters' fractions,
    each in [0, 1], whose variance is at most p(1-p) whatever the dependence inside a cluster, so
    the interval is the worst case (as if every item of a cluster were flagged together), honest
    for any within-cluster correlation and informative at 0 and at n.
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
    from ._progress import Progress

    with Progress(n_bootstrap, "bootstrap (clustered rate)", unit="resample") as bar:
        for b in range(0, n_bootstrap, step):
            picks = rng.integers(0, k, size=(min(step, n_bootstrap - b), k))
            draws[b : b + len(picks)] = hits[picks].sum(1) / sizes[picks].sum(1)
            bar.update(len(picks))
    lo, hi = _percentiles(draws, confidence)
    count = int(flags.sum())
    n_eff = float(sizes.sum()) ** 2 / float((sizes.astype(np.float64) ** 2).sum())
    return Rate(value=count / flags.size, count=count, n=int(flags.size), low=lo, high=hi,
                confidence=confidence,
                method=f"cluster bootstrap over {k} groups, {n_bootstrap} resamples, "
                       f"{seed_label(seed)}",
                wilson=None, score_interval=_wilson(count / flags.size, n_eff, _z(confidence)),
                score_method=f"Wilson on {n_eff:.4g} effective clusters")


# ----------------------------------------------------------------------------- ROC
def _roc_counts(members: np.ndarray, nonmembers: np.ndarray):
    """Thresholds (+inf, then every distinct score, descending) and the members / non-members at
    or above each: the true and false positives of "member when score >= threshold"."""
    m, n = np.sort(members), np.sort(nonmembers)
    thr = np.unique(np.r_[m, n])[::-1]
    tp = m.size - np.searchsorted(m, thr, side="left")
    fp = n.size - np.searchsorted(n, thr, side="left")
    return np.r_[np.inf, thr], np.r_[0, tp], np.r_[0, fp]


def _fp_limit(fpr: float, n_nonmembers: int) -> int:
    """Most false positives allowed at an FPR of at most ``fpr`` (a float product such as
    0.01 * 100 counts as exactly 1)."""
    return int(np.floor(fpr * n_nonmembers + 1e-9))


def _tp_at_fpr(tp: np.ndarray, fp: np.ndarray, limit: int) -> np.ndarray:
    """Largest true-positive count among ROC points with at most ``limit`` false positives; rows of
    ``tp``/``fp`` (non-decreasing along the last axis) are separate curves."""
    last = (fp <= limit).sum(axis=-1) - 1  # >= 0: the first point has fp = 0
    return np.take_along_axis(np.atleast_2d(tp), np.atleast_1d(last)[:, None], -1)[:, 0]


def _auc(tp: np.ndarray, fp: np.ndarray, n_m: int, n_n: int) -> np.ndarray:
    """Trapezoidal area under every ROC point (a tie of members and non-members is a diagonal
    segment: half credit, as in the Mann-Whitney statistic with midranks)."""
    tp, fp = np.atleast_2d(tp), np.atleast_2d(fp)
    area = (np.diff(fp, axis=-1) * (tp[:, 1:] + tp[:, :-1])).sum(-1) / 2
    return area / (n_m * n_n)


def roc_points(member_scores, nonmember_scores):
    """Every point of the ROC of "member when score >= threshold".

    Returns
    -------
    fpr, tpr, thresholds : numpy.ndarray
        One point per threshold: +inf (nothing flagged, (0, 0)) and every distinct score in
        descending order (the lowest flags everything, (1, 1)). Unlike scikit-learn's default
        ``roc_curve`` no point is dropped on a straight segment.
    """
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    thr, tp, fp = _roc_counts(m, n)
    return fp / n.size, tp / m.size, thr


def roc_auc(member_scores, nonmember_scores) -> float:
    """Area under every ROC point: P(member > non-member) + P(tie) / 2 (equals scikit-learn's
    ``roc_auc_score``)."""
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    _, tp, fp = _roc_counts(m, n)
    return float(_auc(tp, fp, m.size, n.size)[0])


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
    """The largest TPR among thresholds whose FPR is at most ``fpr`` (Carlini et al. 2022).

    Every distinct score is a threshold (ties included) plus +inf, so the figure equals a
    brute-force scan over all thresholds. Below ``1 / n_nonmembers`` only FPR 0 is reachable and
    this returns the TPR at FPR 0; see :func:`fpr_resolved` (``membership_metrics`` marks such a
    target as not resolved instead of printing it).
    """
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    _, tp, fp = _roc_counts(m, n)
    return float(_tp_at_fpr(tp, fp, _fp_limit(fpr, n.size))[0] / m.size)


def fpr_resolved(fpr: float, n_nonmembers: int) -> bool:
    """Whether ``n_nonmembers`` can resolve a false-positive rate of ``fpr``.

    The empirical FPRs are 0, 1/n, 2/n, ...: a target below 1/n (``fpr * n < 1``) admits no false
    positive at all, so "the TPR at that FPR" would be the TPR at FPR 0, a different operating
    point whose true FPR the data cannot bound below ~3/n.
    """
    return _fp_limit(fpr, n_nonmembers) >= 1


# Hanley & McNeil 1982, Radiology 143:29, Eq. 2 with Q1 = A/(2-A), Q2 = 2A^2/(1+A): the variance of
# the AUC from m members (positives) and n non-members, here inverted as a score interval.
def _hanley_mcneil_var(a, m: int, n: int):
    return a * (1 - a) / (m * n) * (1 + (m - 1) * (1 - a) / (2 - a) + (n - 1) * a / (1 + a))


def auc_score_interval(auc: float, n_members: int, n_nonmembers: int,
                       confidence: float = StatsConfig.confidence) -> tuple[float, float]:
    """Score-type interval of the AUC: every theta with ``(theta - auc)^2 <= z^2 V(theta)``.

    ``V`` is Hanley and McNeil (1982)'s variance evaluated at the candidate theta rather than at
    the estimate (as Wilson does for a proportion), so the interval does not collapse at AUC 0 or
    1: 4 members above 4 non-members (AUC 1) give [0.58, 1].
    """
    from scipy.optimize import brentq

    z2 = _z(confidence) ** 2

    def f(t):
        return (t - auc) ** 2 - z2 * _hanley_mcneil_var(t, n_members, n_nonmembers)

    below = np.linspace(0.0, auc, 2001)  # f(auc) <= 0; the outermost sign change on each side
    j = int(np.argmax(f(below) <= 0))
    lo = 0.0 if j == 0 else brentq(f, below[j - 1], below[j])
    above = np.linspace(auc, 1.0, 2001)
    j = int(np.flatnonzero(f(above) <= 0)[-1])
    hi = 1.0 if j == above.size - 1 else brentq(f, above[j], above[j + 1])
    return float(lo), float(hi)
