"""The search engine of the subsequence probe: nearest and second-nearest training stretches.

Exact search: windows of one training series are cut as a strided view, copied in blocks and
screened against all query windows by one float32 matrix product per block (raw windows centred by
the block's mean and scaled by a power of two first); every candidate that the float32 error bound
cannot rule out is recomputed in float64, so the matches are the float64 nearest stretches whatever
the data's offset or magnitude. Memory is bounded by ``block_elements`` (query windows x training
windows per block).
"""

from __future__ import annotations

import numpy as np

from .._progress import Progress

__all__ = ["subsequence_search", "dtw_subsequence_search", "window_distance", "check_magnitude",
           "first_too_large", "magnitude_error",
           "znormalize", "MAX_MAGNITUDE"]

_CONST = 1e-12  # a window whose standard deviation is below this (relative to 1 + |mean|) is constant
MAX_MAGNITUDE = 1e150  # squared differences of larger values overflow float64
_U32 = 2.0 ** -24  # unit roundoff of float32
_TINY = 2.0 ** -120  # absolute error allowance for float32 underflow, in scaled units
_U64 = 2.0 ** -53  # unit roundoff of float64


def znormalize(x):
    """z-normalised copies, constant flags and rounding scales of (k, C, L) windows, in float64.

    Computed from a C-contiguous copy, reducing along the last axis, so that two windows holding
    the same values get bit-identical z-values (and distance exactly 0) wherever they come from.
    The rounding scale of a window, sum over its non-constant channels of 2 + |mean| / std, bounds
    the float64 error of its z-values in units of 2^-53 (up to a small factor).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    mu = x.mean(axis=-1)
    sd = x.std(axis=-1)
    const = sd <= _CONST * (1.0 + np.abs(mu))
    sd = np.where(const, 1.0, sd)
    z = (x - mu[..., None]) / sd[..., None]
    z[const] = 0.0
    scale = np.where(const, 0.0, 2.0 + np.abs(mu) / sd).sum(axis=-1)
    return z, const, scale


def _zero_tolerance(n, scale_a, scale_b):
    """Squared z-normalised distance below which two windows have the same shape to float64
    precision (a rescaled copy computes to ~1e-15, not 0): (16 u sqrt(n) (s_a + s_b))^2."""
    return (16.0 * _U64) ** 2 * n * (scale_a + scale_b) ** 2


def window_distance(a, b, normalize: bool = True) -> np.ndarray:
    """Distances between windows ``a[i]`` and ``b[i]`` of shape (n, length, channels), in float64.

    The definition the search computes: z-normalised (each channel centred and divided by its
    standard deviation; a constant channel becomes zeros) or raw Euclidean distance.
    """
    a = np.transpose(np.asarray(a, np.float64), (0, 2, 1))
    b = np.transpose(np.asarray(b, np.float64), (0, 2, 1))
    n = a.shape[1] * a.shape[2]
    if normalize:
        (a, _, sa), (b, _, sb) = znormalize(a), znormalize(b)
    diff = (a - b).reshape(a.shape[0], -1)
    d2 = np.add.reduce(diff * diff, axis=1)
    if normalize:
        d2[d2 <= _zero_tolerance(n, sa, sb)] = 0.0
    return np.sqrt(d2)


def first_too_large(x) -> int | None:
    """Row of the first value of ``x`` whose squared differences could overflow float64
    (|x| > ``MAX_MAGNITUDE``), or None."""
    big = np.abs(x) > MAX_MAGNITUDE
    return int(np.argwhere(big)[0][0]) if big.any() else None


def magnitude_error(who: str, x, where: str = "") -> ValueError:
    """The one-line error for such a value: ``who`` holds it, ``where`` says at which step."""
    return ValueError(f"{who} has a value of magnitude {np.abs(x).max():.3g}{where}; the "
                      f"subsequence search supports |values| up to {MAX_MAGNITUDE:.0e}: rescale "
                      "the series")


def check_magnitude(series, name: str) -> None:
    """Refuse values whose squared differences could overflow float64 (|x| > 1e150)."""
    for i, s in enumerate(series):
        step = first_too_large(s)
        if step is not None:
            raise magnitude_error(f"{name}[{i}]", s, f" at step {step}")


class _Queries:
    """Query windows prepared once: (m, C * L) float64 values (raw, or z-normalised) for the exact
    refinement; in z-normalised mode also their float32 copy, augmented for the screen."""

    def __init__(self, x, normalize, scale=None):  # x: (m, C, L) float64, C-contiguous
        self.m, self.C, self.L = x.shape
        self.n = self.C * self.L
        self.normalize = normalize
        self.x64 = x.reshape(self.m, self.n)
        self.scale = scale  # z-normalised: rounding scales (see znormalize)
        if normalize:
            self.sq = np.add.reduce(self.x64 * self.x64, axis=1)
            self.x32 = np.ones((self.m, self.n + 1), dtype=np.float32)
            self.x32[:, : self.n] = self.x64

    @classmethod
    def from_windows(cls, q, normalize):  # q: (m, L, C)
        x = np.ascontiguousarray(np.transpose(np.asarray(q, np.float64), (0, 2, 1)))
        if normalize:
            x, const, scale = znormalize(x)
            return cls(x, True, scale), const.all(axis=1)
        return cls(x, False), np.zeros(x.shape[0], bool)

    def take(self, idx):
        return _Queries(self.x64[idx].reshape(-1, self.C, self.L), self.normalize,
                        None if self.scale is None else self.scale[idx])


class _Block:
    """The float32 screen of a block of training windows against the queries, with its certificate.

    ``G[i, j] + sq[i]`` approximates the squared distance D[i, j] (in the block's scaled units,
    ``D * s2``) with ``|G[i, j] + sq[i] - D[i, j] * s2| <= eq[i] + ew``: the float32 rounding of the
    inputs and of a dot product of n + 1 terms (each |error| <= (n + 3) u (|q|^2 + 2 |w|^2), u =
    2^-24, with |q| and |w| the norms of the compared vectors), doubled for safety, plus a term for
    underflow. Raw windows are first centred by the block's mean per channel and scaled by a power
    of two to |values| <= 1 (distances do not change under a common shift, and scale exactly), so
    the bound is relative to the spread of the data, not to its offset or magnitude.
    """

    def __init__(self, qs: _Queries, view):  # view: (B, C, L) strided windows
        self.qs = qs
        w = np.ascontiguousarray(view, dtype=np.float64)
        B, n = w.shape[0], qs.n
        kappa = 2.0 * (n + 9) * _U32
        self.wscale = None
        if qs.normalize:
            z, _, self.wscale = znormalize(w)
            self.w64 = z.reshape(B, n)
            wc, qx32, sq, self.s2 = self.w64, qs.x32, qs.sq, 1.0
        else:
            self.w64 = w.reshape(B, n)
            c = w.mean(axis=(0, 2))
            wc = (w - c[None, :, None]).reshape(B, n)
            qc = (qs.x64.reshape(qs.m, qs.C, qs.L) - c[None, :, None]).reshape(qs.m, n)
            top = max(np.abs(wc).max(), np.abs(qc).max())
            # a power of two (exact), capped so that s^2 stays finite for tiny data
            s = 2.0 ** min(500, -int(np.frexp(top)[1])) if top > 0 else 1.0
            wc *= s
            qc *= s
            self.s2 = s * s
            sq = np.add.reduce(qc * qc, axis=1)
            qx32 = np.ones((qs.m, n + 1), dtype=np.float32)
            qx32[:, :n] = qc
        sw = np.add.reduce(wc * wc, axis=1)
        w32 = np.empty((B, n + 1), dtype=np.float32)
        np.multiply(wc, -2.0, out=w32[:, :n], casting="same_kind")
        w32[:, n] = sw
        # G = -2 q.w + |w|^2 in one float32 product: D ~ G + |q|^2
        self.G = qx32 @ w32.T
        self.sq = sq
        self.eq = kappa * sq + (n + 1) * _TINY
        self.ew = kappa * float(sw.max()) + (n + 1) * _TINY
        if qs.normalize:  # room for distances snapped to 0 (_zero_tolerance)
            self.ew += _zero_tolerance(n, qs.scale.max(initial=0.0), self.wscale.max(initial=0.0))

    def mask_zone(self, centre, zone, start):
        """Exclude the columns within ``zone`` of each row's ``centre`` (columns start at ``start``)."""
        lo = np.clip(centre - zone - start, 0, self.G.shape[1])
        hi = np.clip(centre + zone + 1 - start, 0, self.G.shape[1])
        for r in np.flatnonzero((hi > lo) & (centre >= 0)):
            self.G[r, lo[r] : hi[r]] = np.inf

    def best(self, bound, active=None, pair_chunk: int = 8192):
        """Exact (float64) smallest squared distance of each row in the block, and its column
        (the lowest on ties), among the columns that can tie or beat ``bound`` (unscaled; inf for
        none). Rows where no column can: (inf, -1). ``active``: the rows to consider."""
        G = self.G
        rows = np.arange(G.shape[0])
        jmin = G.argmin(axis=1)
        gmin = G[rows, jmin].astype(np.float64)
        # certified: D <= t for the block's best, and a column with G > thr has D > t
        t = np.minimum(np.asarray(bound, np.float64) * self.s2, gmin + self.sq + self.eq + self.ew)
        thr = t - self.sq + self.eq + self.ew
        thr32 = np.nextafter(thr.astype(np.float32), np.float32(np.inf))
        thr32[~np.isfinite(gmin) | ~np.isfinite(thr)] = -np.inf
        if active is not None:
            thr32[~active] = -np.inf
        has = gmin <= thr32  # rows with a candidate: their argmin is one
        cand = G <= thr32[:, None]
        if np.count_nonzero(cand) == np.count_nonzero(has):
            single, multi = has, np.zeros(0, int)  # the usual case: one candidate per row
        else:
            counts = np.count_nonzero(cand, axis=1)
            single, multi = counts == 1, np.flatnonzero(counts > 1)
        best_d = np.full(G.shape[0], np.inf)
        best_j = np.full(G.shape[0], -1)
        r1 = np.flatnonzero(single)
        for p0 in range(0, r1.size, pair_chunk):
            r = r1[p0 : p0 + pair_chunk]
            best_d[r], best_j[r] = self._exact(r, jmin[r]), jmin[r]
        # rows with several candidates (near ties, flat stretches): a few rows at a time
        per = max(1, pair_chunk // G.shape[1])
        for g0 in range(0, multi.size, per):
            rr, cc = np.nonzero(cand[multi[g0 : g0 + per]])
            rr = multi[g0 : g0 + per][rr]
            for p0 in range(0, rr.size, pair_chunk):
                r, c = rr[p0 : p0 + pair_chunk], cc[p0 : p0 + pair_chunk]
                d = self._exact(r, c)
                # per row: the smallest, and the first (lowest column) that attains it
                starts = np.r_[True, r[1:] != r[:-1]]
                seg = np.cumsum(starts) - 1
                dmin = np.minimum.reduceat(d, np.flatnonzero(starts))
                hit = np.flatnonzero(d == dmin[seg])
                _, pick = np.unique(seg[hit], return_index=True)
                ur, ud, uc = r[hit[pick]], d[hit[pick]], c[hit[pick]]
                better = ud < best_d[ur]
                best_d[ur[better]], best_j[ur[better]] = ud[better], uc[better]
        return best_d, best_j

    def _exact(self, r, c):
        """Squared distances of the pairs (query r[k], block window c[k]) in float64, directly
        (z-normalised: 0 below the float64 resolution of the two windows' shapes)."""
        diff = self.qs.x64[r] - self.w64[c]
        d = np.add.reduce(diff * diff, axis=1)
        if self.qs.normalize:
            d[d <= _zero_tolerance(self.qs.n, self.qs.scale[r], self.wscale[c])] = 0.0
        return d


def _block_sizes(m, n, block_elements):
    """Queries per chunk and training windows per block: m x B <= block_elements (about)."""
    b_cap = max(1, block_elements // (2 * n))  # float64 copies of a block: <= 4 bytes x budget
    if m * 4096 <= block_elements:
        return m, max(1, min(block_elements // max(m, 1), b_cap))
    return max(1, block_elements // 4096), max(1, min(4096, b_cap))


def subsequence_search(queries, train, length: int, *, normalize: bool = True,
                       exclusion_zone: int | None = None, block_elements: int = 1 << 24,
                       progress=None) -> dict:
    """Nearest and second-nearest training stretch of every query window (the probe's engine).

    Exact: the distances are the float64 distances of :func:`window_distance`, and the stretches
    are the true nearest ones, ties going to the lowest (series, offset). Candidates are screened
    by a float32 matrix product with a certified error bound and every candidate that the bound
    cannot rule out is recomputed in float64 (see :class:`_Block`), so neither a common offset of
    the data (+1000, 1e6) nor flat stretches (exact ties) change the answer.

    Parameters
    ----------
    queries : ndarray of shape (m, length, channels)
        Query windows.
    train : list of ndarray (length_i, channels)
        Training series; every window (stride 1) of each is a candidate.
    length : int
    normalize : bool, default=True
        z-normalised (True) or raw (False) Euclidean distance. Under z-normalisation a query
        window that is constant in every channel has no shape: it is not searched (d1 = d2 = NaN,
        series and offsets -1, ``evaluable`` False).
    exclusion_zone : int, optional
        The second match must start more than this many steps away from the first when both lie in
        the same series (default ``length - 1``: the two stretches do not overlap).
    block_elements : int, default=2**24
        Query windows x training windows compared at once (memory: a few times 4 bytes each).

    Returns
    -------
    dict with arrays d1, series1, offset1, d2, series2, offset2 (d2 = inf where no second
    stretch exists) and evaluable.
    """
    q = np.asarray(queries, dtype=np.float64)
    m, L, C = q.shape
    zone = L - 1 if exclusion_zone is None else int(exclusion_zone)
    i = first_too_large(q) if q.size else None
    if i is not None:
        raise magnitude_error(f"query window {i}", q[i])
    check_magnitude(train, "train")
    qs_all, constant = _Queries.from_windows(q, normalize)
    keep = np.flatnonzero(~constant)
    out = {"d1": np.full(m, np.nan), "series1": np.full(m, -1), "offset1": np.full(m, -1),
           "d2": np.full(m, np.nan), "series2": np.full(m, -1), "offset2": np.full(m, -1),
           "evaluable": ~constant}
    mq, bsize = _block_sizes(keep.size, L * C, block_elements)
    n_windows = sum(max(0, s.shape[0] - L + 1) for s in train)
    with Progress(n_windows * max(1, -(-keep.size // max(mq, 1))), "subsequence search",
                  progress) as bar:
        for c0 in range(0, keep.size, max(mq, 1)):
            idx = keep[c0 : c0 + mq]
            found = _search(qs_all.take(idx), train, L, zone, bsize, bar)
            for k, v in found.items():
                out[k][idx] = v
    return out


def _search(qs: _Queries, train, L, zone, bsize, bar) -> dict:
    m = qs.m
    inf = np.inf
    best1 = np.full(m, inf)
    s1 = np.full(m, -1)
    o1 = np.full(m, -1)
    other = np.full(m, inf)  # best stretch of any series other than s1
    s_other = np.full(m, -1)
    o_other = np.full(m, -1)
    within = np.full(m, inf)  # best stretch of series s1 outside the zone around o1
    o_within = np.full(m, -1)
    chunked = set()
    for si, series in enumerate(train):
        nw = series.shape[0] - L + 1
        if nw <= 0:
            continue
        view = np.lib.stride_tricks.sliding_window_view(series, L, axis=0)  # (nw, C, L)
        # this series' best matters only where it can tie or beat `other` (else it is neither
        # the first nor the second stretch)
        sb = np.full(m, inf)
        ob = np.full(m, -1)
        w2 = np.full(m, inf)
        ow2 = np.full(m, -1)
        for a in range(0, nw, bsize):
            blk = _Block(qs, view[a : a + bsize])
            d, j = blk.best(np.minimum(sb, other))
            better = d < sb
            sb[better], ob[better] = d[better], j[better] + a
            if nw <= bsize:  # the whole series in one block: its second stretch now
                new = sb < best1
                if new.any():
                    blk.mask_zone(np.where(new, ob, -1), zone, 0)
                    w2, ow2 = blk.best(np.minimum(best1, other), active=new)
            bar.update(min(bsize, nw - a))
        if nw > bsize:
            chunked.add(si)
        new = sb < best1
        keep_old = new & ((best1 < other) | ((best1 == other) & (s1 < s_other)))
        other = np.where(keep_old, best1, other)
        s_other = np.where(keep_old, s1, s_other)
        o_other = np.where(keep_old, o1, o_other)
        second = ~new & (sb < other)
        other = np.where(second, sb, other)
        s_other = np.where(second, si, s_other)
        o_other = np.where(second, ob, o_other)
        best1 = np.where(new, sb, best1)
        s1 = np.where(new, si, s1)
        o1 = np.where(new, ob, o1)
        within = np.where(new, w2, within)
        o_within = np.where(new, ow2, o_within)
    # a series cut into several blocks: its second stretch needs a pass that knows the first match
    for si in sorted(chunked):
        sel = np.flatnonzero(s1 == si)
        if sel.size == 0:
            continue
        sub = qs.take(sel)
        view = np.lib.stride_tricks.sliding_window_view(train[si], L, axis=0)
        w2 = np.full(sel.size, inf)
        ow2 = np.full(sel.size, -1)
        for a in range(0, view.shape[0], bsize):
            blk = _Block(sub, view[a : a + bsize])
            blk.mask_zone(o1[sel], zone, a)
            d, j = blk.best(np.minimum(w2, other[sel]))
            better = d < w2
            w2[better], ow2[better] = d[better], j[better] + a
        within[sel], o_within[sel] = w2, ow2
    use_within = (within < other) | ((within == other) & (s1 < s_other))
    d2 = np.where(use_within, within, other)
    s2 = np.where(use_within, s1, s_other)
    o2 = np.where(use_within, o_within, o_other)
    s2 = np.where(np.isfinite(d2), s2, -1)
    o2 = np.where(np.isfinite(d2), o2, -1)
    return {"d1": np.sqrt(best1), "series1": s1, "offset1": o1, "d2": np.sqrt(d2),
            "series2": s2, "offset2": o2}


def dtw_subsequence_search(queries, train, length: int, *, exclusion_zone: int | None = None) -> dict:
    """The same search with dynamic time warping (tslearn) on raw values, for small sets.

    For each query window and training series, tslearn's subsequence DTW (open begin and end)
    gives the cost of the best warped match *ending* at every step; d1 is the smallest over all
    series and ends, d2 the smallest outside ``exclusion_zone`` steps of the first match's end in
    the same series (or in another series). Offsets are the starts of the warped matches. The cost
    is O(L x T) per query and series in Python-compiled loops: use it on small sets only.
    """
    try:
        from tslearn.metrics import subsequence_cost_matrix, subsequence_path
    except ImportError as exc:
        raise ImportError("DTW needs tslearn: pip install 'memaudit[timeseries]'") from exc
    q = np.asarray(queries, dtype=np.float64)
    m, L, _ = q.shape
    zone = L - 1 if exclusion_zone is None else int(exclusion_zone)
    out = {k: np.full(m, np.inf) if k[0] == "d" else np.full(m, -1)
           for k in ("d1", "series1", "offset1", "d2", "series2", "offset2")}
    for i in range(m):
        cands = []  # (distance, series, end, acc) best per series, and second inside the series
        for si, series in enumerate(train):
            acc = subsequence_cost_matrix(q[i], series)
            prof = np.sqrt(acc[-1])
            e1 = int(np.argmin(prof))
            cands.append((prof[e1], si, e1, acc))
            masked = prof.copy()
            masked[max(0, e1 - zone) : e1 + zone + 1] = np.inf
            if np.isfinite(masked).any():
                e2 = int(np.argmin(masked))
                cands.append((masked[e2], si, e2, acc, "second"))
        cands.sort(key=lambda c: c[0])
        best = cands[0]
        second = next((c for c in cands[1:] if not (c[1] == best[1] and abs(c[2] - best[2]) <= zone)),
                      None)
        for tag, c in (("1", best), ("2", second)):
            if c is None:
                continue
            out[f"d{tag}"][i], out[f"series{tag}"][i] = c[0], c[1]
            out[f"offset{tag}"][i] = subsequence_path(c[3], c[2])[0][1]
    return out
