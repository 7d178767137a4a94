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
(name, weights SHA-256, preprocessing) and each image's 8-bit content. The conversion, batches and
cache are those of every encoder (:mod:`memaudit.adapters._encoder`); the command line reaches this
encoder through ``--features clip:MODEL=WEIGHTS`` (:mod:`memaudit.adapters.features`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ._encoder import (ImageEncoder, content_key, file_sha256, local_weights, read_state_dict,
                       to_uint8)

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


# the conversion and keys every encoder shares (memaudit.adapters._encoder), under their names here
_to_uint8 = to_uint8
_file_digest = file_sha256
content_key = content_key


class ClipEncoder(ImageEncoder):
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

    extractor = "clip"

    def __init__(self, model: str, weights, *, tag: str | None = None, device: str = "cpu",
                 batch_size: int = 64, cache_dir=None, progress=None):
        open_clip, torch = _require()
        model_cfg = _model_config(open_clip, model)
        overrides = _preprocess_overrides(open_clip, model, tag, model_cfg)
        path = local_weights(weights, "weights")
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
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._ready(torch)

    def _forward(self, batch):
        return self.net.encode_image(batch)

    _read_state = staticmethod(read_state_dict)

    def encode(self, images):
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
        return super().encode(images)
