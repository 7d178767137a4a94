"""The files of a training run that readers share: its checkpoints and its stats.jsonl.

Every reader of a run (resume in ``train``, ``track``, ``membership``, ``sweep``, ``demo``,
``ts_diffusion``) lists checkpoints with :func:`readable_checkpoints` and reads the losses with
:func:`read_stats`, so that a damaged file is met the same way everywhere:

- a checkpoint that safetensors cannot open (truncated, empty, not safetensors: the write itself is
  atomic, but disks fill and copies stop half-way) or whose metadata lacks the run's config and
  step is skipped with a :class:`RunFileWarning` naming the file; resume then starts from the
  latest readable checkpoint;
- a line of stats.jsonl that is not a JSON record (a run killed while appending leaves a torn last
  line) is skipped with a warning naming the file and the line number.

Checkpoints are read with ``safetensors.safe_open``: a JSON header and raw tensor bytes, no pickle.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

__all__ = ["RunFileWarning", "CheckpointError", "checkpoint_path", "checkpoint_files", "checkpoint_problem",
           "checkpoint_step", "readable_checkpoints", "read_stats", "append_stats", "STATS_FILE"]

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
