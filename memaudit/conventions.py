"""Input conventions as data: the value range and layout of every input, compared before any search.

A distance between a training image read from a PNG file (pixels in [0, 1]) and a generated sample
saved by diffusers (pixels in [-1, 1]), saved as uint8 (0..255) or saved channels-first (PyTorch's
NCHW) means nothing, and a nearest-neighbour audit run on such a pair finds no copy: a PASS on a
model that copies. So every input carries a :class:`Convention` - is it pixels, in which nominal
range, in which layout - and :func:`harmonize` compares the inputs against the training set's
convention before any work starts. A mismatch is refused with one line that names both sides and
the option that converts; a declared convention (``--range SET=LO,HI``, ``--layout SET=CHW``)
converts the other inputs, never silently.

How a convention is determined, in this order:

1. declared by the user (``ranges`` / ``layouts`` of :func:`harmonize`, the CLI's ``--range`` and
   ``--layout``);
2. image files: pixels in [0, 1] (8-bit files divided by 255, 16-bit by 65535), channels-last;
3. integer dtypes: uint8 is 0..255, uint16 is 0..65535;
4. float arrays shaped like images ``(n, H, W)``, ``(n, H, W, C)``, ``(n, C, H, W)``, or any input
   compared with pixels: the nominal range, among [0, 1], [-1, 1] and [0, 255] (first match),
   that holds the 0.1% and 99.9% quantiles of the values within 1% of its span (quantiles, so
   that a few diverged samples do not hide the convention of the rest); none -> "unknown range";
5. flat float arrays ``(n, d)`` compared only with each other: features (embeddings, windows),
   with no pixel range; a warning is recorded when their value ranges are far apart.

Layouts: ``HW`` (grayscale), ``HWC`` (channels-last, image files and PIL), ``CHW``
(channels-first, PyTorch), ``flat`` (rows of ``H * W * C`` values in an unknown order). One channel
makes every layout the same. Inputs are converted to the training set's layout and range, so the
training set (the largest input, often memory-mapped) is never copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ._validation import check_finite

__all__ = ["Convention", "harmonize", "observe", "parse_declarations", "NOMINAL_RANGES",
           "describe_space", "pixel_scale", "require_images"]

# nominal pixel ranges, tried in this order on the observed values (each within 1% of its span)
NOMINAL_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))
_TOL = 0.01
_LAYOUTS = ("HW", "HWC", "CHW")


@dataclass(frozen=True)
class Convention:
    """How one input's values are to be read.

    Attributes
    ----------
    kind : {"pixels", "features"}
    value_range : (float, float) or None
        Nominal range (pixels); None when unknown or for features.
    range_source : str
        How the range was determined ("8-bit image files", "dtype uint8", "observed values",
        "declared", ...).
    layout : {"HW", "HWC", "CHW", "flat"} or None
        Item layout for pixels (None for features).
    image_shape : (H, W, C) or None
        Channels-last shape of one image, when known.
    observed : (float, float)
        Smallest and largest value in the input (before any conversion).
    converted : str or None
        What was done to reach the training set's convention ("range [-1, 1] -> [0, 1]",
        "layout CHW -> HWC"), None when nothing.
    """

    kind: str
    value_range: tuple | None
    range_source: str
    layout: str | None
    image_shape: tuple | None
    observed: tuple
    converted: str | None = None

    def describe(self) -> str:
        """One line: "pixels in [0, 1] (8-bit image files), 28x28x3 channels-last"."""
        lo, hi = self.observed
        if self.kind == "features":
            return f"features (values {_num(lo)} to {_num(hi)})"
        rng = (f"pixels in [{_num(self.value_range[0])}, {_num(self.value_range[1])}] "
               f"({self.range_source})" if self.value_range is not None
               else f"pixels of unknown range (values {_num(lo)} to {_num(hi)})")
        if self.image_shape is not None:
            h, w, c = self.image_shape
            shape = f"{h}x{w}" if c == 1 else f"{h}x{w}x{c} " + (
                "channels-first" if self.layout == "CHW" else "channels-last")
            rng += f", {shape}"
        if self.converted:
            rng += f"; converted: {self.converted}"
        return rng

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value_range": None if self.value_range is None
                else list(self.value_range), "range_source": self.range_source,
                "layout": self.layout,
                "image_shape": None if self.image_shape is None else list(self.image_shape),
                "observed": [float(v) for v in self.observed], "converted": self.converted,
                "description": self.describe()}


def _num(v: float) -> str:
    return f"{v:.4g}"


def observe(x: np.ndarray, name: str) -> tuple[float, float, float, float]:
    """Smallest and largest value of ``x`` and its 0.1% / 99.9% quantiles, refusing NaN/Inf.

    The quantiles (over at most ~4M values of evenly spaced rows) decide a nominal pixel range, so
    that a few diverged generated samples do not hide the convention of the rest. A memory-mapped
    input is streamed (32 MiB at a time) and its pages are released after each block, so that
    checking a file larger than memory costs one read and no resident memory.
    """
    from .neighbors import _release  # the page release of the streamed search

    if hasattr(x, "observe"):  # a sharded set (memaudit.shards) streams its shards itself
        return x.observe(name)
    n = x.shape[0]
    if x.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    d = max(1, int(np.prod(x.shape[1:])))
    every = max(1, (n * d) // (1 << 22))
    mm = getattr(x, "_mmap", None) if isinstance(x, np.memmap) else None
    if mm is None:
        if x.dtype.kind == "f":
            check_finite(x.reshape(n, -1), name)
        lo, hi = float(x.min()), float(x.max())
        sample = np.asarray(x[::every], dtype=np.float64).ravel()
    else:
        rows = max(1, (32 << 20) // max(1, x.dtype.itemsize * d))
        rows = max(every, rows - rows % every)
        lo, hi = math.inf, -math.inf
        picks = []
        for s in range(0, n, rows):
            block = np.asarray(x[s : s + rows])
            if block.dtype.kind == "f":
                check_finite(block.reshape(block.shape[0], -1), name, offset=s)
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            picks.append(np.asarray(block[::every], dtype=np.float64).ravel())
            del block
            _release(mm)
        sample = np.concatenate(picks)
    q_lo, q_hi = np.quantile(sample, [0.001, 0.999])
    return lo, hi, float(q_lo), float(q_hi)


def _nominal(lo: float, hi: float):
    for a, b in NOMINAL_RANGES:
        tol = _TOL * (b - a)
        if lo >= a - tol and hi <= b + tol:
            return (a, b)
    return None


def _shape_layout(item_shape) -> tuple[str | None, tuple | None]:
    """Layout and channels-last (H, W, C) read off an item shape, or (None, None) when flat."""
    s = tuple(int(v) for v in item_shape)
    if len(s) == 2 and min(s) >= 2:
        return "HW", (s[0], s[1], 1)
    if len(s) == 3:
        if s[-1] in (1, 3, 4) and min(s[:2]) >= 2 and not (s[0] in (1, 3, 4) and s[-1] > 4):
            if s[-1] == 1:
                return "HW", (s[0], s[1], 1)
            return "HWC", (s[0], s[1], s[2])
        if s[0] in (1, 3, 4) and min(s[1:]) >= 2:
            if s[0] == 1:
                return "HW", (s[1], s[2], 1)
            return "CHW", (s[1], s[2], s[0])
    return None, None


def _is_pixels(ds) -> bool:
    if ds.kind == "images" or ds.x.dtype in (np.uint8, np.uint16):
        return True
    return _shape_layout(ds.item_shape)[0] is not None


def parse_declarations(values, sets, what: str) -> dict:
    """``["-1,1", "samples=0,255"]`` -> ``{"train": "-1,1", "samples": "0,255", ...}``.

    An entry without ``SET=`` applies to every set; a later entry wins. Raises ``ValueError`` for
    an unknown set name.
    """
    out = {}
    for v in values or ():
        text = str(v).strip()
        if "=" in text:
            key, val = (t.strip() for t in text.split("=", 1))
            if key not in sets:
                raise ValueError(f"{what} {text!r}: unknown set {key!r}; use one of "
                                 f"{', '.join(sets)} (or no SET= for all)")
            out[key] = val
        else:
            for key in sets:
                out[key] = text
    return out


def _parse_range(text: str, name: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2 or not all(math.isfinite(p) for p in parts) or parts[0] >= parts[1]:
        raise ValueError(f"{name}: range {text!r} is not LO,HI with LO < HI (e.g. 0,1 or -1,1 or "
                         "0,255)")
    return float(parts[0]), float(parts[1])


def _parse_layout(text: str, name: str) -> str:
    t = str(text).strip().upper()
    if t not in ("HWC", "CHW"):
        raise ValueError(f"{name}: layout {text!r} must be HWC (channels-last) or CHW "
                         "(channels-first)")
    return t


def _infer(ds, name, declared_range, declared_layout, pixels: bool) -> Convention:
    lo, hi, q_lo, q_hi = observe(ds.x, name)
    observed = (lo, hi)
    layout, image_shape = _shape_layout(ds.item_shape)
    if declared_layout is not None:
        d = _parse_layout(declared_layout, f"{name} --layout")
        s = tuple(int(v) for v in ds.item_shape)
        if layout in ("HWC", "CHW") and layout != d:
            raise ValueError(f"{name}: --layout {d} was declared but its items are shaped {s}, "
                             f"which reads as {layout}; check the declaration")
        if layout is None and len(s) == 3:
            image_shape = (s[1], s[2], s[0]) if d == "CHW" else (s[0], s[1], s[2])
        layout = layout if layout in ("HWC", "CHW", "HW") else "flat:" + d
        pixels = True
    if declared_range is not None:
        a, b = _parse_range(declared_range, f"{name} --range")
        if ds.x.dtype.kind in "iu" and b <= 1 < hi:
            raise ValueError(f"{name}: declared range [{_num(a)}, {_num(b)}] but it holds integers "
                             f"up to {_num(hi)} (dtype {ds.x.dtype}); declare 0,255 for uint8")
        return Convention("pixels", (a, b), "declared", layout or "flat", image_shape, observed)
    if ds.kind == "images":
        depth = ds.bit_depth or 8
        return Convention("pixels", (0.0, 1.0), f"{depth}-bit image files", layout, image_shape,
                          observed)
    if ds.x.dtype == np.uint8:
        return Convention("pixels", (0.0, 255.0), "dtype uint8", layout or "flat", image_shape,
                          observed)
    if ds.x.dtype == np.uint16:
        return Convention("pixels", (0.0, 65535.0), "dtype uint16", layout or "flat", image_shape,
                          observed)
    if not pixels:
        return Convention("features", None, "not pixels", None, None, observed)
    return Convention("pixels", _nominal(q_lo, q_hi), "observed values", layout or "flat",
                      image_shape, observed)


def _range_text(r) -> str:
    return "unknown range" if r is None else f"[{_num(r[0])}, {_num(r[1])}]"


def _soft_unknown(a: Convention, b: Convention) -> bool:
    """One side has no pixel range, the other's was only read off its values."""
    return ((a.value_range is None and b.range_source == "observed values")
            or (b.value_range is None and a.range_source == "observed values"))


def _adopt_shape(conv: Convention, shape, n_features: int) -> Convention:
    """A flat pixel input takes the image shape of another input when it can only be that one."""
    if conv.kind != "pixels" or conv.image_shape is not None or shape is None:
        return conv
    if int(np.prod(shape)) != n_features:
        return conv
    if shape[2] == 1:
        return replace(conv, image_shape=tuple(shape), layout="HW")
    if (conv.layout or "").startswith("flat:"):
        return replace(conv, image_shape=tuple(shape))
    return conv


def _convert(ds, conv: Convention, ref: Convention, name: str, ref_name: str, declared: set):
    """``ds`` with its values in ``ref``'s range and layout, or a ValueError naming the fix."""
    x = ds.x
    done = []
    item_shape = tuple(ds.item_shape)
    if conv.kind == "pixels" and ref.kind == "pixels":
        if conv.image_shape is not None and ref.image_shape is not None:
            if conv.image_shape != ref.image_shape:
                raise ValueError(f"{name} are {_shape_text(conv)} images but {ref_name} are "
                                 f"{_shape_text(ref)}: they cannot be compared pixel by pixel "
                                 "(resize one set first; --resize applies to image folders)")
            same = conv.image_shape[2] == 1 or _base(conv.layout) == _base(ref.layout)
            if not same:
                if name not in declared and ref_name not in declared:
                    raise ValueError(
                        f"{name} are {_layout_text(conv)} {tuple(ds.item_shape)} but {ref_name} "
                        f"are {_layout_text(ref)} {_item(ref)}: the same pixels in another order; "
                        f"declare the layout to convert: --layout {name}={_base(conv.layout)}")
                x = _relayout(np.asarray(x), conv, ref)
                done.append(f"layout {_base(conv.layout)} -> {_base(ref.layout)}")
            item_shape = _item(ref)
        elif conv.image_shape is None and ref.image_shape is not None:
            raise ValueError(f"{name} are flat rows of {ds.x.shape[1]} values and {ref_name} are "
                             f"{_shape_text(ref)} {_layout_text(ref)} images: the channel order of "
                             f"{name} is unknown; declare it: --layout {name}=HWC or "
                             f"--layout {name}=CHW")
        elif conv.image_shape is not None and ref.image_shape is None:
            raise ValueError(f"{ref_name} are flat rows of {ds.x.shape[1]} values and {name} are "
                             f"{_shape_text(conv)} {_layout_text(conv)} images: the channel order "
                             f"of {ref_name} is unknown; declare it: --layout {ref_name}=HWC or "
                             f"--layout {ref_name}=CHW")
        if conv.value_range != ref.value_range and _soft_unknown(conv, ref):
            # a range read off the values of one side, no range on the other: both may be data of
            # no pixel convention (a small set falls inside [-1, 1] by chance); the scale check
            # below decides
            conv = replace(conv, value_range=None)
            if ref.value_range is not None:
                ref = replace(ref, value_range=None)
        elif conv.value_range != ref.value_range:
            if ref.value_range is None or conv.value_range is None or name not in declared:
                raise ValueError(_range_mismatch(conv, ref, name, ref_name))
            (a, b), (c, d) = conv.value_range, ref.value_range
            dtype = np.float64 if x.dtype == np.float64 else np.float32
            x = ((np.asarray(x, dtype=dtype) - a) * ((d - c) / (b - a)) + c).astype(dtype,
                                                                                 copy=False)
            done.append(f"range {_range_text(conv.value_range)} -> {_range_text(ref.value_range)}")
    elif conv.kind != ref.kind:  # only when one side was declared pixels
        raise ValueError(f"{name} and {ref_name} are not both pixels: declare the convention of "
                         "every input (--range) or of none")
    if done:
        conv = replace(conv, converted="; ".join(done), layout=ref.layout,
                       image_shape=ref.image_shape, value_range=ref.value_range)
    return replace(ds, x=x, item_shape=item_shape), conv


def _base(layout) -> str | None:
    if layout is None:
        return None
    return layout.split(":")[-1] if layout.startswith("flat:") else layout


def _item(conv: Convention) -> tuple:
    h, w, c = conv.image_shape
    if c == 1:
        return (h, w)
    return (c, h, w) if _base(conv.layout) == "CHW" else (h, w, c)


def _relayout(x: np.ndarray, conv: Convention, ref: Convention) -> np.ndarray:
    h, w, c = conv.image_shape
    n = x.shape[0]
    if _base(conv.layout) == "CHW":
        imgs = x.reshape(n, c, h, w)
        out = np.moveaxis(imgs, 1, 3) if _base(ref.layout) != "CHW" else imgs
    else:
        imgs = x.reshape(n, h, w, c)
        out = np.moveaxis(imgs, 3, 1) if _base(ref.layout) == "CHW" else imgs
    return np.ascontiguousarray(out).reshape(n, -1)


def _shape_text(conv: Convention) -> str:
    h, w, c = conv.image_shape
    return f"{h}x{w}" + ("" if c == 1 else f"x{c}")


def _layout_text(conv: Convention) -> str:
    return {"CHW": "channels-first", "HWC": "channels-last", "HW": "grayscale"}.get(
        _base(conv.layout), "flat")


def _range_mismatch(conv: Convention, ref: Convention, name: str, ref_name: str) -> str:
    def side(c, n):
        if c.value_range is None:
            return (f"{n} holds values from {_num(c.observed[0])} to {_num(c.observed[1])}, which "
                    "fit no known pixel range")
        how = c.range_source if c.range_source != "observed values" else (
            f"values {_num(c.observed[0])} to {_num(c.observed[1])}")
        return f"{n} holds pixels in {_range_text(c.value_range)} ({how})"

    fix = ("declare its convention to convert it, e.g. --range "
           f"{name}={_guess(conv)}" if ref.value_range is not None else
           f"declare the training set's convention too (--range {ref_name}=LO,HI)")
    return (f"{side(conv, name)} but {side(ref, ref_name)}: compared as they are, no copy would be "
            f"found; {fix}")


def _guess(conv: Convention) -> str:
    if conv.value_range is not None:
        a, b = conv.value_range
        return f"{_num(a)},{_num(b)}"
    return "LO,HI"


def _scale_note(conv: Convention, ref: Convention, name: str, ref_name: str) -> str | None:
    (a, b), (c, d) = conv.observed, ref.observed
    span1, span2 = b - a, d - c
    overlap = min(b, d) - max(a, c)
    small = min(span1, span2)
    if small <= 0:
        return None
    if overlap < 0.5 * small or max(span1, span2) > 4 * small:
        return (f"{name} values span [{_num(a)}, {_num(b)}] and {ref_name} [{_num(c)}, {_num(d)}]: "
                "not on a common scale; if these are pixels, declare their ranges (--range)")
    return None


def harmonize(datasets: dict, *, ranges: dict | None = None, layouts: dict | None = None):
    """Check that every input can be compared with the first (the training set); convert on request.

    Parameters
    ----------
    datasets : dict of name -> Dataset or None
        The first entry is the reference (the training set); None entries are skipped.
    ranges, layouts : dict of name -> str, optional
        Declared conventions: ``"-1,1"``, ``"0,255"``; ``"HWC"``, ``"CHW"``. A declared input is
        converted to the reference's range and layout; an inferred mismatch is refused.

    Returns
    -------
    (dict of name -> Dataset, list of str)
        The datasets with ``convention`` set (and values converted where declared), and notes for
        the report (e.g. feature sets on very different scales).

    Raises
    ------
    ValueError
        One line naming both sides and the option that converts.
    """
    ranges, layouts = dict(ranges or {}), dict(layouts or {})
    names = [k for k, v in datasets.items() if v is not None]
    for k in list(ranges) + list(layouts):
        if k not in names:
            raise ValueError(f"--range/--layout name an input {k!r} that this run does not have "
                             f"(inputs: {', '.join(names)})")
    pixels = any(_is_pixels(datasets[k]) for k in names) or bool(ranges) or bool(layouts)
    convs = {k: _infer(datasets[k], k, ranges.get(k), layouts.get(k), pixels) for k in names}
    shape = next((c.image_shape for c in convs.values() if c.image_shape is not None), None)
    convs = {k: _adopt_shape(c, shape, datasets[k].x.shape[1]) for k, c in convs.items()}
    ref_name = names[0]
    ref = convs[ref_name]
    ref_item = _item(ref) if ref.image_shape is not None else tuple(datasets[ref_name].item_shape)
    out = {ref_name: replace(datasets[ref_name], convention=ref, item_shape=ref_item)}
    notes = []
    if ref.kind == "pixels" and ref.value_range is None and ref_name not in ranges:
        other_known = [k for k in names[1:] if convs[k].value_range is not None
                       and convs[k].range_source != "observed values"]
        if other_known:
            raise ValueError(_range_mismatch(convs[other_known[0]], ref, other_known[0], ref_name))
    declared = set(ranges) | set(layouts)
    for k in names:
        c = convs[k]
        if c.value_range is not None:
            a, b = c.value_range
            if c.observed[0] < a - 0.05 * (b - a) or c.observed[1] > b + 0.05 * (b - a):
                notes.append(f"warning: {k} values go from {_num(c.observed[0])} to "
                             f"{_num(c.observed[1])}, outside its range [{_num(a)}, {_num(b)}] "
                             f"({c.range_source}): some items are far from valid pixels")
    for k in names[1:]:
        ds, conv = _convert(datasets[k], convs[k], ref, k, ref_name, declared)
        if conv.kind == "features" or conv.value_range is None:
            note = _scale_note(conv, ref, k, ref_name)
            if note:
                if conv.kind == "pixels":
                    raise ValueError(note)
                notes.append(note)
        out[k] = replace(ds, convention=conv)
    for k, v in datasets.items():
        out.setdefault(k, v)
    return {k: out[k] for k in datasets}, notes


def require_images(method: str, ds, option: str = "--method") -> None:
    """Refuse image-only duplicate methods (phash, dhash, tiled_l2) on a set that is not images."""
    conv = getattr(ds, "convention", None)
    if method in ("phash", "dhash", "tiled_l2") and (conv is None or conv.kind != "pixels"):
        what = conv.describe() if conv is not None else "not images"
        raise ValueError(f"{option} {method} compares images, but train are {what}; use exact or "
                         "embedding for features")


def pixel_scale(ds) -> dict:
    """The ``value_range`` and ``levels`` the duplicates probe quantizes a harmonized set with.

    Pixels of a known range are quantized to 8 bits (255 levels), or to 16 bits when the training
    set came from 16-bit files or uint16 arrays, so that "exact" means identical pixels at the
    sources' precision; features and pixels of unknown range get ``{}`` (the probe then uses one
    scale over all sets, stated in its result).
    """
    conv = getattr(ds, "convention", None)
    if conv is None or conv.kind != "pixels" or conv.value_range is None:
        return {}
    sixteen = conv.range_source in ("16-bit image files", "dtype uint16")
    return {"value_range": tuple(conv.value_range), "levels": 65535 if sixteen else 255}


def describe_space(train_convention: Convention, metric: str) -> str:
    """The headline's "which space was compared": "pixels in [0, 1], 28x28x3, L2 distance"."""
    dist = {"l2": "L2 (Euclidean) distance", "cosine": "cosine distance"}.get(metric, metric)
    c = train_convention
    if c is None:
        return dist
    if c.kind == "features":
        return f"features, {dist}"
    rng = _range_text(c.value_range)
    what = f"pixels in {rng}" if c.value_range is not None else "pixels of unknown range"
    if c.image_shape is not None:
        what += f", {_shape_text(c)} {_layout_text(c)}"
    return f"{what}, {dist}"
