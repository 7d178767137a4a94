"""Probes: pure array functions plus a small fit/score class each (scikit-learn style)."""

from .duplicates import DuplicateResult, find_copies, find_duplicates
from .membership import MembershipResult, membership_metrics
from .nn_ratio import DEFAULT_THRESHOLD, NNRatioProbe, NNRatioResult, nn_ratio

__all__ = ["NNRatioProbe", "NNRatioResult", "nn_ratio", "DEFAULT_THRESHOLD", "find_duplicates",
           "find_copies", "DuplicateResult", "membership_metrics", "MembershipResult"]
