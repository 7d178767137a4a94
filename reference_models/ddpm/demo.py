"""The model behind ``memaudit demo``: a small DDPM trained on the spot on bundled digits.

memaudit never imports reference_models; it finds :func:`generate` through the ``memaudit.demos``
entry point declared in pyproject.toml, so the demo trains a real model when this package (and
torch) is installed and falls back to its labelled stand-in otherwise.

The setting (:data:`DEMO_CONFIG`, chosen by measurement; reference_models/README.md gives the
pilots) is the paper's message in a few minutes of CPU: the small U-Net (W = 16, two levels) with
Adam on a training set of 8x8 digits above the crossover size n_gm (about 64 for this model and
optimizer), so that sample quality converges (tau_gen) well before samples start to copy training
digits (tau_mem), and training runs on past tau_mem so that the copying is seen. The number of
training digits, the steps and the samples per checkpoint come from the caller (the runner's
``DemoConfig`` holds their defaults). Returns the training and held-out digits and DDIM samples
(the same seeds at every checkpoint) in pixel units.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.images import load_digits
from .checkpoints import read_stats
from .config import TrainConfig, build_model
from .track import samples_at_checkpoints
from .train import prepare_data, train

__all__ = ["generate", "DEMO_CONFIG", "DEMO_DDIM_STEPS", "demo_train_config"]

# everything of the demo's training run except n, the steps and the seed (the caller's options)
DEMO_CONFIG = dict(data="digits", image_size=8, n_holdout=300, model="unet", width=16,
                   mults=(1, 2), attention=(False, True), dropout=0.1, optimizer="adam", lr=3e-3,
                   batch_size=16, noise_draws=1, n_checkpoints=10, first_checkpoint=10)
DEMO_DDIM_STEPS = 50  # deterministic DDIM (eta = 0) steps per sample


def demo_train_config(*, n_train: int, steps: int, seed: int) -> TrainConfig:
    """The demo's :class:`TrainConfig`; a run shorter than 10x the first checkpoint starts its
    grid at a tenth of its steps (so that a short run still has several checkpoints)."""
    first = min(DEMO_CONFIG["first_checkpoint"], max(1, steps // 10))
    return TrainConfig(**{**DEMO_CONFIG, "first_checkpoint": first}, n_train=n_train, steps=steps,
                       seed=seed)


def _note(cfg: TrainConfig, n_params: int, n_samples: int, n_checkpoints: int, seed: int) -> str:
    return (f"Demo model: a U-Net DDPM (reference_models.ddpm; W = {cfg.width}, channel multipliers "
            f"{tuple(cfg.mults)}, {cfg.n_res} residual blocks per level, attention on the "
            f"coarsest level, dropout {cfg.dropout:g}; {n_params:,} parameters; linear betas "
            f"1e-4 to 2e-2, T = {cfg.n_steps_diffusion}, epsilon prediction) trained here on "
            f"{cfg.n_train} of scikit-learn's 8x8 digits (pixels in [0, 1], centred by the "
            f"training mean) for {cfg.steps:,} Adam steps (lr {cfg.lr:g}, batch "
            f"{min(cfg.batch_size, cfg.n_train)}, training seed {seed}); {n_samples} "
            f"deterministic DDIM-{DEMO_DDIM_STEPS} samples (eta = 0, initial-noise seeds {seed} to "
            f"{seed + n_samples - 1}, the same at every checkpoint) at each of {n_checkpoints} "
            f"log-spaced checkpoints (steps {cfg.first_checkpoint} to {cfg.steps}). Held-out: "
            f"{cfg.n_holdout} other digits (the control of f_mem and the reference of the quality "
            f"measure). The audit below is of the last checkpoint; the tracking section follows "
            f"f_mem and quality over training.")


def generate(out_dir, *, n_train: int, steps: int, n_samples: int, seed: int = 0,
             log=None) -> dict:
    """Train the demo model in ``out_dir/run`` (resumes a killed run) and sample every checkpoint.

    Parameters
    ----------
    out_dir : path
        The run goes to ``out_dir/run`` (config.json, stats.jsonl, checkpoints/).
    n_train, steps, n_samples : int
        Training digits, training steps, DDIM samples per checkpoint.
    seed : int
        Seed of the split, of the training run and of the samples (sample i starts from the
        noise of seed ``seed + i``).
    log : callable, optional
        Receives the training loop's progress lines.

    Returns
    -------
    dict
        ``train``, ``holdout`` (images in [0, 1]) with their ids, ``samples_by_step`` (step ->
        samples in pixel units), ``losses`` (step -> (train, held-out) denoising loss at index 40),
        ``config`` (the TrainConfig as a dict), ``note`` (what was trained, for the report).
    """
    cfg = demo_train_config(n_train=n_train, steps=steps, seed=seed)
    available = load_digits(cfg.image_size).images.shape[0] - cfg.n_holdout
    if n_train > available:  # before any training
        raise ValueError(f"the demo trains on at most {available} digits (scikit-learn has "
                         f"{available + cfg.n_holdout}, {cfg.n_holdout} held out); got "
                         f"--n-train {n_train}")
    run = Path(out_dir) / "run"
    train(cfg, run, log=log or (lambda m: None))
    x_tr, x_ho, mean, tr_idx, ho_idx = prepare_data(cfg)
    samples = samples_at_checkpoints(run, n_samples, steps=DEMO_DDIM_STEPS, seed=seed)
    losses = {rec["step"]: (rec["train_loss_eval"], rec["holdout_loss_eval"]) for rec in read_stats(run)}
    n_params = sum(p.numel() for p in build_model(cfg).parameters())
    side = cfg.image_size

    def images(x):  # (n, 1, S, S) from the U-Net, (n, S * S) from the MLP -> (n, S, S) pixels
        return np.asarray(x).reshape(len(x), side, side) + mean

    return {
        "train": images(x_tr.numpy()), "train_ids": np.array([f"digit-{i}" for i in tr_idx]),
        "holdout": images(x_ho.numpy()),
        "holdout_ids": np.array([f"digit-{i}" for i in ho_idx]),
        "samples_by_step": {s: images(v) for s, v in samples.items()},
        "losses": losses,
        "config": json.loads(cfg.to_json()),
        "note": _note(cfg, n_params, n_samples, len(samples), seed),
    }
