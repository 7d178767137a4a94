"""The model behind ``memaudit demo``: a tiny DDPM trained on the spot on bundled digits.

memaudit never imports reference_models; it finds this function through the ``memaudit.demos``
entry point declared in pyproject.toml, so the demo trains a real model when this package (and
torch) is installed and falls back to its labelled stand-in otherwise.

Eight 8x8 digits, the small U-Net (W = 16, two levels), Adam 3e-3, full batch, a few thousand
steps (about a minute on two CPU cores): long enough to go past the point where samples start to
copy training digits. Returns the training and held-out digits and DDIM samples (same seeds) at
every checkpoint, in pixel units.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .checkpoints import read_stats
from .config import TrainConfig
from .track import samples_at_checkpoints
from .train import prepare_data, train

__all__ = ["generate", "DEMO_CONFIG"]

DEMO_CONFIG = dict(data="digits", image_size=8, n_train=8, n_holdout=300, width=16, mults=(1, 2),
                   attention=(False, True), optimizer="adam", lr=3e-3, batch_size=8,
                   n_checkpoints=10, first_checkpoint=10)


def generate(out_dir, *, seed: int = 0, steps: int = 3000, n_samples: int = 200, log=None) -> dict:
    """Train the demo model in ``out_dir/run`` (resumable) and sample at every checkpoint."""
    cfg = TrainConfig(steps=steps, seed=seed, **DEMO_CONFIG)
    run = Path(out_dir) / "run"
    train(cfg, run, log=log or (lambda m: None))
    x_tr, x_ho, mean, tr_idx, ho_idx = prepare_data(cfg)
    samples = samples_at_checkpoints(run, n_samples, steps=50, seed=seed)
    losses = {rec["step"]: (rec["train_loss_eval"], rec["holdout_loss_eval"]) for rec in read_stats(run)}
    return {
        "train": x_tr.numpy()[:, 0] + mean, "train_ids": np.array([f"digit-{i}" for i in tr_idx]),
        "holdout": x_ho.numpy()[:, 0] + mean,
        "holdout_ids": np.array([f"digit-{i}" for i in ho_idx]),
        "samples_by_step": {s: v[:, 0] + mean for s, v in samples.items()},
        "losses": losses,
        "config": json.loads(cfg.to_json()),
        "note": (f"Demo model: a U-Net DDPM (reference_models.ddpm, W = {cfg.width}, "
                 f"{len(cfg.mults)} levels) trained here on {cfg.n_train} of scikit-learn's 8x8 "
                 f"digits for {steps} Adam steps (lr {cfg.lr:g}, full batch, seed {seed}); "
                 f"{n_samples} DDIM-50 samples at each of {len(samples)} checkpoints. The audit "
                 f"below is of the last checkpoint; the tracking section follows f_mem over "
                 f"training. Held-out: {cfg.n_holdout} other digits."),
    }
