"""DDPM diffusion math: the linear schedule, the training loss, and the DDIM / ancestral samplers.

As in the paper (SM A.1) and its code: linear betas from 1e-4 to 2e-2 over T = 1000 steps; training
timesteps t' drawn uniformly from 1..T-1 (t' = 0 is never trained); epsilon prediction with the mean
squared error. Samplers are pure functions of the model and of one seed per sample: sample i is the
same whatever the batch it is drawn in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Schedule", "q_sample", "training_loss", "denoising_loss", "ddim_sample", "ddpm_sample",
           "ou_time"]


@dataclass(frozen=True)
class Schedule:
    """A discrete variance schedule (float64 tensors of length T)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def linear(cls, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
        return cls(betas, torch.cumprod(1 - betas, dim=0))

    @property
    def n_steps(self) -> int:
        return int(self.betas.shape[0])


def ou_time(schedule: Schedule, index: int) -> float:
    """The Ornstein-Uhlenbeck time t = -1/2 log(alpha_bar) of a DDPM index (t = 0.01 is index ~40)."""
    return float(-0.5 * torch.log(schedule.alphas_cumprod[index]))


def _expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def q_sample(x0, t, noise, schedule: Schedule):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    ab = schedule.alphas_cumprod.to(x0.device)[t]
    return _expand(ab.sqrt(), x0) * x0 + _expand((1 - ab).sqrt(), x0) * noise


def training_loss(model, x0, schedule: Schedule, generator: torch.Generator):
    """MSE between the true and predicted noise at t' ~ U{1, ..., T-1} (one draw per image)."""
    t = torch.randint(1, schedule.n_steps, (x0.shape[0],), generator=generator, device="cpu")
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    t, noise = t.to(x0.device), noise.to(x0.device)
    return torch.mean((model(q_sample(x0, t, noise, schedule), t) - noise) ** 2)


@torch.no_grad()
def fixed_level_loss(model, x0, corrupt, level: int, *, draws: int = 5, seed: int = 0,
                     batch_size: int = 512) -> float:
    """Mean squared error of ``model`` at one fixed level over ``draws`` noise draws (eval mode).

    ``corrupt(x0, t, noise) -> (noisy input, target)`` is the objective's path (DDPM:
    ``q_sample`` and the noise; flow matching: ``flow.flow_path``)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for _ in range(draws):
        for s in range(0, x0.shape[0], batch_size):
            xb = x0[s : s + batch_size]
            noise = torch.randn(xb.shape, generator=g, dtype=xb.dtype).to(xb.device)
            t = torch.full((xb.shape[0],), level, dtype=torch.long, device=xb.device)
            x_t, target = corrupt(xb, t, noise)
            err = (model(x_t, t) - target) ** 2
            total += float(err.sum())
            count += err.numel()
    model.train(was_training)
    return total / count


def denoising_loss(model, x0, schedule: Schedule, index: int, *, draws: int = 5, seed: int = 0,
                   batch_size: int = 512) -> float:
    """Mean epsilon-MSE at one fixed timestep ``index`` over ``draws`` noise draws (eval mode).

    The paper logs this at t = 0.01 (DDPM index ~40) on the training set and on held-out images.
    """
    return fixed_level_loss(model, x0, lambda x, t, e: (q_sample(x, t, e, schedule), e), index,
                            draws=draws, seed=seed, batch_size=batch_size)


def _initial_noise(shape, seeds, device, dtype):
    return torch.stack([
        torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype) for s in seeds
    ]).to(device)


@torch.no_grad()
def ddim_sample(model, shape, seeds, schedule: Schedule, *, steps: int = 100, batch_size: int = 100,
                device="cpu") -> torch.Tensor:
    """Deterministic DDIM (eta = 0) samples, one per seed, shape (len(seeds), *shape).

    The time grid is ``linspace(0, T-1, steps)`` rounded down and reversed, as in the paper's
    generate.py; the last step goes to alpha_bar = 1.
    """
    was_training = model.training
    model.eval()
    grid = np.linspace(0, schedule.n_steps - 1, steps).astype(int)[::-1]
    ab = schedule.alphas_cumprod
    out = []
    for s in range(0, len(seeds), batch_size):
        x = _initial_noise(shape, seeds[s : s + batch_size], device, torch.float32)
        for k, t in enumerate(grid):
            a_t = ab[t]
            a_prev = ab[grid[k + 1]] if k + 1 < len(grid) else torch.tensor(1.0, dtype=torch.float64)
            tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=device)
            eps = model(x, tt)
            x0 = (x - float((1 - a_t).sqrt()) * eps) / float(a_t.sqrt())
            x = float(a_prev.sqrt()) * x0 + float((1 - a_prev).sqrt()) * eps
        out.append(x.cpu())
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def ddpm_sample(model, shape, seeds, schedule: Schedule, *, batch_size: int = 100,
                device="cpu") -> torch.Tensor:
    """Ancestral DDPM samples over all T steps; the noise of sample i comes from its own seed."""
    was_training = model.training
    model.eval()
    betas, ab = schedule.betas, schedule.alphas_cumprod
    out = []
    for s in range(0, len(seeds), batch_size):
        chunk = seeds[s : s + batch_size]
        gens = [torch.Generator().manual_seed(int(x)) for x in chunk]
        x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
        for t in range(schedule.n_steps - 1, -1, -1):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
            eps = model(x, tt)
            mean = (x - float(betas[t] / (1 - ab[t]).sqrt()) * eps) / float((1 - betas[t]).sqrt())
            if t > 0:
                var = float(betas[t] * (1 - ab[t - 1]) / (1 - ab[t]))  # posterior variance
                z = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
                x = mean + var**0.5 * z
            else:
                x = mean
        out.append(x.cpu())
    model.train(was_training)
    return torch.cat(out)
