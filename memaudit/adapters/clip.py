"""CLIP image embeddings through open_clip, from weights in a local file (nothing is downloaded).

    enc = ClipEncoder("ViT-B-32", weights="/models/vit_b_32.safetensors", cache_dir=".cache")
    emb = enc.encode(images)          # (n, 512) float32, unit norm

The model is built by name with random weights, then the user's file is loaded into it strictly
(safetensors, or a torch state dict read with ``weights_only=True``: no pickle is executed). A hub
tag such as "laion2b_s34b_b79k" is refused: memaudit never fetches weights. Embeddings are cached on
disk, keyed by the model (name and a hash of the weights file) and each image's content, so a re-run
on the same images is instant.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from .._io import atomic_path
from .._progress import Progress

__all__ = ["ClipEncoder"]


def _require():
    try:
        import open_clip
        import torch
    except ImportError as exc:
        raise ImportError("the CLIP adapter needs open_clip: pip install 'memaudit[clip]'") from exc
    return open_clip, torch


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class ClipEncoder:
    """Embed images with an open_clip model whose weights come from a local file.

    Parameters
    ----------
    model : str
        An open_clip model name ("ViT-B-32", "ViT-S-32", "RN50", ...).
    weights : str or path
        A local file with the model's state dict (.safetensors, .pt, .pth, .bin).
    device : str, default="cpu"
    batch_size : int, default=64
    cache_dir : str or path, optional
        Folder for cached embeddings; None disables the cache.
    progress : bool or None
        Progress bar on stderr.
    """

    def __init__(self, model: str, weights, *, device: str = "cpu", batch_size: int = 64,
                 cache_dir=None, progress=None):
        open_clip, torch = _require()
        if weights is None:
            raise ValueError("weights: give the path of a local weights file; memaudit does not "
                             "download models")
        path = Path(weights)
        if not path.is_file():
            hint = (" (this looks like a hub tag; memaudit never downloads weights: save them to a "
                    "file and pass its path)" if os.sep not in str(weights) and not path.suffix else "")
            raise FileNotFoundError(f"weights file {weights} does not exist{hint}")
        if model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: never reach a hub
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # open_clip warns "initialized randomly": we load weights next
        try:
            net = open_clip.create_model(model, pretrained=None, device="cpu")
        finally:
            root.setLevel(level)
        state = self._read_state(path, torch)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(f"weights file {path} does not match model {model!r}: {first}") from exc
        self.model_name = model
        self.weights = path
        self.device = device
        self.batch_size = int(batch_size)
        self.progress = progress
        self.net = net.to(device).eval()
        cfg = getattr(net.visual, "preprocess_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        size = getattr(net.visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.model_key = f"{model}-{_file_digest(path)}"
        self._torch = torch

    @staticmethod
    def _read_state(path: Path, torch):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read weights file {path} as a state dict ({exc})") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"weights file {path} does not hold a state dict")
        return {k.removeprefix("module."): v for k, v in state.items()}

    # -- encoding ---------------------------------------------------------------------------
    def _prepare(self, batch: np.ndarray):
        """(b, H, W), (b, H, W, C) or (b, C, H, W) images in [0, 1] -> normalized (b, 3, S, S)."""
        torch = self._torch
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32))
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be (n, H, W), (n, H, W, C) or (n, C, H, W) with C in "
                             f"(1, 3); got a batch of shape {tuple(batch.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bicubic",
                                            antialias=True, align_corners=False).clamp(0, 1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    def _keys(self, images: np.ndarray) -> list[str]:
        return [hashlib.blake2b(np.ascontiguousarray(im, dtype=np.float32).tobytes()
                                + repr(im.shape).encode(), digest_size=16).hexdigest()
                for im in images]

    def _cache_path(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.model_key}.npz"

    def _load_cache(self) -> dict:
        path = self._cache_path()
        if path is None or not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as z:
            return dict(zip(z["keys"].tolist(), z["emb"]))

    def _save_cache(self, cache: dict) -> None:
        path = self._cache_path()
        if path is None or not cache:
            return
        keys = np.array(list(cache.keys()))
        emb = np.stack(list(cache.values())).astype(np.float32)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, keys=keys, emb=emb)

    def encode(self, images) -> np.ndarray:
        """Unit-norm embeddings (n, dim) float32 of images with values in [0, 1]."""
        images = np.asarray(images)
        if images.ndim not in (3, 4) or images.shape[0] == 0:
            raise ValueError(f"expected a non-empty batch of images, got shape {images.shape}")
        if not np.isfinite(images).all():
            raise ValueError("images contain NaN or Inf")
        keys = self._keys(images)
        cache = self._load_cache()
        todo = [i for i, k in enumerate(keys) if k not in cache]
        torch = self._torch
        with Progress(len(todo), f"clip {self.model_name}", self.progress) as bar, torch.no_grad():
            for s in range(0, len(todo), self.batch_size):
                idx = todo[s : s + self.batch_size]
                emb = self.net.encode_image(self._prepare(images[idx])).float()
                emb = torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()
                for i, e in zip(idx, emb):
                    cache[keys[i]] = e
                bar.update(len(idx))
        if todo:
            self._save_cache(cache)
        self.last_cache_hits = len(keys) - len(todo)
        return np.stack([cache[k] for k in keys]).astype(np.float32)
