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

from .._validation import check_fraction, check_positive_int
from ..results import jsonable
from ..stats import (_auc, _fp_limit, _roc_counts, _tp_at_fpr, auc_score_interval, fpr_resolved,
                     roc_points, seed_label, tpr_at_fpr, wilson_interval)

__all__ = ["MembershipResult", "membership_metrics", "tpr_at_fpr", "DEFAULT_FPRS", "MIN_PER_SIDE",
           "MIN_FALSE_POSITIVES", "Interval", "TprAtFpr"]

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
class Interval:
    """A statistic with its bootstrap interval (``low``, ``high``) and a closed-form ``score``
    interval that stays informative where the bootstrap collapses (at 0 and 1).

    ``lead`` names the interval the text and HTML show first: "score" where the closed form
    covers at least as well as the bootstrap (the AUC's score interval, measured; the balanced
    accuracy at a fixed threshold, a function of two binomials), "bootstrap" where the closed form
    leaves out a source of noise (the TPR's Wilson interval holds the threshold fixed).
    """

    value: float | None
    low: float | None
    high: float | None
    score: tuple | None = None
    score_method: str | None = None
    lead: str = "score"

    @property
    def collapsed(self) -> bool:
        """The bootstrap interval is a single point (every resample gave the same value)."""
        return self.low is not None and self.low == self.high

    def to_dict(self) -> dict:
        d = {"value": self.value, "low": self.low, "high": self.high,
             "bootstrap_collapsed": self.collapsed}
        if self.score is not None:
            d.update(score_interval=list(self.score), score_method=self.score_method,
                     lead=self.lead)
        return jsonable(d)


@dataclass(frozen=True)
class TprAtFpr(Interval):
    """TPR at a target FPR: ``value``/``low``/``high`` are None when ``resolved`` is False."""

    lead: str = "bootstrap"
    fpr: float = 0.0
    count: int | None = None
    n_members: int = 0
    n_nonmembers: int = 0
    resolved: bool = True

    @property
    def min_resolvable_fpr(self) -> float:
        return 1.0 / self.n_nonmembers

    @property
    def false_positives_allowed(self) -> int:
        """Non-members the target FPR lets the attacker flag: ``floor(fpr * n_nonmembers)``."""
        return _fp_limit(self.fpr, self.n_nonmembers)

    def to_dict(self) -> dict:
        return jsonable({**super().to_dict(), "resolved": self.resolved,
                         "min_resolvable_fpr": self.min_resolvable_fpr,
                         "count": self.count, "n": self.n_members,
                         "false_positives_allowed": self.false_positives_allowed})


def interval_text(d: dict, confidence: float, pct: bool = False) -> str:
    """``Interval.to_dict()`` as text, in the format of a rate: the value (with its count), the
    leading interval, then the other one in parentheses; a collapsed bootstrap is marked.

    ``"1.0000, 95% CI [0.5823, 1.0000] (score interval; bootstrap [1.0000, 1.0000], collapsed to
    a point)"``.
    """
    f = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.4f}")
    head = f(d["value"])
    if d.get("count") is not None:
        head += f" ({d['count']}/{d['n']} members)"
    level = f"{int(round(100 * confidence))}% CI"
    boot = f"[{f(d['low'])}, {f(d['high'])}]"
    mark = ", collapsed to a point" if d.get("bootstrap_collapsed") else ""
    if d.get("score_interval") is None:
        return f"{head}, {level} {boot} (bootstrap{mark})"
    score = f"[{f(d['score_interval'][0])}, {f(d['score_interval'][1])}]"
    if d.get("lead") == "bootstrap":
        mark = mark and ", collapsed to a point: unreliable here"
        return f"{head}, {level} {boot} (bootstrap{mark}; {d['score_method']} {score})"
    return f"{head}, {level} {score} ({d['score_method']}; bootstrap {boot}{mark})"


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
    """What an attacker achieves, with intervals and the random baseline."""

    auc: Interval
    tpr: dict  # fpr -> TprAtFpr
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    n_members: int
    n_nonmembers: int
    confidence: float
    method: str
    notes: tuple = ()

    def to_dict(self) -> dict:
        return jsonable({
            "auc": self.auc.to_dict(),
            "tpr_at_fpr": {f"{f:g}": iv.to_dict() for f, iv in self.tpr.items()},
            "baseline": {"auc": 0.5, "tpr_at_fpr": {f"{f:g}": f for f in self.tpr}},
            "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
            "min_per_side": MIN_PER_SIDE,
            "confidence": self.confidence, "method": self.method, "notes": list(self.notes),
            "roc": {"fpr": self.roc_fpr, "tpr": self.roc_tpr},
        })

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
                       n_bootstrap: int = 1000, confidence: float = 0.95,
                       seed=0) -> MembershipResult:
    """AUC and TPR at fixed FPRs of a membership attack, with stratified bootstrap intervals.

    Parameters
    ----------
    member_scores, nonmember_scores : array-like of float
        One attack score per item; higher means "member".
    fprs : tuple of float, default=(0.01, 0.001)
        Target false-positive rates. A target with ``fpr * n_nonmembers < 1`` is not resolved:
        its TPR is None, marked ``resolved: false``.
    n_bootstrap : int, default=1000
    confidence : float, default=0.95
    seed : int or numpy.random.SeedSequence, default=0
        One stream drives the bootstrap: per block of resamples, member indices then non-member
        indices.

    Returns
    -------
    MembershipResult
    """
    m = _scores(member_scores, "member_scores")
    n = _scores(nonmember_scores, "nonmember_scores")
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
    for b in range(0, n_bootstrap, step):
        c = min(step, n_bootstrap - b)
        idx_m = rng.integers(0, m.size, (c, m.size))
        idx_n = rng.integers(0, n.size, (c, n.size))
        a, t = _bootstrap_roc(m, n, idx_m, idx_n, limits)
        boot_auc[b : b + c] = a
        for f, v in zip(resolved, t):
            boot_tpr[f][b : b + c] = v
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    lo, hi = np.percentile(boot_auc, q)
    tpr_iv = {}
    for f in fprs:
        common = dict(fpr=f, n_members=int(m.size), n_nonmembers=int(n.size))
        if f not in tp_at:
            tpr_iv[f] = TprAtFpr(None, None, None, resolved=False, **common)
            continue
        tl, th = np.percentile(boot_tpr[f], q)
        tpr_iv[f] = TprAtFpr(tp_at[f] / m.size, float(tl), float(th),
                             score=wilson_interval(tp_at[f], m.size, confidence),
                             score_method="Wilson at the threshold, members only",
                             count=tp_at[f], **common)
    notes = [few_items_warning(m.size, n.size)]
    notes += [coarse_fpr_warning(f, n.size) for f in resolved]
    fpr_curve, tpr_curve, _ = roc_points(m, n)
    return MembershipResult(
        auc=Interval(auc, float(lo), float(hi),
                     score=auc_score_interval(auc, m.size, n.size, confidence),
                     score_method="score interval"),
        tpr=tpr_iv, roc_fpr=fpr_curve, roc_tpr=tpr_curve,
        n_members=int(m.size), n_nonmembers=int(n.size), confidence=confidence,
        method=f"stratified percentile bootstrap, {n_bootstrap} resamples, {seed_label(seed)}",
        notes=tuple(x for x in notes if x is not None))
