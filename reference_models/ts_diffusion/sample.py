"""A ``sample_fn`` for audits: generated windows from a checkpoint of a time-series run."""

from __future__ import annotations

import numpy as np

from ..ddpm.checkpoints import load_model
from ..ddpm.objectives import generate

__all__ = ["sample_fn"]


def sample_fn(checkpoint, *, steps: int = 50, length: int | None = None):
    """Return ``f(seeds) -> ndarray (n, length, channels)``: DDIM samples of the checkpoint's model
    (the Euler ODE for a flow-matching run), in the data's units (the training mean added back),
    sample i from seed i. ``length``: generate series that long instead of the training windows'
    length (the U-Net is convolutional), so that partial replay of a training window inside a longer
    series can be measured (``memaudit.probes.subsequence``).

    The (n, length, channels) layout is what ``memaudit.probes.subsequence`` and
    ``memaudit.adapters.timeseries.windows`` read.
    """
    model, ck = load_model(checkpoint)
    cfg = ck["config"]

    def f(seeds) -> np.ndarray:
        x = generate(cfg, model, list(seeds), steps=steps, batch_size=100, length=length)
        return (x.numpy() + ck["data_mean"]).transpose(0, 2, 1)

    return f
