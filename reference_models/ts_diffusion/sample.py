"""A ``sample_fn`` for audits: generated windows from a checkpoint of a time-series run."""

from __future__ import annotations

import numpy as np

from ..ddpm.checkpoints import load_model
from ..ddpm.diffusion import Schedule, ddim_sample

__all__ = ["sample_fn"]


def sample_fn(checkpoint, *, steps: int = 50):
    """Return ``f(seeds) -> ndarray (n, length, channels)``: DDIM samples of the checkpoint's model,
    in the data's units (the training mean added back), sample i from seed i.

    The (n, length, channels) layout is what ``memaudit.probes.subsequence`` and
    ``memaudit.adapters.timeseries.windows`` read.
    """
    model, ck = load_model(checkpoint)
    cfg = ck["config"]
    schedule = Schedule.linear(cfg.n_steps_diffusion)

    def f(seeds) -> np.ndarray:
        x = ddim_sample(model, cfg.sample_shape, list(seeds), schedule, steps=steps)
        return (x.numpy() + ck["data_mean"]).transpose(0, 2, 1)

    return f
