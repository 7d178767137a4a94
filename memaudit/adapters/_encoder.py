"""What every image encoder shares: 8-bit images in, a local weights file, batches, the disk cache.

An encoder (:class:`memaudit.adapters.clip.ClipEncoder`, the DINOv2, SSCD and Inception encoders of
:mod:`memaudit.adapters.features`) is a network, a PIL transform and a ``_forward``; this module
holds the one code path around them:

    images -> 8-bit PIL images (to_uint8) -> content keys -> cache lookup -> the missing ones
    through ``preprocess`` and ``_forward`` in batches -> L2-normalised (when the space's
    criterion is a cosine) -> the cache

The cache (:class:`FeatureCache`) is keyed by the extractor, the model name, the SHA-256 of the
weights file, the preprocessing (its version and description) and each image's 8-bit content. Its
files are written atomically (:mod:`memaudit.io`); a file that cannot be read is ignored with a
warning, removed, and its features computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..io import atomic_savez, atomic_write_json
from .._progress import Progress
from .images import image_layout

__all__ = ["to_uint8", "file_sha256", "read_state_dict", "FeatureCache", "ImageEncoder",
           "default_cache_dir", "local_weights", "WeightsNotFound"]


def default_cache_dir() -> Path:
    """``$MEMAUDIT_CACHE/features``, else ``$XDG_CACHE_HOME/memaudit/features``, else
    ``~/.cache/memaudit/features``."""
    if os.environ.get("MEMAUDIT_CACHE"):
        return Path(os.environ["MEMAUDIT_CACHE"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memaudit" / "features"


def file_sha256(path) -> str:
    """The SHA-256 of a file, as ``sha256sum`` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: Path, torch) -> dict:
    """A state dict from ``.safetensors`` or a torch file read with ``weights_only=True``.

    No pickle is executed. A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is opened and a
    ``module.`` prefix (DataParallel) removed.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValueError(f"cannot read weights file {path} as safetensors ({exc})") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if zipfile.is_zipfile(path) and _is_torchscript(path):
            first = "it is a TorchScript file, not a state dict"
        raise ValueError(f"cannot read weights file {path} as a state dict ({first})") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


def to_uint8(images) -> list[np.ndarray]:
    """A batch of images as the 8-bit arrays PIL will hold: (H, W) gray or (H, W, 3) RGB each.

    uint8 is kept; uint16 is read on its full scale (x / 65535, rounded to 8 bits as x / 257);
    floats must lie in [0, 1] and are rounded as ``round(x * 255)`` (diffusers' ``numpy_to_pil``).
    Anything else is refused with the observed range and the fix.
    """
    try:
        x = np.asarray(images)
    except ValueError as exc:  # a ragged list
        raise ValueError(f"images must be one array of equally shaped images ({exc})") from None
    if x.ndim not in (3, 4) or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch of images (n, H, W), (n, H, W, C) or "
                         f"(n, C, H, W), got shape {x.shape}")
    layout = image_layout(x.shape[1:])
    if layout not in ("HW", "HWC", "CHW"):
        alpha = "; drop an alpha channel with images[..., :3]" if 4 in x.shape[1:] else ""
        raise ValueError(f"images of shape {x.shape[1:]} are not (H, W), (H, W, C) or (C, H, W) "
                         f"with C in (1, 3) and H, W >= 2{alpha}")
    if layout == "CHW":
        x = np.moveaxis(x, 1, -1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    kind = x.dtype.kind
    if x.dtype == np.uint8:
        out = x
    elif x.dtype == np.uint16:
        hi = int(x.max())
        if hi <= 255:
            raise ValueError(f"uint16 images are read on the 16-bit scale 0..65535, but these "
                             f"reach only {hi}: if they hold 8-bit pixels, pass "
                             f"images.astype(np.uint8)")
        out = ((x.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)  # round(x / 257)
    elif kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            raise ValueError(f"images contain {int(x.size - finite.sum())} NaN or Inf values; "
                             f"clean or drop those images first")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            if lo >= -1 and hi <= 1:
                fix = "they look like [-1, 1]: pass (images + 1) / 2"
            elif lo >= 0 and 2 < hi <= 255:
                fix = "they look like 0..255: pass images / 255"
            else:
                fix = "clip or rescale them to [0, 1]"
            raise ValueError(f"float images must lie in [0, 1] (or pass uint8 0..255); observed "
                             f"range [{lo:.4g}, {hi:.4g}]: {fix}")
        out = np.rint(x.astype(np.float64) * 255).astype(np.uint8)
    else:
        what = f"values {x.min()}..{x.max()}" if kind in "iu" else "not pixels"
        raise TypeError(f"images of dtype {x.dtype} ({what}) are not accepted: pass uint8 "
                        f"0..255, uint16 0..65535 or floats in [0, 1]")
    return list(np.ascontiguousarray(out))


def content_key(image: np.ndarray) -> str:
    """The cache key of one 8-bit image: a digest of its shape and pixels."""
    return hashlib.blake2b(image.tobytes() + repr(image.shape).encode(), digest_size=16).hexdigest()


class FeatureCache:
    """Features on disk, one folder per (extractor, model, weights SHA-256, preprocessing).

    The folder ``root/<extractor>/<key>/`` holds ``meta.json`` (the parts of the key, readable)
    and shards ``<digest>.npz`` (arrays ``keys``: image content digests, ``features``), one per run
    that computed something new; every shard is read. A shard that cannot be read, or that belongs
    to another key, is ignored with a warning (in :attr:`warnings`) and removed.

    Parameters
    ----------
    root : path
        The cache root (e.g. :func:`default_cache_dir`).
    parts : dict
        ``extractor``, ``model``, ``weights_sha256``, ``preprocess`` (JSON-safe values).
    """

    def __init__(self, root, parts: dict):
        self.parts = dict(parts)
        blob = json.dumps(self.parts, sort_keys=True).encode()
        self.key = hashlib.sha256(blob).hexdigest()[:32]
        self.folder = Path(root) / str(parts["extractor"]) / self.key
        self.warnings: list[str] = []

    def load(self) -> dict:
        """Every cached ``content key -> feature vector`` of this key."""
        out: dict = {}
        if not self.folder.is_dir():
            return out
        for shard in sorted(self.folder.glob("*.npz")):
            if shard.name.startswith("."):
                continue  # a temporary of a write in progress
            try:
                with np.load(shard, allow_pickle=False) as z:
                    if str(z["cache_key"]) != self.key:
                        raise ValueError("written for another model or preprocessing")
                    keys, feats = z["keys"], z["features"]
                    if feats.ndim != 2 or len(keys) != len(feats):
                        raise ValueError(f"keys {keys.shape} and features {feats.shape} disagree")
                    out.update(zip(keys.tolist(), feats))
            except Exception as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.warnings.append(f"warning: feature cache file {shard} is unreadable ({why}); "
                                     f"ignored and removed, its features computed again")
                try:
                    shard.unlink()
                except OSError:
                    pass
        return out

    def save(self, new: dict) -> None:
        """Store ``content key -> feature vector`` entries as one new shard (atomic write)."""
        if not new:
            return
        keys = np.array(sorted(new))
        feats = np.stack([np.asarray(new[k], dtype=np.float32) for k in keys.tolist()])
        name = hashlib.blake2b("\n".join(keys.tolist()).encode(), digest_size=12).hexdigest()
        meta = self.folder / "meta.json"
        if not meta.exists():
            atomic_write_json(meta, {**self.parts, "cache_key": self.key})
        atomic_savez(self.folder / f"{name}.npz", keys=keys, features=feats,
                     cache_key=np.array(self.key))


class ImageEncoder:
    """The shared half of every image encoder: conversion, batches, cache, normalisation.

    A subclass sets, in its ``__init__``, ``extractor`` (the registry name), ``model_name``,
    ``weights`` (a Path), ``net``, ``preprocess`` (PIL image -> tensor), ``preprocess_key`` (a text
    naming the preprocessing and its version), ``device``, ``batch_size``, ``cache_dir``,
    ``progress``, and calls :meth:`_ready`; it defines :meth:`_forward` (a batch tensor -> one
    feature row per image).

    Attributes
    ----------
    last_cache_hits : int
        Images of the last :meth:`encode` call found in the cache.
    n_encoded : int
        Images this encoder has run through the network (over all calls): what a cached re-run
        does not increase.
    weights_sha256 : str
    cache_warnings : list of str
        Unreadable cache files met, one line each.
    """

    extractor = ""
    normalize = True  # L2-normalise: the criteria of these spaces are cosines

    def _ready(self, torch) -> None:
        self._torch = torch
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.batch_size = int(self.batch_size)
        self.weights_sha256 = file_sha256(self.weights)
        self.last_cache_hits = 0
        self.n_encoded = 0
        self.cache_warnings: list[str] = []

    @property
    def cache_parts(self) -> dict:
        """What the cache is keyed by, besides each image's content."""
        return {"extractor": self.extractor, "model": self.model_name,
                "weights_sha256": self.weights_sha256, "preprocess": self.preprocess_key}

    def _forward(self, batch):
        raise NotImplementedError

    def _prepare(self, images: list[np.ndarray]):
        """8-bit images -> the model's input batch, each through the PIL transform."""
        from PIL import Image

        torch = self._torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny per-image tensor ops: threads cost more than they give
        try:
            batch = torch.stack([self.preprocess(Image.fromarray(im)) for im in images])
        finally:
            torch.set_num_threads(threads)
        return batch.to(self.device)

    def encode(self, images) -> np.ndarray:
        """Features of a batch of images (see :func:`to_uint8` for the accepted dtypes and ranges).

        Returns
        -------
        ndarray (n, dim) float32
            One row per image, L2-normalised when the encoder's ``normalize`` is set.
        """
        return self.encode_chunks([images])

    def encode_chunks(self, chunks, total: int | None = None) -> np.ndarray:
        """:meth:`encode` over an iterable of image batches, reading and writing the cache once."""
        cache = None if self.cache_dir is None else FeatureCache(self.cache_dir, self.cache_parts)
        known = {} if cache is None else cache.load()
        if cache is not None:
            self.cache_warnings += cache.warnings
        new: dict = {}
        rows: list[np.ndarray] = []
        self.last_cache_hits = 0
        torch = self._torch
        with Progress(total or 0, f"{self.extractor} {self.model_name}", self.progress) as bar, \
                torch.no_grad():
            for chunk in chunks:
                images = to_uint8(chunk)
                keys = [content_key(im) for im in images]
                self.last_cache_hits += sum(k in known for k in keys)
                first: dict[str, int] = {}
                for i, k in enumerate(keys):
                    if k not in known and k not in new:
                        first.setdefault(k, i)  # identical images are encoded once
                todo = list(first)
                for s in range(0, len(todo), self.batch_size):
                    part = todo[s : s + self.batch_size]
                    out = self._forward(self._prepare([images[first[k]] for k in part])).float()
                    if out.ndim != 2 or out.shape[0] != len(part):
                        raise ValueError(f"{self.extractor} weights file {self.weights} gives "
                                         f"output of shape {tuple(out.shape)} for {len(part)} "
                                         f"images, not one feature vector per image")
                    if self.normalize:
                        out = torch.nn.functional.normalize(out, dim=-1)
                    new.update(zip(part, out.cpu().numpy()))
                    self.n_encoded += len(part)
                rows.append(np.stack([known[k] if k in known else new[k] for k in keys]))
                bar.update(len(keys))
        if cache is not None:
            cache.save(new)
        return np.concatenate(rows).astype(np.float32)


class WeightsNotFound(FileNotFoundError, ValueError):
    """A weights file that is not there (or a hub name given instead of a file): a bad setting."""


# suffixes of weights files; a missing path without one of these is taken for a hub name or tag
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pkl", ".torchscript")


def local_weights(weights, what: str) -> Path:
    """The local weights file ``weights``, or one line saying why it is not one.

    A URL, a hub name (``facebook/dinov2-small``) or a pretrained tag (``openai``) is refused:
    memaudit never downloads. ``what`` names the encoder in the message.
    """
    if weights is None or str(weights).strip() == "":
        raise ValueError(f"{what}: give the path of a local weights file; memaudit does not "
                         f"download models (docs/adapters/features.md says where each comes from)")
    text = str(weights)
    fix = ("memaudit never downloads: save the file once (docs/adapters/features.md says from "
           "where), check its SHA-256 and pass its local path")
    if "://" in text or text.startswith(("hf-hub:", "hf_hub:", "timm/")):
        raise ValueError(f"{what}: {text!r} is a URL or hub name, not a local file; {fix}")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise ValueError(f"{what}: {text} is not a file; pass the weights file itself")
    looks_local = text.startswith((".", "~", os.sep)) or path.name.lower().endswith(WEIGHT_SUFFIXES)
    if not looks_local:
        raise WeightsNotFound(f"{what}: {text!r} is not a local file and looks like a hub name or "
                         f"pretrained tag; {fix}")
    raise WeightsNotFound(f"{what}: weights file {text} does not exist; give the path of the "
                            f"local file (docs/adapters/features.md says where each comes from)")
