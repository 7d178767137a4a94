"""Conditional flow matching (rectified flow) with the same networks as the DDPM.

The path and the loss (Lipman et al. 2023, "Flow Matching for Generative Modeling", with
sigma_min = 0; Liu et al. 2023, "Flow Straight and Fast", rectified flow)::

    x_s = (1 - s) x0 + s eps,   eps ~ N(0, I),   target velocity  v = dx_s/ds = eps - x0,
    loss = E || v_theta(x_s, s) - (eps - x0) ||^2.

Time is the DDPM's grid of T levels (T = ``n_steps_diffusion``, 1000): s_k = k / (T - 1), and the
network embeds the integer level k through the same sinusoidal table, so one U-Net (2-D for images,
1-D for series) serves both objectives. Training draws k uniformly from 1..T-1 with the same
generator calls as the DDPM loss (the level, then the noise), so the two objectives see the same
batches, levels and noise draws for a given seed.

Sampling integrates the ODE dx/ds = v_theta(x, s) from s = 1 (x = eps drawn from the sample's own
seed) to s = 0 with ``steps`` Euler steps on the level grid (:func:`flow_sample`): deterministic,
sample i the same whatever the batch it is drawn in, as the DDIM sampler is.

The flow as a noise predictor. Dividing x_s by c_s = sqrt((1 - s)^2 + s^2) gives a variance-
preserving path x = sqrt(a_s) x0 + sqrt(1 - a_s) eps with a_s = (1 - s)^2 / c_s^2, and from a
velocity prediction eps_hat = x_s + (1 - s) v_hat (because x_s + (1 - s)(eps - x0) = eps). So a flow
model is an epsilon-predictor on the schedule a_k (:func:`flow_schedule`, :class:`FlowAsNoise`),
exactly, with no change of time grid: the loss, PIA and SecMI attacks and the fixed-level
denoising loss of ``reference_models.ddpm.diffusion`` apply to it unchanged. Its epsilon error is
(1 - s) times its velocity error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .diffusion import Schedule, _initial_noise  # the same starting noise per seed as DDIM

__all__ = ["flow_levels", "flow_path", "flow_training_loss", "flow_sample", "flow_schedule",
           "FlowAsNoise", "matched_level"]


def flow_levels(n_levels: int) -> torch.Tensor:
    """s_k = k / (T - 1) for k = 0..T-1 (float64): 0 is data, 1 is noise."""
    if int(n_levels) < 2:
        raise ValueError(f"a flow needs at least 2 time levels, got {n_levels}")
    return torch.arange(n_levels, dtype=torch.float64) / (n_levels - 1)


def _expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def flow_path(x0, k, noise, n_levels: int):
    """(x_s, target velocity) at levels ``k``: x_s = (1 - s) x0 + s noise, v = noise - x0."""
    s = _expand(flow_levels(n_levels).to(x0.device)[k], x0)
    return (1 - s) * x0 + s * noise, noise - x0


def flow_training_loss(model, x0, n_levels: int, generator: torch.Generator):
    """Velocity MSE at k ~ U{1, ..., T-1} (one draw per item); draws as the DDPM loss draws."""
    k = torch.randint(1, n_levels, (x0.shape[0],), generator=generator, device="cpu")
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    k, noise = k.to(x0.device), noise.to(x0.device)
    xs, target = flow_path(x0, k, noise, n_levels)
    return torch.mean((model(xs, k) - target) ** 2)


def flow_schedule(n_levels: int) -> Schedule:
    """The variance-preserving schedule a flow model is an epsilon-predictor on:
    a_k = (1 - s_k)^2 / ((1 - s_k)^2 + s_k^2) (a_0 = 1, a_{T-1} = 0)."""
    s = flow_levels(n_levels)
    ab = (1 - s) ** 2 / ((1 - s) ** 2 + s**2)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    return Schedule(betas=1 - ab / prev, alphas_cumprod=ab)


class FlowAsNoise(nn.Module):
    """A velocity network seen as an epsilon-predictor on :func:`flow_schedule`.

    ``forward(x, k)`` takes x on the variance-preserving scale of level k, rescales it to the flow's
    path (x_s = c_k x) and returns x_s + (1 - s_k) v(x_s, k). ``train()``/``eval()`` reach the
    wrapped network.
    """

    def __init__(self, velocity: nn.Module, n_levels: int):
        super().__init__()
        self.velocity = velocity
        s = flow_levels(n_levels)
        self.register_buffer("s", s.float(), persistent=False)
        self.register_buffer("c", ((1 - s) ** 2 + s**2).sqrt().float(), persistent=False)

    def forward(self, x, k):
        k = torch.as_tensor(k, device=x.device)
        s, c = _expand(self.s.to(x.device)[k], x), _expand(self.c.to(x.device)[k], x)
        xs = c * x
        return xs + (1 - s) * self.velocity(xs, k)


def matched_level(schedule: Schedule, index: int, n_levels: int) -> int:
    """The flow level whose noise-to-signal ratio s/(1 - s) equals the DDPM's sqrt((1 - a)/a) at
    ``index`` (DDPM index 40, OU time 0.01, is flow level 126 of 1000): where a flow run logs its
    fixed-level train and held-out losses so that they sit at the same noise level as a DDPM run's."""
    ab = float(schedule.alphas_cumprod[index])
    r = np.sqrt((1 - ab) / ab)
    return int(np.clip(round((n_levels - 1) * r / (1 + r)), 1, n_levels - 1))


@torch.no_grad()
def flow_sample(model, shape, seeds, n_levels: int, *, steps: int = 50, batch_size: int = 100,
                device="cpu") -> torch.Tensor:
    """ODE samples (Euler, ``steps`` steps from s = 1 to s = 0), one per seed, shape
    (len(seeds), *shape). The levels are ``linspace(T - 1, 0, steps + 1)`` rounded; sample i starts
    from ``randn(shape)`` of its own seed, as DDIM's does."""
    if not 1 <= int(steps) <= n_levels - 1:
        raise ValueError(f"the ODE sampler takes 1 to {n_levels - 1} steps, got {steps}")
    was_training = model.training
    model.eval()
    grid = np.unique(np.round(np.linspace(0, n_levels - 1, int(steps) + 1)).astype(int))[::-1]
    s = flow_levels(n_levels)
    out = []
    for b in range(0, len(seeds), batch_size):
        x = _initial_noise(shape, seeds[b : b + batch_size], device, torch.float32)
        for k, k_next in zip(grid[:-1], grid[1:]):
            kk = torch.full((x.shape[0],), int(k), dtype=torch.long, device=device)
            x = x + float(s[k_next] - s[k]) * model(x, kk)
        out.append(x.cpu())
    model.train(was_training)
    return torch.cat(out)
