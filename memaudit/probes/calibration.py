"""Calibration discipline for membership attacks: choose on one split, report on another.

An attack that picks its diffusion timestep, its number of steps or its decision threshold on the
very items it is scored on reports an optimistic number (the max over settings of noisy
estimates). Here every choice is made on a *calibration* split and the figures are computed on a
disjoint *evaluation* split:

1. :func:`calibration_split` splits members and non-members (stratified, seeded) into calibration
   and evaluation parts; the :class:`SplitManifest` (which ids, which seed) goes into the report.
2. :func:`calibrated_attack` takes one score array per attack setting (e.g. per timestep), picks
   the setting with the best calibration AUC, picks the threshold that maximises balanced accuracy
   on the calibration split, then reports on the evaluation split: AUC and TPR at fixed FPR with
   intervals (:func:`memaudit.probes.membership.membership_metrics`) and the balanced accuracy at
   the calibrated threshold, with a stratified bootstrap interval and, beside it, the MOVER
   interval built from the Wilson intervals of its TPR and TNR (informative at 0.5 and 1).

Choosing on the evaluation split is refused (``select_on="evaluation"`` raises) unless the caller
insists with ``allow_optimistic=True``, in which case the result is flagged ``optimistic`` and
says so in its notes and summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_fraction, check_ids, check_positive_int
from ..results import Rate, interval_text, jsonable
from ..stats import StatsConfig, mover_interval, seed_label, spawn, wilson_interval
from .membership import DEFAULT_FPRS, MembershipResult, _scores, membership_metrics

__all__ = ["SplitManifest", "calibration_split", "calibrated_attack", "CalibratedAttack",
           "balanced_accuracy", "best_threshold"]


@dataclass(frozen=True)
class SplitManifest:
    """Which members and non-members calibrate the attack and which evaluate it.

    Positions index the member and non-member score arrays; ids name the items. Calibration and
    evaluation parts must be disjoint (checked on construction).
    """

    calibration_members: np.ndarray
    calibration_nonmembers: np.ndarray
    evaluation_members: np.ndarray
    evaluation_nonmembers: np.ndarray
    member_ids: np.ndarray
    nonmember_ids: np.ndarray
    fraction: float
    seed: int | None

    def __post_init__(self):
        for side, cal, ev in (("members", self.calibration_members, self.evaluation_members),
                              ("non-members", self.calibration_nonmembers, self.evaluation_nonmembers)):
            both = np.intersect1d(cal, ev)
            if both.size:
                raise ValueError(f"the calibration and evaluation {side} overlap at positions "
                                 f"{both[:5].tolist()}{'...' if both.size > 5 else ''}: an attack "
                                 "tuned on the items it is scored on reports an optimistic figure")
            for name, part in (("calibration", cal), ("evaluation", ev)):
                if len(part) < 2:
                    raise ValueError(f"the {name} split has {len(part)} {side}; at least 2 are "
                                     "needed (give more items or another fraction)")

    def to_dict(self) -> dict:
        return jsonable({
            "fraction": self.fraction, "seed": self.seed,
            "calibration": {"members": self.member_ids[self.calibration_members],
                            "nonmembers": self.nonmember_ids[self.calibration_nonmembers]},
            "evaluation": {"members": self.member_ids[self.evaluation_members],
                           "nonmembers": self.nonmember_ids[self.evaluation_nonmembers]},
        })


def calibration_split(n_members: int, n_nonmembers: int, *, fraction: float = 0.5,
                      seed: int = StatsConfig.seed, member_ids=None,
                      nonmember_ids=None) -> SplitManifest:
    """A seeded, stratified split: ``fraction`` of each side calibrates, the rest evaluates."""
    check_fraction(fraction, "fraction", low_open=True)
    rng = np.random.default_rng(seed)
    parts = []
    for n in (n_members, n_nonmembers):
        check_positive_int(n, "number of items")
        perm = rng.permutation(n)
        k = int(round(fraction * n))
        parts.append((np.sort(perm[:k]), np.sort(perm[k:])))
    return SplitManifest(parts[0][0], parts[1][0], parts[0][1], parts[1][1],
                         check_ids(member_ids, n_members, "member_ids"),
                         check_ids(nonmember_ids, n_nonmembers, "nonmember_ids"), fraction, seed)


def balanced_accuracy(members, nonmembers, threshold: float) -> float:
    """(TPR + TNR) / 2 of the rule "member when score >= threshold"."""
    return 0.5 * (float(np.mean(members >= threshold)) + float(np.mean(nonmembers < threshold)))


def best_threshold(members, nonmembers) -> tuple[float, float]:
    """The threshold with the largest balanced accuracy (ties: the smallest), and that accuracy."""
    cands = np.unique(np.r_[members, nonmembers])
    cands = np.r_[cands, np.inf]
    m_sorted, n_sorted = np.sort(members), np.sort(nonmembers)
    tpr = 1 - np.searchsorted(m_sorted, cands, side="left") / m_sorted.size
    tnr = np.searchsorted(n_sorted, cands, side="left") / n_sorted.size
    bal = 0.5 * (tpr + tnr)
    i = int(np.argmax(bal))
    return float(cands[i]), float(bal[i])


@dataclass(frozen=True)
class CalibratedAttack:
    """An attack whose setting and threshold were chosen on the calibration split."""

    setting: object
    threshold: float
    calibration_auc: dict
    calibration_balanced_accuracy: float
    evaluation: MembershipResult
    balanced_accuracy: Rate
    split: SplitManifest
    optimistic: bool
    notes: tuple = ()

    def to_frame(self):
        """One row per evaluation item: id, member, score (the calibrated setting's) (pandas)."""
        return self.evaluation.to_frame()

    def to_dict(self, per_sample: bool = True) -> dict:
        """JSON-safe summary; ``per_sample`` adds the evaluated items' scores (``evaluation``)."""
        return jsonable({
            "setting": self.setting, "threshold": self.threshold,
            "calibration_auc": {str(k): v for k, v in self.calibration_auc.items()},
            "calibration_balanced_accuracy": self.calibration_balanced_accuracy,
            "evaluation": self.evaluation.to_dict(per_sample=per_sample),
            "balanced_accuracy": self.balanced_accuracy.to_dict(),
            "split": self.split.to_dict(), "optimistic": self.optimistic, "notes": list(self.notes),
        })

    def plot(self, ax=None):
        """The evaluation split's ROC (:meth:`MembershipResult.plot`); returns the Axes."""
        return self.evaluation.plot(ax=ax)

    def summary(self) -> str:
        what = (f"threshold {self.threshold:.4g}" if self.setting is None else
                f"setting {self.setting!r} and threshold {self.threshold:.4g}")
        where = "THE EVALUATION SPLIT (optimistic)" if self.optimistic else "the calibration split"
        head = f"{what} chosen on {where}"
        ba = interval_text(self.balanced_accuracy.to_dict(), self.evaluation.confidence)
        return "\n".join([head, self.evaluation.summary(),
                          f"balanced accuracy at the calibrated threshold {ba} (random 0.5)"]
                         + list(self.notes))


def _balanced_accuracy_interval(members, nonmembers, threshold, n_bootstrap, confidence,
                                seed) -> Rate:
    """Balanced accuracy at a fixed threshold: a stratified bootstrap and, beside it, the MOVER
    interval of (TPR + TNR) / 2 from the two Wilson intervals (informative at 0.5 and 1).

    At a fixed threshold a stratified resample's true positives are Binomial(m, TPR) and its true
    negatives Binomial(n, TNR), so the resamples are drawn from those binomials (the same law as
    resampling the scores).
    """
    m, n = members.size, nonmembers.size
    tp, tn = int((members >= threshold).sum()), int((nonmembers < threshold).sum())
    rng = np.random.default_rng(seed)
    boot = 0.5 * (rng.binomial(m, tp / m, n_bootstrap) / m
                  + rng.binomial(n, tn / n, n_bootstrap) / n)
    lo, hi = np.percentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)])
    score = mover_interval((tp / m, tn / n), (wilson_interval(tp, m, confidence),
                                              wilson_interval(tn, n, confidence)), (0.5, 0.5))
    return Rate(0.5 * (tp / m + tn / n), None, m + n, float(lo), float(hi), confidence,
                f"stratified percentile bootstrap, {n_bootstrap} resamples, {seed_label(seed)}",
                score_interval=score, score_method="Wilson, MOVER")


def _by_setting(scores, n, name):
    if isinstance(scores, dict):
        if not scores:
            raise ValueError(f"{name}: no attack settings given")
        out = {k: _scores(v, f"{name}[{k!r}]") for k, v in scores.items()}
    else:
        out = {None: _scores(scores, name)}
    for k, v in out.items():
        if v.size != n:
            raise ValueError(f"{name}[{k!r}] has {v.size} scores but the split has {n} items")
    return out


def calibrated_attack(member_scores, nonmember_scores, split: SplitManifest, *,
                      select_on: str = "calibration", allow_optimistic: bool = False,
                      fprs=DEFAULT_FPRS, n_bootstrap: int = StatsConfig.n_bootstrap,
                      confidence: float = StatsConfig.confidence,
                      seed: int = StatsConfig.seed) -> CalibratedAttack:
    """Choose the attack setting and threshold on the calibration split; report on evaluation.

    Parameters
    ----------
    member_scores, nonmember_scores : array-like, or dict of setting -> array-like
        One score per member / non-member (higher = member), for one setting or for several
        (e.g. ``{t: -loss_at_t}`` over diffusion timesteps). Arrays are indexed by the positions in
        ``split``.
    split : SplitManifest
    select_on : {"calibration", "evaluation"}, default="calibration"
        Where the setting and the threshold are chosen. "evaluation" is refused unless
        ``allow_optimistic=True``; the result is then flagged ``optimistic``.
    fprs, n_bootstrap, confidence
        As in :func:`memaudit.probes.membership.membership_metrics`.
    seed : int, default=StatsConfig.seed
        ``SeedSequence(seed).spawn(2)``: the first stream drives the bootstrap of the evaluation
        AUC and TPRs, the second that of the balanced accuracy. The split is drawn beforehand by
        :func:`calibration_split` (``default_rng(seed)`` of its own seed).

    Returns
    -------
    CalibratedAttack
    """
    from sklearn.metrics import roc_auc_score

    if select_on not in ("calibration", "evaluation"):
        raise ValueError(f"select_on must be 'calibration' or 'evaluation', got {select_on!r}")
    if select_on == "evaluation" and not allow_optimistic:
        raise ValueError("choosing the attack's setting or threshold on the evaluation split "
                         "reports an optimistic figure; choose on the calibration split, or pass "
                         "allow_optimistic=True to compute it flagged as optimistic")
    n_m, n_n = len(split.member_ids), len(split.nonmember_ids)
    ms = _by_setting(member_scores, n_m, "member_scores")
    ns = _by_setting(nonmember_scores, n_n, "nonmember_scores")
    if ms.keys() != ns.keys():
        raise ValueError("member_scores and nonmember_scores must have the same settings")
    cm, cn = (split.calibration_members, split.calibration_nonmembers)
    em, en = (split.evaluation_members, split.evaluation_nonmembers)
    if select_on == "evaluation":
        cm, cn = em, en
    y = np.r_[np.ones(len(cm)), np.zeros(len(cn))]
    cal_auc = {k: float(roc_auc_score(y, np.r_[ms[k][cm], ns[k][cn]])) for k in ms}
    setting = max(cal_auc, key=lambda k: (cal_auc[k], -list(ms).index(k)))
    thr, cal_bal = best_threshold(ms[setting][cm], ns[setting][cn])
    ev_m, ev_n = ms[setting][em], ns[setting][en]
    # two independent streams: the bootstrap of the evaluation figures, then that of the
    # balanced accuracy (the split itself was drawn by calibration_split from its own seed)
    metrics_stream, accuracy_stream = spawn(seed, 2)
    evaluation = membership_metrics(ev_m, ev_n, fprs=fprs, n_bootstrap=n_bootstrap,
                                    confidence=confidence, seed=metrics_stream)
    balanced = _balanced_accuracy_interval(ev_m, ev_n, thr, n_bootstrap, confidence,
                                           accuracy_stream)
    notes = ()
    if select_on == "evaluation":
        notes = ("OPTIMISTIC: the setting and the threshold were chosen on the evaluated items; "
                 "these figures overstate what an attacker achieves on new items",)
    return CalibratedAttack(
        setting=setting, threshold=thr, calibration_auc=cal_auc,
        calibration_balanced_accuracy=cal_bal, evaluation=evaluation,
        balanced_accuracy=balanced, split=split, optimistic=select_on == "evaluation",
        notes=notes)
