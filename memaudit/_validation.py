"""Input checks shared by every probe: shapes, dtypes, NaN/Inf, empty sets.

Every check raises with a message that names the argument and the problem, so that a bad input
never turns into a silent wrong number.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_2d_array", "check_finite", "check_fraction", "check_same_dim", "check_positive_int",
           "check_ids", "check_seed"]


def _to_numpy(x, name):
    """Turn a torch tensor (without importing torch) or an array-like into a numpy array."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):  # np.memmap is an ndarray subclass and stays memory-mapped
        return x
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__}")
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise TypeError(f"{name}: could not be read as an array of numbers ({exc})") from exc


def as_2d_array(x, name: str, *, min_rows: int = 1, check_values: bool = True) -> np.ndarray:
    """Validate ``x`` and view it as a 2-D array of shape ``(n_items, n_features)``.

    Items with more than one axis (images ``(n, H, W)`` or ``(n, C, H, W)``, series
    ``(n, L, C)``) are flattened in C order. Memory-mapped arrays stay memory-mapped; their values
    are checked block by block by the search itself, not here (``check_values`` is ignored for
    them), so that a file larger than memory is read once.

    Parameters
    ----------
    x : array-like or torch.Tensor
        The data. Real numbers only (float, int, unsigned int); bool, complex and object dtypes are
        refused.
    name : str
        The argument's name, used in error messages.
    min_rows : int, default=1
        Fewest items accepted.
    check_values : bool, default=True
        Refuse NaN and Inf.

    Returns
    -------
    numpy.ndarray of shape (n_items, n_features)
    """
    arr = _to_numpy(x, name)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name}: dtype {arr.dtype} is not supported; give real numbers (float or integer)"
        )
    if arr.ndim == 0:
        raise ValueError(f"{name}: expected an array of shape (n_items, n_features), got a scalar")
    if arr.ndim == 1:
        raise ValueError(
            f"{name}: expected shape (n_items, n_features), got a 1-D array of length {arr.shape[0]}; "
            "use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one item"
        )
    if arr.shape[0] < min_rows:
        what = "is empty" if arr.shape[0] == 0 else f"has {arr.shape[0]} item(s)"
        raise ValueError(f"{name} {what}; at least {min_rows} item(s) are needed")
    n_features = int(np.prod(arr.shape[1:]))
    if n_features == 0:
        raise ValueError(f"{name}: items have no features (shape {arr.shape})")
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], n_features)  # a view when contiguous, memmaps included
    if check_values and not isinstance(arr, np.memmap):
        check_finite(arr, name)
    return arr


def check_finite(block: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise ``ValueError`` naming the first row that holds NaN or Inf."""
    if block.dtype.kind != "f":
        return
    # Fast path: a sum over the block is finite unless some value is NaN/Inf (or the sum
    # overflows, in which case the exact element-wise check below decides).
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(block.sum()):
            return
    finite = np.isfinite(block)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        n_nan = int(np.isnan(block).sum())
        n_inf = int(np.isinf(block).sum())
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} Inf value(s), in {bad_rows.size} item(s); "
            f"first at item {offset + int(bad_rows[0])}"
        )


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when two sets have a different number of features."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} has {a.shape[1]} features per item but {name_b} has {b.shape[1]}; "
            "both must live in the same space (same image size, channels and encoder)"
        )


def check_fraction(value, name: str, *, low_open: bool = True, high_open: bool = True) -> float:
    """Check that ``value`` is a real number inside (0, 1) (bounds open unless told)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok_low = value > 0 if low_open else value >= 0
    ok_high = value < 1 if high_open else value <= 1
    if not (np.isfinite(value) and ok_low and ok_high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}0, 1{hi}, got {value}")
    return value


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_seed(seed, name: str = "seed") -> int:
    """A seed is a non-negative integer (what numpy's SeedSequence accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed}")
    return int(seed)


def check_ids(ids, n: int, name: str) -> np.ndarray:
    """One id per item (file names, original indices); ``None`` gives the positions 0..n-1."""
    if ids is None:
        return np.arange(n)
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"{name}: expected {n} ids (one per item), got shape {ids.shape}")
    return ids
