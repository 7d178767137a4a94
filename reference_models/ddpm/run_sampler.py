"""The run sampler ``memaudit track`` uses for reference_models DDPM runs.

memaudit never imports reference_models; it finds this function through the ``memaudit.runs``
entry point declared in pyproject.toml (as ``memaudit demo`` finds its model through
``memaudit.demos``). For a run folder written by :func:`reference_models.ddpm.train.train` it
samples every readable checkpoint with :func:`reference_models.ddpm.track.samples_at_checkpoints`
(deterministic DDIM, eta 0, or the Euler ODE of a flow-matching run; sample i from seed ``seed + i``
at every checkpoint) and returns the
samples in the units of the run's data (the training mean added back, one channel squeezed), the
space of the training items the user gives ``memaudit track --train``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoints import checkpoint_config, readable_checkpoints
from .objectives import default_sampler
from .track import samples_at_checkpoints
from .train import prepare_data

__all__ = ["sample_run"]


def sample_run(run, *, n_samples: int, seed: int, steps: int, log=None) -> dict | None:
    """Samples at every checkpoint of a reference DDPM run, or None for a folder that is not one.

    Returns
    -------
    dict or None
        ``samples_by_step`` (step -> array (n, S, S) for images, (n, d) for vectors, in data
        units), ``sampler``, ``seeds`` and ``data`` (the run's data set), for the report, and
        ``range``: "0,1" for image runs (the samples' declared range), None otherwise.
    """
    run = Path(run)
    if not (run / "checkpoints").is_dir():
        return None
    files = readable_checkpoints(run)
    if not files:
        return None
    cfg = checkpoint_config(files[-1])
    mean = prepare_data(cfg)[2]
    by_step = samples_at_checkpoints(run, n_samples, steps=steps, seed=seed, log=log)
    ode = default_sampler(cfg.objective) == "ode"
    out = {}
    for step, x in by_step.items():
        x = np.asarray(x) + mean
        out[int(step)] = x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x
    return {"samples_by_step": out,
            "sampler": (f"Euler ODE of the flow-matching model, {steps} steps" if ode
                        else f"DDIM (eta 0), {steps} steps") + " (reference_models.ddpm.track)",
            "seeds": f"sample i from seed {seed} + i, the same at every checkpoint",
            "data": cfg.data,
            # images are pixels in [0, 1] once the mean is back; mixtures and series are not
            "range": None if cfg.data == "gmm" or cfg.data.startswith("ts-") else "0,1"}
