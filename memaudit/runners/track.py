"""The tracking runner: every checkpoint of a training run sampled with the same seeds, then
f_mem with its held-out control, quality, the model attacks' AUC per checkpoint, tau_gen, tau_mem
and the checkpoint to keep (:func:`memaudit.tracking.track_memorization`), as one report.

Runs it reads:

- a diffusers training run (``train_unconditional.py`` and the like): ``RUN/checkpoint-N/unet``
  (and ``unet_ema`` when the run keeps an EMA copy, tracked and reported separately), the
  scheduler from ``RUN/scheduler/`` or ``--scheduler``. Checkpoints are ordered by their step
  number N (checkpoint-100 before checkpoint-1000).
- any other run a **run sampler** recognises: an installed entry point in the group
  ``memaudit.runs`` (reference_models registers its DDPM runs there; memaudit never imports it).
  A run sampler is ``sampler(run, *, n_samples, seed, steps, log=None)`` returning None for a run
  it does not know, else ``{"samples_by_step": {step: array (n, ...)}, "sampler": str, ...}``
  with samples in the space of the training data (sample i from the same seed at every step),
  and optionally ``"range": "LO,HI"``, the samples' declared range (pixels far outside it are
  then a warning in the report, not a refusal: an early checkpoint may diverge).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import check_fraction, check_seed
from ..conventions import harmonize
from ..probes.nn_ratio import NNRatioProbe
from ..probes.calibration import calibration_split
from ._common import (STATS, Run, _load, check_out, declarations, defaults_of, option,
                      option_errors, out_option, package_versions, parsed_declarations,
                      progress_option, resolved)
from ._model import ATTACKS, ModelSampling, model_field

__all__ = ["TrackConfig", "TrackRun", "run_tracking", "diffusers_checkpoints", "run_samplers"]

SETS = ("train", "holdout", "members", "nonmembers")
VARIANTS = ("unet", "unet_ema")
_NN = defaults_of(NNRatioProbe)
_SPLIT = defaults_of(calibration_split)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


@dataclass
class TrackConfig(ModelSampling):
    """``memaudit track``: every field's meaning and default is in its ``help``."""

    run: object = option(None, "a training run folder: a diffusers run (checkpoint-N/unet) or a "
                         "run a run sampler knows (reference_models)", kind="path",
                         required=True, metavar="DIR", group="inputs")
    train: object = option(None, "training items", kind="path", required=True, metavar="PATH",
                           group="inputs")
    holdout: object = option(None, "held-out real items: the control of f_mem and the reference "
                             "of quality, recommended", kind="path", metavar="PATH",
                             default_text="none: no control, no quality", group="inputs")
    members: object = option(None, "items the model trained on, for the model attacks per "
                             "checkpoint (with --nonmembers)", kind="path", metavar="PATH",
                             default_text="none: no attacks", group="inputs")
    nonmembers: object = option(None, "held-out items for the model attacks", kind="path",
                                metavar="PATH", default_text="none", group="inputs")
    ranges: object = declarations("range", SETS, group="inputs")
    layouts: object = declarations("layout", SETS, group="inputs")
    # (and, from ModelSampling: scheduler, n_samples, sampler, steps, batch_size, device)
    timesteps: object = model_field("timesteps", group="model")
    threshold: float = option(_NN["threshold"], "flag d1/d2 < K (Bonnaire et al. 2025, Eq. 6)",
                              metavar="K", group="statistics")
    quality: str = option("frechet", "quality of each checkpoint's samples against the held-out "
                          "items: Fréchet distance (tau_gen on its log-improvement) or energy "
                          "distance (linear)", choices=("frechet", "energy"), group="statistics")
    calibration_fraction: float = option(_SPLIT["fraction"], "model attacks: share of each side "
                                         "used for calibration", metavar="F", group="statistics")
    n_bootstrap: int = option(STATS.n_bootstrap, "bootstrap resamples for intervals",
                              metavar="B", group="statistics")
    confidence: float = option(STATS.confidence, "interval level", group="statistics")
    seed: int = option(STATS.seed, "seed of the samples (the same at every checkpoint), the "
                       "split and the bootstraps", group="statistics")
    out: object = out_option("tracking", group="output")
    progress: bool | None = progress_option(group="output")


@dataclass
class TrackRun(Run):
    """What :func:`run_tracking` returns: one TrainingCurve per tracked weights, the attacks."""

    curves: dict = field(default_factory=dict)  # "unet" / "unet_ema" / "model" -> TrainingCurve
    attacks: dict | None = None  # variant -> {step: {name: CalibratedAttack}}
    checkpoints: list = field(default_factory=list)  # {"step", "path", "variants"}
    generation: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    elapsed: float = 0.0

    def write(self, out_dir) -> dict:
        """Write tracking.json and tracking.html into ``out_dir``; returns their paths."""
        from ..report.tracking import write_tracking_report

        self.paths = write_tracking_report(
            out_dir, self.curves, self.attack_rows(), config=resolved(self.config),
            versions=package_versions(), inputs=self.inputs, notes=self.notes,
            elapsed=self.elapsed, checkpoints=self.checkpoints, generation=self.generation)
        return self.paths

    def attack_rows(self) -> dict | None:
        """variant -> one row per checkpoint: the step and, per attack, its evaluation AUC (value,
        interval shown first) and the timestep chosen on calibration."""
        if self.attacks is None:
            return None
        out = {}
        for variant, by_step in self.attacks.items():
            rows = []
            for step, res in by_step.items():
                row = {"step": int(step)}
                for name, r in res.items():
                    d = r.to_dict(per_sample=False)
                    row[name] = {"attack": ATTACKS[name][1], "timestep": d["setting"],
                                 "auc": d["evaluation"]["auc"],
                                 "n_members": d["evaluation"]["n_members"],
                                 "n_nonmembers": d["evaluation"]["n_nonmembers"]}
                rows.append(row)
            out[variant] = rows
        return out

    def summary(self) -> str:
        lines = []
        for variant, curve in self.curves.items():
            lines += [f"{variant}: f_mem over checkpoints ({curve.quality_name or 'no quality'})",
                      curve.summary()]
            rows = (self.attack_rows() or {}).get(variant)
            for row in rows or ():
                aucs = ", ".join(f"{k} {row[k]['auc']['value']:.3f}" for k in ATTACKS if k in row)
                lines.append(f"  step {row['step']}: attack AUC {aucs}")
        return "\n".join(lines + self._tail())

    def to_summary(self) -> dict:
        return {"curves": {k: c.to_dict(per_sample=False) for k, c in self.curves.items()},
                "steps": [c["step"] for c in self.checkpoints],
                "report": self._report_paths()}


def diffusers_checkpoints(run) -> list:
    """``[(step, folder)]`` of a diffusers run's ``checkpoint-N`` folders holding ``unet/``, in
    step order (by the number N, not by the name)."""
    out = []
    for p in Path(run).iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir() and (p / "unet").is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def run_samplers() -> list:
    """The installed run samplers: ``(name, callable)`` of the ``memaudit.runs`` entry points."""
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group="memaudit.runs"):
        try:
            found.append((ep.name, ep.load()))
        except ImportError:  # its package is installed without its dependencies (torch)
            continue
    return found


def _check(config: TrackConfig):
    """Everything refused before any file is read or any model sampled; returns the diffusers
    checkpoints (empty for a run left to the run samplers) and the scheduler file."""
    from ._model import check_model_dir, check_sampling, check_timesteps, n_train_timesteps
    from ..adapters.diffusers import _local_dir

    if config.run is None or config.train is None:
        raise ValueError("track needs a run (--run) and its training items (--train)")
    if (config.members is None) != (config.nonmembers is None):
        raise ValueError("the model attacks need both --members and --nonmembers")
    with option_errors(config, {"fraction": "calibration_fraction"}):
        check_sampling(config)
        check_seed(config.seed, "seed (--seed)")
        check_fraction(config.calibration_fraction, "fraction", low_open=True)
        check_fraction(config.confidence, "confidence")
        NNRatioProbe(threshold=config.threshold, n_bootstrap=config.n_bootstrap).check_params()
    parsed_declarations(config, SETS)
    run = _local_dir(config.run, "run")
    checkpoints = diffusers_checkpoints(run)
    sched_file = None
    for _, ck in checkpoints:  # every checkpoint's weights checked before the first is sampled
        for variant in VARIANTS:
            if variant == "unet" or (ck / variant).is_dir():
                # the scheduler: --scheduler, else RUN/scheduler (two levels above the U-Net)
                _, sched_file, _ = check_model_dir(ck / variant, config.scheduler,
                                                   what="checkpoint")
    if not checkpoints and not run_samplers():
        raise ValueError(f"run {config.run} has no checkpoint-N/unet folders (a diffusers run) and "
                         "no run sampler is installed (entry point group memaudit.runs) for other "
                         "runs")
    if sched_file is not None and config.members is not None:
        check_timesteps(config.timesteps, n_train_timesteps(sched_file))
    check_out(config)
    return run, checkpoints, sched_file


def _diffusers_samples(config, checkpoints, sched_file, real, log) -> tuple:
    """variant -> {step: Dataset of samples}, the attacks per variant and step, what was read."""
    from ..adapters.diffusers import load_model
    from ._model import generated_samples, model_attacks, parse_timesteps

    by_variant, attacks, listed, generation = {}, {}, [], {}
    for step, ck in checkpoints:
        variants = [v for v in VARIANTS if (ck / v).is_dir()]
        listed.append({"step": step, "path": str(ck), "variants": variants})
        for v in variants:
            model = load_model(ck / v, sched_file, device=config.device, what="checkpoint")
            ds, record = generated_samples(model, config, progress=config.progress)
            by_variant.setdefault(v, {})[step] = ds
            generation = {k: w for k, w in record.items() if k != "model"}
            generation["scheduler"] = str(sched_file)
            if real.get("members") is not None:
                attacks.setdefault(v, {})[step] = model_attacks(
                    model, real["members"], real["nonmembers"],
                    timesteps=parse_timesteps(config.timesteps), batch_size=config.batch_size,
                    device=config.device, fraction=config.calibration_fraction,
                    n_bootstrap=config.n_bootstrap, confidence=config.confidence,
                    seed=config.seed)
            log(f"sampled {config.n_samples} at {ck.name}/{v}")
    return by_variant, (attacks or None), listed, generation


def _hook_samples(config, run, log) -> tuple:
    for name, sampler in run_samplers():
        got = sampler(run, n_samples=config.n_samples, seed=config.seed, steps=config.steps,
                      log=log)
        if got is None:
            continue
        by_step = {}
        for step, x in sorted(got["samples_by_step"].items()):
            x = np.asarray(x, dtype=np.float32)
            by_step[int(step)] = _dataset(x, f"run {run} step {step} ({name} run sampler)")
        listed = [{"step": s, "path": str(run), "variants": ["model"]} for s in by_step]
        if got.get("range"):
            by_step = {s: (ds, got["range"]) for s, ds in by_step.items()}
        generation = {"run_sampler": name, "n_samples": config.n_samples, "seed": config.seed,
                      **{k: v for k, v in got.items() if k != "samples_by_step"}}
        return {"model": by_step}, listed, generation
    raise ValueError(f"run {run} has no checkpoint-N/unet folders (a diffusers run) and no "
                     "installed run sampler (entry point group memaudit.runs) recognises it")


def _dataset(x, source):
    from ..sources import Dataset

    return Dataset(x=x.reshape(len(x), -1), ids=np.array([f"sample-{i}" for i in range(len(x))]),
                   item_shape=tuple(x.shape[1:]), source=source, kind="array")


def run_tracking(config: TrackConfig, log=None) -> TrackRun:
    """Track memorization over the checkpoints of ``config.run`` (see the module).

    Returns
    -------
    TrackRun
        ``.curves`` (variant -> :class:`memaudit.tracking.TrainingCurve`), ``.attacks``,
        ``.checkpoints``; ``.paths`` when ``config.out`` is set.
    """
    from ..tracking import track_memorization
    from ._model import sample_declarations

    log = log or (lambda text: None)
    run, checkpoints, sched_file = _check(config)
    t0 = time.perf_counter()
    ranges, layouts = parsed_declarations(config, SETS)
    loaded = {k: _load(getattr(config, k), k, config) for k in SETS}
    real, notes = harmonize(loaded, ranges=ranges, layouts=layouts)
    attacks = None
    if checkpoints:
        from ._model import check_model_shape

        check_model_shape(checkpoints[0][1] / "unet", sched_file, real["train"], "train")
        samples, attacks, listed, generation = _diffusers_samples(config, checkpoints,
                                                                  sched_file, real, log)
    else:
        samples, listed, generation = _hook_samples(config, run, log)
    train, holdout = real["train"], real["holdout"]
    keep = {k: ranges[k] for k in ("train",) if k in ranges}, \
        {k: layouts[k] for k in ("train",) if k in layouts}
    curves = {}
    for variant, by_step in samples.items():
        flat = {}
        for step, ds in by_step.items():
            r, la = keep
            if checkpoints:
                r, la = sample_declarations(r, la, ds.item_shape)
            elif isinstance(ds, tuple):  # a run sampler's samples with their declared range
                ds, r = ds[0], {**r, "samples": ds[1]}
            conv, _ = harmonize({"train": train, "samples": ds}, ranges=r, layouts=la)
            flat[step] = np.asarray(conv["samples"].x)
        curves[variant] = track_memorization(
            flat, np.asarray(train.x), None if holdout is None else np.asarray(holdout.x),
            threshold=config.threshold, quality=config.quality,
            tau_gen_scale="linear" if config.quality == "energy" else "log",
            n_bootstrap=config.n_bootstrap, confidence=config.confidence, seed=config.seed,
            progress=config.progress)
    for variant, c in curves.items():
        notes.append(f"{variant}: {c.window_text()} (best quality before tau_mem).")
    if holdout is None:
        notes.append("warning: no --holdout: f_mem has no control, and quality, tau_gen and the "
                     "recommended checkpoint are not computed")
    inputs = {k: v.describe() for k, v in real.items() if v is not None}
    inputs["run"] = {"source": str(run), "checkpoints": len(listed)}
    tr = TrackRun(config=config, curves=curves, attacks=attacks, checkpoints=listed,
                  generation=generation, inputs=inputs, notes=notes,
                  elapsed=time.perf_counter() - t0)
    if config.out is not None:
        tr.write(config.out)
    return tr
