"""Typed results: the one interval type (:class:`Rate`), its text formats, and ``jsonable``.

Every probe result is a frozen dataclass whose ``to_dict(per_sample=True)`` is JSON-safe (through
:func:`jsonable`); every figure with an interval in it is a :class:`Rate`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["Rate", "jsonable", "rate_text", "interval_text", "nn_ratio_frame", "duplicates_frame",
           "copies_frame", "subsequence_frame", "membership_frame"]


def jsonable(value):
    """Convert numpy scalars and arrays (recursively) into plain JSON types; NaN/Inf become None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


@dataclass(frozen=True)
class Rate:
    """A statistic with its confidence intervals: a fraction of items, a difference of two
    fractions, an AUC, a TPR at a fixed FPR or a balanced accuracy. The one interval type.

    Attributes
    ----------
    value : float or None
        The point estimate (count / n, a difference of two rates, an AUC...); None when the
        statistic cannot be resolved (a TPR at an FPR below 1 / n_nonmembers).
    count : int or None
        Flagged items (None for a difference, an AUC or a balanced accuracy).
    n : int
        Items the statistic is over.
    low, high : float or None
        Percentile bootstrap interval at ``confidence``.
    confidence : float
    method : str
        How the bootstrap was computed (resamples, seed).
    wilson : tuple of float or None
        Wilson score interval of a proportion (closed form; None for a difference or a clustered
        rate).
    score_interval : tuple of float or None
        The closed-form interval that stays informative at 0 and n: Wilson for a proportion (equal
        to ``wilson``), Newcombe's hybrid score interval for a difference, Wilson at the effective
        number of clusters for a clustered rate, the Hanley-McNeil score interval for an AUC.
    score_method : str or None
        Its name ("Wilson", "Newcombe hybrid score", "Wilson on 12 effective clusters").
    lead : {"score", "bootstrap"}
        The interval shown first: "score" where the closed form covers at least as well as the
        bootstrap, "bootstrap" where the closed form leaves out a source of noise (the Wilson
        interval of a TPR holds the threshold fixed).
    """

    value: float | None
    count: int | None
    n: int
    low: float | None
    high: float | None
    confidence: float
    method: str
    wilson: tuple[float, float] | None = None
    score_interval: tuple[float, float] | None = None
    score_method: str | None = None
    lead: str = "score"

    @property
    def collapsed(self) -> bool:
        """The bootstrap interval is a single point (every resample gave the same value)."""
        return self.low is not None and self.low == self.high

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["bootstrap_collapsed"] = self.collapsed
        return jsonable(d)

    def __str__(self) -> str:
        head, tail = rate_text(self.to_dict())
        return f"{head}, {tail}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def rate_text(d: dict) -> tuple[str, str]:
    """The one text format of a rate (``Rate.to_dict()``), in the summary and in the HTML.

    Returns ``(head, tail)``: ``"0.00% (0/50)"`` and ``"95% CI [0.00%, 7.13%] (Wilson; bootstrap
    [0.00%, 0.00%])"``. The closed-form score interval comes first because it stays informative at
    0 and n, where the percentile bootstrap collapses to a point; the bootstrap follows. A rate
    without a score interval shows its bootstrap alone, named as such.
    """
    pct = int(round(100 * d["confidence"]))
    head = _pct(d["value"])
    if d.get("count") is not None:
        head += f" ({d['count']}/{d['n']})"
    boot = f"[{_pct(d['low'])}, {_pct(d['high'])}]"
    score = d.get("score_interval")
    if score is None:
        return head, f"{pct}% CI {boot} (bootstrap)"
    return head, (f"{pct}% CI [{_pct(score[0])}, {_pct(score[1])}] "
                  f"({d.get('score_method') or 'score'}; bootstrap {boot})")


def interval_text(d: dict, confidence: float, pct: bool = False) -> str:
    """A statistic's ``Rate.to_dict()`` as text, for figures that are not plain rates (an AUC, a
    TPR, a balanced accuracy): the value (with its count), the leading interval, then the other
    one in parentheses; a collapsed bootstrap is marked.

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


# ----------------------------------------------------------------------------- per-item tables
def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_frame() needs pandas: pip install 'memaudit[pandas]'") from None
    return pd


def _ids(values) -> list:
    """Ids as plain Python values (numpy strings and integers unwrapped)."""
    return [v.item() if isinstance(v, np.generic) else v for v in np.asarray(values).tolist()]


def nn_ratio_frame(r):
    """One row per generated sample of an nn-ratio result (``NNRatioResult.to_frame``).

    Columns: ``sample_id``, ``d1``, ``d2``, ``ratio``, ``nn_index`` / ``nn_id`` (the nearest
    training item), ``nn2_index`` (the second), ``memorized`` (ratio below the threshold) and,
    when the Carlini et al. 2023 criterion was computed, ``carlini_score`` and
    ``carlini_memorized``. Rows are in sample order; values are the result's arrays unchanged.
    """
    pd = _pandas()
    cols = {"sample_id": _ids(r.sample_ids), "d1": np.asarray(r.d1), "d2": np.asarray(r.d2),
            "ratio": np.asarray(r.ratio), "nn_index": np.asarray(r.nn_index),
            "nn_id": _ids(r.nn_id), "nn2_index": np.asarray(r.nn2_index),
            "memorized": np.asarray(r.memorized, dtype=bool)}
    if r.carlini_score is not None:
        cols["carlini_score"] = np.asarray(r.carlini_score)
        cols["carlini_memorized"] = np.asarray(r.carlini_memorized, dtype=bool)
    return pd.DataFrame(cols)


def duplicates_frame(r):
    """One row per item of a duplicates result (``DuplicateResult.to_frame``).

    Within one set: ``item`` (position), ``id``, ``group`` (index into ``r.groups``, -1 when the
    item is in no group) and ``group_size``. Across sets (samples against training items): one
    row per query item with ``item``, ``id``, ``copied`` (in some matched pair), ``match_index`` /
    ``match_id`` / ``score`` of its best match (-1, None, NaN without one) and ``group``.
    """
    pd = _pandas()
    n = int(r.n_items)
    group = np.full(n, -1, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    key = "queries" if r.cross else "members"
    for g, members in enumerate(r.groups):
        pos = np.asarray(members[key], dtype=np.int64)
        group[pos] = g
        size[pos] = len(pos) + (len(members.get("reference", ())) if r.cross else 0)
    cols = {"item": np.arange(n), "id": _ids(r.ids)}
    if not r.cross:
        cols.update(group=group, group_size=size)
        return pd.DataFrame(cols)
    pairs = np.asarray(r.pairs, dtype=np.int64).reshape(-1, 2)
    best = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan)
    q, first = np.unique(pairs[:, 0], return_index=True)  # pairs come best first
    best[q] = pairs[first, 1]
    score[q] = np.asarray(r.scores, dtype=np.float64)[first]
    ref = _ids(r.reference_ids) if r.reference_ids is not None else None
    cols.update(copied=best >= 0, match_index=best,
                match_id=[None if b < 0 or ref is None else ref[b] for b in best],
                score=score, group=group)
    return pd.DataFrame(cols)


def copies_frame(r):
    """A copy-rate result (samples against training items, beside a held-out control) as one
    table: the samples' rows of :func:`duplicates_frame` with ``set = "samples"``, then the
    control's with ``set = "holdout"``."""
    pd = _pandas()
    frames = [duplicates_frame(r.samples).assign(set="samples")]
    if r.control is not None:
        frames.append(duplicates_frame(r.control).assign(set="holdout"))
    return pd.concat(frames, ignore_index=True)


def subsequence_frame(r):
    """One row per generated window (``SubsequenceResult.to_frame``): ``query_id``,
    ``query_series``, ``query_offset``, ``d1``, ``d2``, ``ratio``, ``match_id``,
    ``match_series``, ``match_offset``, ``memorized``, ``evaluable`` (and ``matched`` when a
    maximum distance was set)."""
    pd = _pandas()
    cols = {"query_id": _ids(r.query_ids), "query_series": np.asarray(r.query_series),
            "query_offset": np.asarray(r.query_offset), "d1": np.asarray(r.d1),
            "d2": np.asarray(r.d2), "ratio": np.asarray(r.ratio), "match_id": _ids(r.match_id),
            "match_series": np.asarray(r.match_series), "match_offset": np.asarray(r.match_offset),
            "memorized": np.asarray(r.memorized, dtype=bool),
            "evaluable": np.asarray(r.evaluable, dtype=bool)}
    if r.matched is not None:
        cols["matched"] = np.asarray(r.matched, dtype=bool)
    return pd.DataFrame(cols)


def membership_frame(r):
    """One row per scored item of a membership result (``MembershipResult.to_frame``): ``id``,
    ``member`` (True for members) and ``score`` (higher means "member"), members first."""
    pd = _pandas()
    if r.member_scores is None or r.nonmember_scores is None:
        raise ValueError("this membership result kept no per-item scores")
    m, n = np.asarray(r.member_scores), np.asarray(r.nonmember_scores)
    mid = _ids(r.member_ids) if r.member_ids is not None else list(range(m.size))
    nid = _ids(r.nonmember_ids) if r.nonmember_ids is not None else list(range(n.size))
    return pd.DataFrame({"id": mid + nid, "member": np.r_[np.ones(m.size, bool), np.zeros(n.size, bool)],
                         "score": np.r_[m, n]})
