"""Audit a training run over its checkpoints: sample at each one, then f_mem, quality and the window.

    python -m reference_models.ddpm.track --run runs/d64 --n-samples 500

For every checkpoint of the run, ``n_samples`` DDIM samples (eta = 0, ``steps`` steps; the Euler
ODE for a flow-matching run; sample i from seed i, the same seeds at every checkpoint) are compared
with the run's own training subset and held-out set through :func:`memaudit.tracking.track_memorization`. Writes tracking.json (f_mem with
intervals, the held-out control, the Fréchet distance to held-out data, the logged losses, tau_gen,
tau_mem and the recommended checkpoint with the rules used) and tracking.png beside the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

from memaudit.io import atomic_savez, atomic_write_text
from memaudit.tracking import track_memorization

from ..figures import pyplot, save_png
from .checkpoints import (RunFileWarning, checkpoint_config, checkpoint_step, load_model,
                          read_stats, readable_checkpoints)
from .objectives import check_sampler, generate
from .train import prepare_data

__all__ = ["samples_at_checkpoints", "track_run"]


def samples_at_checkpoints(run, n_samples: int = 500, *, steps: int = 50, seed: int = 0,
                           every: int = 1, sampler: str | None = None, log=None,
                           files=None) -> dict:
    """Samples (n, *item shape) in the run's centred space, for every ``every``-th checkpoint.

    ``sampler="ddim"``: deterministic DDIM (eta = 0) with ``steps`` steps; ``"ddpm"``: ancestral
    sampling over all T steps (the paper's sampler for the mixture); ``"ode"``: the Euler ODE of a
    flow-matching run with ``steps`` steps; None: the run's own (DDIM, or the ODE for a flow run).
    A sampler that does not fit the run's objective is refused before any sampling. Sample i comes
    from seed i. ``files``: only these checkpoints (default: every ``every``-th readable one).
    """
    files = readable_checkpoints(run, every=every, required=True) if files is None else list(files)
    sampler = check_sampler(checkpoint_config(files[-1]).objective, sampler)
    out = {}
    seeds = list(range(seed, seed + n_samples))
    for path in files:
        model, ck = load_model(path)
        x = generate(ck["config"], model, seeds, sampler=sampler, steps=steps)
        out[ck["step"]] = x.numpy()
        if log:
            log(f"sampled {n_samples} at step {ck['step']}")
    return out


def track_run(run, n_samples: int = 500, *, steps: int = 50, seed: int = 0, every: int = 1,
              sampler: str | None = None, quality: str = "frechet", log=None):
    """Sample every checkpoint of ``run`` and track memorization; writes tracking.json/.png.

    tau_gen uses the log-improvement rule for the Fréchet distance and the linear one for the energy
    distance, whose floor is near zero (see :func:`memaudit.tracking.estimate_tau_gen`).

    The samples are kept in samples.npz (one array per step) so that a rerun does not sample again;
    a rerun after new checkpoints (an extended run) samples only those.
    """
    run = Path(run)
    files = readable_checkpoints(run, every=every, required=True)
    cfg = checkpoint_config(files[-1])
    sampler = check_sampler(cfg.objective, sampler)
    x_train, x_hold, _, _, _ = prepare_data(cfg)
    cache = run / "samples.npz"
    key = f"{sampler}-{steps}-{n_samples}-{seed}"
    samples = None
    if cache.exists():
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    samples = {int(k[5:]): z[k] for k in z.files if k.startswith("step_")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring the sample cache {cache}: unreadable ({exc}); sampling again",
                          RunFileWarning, stacklevel=2)
    wanted = {checkpoint_step(f): f for f in files}
    if samples is not None:  # keep the cached steps that are still checkpoints; sample the others
        samples = {k: v for k, v in samples.items() if k in wanted}
    missing = [f for k, f in wanted.items() if samples is None or k not in samples]
    if missing:  # an extended run (train(extend=True)) samples its new checkpoints only
        samples = dict(sorted({**(samples or {}), **samples_at_checkpoints(
            run, n_samples, steps=steps, seed=seed, sampler=sampler, log=log, files=missing)}.items()))
        atomic_savez(cache, key=np.array(key), **{f"step_{k}": v for k, v in samples.items()})
    losses = {rec["step"]: (rec["train_loss_eval"], rec["holdout_loss_eval"]) for rec in read_stats(run)}
    flat = {k: v.reshape(v.shape[0], -1) for k, v in samples.items()}
    curve = track_memorization(flat, x_train.reshape(x_train.shape[0], -1).numpy(),
                               x_hold.reshape(x_hold.shape[0], -1).numpy(),
                               losses={k: v for k, v in losses.items() if k in flat}, seed=seed,
                               quality=quality, tau_gen_scale="linear" if quality == "energy" else "log")
    atomic_write_text(run / "tracking.json", json.dumps(
        {"run": str(run), "n_samples": n_samples, "sampler": sampler, "objective": cfg.objective,
         "ddim_steps": steps if sampler == "ddim" else None,
         "ode_steps": steps if sampler == "ode" else None, **curve.to_dict()}, indent=2) + "\n")
    try:
        pyplot()  # the Agg backend, before curve.plot() makes its figure
        fig = curve.plot().figure  # laid out by matplotlib's constrained layout
        fig.suptitle(f"{run.name}: n = {cfg.n_train}, {n_samples} samples per checkpoint",
                     fontsize=9)
        save_png(fig, run / "tracking.png")
    except ImportError:  # plots are optional
        pass
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_models.ddpm.track",
                                description="f_mem, quality, tau_gen and tau_mem over a run's checkpoints.")
    p.add_argument("--run", required=True, help="a run folder written by reference_models.ddpm.train")
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--ddim-steps", type=int, default=50, help="DDIM (or ODE) steps")
    p.add_argument("--every", type=int, default=1, help="use every k-th checkpoint")
    p.add_argument("--sampler", choices=["ddim", "ddpm", "ode"], default=None,
                   help="default: the run's own (DDIM for DDPM runs, the Euler ODE for flow runs)")
    p.add_argument("--quality", choices=["frechet", "energy"], default="frechet")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        sampler = check_sampler(checkpoint_config(readable_checkpoints(a.run, required=True)[-1]).objective,
                                a.sampler)
    except (ValueError, FileNotFoundError) as exc:  # checked before any sampling
        p.error(str(exc))
    curve = track_run(a.run, a.n_samples, steps=a.ddim_steps, seed=a.seed, every=a.every,
                      sampler=sampler, quality=a.quality, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(curve.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
