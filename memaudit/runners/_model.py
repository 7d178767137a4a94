"""What the runners share about a diffusers model: its config fields, sampling it into a Dataset
with its convention declared, and the three model-based membership attacks, calibrated.

diffusers itself is imported only by :mod:`memaudit.adapters.diffusers`, and only when a model is
loaded; every refusal about a model folder comes before that (one line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
import numpy as np

from ..adapters.diffusers import (SAMPLE_CONVENTION, SAMPLERS, check_model_dir, sample,
                                  sample_seeds)
from ..probes.calibration import calibrated_attack, calibration_split
from ..probes.diffusion_attacks import loss_attack, pia_attack, secmi_attack
from ..sources import Dataset
from ._common import defaults_of, option

__all__ = ["ModelSampling", "calibrate", "model_field", "generated_samples", "check_sampling", "model_attacks",
           "ATTACKS", "parse_timesteps", "check_timesteps", "attack_table"]

_SAMPLE = defaults_of(sample)
_LOSS = defaults_of(loss_attack)
_SECMI = defaults_of(secmi_attack)
# name -> (function, what it is): the model-based attacks of memaudit.probes.diffusion_attacks
ATTACKS = {"loss": (loss_attack, "loss attack (Matsumoto et al. 2023)"),
           "pia": (pia_attack, "PIA (Kong et al. 2024)"),
           "secmi": (secmi_attack, "SecMI-stat (Duan et al. 2023)")}

_FIELDS = {
    "model": lambda **cli: option(None, "a local diffusers model folder: a saved DDPMPipeline / "
                                  "DDIMPipeline, or a UNet2DModel folder (with --scheduler); "
                                  "never a hub id", kind="path", metavar="DIR",
                                  default_text="none", **cli),
    "scheduler": lambda **cli: option(None, "the model's scheduler: a folder holding "
                                      "scheduler_config.json, or that file", kind="path",
                                      metavar="PATH", default_text="the model's scheduler/ "
                                      "folder", **cli),
    "n_samples": lambda **cli: option(500, "samples drawn from the model (sample i from its "
                                      "own seed)", metavar="N", **cli),
    "sampler": lambda **cli: option(_SAMPLE["sampler"], "sampler: DDIM (eta 0), ancestral "
                                    "DDPM, or the scheduler class saved with the model",
                                    choices=SAMPLERS, **cli),
    "steps": lambda **cli: option(_SAMPLE["steps"], "inference steps of the sampler",
                                  metavar="N", **cli),
    "batch_size": lambda **cli: option(_SAMPLE["batch_size"], "items per forward pass of the "
                                       "model", metavar="B", **cli),
    "device": lambda **cli: option(_SAMPLE["device"], "torch device of the model (cpu, cuda, "
                                   "cuda:1)", kind="text", **cli),
    "timesteps": lambda **cli: option(",".join(map(str, _LOSS["timesteps"])), "timesteps the "
                                      "model attacks try (chosen on the calibration half); SecMI "
                                      f"uses those that are multiples of {_SECMI['interval']}",
                                      kind="text", metavar="T,T,...", **cli),
}


def model_field(name: str, **cli):
    """A config field about the model (``model``, ``scheduler``, ``n_samples``, ``sampler``,
    ``steps``, ``batch_size``, ``device``, ``timesteps``), its help and default written once."""
    return _FIELDS[name](**cli)


@dataclass
class ModelSampling:
    """The sampling fields every config that samples a model has (a base of AuditConfig and
    TrackConfig): the scheduler, how many samples, the sampler, its steps, the batch and device."""

    scheduler: object = model_field("scheduler", group="model")
    n_samples: int = model_field("n_samples", group="model")
    sampler: str = model_field("sampler", group="model")
    steps: int = model_field("steps", group="model")
    batch_size: int = model_field("batch_size", group="model")
    device: str = model_field("device", group="model")


def parse_timesteps(value) -> tuple:
    """``"10,50,100"`` or a sequence of ints -> a tuple of ints (one line when unreadable)."""
    try:
        ts = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"timesteps (--timesteps) must be integers like 10,50,100, got "
                         f"{value!r}") from None
    if not ts:
        raise ValueError("timesteps (--timesteps) is empty")
    return ts


def check_timesteps(value, n_train_timesteps: int) -> tuple:
    """The timesteps, checked against the schedule's length T, before any work."""
    ts = parse_timesteps(value)
    bad = [t for t in ts if not 1 <= t < n_train_timesteps]
    if bad:
        raise ValueError(f"timesteps (--timesteps) must lie in [1, {n_train_timesteps - 1}] "
                         f"(the scheduler has {n_train_timesteps} steps), got {bad}")
    return ts


def n_train_timesteps(scheduler_file) -> int:
    """T of a scheduler config file (read without diffusers)."""
    return int(json.loads(open(scheduler_file).read()).get("num_train_timesteps", 1000))


def check_sampling(config) -> None:
    """The sampling settings of a config, refused in one line before any work."""
    from .._validation import check_positive_int

    check_positive_int(config.n_samples, "n_samples (--n-samples)", 2)
    check_positive_int(config.steps, "steps (--steps)")
    check_positive_int(config.batch_size, "batch_size (--batch-size)")
    if config.sampler not in SAMPLERS:
        raise ValueError(f"sampler (--sampler) must be one of {SAMPLERS}, got {config.sampler!r}")


def generated_samples(model, config, *, name: str = "samples", progress=None) -> tuple:
    """Sample ``config.n_samples`` items from ``model`` (a DiffusionModel) as a Dataset.

    Returns ``(dataset, record)``: the Dataset holds pixels in [0, 1] channels-last, with ids
    ``sample-i``; ``record`` says what made them (folder, sampler, steps, seeds, the conversion)
    for the report.
    """
    x = sample(model, config.n_samples, seed=config.seed, steps=config.steps,
               batch_size=config.batch_size, sampler=config.sampler, progress=progress)
    seeds = sample_seeds(config.seed, config.n_samples)
    record = {"model": model.describe(), "sampler": config.sampler, "steps": config.steps,
              "n_samples": int(config.n_samples), "seed": config.seed,
              "seeds": f"sample i from torch.Generator().manual_seed(s_i), s_i = first 63 bits of "
                       f"numpy.random.SeedSequence([{config.seed}, i]) "
                       f"(memaudit.adapters.diffusers.sample_seeds); s_0 = {int(seeds[0])}",
              "conversion": SAMPLE_CONVENTION}
    ds = Dataset(x=x.reshape(len(x), -1), ids=np.array([f"sample-{i}" for i in range(len(x))]),
                 item_shape=tuple(x.shape[1:]), source=f"model {model.source} ({config.sampler}, "
                 f"{config.steps} steps)", kind="array")
    return ds, record


def sample_declarations(ranges: dict, layouts: dict, item_shape, name: str = "samples"):
    """The declared convention of generated samples ([0, 1], channels-last), refusing a user's
    declaration for them: the adapter knows what they are."""
    if name in ranges or name in layouts:
        raise ValueError(f"--range/--layout {name}=... does not apply with --model: the samples "
                         f"are made here ({SAMPLE_CONVENTION}); declare the other inputs instead")
    ranges = {**ranges, name: "0,1"}
    if len(item_shape) == 3:
        layouts = {**layouts, name: "HWC"}
    return ranges, layouts


def check_model_shape(model_dir: str, scheduler, ds, name: str) -> None:
    """Refuse, before sampling, a model whose images have another number of values than ``ds``."""
    unet_dir, _, _ = check_model_dir(model_dir, scheduler)
    cfg = json.loads((unet_dir / "config.json").read_text())
    size = cfg.get("sample_size", 0)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    c = int(cfg.get("out_channels", cfg.get("in_channels", 3)))
    if ds is not None and h * w * c != ds.x.shape[1]:
        raise ValueError(f"the model makes {h}x{w} images with {c} channels ({h * w * c} values) "
                         f"but {name} has {ds.x.shape[1]} values per item")


def calibrate(ms, ns, member_ids, nonmember_ids, *, fraction, n_bootstrap, confidence, seed):
    """Split (stratified, seeded); choose the setting and threshold on one half, report the
    other."""
    def n_of(s):
        return len(next(iter(s.values()))) if isinstance(s, dict) else len(s)

    split = calibration_split(n_of(ms), n_of(ns), fraction=fraction, seed=seed,
                              member_ids=member_ids, nonmember_ids=nonmember_ids)
    return calibrated_attack(ms, ns, split, n_bootstrap=n_bootstrap, confidence=confidence,
                             seed=seed)


def model_attacks(model, members: Dataset, nonmembers: Dataset, *, timesteps, batch_size: int,
                  device: str, fraction: float, n_bootstrap: int, confidence: float,
                  seed: int) -> dict:
    """Loss, PIA and SecMI on a diffusers model, each calibrated on one half and reported on the
    other (the same split for the three): ``{name: CalibratedAttack}``.

    The members and non-members go to the model's space once (:func:`to_model_space`).
    """
    from ..adapters.diffusers import noise_predictor, to_model_space
    eps = noise_predictor(model.unet, model.scheduler, batch_size=batch_size, device=device)
    xm = to_model_space(members.x, members.item_shape, members.convention, model.unet.config)
    xn = to_model_space(nonmembers.x, nonmembers.item_shape, nonmembers.convention,
                        model.unet.config)
    out = {}
    for name, (fn, _) in ATTACKS.items():
        ts = timesteps
        kw = {"seed": seed} if name == "loss" else {}
        if name == "secmi":
            ts = tuple(t for t in timesteps if t % _SECMI["interval"] == 0) or (_SECMI["timesteps"])
        ms, ns = fn(eps, xm, ts, **kw), fn(eps, xn, ts, **kw)
        out[name] = calibrate(ms, ns, members.ids, nonmembers.ids, fraction=fraction,
                               n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return out


def attack_table(results: dict) -> list:
    """One line per attack: its evaluation AUC with the interval shown first, and the timestep."""
    from ..results import interval_text

    lines = []
    for name, res in results.items():
        ev = res.to_dict(per_sample=False)["evaluation"]
        lines.append(f"  {ATTACKS[name][1]}: AUC {interval_text(ev['auc'], ev['confidence'])} "
                     f"(t = {res.setting})")
    return lines
