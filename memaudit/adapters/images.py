"""Images as arrays: layout, pixel conventions, tiles and hash codes (the images adapter).

Every image-specific step lives here, so that the probes see arrays only:

- layout: :func:`image_layout` reads one item's shape as HW, HWC, CHW or a flat square;
  :func:`pixels` flattens images to (n, d) vectors (the paper's space); :func:`to_display` and
  :func:`png_data_uri` turn rows back into viewable images;
- pixel conventions: :class:`PixelScale` / :func:`pixel_scale`, one map from values to integer
  levels for every set compared;
- the codes the duplicates probe compares (:func:`duplicate_codes`): content digests of quantized
  pixels (``exact``), 64-bit pHash / dHash codes, and for ``tiled_l2`` a block reader that turns
  rows into pixels in [0, 1] laid out (H, W, C) (:func:`tile_reader`).

One convention for every set compared: a :class:`PixelScale` maps pixel values in ``[lo, hi]`` to
integer levels ``q = round((x - lo) * levels / (hi - lo))``, the same map for the training set, the
samples and the held-out set, so that a sample's hash depends on its own pixels and the stated
convention only.

- Content hash: BLAKE2b of an item's quantized pixels and its shape. Two files that decode to the
  same pixels (a PNG re-saved with another compression level, a BMP copy) get the same hash; the
  file bytes play no part. Values outside ``[lo, hi]`` keep their own levels (no clipping).
- pHash and dHash are bit for bit those of the imagehash package (J. Buchner, version 4.3):
  each image is converted to 8 bits once, ``round((x - lo) * 255 / (hi - lo))`` clipped to 0..255,
  then hashed as imagehash does: PIL ``convert("L")`` (ITU-R 601-2 luma for colour), a LANCZOS
  resize, and for pHash (Zauner 2010) the unnormalised DCT-II of ``scipy.fftpack`` along both
  axes of the 32 x 32 image, the top-left 8 x 8 coefficients and a bit set where a coefficient is
  above their median; for dHash (Krawetz 2013) a 9 x 8 image and a bit set where a pixel is
  darker than its right neighbour. Bits are packed row by row, first bit highest, so that
  ``codes[i].tobytes().hex() == str(imagehash.phash(image))``.

Memory-mapped inputs are read in blocks whose pages are released after use
(:func:`memaudit._blocks.iter_blocks`), and every block is checked for NaN and Inf.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._blocks import HASH_BITS, iter_blocks
from .._validation import as_2d_array

__all__ = ["PixelScale", "pixel_scale", "content_hashes", "content_digests", "phash", "dhash",
           "hamming", "uint8_images", "HASH_BITS", "image_layout", "pixels", "to_display",
           "png_data_uri", "tile_reader", "tiled_scale", "duplicate_scale", "duplicate_codes"]

PHASH_SIZE = 32  # imagehash: hash_size 8 x highfreq_factor 4


@dataclass(frozen=True)
class PixelScale:
    """How pixel values become integer levels: ``q = round((x - lo) * levels / (hi - lo))``.

    Attributes
    ----------
    lo, hi : float
        The value range: ``lo`` is level 0 (black), ``hi`` level ``levels`` (white).
    levels : int
        Levels above 0: 255 for 8-bit images, 65535 for 16-bit ones.
    source : str
        Where the convention comes from: ``"given"`` or how it was computed from the data.
    """

    lo: float
    hi: float
    levels: int
    source: str

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def quantize(self, block: np.ndarray) -> np.ndarray:
        """Integer levels of ``block`` (int64); values outside [lo, hi] are not clipped."""
        return np.rint((np.asarray(block, np.float64) - self.lo) * (self.levels / self.span)).astype(np.int64)

    def to_uint8(self, block: np.ndarray) -> tuple[np.ndarray, int]:
        """8-bit pixels ``round((x - lo) * 255 / (hi - lo))`` clipped to 0..255, and how many
        items of the block had a pixel outside 0..255 before clipping."""
        v = np.rint((np.asarray(block, np.float64) - self.lo) * (255.0 / self.span))
        outside = int(((v < 0) | (v > 255)).reshape(v.shape[0], -1).any(axis=1).sum())
        return np.clip(v, 0, 255).astype(np.uint8), outside

    def to_unit(self, block: np.ndarray) -> np.ndarray:
        """Pixels mapped to [0, 1] (float32): ``(x - lo) / (hi - lo)``."""
        return ((np.asarray(block, np.float64) - self.lo) / self.span).astype(np.float32)

    def to_dict(self) -> dict:
        return {"value_range": [self.lo, self.hi], "levels": self.levels, "source": self.source}

    def __str__(self) -> str:
        return f"pixels [{self.lo:g}, {self.hi:g}] -> levels 0..{self.levels} ({self.source})"


# ----------------------------------------------------------------------------- layout and display
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


# ----------------------------------------------------------------------------- pixel conventions
def _dtype_class(dt: np.dtype) -> str:
    if dt == np.uint8:
        return "uint8"
    if dt == np.uint16:
        return "uint16"
    return "integer" if dt.kind in "iu" else "float"


def pixel_scale(*sets, value_range=None, levels=None) -> PixelScale:
    """The one pixel convention used for every set compared.

    Parameters
    ----------
    *sets : (array, name) pairs
        The sets that will be compared with each other (names are used in messages).
    value_range : (lo, hi), optional
        The declared convention: ``lo`` is black, ``hi`` white, e.g. ``(0, 1)`` for images read
        from files, ``(-1, 1)`` for diffusers outputs, ``(0, 255)`` for uint8 arrays.
    levels : int, optional
        Levels above 0 in ``[lo, hi]``: 255 for 8-bit sources (the default with a ``value_range``),
        65535 for 16-bit ones.

    Returns
    -------
    PixelScale
        With ``value_range``: that range. Without, by dtype (all sets must share it): uint8 is
        ``(0, 255)`` with 255 levels and uint16 ``(0, 65535)`` with 65535 levels (pixels as
        stored); other integers span the joint minimum to maximum of all sets with one level per
        integer; floats span the joint minimum to maximum of all sets with 255 levels.
    """
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < 1:
            raise ValueError(f"levels must be a positive integer (255 for 8-bit images, 65535 for "
                             f"16-bit ones), got {levels!r}")
        levels = int(levels)
    if value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ValueError(f"value_range must be a pair (lo, hi) of numbers, got {value_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"value_range must be finite with lo < hi, got {value_range!r}")
        return PixelScale(lo, hi, levels or 255, "given")
    classes = {_dtype_class(np.asarray(x[:0]).dtype) for x, _ in sets}
    if len(classes) > 1:
        desc = ", ".join(f"{name} {np.asarray(x[:0]).dtype}" for x, name in sets)
        raise ValueError(f"the sets have different pixel types ({desc}), so their value ranges may "
                         "differ; give value_range=(lo, hi) (and levels) to say how each maps to pixels")
    cls = classes.pop()
    if cls == "uint8":
        return PixelScale(0.0, 255.0, levels or 255, "uint8 pixels as stored")
    if cls == "uint16":
        return PixelScale(0.0, 65535.0, levels or 65535, "uint16 pixels as stored")
    lo, hi = math.inf, -math.inf
    for x, name in sets:
        for _, block in iter_blocks(x, name):
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    names = " + ".join(name for _, name in sets)
    if hi <= lo:
        hi = lo + 1.0  # constant data: every item is level 0
    if cls == "integer":
        return PixelScale(lo, hi, levels or int(hi - lo), f"joint range of {names}, one level per integer")
    return PixelScale(lo, hi, levels or 255, f"joint min..max of {names}")


def _scale_for(x, value_range, levels, scale, name="items") -> PixelScale:
    return scale if scale is not None else pixel_scale((x, name), value_range=value_range, levels=levels)


def content_hashes(x, item_shape=(), *, value_range=None, levels=None, scale=None,
                   name: str = "items") -> np.ndarray:
    """One hex digest per item, from its quantized pixels and its shape.

    Parameters
    ----------
    x : ndarray of shape (n_items, ...)
    item_shape : tuple
        Hashed with the pixels, so that items of different shapes never match.
    value_range, levels :
        The pixel convention (see :func:`pixel_scale`); ``scale`` gives it ready-made.

    Returns
    -------
    ndarray of str, shape (n_items,)
    """
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    scale = _scale_for(x, value_range, levels, scale, name)
    return np.array([d.hex() for d in content_digests(x, item_shape, scale, name)], dtype=object)


def content_digests(x, item_shape, scale: PixelScale, name: str = "items") -> np.ndarray:
    """16-byte BLAKE2b digests (``S16`` array) of each item's levels and shape."""
    shape = repr(tuple(int(s) for s in item_shape)).encode()
    out = np.empty(x.shape[0], dtype="S16")
    for start, block in iter_blocks(x, name):
        q = scale.quantize(block.reshape(block.shape[0], -1))
        for k, row in enumerate(q):
            out[start + k] = hashlib.blake2b(row.tobytes() + shape, digest_size=16).digest()
    return out


def _image_shape(item_shape, name):
    layout = image_layout(item_shape)
    if layout is None:
        raise ValueError(
            f"perceptual hashes need images; {name} of shape {tuple(item_shape)} are not images "
            "(give an image folder, or arrays shaped (n, H, W), (n, H, W, C) or (n, C, H, W))"
        )
    return layout


def _as_images(block: np.ndarray, item_shape, layout) -> np.ndarray:
    """Rows of one block as (n, H, W) or (n, H, W, 3) images."""
    n = block.shape[0]
    if layout == "flat-square":
        s = math.isqrt(int(np.prod(item_shape)))
        return block.reshape(n, s, s)
    imgs = block.reshape((n,) + tuple(item_shape))
    if layout == "CHW":
        imgs = np.moveaxis(imgs, 1, 3)
    if imgs.ndim == 4 and imgs.shape[3] == 1:
        imgs = imgs[..., 0]
    return np.ascontiguousarray(imgs)


def uint8_images(x, item_shape=None, *, value_range=None, scale=None, name: str = "items"):
    """Yield ``(start, uint8 images, items clipped)`` blocks: the 8-bit conversion of the hashes.

    Images come out as (n, H, W) or, for colour, (n, H, W, 3), whatever the input layout (HW, HWC,
    CHW or flat squares).
    """
    item_shape = tuple(item_shape) if item_shape is not None else tuple(np.shape(x))[1:]
    layout = _image_shape(item_shape, name)
    scale = _scale_for(x, value_range, None, scale, name)
    for start, block in iter_blocks(x, name):
        u8, clipped = scale.to_uint8(block)
        yield start, _as_images(u8, item_shape, layout), clipped


def _pil_small(u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """imagehash's preprocessing of 8-bit images (n, H, W[, 3]): ``convert("L")`` (colour only)
    then a LANCZOS resize to ``size`` (width, height); returns (n, height, width) uint8."""
    from PIL import Image

    h, w = u8.shape[1:3]
    out = np.empty((len(u8), size[1] * size[0]), dtype=np.uint8)
    im = Image.new("RGB" if u8.ndim == 4 else "L", (w, h))  # one image, refilled: fewer allocations
    for i, arr in enumerate(u8):
        im.frombytes(arr.tobytes())
        gray = im.convert("L") if u8.ndim == 4 else im
        out[i] = np.frombuffer(gray.resize(size, Image.Resampling.LANCZOS).tobytes(), np.uint8)
    return out.reshape(len(u8), size[1], size[0])


def _phash_block(u8: np.ndarray) -> np.ndarray:
    import scipy.fftpack

    small = _pil_small(u8, (PHASH_SIZE, PHASH_SIZE))
    # imagehash: dct(dct(pixels, axis=0), axis=1), unnormalised DCT-II; top-left 8 x 8 > median
    dct = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=1), axis=2)[:, :8, :8].reshape(len(u8), 64)
    return np.packbits(dct > np.median(dct, axis=1, keepdims=True), axis=1)


def _dhash_block(u8: np.ndarray) -> np.ndarray:
    small = _pil_small(u8, (9, 8))  # PIL sizes are (width, height)
    # imagehash: pixels[:, 1:] > pixels[:, :-1], a bit where the right neighbour is brighter
    return np.packbits((small[:, :, 1:] > small[:, :, :-1]).reshape(len(u8), 64), axis=1)


def _perceptual(kind, x, item_shape, value_range, scale, name, clipped=None):
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    fn = _phash_block if kind == "phash" else _dhash_block
    out = np.empty((x.shape[0], HASH_BITS // 8), dtype=np.uint8)
    n_clipped = 0
    for start, u8, c in uint8_images(x, item_shape, value_range=value_range, scale=scale, name=name):
        out[start : start + len(u8)] = fn(u8)
        n_clipped += c
    if clipped is not None:
        clipped.append(n_clipped)
    return out


def phash(images, item_shape=None, *, value_range=None, scale=None) -> np.ndarray:
    """64-bit perceptual hashes, packed as (n, 8) uint8, equal to ``imagehash.phash``'s.

    Parameters
    ----------
    images : array of shape (n, H, W), (n, H, W, C), (n, C, H, W) or flat (n, d) with item_shape
        C is 1 or 3. uint8 images are hashed as they are; other values are converted to 8 bits by
        ``value_range`` (default: see :func:`pixel_scale`).
    item_shape : tuple, optional
        Shape of one image when ``images`` is flat.

    Examples
    --------
    >>> import numpy as np, imagehash
    >>> from PIL import Image
    >>> img = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    >>> phash(img[None])[0].tobytes().hex() == str(imagehash.phash(Image.fromarray(img)))
    True
    """
    return _perceptual("phash", images, item_shape, value_range, scale, "images")


def dhash(images, item_shape=None, *, value_range=None, scale=None) -> np.ndarray:
    """64-bit difference hashes, packed as (n, 8) uint8, equal to ``imagehash.dhash``'s.

    Same inputs as :func:`phash`.
    """
    return _perceptual("dhash", images, item_shape, value_range, scale, "images")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed hashes a (n, 8) and b (m, 8): (n, m) int."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2)


# ----------------------------------------------------------------------------- codes of the duplicates probe
def tiled_scale(sets, value_range=None) -> PixelScale:
    """tiled_l2 compares pixels in [0, 1]: the given range, (0, 255) for uint8, else (0, 1)."""
    if value_range is not None:
        return pixel_scale(*sets, value_range=value_range)
    kinds = {np.asarray(x[:0]).dtype for x, _ in sets}
    if kinds == {np.dtype(np.uint8)}:
        return PixelScale(0.0, 255.0, 255, "uint8 pixels / 255")
    if all(k.kind == "f" for k in kinds):
        return PixelScale(0.0, 1.0, 255, "float pixels taken as [0, 1]")
    desc = ", ".join(f"{name} {np.asarray(x[:0]).dtype}" for x, name in sets)
    raise ValueError(f"tiled_l2 compares pixels in [0, 1]; the sets are {desc}: give "
                     "value_range=(lo, hi) to say how they map to [0, 1]")


def duplicate_scale(method: str, sets, value_range=None, levels=None) -> PixelScale | None:
    """The one pixel convention of a duplicates search over ``sets`` ((array, name) pairs): for
    exact and perceptual hashes :func:`pixel_scale`, for tiled_l2 :func:`tiled_scale`, None for
    embeddings (compared as they are)."""
    if method in ("exact", "phash", "dhash"):
        return pixel_scale(*sets, value_range=value_range, levels=levels)
    if method == "tiled_l2":
        return tiled_scale(sets, value_range)
    return None


def duplicate_codes(x, method: str, item_shape, scale: PixelScale, name: str, notes: list):
    """What the duplicates probe compares for a hash method: 16-byte content digests (``exact``,
    an ``S16`` array) or packed 64-bit codes (``phash``/``dhash``, (n, 8) uint8). Items with pixels
    outside the convention are counted in ``notes`` (they are clipped for the 8-bit hashes)."""
    if method == "exact":
        return content_digests(x, item_shape, scale, name)
    clipped = []
    codes = _perceptual(method, x, item_shape, None, scale, name, clipped)
    if clipped[0]:
        notes.append(f"{name}: {clipped[0]} item(s) have pixels outside {scale.lo:g}..{scale.hi:g}, "
                     "clipped to 0..255 for the 8-bit conversion of the hashes")
    return codes


def tile_reader(item_shape, scale: PixelScale, name: str):
    """How the tiled_l2 search reads images of ``item_shape``: ``(hwc, prep)``.

    ``hwc`` is the (H, W, C) shape of one image; ``prep(block, offset)`` turns a block of flat rows
    into float32 pixels in [0, 1] under ``scale``, laid out (H, W, C) and flattened (HW, HWC and
    flat squares as they are, CHW moved to channels last).
    """
    layout = image_layout(item_shape)
    if layout is None:
        raise ValueError(f"tiled_l2 needs images; {name} of shape {tuple(item_shape)} are not images "
                         "(arrays shaped (n, H, W), (n, H, W, C) or (n, C, H, W), or an image folder)")
    shape = tuple(int(s) for s in item_shape)
    if layout == "flat-square":
        side = math.isqrt(shape[0])
        hwc = (side, side, 1)
    elif layout == "HW":
        hwc = shape + (1,)
    elif layout == "CHW":
        hwc = (shape[1], shape[2], shape[0])
    else:
        hwc = shape

    def prep(block, offset):
        u = scale.to_unit(block)
        if layout == "CHW":
            u = u.reshape((len(u),) + shape).transpose(0, 2, 3, 1).reshape(len(u), -1)
        return np.ascontiguousarray(u)

    return hwc, prep
