"""Power-law fits of the scaling studies (tau_mem against n, rise times against psi_n, E_score)."""

from __future__ import annotations

import numpy as np

__all__ = ["fit_exponent"]


def fit_exponent(x, y) -> tuple[float, float]:
    """Slope and intercept of log y against log x (least squares): y ~ exp(intercept) x^slope.

    Points whose y is not finite (a run that never crossed the level) are left out; with fewer
    than two distinct x left the fit is undefined and both values are NaN.

    Parameters
    ----------
    x, y : array_like
        Positive abscissae (n, psi_n) and values (times, scores), of the same length.

    Returns
    -------
    (float, float)
        The exponent and the intercept of the log-log line.

    Examples
    --------
    >>> slope, icpt = fit_exponent([1, 2, 4], [3, 6, 12])
    >>> round(slope, 6), round(float(np.exp(icpt)), 6)
    (1.0, 3.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y)
    if np.unique(x[ok]).size < 2:
        return float("nan"), float("nan")
    slope, icpt = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(icpt)
