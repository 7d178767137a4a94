"""diffusers models in memaudit: local folders in, samples and noise predictions out.

    model = load_model("ddpm-pipeline/")                      # a save_pretrained folder
    x = sample(model, n=500, seed=0, steps=50)                # (500, H, W[, C]) pixels in [0, 1]
    eps = noise_predictor(model.unet, model.scheduler)        # memaudit's NoisePredictor

What is read (local folders only: a string that is not an existing folder, such as the hub id
``google/ddpm-cifar10-32``, is refused before diffusers is imported, and diffusers is called with
``local_files_only=True`` and the Hugging Face offline switch on):

- a pipeline folder written by ``DDPMPipeline.save_pretrained`` / ``DDIMPipeline.save_pretrained``
  (``model_index.json``, ``unet/``, ``scheduler/``);
- a ``UNet2DModel`` folder (``config.json`` and ``diffusion_pytorch_model.safetensors``) with its
  scheduler: ``scheduler=`` a folder holding ``scheduler_config.json`` or that file itself, else the
  ``scheduler/`` folder beside the U-Net's (the layout of a diffusers training run, whose
  ``checkpoint-N/unet`` sits below the run's ``scheduler/``).

Weights load from safetensors only (``use_safetensors=True``); a folder that holds only ``.bin``
pickles is refused in one line, never unpickled.

The convention of the samples (:data:`SAMPLE_CONVENTION`): the U-Net works in [-1, 1] channels-first
(as every diffusers image pipeline); :func:`sample` converts once, x / 2 + 0.5 clipped to [0, 1] as
``DDPMPipeline`` does, and returns channels-last arrays ``(n, H, W, C)``, or ``(n, H, W)`` for one
channel, the layout memaudit reads image folders in. :func:`to_model_space` is the inverse, for
the items the membership attacks score. Sample i starts from the noise of a generator seeded with
``sample_seeds(seed, n)[i]``, which depends on (seed, i) only: sample i of a batch equals sample i
drawn alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._progress import Progress
from ..probes.diffusion_attacks import NoisePredictor

__all__ = ["DiffusionModel", "SAMPLERS", "SAMPLE_CONVENTION", "check_model_dir", "load_model",
           "noise_predictor", "sample", "sample_seeds", "to_model_space"]

SAMPLERS = ("ddim", "ddpm", "saved")
SAMPLE_CONVENTION = ("model output in [-1, 1] (channels-first) converted once to pixels in "
                     "[0, 1]: x / 2 + 0.5, clipped to [0, 1] (as DDPMPipeline does), "
                     "channels-last")
_WEIGHTS = "diffusion_pytorch_model"
_SCHEDULER_FILE = "scheduler_config.json"


def _require():
    """Import diffusers and torch with Hugging Face offline, or one line naming the extra."""
    from .clip import _force_offline

    _force_offline()
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise ImportError("the diffusers adapter needs diffusers and torch: pip install "
                          "'memaudit[diffusers]'") from exc
    return diffusers, torch


def _local_dir(path, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists():
        raise ValueError(f"{what} {path} is a file; give the folder written by save_pretrained")
    hub = isinstance(path, str) and path.count("/") == 1 and not path.startswith((".", "/", "~"))
    why = (" looks like a Hugging Face hub id; memaudit reads local folders only and never "
           "downloads: fetch it yourself (huggingface-cli download ID --local-dir DIR) and pass "
           "DIR" if hub else " does not exist (memaudit reads local folders only, never the hub)")
    raise ValueError(f"{what} {path}{why}")


def _check_weights(unet_dir: Path) -> None:
    safe = list(unet_dir.glob(f"{_WEIGHTS}*.safetensors"))
    if safe:
        return
    if list(unet_dir.glob(f"{_WEIGHTS}*.bin")) or list(unet_dir.glob("*.bin")):
        raise ValueError(f"{unet_dir} holds only .bin weights (pickles, which memaudit never "
                         "loads); save it again with save_pretrained(DIR, safe_serialization=True)"
                         " to write diffusion_pytorch_model.safetensors")
    raise ValueError(f"{unet_dir} has no {_WEIGHTS}.safetensors; give a folder written by "
                     "UNet2DModel.save_pretrained or a pipeline's save_pretrained")


def _scheduler_path(path) -> Path:
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return p
    if p.is_dir() and (p / _SCHEDULER_FILE).is_file():
        return p / _SCHEDULER_FILE
    if p.is_dir() and (p / "scheduler" / _SCHEDULER_FILE).is_file():
        return p / "scheduler" / _SCHEDULER_FILE
    raise ValueError(f"scheduler {path} is neither a {_SCHEDULER_FILE} file nor a folder holding "
                     "one (a pipeline's scheduler/ folder)")


def check_model_dir(path, scheduler=None, *, what: str = "model") -> tuple[Path, Path, str]:
    """Where a model's U-Net and scheduler config are, or one line saying why not (no diffusers).

    Parameters
    ----------
    path : str or Path
        A pipeline folder, a ``UNet2DModel`` folder, or a folder holding ``unet/`` (and
        ``scheduler/``).
    scheduler : str or Path, optional
        A scheduler folder or ``scheduler_config.json``; default the pipeline's or the one beside
        the U-Net.
    what : str
        How the message names ``path`` ("model", "checkpoint").

    Returns
    -------
    (unet_dir, scheduler_file, kind)
        ``kind`` is "pipeline" (model_index.json) or "unet".
    """
    root = _local_dir(path, what)
    kind = "pipeline" if (root / "model_index.json").is_file() else "unet"
    if (root / "config.json").is_file():
        unet_dir = root
    elif (root / "unet" / "config.json").is_file():
        unet_dir = root / "unet"
    else:
        raise ValueError(f"{what} {path} is not a diffusers folder: no model_index.json with "
                         "unet/, and no config.json of a UNet2DModel")
    cfg = json.loads((unet_dir / "config.json").read_text())
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"{unet_dir} holds a {cfg.get('_class_name')}; memaudit samples "
                         "unconditional UNet2DModel pipelines (DDPMPipeline, DDIMPipeline)")
    _check_weights(unet_dir)
    if scheduler is not None:
        return unet_dir, _scheduler_path(scheduler), kind
    for cand in (root / "scheduler", unet_dir.parent / "scheduler",
                 unet_dir.parent.parent / "scheduler"):
        if (cand / _SCHEDULER_FILE).is_file():
            return unet_dir, cand / _SCHEDULER_FILE, kind
    raise ValueError(f"{what} {path} has no scheduler: no scheduler/{_SCHEDULER_FILE} beside its "
                     "U-Net; give --scheduler (a scheduler folder or its scheduler_config.json)")


@dataclass
class DiffusionModel:
    """A loaded U-Net and its scheduler, with where they came from.

    Attributes
    ----------
    unet : diffusers.UNet2DModel
        In eval mode, on ``device``.
    scheduler : diffusers scheduler
        The training scheduler as saved (its ``alphas_cumprod`` are the attacks' alpha-bar).
    source, unet_dir, scheduler_file : str
    kind : {"pipeline", "unet"}
    device : str
    """

    unet: object
    scheduler: object
    source: str
    unet_dir: str
    scheduler_file: str
    kind: str
    device: str = "cpu"

    def describe(self) -> dict:
        cfg = self.unet.config
        return {"source": self.source, "kind": self.kind, "unet": self.unet_dir,
                "scheduler": self.scheduler_file,
                "scheduler_class": type(self.scheduler).__name__,
                "num_train_timesteps": int(self.scheduler.config.num_train_timesteps),
                "prediction_type": self.scheduler.config.get("prediction_type", "epsilon"),
                "sample_size": cfg.sample_size, "in_channels": int(cfg.in_channels)}


def load_model(path, scheduler=None, *, device: str = "cpu", what: str = "model") -> DiffusionModel:
    """Load a local diffusers folder (see the module) into a :class:`DiffusionModel`.

    Every refusal (not a local folder, no scheduler, .bin weights only) comes before diffusers is
    imported, in one line.
    """
    unet_dir, sched_file, kind = check_model_dir(path, scheduler, what=what)
    diffusers, torch = _require()
    unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True,
                                                 local_files_only=True, low_cpu_mem_usage=False)
    cfg = json.loads(sched_file.read_text())
    name = cfg.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(f"{sched_file}: unknown scheduler class {name!r}")
    sched = cls.from_config(cfg)
    if not hasattr(sched, "alphas_cumprod"):
        raise ValueError(f"{sched_file}: {name} has no alphas_cumprod; memaudit needs a DDPM-type "
                         "noise schedule (DDPMScheduler, DDIMScheduler)")
    unet.eval().to(device)
    return DiffusionModel(unet, sched, str(path), str(unet_dir), str(sched_file), kind, device)


def _as_model(model, scheduler=None, device="cpu") -> DiffusionModel:
    if isinstance(model, DiffusionModel):
        return model
    if hasattr(model, "unet") and hasattr(model, "scheduler"):  # a DDPMPipeline / DDIMPipeline
        return DiffusionModel(model.unet.eval(), model.scheduler, type(model).__name__, "in memory",
                              "in memory", "pipeline", str(model.unet.device))
    return load_model(model, scheduler, device=device)


def _eps_from_output(out, x_t, ab_t, prediction_type: str):
    """The noise eps from a U-Net output of the scheduler's prediction type (x_t = sqrt(ab) x0 +
    sqrt(1 - ab) eps; v = sqrt(ab) eps - sqrt(1 - ab) x0, Salimans & Ho 2022)."""
    if prediction_type == "epsilon":
        return out
    if prediction_type == "sample":
        return (x_t - ab_t.sqrt() * out) / (1 - ab_t).sqrt()
    if prediction_type == "v_prediction":
        return ab_t.sqrt() * out + (1 - ab_t).sqrt() * x_t
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def noise_predictor(unet, scheduler, *, batch_size: int = 64,
                    device: str = "cpu") -> NoisePredictor:
    """memaudit's :class:`~memaudit.probes.diffusion_attacks.NoisePredictor` for a diffusers U-Net.

    ``eps(x, t)`` runs ``unet(x, t).sample`` on ``device`` without gradients, in batches of
    ``batch_size``, on items in the model's space ([-1, 1], channels-first: see
    :func:`to_model_space`); a U-Net trained to predict ``sample`` or ``v_prediction`` is converted
    to its noise. alpha-bar comes from ``scheduler.alphas_cumprod``.

    Examples
    --------
    >>> model = noise_predictor(unet, scheduler)  # doctest: +SKIP
    >>> scores = loss_attack(model, to_model_space(members, unet.config))  # doctest: +SKIP
    """
    _, torch = _require()
    unet = unet.eval().to(device)
    ab = scheduler.alphas_cumprod.detach().cpu().to(torch.float64).numpy()
    ptype = scheduler.config.get("prediction_type", "epsilon")
    if ptype not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"prediction_type {ptype!r} of the scheduler is not one of epsilon, "
                         "sample, v_prediction")
    dtype = next(unet.parameters()).dtype
    ab_t_all = torch.from_numpy(ab)

    @torch.no_grad()
    def eps(x, t):
        xt = torch.from_numpy(x).to(device=device, dtype=dtype)
        tt = torch.from_numpy(t).to(device)
        out = unet(xt, tt).sample
        a = ab_t_all[torch.from_numpy(t)].to(device=device, dtype=out.dtype)
        a = a.view(-1, *[1] * (out.ndim - 1))
        return _eps_from_output(out, xt, a, ptype).float().cpu().numpy()

    return NoisePredictor(eps, ab, batch_size=batch_size)


def sample_seeds(seed: int, n: int) -> np.ndarray:
    """The generator seed of samples 0..n-1: sample i's depends on (seed, i) only.

    ``numpy.random.SeedSequence([seed, i])``'s first 63-bit word, so runs with different seeds do
    not share streams (as ``seed + i`` would) and sample i is the same whatever n is.
    """
    return np.array([int(np.random.SeedSequence([int(seed), i]).generate_state(2, np.uint64)[0]
                         >> np.uint64(1)) for i in range(int(n))], dtype=np.int64)


def _sampler(scheduler, sampler: str, diffusers):
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "saved":
        return type(scheduler).from_config(scheduler.config)
    cls = diffusers.DDIMScheduler if sampler == "ddim" else diffusers.DDPMScheduler
    return cls.from_config(scheduler.config)


def sample(pipeline_or_dir, n: int | None = None, seed: int = 0, steps: int = 50,
           batch_size: int = 64, *, seeds=None, sampler: str = "ddim", scheduler=None,
           device: str = "cpu", progress=None) -> np.ndarray:
    """Draw ``n`` samples as pixels in [0, 1], channels-last (:data:`SAMPLE_CONVENTION`).

    Parameters
    ----------
    pipeline_or_dir : DiffusionModel, a DDPMPipeline / DDIMPipeline, or a local folder
        See the module for the folders read.
    n : int
        Number of samples (or give ``seeds``).
    seed : int, default=0
        Sample i uses the generator seed ``sample_seeds(seed, n)[i]``.
    steps : int, default=50
        Inference steps of the sampler.
    batch_size : int, default=64
    seeds : sequence of int, optional
        The generator seed of each sample, instead of ``n`` and ``seed`` (to redraw sample i
        alone: ``seeds=sample_seeds(seed, i + 1)[i:]``).
    sampler : {"ddim", "ddpm", "saved"}, default="ddim"
        DDIM (eta = 0: the initial noise is the only randomness), ancestral DDPM (each step's
        noise from the sample's own generator), or the scheduler class saved with the model; all
        built from the saved scheduler's config (its beta schedule and prediction type).
    scheduler : str or Path, optional
        The scheduler, for a U-Net folder without one beside it.
    device : str, default="cpu"
    progress : bool or None

    Returns
    -------
    ndarray of shape (n, H, W, C), or (n, H, W) for one channel, float32 in [0, 1]
    """
    diffusers, torch = _require()
    model = _as_model(pipeline_or_dir, scheduler, device)
    if seeds is None:
        if n is None or int(n) < 1:
            raise ValueError(f"n (--n-samples) must be at least 1, got {n}")
        seeds = sample_seeds(seed, n)
    seeds = [int(s) for s in seeds]
    steps, batch_size = int(steps), int(batch_size)
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be at least 1")
    sched = _sampler(model.scheduler, sampler, diffusers)
    sched.set_timesteps(steps)
    unet = model.unet
    dev = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size,) * 2
    shape = (int(cfg.in_channels), int(size[0]), int(size[1]))
    bar = Progress(len(seeds), "sampling", progress)
    out = []
    for s in range(0, len(seeds), batch_size):
        # the noise of each sample from its own CPU generator: the same on every device and batch
        gens = [torch.Generator("cpu").manual_seed(v) for v in seeds[s : s + batch_size]]
        x = torch.cat([torch.randn((1,) + shape, generator=g) for g in gens]).to(dev, dtype)
        x = x * sched.init_noise_sigma
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(x, t), t).sample
                # DDPM's step noise through randn_tensor: one draw per sample from its generator
                x = sched.step(eps, t, x, generator=gens).prev_sample
        out.append((x.float() / 2 + 0.5).clamp(0, 1).cpu().numpy())
        bar.update(len(gens))
    bar.close()
    x = np.concatenate(out).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x[..., 0] if x.shape[-1] == 1 else x, dtype=np.float32)


def to_model_space(x, item_shape, convention, unet_config) -> np.ndarray:
    """Items read as pixels (memaudit's convention) -> the U-Net's space: [-1, 1], (n, C, H, W).

    Parameters
    ----------
    x : array of shape (n, d)
        Flattened items (a Dataset's ``x``).
    item_shape : tuple
        One item's shape.
    convention : memaudit.conventions.Convention
        Its range and layout; pixels of unknown range are refused (declare ``--range``).
    unet_config : the U-Net's config (in_channels, sample_size)
    """
    size = unet_config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    c = int(unet_config.in_channels)
    if convention is None or convention.kind != "pixels" or convention.value_range is None:
        raise ValueError("the members are not pixels of a known range; declare it (e.g. --range "
                         "0,1) so they can be put in the model's [-1, 1]")
    lo, hi = convention.value_range
    arr = np.asarray(x, dtype=np.float32).reshape((len(x),) + tuple(item_shape))
    if convention.layout == "CHW":
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[1:] != (h, w, c):
        raise ValueError(f"items are {arr.shape[1]}x{arr.shape[2]} images with {arr.shape[-1]} "
                         f"channels but the model's U-Net takes {h}x{w} with {c}")
    arr = 2 * (arr - lo) / (hi - lo) - 1
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
