"""Membership attacks on diffusion models through a small model protocol.

The protocol (:class:`NoisePredictor`) is all an attack needs: a function that predicts the noise
``eps(x_t, t)`` for a batch of noisy items and integer timesteps, and the schedule's cumulative
products ``alphas_cumprod`` (alpha-bar_t, t = 0..T-1), with x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps.
Any framework fits: wrap the model's forward pass in a function of numpy arrays.

Attacks (each returns one score per item and per setting, higher = "member"):

- :func:`loss_attack` (Matsumoto et al. 2023, "Membership inference attacks against diffusion
  models"): minus the denoising error ||eps - eps_theta(x_t, t)||^2 / d at a timestep t, averaged
  over seeded noise draws. Members were fitted, so their error is lower.
- :func:`pia_attack` (Kong et al. 2024, "An efficient membership inference attack for the diffusion
  model by proximal initialization"): take the model's own noise at t = 0, eps_0 = eps_theta(x_0, 0),
  as the initial noise, form x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps_0 (deterministic), and score
  minus ||eps_theta(x_t, t) - eps_0||_p^p / d (p = 4 by default).
- :func:`secmi_attack` (Duan et al. 2023, "Are diffusion models vulnerable to membership inference
  attacks?", SecMI-stat): invert x_0 deterministically (DDIM, steps of ``interval``) to x~_t, take
  one deterministic denoising step to t - interval and one deterministic noising step back, and
  score minus the t-error ||x^_t - x~_t||^2 / d.

A timestep is an attack *setting*: choose it on a calibration split with
:func:`memaudit.probes.calibration.calibrated_attack`, never on the evaluated items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._progress import track
from ..stats import StatsConfig

__all__ = ["NoisePredictor", "loss_attack", "pia_attack", "secmi_attack"]


@dataclass
class NoisePredictor:
    """The model protocol: ``eps(x_t, t) -> eps_hat`` on numpy arrays, and the schedule.

    Parameters
    ----------
    eps : callable
        ``eps(x, t)`` with x of shape (B, ...) float32 and t of shape (B,) int64, returning an
        array of x's shape.
    alphas_cumprod : array-like of shape (T,)
        alpha-bar_t for t = 0..T-1.
    batch_size : int, default=256
        Items per call of ``eps``.
    """

    eps: Callable
    alphas_cumprod: np.ndarray
    batch_size: int = 256

    def __post_init__(self):
        ab = np.asarray(self.alphas_cumprod, dtype=np.float64)
        if ab.ndim != 1 or ab.size < 2 or not np.all((ab > 0) & (ab <= 1)):
            raise ValueError("alphas_cumprod must be a 1-D array of values in (0, 1], one per timestep")
        self.alphas_cumprod = ab

    @property
    def n_steps(self) -> int:
        return self.alphas_cumprod.size

    def __call__(self, x: np.ndarray, t) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        t = np.array(np.broadcast_to(np.asarray(t, dtype=np.int64), (x.shape[0],)))
        out = np.empty_like(x)
        for s in range(0, x.shape[0], self.batch_size):
            # writable, contiguous copies: torch.from_numpy warns on read-only arrays
            xb = np.array(x[s : s + self.batch_size], dtype=np.float32, copy=True)
            out[s : s + self.batch_size] = np.asarray(self.eps(xb, t[s : s + self.batch_size].copy()))
        return out


def _items(x, model: NoisePredictor) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"items must be an array (n_items, ...) with at least one item, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("items contain NaN or Inf values")
    return x


def _timesteps(timesteps, model: NoisePredictor, low: int = 1) -> list[int]:
    ts = [int(t) for t in np.atleast_1d(timesteps)]
    bad = [t for t in ts if not low <= t < model.n_steps]
    if bad or not ts:
        raise ValueError(f"timesteps must lie in [{low}, {model.n_steps - 1}], got {bad or ts}")
    return ts


def _per_item(v: np.ndarray, p: float = 2.0) -> np.ndarray:
    flat = np.abs(v.reshape(v.shape[0], -1).astype(np.float64))
    return np.mean(flat**p, axis=1)


def loss_attack(model: NoisePredictor, x, timesteps=(10, 50, 100, 200), *, n_draws: int = 4,
                seed: int = StatsConfig.seed) -> dict:
    """Minus the denoising error per item at each timestep: ``{t: scores}``.

    The noise of item i in draw k comes from a generator seeded with (seed, k, i), so a score does
    not depend on which other items are in the batch.
    """
    x = _items(x, model)
    ts = _timesteps(timesteps, model)
    noise = np.stack([np.stack([np.random.default_rng([seed, k, i]).standard_normal(x.shape[1:])
                                for i in range(x.shape[0])]) for k in range(n_draws)]).astype(np.float32)
    out = {}
    for t in track(ts, len(ts), "loss attack (timesteps)"):
        ab = model.alphas_cumprod[t]
        err = np.zeros(x.shape[0])
        for k in range(n_draws):
            xt = np.sqrt(ab) * x + np.sqrt(1 - ab) * noise[k]
            err += _per_item(model(xt, t) - noise[k])
        out[t] = -err / n_draws
    return out


def pia_attack(model: NoisePredictor, x, timesteps=(10, 50, 100, 200), *, p: float = 4.0) -> dict:
    """PIA: minus ||eps_theta(x_t, t) - eps_0||_p^p / d with x_t built from eps_0 = eps_theta(x_0, 0)."""
    x = _items(x, model)
    ts = _timesteps(timesteps, model)
    eps0 = model(x, 0)
    out = {}
    for t in track(ts, len(ts), "PIA attack (timesteps)"):
        ab = model.alphas_cumprod[t]
        xt = np.sqrt(ab) * x + np.sqrt(1 - ab) * eps0
        out[t] = -_per_item(model(xt, t) - eps0, p)
    return out


def _ddim_move(model, x, t_from: int, t_to: int, eps=None):
    """One deterministic DDIM move from timestep t_from to t_to (either direction)."""
    ab = model.alphas_cumprod
    e = model(x, t_from) if eps is None else eps
    x0 = (x - np.sqrt(1 - ab[t_from]) * e) / np.sqrt(ab[t_from])
    return np.sqrt(ab[t_to]) * x0 + np.sqrt(1 - ab[t_to]) * e


def secmi_attack(model: NoisePredictor, x, timesteps=(100,), *, interval: int = 10) -> dict:
    """SecMI-stat: minus the t-error ||psi(phi(x~_t, t), t) - x~_t||^2 / d at each timestep t.

    x~_t comes from deterministic DDIM inversion of x_0 in steps of ``interval`` (0, k, 2k, ..., t);
    phi is the deterministic step t -> t - k, psi the deterministic step t - k -> t. Timesteps must
    be multiples of ``interval``. The paper's setting: t = 100, interval 10, T = 1000.
    """
    x = _items(x, model)
    ts = _timesteps(timesteps, model, low=interval)
    if any(t % interval for t in ts):
        raise ValueError(f"SecMI timesteps must be multiples of interval={interval}, got {ts}")
    out = {}
    cur, at = x, 0
    for t in track(sorted(ts), len(ts), "SecMI attack (timesteps)"):
        while at < t:  # x~ at the next grid point
            cur = _ddim_move(model, cur, at, at + interval)
            at += interval
        down = _ddim_move(model, cur, t, t - interval)
        back = _ddim_move(model, down, t - interval, t)
        out[t] = -_per_item(back - cur)
    return out
