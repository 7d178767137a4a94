"""A 1-D U-Net DDPM on fixed-length time-series windows.

The diffusion math (schedule, loss, DDIM and DDPM samplers), the U-Net (``dims=1``) and the
training loop (checkpoints, exact resume, stats.jsonl) are those of ``reference_models.ddpm``;
this package adds a ``sample_fn`` for audits and the study (the windows themselves live in
``reference_models.data.timeseries``, below both packages, and are re-exported here):

    python -m reference_models.ddpm.train --data ts-sines --n-train 64 --steps 5000 --out runs/ts64
    python -m reference_models.ddpm.track --run runs/ts64 --n-samples 500
"""

from ..data.timeseries import FAMILIES, load_windows
from .sample import sample_fn

__all__ = ["FAMILIES", "load_windows", "sample_fn"]
