"""The two training objectives of a run, behind one interface: ``ddpm`` (epsilon prediction on the
linear schedule, ``reference_models.ddpm.diffusion``) and ``flow`` (conditional flow matching,
rectified flow, ``reference_models.ddpm.flow``).

``TrainConfig.objective`` names it; every reader of a run (``train``, ``batched``, ``track``,
``membership``, ``ts_diffusion``, the run sampler of ``memaudit track``) goes through these
functions, so a flow run is trained, logged, sampled, tracked and attacked as a DDPM run is:

- :func:`corrupt`: the noisy input and the regression target at levels t (the loss's draws);
- :func:`training_loss`: the objective's loss on a batch;
- :func:`eval_level` and :func:`eval_loss`: the fixed-level train / held-out loss of stats.jsonl
  (DDPM: index ``eval_index``, OU time 0.01 at 40; flow: the level with the same noise-to-signal
  ratio);
- :func:`generate`: samples, one per seed (DDPM: ``ddim`` or ``ddpm``; flow: ``ode``);
- :func:`noise_model` and :func:`attack_schedule`: the network as an epsilon-predictor and the
  schedule it predicts on, for the membership attacks.
"""

from __future__ import annotations

import torch

from .diffusion import Schedule, ddim_sample, ddpm_sample, denoising_loss, fixed_level_loss, q_sample
from .diffusion import training_loss as ddpm_training_loss
from .flow import FlowAsNoise, flow_path, flow_sample, flow_schedule, flow_training_loss, matched_level

__all__ = ["OBJECTIVES", "SAMPLERS", "check_objective", "default_sampler", "check_sampler", "corrupt",
           "sample_shape", "training_loss", "eval_level", "eval_loss", "generate", "noise_model", "attack_schedule"]

OBJECTIVES = ("ddpm", "flow")
SAMPLERS = {"ddpm": ("ddim", "ddpm"), "flow": ("ode",)}


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    return objective


def default_sampler(objective: str) -> str:
    """DDIM for DDPM runs, the Euler ODE for flow runs."""
    return SAMPLERS[check_objective(objective)][0]


def check_sampler(objective: str, sampler: str | None) -> str:
    """``sampler`` (None: the objective's default), refused in one line when it does not fit."""
    if sampler is None:
        return default_sampler(objective)
    allowed = SAMPLERS[check_objective(objective)]
    if sampler not in allowed:
        raise ValueError(f"a {objective} run samples with {' or '.join(allowed)}, not {sampler!r}"
                         + (" (flow matching has no DDPM/DDIM chain: use the ODE sampler)"
                            if objective == "flow" else " (the ODE sampler is for flow-matching runs)"))
    return sampler


def _schedule(cfg) -> Schedule:
    return Schedule.linear(cfg.n_steps_diffusion)


def corrupt(objective: str, x0, t, noise, schedule: Schedule):
    """(noisy input, target) at levels ``t``: DDPM (q_sample, noise), flow (x_s, noise - x0)."""
    if objective == "flow":
        return flow_path(x0, t, noise, schedule.n_steps)
    return q_sample(x0, t, noise, schedule), noise


def training_loss(cfg, model, x0, generator: torch.Generator):
    """The objective's loss on the batch ``x0`` (levels and noise from ``generator``)."""
    if cfg.objective == "flow":
        return flow_training_loss(model, x0, cfg.n_steps_diffusion, generator)
    return ddpm_training_loss(model, x0, _schedule(cfg), generator)


def eval_level(cfg) -> int:
    """The level of the fixed-level loss in stats.jsonl (``eval_index`` for DDPM runs; for flow
    runs the flow level with the same noise-to-signal ratio as DDPM index ``eval_index``)."""
    if cfg.objective == "flow":
        return matched_level(_schedule(cfg), cfg.eval_index, cfg.n_steps_diffusion)
    return int(cfg.eval_index)


def noise_model(cfg, model):
    """The network as an epsilon-predictor (a flow model through :class:`flow.FlowAsNoise`)."""
    return FlowAsNoise(model, cfg.n_steps_diffusion) if cfg.objective == "flow" else model


def attack_schedule(cfg) -> Schedule:
    """The schedule :func:`noise_model` predicts on: linear for DDPM; for flow, ``flow_schedule``
    without its last level (s = 1, pure noise, where alpha_bar = 0 and no signal is left to attack)."""
    if cfg.objective != "flow":
        return _schedule(cfg)
    full = flow_schedule(cfg.n_steps_diffusion)
    return Schedule(betas=full.betas[:-1], alphas_cumprod=full.alphas_cumprod[:-1])


def eval_loss(cfg, model, x0, *, draws: int, seed: int) -> float:
    """The fixed-level loss of stats.jsonl: the epsilon MSE at ``eval_index`` (DDPM) or the
    velocity MSE at :func:`eval_level` (flow), over ``draws`` noise draws."""
    if cfg.objective != "flow":
        return denoising_loss(model, x0, _schedule(cfg), cfg.eval_index, draws=draws, seed=seed)
    return fixed_level_loss(model, x0, lambda x, k, e: flow_path(x, k, e, cfg.n_steps_diffusion),
                            eval_level(cfg), draws=draws, seed=seed)


def sample_shape(cfg, length: int | None = None) -> tuple:
    """The shape of one sample: the run's item, or for a time-series run a series ``length`` long
    (the 1-D U-Net is convolutional, so it generates series longer than its training windows; the
    length must be divisible by 2 per level below the first)."""
    if length is None or length == cfg.sample_shape[-1]:
        return cfg.sample_shape
    if not cfg.data.startswith("ts-"):
        raise ValueError(f"only time-series runs generate another length; this run's data is {cfg.data!r}")
    if cfg.model == "mlp":
        raise ValueError(f"the MLP generates its training length only ({cfg.seq_len}); got length "
                         f"{length}: use the U-Net for longer series")
    side = 2 ** (len(cfg.mults) - 1)
    if int(length) < side or int(length) % side:
        raise ValueError(f"series length {length} must be a positive multiple of {side} for this "
                         f"{len(cfg.mults)}-level U-Net")
    return (*cfg.sample_shape[:-1], int(length))


def generate(cfg, model, seeds, *, sampler: str | None = None, steps: int = 50, batch_size: int = 1000,
             device="cpu", length: int | None = None) -> torch.Tensor:
    """Samples of ``model`` (the run's centred space), one per seed, shape (len(seeds), *item); a
    time-series run generates series ``length`` long when given (:func:`sample_shape`)."""
    sampler = check_sampler(cfg.objective, sampler)
    shape = sample_shape(cfg, length)
    seeds = list(seeds)
    if sampler == "ode":
        return flow_sample(model, shape, seeds, cfg.n_steps_diffusion, steps=steps,
                           batch_size=batch_size, device=device)
    if sampler == "ddim":
        return ddim_sample(model, shape, seeds, _schedule(cfg), steps=steps,
                           batch_size=batch_size, device=device)
    return ddpm_sample(model, shape, seeds, _schedule(cfg), batch_size=batch_size,
                       device=device)
