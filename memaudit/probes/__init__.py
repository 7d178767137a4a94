"""Probes: pure array functions plus a small fit/score class each (scikit-learn style)."""

from .nn_ratio import DEFAULT_THRESHOLD, NNRatioProbe, NNRatioResult, nn_ratio

__all__ = ["NNRatioProbe", "NNRatioResult", "nn_ratio", "DEFAULT_THRESHOLD"]
