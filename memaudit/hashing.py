"""Image hashes for duplicate detection: content hashes of decoded pixels, pHash and dHash.

- Content hash: BLAKE2b of the decoded image quantized to 8 bits, plus its shape. Two files that
  decode to the same pixels (a PNG re-saved with another compression level, a BMP copy) get the same
  hash; the file bytes play no part.
- pHash (perceptual hash, as in Zauner 2010 and the imagehash package): resize the grayscale image
  to 32x32, take the 2-D DCT-II, keep the 8x8 lowest frequencies, set a bit where a coefficient is
  above their median. 64 bits.
- dHash (difference hash, Krawetz 2013): resize to 9 wide by 8 high, set a bit where a pixel is
  brighter than its right neighbour. 64 bits.

Perceptual hashes are compared by Hamming distance; ``memaudit.probes.duplicates`` searches them
with FAISS binary indexes.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.fft import dctn

__all__ = ["content_hashes", "phash", "dhash", "hamming", "to_grayscale_images", "HASH_BITS"]

HASH_BITS = 64


def to_grayscale_images(x: np.ndarray, item_shape) -> np.ndarray:
    """Reshape flat rows ``(n, d)`` into grayscale images ``(n, H, W)`` (RGB averaged)."""
    from .adapters.pixels import image_layout

    layout = image_layout(item_shape)
    if layout is None:
        raise ValueError(
            f"perceptual hashes need images; items of shape {tuple(item_shape)} are not images "
            "(give an image folder, or arrays shaped (n, H, W), (n, H, W, C) or (n, C, H, W))"
        )
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if layout == "flat-square":
        s = int(np.sqrt(x.shape[1]))
        return x.reshape(n, s, s)
    imgs = x.reshape((n,) + tuple(item_shape))
    if layout == "CHW":
        imgs = imgs.mean(axis=1)
    elif layout == "HWC":
        imgs = imgs.mean(axis=3)
    return imgs


def _resize(imgs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a batch of float images (n, H, W) to (n, h, w) with PIL's antialiased bilinear filter."""
    from PIL import Image

    h, w = size
    out = np.empty((imgs.shape[0], h, w), dtype=np.float64)
    for i, im in enumerate(imgs):
        out[i] = np.asarray(Image.fromarray(im.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    return out


def phash(imgs: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes of grayscale images (n, H, W), packed as (n, 8) uint8."""
    small = _resize(imgs, (32, 32))
    coeffs = dctn(small, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(imgs), 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1)


def dhash(imgs: np.ndarray) -> np.ndarray:
    """64-bit difference hashes of grayscale images (n, H, W), packed as (n, 8) uint8."""
    small = _resize(imgs, (8, 9))
    bits = (small[:, :, :-1] > small[:, :, 1:]).reshape(len(imgs), 64)
    return np.packbits(bits, axis=1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes a (n, 8) and b (m, 8): (n, m) int."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2)


def content_hashes(x: np.ndarray, item_shape=()) -> np.ndarray:
    """One hex digest per item, from its pixels quantized to 8 bits and its shape.

    The scale is decided once for the whole set: values within [0, 1] (how image folders load) are
    multiplied by 255; anything else (uint8 arrays, [0, 255] floats) is used as it is. Each item is
    then rounded to integers and hashed with its shape.
    """
    x = np.asarray(x)
    scale = 255.0 if (x.size and x.min() >= 0 and x.max() <= 1) else 1.0
    out = np.empty(x.shape[0], dtype=object)
    shape = repr(tuple(int(s) for s in item_shape)).encode()
    for i, row in enumerate(x):
        q = np.round(np.asarray(row, dtype=np.float64) * scale).astype(np.int64)
        out[i] = hashlib.blake2b(q.tobytes() + shape, digest_size=16).hexdigest()
    return out
