"""A ``sample_fn`` for audits: generated windows from a checkpoint of a time-series run."""

from __future__ import annotations

import numpy as np

from ..ddpm.checkpoints import load_model
from ..ddpm.objectives import generate

__all__ = ["sample_fn"]


def sample_fn(checkpoint, *, steps: int = 50):
    """Return ``f(seeds) -> ndarray (n, length, channels)``: DDIM samples of the checkpoint's model
    (the Euler ODE for a flow-matching run), in the data's units (the training mean added back),
    sample i from seed i.

    The (n, length, channels) layout is what ``memaudit.probes.subsequence`` and
    ``memaudit.adapters.timeseries.windows`` read.
    """
    model, ck = load_model(checkpoint)
    cfg = ck["config"]

    def f(seeds) -> np.ndarray:
        x = generate(cfg, model, list(seeds), steps=steps, batch_size=100)
        return (x.numpy() + ck["data_mean"]).transpose(0, 2, 1)

    return f
