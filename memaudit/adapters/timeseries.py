"""Time series as arrays: a list of series (univariate or multivariate) and their sliding windows.

Every probe sees arrays and ids; this adapter turns series into them: :func:`as_series_list`
validates a set of series (one 1-D array, (n_series, length), (n_series, length, channels) or NCT,
or a list of series of different lengths) and :func:`windows` cuts them into flat windows that name
their series and offset. Both live in :mod:`memaudit._series`, which the subsequence probe reads
too (probes import no adapter).
"""

from .._series import Windows, as_series_list, windows

__all__ = ["as_series_list", "windows", "Windows"]
