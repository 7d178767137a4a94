"""The nearest-neighbour-ratio memorization probe.

A generated sample x is memorized when its nearest training item is much nearer than the second
nearest (Bonnaire et al. 2025, Eq. 6; Yoon et al. 2023; Gu et al. 2023):

    d1(x) / d2(x) < k,   k = 1/3,

with d1, d2 the distances (plain L2 on pixels by default) to the nearest and second-nearest
training items. f_mem is the fraction of samples so flagged. A second, relative criterion is
computed beside it (Carlini et al. 2023, Eq. 1): d1 over the mean distance to the 50 nearest
training items, below alpha = 0.5.

When held-out real data (never trained on) are given, they go through the same probe as the
control: real non-members that sit that close to one training item set the false-positive floor,
and the headline is the excess of the samples' rate over the control's. The share of samples that
are closer to the training set than to the held-out set is reported too (the view of SDMetrics'
DCR overfitting metric), beside its value without memorization, n_train / (n_train + n_holdout).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._validation import (as_2d_array, check_fraction, check_ids, check_positive_int,
                           check_same_dim, check_seed)
from ..neighbors import BACKENDS, INDEXES, METRICS, NeighborIndex
from ..results import Rate, jsonable
from ..stats import StatsConfig, rate, rate_difference, spawn
from ._contract import Probe

__all__ = ["NNRatioProbe", "NNRatioResult", "nn_ratio", "DEFAULT_THRESHOLD"]

# Bonnaire et al. 2025, Eq. 6, following Yoon et al. 2023 and Gu et al. 2023.
DEFAULT_THRESHOLD = 1 / 3
THRESHOLD_SOURCE = "k = 1/3: Bonnaire et al. 2025 (Eq. 6), after Yoon et al. 2023 and Gu et al. 2023"
CARLINI_SOURCE = "alpha = 0.5 over the 50 nearest: Carlini et al. 2023 (Eq. 1)"
# the bootstrap streams spawned from SeedSequence(seed), in this order
STREAMS = ("samples f_mem", "samples Carlini rate", "control f_mem", "control Carlini rate",
           "excess over control", "closer to train than held-out")


@dataclass(frozen=True)
class NNRatioResult:
    """Per-sample nearest-neighbour ratios and the memorized fraction.

    Attributes
    ----------
    d1, d2 : ndarray of shape (n_samples,)
        Distances to the nearest and second-nearest training items.
    ratio : ndarray of shape (n_samples,)
        ``d1 / d2``. A sample identical to two (duplicated) training items has d1 = d2 = 0; its
        ratio is defined as 0 (a copy), never NaN.
    nn_index, nn2_index : ndarray of int
        Positions of the two nearest training items in the training set.
    nn_id : ndarray
        Ids of the nearest training items (file names or original indices).
    sample_ids : ndarray
        Ids of the samples.
    memorized : ndarray of bool
        ``ratio < threshold``.
    rate : Rate
        Fraction of memorized samples (f_mem) with its interval.
    threshold, threshold_source : float, str
    carlini_score, carlini_memorized : ndarray or None
        ``d1 / mean(d_1..d_m)`` over the m = ``carlini_n`` nearest training items, and
        ``carlini_score < carlini_alpha``.
    carlini_rate : Rate or None
    carlini_alpha, carlini_n : float, int
        The relative criterion's settings (``carlini_n`` is clamped to the training-set size).
    control : NNRatioResult or None
        The same probe on held-out real data.
    excess : Rate or None
        ``rate - control.rate`` with a bootstrap interval: the headline when a control exists.
    closer_to_train : Rate or None
        Share of samples nearer to the training set than to the held-out set.
    closer_sizes : dict or None
        The two sets' sizes and the share expected without memorization,
        ``n_train / (n_train + n_holdout)`` (0.5 for equal sizes).
    metric : str
    neighbors : dict
        How the search was done (backend, index, recall of an approximate index).
    """

    d1: np.ndarray
    d2: np.ndarray
    ratio: np.ndarray
    nn_index: np.ndarray
    nn2_index: np.ndarray
    nn_id: np.ndarray
    sample_ids: np.ndarray
    memorized: np.ndarray
    rate: Rate
    threshold: float
    threshold_source: str
    carlini_score: np.ndarray | None
    carlini_memorized: np.ndarray | None
    carlini_rate: Rate | None
    carlini_alpha: float | None
    carlini_n: int
    metric: str
    neighbors: dict
    control: "NNRatioResult | None" = None
    excess: Rate | None = None
    closer_to_train: Rate | None = None
    closer_sizes: dict | None = None

    def to_frame(self):
        """One row per sample: id, d1, d2, ratio, nearest training id, flags (pandas)."""
        from ..results import nn_ratio_frame

        return nn_ratio_frame(self)

    @property
    def n_samples(self) -> int:
        return int(self.ratio.shape[0])

    @property
    def n_exact_copies(self) -> int:
        """Samples identical to a training item (d1 = 0)."""
        return int((self.d1 == 0).sum())

    def flagged(self) -> np.ndarray:
        """Positions of memorized samples, most certain (smallest ratio) first."""
        idx = np.flatnonzero(self.memorized)
        return idx[np.argsort(self.ratio[idx], kind="stable")]

    def closest_pairs(self, n: int = 16) -> np.ndarray:
        """Positions of the ``n`` samples with the smallest ratio (flagged or not)."""
        return np.argsort(self.ratio, kind="stable")[:n]

    def to_dict(self, per_sample: bool = True) -> dict:
        """JSON-safe summary; ``per_sample`` adds one record per sample."""
        out = {
            "probe": "nn_ratio",
            "metric": self.metric,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "n_samples": self.n_samples,
            "n_memorized": int(self.memorized.sum()),
            "n_exact_copies": self.n_exact_copies,
            "rate": self.rate.to_dict(),
            "carlini": None
            if self.carlini_rate is None
            else {
                "alpha": self.carlini_alpha,
                "n_nearest": self.carlini_n,
                "source": CARLINI_SOURCE,
                "rate": self.carlini_rate.to_dict(),
            },
            "neighbors": self.neighbors,
            "control": None if self.control is None else self.control.to_dict(per_sample=False),
            "excess_over_control": None if self.excess is None else self.excess.to_dict(),
            "closer_to_train_than_holdout": None
            if self.closer_to_train is None
            else {**self.closer_to_train.to_dict(), **self.closer_sizes},
        }
        if per_sample:
            records = {
                "sample_id": self.sample_ids,
                "d1": self.d1,
                "d2": self.d2,
                "ratio": self.ratio,
                "nn_index": self.nn_index,
                "nn_id": self.nn_id,
                "memorized": self.memorized,
            }
            if self.carlini_score is not None:
                records["carlini_score"] = self.carlini_score
                records["carlini_memorized"] = self.carlini_memorized
            out["per_sample"] = {k: jsonable(v) for k, v in records.items()}
        return out

    def plot(self, ax=None, bins: int = 40):
        """Histogram of d1/d2 (log axis, share of each set) with the threshold and the control
        (:func:`memaudit.figures.ratio_histogram`); returns the Axes."""
        from ..figures import ratio_histogram

        return ratio_histogram(self.ratio, self.threshold, ax=ax, bins=bins,
                               control=None if self.control is None else self.control.ratio)

    def summary(self) -> str:
        lines = [f"memorized (d1/d2 < {self.threshold:.4g}): {self.rate}"]
        if self.control is not None:
            lines.append(f"held-out control:              {self.control.rate}")
            lines.append(f"excess over control:           {self.excess}")
        if self.closer_to_train is not None:
            expected = 100 * self.closer_sizes["expected"]
            lines.append(f"closer to train than held-out: {self.closer_to_train} "
                         f"(expected {expected:.1f}% without memorization)")
        if self.carlini_rate is not None:
            lines.append(
                f"Carlini relative criterion (alpha {self.carlini_alpha:g}, "
                f"{self.carlini_n} nearest): {self.carlini_rate}"
            )
            if self.control is not None and self.control.carlini_rate is not None:
                lines.append(f"  same criterion on held-out control: {self.control.carlini_rate}")
        return "\n".join(lines)


def _ratio(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """d1 / d2, with 0 where d2 = 0 (then d1 = 0 too: an exact copy of a duplicated item)."""
    out = np.zeros_like(d1, dtype=np.float64)
    np.divide(d1, d2, out=out, where=d2 > 0)
    return out


class NNRatioProbe(Probe):
    """Flag generated samples whose nearest training item is much nearer than the second.

    Parameters
    ----------
    threshold : float, default=1/3
        k in ``d1/d2 < k``; must lie in (0, 1).
    metric : {"l2", "cosine"}, default="l2"
        The paper uses plain L2 on pixels.
    backend, index : str
        Neighbour search options, see :class:`memaudit.neighbors.NeighborIndex`.
    carlini_alpha : float or None, default=0.5
        Relative criterion of Carlini et al. 2023; ``None`` turns it off.
    carlini_n : int, default=50
        Nearest training items averaged in that criterion.
    n_bootstrap, confidence : int, float
        Bootstrap resamples and confidence of every interval (defaults:
        :class:`memaudit.stats.StatsConfig`).
    seed : int, default=StatsConfig.seed
        Seeds the bootstraps: ``SeedSequence(seed).spawn(6)`` gives one stream per figure, in the
        order of ``STREAMS`` (and seeds an approximate index's training and recall sample).
    progress : bool or None, default=None
        Progress bar on stderr for long searches.
    search_options : dict, optional
        Further :class:`NeighborIndex` options (``block_bytes``, ``nprobe``, ``device``...).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(500, 64))
    >>> samples = np.vstack([rng.normal(size=(99, 64)), train[7:8] + 0.01])
    >>> res = NNRatioProbe().fit(train).score(samples)
    >>> res.flagged().tolist(), res.nn_index[99]
    ([99], 7)
    """

    _fitted_attr = "train_"

    def __init__(
        self,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        metric: str = "l2",
        backend: str = "faiss",
        index: str = "exact",
        carlini_alpha: float | None = 0.5,
        carlini_n: int = 50,
        n_bootstrap: int = StatsConfig.n_bootstrap,
        confidence: float = StatsConfig.confidence,
        seed: int = StatsConfig.seed,
        progress: bool | None = None,
        search_options: dict | None = None,
    ):
        self.threshold = threshold
        self.metric = metric
        self.backend = backend
        self.index = index
        self.carlini_alpha = carlini_alpha
        self.carlini_n = carlini_n
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.seed = seed
        self.progress = progress
        self.search_options = search_options

    def _search(self, **extra) -> NeighborIndex:
        opts = dict(self.search_options or {})
        opts.update(extra)
        return NeighborIndex(
            self.metric, self.backend, self.index, progress=self.progress, seed=self.seed, **opts
        )

    def check_params(self) -> "NNRatioProbe":
        """Refuse bad settings (one-line errors) without touching any data."""
        check_fraction(self.threshold, "threshold")
        if self.carlini_alpha is not None:
            check_fraction(self.carlini_alpha, "carlini_alpha")
            check_positive_int(self.carlini_n, "carlini_n", minimum=2)
        check_positive_int(self.n_bootstrap, "n_bootstrap")
        check_fraction(self.confidence, "confidence")
        check_seed(self.seed)
        for value, allowed, what in ((self.metric, METRICS, "metric"),
                                     (self.backend, BACKENDS, "backend"),
                                     (self.index, INDEXES, "index")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
        return self

    def fit(self, train, ids=None) -> "NNRatioProbe":
        """Index the training set.

        Parameters
        ----------
        train : array-like or numpy.memmap of shape (n_train, ...)
            At least two items (the ratio needs a second neighbour).
        ids : array-like of shape (n_train,), optional
            Names of the training items (file names, original indices); default positions.
        """
        self.check_params()
        self.threshold_ = float(self.threshold)
        train = as_2d_array(train, "train")
        if train.shape[0] < 2:
            raise ValueError(
                "train has 1 item; the nearest-neighbour ratio needs at least 2 training items "
                "(d2 is the distance to the second nearest)"
            )
        self.train_ = train
        self.train_ids_ = check_ids(ids, train.shape[0], "train ids")
        self.index_ = self._search().fit(train, name="train")
        return self

    def _score_one(self, samples, ids, name: str, seeds) -> NNRatioResult:
        samples = as_2d_array(samples, name)
        check_same_dim(samples, self.train_, name, "train")
        sample_ids = check_ids(ids, samples.shape[0], f"{name} ids")
        n_train = self.train_.shape[0]
        use_carlini = self.carlini_alpha is not None
        m = min(self.carlini_n, n_train) if use_carlini else 0
        nb = self.index_.search(samples, k=max(2, m), name=name)
        d1, d2 = nb.distances[:, 0], nb.distances[:, 1]
        ratio = _ratio(d1, d2)
        memorized = ratio < self.threshold_
        c_score = c_flag = c_rate = None
        if use_carlini:
            mean_m = nb.distances[:, :m].mean(axis=1)
            c_score = _ratio(d1, mean_m)
            c_flag = c_score < self.carlini_alpha
            c_rate = rate(c_flag, n_bootstrap=self.n_bootstrap, confidence=self.confidence,
                          seed=seeds[1], label=name)
        return NNRatioResult(
            d1=d1,
            d2=d2,
            ratio=ratio,
            nn_index=nb.indices[:, 0],
            nn2_index=nb.indices[:, 1],
            nn_id=self.train_ids_[nb.indices[:, 0]],
            sample_ids=sample_ids,
            memorized=memorized,
            rate=rate(memorized, n_bootstrap=self.n_bootstrap, confidence=self.confidence,
                      seed=seeds[0], label=name),
            threshold=self.threshold_,
            threshold_source=THRESHOLD_SOURCE if self.threshold_ == DEFAULT_THRESHOLD else "user",
            carlini_score=c_score,
            carlini_memorized=c_flag,
            carlini_rate=c_rate,
            carlini_alpha=self.carlini_alpha,
            carlini_n=m,
            metric=self.metric,
            neighbors=nb.to_dict(),
        )

    def score(self, samples, ids=None, *, holdout=None, holdout_ids=None) -> NNRatioResult:
        """Score generated samples against the fitted training set.

        Parameters
        ----------
        samples : array-like of shape (n_samples, ...)
            Generated samples, same number of features as the training set.
        ids : array-like of shape (n_samples,), optional
        holdout : array-like of shape (n_holdout, ...), optional
            Real items from the training distribution that the model never saw: the control.
        holdout_ids : array-like, optional

        Returns
        -------
        NNRatioResult
        """
        self._check_fitted()
        # one independent bootstrap stream per figure (see STREAMS)
        streams = spawn(self.seed, len(STREAMS))
        result = self._score_one(samples, ids, "samples", streams[0:2])
        if holdout is None:
            return result
        control = self._score_one(holdout, holdout_ids, "holdout", streams[2:4])
        excess = rate_difference(result.rate, control.rate, n_bootstrap=self.n_bootstrap,
                                 confidence=self.confidence, seed=streams[4])
        closer, sizes = self._closer_to_train(samples, holdout, result.d1, streams[5])
        return replace(result, control=control, excess=excess, closer_to_train=closer,
                        closer_sizes=sizes)

    def _closer_to_train(self, samples, holdout, d_train, seed):
        """Share of samples nearer to the training set than to the held-out set.

        For a sample drawn independently of both sets, its nearest neighbour in the union of n_t
        training and n_h held-out items (all exchangeable) is a training item with probability
        n_t / (n_t + n_h): that is the expected share without memorization (0.5 for equal sizes).
        """
        d_hold = self._search().fit(holdout, name="holdout").search(samples, k=1).distances[:, 0]
        share = rate(d_train < d_hold, n_bootstrap=self.n_bootstrap, confidence=self.confidence,
                     seed=seed)
        n_t, n_h = self.train_.shape[0], as_2d_array(holdout, "holdout", check_values=False).shape[0]
        return share, {"n_train": int(n_t), "n_holdout": int(n_h), "expected": n_t / (n_t + n_h)}


def nn_ratio(samples, train, *, holdout=None, train_ids=None, sample_ids=None,
             holdout_ids=None, **params) -> NNRatioResult:
    """Nearest-neighbour-ratio probe in one call: ``NNRatioProbe(**params).fit(train).score(...)``.

    Parameters
    ----------
    samples, train : array-like
        Generated samples and training items, same number of features.
    holdout : array-like, optional
        Held-out real items for the control.
    **params
        :class:`NNRatioProbe` parameters (``threshold``, ``metric``, ``backend``, ``seed``...).

    Returns
    -------
    NNRatioResult
    """
    probe = NNRatioProbe(**params).fit(train, ids=train_ids)
    return probe.score(samples, ids=sample_ids, holdout=holdout, holdout_ids=holdout_ids)
