"""The one gate every command applies: fail when a figure is above a level, and never pass blind.

A gate is checked twice: when the run starts (:meth:`Gate.check`: the level is a number in
[0, 1], the gated figure exists for this run, e.g. an excess over control needs held-out data)
and when the figure is known (:meth:`Gate.apply`). A figure that could not be computed (None or
NaN) fails the gate: a verdict is never a PASS on a number nobody saw.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["Gate", "GATES", "verdict_line"]

GATES = ("rate", "excess")


@dataclass(frozen=True)
class Gate:
    """Fail a run when its gated figure is above ``fail_above``.

    Parameters
    ----------
    fail_above : float or None
        The level, in [0, 1]; None means no gate (every run passes).
    gate : {"rate", "excess"}, default="rate"
        The figure read: the probe's rate, or its excess over the held-out control.
    """

    fail_above: float | None = None
    gate: str = "rate"

    def check(self, *, has_control: bool, command: str = "audit",
              excess_needs: str = "a holdout set (--holdout)") -> "Gate":
        """Refuse, before any work, a level or a gate this run cannot apply (one-line errors)."""
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.fail_above is None:
            return self
        v = self.fail_above
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"fail_above (--fail-above) must be a number in [0, 1], got {v!r}")
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"fail_above (--fail-above) must lie in [0, 1] (a fraction: 0.01 = "
                             f"1%), got {v}")
        if self.gate == "excess" and not has_control:
            raise ValueError(f"{command}: gate='excess' (--gate excess) needs {excess_needs}, the "
                             "control the excess is measured over")
        return self

    @property
    def active(self) -> bool:
        return self.fail_above is not None

    def apply(self, figure: str, value) -> dict | None:
        """The gate's record for the report: figure, value, level, passed (None when no gate).

        A missing or NaN value fails the gate, with a reason.
        """
        if self.fail_above is None:
            return None
        ok_value = value is not None and math.isfinite(float(value))
        record = {"figure": figure, "value": float(value) if ok_value else None,
                  "fail_above": float(self.fail_above),
                  "passed": bool(ok_value and float(value) <= self.fail_above)}
        if not ok_value:
            record["reason"] = "the gated figure could not be computed; a gate never passes blind"
        return record


def verdict_line(record: dict | None) -> str | None:
    """``gate: PASS (nn_ratio.rate = 6.00%, fail above 5.00%)`` for the text summary."""
    if record is None:
        return None
    verdict = "PASS" if record["passed"] else "FAIL"
    auc = record["figure"].endswith("auc")

    def fmt(v):
        return f"{v:.4f}" if auc else f"{100 * v:.2f}%"

    value = "not computed" if record["value"] is None else fmt(record["value"])
    return f"gate: {verdict} ({record['figure']} = {value}, fail above {fmt(record['fail_above'])})"
