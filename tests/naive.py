"""Brute-force references (double loops in float64) that every fast path is tested against."""

from __future__ import annotations

import numpy as np


def _flat(x):
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


def naive_distance_matrix(queries, reference, metric: str = "l2") -> np.ndarray:
    """All pairwise distances, one pair at a time."""
    q, r = _flat(queries), _flat(reference)
    out = np.empty((q.shape[0], r.shape[0]))
    for i in range(q.shape[0]):
        for j in range(r.shape[0]):
            if metric == "l2":
                out[i, j] = np.sqrt(np.sum((q[i] - r[j]) ** 2))
            else:
                cos = np.dot(q[i], r[j]) / (np.linalg.norm(q[i]) * np.linalg.norm(r[j]))
                out[i, j] = 1.0 - cos
    return out


def _k_nearest(dmat, k):
    """Per row of ``dmat``: the k smallest (distance, index), ties broken by the lower index."""
    idx = np.empty((dmat.shape[0], k), dtype=np.int64)
    dist = np.empty((dmat.shape[0], k))
    for i, row in enumerate(dmat):
        order = sorted(range(row.size), key=lambda j: (row[j], j))[:k]
        idx[i] = order
        dist[i] = row[order]
    return dist, idx


def naive_knn(queries, reference, k, metric="l2", exclude_self=False):
    """Sorted (distance, index) of the k nearest, ties broken by the lower index."""
    dmat = naive_distance_matrix(queries, reference, metric)
    if exclude_self:
        np.fill_diagonal(dmat, np.inf)
    dist, idx = _k_nearest(dmat, k)
    return dist, idx, dmat


def _pow2_scaled(v):
    """v divided by the power of two 2^e that puts its largest magnitude in [0.5, 1), and e."""
    top = np.max(np.abs(v))
    if top == 0:
        return v, 0
    e = int(np.frexp(top)[1])
    return np.ldexp(v, -e), e


def naive_distance_matrix_scaled(queries, reference, metric: str = "l2") -> np.ndarray:
    """All pairwise distances, one pair at a time, in float64 with power-of-two rescaling.

    l2: sqrt(sum((q - r)^2)) computed on (q - r) / 2^e and multiplied back by 2^e; cosine:
    1 - q.r / (|q| |r|) on q / 2^a and r / 2^b, clipped to [0, 2]. Dividing by a power of two is
    exact, so these equal the plain formulas of ``naive_distance_matrix`` wherever those neither
    overflow nor underflow (1e300 and 1e-300 data included here).
    """
    q, r = _flat(queries), _flat(reference)
    out = np.empty((q.shape[0], r.shape[0]))
    for i in range(q.shape[0]):
        for j in range(r.shape[0]):
            if metric == "l2":
                y, e = _pow2_scaled(q[i] - r[j])
                out[i, j] = np.ldexp(np.sqrt(np.sum(y * y)), e)
            else:
                a, _ = _pow2_scaled(q[i])
                b, _ = _pow2_scaled(r[j])
                cos = np.sum(a * b) / (np.sqrt(np.sum(a * a)) * np.sqrt(np.sum(b * b)))
                out[i, j] = min(max(1.0 - cos, 0.0), 2.0)
    return out


def naive_knn_scaled(queries, reference, k, metric="l2", exclude_self=False, own=None):
    """``naive_knn`` on ``naive_distance_matrix_scaled``: sorted (distance, index) of the k nearest,
    ties broken by the lower index. ``own[i]`` (or i with ``exclude_self``) is left out of row i."""
    dmat = naive_distance_matrix_scaled(queries, reference, metric)
    if exclude_self:
        own = np.arange(dmat.shape[0])
    if own is not None:
        dmat[np.arange(dmat.shape[0]), own] = np.inf
    dist, idx = _k_nearest(dmat, k)
    return dist, idx, dmat


def naive_recall(found, queries, reference, k, metric="l2", own=None):
    """Mean recall@k of neighbour lists ``found`` against the brute force: |found ∩ true| / k.

    ``own[i]``: the reference item that query i is (left out of its true neighbours), or None."""
    _, true_i, _ = naive_knn_scaled(queries, reference, k, metric, own=own)
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, true_i)])
                 / k)


def naive_nn_ratio(samples, train, threshold=1 / 3, carlini_n=50, carlini_alpha=0.5):
    """d1, d2, ratio, flags, nearest index and Carlini score by brute force."""
    dmat = naive_distance_matrix(samples, train)
    d1, d2, nn, carlini = [], [], [], []
    m = min(carlini_n, dmat.shape[1])
    for row in dmat:
        s = np.sort(row)
        d1.append(s[0])
        d2.append(s[1])
        nn.append(int(np.argmin(row)))
        carlini.append(0.0 if s[:m].mean() == 0 else s[0] / s[:m].mean())
    d1, d2 = np.array(d1), np.array(d2)
    ratio = np.array([0.0 if b == 0 else a / b for a, b in zip(d1, d2)])
    carlini = np.array(carlini)
    return {
        "d1": d1,
        "d2": d2,
        "ratio": ratio,
        "memorized": ratio < threshold,
        "nn_index": np.array(nn),
        "carlini_score": carlini,
        "carlini_memorized": carlini < carlini_alpha,
    }


def assert_neighbors_match(distances, indices, queries, reference, k, metric="l2",
                           exclude_self=False, atol=1e-5):
    """Distances equal the brute-force ones; each index really is at its reported distance.

    Tied neighbours may be returned in any valid choice, so indices are checked through their
    distances, not compared position by position.
    """
    want_d, want_i, dmat = naive_knn(queries, reference, k, metric, exclude_self)
    np.testing.assert_allclose(distances, want_d, atol=atol, rtol=1e-5)
    rows = np.arange(dmat.shape[0])[:, None]
    np.testing.assert_allclose(dmat[rows, indices], distances, atol=atol, rtol=1e-5)
    for row in indices:
        assert len(set(row.tolist())) == k, "a neighbour is returned twice"
    if exclude_self:
        assert not (indices == np.arange(indices.shape[0])[:, None]).any()
    return want_d, want_i


def naive_dct2(block, norm="ortho"):
    """2-D DCT-II of a square block by its definition, sum_x sum_y block[x, y] cos(.) cos(.), as
    a product with the explicit cosine basis: orthonormal, or with ``norm=None`` unnormalised as
    ``scipy.fftpack.dct`` along both axes (a factor 2 per axis)."""
    n = block.shape[0]
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # basis[u, x]
    if norm == "ortho":
        c = np.where(k == 0, np.sqrt(1 / n), np.sqrt(2 / n))
    else:
        c = np.full(n, 2.0)
    return c[:, None] * c[None, :] * (basis @ np.asarray(block, np.float64) @ basis.T)


def naive_phash_bits(small32):
    """64 pHash bits of an already-resized 32x32 8-bit image, as imagehash sets them: the
    unnormalised DCT-II, its top-left 8x8 block, a bit where a coefficient is above their median,
    row by row."""
    coeffs = naive_dct2(np.asarray(small32, np.float64), norm=None)[:8, :8].ravel()
    med = np.median(coeffs)
    return [int(c > med) for c in coeffs]


def naive_dhash_bits(small9x8):
    """64 dHash bits of an already-resized 8-row, 9-column image, as imagehash sets them: a bit
    where the right neighbour is brighter, row by row."""
    return [int(small9x8[r, c + 1] > small9x8[r, c]) for r in range(8) for c in range(8)]


def naive_components(n, edges):
    """Connected components of an undirected graph on 0..n-1 by depth-first search: sizes, largest
    first."""
    adj = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen, sizes = [False] * n, []
    for s in range(n):
        if seen[s]:
            continue
        seen[s], stack, size = True, [s], 0
        while stack:
            v = stack.pop()
            size += 1
            for w in adj[v]:
                if not seen[w]:
                    seen[w] = True
                    stack.append(w)
        sizes.append(size)
    return sorted(sizes, reverse=True)


def naive_hamming_pairs(bits, max_distance, other=None):
    """All (i, j) with Hamming distance <= max_distance, by double loop over bit lists."""
    pairs = []
    ref = bits if other is None else other
    for i in range(len(bits)):
        for j in range(len(ref)):
            if other is None and j <= i:
                continue
            dist = sum(a != b for a, b in zip(bits[i], ref[j]))
            if dist <= max_distance:
                pairs.append((i, j, dist))
    return pairs


def naive_tpr_at_fpr(members, nonmembers, fpr):
    """Max TPR over every threshold (each distinct score, and +inf) with FPR <= fpr; >= is member.

    A plain double loop: thresholds outside, items inside; FPR compared as a count of false
    positives against fpr * n (so that 0.01 of 100 non-members allows exactly one)."""
    best = 0.0
    for thr in sorted(set(members) | set(nonmembers)) + [float("inf")]:
        fp = tp = 0
        for x in nonmembers:
            fp += x >= thr
        for x in members:
            tp += x >= thr
        if fp <= fpr * len(nonmembers) + 1e-9:
            best = max(best, tp / len(members))
    return best


def naive_tiled_l2(a, b, grid=4):
    """Carlini et al. 2023's tiled distance by loops: images (H, W[, C]) in [0, 1]; tiles cut at
    the boundaries of ``np.array_split`` so that sizes that do not divide by ``grid`` still work."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    h, w = a.shape[:2]
    worst = 0.0
    for r in np.array_split(np.arange(h), grid):
        for c in np.array_split(np.arange(w), grid):
            ta = a[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            tb = b[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            worst = max(worst, float(np.sqrt(np.mean((ta - tb) ** 2))))
    return worst


def _naive_znorm(w):
    out = np.zeros_like(w)
    for c in range(w.shape[1]):
        col = w[:, c]
        sd = col.std()
        if sd > 1e-12 * (1 + abs(col.mean())):  # memaudit's constant rule
            out[:, c] = (col - col.mean()) / sd
    return out


def naive_subsequence(queries, train, length, normalize=True, zone=None):
    """Best and second-best training stretch of each query window by explicit loops.

    queries: (m, L, C); train: list of (T, C). The second stretch must start more than ``zone``
    steps from the first in the same series. Returns d1, (series, offset), d2, (series, offset).
    """
    zone = length - 1 if zone is None else zone
    out = []
    for q in queries:
        cands = []
        for s, series in enumerate(train):
            for o in range(series.shape[0] - length + 1):
                w = series[o : o + length]
                a, b = (_naive_znorm(q), _naive_znorm(w)) if normalize else (q, w)
                cands.append((float(np.sqrt(np.sum((a - b) ** 2))), s, o))
        cands.sort()
        d1, s1, o1 = cands[0]
        rest = [c for c in cands if not (c[1] == s1 and abs(c[2] - o1) <= zone)]
        d2, s2, o2 = rest[0] if rest else (np.inf, -1, -1)
        out.append((d1, s1, o1, d2, s2, o2))
    return out


def naive_auc(members, nonmembers):
    """P(member > non-member) + P(tie) / 2 over every pair (the Mann-Whitney statistic)."""
    total = 0.0
    for a in members:
        for b in nonmembers:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(members) * len(nonmembers))


def naive_distance_profile(query, series, normalize=True):
    """Distance of one query window (L, C) to every window of one series (T, C), one at a time."""
    L = query.shape[0]
    a = _naive_znorm(query) if normalize else query
    out = np.empty(series.shape[0] - L + 1)
    for o in range(out.size):
        w = series[o : o + L]
        b = _naive_znorm(w) if normalize else w
        out[o] = np.sqrt(np.sum((a - b) ** 2))
    return out


def best_two_from_profiles(profiles, zone):
    """(d1, series, offset, d2, series, offset) from per-series distance profiles: the smallest,
    the lowest (series, offset) on ties, and the smallest outside ``zone`` steps of it."""
    cands = sorted((float(d), s, o) for s, prof in enumerate(profiles) for o, d in enumerate(prof))
    d1, s1, o1 = cands[0]
    rest = [c for c in cands if not (c[1] == s1 and abs(c[2] - o1) <= zone)]
    d2, s2, o2 = rest[0] if rest else (np.inf, -1, -1)
    return d1, s1, o1, d2, s2, o2


def naive_cosine_pairs(x, thr, other=None):
    """Every pair with cosine >= thr by a double loop in float64 (within ``x``: i < j; against
    ``other``: every (i, j)), with its cosine: dot / (|a| |b|), the sums in numpy's pairwise order
    (``math.fsum`` would differ in the last bit on a few pairs)."""
    x = np.asarray(x, dtype=np.float64)
    y = x if other is None else np.asarray(other, dtype=np.float64)
    out = []
    for i in range(len(x)):
        for j in range(i + 1 if other is None else 0, len(y)):
            a, b = x[i], y[j]
            c = np.sum(a * b) / (np.sqrt(np.sum(a * a)) * np.sqrt(np.sum(b * b)))
            if c >= thr:
                out.append((i, j, c))
    return out
