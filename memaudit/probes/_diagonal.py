"""Numba kernels of the stride-1 subsequence engine: the diagonal (sliding dot product) recurrence.

For a query series Q and a training series T (both centred, and scaled by a power of two, per
channel arrays of shape (C, N)), the dot product of query window i and training window j obeys
``QT[i, j] = QT[i-1, j-1] - Q[i-1] T[j-1] + Q[i+L-1] T[j+L-1]`` (SCAMP; stumpy's AB-join), so a
diagonal ``j - i = k`` costs O(1) per pair after one direct product of L terms; the product is
recomputed directly every ``K`` steps, which bounds the rounding the recurrence accumulates.

:func:`scan` turns every pair's product into a *lower bound* on its float64 distance (the bound is
supplied by the caller, see ``memaudit.probes._subsequence_search``) and keeps, per query, every
pair that could be the first or the second match: those whose lower bound does not exceed a
certified upper bound ``U2`` on the query's second distance. ``U2`` shrinks during the scan: for
two pairs that are *far* (different series, or starts more than ``2 zone`` apart) at least one lies
outside the exclusion zone of whatever the first match is, so the larger of their upper bounds
bounds the second distance. The kept pairs are recomputed exactly by the caller.

Everything here is sequential (deterministic); the kernels are compiled once and cached.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["window_stats", "scan", "scan1", "lex_reduce", "first_two"]


@njit(cache=True)
def window_stats(X, L):  # pragma: no cover - compiled
    """Per channel and window of X (C, N): mean, standard deviation (two-pass) and sum of squares,
    each computed directly from the L values (O(N L)); and the largest |value| per channel."""
    C, N = X.shape
    nw = N - L + 1
    mu = np.empty((C, nw))
    sd = np.empty((C, nw))
    sq = np.empty((C, nw))
    big = np.zeros(C)
    for c in range(C):
        for t in range(N):
            a = abs(X[c, t])
            if a > big[c]:
                big[c] = a
        for w in range(nw):
            s = 0.0
            s2 = 0.0
            for t in range(w, w + L):
                v = X[c, t]
                s += v
                s2 += v * v
            m = s / L
            d = 0.0
            for t in range(w, w + L):
                e = X[c, t] - m
                d += e * e
            mu[c, w] = m
            sd[c, w] = np.sqrt(d / L)
            sq[c, w] = s2
    return mu, sd, sq, big


@njit(cache=True)
def _update(i, j, ub, U2, bUB, bS, bJ, sid, span):  # pragma: no cover - compiled
    """A candidate pair (query i, start j of series sid) with upper bound ``ub``: the query's best
    (``bUB, bS, bJ``) and, when the pair is far from that best, ``U2``. No update without a finite
    bound."""
    if not (ub < np.inf):
        return
    if bS[i] != sid or abs(bJ[i] - j) > span:  # far from the best so far
        pair = max(ub, bUB[i])
        if pair < U2[i]:
            U2[i] = pair
    if ub < bUB[i]:
        bUB[i] = ub
        bS[i] = sid
        bJ[i] = j


@njit(cache=True)
def scan(Q, T, L, K, G, P, A, ea, H, R, B, eb, eN, U2, bUB, bS, bJ, sid, zone, k0, k1,
         out_i, out_j, out_lb):  # pragma: no cover - compiled
    """Scan the diagonals k0 <= j - i < k1 of one query series against one training series.

    Per pair: ``lb = A[i] + B[j] - sum_c G[c,i] H[c,j] (QT*_c - P[c,i] R[c,j])`` with
    ``QT*_c = QT_c + eN[c]`` (a lower bound on the pair's float64 squared distance) and
    ``ub = lb + 2 (ea[i] + eb[j] + sum_c G H eN[c])`` (an upper bound). A pair with
    ``lb <= U2[i]`` is written to the outputs and updates the query's best upper bound
    (``bUB, bS, bJ``: value, series, start) and ``U2`` (far pairs, see the module docstring).

    Stops before a diagonal that might not fit in the outputs; returns (next k, pairs written).
    """
    C = Q.shape[0]
    mq = Q.shape[1] - L + 1
    mt = T.shape[1] - L + 1
    cap = out_i.shape[0]
    qt = np.empty(C)
    n = 0
    span = 2 * zone
    for k in range(k0, k1):
        i0 = max(0, -k)
        i1 = min(mq, mt - k)
        if n + (i1 - i0) > cap:
            return k, n
        step = 0
        for i in range(i0, i1):
            j = i + k
            if step == 0:
                for c in range(C):
                    s = 0.0
                    for t in range(L):
                        s += Q[c, i + t] * T[c, j + t]
                    qt[c] = s + eN[c]
                step = K
            else:
                for c in range(C):
                    qt[c] = qt[c] - Q[c, i - 1] * T[c, j - 1] + Q[c, i + L - 1] * T[c, j + L - 1]
            step -= 1
            s = 0.0
            for c in range(C):
                s += G[c, i] * H[c, j] * (qt[c] - P[c, i] * R[c, j])
            lb = A[i] + B[j] - s
            if not (lb > U2[i]):  # NaN-safe: a pair whose bound is undefined is kept
                out_i[n] = i
                out_j[n] = j
                out_lb[n] = lb
                n += 1
                e = ea[i] + eb[j]
                for c in range(C):
                    e += G[c, i] * H[c, j] * eN[c]
                _update(i, j, lb + 2.0 * e, U2, bUB, bS, bJ, sid, span)
    return k1, n


_W = 8  # diagonals processed side by side in :func:`scan1` (contiguous loads, vector lanes)


@njit(cache=True)
def _scan1_pair(i, j, lb, A, ea, eb, G, H, eN, U2, bUB, bS, bJ, sid, span, out_i, out_j, out_lb,
                n):  # pragma: no cover - compiled
    """Write a candidate pair and update the query's bounds (the slow path of :func:`scan1`)."""
    out_i[n] = i
    out_j[n] = j
    out_lb[n] = lb
    _update(i, j, lb + 2.0 * (ea[i] + eb[j] + G[i] * H[j] * eN), U2, bUB, bS, bJ, sid, span)
    return n + 1


@njit(cache=True)
def scan1(Q, T, L, K, G, P, A, ea, H, R, B, eb, eN, U2, bUB, bS, bJ, sid, zone, k0, k1,
                out_i, out_j, out_lb):  # pragma: no cover - compiled
    """:func:`scan` for one channel (1-d arrays, ``eN`` a number), with ``_W`` adjacent diagonals
    k..k+W-1 advanced together row by row, so that the training-side loads are contiguous and the
    recurrences independent: the same pairs, bounds and updates; each diagonal's product is
    recomputed directly where it starts and every ``K`` rows. Tiles start at k0, k0 + W, ..."""
    W = _W
    mq = Q.shape[0] - L + 1
    mt = T.shape[0] - L + 1
    cap = out_i.shape[0]
    n = 0
    span = 2 * zone
    qt = np.zeros(W)
    lb = np.zeros(W)
    for k in range(k0, k1, W):
        i0 = max(0, -(k + W - 1))
        i1 = min(mq, mt - k)
        if n + W * (i1 - i0) > cap:
            return k, n
        step = 0
        for i in range(i0, i1):
            jb = i + k  # j of lane 0
            full = jb >= 1 and jb + W <= mt and k + W <= k1  # no lane starts on this row
            if step == 0:  # every K rows: every lane's product directly
                for d in range(W):
                    j = jb + d
                    if j < 0 or j >= mt or k + d >= k1:
                        lb[d] = np.inf
                        continue
                    s = 0.0
                    for t in range(L):
                        s += Q[i + t] * T[j + t]
                    qt[d] = s + eN
                    lb[d] = A[i] + B[j] - G[i] * H[j] * (qt[d] - P[i] * R[j])
                step = K
            elif full:
                qa = Q[i - 1]
                qb = Q[i + L - 1]
                ai = A[i]
                gi = G[i]
                pi = P[i]
                for d in range(W):
                    j = jb + d
                    qt[d] = qt[d] - qa * T[j - 1] + qb * T[j + L - 1]
                    lb[d] = ai + B[j] - gi * H[j] * (qt[d] - pi * R[j])
            else:  # the tile's edges: lane by lane, directly where a lane starts
                for d in range(W):
                    j = jb + d
                    if j < 0 or j >= mt or k + d >= k1:
                        lb[d] = np.inf
                        continue
                    if i == 0 or j == 0:
                        s = 0.0
                        for t in range(L):
                            s += Q[i + t] * T[j + t]
                        qt[d] = s + eN
                    else:
                        qt[d] = qt[d] - Q[i - 1] * T[j - 1] + Q[i + L - 1] * T[j + L - 1]
                    lb[d] = A[i] + B[j] - G[i] * H[j] * (qt[d] - P[i] * R[j])
            step -= 1
            u = U2[i]
            hit = False
            for d in range(W):
                if not (lb[d] > u):
                    hit = True
            if hit:
                for d in range(W):
                    # NaN-safe; +inf marks a lane outside the matrix (a real bound is never +inf
                    # where U2 is finite or +inf: A and B are finite or -inf for searched rows)
                    if not (lb[d] > U2[i]) and lb[d] != np.inf:
                        n = _scan1_pair(i, jb + d, lb[d], A, ea, eb, G, H, eN, U2, bUB, bS, bJ,
                                        sid, span, out_i, out_j, out_lb, n)
    return k1, n


@njit(cache=True)
def lex_reduce(qi, d, s, j, zone):  # pragma: no cover - compiled
    """Keep-mask of exact candidates sorted by (query, distance, series, start): per query, the
    shortest prefix that still holds, for every possible exclusion zone (``zone`` steps either side
    of a start in one series), the smallest (distance, series, start) outside it. Once the prefix
    cannot be covered by one zone (two series, or starts more than ``2 zone`` apart), no later
    candidate is the answer for any zone."""
    n = qi.shape[0]
    keep = np.zeros(n, np.bool_)
    a = 0
    while a < n:
        b = a
        while b < n and qi[b] == qi[a]:
            b += 1
        lo = j[a]
        hi = j[a]
        for t in range(a, b):
            keep[t] = True
            if s[t] != s[a]:
                break
            lo = min(lo, j[t])
            hi = max(hi, j[t])
            if hi - lo > 2 * zone:
                break
        a = b
    return keep


@njit(cache=True)
def first_two(qi, d, s, j, zone, m):  # pragma: no cover - compiled
    """From candidates sorted as in :func:`lex_reduce`: per query (0..m-1) the first match and the
    smallest (distance, series, start) outside its exclusion zone (inf, -1, -1 if none)."""
    d1 = np.full(m, np.inf)
    s1 = np.full(m, -1)
    o1 = np.full(m, -1)
    d2 = np.full(m, np.inf)
    s2 = np.full(m, -1)
    o2 = np.full(m, -1)
    n = qi.shape[0]
    a = 0
    while a < n:
        q = qi[a]
        b = a
        while b < n and qi[b] == q:
            b += 1
        d1[q], s1[q], o1[q] = d[a], s[a], j[a]
        for t in range(a + 1, b):
            if s[t] != s[a] or abs(j[t] - j[a]) > zone:
                d2[q], s2[q], o2[q] = d[t], s[t], j[t]
                break
        a = b
    return d1, s1, o1, d2, s2, o2
