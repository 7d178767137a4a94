"""Arrays of series and their sliding windows (private: used by the subsequence probe and by the
time-series adapter, :mod:`memaudit.adapters.timeseries`, which is its public face).

A set of series is accepted as

- one 1-D array (a single univariate series),
- a 2-D array (n_series, length) of univariate series,
- a 3-D array (n_series, length, channels), or (n_series, channels, length) with ``layout="NCT"``
  (the layout of pyts, sktime and tslearn's ``to_time_series_dataset`` is NTC),
- a list of 1-D or 2-D (length, channels) arrays of different lengths.

:func:`windows` cuts every series into windows of ``length`` steps every ``stride`` steps and
returns them flat, (n_windows, length * channels) in time-major order, with the series and offset of
each window, so that a flagged window names the exact stretch of the exact series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_ids, check_positive_int

__all__ = ["as_series_list", "windows", "Windows"]


def _real_array(x, name: str) -> np.ndarray:
    """``x`` as a float64 array, refusing what is not real numbers (complex, bool, text, objects)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        what = {"c": "complex values (the imaginary part would be dropped)",
                "b": "booleans", "O": "Python objects (ragged or mixed values)"}.get(
                    a.dtype.kind, f"dtype {a.dtype}")
        hint = {"c": "give the real part (x.real), the magnitude (abs(x)) or both as channels",
                "b": "convert with x.astype(float)"}.get(a.dtype.kind, "give real numbers")
        raise TypeError(f"{name} holds {what}; {hint}")
    return a.astype(np.float64, copy=False)


def as_series_list(data, name: str = "series", layout: str = "NTC") -> list[np.ndarray]:
    """A validated list of float64 arrays (length_i, channels), one per series.

    Raises a one-line ``ValueError`` or ``TypeError`` that names the problem: empty input,
    complex, boolean or non-numeric values, NaN/Inf (with the series and step), a channel count
    that differs between series, or an array of the wrong rank.
    """
    if layout not in ("NTC", "NCT"):
        raise ValueError(f"layout must be 'NTC' or 'NCT', got {layout!r}")
    if isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise ValueError(f"{name} is empty: give at least one series")
        out = []
        for i, s in enumerate(data):
            a = _real_array(s, f"{name}[{i}]")
            if a.ndim == 1:
                a = a[:, None]
            elif a.ndim == 2 and layout == "NCT":
                a = a.T
            elif a.ndim != 2:
                raise ValueError(f"{name}[{i}] has shape {a.shape}; a series is 1-D (length,) or "
                                 "2-D (length, channels)")
            out.append(a)
    else:
        try:
            a = np.asarray(data)
        except ValueError:  # ragged nested lists
            a = np.empty(0, dtype=object)
        if a.dtype == object:
            raise ValueError(f"{name}: series of different lengths must be given as a list")
        a = _real_array(a, name)
        if a.ndim == 1:
            out = [a[:, None]]
        elif a.ndim == 2:
            out = [row[:, None] for row in a]
        elif a.ndim == 3:
            out = list(a) if layout == "NTC" else [s.T for s in a]
        else:
            raise ValueError(f"{name} has shape {a.shape}; expected (length,), (n_series, length) or "
                             "(n_series, length, channels)")
        if not out:
            raise ValueError(f"{name} is empty: give at least one series")
    channels = out[0].shape[1]
    for i, s in enumerate(out):
        if s.shape[0] == 0:
            raise ValueError(f"{name}[{i}] is empty")
        if s.shape[1] != channels:
            raise ValueError(f"{name}[{i}] has {s.shape[1]} channels but {name}[0] has {channels}")
        if not np.isfinite(s).all():
            bad = np.argwhere(~np.isfinite(s))[0]
            raise ValueError(f"{name}[{i}] has a NaN or Inf value at step {bad[0]}; clean or "
                             "interpolate it first")
    return out


@dataclass(frozen=True)
class Windows:
    """Sliding windows of a set of series.

    Attributes
    ----------
    x : ndarray of shape (n_windows, length * channels)
        Window values, time-major (step 0 of every channel, then step 1, ...).
    series : ndarray of int
        Position of each window's series in the input.
    offset : ndarray of int
        Start step of each window in its series.
    series_ids : ndarray
        Names of the series (their positions by default).
    length, channels : int
    skipped : tuple of int
        Series shorter than ``length`` (they have no window; listed, never dropped silently).
    """

    x: np.ndarray
    series: np.ndarray
    offset: np.ndarray
    series_ids: np.ndarray
    length: int
    channels: int
    skipped: tuple = ()

    @property
    def ids(self) -> np.ndarray:
        """One name per window: ``"<series id>@<offset>"``."""
        return np.array([f"{self.series_ids[s]}@{o}" for s, o in zip(self.series, self.offset)])

    def __len__(self) -> int:
        return self.x.shape[0]


def windows(data, length: int, stride: int = 1, *, ids=None, layout: str = "NTC",
            name: str = "series") -> Windows:
    """Cut every series into windows of ``length`` steps, one every ``stride`` steps.

    Parameters
    ----------
    data : array-like or list of arrays
        The series (see the module docstring for the accepted shapes).
    length : int
        Window length in steps.
    stride : int, default=1
        Steps between window starts (``length`` gives non-overlapping windows).
    ids : array-like, optional
        Series names (default: their positions).
    layout : {"NTC", "NCT"}, default="NTC"

    Returns
    -------
    Windows

    Examples
    --------
    >>> w = windows(np.arange(10.0), length=4, stride=3)
    >>> w.offset.tolist(), w.x[1].tolist()
    ([0, 3, 6], [3.0, 4.0, 5.0, 6.0])
    """
    series = as_series_list(data, name, layout)
    check_positive_int(length, "length")
    check_positive_int(stride, "stride")
    series_ids = check_ids(ids, len(series), "ids")
    short = [i for i, s in enumerate(series) if s.shape[0] < length]
    if len(short) == len(series):
        raise ValueError(f"every series in {name} is shorter than the window length {length} "
                         f"(longest: {max(s.shape[0] for s in series)} steps)")
    xs, ser, off = [], [], []
    channels = series[0].shape[1]
    for i, s in enumerate(series):
        if s.shape[0] < length:
            continue
        starts = np.arange(0, s.shape[0] - length + 1, stride)
        view = np.lib.stride_tricks.sliding_window_view(s, length, axis=0)  # (n, C, L)
        xs.append(np.ascontiguousarray(view[starts].transpose(0, 2, 1)).reshape(len(starts), -1))
        ser.append(np.full(len(starts), i))
        off.append(starts)
    return Windows(np.concatenate(xs), np.concatenate(ser), np.concatenate(off), series_ids,
                   int(length), int(channels), tuple(short))
