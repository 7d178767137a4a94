"""Typed results: frozen dataclasses with a JSON-safe ``to_dict()`` and stable key names."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["Rate", "jsonable"]


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
        Wilson score interval (closed form); unlike the bootstrap it stays informative at 0 or n.
    """

    value: float
    count: int | None
    n: int
    low: float
    high: float
    confidence: float
    method: str
    wilson: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    def __str__(self) -> str:
        pct = int(round(100 * self.confidence))
        head = f"{100 * self.value:.2f}%"
        if self.count is not None:
            head += f" ({self.count}/{self.n})"
        return f"{head}, {pct}% CI [{100 * self.low:.2f}%, {100 * self.high:.2f}%]"
