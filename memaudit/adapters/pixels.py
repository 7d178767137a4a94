"""The pixel adapter: images as flat vectors (the paper's space), and back to images for display."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from .._validation import as_2d_array

__all__ = ["pixels", "image_layout", "to_display", "png_data_uri"]


def pixels(images, name: str = "images") -> np.ndarray:
    """Flatten a batch of images ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)`` to ``(n, d)``.

    Values are kept as they are (no rescaling): the nearest-neighbour ratio is scale invariant, and
    the paper computes L2 distances on raw pixels. Integer images become float32.
    """
    x = as_2d_array(images, name)
    return x.astype(np.float32) if x.dtype.kind in "iu" else x


def image_layout(item_shape) -> str | None:
    """How one item's shape reads as an image: "HW", "HWC", "CHW", "flat-square" or None."""
    shape = tuple(int(s) for s in item_shape)
    if len(shape) == 2 and min(shape) >= 2:
        return "HW"
    if len(shape) == 3:
        if shape[-1] in (1, 3) and min(shape[:2]) >= 2:
            return "HWC"
        if shape[0] in (1, 3) and min(shape[1:]) >= 2:
            return "CHW"
    if len(shape) == 1 and shape[0] >= 4 and math.isqrt(shape[0]) ** 2 == shape[0]:
        return "flat-square"
    return None


def to_display(rows: np.ndarray, item_shape, lo: float, hi: float) -> list[np.ndarray]:
    """Turn flat rows back into uint8 images (H, W) or (H, W, 3), mapping [lo, hi] to [0, 255]."""
    layout = image_layout(item_shape)
    if layout is None:
        raise ValueError(f"items of shape {tuple(item_shape)} cannot be shown as images")
    span = hi - lo if hi > lo else 1.0
    out = []
    for row in np.asarray(rows, dtype=np.float64):
        if layout == "flat-square":
            s = math.isqrt(row.size)
            img = row.reshape(s, s)
        else:
            img = row.reshape(item_shape)
            if layout == "CHW":
                img = np.moveaxis(img, 0, -1)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
        out.append(np.clip(np.round((img - lo) / span * 255), 0, 255).astype(np.uint8))
    return out


def png_data_uri(img: np.ndarray, min_size: int = 64) -> str:
    """A base64 PNG data URI of a uint8 image, upscaled (nearest) to at least ``min_size`` pixels."""
    from PIL import Image

    im = Image.fromarray(img)
    scale = max(1, math.ceil(min_size / max(1, min(im.size))))
    if scale > 1:
        im = im.resize((im.size[0] * scale, im.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
