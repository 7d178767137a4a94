"""Training the reference DDPM: the paper's recipe, checkpoints that resume exactly.

    python -m reference_models.ddpm.train --data digits --n-train 64 --steps 2000 --out runs/d64

A run directory holds config.json (the resolved config), stats.jsonl (one line per checkpoint:
step, mean training loss since the last line, train and held-out denoising loss at the fixed DDPM
index ``eval_index``, 40 ~ t = 0.01 as in the paper) and checkpoints/step_XXXXXXXX.safetensors on a
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from memaudit.io import atomic_path, atomic_savez, atomic_write_text, remove_stale_temporaries

from .checkpoints import (CheckpointError, RunFileWarning, append_stats, checkpoint_files,
                          checkpoint_path, checkpoint_problem, read_stats, readable_checkpoints)
from .data import gmm_sample, load_celeba_folder, load_digits, load_mnist, split
from .diffusion import Schedule, denoising_loss, training_loss
from .mlp import ResidualMLP
from .unet import UNet

__all__ = ["TrainConfig", "train", "load_checkpoint", "checkpoint_steps", "build_model", "prepare_data"]


@dataclass
class TrainConfig:
    """Everything a run depends on (written to config.json and into every checkpoint)."""

    data: str = "digits"  # digits | mnist | celeba | gmm (SM B) | ts-<family> (time-series windows)
    data_dir: str | None = None  # CelebA folder
    image_size: int = 8
    gmm_dim: int = 8  # d of the Gaussian mixture
    model: str = "unet"  # unet (images; 1-D for ts-* data) | mlp (the SM B residual MLP, vectors)
    seq_len: int = 64  # time-series window length
    n_train: int = 64
    n_holdout: int = 256
    width: int = 16
    mults: tuple = (1, 2)
    attention: tuple = (False, True)
    n_res: int = 2
    dropout: float = 0.1
    n_steps_diffusion: int = 1000
    optimizer: str = "adam"  # sgd (momentum, the paper's default) | adam
    lr: float = 1e-3
    momentum: float = 0.95
    batch_size: int = 128  # the batch is min(n_train, batch_size)
    noise_draws: int = 1  # m: each batch item enters the loss m times with fresh (t, noise)
    steps: int = 2000
    n_checkpoints: int = 20
    first_checkpoint: int = 1  # the log-spaced checkpoint grid runs from here to ``steps``
    eval_index: int = 40
    eval_draws: int = 5
    seed: int = 0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)

    @classmethod
    def gmm(cls, **overrides) -> "TrainConfig":
        """The paper's Gaussian-mixture setting (SM B): d = 8, residual MLP W = 128, full batch, Adam 6e-4."""
        base = dict(data="gmm", model="mlp", gmm_dim=8, width=128, optimizer="adam", lr=6e-4,
                    batch_size=1 << 30, dropout=0.0, n_holdout=2000)
        base.update(overrides)
        return cls(**base)

    @property
    def sample_shape(self) -> tuple:
        """The shape of one item: (d,) for the mixture, (1, S, S) for images."""
        if self.data == "gmm":
            return (self.gmm_dim,)
        if self.data.startswith("ts-"):
            return (1, self.seq_len)
        return (1, self.image_size, self.image_size)

    @classmethod
    def paper(cls, **overrides) -> "TrainConfig":
        """The paper's CelebA configuration (SM A.1): W = 32, 32x32, SGD 0.01 momentum 0.95, B = 512."""
        base = dict(data="celeba", image_size=32, width=32, mults=(1, 2, 4),
                    attention=(False, True, True), optimizer="sgd", lr=0.01, momentum=0.95,
                    batch_size=512, steps=2_000_000, n_checkpoints=40, n_holdout=2048)
        base.update(overrides)
        return cls(**base)

    def to_json(self) -> str:
        d = asdict(self)
        d["mults"], d["attention"] = list(self.mults), list(self.attention)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        d["mults"], d["attention"] = tuple(d["mults"]), tuple(d["attention"])
        return cls(**d)


def checkpoint_steps(total: int, n: int, first: int = 1) -> list[int]:
    """About ``n`` log-spaced steps from ``first`` to ``total`` (both included)."""
    if not 1 <= first <= total:
        raise ValueError(f"the first checkpoint must be in [1, steps={total}], got {first}")
    grid = np.round(np.logspace(np.log10(first), np.log10(total), n))
    return sorted(set(int(s) for s in grid) | {total})


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    if cfg.model == "mlp":
        dim = {"gmm": cfg.gmm_dim}.get(cfg.data, cfg.seq_len if cfg.data.startswith("ts-")
                                       else cfg.image_size**2)
        return ResidualMLP(dim, cfg.width, 3, cfg.n_steps_diffusion)
    if cfg.model != "unet":
        raise ValueError(f"model must be 'unet' or 'mlp', got {cfg.model!r}")
    if cfg.data == "gmm":
        raise ValueError("the Gaussian mixture is vector data: use model='mlp'")
    dims = 1 if cfg.data.startswith("ts-") else 2
    return UNet(cfg.width, cfg.mults, cfg.attention, cfg.n_res, 1, cfg.dropout, cfg.n_steps_diffusion,
                dims=dims)


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
        from ..ts_diffusion.data import load_windows

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


# ----------------------------------------------------------------------------- checkpoints
def _save_checkpoint(path: Path, cfg, step, model, opt, gen, rng, mean):
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars = {}
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"config": cfg.to_json(), "step": str(step), "data_mean": repr(mean),
            "optim_param_groups": json.dumps(opt_state["param_groups"]),
            "optim_scalars": json.dumps(scalars), "numpy_rng": json.dumps(rng.bit_generator.state)}
    with atomic_path(path) as tmp:  # a killed run never leaves a half-written checkpoint
        save_file(tensors, tmp, metadata=meta)


def load_checkpoint(path) -> dict:
    """Read a checkpoint (safetensors: no pickle is executed): model weights, config, step, states.

    Raises :class:`~reference_models.ddpm.checkpoints.CheckpointError` (a ``ValueError``) naming
    the file when it is truncated, empty, not safetensors or lacks the run's metadata.
    """
    from safetensors import SafetensorError, safe_open

    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} cannot be read: {problem}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return {
            "config": TrainConfig.from_json(meta["config"]),
            "step": int(meta["step"]),
            "data_mean": float(meta["data_mean"]),
            "model": {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
            "tensors": tensors,
            "meta": meta,
        }
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None


def _restore(ck, model, opt, gen, rng):
    model.load_state_dict(ck["model"])
    state = {}
    for k, v in ck["tensors"].items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for k, v in json.loads(ck["meta"]["optim_scalars"]).items():
        pid, key = k.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state,
                         "param_groups": json.loads(ck["meta"]["optim_param_groups"])})
    gen.set_state(ck["tensors"]["rng.generator"])
    torch.set_rng_state(ck["tensors"]["rng.torch"])
    rng.bit_generator.state = json.loads(ck["meta"]["numpy_rng"])


def _resume_point(run: Path):
    """The latest checkpoint that loads (falling back past unreadable ones, with a warning)."""
    for path in reversed(readable_checkpoints(run)):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:  # the header opened but the tensors did not
            warnings.warn(f"{exc}; trying the previous checkpoint", RunFileWarning, stacklevel=2)
    return None


def _other_config(run: Path, cfg: TrainConfig) -> bool:
    """Whether run/config.json holds a different run (unreadable or absent: no)."""
    try:
        theirs = TrainConfig.from_json((run / "config.json").read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return theirs.to_json() != cfg.to_json()


# ----------------------------------------------------------------------------- training
def train(cfg: TrainConfig, run_dir, *, resume: bool = True, stop_after: int | None = None,
          log=print) -> Path:
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
    """
    if int(cfg.noise_draws) < 1:
        raise ValueError(f"noise_draws must be >= 1, got {cfg.noise_draws}")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    for folder in (run, run / "checkpoints"):  # temporaries left by killed runs
        remove_stale_temporaries(folder)
    x_train, x_hold, mean, tr_idx, ho_idx = prepare_data(cfg)
    model = build_model(cfg).to(cfg.device)
    opt = _make_optimizer(cfg, model)
    schedule = Schedule.linear(cfg.n_steps_diffusion)
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
        if ck["config"].to_json() != cfg.to_json():
            raise ValueError(f"{run} holds a run with another config; use a new folder or resume=False")
        _restore(ck, model, opt, gen, rng)
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
        loss = training_loss(model, xb, schedule, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        count += 1
        if step in grid:
            rec = {
                "step": step,
                "loss": running / count,
                "train_loss_eval": denoising_loss(model, x_train, schedule, cfg.eval_index,
                                                  draws=cfg.eval_draws, seed=cfg.seed),
                "holdout_loss_eval": denoising_loss(model, x_hold, schedule, cfg.eval_index,
                                                    draws=cfg.eval_draws, seed=cfg.seed),
                "eval_index": cfg.eval_index,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            append_stats(run, rec)
            _save_checkpoint(checkpoint_path(run, step), cfg, step, model, opt, gen, rng, mean)
            log(f"step {step:>8d}  loss {rec['loss']:.4f}  train@{cfg.eval_index} "
                f"{rec['train_loss_eval']:.4f}  held-out@{cfg.eval_index} {rec['holdout_loss_eval']:.4f}")
            running, count = 0.0, 0
    return run


def main(argv=None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m reference_models.ddpm.train",
                                description="Train the reference U-Net DDPM (resumes a run folder).")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds checkpoints)")
    p.add_argument("--data", choices=["digits", "mnist", "celeba", "gmm", "ts-sines", "ts-ar",
                                      "ts-regimes", "ts-pig"], default=d.data,
                   help="gmm: the paper's SM B mixture, trained with the residual MLP; ts-*: "
                   "time-series windows (reference_models.ts_diffusion) with the 1-D U-Net")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="ts-*: window length")
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
    p.add_argument("--device", default=d.device)
    a = p.parse_args(argv)
    mults = (1, 2, 4)[: a.levels]
    model = a.model or ("mlp" if a.data == "gmm" else "unet")
    cfg = TrainConfig(data=a.data, data_dir=a.data_dir, image_size=a.image_size, n_train=a.n_train,
                      gmm_dim=a.gmm_dim, model=model, seq_len=a.seq_len,
                      n_holdout=a.n_holdout, width=a.width, mults=mults,
                      attention=tuple(i > 0 for i in range(a.levels)), optimizer=a.optimizer,
                      lr=a.lr, noise_draws=a.noise_draws, batch_size=a.batch_size, steps=a.steps,
                      n_checkpoints=a.n_checkpoints, first_checkpoint=a.first_checkpoint,
                      seed=a.seed, device=a.device)
    train(cfg, a.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
