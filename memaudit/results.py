"""Typed results: frozen dataclasses with a JSON-safe ``to_dict()`` and stable key names."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["Rate", "jsonable", "rate_text"]


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
    """A fraction of items with its confidence interval.

    Attributes
    ----------
    value : float
        The point estimate (count / n, or a difference of two rates).
    count : int or None
        Flagged items (None for a difference).
    n : int
        Items the rate is over.
    low, high : float
        Bootstrap interval at ``confidence``.
    confidence : float
    method : str
        How the interval was computed (resamples, seed).
    wilson : tuple of float or None
        Wilson score interval of a proportion (closed form; None for a difference or a clustered
        rate).
    score_interval : tuple of float or None
        The closed-form interval that stays informative at 0 and n, shown first: Wilson for a
        proportion (equal to ``wilson``), Newcombe's hybrid score interval for a difference,
        Wilson at the effective number of clusters for a clustered rate.
    score_method : str or None
        Its name ("Wilson", "Newcombe hybrid score", "Wilson on 12 effective clusters").
    """

    value: float
    count: int | None
    n: int
    low: float
    high: float
    confidence: float
    method: str
    wilson: tuple[float, float] | None = None
    score_interval: tuple[float, float] | None = None
    score_method: str | None = None

    def to_dict(self) -> dict:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})

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
