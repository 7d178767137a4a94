"""Membership inference statistics on attack scores (any model, any attack).

Given one score per item for members (training items) and non-members (held-out items), where a
higher score means "more likely a member" (pass the negative loss for loss-based attacks), report
what an attacker achieves, with intervals:

- ROC AUC (scikit-learn's ``roc_auc_score``), 0.5 for an attacker who cannot tell;
- TPR at 1% and 0.1% FPR (Carlini et al. 2022, "Membership inference attacks from first
  principles"): the largest true-positive rate among thresholds whose false-positive rate is at most
  the target, read off scikit-learn's ``roc_curve``;
- each with a seeded, stratified percentile bootstrap (members and non-members resampled
  separately), and the random baseline (AUC 0.5, TPR at x% FPR = x%).

Thresholds chosen on the evaluated scores flatter the attacker; the calibration-split discipline of
the diffusion attacks (which pick a timestep) lives with those attacks. The AUC and the TPR at a
fixed FPR need no chosen threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_fraction, check_positive_int
from ..results import jsonable

__all__ = ["MembershipResult", "membership_metrics", "tpr_at_fpr", "DEFAULT_FPRS"]

DEFAULT_FPRS = (0.01, 0.001)


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


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """Largest TPR over thresholds whose FPR is at most ``fpr`` (scikit-learn's ROC points)."""
    from sklearn.metrics import roc_curve

    y = np.r_[np.ones(members.size), np.zeros(nonmembers.size)]
    f, t, _ = roc_curve(y, np.r_[members, nonmembers])
    ok = f <= fpr + 1e-15
    return float(t[ok].max()) if ok.any() else 0.0


@dataclass(frozen=True)
class Interval:
    """A statistic with its bootstrap interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class MembershipResult:
    """What an attacker achieves, with intervals and the random baseline."""

    auc: Interval
    tpr: dict  # fpr -> Interval
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
            "confidence": self.confidence, "method": self.method, "notes": list(self.notes),
            "roc": {"fpr": self.roc_fpr, "tpr": self.roc_tpr},
        })

    def summary(self) -> str:
        pct = int(round(100 * self.confidence))
        lines = [f"AUC {self.auc.value:.4f} [{self.auc.low:.4f}, {self.auc.high:.4f}] ({pct}% CI; "
                 f"random 0.5), {self.n_members} members vs {self.n_nonmembers} non-members"]
        for f, iv in self.tpr.items():
            lines.append(f"TPR at {100 * f:g}% FPR: {100 * iv.value:.2f}% "
                         f"[{100 * iv.low:.2f}%, {100 * iv.high:.2f}%] (random {100 * f:g}%)")
        return "\n".join(lines + list(self.notes))

    def plot(self, ax=None):
        """ROC curve on log-log axes (low FPRs are what matters), with the diagonal."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plotting needs matplotlib: pip install 'memaudit[plot]'") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4.5))
        floor = 1 / max(self.n_nonmembers, 1) / 2
        ax.loglog(np.maximum(self.roc_fpr, floor), np.maximum(self.roc_tpr, floor),
                  label=f"attack (AUC {self.auc.value:.3f})")
        ax.loglog([floor, 1], [floor, 1], "k--", lw=1, label="random")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=8)
        return ax


def membership_metrics(member_scores, nonmember_scores, *, fprs=DEFAULT_FPRS,
                       n_bootstrap: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> MembershipResult:
    """AUC and TPR at fixed FPRs of a membership attack, with stratified bootstrap intervals.

    Parameters
    ----------
    member_scores, nonmember_scores : array-like of float
        One attack score per item; higher means "member".
    fprs : tuple of float, default=(0.01, 0.001)
    n_bootstrap : int, default=1000
    confidence : float, default=0.95
    seed : int, default=0

    Returns
    -------
    MembershipResult
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    m = _scores(member_scores, "member_scores")
    n = _scores(nonmember_scores, "nonmember_scores")
    check_positive_int(n_bootstrap, "n_bootstrap")
    check_fraction(confidence, "confidence")
    fprs = tuple(check_fraction(f, "fpr") for f in fprs)
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    s = np.r_[m, n]
    auc = float(roc_auc_score(y, s))
    tprs = {f: tpr_at_fpr(m, n, f) for f in fprs}
    rng = np.random.default_rng(seed)
    boot_auc = np.empty(n_bootstrap)
    boot_tpr = {f: np.empty(n_bootstrap) for f in fprs}
    for b in range(n_bootstrap):
        mb = m[rng.integers(0, m.size, m.size)]
        nb = n[rng.integers(0, n.size, n.size)]
        boot_auc[b] = roc_auc_score(y, np.r_[mb, nb])
        for f in fprs:
            boot_tpr[f][b] = tpr_at_fpr(mb, nb, f)
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    lo, hi = np.percentile(boot_auc, q)
    tpr_iv = {}
    for f in fprs:
        tl, th = np.percentile(boot_tpr[f], q)
        tpr_iv[f] = Interval(tprs[f], float(tl), float(th))
    notes = tuple(
        f"note: {n.size} non-members cannot resolve an FPR of {100 * f:g}% (fewer than {int(np.ceil(1 / f))}); "
        "the TPR there is read at a false-positive rate of 0" for f in fprs if n.size * f < 1)
    fpr_curve, tpr_curve, _ = roc_curve(y, s)
    return MembershipResult(
        auc=Interval(auc, float(lo), float(hi)), tpr=tpr_iv, roc_fpr=fpr_curve, roc_tpr=tpr_curve,
        n_members=int(m.size), n_nonmembers=int(n.size), confidence=confidence,
        method=f"stratified percentile bootstrap, {n_bootstrap} resamples, seed {seed}", notes=notes)
