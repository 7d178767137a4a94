"""The search engine of the subsequence probe: nearest and second-nearest training stretches.

Exact search: windows of one training series are cut as a strided view, copied in blocks and
screened against all query windows by one float32 matrix product per block (raw windows centred by
the block's mean and scaled by a power of two first); every candidate that the float32 error bound
cannot rule out is recomputed in float64, so the matches are the float64 nearest stretches whatever
the data's offset or magnitude. Memory is bounded by ``block_elements`` (query windows x training
windows per block).

Query windows that are one series read at stride 1 go to the diagonal engine instead
(:func:`_diagonal_search`, kernels in :mod:`._diagonal`): the sliding dot product recurrence, O(1)
per pair, with certified bounds on every pair's float64 distance and the same float64 refinement,
so both engines give the same answers.
"""

from __future__ import annotations

import numpy as np

from .._progress import Progress

__all__ = ["subsequence_search", "merge_subsequence_results", "dtw_subsequence_search", "window_distance", "check_magnitude",
           "first_too_large", "magnitude_error", "stride1_runs", "MIN_RUN",
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
        return _exact_sq(self.qs, r, self.w64[c], None if self.wscale is None else self.wscale[c])


def _exact_sq(qs, r, w, wscale):
    """Float64 squared distances of query rows ``r`` of ``qs`` to the windows ``w`` (k, C * L),
    prepared as the queries are (z-normalised with their ``wscale``, or raw): the one definition
    of the refined distance, shared by both engines."""
    diff = qs.x64[r] - w
    d = np.add.reduce(diff * diff, axis=1)
    if qs.normalize:
        d[d <= _zero_tolerance(qs.n, qs.scale[r], wscale)] = 0.0
    return d


def _block_sizes(m, n, block_elements):
    """Queries per chunk and training windows per block: m x B <= block_elements (about)."""
    b_cap = max(1, block_elements // (2 * n))  # float64 copies of a block: <= 4 bytes x budget
    if m * 4096 <= block_elements:
        return m, max(1, min(block_elements // max(m, 1), b_cap))
    return max(1, block_elements // 4096), max(1, min(4096, b_cap))


def subsequence_search(queries, train, length: int, *, normalize: bool = True,
                       exclusion_zone: int | None = None, block_elements: int = 1 << 24,
                       progress=None, engine: str = "auto", squared: bool = False) -> dict:
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
        Query windows x training windows compared at once (memory: a few times 4 bytes each); the
        diagonal engine holds at most ``block_elements // 8`` candidate pairs before refining them.
    engine : {"auto", "gemm", "diagonal"}, default="auto"
        "gemm": float32 matrix products per block (:class:`_Block`); "diagonal": the O(1)-per-pair
        sliding dot product recurrence (:mod:`._diagonal`) over runs of query windows that are one
        series at stride 1 (window i + 1 is window i shifted by one step), the matrix products for
        the other windows; "auto": the diagonal engine for runs of at least ``MIN_RUN`` windows.
        The answers are the same, exactly.
    squared : bool, default=False
        Return squared distances (the values the search compares): what
        :func:`merge_subsequence_results` needs to merge searches over parts of the training set
        exactly (two squared distances can round to one square root).

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
    if engine not in ("auto", "gemm", "diagonal"):
        raise ValueError(f"engine must be 'auto', 'gemm' or 'diagonal', got {engine!r}")
    qs_all, constant = _Queries.from_windows(q, normalize)
    out = {"d1": np.full(m, np.nan), "series1": np.full(m, -1), "offset1": np.full(m, -1),
           "d2": np.full(m, np.nan), "series2": np.full(m, -1), "offset2": np.full(m, -1),
           "evaluable": ~constant}
    runs = []
    if engine != "gemm" and any(t.shape[0] >= L for t in train):
        low = 1 if engine == "diagonal" else MIN_RUN
        runs = [(a, b) for a, b in stride1_runs(q) if b - a >= low and not constant[a:b].all()]
    on_diag = np.zeros(m, bool)
    for a, b in runs:
        on_diag[a:b] = True
    keep = np.flatnonzero(~constant & ~on_diag)
    mq, bsize = _block_sizes(keep.size, L * C, block_elements)
    n_windows = sum(max(0, s.shape[0] - L + 1) for s in train)
    with Progress(n_windows * (keep.size + int(on_diag.sum())), "subsequence search",
                  progress) as bar:
        if runs:
            idx, found = _diagonal_search(q, runs, normalize, train, L, zone,
                                          max(1, block_elements // 8), bar)
            for k, v in found.items():
                out[k][idx] = v
        for c0 in range(0, keep.size, max(mq, 1)):
            idx = keep[c0 : c0 + mq]
            found = _search(qs_all.take(idx), train, L, zone, bsize, bar)
            for k, v in found.items():
                out[k][idx] = v
    if not squared:
        out["d1"], out["d2"] = np.sqrt(out["d1"]), np.sqrt(out["d2"])
    return out


def merge_subsequence_results(parts, squared: bool = False) -> dict:
    """One search's answer from searches over disjoint groups of *whole* training series.

    ``parts``: results of :func:`subsequence_search` with ``squared=True`` for the same queries,
    each over some of the training series, with ``series1`` / ``series2`` already the series'
    positions in the whole set. Bit-identical to one search over all the series: the first
    match is the least (squared distance, series) over the parts (each part's own tie already
    went to its lowest offset); the second is the least of the winning part's second (its best
    stretch outside the zone of the first, or in another of its series) and every other part's
    first (the best stretch of a series other than the first match's, since a series lies in one
    part). Returns squared distances unless ``squared`` is False.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge_subsequence_results needs at least one part")
    d1 = np.stack([p["d1"] for p in parts])  # (P, m); NaN where a query is not evaluable
    s1 = np.stack([p["series1"] for p in parts])
    o1 = np.stack([p["offset1"] for p in parts])
    m = d1.shape[1]
    key = np.where(np.isnan(d1), np.inf, d1)
    # least (distance, series) per query; a part without a window (-1) sorts after any series
    s_key = np.where(s1 < 0, np.iinfo(np.int64).max, s1)
    win = np.lexsort((s_key, key), axis=0)[0]
    cols = np.arange(m)
    out = {"d1": d1[win, cols], "series1": s1[win, cols], "offset1": o1[win, cols],
           "evaluable": parts[0]["evaluable"]}
    # candidates for the second: the winner's second, the other parts' firsts
    is_win = np.arange(len(parts))[:, None] == win
    cd = np.where(is_win, np.stack([p["d2"] for p in parts]), d1)
    cs = np.where(is_win, np.stack([p["series2"] for p in parts]), s1)
    co = np.where(is_win, np.stack([p["offset2"] for p in parts]), o1)
    cs_key = np.where(cs < 0, np.iinfo(np.int64).max, cs)
    sec = np.lexsort((cs_key, np.where(np.isnan(cd), np.inf, cd)), axis=0)[0]
    d2 = cd[sec, cols]
    found = np.isfinite(d2)
    out["d2"] = np.where(np.isnan(out["d1"]), np.nan, d2)
    out["series2"] = np.where(found, cs[sec, cols], -1)
    out["offset2"] = np.where(found, co[sec, cols], -1)
    if not squared:
        out["d1"], out["d2"] = np.sqrt(out["d1"]), np.sqrt(out["d2"])
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
            bar.update(min(bsize, nw - a) * m)
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
    return {"d1": best1, "series1": s1, "offset1": o1, "d2": d2,  # squared distances
            "series2": s2, "offset2": o2}


# ---- stride 1: the diagonal (sliding dot product) engine -----------------------------------------

_RECOMPUTE = 32  # the dot product is recomputed directly every _RECOMPUTE * L steps of a diagonal
MIN_RUN = 48  # stride-1 runs of at least this many query windows go to the diagonal engine (measured)


def stride1_runs(q) -> list:
    """Ranges [a, b) of consecutive query windows (m, L, C) that are one series read at stride 1
    (window i + 1 is window i shifted by one step, bit for bit)."""
    m = q.shape[0]
    if m == 0:
        return []
    same = (q[1:, :-1] == q[:-1, 1:]).reshape(m - 1, (q.shape[1] - 1) * q.shape[2]).all(axis=1)
    cuts = np.flatnonzero(~same) + 1
    edges = np.r_[0, cuts, m]
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _pow2_unit(top: float) -> float:
    """A power of two s with top * s <= 1 (exact scaling; capped for tiny data)."""
    return 2.0 ** min(500, -int(np.frexp(top)[1])) if top > 0 else 1.0


def _exact_side(n, scale):
    """Bound on |computed - real| of a float64 z-normalised squared distance, separable in the two
    windows: f(s_a + s_b) <= f(2 s_a) + f(2 s_b) for f(x) = 32 n u x + 4 n (n + 2) u + 2 (16 u)^2
    n x^2 (z-values off by at most 8 u s per element, a sum of n squares, and the snap to 0 of
    :func:`_zero_tolerance`)."""
    x = 2.0 * scale
    return 32.0 * n * _U64 * x + 4.0 * n * (n + 2) * _U64 + 2.0 * (16.0 * _U64) ** 2 * n * x * x


class _Series:
    """One series (N, C) prepared for the kernel: centred, scaled by a power of two, as (C, N),
    with per-window statistics (see :func:`._diagonal.window_stats`)."""

    def __init__(self, series, L, centre=None, scale=None):
        from ._diagonal import window_stats

        x = np.ascontiguousarray(np.asarray(series, np.float64).T)
        self.centre = x.mean(axis=1) if centre is None else centre
        xc = x - self.centre[:, None]
        self.scale = _pow2_unit(float(np.abs(xc).max(initial=0.0))) if scale is None else scale
        self.X = xc * self.scale
        self.mu, self.sd, self.sq, self.big = window_stats(self.X, L)
        self.nw = self.X.shape[1] - L + 1


def _znorm_terms(ser: _Series, series, L, const=None, wscale=None):
    """Kernel terms of the z-normalised distance for one series' windows: 2 / sd or 1 / sd per
    channel (0 for a constant channel), the constant part L (1 - const) per channel, the
    constant flags and rounding scales exactly as :func:`znormalize` gives them."""
    n = ser.X.shape[0] * L
    sd_u = ser.sd / ser.scale
    mu_raw = ser.mu / ser.scale + ser.centre[:, None]
    thr = _CONST * (1.0 + np.abs(mu_raw))
    if const is None:
        const = (sd_u <= thr).T.copy()  # (nw, C)
        wscale = np.where(const.T, 0.0, 2.0 + np.abs(mu_raw) / np.maximum(sd_u, 1e-300)).sum(axis=0)
        wscale *= 1.01
        # near the constant threshold, the flags and scales of znormalize itself
        err = 16.0 * (L + 2) * _U64 * (np.abs(mu_raw) + ser.big[:, None] / ser.scale)
        near = np.flatnonzero((sd_u <= 4.0 * thr + err).any(axis=0))
        if near.size:
            view = np.lib.stride_tricks.sliding_window_view(series, L, axis=0)
            for c0 in range(0, near.size, 4096):
                idx = near[c0 : c0 + 4096]
                _, cst, sc = znormalize(view[idx])
                const[idx], wscale[idx] = cst, sc
    const_t = const.T  # (C, nw)
    # the kernel's sd is accurate to (L + 4) u where sd >= 1e3 (L + 1) u max|X|; a non-constant
    # channel below that has no bound: its windows are always refined exactly
    bad_c = ~const_t & (ser.sd < 1e3 * (L + 1) * _U64 * ser.big[:, None])
    inv = np.where(const_t | bad_c, 0.0, 1.0 / np.where(bad_c | const_t, 1.0, ser.sd))
    part = (L * (~const).astype(np.float64)).sum(axis=1)
    ex = _exact_side(n, wscale)
    bad = bad_c.any(axis=0)
    part[bad], ex[bad] = -np.inf, np.inf
    return inv, part, const, wscale, ex


def _diagonal_search(q, runs, normalize, train, L, zone, cap, bar) -> tuple:
    """The search for the query windows in stride-1 ``runs`` of ``q`` (m, L, C) by the diagonal
    recurrence (:mod:`._diagonal`): same definition, outputs and tie rule as :func:`_search`.

    Every pair gets a certified lower bound on its float64 squared distance; the pairs that could
    be a first or second match (lower bound <= a certified upper bound on the second distance) are
    recomputed exactly (:func:`_exact_sq`), so the answers are the float64 ones. Returns the
    query indices searched and a dict of their results."""
    from ._diagonal import _W, first_two, lex_reduce, scan, scan1

    C = q.shape[2]
    n = C * L
    K = max(1, _RECOMPUTE * L)
    idx = np.concatenate([np.arange(a, b) for a, b in runs])
    qs, qconst = _Queries.from_windows(q[idx], normalize)
    m = idx.size
    inf = np.inf
    U2 = np.full(m, inf)
    bUB = np.full(m, inf)
    bS = np.full(m, -1, dtype=np.int64)
    bJ = np.full(m, -1, dtype=np.int64)
    starts = np.cumsum([0] + [b - a for a, b in runs])
    qseries = [np.concatenate([q[a], q[a + 1 : b, -1]]) for a, b in runs]
    s_raw = 1.0
    if not normalize:
        top = max(float(np.abs(q).max(initial=0.0)),
                  max((float(np.abs(t).max(initial=0.0)) for t in train), default=0.0))
        s_raw = _pow2_unit(2.0 * top)
    # z-normalised queries: terms per run, once (exact flags from znormalize)
    qterms = []
    if normalize:
        x = np.ascontiguousarray(np.transpose(q[idx], (0, 2, 1)))
        _, qc_all, qsc_all = znormalize(x)
        E0 = C * (8.0 * L * (L + 6) + 32.0 * L) * _U64
        for r, (a, b) in enumerate(runs):
            ser = _Series(qseries[r], L)
            sl = slice(starts[r], starts[r + 1])
            inv, part, _, _, ex = _znorm_terms(ser, qseries[r], L, qc_all[sl], qsc_all[sl])
            A = part - ex - E0
            A[qconst[sl]] = inf  # constant in every channel: not searched
            qterms.append((ser, 2.0 * inv, L * ser.mu, A, ex + E0))
    U2[qconst] = -inf
    # seeds: two far windows give a valid upper bound on every second distance
    with_w = [s for s, t in enumerate(train) if t.shape[0] >= L]
    far = None
    if len(with_w) >= 2:
        far = [(with_w[0], 0), (with_w[1], 0)]
    elif with_w and train[with_w[0]].shape[0] - L > 2 * zone:
        far = [(with_w[0], 0), (with_w[0], train[with_w[0]].shape[0] - L)]
    if far is not None:
        ds = []
        for s, o in far:
            w = np.ascontiguousarray(np.asarray(train[s][o : o + L], np.float64).T)[None]
            ws = None
            if normalize:
                w, _, ws = znormalize(w)
                ws = np.repeat(ws, m)
            ds.append(_exact_sq(qs, np.arange(m), np.repeat(w.reshape(1, n), m, axis=0), ws))
        act = ~qconst
        U2[act] = np.maximum(ds[0], ds[1])[act] * (s_raw * s_raw)
        pick = ds[1] < ds[0]
        bUB[act] = np.minimum(ds[0], ds[1])[act] * (s_raw * s_raw)
        bS[act] = np.where(pick, far[1][0], far[0][0])[act]
        bJ[act] = np.where(pick, far[1][1], far[0][1])[act]
    cap = max(int(cap), _W * max(b - a for a, b in runs))
    out_i = np.empty(cap, dtype=np.int64)
    out_j = np.empty(cap, dtype=np.int64)
    out_lb = np.empty(cap)
    s2 = s_raw * s_raw
    views = [np.lib.stride_tricks.sliding_window_view(np.asarray(t, np.float64), L, axis=0)
             for t in train]

    def refine(rows, cols, ser):
        """Exact squared distances of candidate pairs (query rows, training series ser, starts)."""
        d = np.empty(rows.size)
        for p0 in range(0, rows.size, 8192):
            p1 = min(rows.size, p0 + 8192)
            w = np.ascontiguousarray(views_of(ser[p0:p1], cols[p0:p1]))
            ws = None
            if normalize:
                w, _, ws = znormalize(w)
            d[p0:p1] = _exact_sq(qs, rows[p0:p1], w.reshape(p1 - p0, n), ws)
        return d

    def views_of(ser, cols):
        out = np.empty((cols.size, C, L))
        for si in np.unique(ser):
            at = ser == si
            out[at] = views[si][cols[at]]
        return out

    def reduce(parts):
        qi, d, s, j = (np.concatenate(c) for c in zip(*parts))
        order = np.lexsort((j, s, d, qi))
        qi, d, s, j = qi[order], d[order], s[order], j[order]
        keep = lex_reduce(qi, d, s, j, zone)
        return [qi[keep], d[keep], s[keep], j[keep]]

    kept = [np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)]
    pending = []  # unrefined candidates: (rows, lower bounds in kernel units, series, starts)
    n_pending = 0
    for si, series in enumerate(train):
        if series.shape[0] < L:
            continue
        series = np.asarray(series, np.float64)
        if normalize:
            tser = _Series(series, L)
            inv, part, _, _, ex = _znorm_terms(tser, series, L)
            H, R, B, eb = inv, tser.mu, part - ex, ex
        else:
            tser = _Series(series, L, scale=s_raw)
            H, R = np.ones_like(tser.mu), np.zeros_like(tser.mu)
            B, eb = tser.sq.sum(axis=0), np.zeros(tser.nw)
        mt = tser.nw
        for r, (a, b) in enumerate(runs):
            sl = slice(starts[r], starts[r + 1])
            if normalize:
                qser, G, P, A, ea = qterms[r]
                eN = 2.02 * _U64 * qser.big * tser.big * (4.0 * L * L + 24.0 * L + K * (2.0 * L + 4))
            else:
                qser = _Series(qseries[r], L, centre=tser.centre, scale=s_raw)
                M = np.maximum(qser.big, tser.big)
                E = 2.0 * _U64 * float((M * M).sum()) * ((4.1 + 4 * C) * L * L + 30.0 * L
                                                        + K * (4.0 * L + 6)) + (n + 1) * 2.0 ** -1000
                G, P = np.full_like(qser.mu, 2.0), np.zeros_like(qser.mu)
                A = qser.sq.sum(axis=0) - E
                A[qconst[sl]] = inf
                ea = np.full(qser.nw, E)
                eN = np.zeros(C)
            if C == 1:
                kern, args = scan1, (qser.X[0], tser.X[0], L, K, G[0], P[0], A, ea, H[0], R[0], B,
                                     eb, float(eN[0]))
            else:
                kern, args = scan, (qser.X, tser.X, L, K, G, P, A, ea, H, R, B, eb, eN)
            k = -(b - a - 1)
            while k < mt:
                k, got = kern(*args, U2[sl], bUB[sl], bS[sl], bJ[sl], si, zone, k, mt,
                              out_i, out_j, out_lb)
                if got:
                    pending.append((out_i[:got] + starts[r], out_lb[:got].copy(),
                                    np.full(got, si, dtype=np.int64), out_j[:got].copy()))
                    n_pending += got
                if n_pending > cap:  # bound the memory: refine what can still matter now
                    rows, lb, ser, cols = (np.concatenate(c) for c in zip(*pending))
                    live = ~(lb > U2[rows])
                    rows, ser, cols = rows[live], ser[live], cols[live]
                    kept = reduce([kept, (rows, refine(rows, cols, ser), ser, cols)])
                    pending, n_pending = [], 0
            bar.update(mt * (b - a))
    # the final filter: first-match candidates (lower bound <= the best upper bound U1), and the
    # pairs that can be a second match: lower bound <= U2 and outside the zone of some possible
    # first match (a pair inside the zones of all of them is never the second)
    U1 = bUB
    if pending:
        rows, lb, ser, cols = (np.concatenate(c) for c in zip(*pending))
    else:
        rows = ser = cols = np.zeros(0, np.int64)
        lb = np.zeros(0)
    f_new = ~(lb > U1[rows])
    f_old = kept[1] * s2 <= U1[kept[0]]
    fq = np.r_[rows[f_new], kept[0][f_old]]
    fs = np.r_[ser[f_new], kept[2][f_old]]
    fj = np.r_[cols[f_new], kept[3][f_old]]
    smin, smax = np.full(m, np.iinfo(np.int64).max), np.full(m, -1)
    jmin, jmax = np.full(m, np.iinfo(np.int64).max), np.full(m, -1)
    np.minimum.at(smin, fq, fs)
    np.maximum.at(smax, fq, fs)
    np.minimum.at(jmin, fq, fj)
    np.maximum.at(jmax, fq, fj)
    lo, hi = jmax - zone, jmin + zone  # the common zone, where all first candidates share a series
    inside = (smin[rows] == smax[rows]) & (ser == smin[rows]) & (cols >= lo[rows]) & (cols <= hi[rows])
    live = f_new | (~(lb > U2[rows]) & ~inside)
    rows, ser, cols = rows[live], ser[live], cols[live]
    qi, d, s, j = reduce([kept, (rows, refine(rows, cols, ser), ser, cols)])
    act = ~qconst
    sel = act[qi]
    d1, s1, o1, d2, s2_, o2 = first_two(qi[sel], d[sel], s[sel], j[sel], zone, m)
    return idx[act], {"d1": d1[act], "series1": s1[act], "offset1": o1[act],  # squared
                      "d2": d2[act], "series2": s2_[act], "offset2": o2[act]}

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
