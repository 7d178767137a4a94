"""Membership inference statistics on attack scores (any model, any attack).

Given one score per item for members (training items) and non-members (held-out items), where a
higher score means "more likely a member" (pass the negative loss for loss-based attacks), report
what an attacker achieves, with intervals:

- ROC AUC, P(member > non-member) + P(tie)/2, 0.5 for an attacker who cannot tell;
- TPR at 1% and 0.1% FPR (Carlini et al. 2022, "Membership inference attacks from first
  principles"): the largest true-positive rate among thresholds whose false-positive rate is at most
  the target, over every ROC point (every distinct score is a threshold, ties included; see
  :func:`memaudit.stats.tpr_at_fpr`). A target below 1/n_nonmembers cannot be resolved and is
  marked so, never printed as a number;
- each with a seeded, stratified percentile bootstrap (members and non-members resampled
  separately, computed by the same ROC functions) and, beside it, a closed-form interval that does
  not collapse at the bounds (the AUC's score interval from Hanley and McNeil's variance; Wilson on
  the members above the threshold for the TPR), and the random baseline (AUC 0.5, TPR = FPR);
- a warning when either side has fewer than ``MIN_PER_SIDE`` items.

Thresholds chosen on the evaluated scores flatter the attacker; the calibration-split discipline of
the diffusion attacks (which pick a timestep) lives with those attacks. The AUC and the TPR at a
fixed FPR need no chosen threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import as_2d_array, check_fraction, check_ids, check_positive_int
from ..results import Rate, interval_text, jsonable
from ..stats import (StatsConfig, _auc, _fp_limit, _roc_counts, _tp_at_fpr, auc_score_interval,
                     fpr_resolved, roc_points, seed_label, spawn, tpr_at_fpr, wilson_interval)
from ._contract import Probe
from .sample_attacks import density_ratio_attack, distance_attack

__all__ = ["MembershipProbe", "MembershipResult", "membership_metrics", "tpr_at_fpr",
           "DEFAULT_FPRS", "MIN_PER_SIDE", "MIN_FALSE_POSITIVES", "TprAtFpr", "interval_text",
           "ATTACKS"]

DEFAULT_FPRS = (0.01, 0.001)

# Below 50 per side the 95% interval of an AUC near 0.5 is wider than +-0.11 (sd
# sqrt((m+n+1)/12mn)) and the percentile bootstrap under-covers (docs/probes/membership.md).
MIN_PER_SIDE = 50
# Below 10 allowed false positives the bootstrap interval of a TPR at fixed FPR under-covers
# (measured coverage of a 95% interval: 0.68 with 1, 0.86-0.93 with 2 to 5, 0.92-0.95 with 10).
MIN_FALSE_POSITIVES = 10


def _scores(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" and arr.size:
        raise TypeError(f"{name}: scores must be numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected one score per item (a 1-D array), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if arr.size < 2:
        raise ValueError(f"{name} has {arr.size} score(s); at least 2 are needed for an interval")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf score(s), first at position "
                         f"{int(np.flatnonzero(~np.isfinite(arr))[0])}")
    return arr


@dataclass(frozen=True)
class TprAtFpr(Rate):
    """TPR at a target FPR: a :class:`~memaudit.results.Rate` over the members (``count`` of
    ``n``) at the operating point ``fpr``; ``value``/``low``/``high`` are None when ``resolved``
    is False."""

    lead: str = "bootstrap"
    fpr: float = 0.0
    n_nonmembers: int = 0
    resolved: bool = True

    @property
    def n_members(self) -> int:
        return self.n

    @property
    def min_resolvable_fpr(self) -> float:
        return 1.0 / self.n_nonmembers

    @property
    def false_positives_allowed(self) -> int:
        """Non-members the target FPR lets the attacker flag: ``floor(fpr * n_nonmembers)``."""
        return _fp_limit(self.fpr, self.n_nonmembers)

    def to_dict(self) -> dict:
        return jsonable({**super().to_dict(), "min_resolvable_fpr": self.min_resolvable_fpr,
                         "false_positives_allowed": self.false_positives_allowed})


def tpr_text(d: dict, confidence: float, n_nonmembers: int) -> str:
    """``TprAtFpr.to_dict()`` as text, or the "not resolved" marker."""
    if not d["resolved"]:
        return (f"not resolved: {n_nonmembers} non-members resolve FPRs of 1/{n_nonmembers} or "
                f"more")
    return interval_text(d, confidence, pct=True)


def _bootstrap_roc(m: np.ndarray, n: np.ndarray, idx_m: np.ndarray, idx_n: np.ndarray,
                   limits: list[int]):
    """AUC and, per false-positive limit, the TPR of the resamples ``m[idx_m[b]]``, ``n[idx_n[b]]``.

    The ROC of a resample is read at the distinct scores of the full sets (a score absent from a
    resample repeats the previous point), so one histogram per resample replaces a sort; the AUC
    and TPR come from the same functions as the point estimates.
    """
    thr = np.unique(np.r_[m, n])[::-1]
    u = thr.size
    pos_m = u - 1 - np.searchsorted(thr[::-1], m)  # index of each score in the descending list
    pos_n = u - 1 - np.searchsorted(thr[::-1], n)
    b = idx_m.shape[0]
    rows = (u * np.arange(b))[:, None]

    def counts(pos, idx):
        w = np.bincount((pos[idx] + rows).ravel(), minlength=b * u).reshape(b, u)
        return np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(w, 1)], 1)

    tp, fp = counts(pos_m, idx_m), counts(pos_n, idx_n)
    return _auc(tp, fp, m.size, n.size), [_tp_at_fpr(tp, fp, k) / m.size for k in limits]


@dataclass(frozen=True)
class MembershipResult:
    """What an attacker achieves, with intervals and the random baseline.

    Attributes
    ----------
    auc : Rate
        ROC AUC with its bootstrap and score intervals (``count`` None, ``n`` the items scored).
    tpr : dict of float -> TprAtFpr
        TPR at each target FPR.
    roc_fpr, roc_tpr : ndarray
        Every ROC point.
    n_members, n_nonmembers : int
    confidence : float
    method : str
    notes : tuple of str
        Warnings (few items, coarse FPRs).
    member_scores, nonmember_scores : ndarray or None
        The attack scores (higher = member), one per item.
    member_ids, nonmember_ids : ndarray or None
        Their names (positions by default).
    """

    auc: Rate
    tpr: dict  # fpr -> TprAtFpr
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    n_members: int
    n_nonmembers: int
    confidence: float
    method: str
    notes: tuple = ()
    member_scores: np.ndarray | None = None
    nonmember_scores: np.ndarray | None = None
    member_ids: np.ndarray | None = None
    nonmember_ids: np.ndarray | None = None

    def to_frame(self):
        """One row per scored item: id, member, score (pandas)."""
        from ..results import membership_frame

        return membership_frame(self)

    def to_dict(self, per_sample: bool = True) -> dict:
        """JSON-safe summary; ``per_sample`` adds every member's id and score (``sample_id``,
        ``score``) and every non-member's (``holdout``)."""
        out = {
            "auc": self.auc.to_dict(),
            "tpr_at_fpr": {f"{f:g}": iv.to_dict() for f, iv in self.tpr.items()},
            "baseline": {"auc": 0.5, "tpr_at_fpr": {f"{f:g}": f for f in self.tpr}},
            "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
            "min_per_side": MIN_PER_SIDE,
            "confidence": self.confidence, "method": self.method, "notes": list(self.notes),
            "roc": {"fpr": self.roc_fpr, "tpr": self.roc_tpr},
        }
        if per_sample and self.member_scores is not None:
            # the members are the probe's samples, the non-members its holdout
            out["per_sample"] = {"sample_id": self.member_ids, "score": self.member_scores,
                                 "holdout": {"id": self.nonmember_ids,
                                             "score": self.nonmember_scores}}
        return jsonable(out)

    def tpr_line(self, fpr: float) -> str:
        """"TPR at 1% FPR: ... (random 1%)", or the "not resolved" marker."""
        return (f"TPR at {100 * fpr:g}% FPR: "
                f"{tpr_text(self.tpr[fpr].to_dict(), self.confidence, self.n_nonmembers)} "
                f"(random {100 * fpr:g}%)")

    def summary(self) -> str:
        lines = [f"AUC {interval_text(self.auc.to_dict(), self.confidence)} "
                 f"(random 0.5), {self.n_members} members vs {self.n_nonmembers} non-members"]
        lines += [self.tpr_line(f) for f in self.tpr]
        return "\n".join(lines + list(self.notes))

    def plot(self, ax=None):
        """ROC curve on log-log axes (low FPRs are what matters) with the random diagonal
        (:func:`memaudit.figures.roc_curve`); returns the Axes."""
        from ..figures import roc_curve

        return roc_curve(self.roc_fpr, self.roc_tpr, self.n_nonmembers, auc=self.auc.value,
                         target_fprs=tuple(self.tpr), ax=ax)


def few_items_warning(n_members: int, n_nonmembers: int) -> str | None:
    """The warning shown when a side has fewer than ``MIN_PER_SIDE`` items (None otherwise)."""
    if min(n_members, n_nonmembers) >= MIN_PER_SIDE:
        return None
    return (f"warning: only {n_members} members and {n_nonmembers} non-members evaluated (fewer "
            f"than {MIN_PER_SIDE} on a side): the AUC is loosely determined and its bootstrap "
            "interval unreliable (it under-covers, and collapses to a point at AUC 0 or 1); read "
            "the score interval, and evaluate more items")


def coarse_fpr_warning(fpr: float, n_nonmembers: int) -> str | None:
    """The warning shown when a resolved target FPR allows fewer than ``MIN_FALSE_POSITIVES``."""
    k = _fp_limit(fpr, n_nonmembers)
    if k >= MIN_FALSE_POSITIVES:
        return None
    need = int(np.ceil(MIN_FALSE_POSITIVES / fpr - 1e-9))
    return (f"warning: the TPR at {100 * fpr:g}% FPR rests on at most {k} false "
            f"positive{'s' if k > 1 else ''} among {n_nonmembers} non-members: its bootstrap "
            f"interval under-covers below {MIN_FALSE_POSITIVES} (measured 0.68 with 1); "
            f"{need:,} non-members allow {MIN_FALSE_POSITIVES}")


def membership_metrics(member_scores, nonmember_scores, *, fprs=DEFAULT_FPRS,
                       n_bootstrap: int = StatsConfig.n_bootstrap,
                       confidence: float = StatsConfig.confidence, seed=StatsConfig.seed,
                       member_ids=None, nonmember_ids=None) -> MembershipResult:
    """AUC and TPR at fixed FPRs of a membership attack, with stratified bootstrap intervals.

    Parameters
    ----------
    member_scores, nonmember_scores : array-like of float
        One attack score per item; higher means "member".
    fprs : tuple of float, default=(0.01, 0.001)
        Target false-positive rates. A target with ``fpr * n_nonmembers < 1`` is not resolved:
        its TPR is None, marked ``resolved: false``.
    n_bootstrap, confidence : int, float
        Defaults: :class:`memaudit.stats.StatsConfig`.
    seed : int or numpy.random.SeedSequence, default=StatsConfig.seed
        One stream drives the bootstrap: per block of resamples, member indices then non-member
        indices.
    member_ids, nonmember_ids : array-like, optional
        Names of the items, kept with their scores (default: positions).

    Returns
    -------
    MembershipResult
    """
    m = _scores(member_scores, "member_scores")
    n = _scores(nonmember_scores, "nonmember_scores")
    member_ids = check_ids(member_ids, m.size, "member_ids")
    nonmember_ids = check_ids(nonmember_ids, n.size, "nonmember_ids")
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_fraction(confidence, "confidence")
    fprs = tuple(check_fraction(f, "fpr") for f in fprs)
    resolved = [f for f in fprs if fpr_resolved(f, n.size)]
    limits = [_fp_limit(f, n.size) for f in resolved]
    _, tp, fp = _roc_counts(m, n)
    auc = float(_auc(tp, fp, m.size, n.size)[0])
    tp_at = {f: int(_tp_at_fpr(tp, fp, k)[0]) for f, k in zip(resolved, limits)}
    rng = np.random.default_rng(seed)
    boot_auc = np.empty(n_bootstrap)
    boot_tpr = {f: np.empty(n_bootstrap) for f in resolved}
    u = np.unique(np.r_[m, n]).size
    step = max(1, (1 << 21) // max(u + 1, m.size, n.size))  # bounded memory per block
    from .._progress import Progress

    with Progress(n_bootstrap, "bootstrap (membership AUC, TPR)", unit="resample") as bar:
        for b in range(0, n_bootstrap, step):
            c = min(step, n_bootstrap - b)
            idx_m = rng.integers(0, m.size, (c, m.size))
            idx_n = rng.integers(0, n.size, (c, n.size))
            a, t = _bootstrap_roc(m, n, idx_m, idx_n, limits)
            boot_auc[b : b + c] = a
            for f, v in zip(resolved, t):
                boot_tpr[f][b : b + c] = v
            bar.update(c)
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    lo, hi = np.percentile(boot_auc, q)
    method = f"stratified percentile bootstrap, {n_bootstrap} resamples, {seed_label(seed)}"
    tpr_iv = {}
    for f in fprs:
        common = dict(n=int(m.size), confidence=confidence, method=method, fpr=f,
                      n_nonmembers=int(n.size))
        if f not in tp_at:
            tpr_iv[f] = TprAtFpr(None, None, low=None, high=None, resolved=False, **common)
            continue
        tl, th = np.percentile(boot_tpr[f], q)
        wilson = wilson_interval(tp_at[f], m.size, confidence)
        tpr_iv[f] = TprAtFpr(tp_at[f] / m.size, tp_at[f], low=float(tl), high=float(th),
                             wilson=wilson, score_interval=wilson,
                             score_method="Wilson at the threshold, members only", **common)
    notes = [few_items_warning(m.size, n.size)]
    notes += [coarse_fpr_warning(f, n.size) for f in resolved]
    fpr_curve, tpr_curve, _ = roc_points(m, n)
    return MembershipResult(
        auc=Rate(auc, None, int(m.size + n.size), float(lo), float(hi), confidence, method,
                 score_interval=auc_score_interval(auc, m.size, n.size, confidence),
                 score_method="score interval"),
        tpr=tpr_iv, roc_fpr=fpr_curve, roc_tpr=tpr_curve,
        n_members=int(m.size), n_nonmembers=int(n.size), confidence=confidence, method=method,
        notes=tuple(x for x in notes if x is not None), member_scores=m, nonmember_scores=n,
        member_ids=member_ids, nonmember_ids=nonmember_ids)


ATTACKS = ("distance", "density")


class MembershipProbe(Probe):
    """A membership attack that needs only generated samples, evaluated with intervals.

    ``fit`` takes the model's **generated samples** (the reference of the sample-based attacks);
    ``score`` takes the **members** (training items) as ``samples`` and the **non-members**
    (held-out real items) as ``holdout``, scores both sides with the attack and reports
    :func:`membership_metrics`: the AUC and TPR at fixed FPRs with intervals, beside the random
    baseline. The non-members are the control that every membership figure needs, so ``holdout``
    is required. No threshold is chosen, so no calibration split is needed (for attacks with a
    setting to choose, see :func:`memaudit.probes.calibration.calibrated_attack`).

    Parameters
    ----------
    attack : {"distance", "density"}, default="distance"
        "distance": minus the distance to the k-th nearest generated sample (GAN-Leaks,
        :func:`~memaudit.probes.sample_attacks.distance_attack`); "density": the KDE log-density
        ratio p_gen / p_ref (DOMIAS style, :func:`~memaudit.probes.sample_attacks.density_ratio_attack`),
        which needs ``density_reference``.
    k : int, default=1
        Distance attack: which nearest generated sample.
    metric : {"l2", "cosine"}, default="l2"
        Distance attack.
    density_reference : array-like of shape (r, d), optional
        Density attack: real data that was not used in training and is neither a member nor a
        non-member being scored.
    n_components : int, optional
        Density attack: project onto this many principal components of ``density_reference``.
    bandwidth : float or (float, float), optional
        Density attack: kernel widths (default Scott's rule).
    fprs : tuple of float, default=(0.01, 0.001)
    n_bootstrap, confidence, seed : int, float, int
        Defaults: :class:`memaudit.stats.StatsConfig`. ``SeedSequence(seed).spawn(2)``: the first
        stream drives the bootstrap, the second the PCA of the density attack.
    progress : bool or None
    search_options : dict, optional
        Distance attack: :class:`memaudit.neighbors.NeighborIndex` options.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> members, nonmembers = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    >>> generated = members + 0.05 * rng.normal(size=members.shape)   # a model that copies
    >>> res = MembershipProbe().fit(generated).score(members, holdout=nonmembers)
    >>> res.auc.value > 0.99
    True
    """

    _fitted_attr = "generated_"

    def __init__(self, *, attack: str = "distance", k: int = 1, metric: str = "l2",
                 density_reference=None, n_components: int | None = None, bandwidth=None,
                 fprs=DEFAULT_FPRS, n_bootstrap: int = StatsConfig.n_bootstrap,
                 confidence: float = StatsConfig.confidence, seed: int = StatsConfig.seed,
                 progress=None, search_options: dict | None = None):
        self.attack = attack
        self.k = k
        self.metric = metric
        self.density_reference = density_reference
        self.n_components = n_components
        self.bandwidth = bandwidth
        self.fprs = fprs
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.seed = seed
        self.progress = progress
        self.search_options = search_options

    def fit(self, generated, ids=None) -> "MembershipProbe":
        """Keep the generated samples (the reference of the attack).

        Parameters
        ----------
        generated : array-like or numpy.memmap of shape (m, ...)
            Samples of the model.
        ids : array-like of shape (m,), optional
        """
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        check_positive_int(self.k, "k")
        check_positive_int(self.n_bootstrap, "n_bootstrap")
        check_fraction(self.confidence, "confidence")
        check_positive_int(self.seed, "seed", minimum=0)
        for f in self.fprs:
            check_fraction(f, "fpr")
        generated = as_2d_array(generated, "generated", min_rows=2)
        if self.attack == "distance" and self.k > generated.shape[0]:
            raise ValueError(f"k={self.k} but there are only {generated.shape[0]} generated "
                             "samples")
        if self.attack == "density":
            if self.density_reference is None:
                raise ValueError("attack='density' needs density_reference: real data that was "
                                 "not used in training and is not among the scored items")
            self.density_reference_ = as_2d_array(self.density_reference, "density_reference",
                                                  min_rows=2)
        self.generated_ = generated
        self.generated_ids_ = check_ids(ids, generated.shape[0], "generated ids")
        return self

    def _attack_scores(self, members, nonmembers, pca_seed):
        if self.attack == "distance":
            kw = dict(k=self.k, metric=self.metric, progress=self.progress,
                      **(self.search_options or {}))
            # each side on its own: a memory-mapped member set is streamed, never concatenated
            return (distance_attack(members, self.generated_, **kw),
                    distance_attack(nonmembers, self.generated_, **kw))
        m = as_2d_array(members, "members")
        both = np.concatenate([np.asarray(m), np.asarray(as_2d_array(nonmembers, "holdout"))])
        scores = density_ratio_attack(both, self.generated_, self.density_reference_,
                                      bandwidth=self.bandwidth, n_components=self.n_components,
                                      seed=pca_seed)
        return scores[: m.shape[0]], scores[m.shape[0]:]

    def score(self, samples, ids=None, *, holdout=None, holdout_ids=None) -> MembershipResult:
        """Score the members (``samples``) against the non-members (``holdout``).

        Parameters
        ----------
        samples : array-like of shape (n_members, ...)
            Training items whose membership the attack should detect.
        ids : array-like, optional
            Their names.
        holdout : array-like of shape (n_nonmembers, ...)
            Held-out real items (never trained on): required.
        holdout_ids : array-like, optional

        Returns
        -------
        MembershipResult
        """
        self._check_fitted()
        if holdout is None:
            raise ValueError("a membership attack is measured against non-members: pass "
                             "holdout= (held-out real items the model never saw)")
        boot, pca = spawn(self.seed, 2)
        ms, ns = self._attack_scores(samples, holdout, int(pca.generate_state(1)[0]))
        return membership_metrics(ms, ns, fprs=self.fprs, n_bootstrap=self.n_bootstrap,
                                  confidence=self.confidence, seed=boot, member_ids=ids,
                                  nonmember_ids=holdout_ids)
