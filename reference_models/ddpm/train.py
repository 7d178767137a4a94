"""Training the reference DDPM: the paper's recipe, checkpoints that resume exactly.

    python -m reference_models.ddpm.train --data digits --n-train 64 --steps 2000 --out runs/d64

A run directory holds config.json (the resolved config), stats.jsonl (one line per checkpoint:
step, mean training loss since the last line, train and held-out denoising loss at the fixed DDPM
index ``eval_index``, 40 ~ t = 0.01 as in the paper; for a flow-matching run, ``--objective flow``,
the velocity loss at the flow level of the same noise-to-signal ratio, see
``reference_models.ddpm.objectives``) and checkpoints/step_XXXXXXXX.safetensors on a
log-spaced grid of steps. A checkpoint holds the model, the optimizer state (SGD momentum buffers or
Adam moments: the paper's code loses them on resume) and every random state, with the config in its
metadata; it loads without executing pickles. Rerunning the same command resumes from the last
readable checkpoint and ends with the same weights as an uninterrupted run (a truncated latest
checkpoint and a torn last line of stats.jsonl are skipped with a warning; see
``reference_models.ddpm.checkpoints``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from memaudit.io import atomic_savez, atomic_write_text, remove_stale_temporaries

from ..data.images import gmm_sample, load_celeba_folder, load_digits, load_mnist, split
from ..data.timeseries import load_windows
from .checkpoints import (CheckpointError, RunFileWarning, append_stats, checkpoint_files,
                          checkpoint_path, load_checkpoint, read_stats, readable_checkpoints,
                          restore_training_state, save_checkpoint)
from .config import TrainConfig, build_model
from .objectives import check_objective, eval_level, eval_loss, training_loss

__all__ = ["train", "checkpoint_steps", "prepare_data"]


def checkpoint_steps(total: int, n: int, first: int = 1) -> list[int]:
    """About ``n`` log-spaced steps from ``first`` to ``total`` (both included)."""
    if not 1 <= first <= total:
        raise ValueError(f"the first checkpoint must be in [1, steps={total}], got {first}")
    grid = np.round(np.logspace(np.log10(first), np.log10(total), n))
    return sorted(set(int(s) for s in grid) | {total})


def prepare_data(cfg: TrainConfig):
    """Training and held-out tensors, centred by the training-subset mean (a scalar).

    Images are (n, 1, S, S), or (n, S*S) for the MLP. The mixture is (n, d), not centred (its mean
    is 0), with held-out data drawn fresh from P0 (indices are draw numbers).
    """
    if cfg.data == "gmm":
        tr = gmm_sample(cfg.n_train, cfg.gmm_dim, seed=cfg.seed)
        ho = gmm_sample(cfg.n_holdout, cfg.gmm_dim, seed=10_000 + cfg.seed)
        return (torch.from_numpy(tr), torch.from_numpy(ho), 0.0, np.arange(cfg.n_train),
                np.arange(cfg.n_holdout))
    if cfg.data.startswith("ts-"):
        tr, ho, tr_idx, ho_idx = load_windows(cfg.data[3:], cfg.n_train, cfg.n_holdout, cfg.seq_len,
                                              seed=cfg.seed)
        mean = float(tr.mean())
        x_tr, x_ho = torch.from_numpy(tr - mean), torch.from_numpy(ho - mean)
        if cfg.model == "mlp":
            x_tr, x_ho = x_tr.flatten(1), x_ho.flatten(1)
        return x_tr, x_ho, mean, tr_idx, ho_idx
    if cfg.data == "digits":
        full = load_digits(cfg.image_size)
    elif cfg.data == "mnist":
        full = load_mnist(cfg.image_size)
    elif cfg.data == "celeba":
        if not cfg.data_dir:
            raise ValueError("data='celeba' needs data_dir, a local folder of CelebA images")
        full = load_celeba_folder(cfg.data_dir, cfg.image_size)
    else:
        raise ValueError(f"unknown data {cfg.data!r}: digits, mnist, celeba or gmm")
    tr, ho = split(full, cfg.n_train, cfg.n_holdout, seed=cfg.seed)
    mean = float(tr.images.mean())
    x_tr, x_ho = torch.from_numpy(tr.images - mean), torch.from_numpy(ho.images - mean)
    if cfg.model == "mlp":
        x_tr, x_ho = x_tr.flatten(1), x_ho.flatten(1)
    return x_tr, x_ho, mean, tr.indices, ho.indices


def _make_optimizer(cfg: TrainConfig, model):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")


# ----------------------------------------------------------------------------- resume
def _resume_point(run: Path):
    """The latest checkpoint that loads (falling back past unreadable ones, with a warning)."""
    for path in reversed(readable_checkpoints(run)):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:  # the header opened but the tensors did not
            warnings.warn(f"{exc}; trying the previous checkpoint", RunFileWarning, stacklevel=2)
    return None


# what an extension may change: the length of the run and the density of its checkpoint grid
EXTENSIBLE = ("steps", "n_checkpoints")


def extends(theirs: TrainConfig, cfg: TrainConfig) -> bool:
    """Whether ``cfg`` is ``theirs`` run for longer: only ``EXTENSIBLE`` fields differ, and the
    new run is not shorter."""
    a, b = json.loads(theirs.to_json()), json.loads(cfg.to_json())
    for key in EXTENSIBLE:
        a.pop(key), b.pop(key)
    return a == b and cfg.steps >= theirs.steps


def _other_config(run: Path, cfg: TrainConfig) -> bool:
    """Whether run/config.json holds a different run (unreadable or absent: no)."""
    try:
        theirs = TrainConfig.from_json((run / "config.json").read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return theirs.to_json() != cfg.to_json()


# ----------------------------------------------------------------------------- training
def train(cfg: TrainConfig, run_dir, *, resume: bool = True, stop_after: int | None = None,
          extend: bool = False, log=print) -> Path:
    """Train (or resume) a run in ``run_dir``; returns the run directory.

    ``stop_after`` ends the run early after that step (as a kill would); calling ``train`` again
    resumes from the last checkpoint.

    Resume is robust to damaged files: stale temporaries of killed runs are deleted; an unreadable
    latest checkpoint (truncated, empty) is skipped with a warning and the run resumes from the
    previous readable one; torn lines of stats.jsonl are dropped with a warning. When no
    checkpoint is readable the run starts again from step 0 with a warning, unless config.json
    holds another config (then ``ValueError``, as for a readable checkpoint of another config).
    Every file is written atomically except stats.jsonl, which is appended one fsynced record per
    checkpoint and rewritten atomically on resume.

    ``extend=True`` continues a run whose config differs from ``cfg`` only in ``steps`` (not fewer)
    and ``n_checkpoints``: training goes on from its last checkpoint to ``cfg.steps``, with
    checkpoints at the points of the new grid beyond it; the weights at the new end are those of
    a run trained straight to ``cfg.steps`` (the random streams continue from the checkpoint).
    config.json then holds the new config and extensions.jsonl one line per extension (from which
    step and config length to which). Without ``extend`` such a run is refused, as any other
    config is.
    """
    if int(cfg.noise_draws) < 1:
        raise ValueError(f"noise_draws must be >= 1, got {cfg.noise_draws}")
    check_objective(cfg.objective)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    for folder in (run, run / "checkpoints"):  # temporaries left by killed runs
        remove_stale_temporaries(folder)
    x_train, x_hold, mean, tr_idx, ho_idx = prepare_data(cfg)
    model = build_model(cfg).to(cfg.device)
    opt = _make_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # timesteps and noise of the loss
    rng = np.random.default_rng(cfg.seed + 2)  # batches
    torch.manual_seed(cfg.seed + 3)  # dropout
    start = 0
    ck = None
    if resume:
        ck = _resume_point(run)
        if ck is None and checkpoint_files(run):
            warnings.warn(f"{run} has checkpoints but none is readable; training from step 0",
                          RunFileWarning, stacklevel=2)
    if ck is not None:
        theirs = ck["config"]
        if theirs.to_json() != cfg.to_json():
            longer = extends(theirs, cfg)
            if not (extend and longer):
                hint = (" (only its length differs: extend it with --extend, or use a new folder)"
                        if longer else "; use a new folder or resume=False")
                raise ValueError(f"{run} holds a run with another config{hint}")
            atomic_write_text(run / "config.json", json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
            ext = run / "extensions.jsonl"
            old_lines = ext.read_text() if ext.exists() else ""
            atomic_write_text(ext, old_lines + json.dumps(
                {"at_step": ck["step"], "from_steps": theirs.steps, "to_steps": cfg.steps,
                 "from_n_checkpoints": theirs.n_checkpoints,
                 "to_n_checkpoints": cfg.n_checkpoints}) + "\n")
            log(f"extending {run} from {theirs.steps} to {cfg.steps} steps (at step {ck['step']})")
        restore_training_state(ck, model, opt, gen, rng)
        start = ck["step"]
        kept = [rec for rec in read_stats(run) if rec["step"] <= start]  # torn lines dropped
        atomic_write_text(run / "stats.jsonl", "".join(json.dumps(rec) + "\n" for rec in kept))
        log(f"resumed {run} at step {start}")
    else:
        if resume and _other_config(run, cfg):
            raise ValueError(f"{run} holds a run with another config (config.json); use a new "
                             "folder or resume=False")
        atomic_write_text(run / "config.json", json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
        atomic_savez(run / "split.npz", train_indices=tr_idx, holdout_indices=ho_idx, data_mean=mean)
        atomic_write_text(run / "stats.jsonl", "")
    x_train, x_hold = x_train.to(cfg.device), x_hold.to(cfg.device)
    n = x_train.shape[0]
    batch = min(n, cfg.batch_size)
    grid = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints, cfg.first_checkpoint))
    model.train()
    running, count, t0 = 0.0, 0, time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start + 1, end + 1):
        idx = np.arange(n) if batch == n else rng.choice(n, size=batch, replace=False)
        xb = x_train[torch.from_numpy(idx)]
        if cfg.noise_draws > 1:  # m noise draws per item (George et al. 2025: more m, more copying)
            xb = xb.repeat(cfg.noise_draws, *([1] * (xb.ndim - 1)))
        loss = training_loss(cfg, model, xb, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        count += 1
        if step in grid:
            rec = {
                "step": step,
                "loss": running / count,
                "train_loss_eval": eval_loss(cfg, model, x_train, draws=cfg.eval_draws,
                                             seed=cfg.seed),
                "holdout_loss_eval": eval_loss(cfg, model, x_hold, draws=cfg.eval_draws,
                                               seed=cfg.seed),
                "eval_index": eval_level(cfg),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            append_stats(run, rec)
            save_checkpoint(checkpoint_path(run, step), cfg, step, model, opt, gen, rng, mean)
            log(f"step {step:>8d}  loss {rec['loss']:.4f}  train@{rec['eval_index']} "
                f"{rec['train_loss_eval']:.4f}  held-out@{rec['eval_index']} {rec['holdout_loss_eval']:.4f}")
            running, count = 0.0, 0
    return run


def main(argv=None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m reference_models.ddpm.train",
                                description="Train the reference U-Net DDPM (resumes a run folder).")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds checkpoints)")
    p.add_argument("--data", choices=["digits", "mnist", "celeba", "gmm", "ts-sines", "ts-ar",
                                      "ts-regimes", "ts-pig", "ts-gunpoint"], default=d.data,
                   help="gmm: the paper's SM B mixture, trained with the residual MLP; ts-*: "
                   "time-series windows (reference_models.ts_diffusion) with the 1-D U-Net")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="ts-*: window length")
    p.add_argument("--objective", choices=["ddpm", "flow"], default=d.objective,
                   help="ddpm: epsilon prediction on the linear schedule; flow: conditional flow "
                   "matching (rectified flow), sampled with the Euler ODE")
    p.add_argument("--model", choices=["unet", "mlp"], default=None,
                   help="default: mlp for gmm, unet for images")
    p.add_argument("--gmm-dim", type=int, default=d.gmm_dim)
    p.add_argument("--data-dir", help="CelebA: a local folder of images")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--n-train", type=int, default=d.n_train)
    p.add_argument("--n-holdout", type=int, default=d.n_holdout)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--levels", type=int, default=len(d.mults),
                   help="U-Net levels: multipliers (1, 2, 4)[:levels], attention on all but the first")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--noise-draws", type=int, default=d.noise_draws,
                   help="m: each batch item enters the loss m times with fresh (t, noise); a larger m "
                   "memorizes in fewer steps (George et al. 2025)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--n-checkpoints", type=int, default=d.n_checkpoints)
    p.add_argument("--first-checkpoint", type=int, default=d.first_checkpoint)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--extend", action="store_true",
                   help="continue a finished (or interrupted) run in --out to a larger --steps "
                   "(and --n-checkpoints); the weights at the new end are those of a straight run")
    p.add_argument("--device", default=d.device)
    a = p.parse_args(argv)
    mults = (1, 2, 4)[: a.levels]
    model = a.model or ("mlp" if a.data == "gmm" else "unet")
    cfg = TrainConfig(data=a.data, data_dir=a.data_dir, image_size=a.image_size, n_train=a.n_train,
                      gmm_dim=a.gmm_dim, model=model, objective=a.objective, seq_len=a.seq_len,
                      n_holdout=a.n_holdout, width=a.width, mults=mults,
                      attention=tuple(i > 0 for i in range(a.levels)), optimizer=a.optimizer,
                      lr=a.lr, noise_draws=a.noise_draws, batch_size=a.batch_size, steps=a.steps,
                      n_checkpoints=a.n_checkpoints, first_checkpoint=a.first_checkpoint,
                      seed=a.seed, device=a.device)
    try:
        train(cfg, a.out, extend=a.extend, log=lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
