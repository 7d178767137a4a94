"""The floating-point error model shared by the exact searches (``neighbors`` and ``_pruned``)."""

from __future__ import annotations

import math

import numpy as np

U32 = 2.0**-24  # unit roundoff of float32
U64 = 2.0**-53  # unit roundoff of float64


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of a sum of n rounded terms."""
    return n * u / (1.0 - n * u) if n * u < 1 else math.inf


def exact_in_float32(dtype: np.dtype) -> bool:
    """Every value of this dtype converts to float32 without rounding."""
    return dtype in (np.float32, np.float16) or (dtype.kind in "iu" and dtype.itemsize <= 2)
