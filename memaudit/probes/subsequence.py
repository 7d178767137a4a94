"""Subsequence matching, set against set: do generated series replay stretches of training series?

Every window of every generated series (``length`` steps, every ``stride`` steps) is compared with
every window of every training series (all offsets), by Euclidean distance between z-normalised
windows (shape only: offset and amplitude are ignored, as in stumpy) or between raw windows.
Multivariate series are z-normalised channel by channel and the squared distances add up.

For each generated window the probe reports the nearest training stretch (series and offset, d1),
the nearest *other* stretch (d2: the best window outside an exclusion zone of ``exclusion_zone``
steps around the first match in the same series, so that the first match shifted by one step does
not count as a second neighbour), and the nearest-neighbour ratio d1 / d2: a window is flagged as
memorized when d1 / d2 < 1/3 (the image criterion of the memorization literature, applied to
windows). With ``max_distance``, windows within that distance of a training stretch are also
counted as matches.

Constant windows: a z-normalised constant window is taken as all zeros, so two constant windows
are at distance 0 and a constant and a non-constant window at sqrt(length) per channel (stumpy's
convention); no NaN appears.

Fast path: windows of one training series are cut as a strided view, copied in blocks and
compared with all query windows by one matrix product per block and channel (float32 GEMM, with
rolling means and norms); the best and second matches are then recomputed in float64. Memory is
bounded by ``block_elements`` (query windows x training windows per block).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._progress import Progress
from .._validation import check_fraction, check_positive_int
from ..adapters.timeseries import as_series_list, windows
from ..results import Rate, jsonable
from ..stats import cluster_rate, rate, rate_difference

__all__ = ["SubsequenceProbe", "SubsequenceResult", "subsequence_search", "dtw_subsequence_search",
           "window_distance"]

DEFAULT_THRESHOLD = 1.0 / 3.0
_CONST = 1e-8  # a window whose standard deviation is below this (relative to 1 + |mean|) is constant


def _moments(w):
    """Mean, std and a constant flag per row of (n, L) float64 windows."""
    mu = w.mean(axis=1)
    sd = w.std(axis=1)
    const = sd <= _CONST * (1.0 + np.abs(mu))
    return mu, np.where(const, 1.0, sd), const


def window_distance(a, b, normalize: bool = True) -> np.ndarray:
    """Distances between windows ``a[i]`` and ``b[i]`` of shape (n, length, channels), in float64.

    The definition every fast path is checked against (and the refinement of the best matches).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    total = np.zeros(a.shape[0])
    for c in range(a.shape[2]):
        x, y = a[:, :, c], b[:, :, c]
        if normalize:
            mx, sx, cx = _moments(x)
            my, sy, cy = _moments(y)
            zx = np.where(cx[:, None], 0.0, (x - mx[:, None]) / sx[:, None])
            zy = np.where(cy[:, None], 0.0, (y - my[:, None]) / sy[:, None])
            total += np.sum((zx - zy) ** 2, axis=1)
        else:
            total += np.sum((x - y) ** 2, axis=1)
    return np.sqrt(total)


class _Queries:
    """Query windows prepared once: float32 values or z-normalised values, norms, constant flags."""

    def __init__(self, q, normalize):  # q: (m, L, C) float64
        self.m, self.L, self.C = q.shape
        self.normalize = normalize
        self.mats, self.sq, self.const = [], [], []
        for c in range(self.C):
            x = q[:, :, c]
            if normalize:
                mu, sd, const = _moments(x)
                z = np.where(const[:, None], 0.0, (x - mu[:, None]) / sd[:, None])
                self.mats.append(np.ascontiguousarray(z, dtype=np.float32))
                self.const.append(const)
            else:
                self.mats.append(np.ascontiguousarray(x, dtype=np.float32))
                self.sq.append(np.sum(x * x, axis=1))


def _block_d2(qs: _Queries, block):
    """Squared distances (m, B) float32 between the queries and a block of windows (B, C, L)."""
    L = qs.L
    d2 = np.zeros((qs.m, block.shape[0]), dtype=np.float32)
    for c in range(qs.C):
        w = block[:, c, :]
        if qs.normalize:
            mu, sd, wconst = _moments(w)
            zw = ((w - mu[:, None]) / sd[:, None]).astype(np.float32)  # centred first: no cancellation
            # d^2 = |z_q - z_w|^2 = 2 L - 2 z_q . z_w   (in place: no m x B temporaries)
            contrib = qs.mats[c] @ zw.T
            contrib *= -2.0
            contrib += 2.0 * L
            np.maximum(contrib, 0, out=contrib)
            qconst = qs.const[c]
            if wconst.any() or qconst.any():
                # constant against non-constant: L; both constant: 0
                contrib[:, wconst] = L
                contrib[qconst, :] = L
                contrib[np.ix_(qconst, wconst)] = 0.0
            d2 += contrib
        else:
            dot = qs.mats[c] @ np.ascontiguousarray(w, dtype=np.float32).T
            wsq = np.einsum("ij,ij->i", w, w)
            contrib = qs.sq[c].astype(np.float32)[:, None] + wsq.astype(np.float32)[None, :] - 2 * dot
            np.maximum(contrib, 0, out=contrib)
            d2 += contrib
    return d2


def _mask_zone(d2, centre, zone, start):
    """Set columns within ``zone`` of each row's ``centre`` (block columns start at ``start``) to inf."""
    lo = np.clip(centre - zone - start, 0, d2.shape[1])
    hi = np.clip(centre + zone + 1 - start, 0, d2.shape[1])
    for r in np.flatnonzero(hi > lo):
        d2[r, lo[r] : hi[r]] = np.inf


def _argmin_rows(d2):
    j = np.argmin(d2, axis=1)
    return d2[np.arange(d2.shape[0]), j], j


def subsequence_search(queries, train, length: int, *, normalize: bool = True,
                       exclusion_zone: int | None = None, block_elements: int = 1 << 24,
                       progress=None) -> dict:
    """Nearest and second-nearest training stretch of every query window (the probe's engine).

    Parameters
    ----------
    queries : ndarray of shape (m, length, channels)
        Query windows.
    train : list of ndarray (length_i, channels)
        Training series; every window (stride 1) of each is a candidate.
    length : int
    normalize : bool, default=True
        z-normalised (True) or raw (False) Euclidean distance.
    exclusion_zone : int, optional
        The second match must start more than this many steps away from the first when both lie in
        the same series (default ``length - 1``: the two stretches do not overlap).
    block_elements : int, default=2**24
        Query windows x training windows compared at once (memory: 4 bytes each, a few times).

    Returns
    -------
    dict with arrays d1, series1, offset1, d2, series2, offset2 (d2 = inf where no second
    stretch exists).
    """
    q = np.asarray(queries, dtype=np.float64)
    m, L, C = q.shape
    zone = L - 1 if exclusion_zone is None else int(exclusion_zone)
    qs = _Queries(q, normalize)
    inf = np.float32(np.inf)
    best1 = np.full(m, inf)
    s1 = np.full(m, -1)
    o1 = np.full(m, -1)
    other = np.full(m, inf)  # best stretch of any series other than s1
    s_other = np.full(m, -1)
    o_other = np.full(m, -1)
    within = np.full(m, inf)  # best stretch of series s1 outside the zone around o1
    o_within = np.full(m, -1)
    chunked = set()
    bsize = max(256, block_elements // max(m, 1))
    rows = np.arange(m)
    n_windows = sum(max(0, s.shape[0] - L + 1) for s in train)
    with Progress(n_windows, "subsequence search", progress) as bar:
        for si, series in enumerate(train):
            nw = series.shape[0] - L + 1
            if nw <= 0:
                continue
            view = np.lib.stride_tricks.sliding_window_view(series, L, axis=0)  # (nw, C, L)
            sb = np.full(m, inf)
            ob = np.full(m, -1)
            w2 = np.full(m, inf)
            ow2 = np.full(m, -1)
            for a in range(0, nw, bsize):
                d2 = _block_d2(qs, view[a : a + bsize])
                v, j = _argmin_rows(d2)
                better = v < sb
                sb[better], ob[better] = v[better], j[better] + a
                if nw <= bsize:  # the whole series in one block: the second stretch now
                    _mask_zone(d2, ob, zone, 0)
                    w2, ow2 = _argmin_rows(d2)
                    ow2 = np.where(np.isfinite(w2), ow2, -1)
                bar.update(min(bsize, nw - a))
            if nw > bsize:
                chunked.add(si)
            new = sb < best1
            keep_old = new & (best1 < other)
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
    for si in chunked:
        sel = rows[s1 == si]
        if sel.size == 0:
            continue
        sub = _Queries(q[sel], normalize)
        view = np.lib.stride_tricks.sliding_window_view(train[si], L, axis=0)
        w2 = np.full(sel.size, inf)
        ow2 = np.full(sel.size, -1)
        for a in range(0, view.shape[0], bsize):
            d2 = _block_d2(sub, view[a : a + bsize])
            _mask_zone(d2, o1[sel], zone, a)
            v, j = _argmin_rows(d2)
            better = v < w2
            w2[better], ow2[better] = v[better], j[better] + a
        within[sel], o_within[sel] = w2, ow2
    use_within = within <= other
    d2v = np.where(use_within, within, other)
    s2 = np.where(use_within, s1, s_other)
    o2 = np.where(use_within, o_within, o_other)
    s2 = np.where(np.isfinite(d2v), s2, -1)
    o2 = np.where(np.isfinite(d2v), o2, -1)
    # exact float64 distances for the matches found
    w1 = np.stack([train[s][o : o + L] for s, o in zip(s1, o1)])
    d1 = window_distance(q, w1, normalize)
    d2 = np.full(m, np.inf)
    ok = np.flatnonzero(s2 >= 0)
    if ok.size:
        w2 = np.stack([train[s2[i]][o2[i] : o2[i] + L] for i in ok])
        d2[ok] = window_distance(q[ok], w2, normalize)
    return {"d1": d1, "series1": s1, "offset1": o1, "d2": d2, "series2": s2, "offset2": o2}


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


@dataclass(frozen=True)
class SubsequenceResult:
    """Per generated window: the training stretch it matches best, the second one, and the flags.

    Attributes
    ----------
    query_series, query_offset : ndarray of int
        Generated series (position) and start of each query window.
    d1, d2 : ndarray
        Distance to the nearest training stretch and to the nearest other stretch (inf if none).
    match_series, match_offset : ndarray of int
        The nearest training stretch: series position and offset.
    match_id : ndarray
        Its name, ``"<training series id>@<offset>"``.
    second_series, second_offset : ndarray of int
    ratio : ndarray
        d1 / d2 (1 where both are 0: a stretch that occurs twice in training).
    memorized : ndarray of bool
        ratio < threshold.
    matched : ndarray of bool or None
        d1 <= max_distance, when ``max_distance`` is set.
    window_rate : Rate
        Share of flagged windows; the interval resamples generated *series* (cluster bootstrap),
        because overlapping windows of one series are not independent.
    series_rate : Rate
        Share of generated series with at least one flagged window.
    control : SubsequenceResult or None
        The same probe on held-out real series.
    excess : Rate or None
        ``series_rate - control.series_rate``.
    """

    query_series: np.ndarray
    query_offset: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    match_series: np.ndarray
    match_offset: np.ndarray
    match_id: np.ndarray
    second_series: np.ndarray
    second_offset: np.ndarray
    ratio: np.ndarray
    memorized: np.ndarray
    matched: np.ndarray | None
    window_rate: Rate
    series_rate: Rate
    match_rate: Rate | None
    threshold: float
    max_distance: float | None
    normalize: bool
    length: int
    stride: int
    exclusion_zone: int
    n_series: int
    skipped: tuple = ()
    control: "SubsequenceResult | None" = None
    excess: Rate | None = None
    query_ids: np.ndarray = field(default=None, repr=False)

    def to_dict(self, max_windows: int = 200) -> dict:
        order = np.argsort(self.ratio, kind="stable")[:max_windows]
        return jsonable({
            "length": self.length, "stride": self.stride, "normalize": self.normalize,
            "exclusion_zone": self.exclusion_zone, "threshold": self.threshold,
            "max_distance": self.max_distance, "n_series": self.n_series,
            "n_windows": int(self.d1.size), "skipped_series": list(self.skipped),
            "window_rate": self.window_rate, "series_rate": self.series_rate,
            "match_rate": self.match_rate, "excess": self.excess,
            "control": None if self.control is None else self.control.to_dict(max_windows=0),
            "lowest_ratio_windows": [
                {"query_series": self.query_series[i], "query_offset": self.query_offset[i],
                 "query_id": None if self.query_ids is None else self.query_ids[i],
                 "match": self.match_id[i], "d1": self.d1[i], "d2": self.d2[i],
                 "ratio": self.ratio[i], "memorized": self.memorized[i]} for i in order],
        })

    def summary(self) -> str:
        mode = "z-normalised" if self.normalize else "raw"
        lines = [f"subsequences ({mode}, window {self.length}, stride {self.stride}): "
                 f"{self.d1.size} windows of {self.n_series} series",
                 f"  memorized windows (d1/d2 < {self.threshold:.3g}): {self.window_rate}",
                 f"  series with a memorized window: {self.series_rate}"]
        if self.match_rate is not None:
            lines.append(f"  windows within {self.max_distance:g} of a training stretch: {self.match_rate}")
        if self.control is not None:
            lines.append(f"  held-out control, series with a memorized window: {self.control.series_rate}")
            lines.append(f"  excess over control: {self.excess}")
        return "\n".join(lines)


def _ratio(d1, d2):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d2 > 0, d1 / d2, np.where(d1 > 0, np.inf, 1.0))
    return np.where(np.isinf(d2), np.nan, r)


class SubsequenceProbe:
    """Set-against-set subsequence matching with the nearest-neighbour ratio on windows.

    Parameters
    ----------
    length : int
        Window length in steps.
    stride : int, default=1
        Steps between query windows of a generated series (training windows always use stride 1).
    normalize : bool, default=True
        z-normalised Euclidean distance (shape); False compares raw values.
    exclusion_zone : int, optional
        Steps around the first match that the second match may not start in (same series).
        Default ``length - 1`` (no overlap). stumpy's matrix-profile default is ceil(length / 4).
    threshold : float, default=1/3
        A window is memorized when d1 / d2 < threshold.
    max_distance : float, optional
        Also count windows with d1 <= max_distance as matches.
    n_bootstrap, confidence, seed
        Intervals of the rates.
    layout : {"NTC", "NCT"}, default="NTC"
    block_elements : int, default=2**24
    metric : {"euclidean", "dtw"}, default="euclidean"
        "dtw": dynamic time warping through tslearn on raw values (``normalize=False``), for
        small sets (:func:`dtw_subsequence_search`).
    progress : bool, optional

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.standard_normal((5, 300))
    >>> fake = rng.standard_normal((3, 200))
    >>> fake[1, 48:112] = train[2, 100:164]          # a replayed stretch
    >>> res = SubsequenceProbe(length=64, stride=8).fit(train).score(fake)
    >>> i = np.flatnonzero(res.memorized)
    >>> res.query_series[i].tolist(), res.query_offset[i].tolist(), res.match_id[i].tolist()
    ([1], [48], ['2@100'])
    """

    def __init__(self, length: int, *, stride: int = 1, normalize: bool = True,
                 exclusion_zone: int | None = None, threshold: float = DEFAULT_THRESHOLD,
                 max_distance: float | None = None, n_bootstrap: int = 1000,
                 confidence: float = 0.95, seed: int = 0, layout: str = "NTC",
                 block_elements: int = 1 << 24, metric: str = "euclidean", progress=None):
        self.length = length
        self.stride = stride
        self.normalize = normalize
        self.exclusion_zone = exclusion_zone
        self.threshold = threshold
        self.max_distance = max_distance
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.seed = seed
        self.layout = layout
        self.block_elements = block_elements
        self.metric = metric
        self.progress = progress

    def fit(self, train, ids=None) -> "SubsequenceProbe":
        """Keep the training series (every window of them is a candidate)."""
        from .._validation import check_ids

        check_positive_int(self.length, "length")
        check_positive_int(self.stride, "stride")
        check_fraction(self.threshold, "threshold", low_open=True)
        if self.max_distance is not None and not self.max_distance >= 0:
            raise ValueError(f"max_distance must be >= 0, got {self.max_distance!r}")
        if self.metric not in ("euclidean", "dtw"):
            raise ValueError(f"metric must be 'euclidean' or 'dtw', got {self.metric!r}")
        if self.metric == "dtw" and self.normalize:
            raise ValueError("metric='dtw' compares raw values: set normalize=False")
        zone = self.length - 1 if self.exclusion_zone is None else int(self.exclusion_zone)
        if zone < 0:
            raise ValueError(f"exclusion_zone must be >= 0, got {self.exclusion_zone}")
        series = as_series_list(train, "train", self.layout)
        L = self.length
        n_windows = sum(max(0, s.shape[0] - L + 1) for s in series)
        if n_windows == 0:
            raise ValueError(f"every training series is shorter than the window length {L}")
        longest = max(s.shape[0] for s in series)
        if sum(s.shape[0] >= L for s in series) < 2 and longest - L + 1 <= zone + 1:
            raise ValueError("the training series hold no two windows outside each other's exclusion "
                             "zone, so the nearest-neighbour ratio d1/d2 is undefined: give longer "
                             "or more training series, or a smaller exclusion_zone")
        self.train_ = series
        self.train_ids_ = check_ids(ids, len(series), "ids")
        self.channels_ = series[0].shape[1]
        self.zone_ = zone
        return self

    def score(self, samples, *, holdout=None, sample_ids=None) -> SubsequenceResult:
        """Match every window of the generated ``samples`` (and of ``holdout``, the control)."""
        if not hasattr(self, "train_"):
            raise RuntimeError("call fit(train) before score(samples)")
        res = self._score(samples, sample_ids, "samples", self.seed)
        if holdout is None:
            return res
        ctrl = self._score(holdout, None, "holdout", self.seed + 1)
        excess = rate_difference(res.series_rate, ctrl.series_rate, n_bootstrap=self.n_bootstrap,
                                 confidence=self.confidence, seed=self.seed + 2)
        return SubsequenceResult(**{**res.__dict__, "control": ctrl, "excess": excess})

    def _score(self, data, ids, name, seed):
        w = windows(data, self.length, self.stride, ids=ids, layout=self.layout, name=name)
        if w.channels != self.channels_:
            raise ValueError(f"{name} have {w.channels} channels but the training series have "
                             f"{self.channels_}")
        q = w.x.reshape(len(w), self.length, w.channels)
        if self.metric == "dtw":
            found = dtw_subsequence_search(q, self.train_, self.length, exclusion_zone=self.zone_)
        else:
            found = subsequence_search(q, self.train_, self.length, normalize=self.normalize,
                                       exclusion_zone=self.zone_, block_elements=self.block_elements,
                                       progress=self.progress)
        ratio = _ratio(found["d1"], found["d2"])
        memorized = np.nan_to_num(ratio, nan=np.inf) < self.threshold
        kw = dict(n_bootstrap=self.n_bootstrap, confidence=self.confidence, seed=seed)
        n_series = len(w.series_ids)
        has = np.zeros(n_series, bool)
        has[w.series[memorized]] = True
        counted = np.setdiff1d(np.arange(n_series), np.array(w.skipped, dtype=int))
        matched = match_rate = None
        if self.max_distance is not None:
            matched = found["d1"] <= self.max_distance
            match_rate = cluster_rate(matched, w.series, **kw)
        match_id = np.array([f"{self.train_ids_[s]}@{o}" for s, o in zip(found["series1"], found["offset1"])])
        return SubsequenceResult(
            query_series=w.series, query_offset=w.offset, d1=found["d1"], d2=found["d2"],
            match_series=found["series1"], match_offset=found["offset1"], match_id=match_id,
            second_series=found["series2"], second_offset=found["offset2"], ratio=ratio,
            memorized=memorized, matched=matched,
            window_rate=cluster_rate(memorized, w.series, **kw),
            series_rate=rate(has[counted], label=name, **kw), match_rate=match_rate,
            threshold=float(self.threshold), max_distance=self.max_distance,
            normalize=bool(self.normalize), length=int(self.length), stride=int(self.stride),
            exclusion_zone=int(self.zone_), n_series=n_series, skipped=w.skipped,
            query_ids=w.ids,
        )
