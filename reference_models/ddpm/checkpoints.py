"""The files of a training run that readers share: its checkpoints and its stats.jsonl.

The one module that knows the checkpoint format: it writes checkpoints (:func:`save_checkpoint`),
lists them (:func:`readable_checkpoints`), reads them (:func:`load_checkpoint`, the config alone
with :func:`checkpoint_config` or :func:`run_config`), rebuilds the model of one
(:func:`load_model`) and restores the training state for resume (:func:`restore_training_state`).
Every reader of a run (resume in ``train``, ``track``, ``membership``, ``sweep``, ``demo``,
``ts_diffusion``) goes through these and reads the losses with :func:`read_stats`, so that a
damaged file is met the same way everywhere:

- a checkpoint that safetensors cannot open (truncated, empty, not safetensors: the write itself is
  atomic, but disks fill and copies stop half-way) or whose metadata lacks the run's config and
  step is skipped with a :class:`RunFileWarning` naming the file; resume then starts from the
  latest readable checkpoint;
- a line of stats.jsonl that is not a JSON record (a run killed while appending leaves a torn last
  line) is skipped with a warning naming the file and the line number.

Checkpoints are safetensors files: the model (``model.*``), the optimizer state (``optim.<param>.*``
tensors, its scalars and param groups as JSON in the metadata) and every random state (torch
generator and global state as tensors, numpy's bit generator as JSON), with the run's config and
step in the metadata. They are read with ``safetensors.safe_open``: a JSON header and raw tensor
bytes, no pickle.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from memaudit.io import atomic_path

from .config import TrainConfig, build_model

__all__ = ["RunFileWarning", "CheckpointError", "checkpoint_path", "checkpoint_files", "checkpoint_problem",
           "checkpoint_step", "checkpoint_config", "readable_checkpoints", "run_config",
           "save_checkpoint", "load_checkpoint", "load_model", "restore_training_state",
           "read_stats", "append_stats", "STATS_FILE"]

STATS_FILE = "stats.jsonl"
_PATTERN = "step_*.safetensors"
_REQUIRED_META = ("config", "step")


class RunFileWarning(UserWarning):
    """A file of a run folder could not be read and was skipped."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read (truncated, empty, not safetensors, or missing metadata)."""


def checkpoint_path(run, step: int) -> Path:
    """``run/checkpoints/step_XXXXXXXX.safetensors``."""
    return Path(run) / "checkpoints" / f"step_{int(step):08d}.safetensors"


def checkpoint_files(run) -> list[Path]:
    """Every ``run/checkpoints/step_*.safetensors``, readable or not, in step order."""
    return sorted((Path(run) / "checkpoints").glob(_PATTERN))


def checkpoint_problem(path) -> str | None:
    """Why ``path`` is not a readable checkpoint (one phrase), or None when it is.

    Opens the safetensors header only (it checks that the tensor data covers the whole file, so a
    truncated file is caught without reading the tensors) and the metadata keys the run needs.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        return f"not a readable safetensors file ({exc})"
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        return f"its metadata lacks {', '.join(missing)} (not a reference_models checkpoint)"
    try:
        int(meta["step"])
        json.loads(meta["config"])
    except ValueError as exc:
        return f"its metadata is damaged ({exc})"
    return None


def checkpoint_step(path) -> int:
    """The training step recorded in a readable checkpoint's metadata (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["step"])


def checkpoint_config(path) -> TrainConfig:
    """The run config recorded in a readable checkpoint's metadata (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return TrainConfig.from_json(f.metadata()["config"])


def readable_checkpoints(run, *, every: int = 1, required: bool = False) -> list[Path]:
    """The run's checkpoints that can be read, in step order; every ``every``-th of them.

    Each unreadable checkpoint is skipped with a :class:`RunFileWarning` that names it.
    ``required=True`` raises ``FileNotFoundError`` when none is left.
    """
    if int(every) < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    files = []
    for path in checkpoint_files(run):
        problem = checkpoint_problem(path)
        if problem is None:
            files.append(path)
        else:
            warnings.warn(f"skipping checkpoint {path}: {problem}", RunFileWarning)
    if required and not files:
        raise FileNotFoundError(f"{run} has no readable checkpoints (checkpoints/{_PATTERN})")
    return files[::every]


def run_config(run) -> TrainConfig:
    """The config of ``run``, from its latest readable checkpoint (``FileNotFoundError`` if none)."""
    return checkpoint_config(readable_checkpoints(run, required=True)[-1])


def read_stats(run) -> list[dict]:
    """The records of ``run/stats.jsonl`` (an empty list when it does not exist).

    A line that is not a JSON object with a ``step`` (a torn last line from a killed run) is
    skipped with a :class:`RunFileWarning` naming the file and the line.
    """
    path = Path(run) / STATS_FILE
    if not path.exists():
        return []
    records = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and isinstance(rec.get("step"), int)
        except ValueError:
            ok = False
        if ok:
            records.append(rec)
        else:
            warnings.warn(f"skipping line {number} of {path}: not a complete JSON record "
                          "(torn by a killed run?)", RunFileWarning)
    return records


def append_stats(run, record: dict) -> None:
    """Append one record to ``run/stats.jsonl``, flushed and fsynced (a kill tears one line at most)."""
    with open(Path(run) / STATS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(path, cfg: TrainConfig, step: int, model, opt, gen, rng, mean: float) -> None:
    """Write the checkpoint of ``step`` atomically: model, optimizer and random states, config.

    ``gen`` is the torch generator of the loss's timesteps and noise, ``rng`` numpy's generator of
    the batches, ``mean`` the training-subset mean subtracted from the data; the global torch RNG
    state (dropout) is saved too, so that :func:`restore_training_state` resumes bit-identically.
    """
    import torch
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

    Returns a dict with ``config`` (:class:`TrainConfig`), ``step``, ``data_mean``, ``model`` (the
    state dict), ``tensors`` (every tensor) and ``meta`` (the raw metadata). Raises
    :class:`CheckpointError` (a ``ValueError``) naming the file when it is truncated, empty, not
    safetensors or lacks the run's metadata.
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


def load_model(path):
    """The model of a checkpoint, in eval mode, and the checkpoint itself: ``(model, checkpoint)``.

    The network is rebuilt from the config in the checkpoint's metadata (:func:`build_model`) and
    its weights loaded; ``checkpoint`` is what :func:`load_checkpoint` returns.
    """
    ck = load_checkpoint(path)
    model = build_model(ck["config"])
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def restore_training_state(ck: dict, model, opt, gen, rng) -> None:
    """Put a loaded checkpoint's weights, optimizer state and random states back (for resume)."""
    import torch

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
