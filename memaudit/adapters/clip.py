"""CLIP image embeddings through open_clip, from weights in a local file (nothing is downloaded).

    enc = ClipEncoder("ViT-B-32", weights="/models/vit_b_32.safetensors", cache_dir=".cache")
    emb = enc.encode(images)          # (n, 512) float32, unit norm

The model is built by name with every pretrained and download switch off, then the user's file is
loaded into it strictly (safetensors, or a torch state dict read with ``weights_only=True``: no
pickle is executed). A hub tag such as "laion2b_s34b_b79k" given as the weights is refused, and so
is a model whose text tower needs a config from the Hugging Face hub. Hugging Face's offline switch
is set before open_clip (and so huggingface_hub) is imported, and forced in huggingface_hub's
constants when it was imported earlier.

Each image goes through open_clip's own evaluation transform for the model, as a PIL image:
``encode(images)`` equals ``model.encode_image(preprocess(Image.fromarray(image)))`` with the
``preprocess`` that ``open_clip.create_model_and_transforms`` returns. Pixels are uint8, uint16 or
floats in [0, 1]; any other range is refused. Embeddings are cached on disk, keyed by the model
(name, weights hash, preprocessing) and each image's 8-bit content.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .._progress import Progress
from .images import image_layout

__all__ = ["ClipEncoder"]

# How arrays become PIL images before open_clip's transform; part of every cache key. Bump it when
# that conversion changes, so that embeddings cached by an older conversion are never reused.
_CONVERSION = "pil-uint8-v2"
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


def _force_offline() -> None:
    """Switch Hugging Face libraries offline for this process, whenever they were imported.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, into ``huggingface_hub.constants``
    (which ``is_offline_mode()`` and every request check); a module imported before this call keeps
    the value it read, so the constant is forced too (in every huggingface_hub module holding a
    copy, as older versions did with ``from .constants import HF_HUB_OFFLINE``).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    for name, module in list(sys.modules.items()):
        if name == "huggingface_hub" or name.startswith("huggingface_hub."):
            if isinstance(vars(module).get("HF_HUB_OFFLINE"), bool):  # vars: no lazy import
                module.HF_HUB_OFFLINE = True


def _require():
    _force_offline()  # before open_clip imports huggingface_hub, which reads the switch at import
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


def _model_config(open_clip, model: str) -> dict:
    """The built-in config of ``model``, refused when building it would need the hub."""
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
    cfg = open_clip.get_model_config(model)
    hf_name = cfg.get("text_cfg", {}).get("hf_model_name")
    if hf_name or "hf_model_name" in json.dumps(cfg, default=str):
        raise ValueError(f"model {model!r} needs its text tower's config ({hf_name!r}) from the "
                         f"Hugging Face hub; memaudit never downloads: use a model whose towers "
                         f"are built in (e.g. 'ViT-B-32'), see docs/adapters/clip.md")
    return cfg


def _describe(cfg: dict) -> str:
    return (f"mean {tuple(round(float(m), 3) for m in cfg['mean'])}, "
            f"std {tuple(round(float(s), 3) for s in cfg['std'])}, "
            f"{cfg['interpolation']}, {cfg['resize_mode']}")


def _preprocess_overrides(open_clip, model: str, tag: str | None, model_cfg: dict) -> dict:
    """The preprocessing settings open_clip attaches to ``model`` loaded from pretrained ``tag``.

    Without a tag: the settings all of the model's pretrained tags share (open_clip's defaults when
    it has none); when its tags disagree (ViT-L-14: "openai" vs "laion2b_s32b_b82k") the tag is
    required. The image size always comes from the model, as in open_clip.
    """
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    base = {k: v for k, v in asdict(PreprocessCfg()).items() if k in _PREPROCESS_KEYS}

    def of(t):
        cfg = open_clip.get_pretrained_cfg(model, t)
        return {k: merge_preprocess_dict(base, cfg)[k] for k in _PREPROCESS_KEYS}

    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag is not None:
        if not open_clip.is_pretrained_cfg(model, tag):
            raise ValueError(f"tag {tag!r} is not an open_clip pretrained tag of {model!r}; its "
                             f"tags are {tags or 'none (leave tag=None)'}")
        # the activation has no weights: a file from a QuickGELU tag loads into a GELU model
        tag_gelu = bool(open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False))
        if tag_gelu != bool(model_cfg.get("quick_gelu", False)):
            twin = model + "-quickgelu" if tag_gelu else model.removesuffix("-quickgelu")
            fix = (f"use the model {twin!r}" if twin in open_clip.list_models()
                   else f"use a model built with quick_gelu={tag_gelu}")
            raise ValueError(f"tag {tag!r} was trained with quick_gelu={tag_gelu} but model "
                             f"{model!r} uses quick_gelu={not tag_gelu}: {fix}")
        return of(tag)
    groups: dict[str, list] = {}
    for t in tags:
        cfg = of(t)
        groups.setdefault(json.dumps(cfg, sort_keys=True, default=str), [cfg, []])[1].append(t)
    if len(groups) > 1:
        listed = "; ".join(f"{', '.join(map(repr, ts))}: {_describe(cfg)}"
                           for cfg, ts in groups.values())
        raise ValueError(f"open_clip preprocesses {model!r} differently by pretrained tag "
                         f"({listed}); pass tag= the one your weights file was saved from")
    return next(iter(groups.values()))[0] if groups else base


def _create_model(open_clip, model: str, overrides: dict):
    """Build ``model`` with random weights and every pretrained or download switch off."""
    params = inspect.signature(open_clip.create_model).parameters
    kwargs = {"pretrained": None, "device": "cpu", "pretrained_image": False,
              "force_preprocess_cfg": overrides, "cache_dir": None}
    # the text tower's hub weights: `pretrained_text` since open_clip 3.0, `pretrained_hf` before
    kwargs["pretrained_text" if "pretrained_text" in params else "pretrained_hf"] = False
    if "load_weights" in params:
        kwargs["load_weights"] = False
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "initialized randomly": we load weights next
    try:
        return open_clip.create_model(model, **kwargs)
    finally:
        root.setLevel(level)


def _to_uint8(images) -> list[np.ndarray]:
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


class ClipEncoder:
    """Embed images with an open_clip model whose weights come from a local file.

    Parameters
    ----------
    model : str
        An open_clip model name ("ViT-B-32", "ViT-S-32", "RN50", ...). Models whose text tower is
        a Hugging Face model (roberta-ViT-B-32, xlm-roberta-*, mt5-*, nllb-clip-*) are refused:
        building them needs the hub.
    weights : str or path
        A local file with the model's state dict (.safetensors, .pt, .pth, .bin).
    tag : str, optional
        The open_clip pretrained tag the weights were saved from (e.g. "laion2b_s34b_b79k"). Only
        its preprocessing settings are read (nothing is downloaded). Needed only for models whose
        tags preprocess differently (ViT-L-14, ViT-H-14); otherwise the model's common settings
        are used.
    device : str, default="cpu"
    batch_size : int, default=64
    cache_dir : str or path, optional
        Folder for cached embeddings; None disables the cache.
    progress : bool or None
        Progress bar on stderr.

    Attributes
    ----------
    preprocess : callable
        open_clip's evaluation transform for the model (PIL image -> normalized tensor).
    preprocess_cfg : dict
        Its settings (size, mean, std, interpolation, resize_mode, ...).
    """

    def __init__(self, model: str, weights, *, tag: str | None = None, device: str = "cpu",
                 batch_size: int = 64, cache_dir=None, progress=None):
        open_clip, torch = _require()
        model_cfg = _model_config(open_clip, model)
        overrides = _preprocess_overrides(open_clip, model, tag, model_cfg)
        if weights is None:
            raise ValueError("weights: give the path of a local weights file; memaudit does not "
                             "download models")
        path = Path(weights)
        if not path.is_file():
            hint = (" (this looks like a hub tag; memaudit never downloads weights: save them to a "
                    "file and pass its path)" if os.sep not in str(weights) and not path.suffix else "")
            raise FileNotFoundError(f"weights file {weights} does not exist{hint}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        state = self._read_state(path, torch)
        net = _create_model(open_clip, model, overrides)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise ValueError(f"weights file {path} does not match model {model!r}: {first}") from exc
        self.model_name = model
        self.tag = tag
        self.weights = path
        self.device = device
        self.batch_size = int(batch_size)
        self.progress = progress
        self.net = net.to(device).eval()
        # open_clip's own evaluation transform, as create_model_and_transforms builds it
        self.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(net))
        cfg = self.preprocess_cfg
        self.preprocess = open_clip.image_transform(
            cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
            resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
            fill_color=cfg["fill_color"])
        self.preprocess_key = f"{_CONVERSION}\n{self.preprocess!r}"
        pre = hashlib.blake2b(self.preprocess_key.encode(), digest_size=8).hexdigest()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.model_key = f"{model}-{_file_digest(path)}-pre{pre}"
        self._torch = torch

    @staticmethod
    def _read_state(path: Path, torch):
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
            raise ValueError(f"cannot read weights file {path} as a state dict ({first})") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"weights file {path} does not hold a state dict")
        return {k.removeprefix("module."): v for k, v in state.items()}

    # -- encoding ---------------------------------------------------------------------------
    def _prepare(self, images: list[np.ndarray]):
        """8-bit images -> the model's input batch, each through open_clip's PIL transform."""
        from PIL import Image

        torch = self._torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny per-image tensor ops: threads cost more than they give
        try:
            batch = torch.stack([self.preprocess(Image.fromarray(im)) for im in images])
        finally:
            torch.set_num_threads(threads)
        return batch.to(self.device)

    @staticmethod
    def _keys(images: list[np.ndarray]) -> list[str]:
        return [hashlib.blake2b(im.tobytes() + repr(im.shape).encode(), digest_size=16).hexdigest()
                for im in images]

    def _cache_path(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.model_key}.npz"

    def _load_cache(self) -> dict:
        path = self._cache_path()
        if path is None or not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as z:
            if "preprocess" not in z.files or str(z["preprocess"]) != self.preprocess_key:
                return {}  # written by another preprocessing: recompute and overwrite
            return dict(zip(z["keys"].tolist(), z["emb"]))

    def _save_cache(self, cache: dict) -> None:
        path = self._cache_path()
        if path is None or not cache:
            return
        keys = np.array(list(cache.keys()))
        emb = np.stack(list(cache.values())).astype(np.float32)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, keys=keys, emb=emb, preprocess=np.array(self.preprocess_key))

    def encode(self, images) -> np.ndarray:
        """Unit-norm CLIP image embeddings.

        Parameters
        ----------
        images : array (n, H, W), (n, H, W, C) or (n, C, H, W), C in (1, 3)
            uint8 (0..255), uint16 (0..65535) or floats in [0, 1]; other dtypes and ranges
            ([-1, 1], 0..255 floats, NaN) are refused with the observed range and the fix.

        Returns
        -------
        ndarray (n, dim) float32
            Row i equals open_clip's ``model.encode_image(preprocess(PIL image i))``, L2-normalized,
            where PIL image i holds image i as 8-bit pixels.
        """
        images = _to_uint8(images)
        keys = self._keys(images)
        cache = self._load_cache()
        self.last_cache_hits = sum(k in cache for k in keys)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [k for k in first if k not in cache]  # identical images are embedded once
        torch = self._torch
        with Progress(len(todo), f"clip {self.model_name}", self.progress) as bar, torch.no_grad():
            for s in range(0, len(todo), self.batch_size):
                chunk = todo[s : s + self.batch_size]
                x = self._prepare([images[first[k]] for k in chunk])
                emb = self.net.encode_image(x).float()
                emb = torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()
                cache.update(zip(chunk, emb))
                bar.update(len(chunk))
        if todo:
            self._save_cache(cache)
        return np.stack([cache[k] for k in keys]).astype(np.float32)
