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

Ties (one rule for every probe): a window at distance 0 of two training stretches (d1 = d2 = 0, a
stretch that occurs twice in training) is a copy, ratio 0. Among stretches at the same distance the
lowest (series, offset) is reported.

Constant windows: a z-normalised constant channel is taken as all zeros, so a constant and a
non-constant channel are at sqrt(length). A query window that is constant in *every* channel has no
shape under z-normalisation (it would be at distance 0 of every flat training stretch): it is not
evaluable, counted and reported as such, never flagged and left out of the rates' denominators. The
raw distance (``normalize=False``) judges flat stretches like any other.

The search engine (exact float64 nearest stretches, screened by certified float32 products)
lives in :mod:`memaudit.probes._subsequence_search`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .._series import as_series_list, windows
from .._validation import check_fraction, check_ids, check_positive_int
from ..results import Rate, jsonable
from ..stats import StatsConfig, cluster_rate, rate, rate_difference, spawn
from ._contract import Probe
from .nn_ratio import DEFAULT_THRESHOLD
from ._subsequence_search import (check_magnitude, dtw_subsequence_search, first_too_large,
                                  magnitude_error, subsequence_search, window_distance,
                                  znormalize)

__all__ = ["SubsequenceProbe", "SubsequenceResult", "subsequence_search", "dtw_subsequence_search",
           "window_distance"]

TIE_RULE = ("a window at distance 0 of two training stretches (d1 = d2 = 0) is a copy: ratio 0; "
            "among stretches at the same distance the lowest (series, offset) is reported")
CONSTANT_RULE = ("a generated window that is constant in every channel has no shape under "
                 "z-normalisation: it is not evaluable (counted, never flagged, left out of the "
                 "rates); compare raw values (--raw) to judge flat stretches")
CONSTANT_RULE_RAW = "constant windows are judged like any other under the raw distance"


@dataclass(frozen=True)
class SubsequenceResult:
    """Per generated window: the training stretch it matches best, the second one, and the flags.

    Attributes
    ----------
    query_series, query_offset : ndarray of int
        Generated series (position) and start of each query window.
    d1, d2 : ndarray
        Distance to the nearest training stretch and to the nearest other stretch (NaN where the
        window is not evaluable).
    match_series, match_offset : ndarray of int
        The nearest training stretch: series position and offset (-1 where not evaluable).
    match_id : ndarray
        Its name, ``"<training series id>@<offset>"`` (empty where not evaluable).
    second_series, second_offset : ndarray of int
    ratio : ndarray
        d1 / d2; 0 where d1 = d2 = 0 (a window equal to a stretch that occurs twice in training
        is a copy); NaN where the window is not evaluable.
    memorized : ndarray of bool
        ratio < threshold (False where not evaluable).
    matched : ndarray of bool or None
        d1 <= max_distance, when ``max_distance`` is set.
    evaluable : ndarray of bool
        False for a window constant in every channel under z-normalisation (no shape to compare).
    window_rate : Rate
        Share of flagged windows among the evaluable ones; the interval resamples generated
        *series* (cluster bootstrap), because overlapping windows of one series are not
        independent.
    series_rate : Rate
        Share of generated series with at least one flagged window, among the series with an
        evaluable window.
    control : SubsequenceResult or None
        The same probe on held-out real series.
    excess : Rate or None
        ``series_rate - control.series_rate``.
    skipped : tuple of int
        Series shorter than the window (no window).
    not_evaluable : tuple of int
        Series whose every window is constant under z-normalisation (not counted in the rates).
    query_ids : ndarray
        One name per query window, ``"<series id>@<offset>"``.
    series_ids : ndarray
        The generated series' ids (``score(samples, ids=...)``; positions by default).
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
    evaluable: np.ndarray
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
    not_evaluable: tuple = ()
    control: "SubsequenceResult | None" = None
    excess: Rate | None = None
    query_ids: np.ndarray = field(default=None, repr=False)
    series_ids: np.ndarray = field(default=None, repr=False)

    def to_frame(self):
        """One row per generated window: distances, ratio, matched stretch, flags (pandas)."""
        from ..results import subsequence_frame

        return subsequence_frame(self)

    @property
    def n_not_evaluable(self) -> int:
        """Windows left out: constant in every channel under z-normalisation."""
        return int((~self.evaluable).sum())

    def per_series(self) -> dict:
        """One record per generated series (the samples of this probe): its id, whether a window
        of it is memorized, its lowest ratio and that window's match (NaN / "" when none)."""
        n = self.n_series
        memorized = np.zeros(n, bool)
        memorized[self.query_series[self.memorized]] = True
        lowest = np.full(n, np.nan)
        match = np.full(n, "", dtype=object)
        ev = np.flatnonzero(self.evaluable)
        order = ev[np.lexsort((self.query_offset[ev], self.ratio[ev]))][::-1]  # best last
        lowest[self.query_series[order]] = self.ratio[order]
        match[self.query_series[order]] = self.match_id[order]
        return {"sample_id": self.series_ids, "memorized": memorized, "lowest_ratio": lowest,
                "match": match}

    def to_dict(self, per_sample: bool = True, *, max_windows: int = 200) -> dict:
        """JSON-safe summary; ``per_sample`` adds one record per generated series
        (:meth:`per_series`) and the ``max_windows`` windows of lowest ratio."""
        out = {
            "probe": "subsequence",
            "length": self.length, "stride": self.stride, "normalize": self.normalize,
            "exclusion_zone": self.exclusion_zone, "threshold": self.threshold,
            "max_distance": self.max_distance, "n_series": self.n_series,
            "n_windows": int(self.d1.size), "n_windows_not_evaluable": self.n_not_evaluable,
            "skipped_series": list(self.skipped), "series_not_evaluable": list(self.not_evaluable),
            "rules": {"ties": TIE_RULE,
                      "constant_windows": CONSTANT_RULE if self.normalize else CONSTANT_RULE_RAW},
            "window_rate": self.window_rate, "series_rate": self.series_rate,
            "match_rate": self.match_rate, "excess": self.excess,
            "control": None if self.control is None else self.control.to_dict(per_sample=False),
        }
        if per_sample:
            order = np.argsort(self.ratio, kind="stable")[:max_windows]
            out["lowest_ratio_windows"] = [
                {"query_series": self.query_series[i], "query_offset": self.query_offset[i],
                 "query_id": None if self.query_ids is None else self.query_ids[i],
                 "match": self.match_id[i], "d1": self.d1[i], "d2": self.d2[i],
                 "ratio": self.ratio[i], "memorized": self.memorized[i]}
                for i in order if self.evaluable[i]]
            out["per_sample"] = self.per_series()
        return jsonable(out)

    def plot(self, ax=None):
        """Histogram of the windows' d1/d2 (log axis) with the threshold and the held-out
        control's windows (:func:`memaudit.figures.ratio_histogram`); returns the Axes."""
        from ..figures import ratio_histogram

        return ratio_histogram(self.ratio, self.threshold, ax=ax, label="generated windows",
                               what="windows",
                               control=None if self.control is None else self.control.ratio)

    def summary(self) -> str:
        mode = "z-normalised" if self.normalize else "raw"
        every = "every window" if self.stride == 1 else f"a window every {self.stride} steps"
        lines = [f"subsequences ({mode}, window {self.length}, stride {self.stride}: {every}): "
                 f"{self.d1.size} windows of {self.n_series} series",
                 f"  memorized windows (d1/d2 < {self.threshold:.3g}): {self.window_rate}",
                 f"  series with a memorized window: {self.series_rate}"]
        if self.n_not_evaluable:
            lines.append(f"  constant windows, not evaluable under z-normalisation (use --raw to "
                         f"judge them): {self.n_not_evaluable} of {self.d1.size}")
        if self.match_rate is not None:
            lines.append(f"  windows within {self.max_distance:g} of a training stretch: {self.match_rate}")
        if self.control is not None:
            lines.append(f"  held-out control, series with a memorized window: {self.control.series_rate}")
            lines.append(f"  excess over control: {self.excess}")
        return "\n".join(lines)


def _ratio(d1, d2):
    """d1 / d2, with 0 where d1 = d2 = 0 (the tie rule of every probe: a copy) and NaN where the
    window was not evaluated."""
    out = np.full(np.shape(d1), np.nan)
    ok = np.isfinite(d1) & np.isfinite(d2)
    np.divide(d1, d2, out=out, where=ok & (d2 > 0))
    out[ok & (d2 == 0)] = 0.0
    return out


class SubsequenceProbe(Probe):
    """Set-against-set subsequence matching with the nearest-neighbour ratio on windows.

    Parameters
    ----------
    length : int
        Window length in steps.
    stride : int, default=1
        Steps between query windows of a generated series (training windows always use stride 1).
        1 compares every window, so a replay of ``length`` steps or more at any offset is compared
        whole; with a stride S > 1 only replays of ``length + S - 1`` steps or more are sure to
        contain a compared window (the cost is proportional to the number of query windows).
    normalize : bool, default=True
        z-normalised Euclidean distance (shape); False compares raw values. Under
        z-normalisation a window constant in every channel is not evaluable (see the module).
    exclusion_zone : int, optional
        Steps around the first match that the second match may not start in (same series).
        Default ``length - 1`` (no overlap). stumpy's matrix-profile default is ceil(length / 4).
    threshold : float, default=1/3
        A window is memorized when d1 / d2 < threshold, in (0, 1).
    max_distance : float, optional
        Also count windows with d1 <= max_distance (finite, >= 0) as matches.
    n_bootstrap, confidence, seed : int, float, int
        Intervals of the rates (defaults: :class:`memaudit.stats.StatsConfig`); the bootstrap
        streams are spawned from ``SeedSequence(seed)``: samples, control, excess, and within
        each set one stream per rate (windows, series, matches).
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
                 max_distance: float | None = None,
                 n_bootstrap: int = StatsConfig.n_bootstrap,
                 confidence: float = StatsConfig.confidence, seed: int = StatsConfig.seed,
                 layout: str = "NTC",
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

    def _check_params(self) -> int:
        """Validate the parameters (no data needed); returns the exclusion zone."""
        check_positive_int(self.length, "length")
        check_positive_int(self.stride, "stride")
        check_fraction(self.threshold, "threshold", low_open=True)
        md = self.max_distance
        if md is not None and (isinstance(md, bool) or not isinstance(md, numbers.Real)
                               or not np.isfinite(md) or md < 0):
            raise ValueError(f"max_distance must be a finite number >= 0, got {md!r}")
        check_positive_int(self.n_bootstrap, "n_bootstrap")
        check_fraction(self.confidence, "confidence")
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.block_elements, "block_elements")
        if self.layout not in ("NTC", "NCT"):
            raise ValueError(f"layout must be 'NTC' or 'NCT', got {self.layout!r}")
        if self.metric not in ("euclidean", "dtw"):
            raise ValueError(f"metric must be 'euclidean' or 'dtw', got {self.metric!r}")
        if self.metric == "dtw" and self.normalize:
            raise ValueError("metric='dtw' compares raw values: set normalize=False")
        if self.exclusion_zone is None:
            return int(self.length) - 1
        return check_positive_int(self.exclusion_zone, "exclusion_zone", minimum=0)

    _fitted_attr = "train_"

    def fit(self, train, ids=None) -> "SubsequenceProbe":
        """Keep the training series (every window of them is a candidate).

        Parameters
        ----------
        train : array-like or list of arrays
            The training series (the reference): one 1-D array, (n_series, length),
            (n_series, length, channels) (or NCT with ``layout="NCT"``), or a list of series.
        ids : array-like of shape (n_series,), optional
            Names of the training series; a match is named ``"<id>@<offset>"``.
        """
        zone = self._check_params()
        series = as_series_list(train, "train", self.layout)
        check_magnitude(series, "train")
        L = self.length
        usable = [s.shape[0] - L + 1 for s in series if s.shape[0] >= L]
        if not usable:
            raise ValueError(f"every training series is shorter than the window length {L} "
                             f"(longest: {max(s.shape[0] for s in series)} steps)")
        # d2 must exist for every first match: another series, or, in the only one, a window
        # more than `zone` steps from any offset (the middle one is the worst)
        if len(usable) < 2 and usable[0] // 2 <= zone:
            raise ValueError("the training series hold no two windows outside each other's exclusion "
                             "zone, so the nearest-neighbour ratio d1/d2 is undefined: give longer "
                             "or more training series, or a smaller exclusion_zone")
        self.train_ = series
        self.train_ids_ = check_ids(ids, len(series), "ids")
        self.channels_ = series[0].shape[1]
        self.zone_ = zone
        return self

    def score(self, samples, ids=None, *, holdout=None, holdout_ids=None) -> SubsequenceResult:
        """Match every window of the generated ``samples`` (and of ``holdout``, the control).

        Parameters
        ----------
        samples : array-like or list of arrays
            Generated series, in the layout of the training series.
        ids : array-like of shape (n_samples,), optional
            Names of the generated series (default: positions).
        holdout : array-like or list of arrays, optional
            Held-out real series through the same probe: the control; the result then carries
            ``control`` and ``excess`` (series rate over the control's).
        holdout_ids : array-like, optional

        Returns
        -------
        SubsequenceResult
        """
        self._check_fitted()
        prepared = [self._windows(samples, ids, "samples")]
        if holdout is not None:
            prepared.append(self._windows(holdout, holdout_ids, "holdout"))
        # independent bootstrap streams: samples, control, excess
        streams = spawn(self.seed, 3)
        res = self._score(*prepared[0], "samples", streams[0])
        if holdout is None:
            return res
        ctrl = self._score(*prepared[1], "holdout", streams[1])
        excess = rate_difference(res.series_rate, ctrl.series_rate, n_bootstrap=self.n_bootstrap,
                                 confidence=self.confidence, seed=streams[2])
        return SubsequenceResult(**{**res.__dict__, "control": ctrl, "excess": excess})

    def _windows(self, data, ids, name):
        """Validated windows of a set (every check before any search)."""
        w = windows(data, self.length, self.stride, ids=ids, layout=self.layout, name=name)
        if w.channels != self.channels_:
            raise ValueError(f"{name} have {w.channels} channels but the training series have "
                             f"{self.channels_}")
        q = w.x.reshape(len(w), self.length, w.channels)
        i = first_too_large(q)
        if i is not None:
            raise magnitude_error(f"{name}[{w.series[i]}]", q, f" near step {w.offset[i]}")
        if self.normalize:
            constant = znormalize(np.transpose(q, (0, 2, 1)))[1].all(axis=1)
            if constant.all():
                raise ValueError(f"every window of {name} is constant, and a constant window has no "
                                 "shape under z-normalisation: nothing can be judged; compare raw "
                                 "values (normalize=False, --raw)")
        return w, q

    def _find(self, q, name: str) -> dict:
        """The search engine's answer for the query windows ``q`` (m, length, channels)."""
        if self.metric == "dtw":
            return dtw_subsequence_search(q, self.train_, self.length, exclusion_zone=self.zone_)
        return subsequence_search(q, self.train_, self.length, normalize=self.normalize,
                                  exclusion_zone=self.zone_, block_elements=self.block_elements,
                                  progress=self.progress)

    def _score(self, w, q, name, seed):
        found = self._find(q, name)
        ev = np.isfinite(found["d1"]) & np.isfinite(found["d2"])
        ratio = _ratio(found["d1"], found["d2"])
        memorized = ev & (np.nan_to_num(ratio, nan=np.inf) < self.threshold)
        window_seed, series_seed, match_seed = seed.spawn(3)  # one stream per rate
        kw = dict(n_bootstrap=self.n_bootstrap, confidence=self.confidence)
        n_series = len(w.series_ids)
        has = np.zeros(n_series, bool)
        has[w.series[memorized]] = True
        judged = np.zeros(n_series, bool)
        judged[w.series[ev]] = True
        windowed = np.zeros(n_series, bool)
        windowed[w.series] = True
        not_evaluable = tuple(int(i) for i in np.flatnonzero(windowed & ~judged))
        matched = match_rate = None
        if self.max_distance is not None:
            matched = ev & (np.nan_to_num(found["d1"], nan=np.inf) <= self.max_distance)
            match_rate = cluster_rate(matched[ev], w.series[ev], seed=match_seed, **kw)
        match_id = np.array([f"{self.train_ids_[s]}@{o}" if s >= 0 else ""
                             for s, o in zip(found["series1"], found["offset1"])])
        return SubsequenceResult(
            query_series=w.series, query_offset=w.offset, d1=found["d1"], d2=found["d2"],
            match_series=found["series1"], match_offset=found["offset1"], match_id=match_id,
            second_series=found["series2"], second_offset=found["offset2"], ratio=ratio,
            memorized=memorized, matched=matched, evaluable=ev,
            window_rate=cluster_rate(memorized[ev], w.series[ev], seed=window_seed, **kw),
            series_rate=rate(has[judged], label=name, seed=series_seed, **kw),
            match_rate=match_rate,
            threshold=float(self.threshold), max_distance=self.max_distance,
            normalize=bool(self.normalize), length=int(self.length), stride=int(self.stride),
            exclusion_zone=int(self.zone_), n_series=n_series, skipped=w.skipped,
            not_evaluable=not_evaluable, query_ids=w.ids, series_ids=w.series_ids,
        )
