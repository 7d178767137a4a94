"""Several runs of a sweep trained together in one process: the GPU path of the n-sweep.

    python -m reference_models.ddpm.batched --setting digits --out runs/gpu --n 64 128 256 512 1024 \
        --seeds 0 1 2 --optimizer sgd --lr 0.01 --device cuda

Each run keeps everything that makes it itself: its n, seed, training subset (``prepare_data``), its
initial weights (``build_model``, seeded), its own torch generator for the timesteps and noise of
the loss (seed + 1) and numpy generator for the batches (seed + 2), drawn in the same order as
``reference_models.ddpm.train``, and its own optimizer state (the paper's SGD with momentum 0.95, or
Adam). The K models' weights are stacked (``torch.func.stack_module_state``) and one forward and
backward pass of ``torch.func.vmap(functional_call)`` serves all of them; the optimizer runs on the
stacked tensors, which is exact because SGD and Adam update every element on its own (the step
count is shared, so only runs at the same step are stacked together: a fresh sweep is one group,
resumed runs are grouped by the step they resume from). A run that reaches its last step leaves the
stack. Dropout masks come from the global generator through ``vmap(randomness="different")``,
seeded as ``train`` seeds it: with one run in the stack they are the single-run loop's masks; with
several they are other (equally random) masks.

Every run folder is what ``train`` writes: config.json, split.npz, stats.jsonl (the same keys,
the held-out loss at ``eval_index``) and checkpoints in the same safetensors format
(``checkpoints.save_checkpoint``, optimizer state in torch's layout), so ``track``, ``sweep
--analyse-only`` and ``train`` itself (resume) read them unchanged. The config's ``device`` is the
device the run was trained on.

The command above trains the whole design, samples every checkpoint on the device (DDIM, the same
seeds and cache key as ``track``), tracks every run (``track.track_run`` reads the cached samples)
and writes the sweep's analysis (``sweep.analyse``: sweep.json, sweep.md, sweep.png) in ``--out``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from memaudit.io import atomic_savez, atomic_write_text, remove_stale_temporaries

from .checkpoints import (append_stats, checkpoint_path, read_stats, readable_checkpoints,
                          restore_training_state, save_checkpoint)
from .config import TrainConfig, build_model
from .diffusion import Schedule
from .objectives import check_sampler, corrupt, eval_level, eval_loss, generate
from .train import (_make_optimizer, _other_config, _resume_point, checkpoint_steps, prepare_data,
                    train)

__all__ = ["train_batched", "sample_runs", "time_steps", "main"]

# what must agree for models to share one vmapped network (everything but data, n, seed, steps)
_SHARED = ("data", "image_size", "gmm_dim", "model", "objective", "seq_len", "width", "mults", "attention",
           "n_res", "dropout", "n_steps_diffusion", "optimizer", "lr", "momentum", "noise_draws",
           "device")


class _Run:
    """One run of the stack: its config, data, generators, grid and a CPU model/optimizer for I/O."""

    def __init__(self, cfg: TrainConfig, run: Path, log):
        self.cfg, self.run, self.log = cfg, Path(run), log
        self.run.mkdir(parents=True, exist_ok=True)
        for folder in (self.run, self.run / "checkpoints"):
            remove_stale_temporaries(folder)
        x_train, x_hold, self.mean, tr_idx, ho_idx = prepare_data(cfg)
        self.model = build_model(cfg)  # seeded: the same initial weights as train()
        self.opt = _make_optimizer(cfg, self.model)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # timesteps and noise of the loss
        self.rng = np.random.default_rng(cfg.seed + 2)  # batches
        self.start = 0
        ck = _resume_point(self.run)
        if ck is not None:
            if ck["config"].to_json() != cfg.to_json():
                raise ValueError(f"{self.run} holds a run with another config; use a new folder")
            restore_training_state(ck, self.model, self.opt, self.gen, self.rng)
            self.start = ck["step"]
            kept = "".join(json.dumps(r) + "\n" for r in read_stats(self.run) if r["step"] <= self.start)
            atomic_write_text(self.run / "stats.jsonl", kept)
            log(f"resumed {self.run} at step {self.start}")
        elif _other_config(self.run, cfg):
            raise ValueError(f"{self.run} holds a run with another config (config.json); use a new folder")
        else:
            atomic_write_text(self.run / "config.json",
                              json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
            atomic_savez(self.run / "split.npz", train_indices=tr_idx, holdout_indices=ho_idx,
                         data_mean=self.mean)
            atomic_write_text(self.run / "stats.jsonl", "")
        self.x_train, self.x_hold = x_train.to(cfg.device), x_hold.to(cfg.device)
        self.n = self.x_train.shape[0]
        self.batch = min(self.n, cfg.batch_size)
        self.grid = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints, cfg.first_checkpoint))
        self.running, self.count = 0.0, 0

    def draw(self, schedule: Schedule):
        """The step's noisy batch, timesteps and regression target (the noise for DDPM, the
        velocity for flow matching), drawn as ``train`` draws them."""
        idx = np.arange(self.n) if self.batch == self.n else self.rng.choice(self.n, size=self.batch,
                                                                              replace=False)
        xb = self.x_train[torch.from_numpy(idx).to(self.x_train.device)]
        if self.cfg.noise_draws > 1:
            xb = xb.repeat(self.cfg.noise_draws, *([1] * (xb.ndim - 1)))
        t = torch.randint(1, schedule.n_steps, (xb.shape[0],), generator=self.gen, device="cpu")
        noise = torch.randn(xb.shape, generator=self.gen, dtype=xb.dtype)
        t, noise = t.to(xb.device), noise.to(xb.device)
        x_t, target = corrupt(self.cfg.objective, xb, t, noise, schedule)
        return x_t, t, target


def _check_stackable(cfgs) -> None:
    for key in _SHARED:
        values = {json.dumps(getattr(c, key)) for c in cfgs}
        if len(values) > 1:
            raise ValueError(f"runs trained together must share {key!r}; got {sorted(values)}: "
                             "train them in separate calls")


def _optimizer(cfg: TrainConfig, tensors: list):
    """``train``'s optimizer (the same settings) over these very tensors (not copies of them)."""
    from types import SimpleNamespace

    return _make_optimizer(cfg, SimpleNamespace(parameters=lambda: tensors))


def _stack_optimizer(runs, params: dict, cfg: TrainConfig):
    """A torch optimizer over the stacked parameters, its state stacked from the runs' own."""
    trainable = [p for p in params.values() if p.requires_grad]
    opt = _optimizer(cfg, trainable)
    names = [k for k, p in params.items() if p.requires_grad]
    per_run = [dict(r.model.named_parameters()) for r in runs]
    for name, p in zip(names, trainable):
        states = [r.opt.state.get(pr[name]) for r, pr in zip(runs, per_run)]
        if not states[0]:
            continue
        st = {}
        for key, v in states[0].items():
            if torch.is_tensor(v) and v.ndim > 0:
                st[key] = torch.stack([s[key] for s in states]).to(p.device)
            else:  # Adam's step: the same in every run of a stack
                st[key] = v.clone() if torch.is_tensor(v) else v
        opt.state[p] = st
    return opt, names


def _copy_into(model: torch.nn.Module, state: dict) -> None:
    """Copy in-memory tensors into ``model``'s persistent entries (every one, same shapes).

    Reading a checkpoint from disk stays in ``checkpoints``; this copies between the stack and
    the per-run CPU models."""
    own = model.state_dict()  # views of the parameters and buffers
    if set(own) != set(state):
        raise KeyError(f"state entries differ: {sorted(set(own) ^ set(state))}")
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)


def _write_back(run: _Run, k: int, params: dict, buffers: dict, opt, names) -> None:
    """Copy model k of the stack (weights and optimizer state) into the run's CPU model and optimizer."""
    keys = run.model.state_dict().keys()  # persistent entries only
    with torch.no_grad():
        state = {name: v[k].detach().cpu() for name, v in {**params, **buffers}.items() if name in keys}
        _copy_into(run.model, state)
    own = dict(run.model.named_parameters())
    stacked = dict(zip(names, [p for p in params.values() if p.requires_grad]))
    for name, p in stacked.items():
        st = opt.state.get(p)
        if st:
            run.opt.state[own[name]] = {key: (v[k].detach().cpu().clone() if torch.is_tensor(v) and v.ndim > 0
                                              else (v.detach().cpu().clone() if torch.is_tensor(v) else v))
                                        for key, v in st.items()}


def _train_stack(runs: list[_Run], schedule: Schedule, log, stop_after) -> None:
    from torch.func import functional_call, stack_module_state, vmap

    cfg = runs[0].cfg
    device = cfg.device
    start = runs[0].start
    for r in runs:
        r.model.train()
    params, buffers = stack_module_state([r.model.to(device) for r in runs])
    for r in runs:
        r.model.to("cpu")
    base = copy.deepcopy(runs[0].model).to("meta")
    base.train()
    opt, names = _stack_optimizer(runs, params, cfg)
    eval_model = copy.deepcopy(runs[0].model).to(device)

    def forward(p, b, x, t):
        return functional_call(base, (p, b), (x, t))

    batched = vmap(forward, randomness="different")
    alive = list(range(len(runs)))
    acc = torch.zeros(len(runs), dtype=torch.float64, device=device)
    for r in runs:
        r.running, r.count = 0.0, 0
    t0 = time.perf_counter()
    step = start
    end_of = [r.cfg.steps if stop_after is None else min(r.cfg.steps, stop_after) for r in runs]
    while alive:
        step += 1
        draws = [runs[i].draw(schedule) for i in alive]
        sizes = [d[0].shape[0] for d in draws]
        b_max = max(sizes)
        xs, ts, target = ([torch.nn.functional.pad(d[j], (0, 0) * (d[j].ndim - 1) + (0, b_max - d[j].shape[0]))
                          if d[j].shape[0] < b_max else d[j] for d in draws] for j in range(3))
        xs, ts, target = torch.stack(xs), torch.stack(ts), torch.stack(target)
        err = (batched(params, buffers, xs, ts) - target) ** 2
        if all(s == b_max for s in sizes):
            losses = err.flatten(1).mean(1)
        else:  # padded items (zeros) are masked out: each run's loss is the mean over its own batch
            mask = (torch.arange(b_max, device=device)[None, :] < torch.tensor(sizes, device=device)[:, None])
            per_item = err.flatten(2).mean(2)
            losses = (per_item * mask).sum(1) / mask.sum(1)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # model k's gradient is the gradient of its own loss
        opt.step()
        acc = acc + losses.detach().double()  # the running training loss, read at checkpoints
        done_now = []
        for k, i in enumerate(alive):
            r = runs[i]
            r.count += 1
            if step in r.grid:
                _write_back(r, k, params, buffers, opt, names)
                _copy_into(eval_model, r.model.state_dict())
                rec = {"step": step, "loss": float(acc[k] - r.running) / r.count,
                       "train_loss_eval": eval_loss(r.cfg, eval_model, r.x_train,
                                                    draws=r.cfg.eval_draws, seed=r.cfg.seed),
                       "holdout_loss_eval": eval_loss(r.cfg, eval_model, r.x_hold,
                                                      draws=r.cfg.eval_draws, seed=r.cfg.seed),
                       "eval_index": eval_level(r.cfg), "seconds": round(time.perf_counter() - t0, 2)}
                append_stats(r.run, rec)
                save_checkpoint(checkpoint_path(r.run, step), r.cfg, step, r.model, r.opt, r.gen, r.rng,
                                r.mean)
                r.log(f"[{r.run.name}] step {step:>8d}  loss {rec['loss']:.4f}  "
                      f"held-out@{rec['eval_index']} {rec['holdout_loss_eval']:.4f}")
                r.running, r.count = float(acc[k]), 0
            if step >= end_of[i]:
                done_now.append(k)
        if done_now:  # retire finished runs: restack the others (weights and optimizer state)
            keep = [k for k in range(len(alive)) if k not in done_now]
            alive = [alive[k] for k in keep]
            if not alive:
                break
            idx = torch.tensor(keep, device=device)
            old = [p for p in params.values() if p.requires_grad]
            params = {n: p.detach()[idx].clone().requires_grad_(p.requires_grad) for n, p in params.items()}
            buffers = {n: b[idx].clone() for n, b in buffers.items()}
            acc = acc[idx]
            new = [p for p in params.values() if p.requires_grad]
            new_opt = _optimizer(cfg, new)
            for po, pn in zip(old, new):
                st = opt.state.get(po)
                if st:
                    new_opt.state[pn] = {key: (v[idx].clone() if torch.is_tensor(v) and v.ndim > 0 else v)
                                         for key, v in st.items()}
            opt = new_opt


def train_batched(jobs, *, log=print, stop_after: int | None = None) -> list[Path]:
    """Train the runs ``jobs`` = [(TrainConfig, run folder), ...] together; returns the folders.

    Runs must share the network, the optimizer and the device (``cfg.device``); they differ in
    n, seed and number of steps. Each folder resumes from its last readable checkpoint as
    ``train`` does; runs resuming from different steps are trained in separate stacks, one after
    the other. ``stop_after`` ends every run after that step (as a kill would).
    """
    jobs = [(cfg, Path(run)) for cfg, run in jobs]
    if not jobs:
        raise ValueError("no runs to train")
    names = [str(run) for _, run in jobs]
    if len(set(names)) != len(names):
        raise ValueError("two runs share a folder: give each (n, seed) its own folder")
    _check_stackable([cfg for cfg, _ in jobs])
    if jobs[0][0].device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {jobs[0][0].device!r} asked for but torch sees no CUDA device; "
                         "use --device cpu")
    schedule = Schedule.linear(jobs[0][0].n_steps_diffusion)
    runs = [_Run(cfg, run, log) for cfg, run in jobs]  # build_model seeds the global generator
    if all(r.start == 0 for r in runs):  # dropout: vmap draws it from the global generator, seeded
        torch.manual_seed(jobs[0][0].seed + 3)  # as train() seeds it (resumed: the saved state)
    for start in sorted({r.start for r in runs}):
        stack = [r for r in runs if r.start == start
                 and r.start < (r.cfg.steps if stop_after is None else min(r.cfg.steps, stop_after))]
        if stack:
            log(f"training {len(stack)} runs together from step {start} on {stack[0].cfg.device}")
            _train_stack(stack, schedule, log, stop_after)
    return [run for _, run in jobs]


def sample_runs(runs, n_samples: int = 500, *, steps: int = 50, sampler: str | None = None,
                seed: int = 0, device: str = "cpu", log=None) -> None:
    """Sample every checkpoint of ``runs`` on ``device`` into each run's samples.npz, the cache that
    ``track.track_run`` reads (the same key and seeds: sample i from seed i), so tracking then
    samples nothing. DDIM on a GPU gives the CPU's samples to float rounding. ``sampler`` None:
    each run's own (DDIM, or the Euler ODE for a flow-matching run)."""
    from .checkpoints import checkpoint_config, load_model

    seeds = list(range(seed, seed + n_samples))
    for run in map(Path, runs):
        files = readable_checkpoints(run, required=True)
        used = check_sampler(checkpoint_config(files[-1]).objective, sampler)
        out = {}
        for path in files:
            model, ck = load_model(path)
            model.to(device)
            out[ck["step"]] = generate(ck["config"], model, seeds, sampler=used, steps=steps,
                                       device=device).numpy()
        atomic_savez(run / "samples.npz", key=np.array(f"{used}-{steps}-{n_samples}-{seed}"),
                     **{f"step_{k}": v for k, v in out.items()})
        if log:
            log(f"sampled {len(out)} checkpoints of {run.name} on {device}")


def time_steps(ks, cfg: TrainConfig, n_steps: int = 40, *, root=None) -> dict:
    """Seconds per training step of the single-run loop (``train``) and of K runs trained together,
    for each K in ``ks``, at the setting of ``cfg`` (its n, width, batch; seeds 0..K-1).

    Each is timed by training ``n_steps`` and ``2 n_steps`` steps (one checkpoint, at the end) and
    differencing (after a 2-step warm-up), which removes the start-up and the checkpoint's
    evaluation: the wall-clock
    ``seconds`` that stats.jsonl records, and this process's CPU time (``time.process_time``,
    which a machine shared with other jobs does not inflate as it does the wall clock). Returns
    ``{"loop": (wall, cpu), "K=1": (wall, cpu), ...}`` in seconds per step (for K runs, per step
    of all K together).
    """
    import tempfile

    def per_step(fn, name):
        with tempfile.TemporaryDirectory(dir=root) as tmp:  # warm-up: data loading, first calls
            fn(2, Path(tmp) / name)
        took = []
        for steps in (n_steps, 2 * n_steps):
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                c0 = time.process_time()
                wall = fn(steps, Path(tmp) / name)
                took.append((wall, time.process_time() - c0))
        return tuple((b - a) / n_steps for a, b in zip(took[0], took[1]))

    def loop(steps, run):
        c = replace(cfg, steps=steps, n_checkpoints=1, first_checkpoint=steps)
        train(c, run, log=lambda m: None)
        return read_stats(run)[-1]["seconds"]

    def stacked(k):
        def go(steps, run):
            jobs = [(replace(cfg, steps=steps, n_checkpoints=1, first_checkpoint=steps, seed=s),
                     run / f"s{s}") for s in range(k)]
            train_batched(jobs, log=lambda m: None)
            return read_stats(run / "s0")[-1]["seconds"]
        return go

    out = {"loop": per_step(loop, "loop")}
    for k in ks:
        out[f"K={k}"] = per_step(stacked(k), f"k{k}")
    return out


def _track(job):
    from .track import track_run

    run, n_samples, steps, sampler, quality = job
    torch.set_num_threads(1)
    track_run(run, n_samples, steps=steps, sampler=sampler, quality=quality)
    return run


def main(argv=None) -> int:
    from .sweep import _config, analyse, sweep_parser

    p = sweep_parser(prog="python -m reference_models.ddpm.batched",
                     description="Train a sweep's runs together (vmap over stacked weights), sample "
                     "on the device, track and analyse.")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0, ...)")
    p.add_argument("--group-size", type=int, default=0,
                   help="at most this many runs in one stack (0: all runs of one optimizer setting)")
    p.add_argument("--track-jobs", type=int, default=1, help="processes that track runs (CPU)")
    p.add_argument("--train-only", action="store_true", help="train, do not sample, track or analyse")
    p.add_argument("--no-train", action="store_true",
                   help="sample, track and analyse the design's runs already in --out (trained by "
                   "--train-only calls, e.g. one process per n)")
    p.add_argument("--time-steps", type=int, nargs="+", metavar="K",
                   help="only time a training step: the single-run loop and K runs together, at the "
                   "setting's config with n = the first --n (nothing is written to --out)")
    p.add_argument("--time-n-steps", type=int, default=40, help="steps per timing (then twice as many)")
    a = p.parse_args(argv)
    from .sweep import apply_setting_defaults

    try:
        apply_setting_defaults(a)
    except ValueError as exc:
        p.error(str(exc))
    torch.set_num_threads(a.threads)
    if a.time_steps:
        cfg = replace(_config(a.setting, a.n[0], 0, a), device=a.device)
        times = time_steps(a.time_steps, cfg, a.time_n_steps)
        print(f"ms per training step ({a.setting}, n = {a.n[0]}, W = {cfg.width}, batch "
              f"{min(cfg.n_train, cfg.batch_size)}, {cfg.optimizer}, {a.device}, {a.threads} thread(s)):")
        for name, (wall, cpu) in times.items():
            k = 1 if name == "loop" else int(name[2:])
            print(f"  {'single-run loop' if name == 'loop' else name + ' together':>16s}: "
                  f"wall {1000 * wall:8.1f} ms per step ({1000 * wall / k:7.1f} per run-step), "
                  f"CPU {1000 * cpu:8.1f} ms per step ({1000 * cpu / k:7.1f} per run-step)")
        return 0
    if a.early_steps:
        print("error: --early-steps is not supported by the batched path (set --early-steps 0)",
              file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(replace(_config(a.setting, n, s, a), device=a.device), out / f"n{n}-s{s}")
            for n in sorted(a.n) for s in a.seeds]
    size = a.group_size or len(jobs)

    def log(m):
        print(m, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if not a.no_train:
        try:
            for g in range(0, len(jobs), size):
                train_batched(jobs[g:g + size], log=log)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log(f"trained {len(jobs)} runs in {time.perf_counter() - t0:.1f} s")
    if a.train_only:
        return 0
    runs = [run for _, run in jobs if readable_checkpoints(run)]
    if not runs:
        print(f"error: no run of the design has checkpoints in {out}; train first", file=sys.stderr)
        return 2
    sample_runs(runs, a.n_samples, steps=a.ddim_steps, sampler=a.sampler, device=a.device, log=log)
    log(f"sampled at {time.perf_counter() - t0:.1f} s")
    quality = "energy" if a.setting == "gmm" else "frechet"
    tjobs = [(str(r), a.n_samples, a.ddim_steps, a.sampler, quality) for r in runs]
    if a.track_jobs > 1:
        with ProcessPoolExecutor(a.track_jobs) as pool:
            list(pool.map(_track, tjobs))
    else:
        for j in tjobs:
            _track(j)
    log(f"tracked at {time.perf_counter() - t0:.1f} s")
    from .sweep import table

    summary = analyse(out, [str(r) for r in runs], n_bootstrap=a.n_bootstrap, seed=a.seeds[0],
                      tau_gen_scale=a.tau_gen_scale, fit_n_min=a.fit_n_min)
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
