"""Loading and validating inputs, keeping ids so that a report names the exact training item.

Sources: numpy arrays and torch tensors; ``.npy`` files (memory-mapped, streamed by the search);
``.npz`` archives (``file.npz`` with one array, or ``file.npz:key``; an ``ids`` array inside is
used as ids); folders of PNG/JPEG/BMP/WebP images (grayscale or RGB, optional resize; ids are the
file paths relative to the folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import as_2d_array, check_ids

__all__ = ["Dataset", "load_dataset", "load_image_folder", "load_series", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_NPZ_DEFAULT_KEYS = ("x", "X", "data", "images", "samples", "arr_0")


@dataclass(frozen=True)
class Dataset:
    """A validated set of items.

    Attributes
    ----------
    x : ndarray or numpy.memmap of shape (n_items, n_features)
        Flattened items.
    ids : ndarray of shape (n_items,)
        File names or original indices.
    item_shape : tuple
        Shape of one item before flattening (``(H, W)``, ``(H, W, 3)``, ``(C, H, W)``...).
    source : str
        Where the items came from (a path or "array").
    kind : str
        "array", "npy", "npz" or "images".
    skipped : tuple of (str, str)
        Unreadable image files skipped on request, with the reason.
    bit_depth : int or None
        Image folders: 8 or 16 (the largest depth among the files); pixels are in [0, 1] either way.
    convention : memaudit.conventions.Convention or None
        How the values are read (pixels in which range and layout, or features), set when the
        runner brings the inputs to one convention.
    """

    x: np.ndarray
    ids: np.ndarray
    item_shape: tuple
    source: str
    kind: str
    skipped: tuple = ()  # (path, reason) of unreadable files skipped on request
    bit_depth: int | None = None  # image folders: 8 or 16 (the largest depth among the files)
    convention: object = None  # set by memaudit.conventions.harmonize: how values are read

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_image(self) -> bool:
        """Whether items can be shown as images (an image folder, or an image-shaped array)."""
        from .adapters.images import image_layout

        return self.kind == "images" or image_layout(self.item_shape) is not None

    def describe(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "n_items": len(self),
            "item_shape": list(self.item_shape),
            "n_features": int(self.x.shape[1]),
            "dtype": str(self.x.dtype),
            "bit_depth": self.bit_depth,
            "convention": None if self.convention is None else self.convention.to_dict(),
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }


def load_dataset(source, name: str = "data", *, ids=None, resize=None, mode=None,
                 skip_unreadable: bool = False) -> Dataset:
    """Load and validate a set of items from an array, a file or an image folder.

    Parameters
    ----------
    source : array-like, torch.Tensor, str or path
        An array ``(n_items, ...)``; a ``.npy`` file (memory-mapped); a ``.npz`` file, optionally
        as ``"file.npz:key"``; or a folder of images.
    name : str
        Used in error messages ("train", "samples", "holdout").
    ids : array-like, optional
        Ids for array inputs (default: positions 0..n-1).
    resize : int or (height, width), optional
        Image folders only: resize every image (an int means a square).
    mode : {"L", "RGB"}, optional
        Image folders only: grayscale or colour. Default: "L" when every image is grayscale,
        else "RGB".
    skip_unreadable : bool, default=False
        Image folders only: skip files that cannot be decoded instead of failing; they are listed
        in ``Dataset.skipped`` (and in reports), never dropped silently.

    Returns
    -------
    Dataset
    """
    if not isinstance(source, (str, os.PathLike)):
        arr = as_2d_array(source, name)
        raw_shape = tuple(np.shape(source))[1:]
        ids = check_ids(ids, arr.shape[0], name)
        return Dataset(arr, ids, raw_shape, "array", "array")

    path, key = _path_and_key(source, name)
    from .shards import is_sharded_source, load_sharded  # a folder of .npy shards, a zarr array

    if is_sharded_source(path, name):
        if ids is not None or resize is not None or mode is not None:
            raise ValueError(f"{name}: ids, resize and mode do not apply to sharded arrays "
                             f"({path.name}); ids are the items' positions")
        x, kind = load_sharded(path, name)
        return Dataset(x, np.arange(x.shape[0]), x.item_shape, str(path), kind)
    if path.is_dir():
        if ids is not None:
            raise ValueError(f"{name}: ids come from the file names of an image folder")
        return load_image_folder(path, name, resize=resize, mode=mode,
                                 skip_unreadable=skip_unreadable)
    if resize is not None or mode is not None:
        raise ValueError(f"{name}: resize and mode apply to image folders only, not to {path.name}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            raw = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            reason = ("not a numpy array file, or one of Python objects, which memaudit never "
                      "unpickles" if "pickle" in str(exc) or "Python objects" in str(exc)
                      else str(exc))
            raise ValueError(f"{name}: could not read {path} as a .npy file ({reason})") from None
        arr = as_2d_array(raw, f"{name} ({path.name})")
        ids = check_ids(ids, arr.shape[0], name)
        return Dataset(arr, ids, tuple(raw.shape[1:]), str(path), "npy")
    if suffix == ".npz":
        raw, stored_ids, key = _read_npz(path, key, name)
        arr = as_2d_array(raw, f"{name} ({path.name}:{key})")
        if ids is None:
            ids = stored_ids if stored_ids is not None else np.arange(arr.shape[0])
        ids = check_ids(ids, arr.shape[0], f"{name} ids")
        return Dataset(arr, ids, tuple(raw.shape[1:]), f"{path}:{key}", "npz")
    if suffix in IMAGE_SUFFIXES:
        raise ValueError(f"{name}: {path} is one image; give the folder that holds the images")
    raise ValueError(
        f"{name}: cannot read {path}: expected a .npy or .npz file or a folder of images"
    )


def _path_and_key(source, name: str) -> tuple[Path, str | None]:
    """``"file.npz:key"`` -> (Path("file.npz"), "key"); other paths -> (path, None). Must exist."""
    text = os.fspath(source)
    key = None
    if ".npz:" in text:
        text, key = text.split(".npz:", 1)
        text += ".npz"
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"{name}: {path} does not exist")
    return path, key


def _read_npz(path: Path, key: str | None, name: str):
    """One array of an .npz archive (``key``, the only one, or a usual name) and its ``ids``."""
    try:
        archive = np.load(path, allow_pickle=False)
        keys = list(archive.keys())
    except Exception as exc:
        raise ValueError(f"{name}: could not read {path} as a .npz file ({exc})") from exc
    data_keys = [k for k in keys if k != "ids"]
    if key is None:
        if len(data_keys) == 1:
            key = data_keys[0]
        else:
            key = next((k for k in _NPZ_DEFAULT_KEYS if k in data_keys), None)
        if key is None:
            raise ValueError(f"{name}: {path.name} holds arrays {keys}; say which one as {path.name}:KEY")
    if key not in keys:
        raise KeyError(f"{name}: {path.name} has no array {key!r}; it holds {keys}")
    return archive[key], (archive["ids"] if "ids" in keys else None), key


def _parse_size(resize):
    if resize is None:
        return None
    if isinstance(resize, int):
        size = (resize, resize)
    else:
        size = tuple(int(s) for s in resize)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"resize must be a positive int or (height, width), got {resize!r}")
    return size


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N")
_16BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _is_gray(im) -> bool:
    """Whether an opened image holds one channel of information (palette images: a gray palette)."""
    if im.mode in _GRAY_MODES:
        return True
    if im.mode in ("P", "PA"):
        used = sorted({int(i) for i in np.unique(np.asarray(im.convert("P") if im.mode == "PA" else im))})
        pal = np.asarray(im.getpalette() or [], dtype=np.int64)
        pal = pal[: 3 * (len(pal) // 3)].reshape(-1, 3)
        used = [i for i in used if i < len(pal)]
        return bool(used) and bool((pal[used] == pal[used][:, :1]).all())
    return False


def _decode(im, mode: str, size, path, name) -> tuple[np.ndarray, int]:
    """One image as float32 (H, W) or (H, W, 3) in [0, 1] and its bit depth (8 or 16).

    8-bit images (palette images through their palette, alpha dropped) are converted by PIL to
    ``mode`` and divided by 255. 16-bit grayscale images (PIL modes I;16 and I) keep their 16 bits
    and are divided by 65535 (PIL's own ``convert("L")`` would clip them at 255).
    """
    from PIL import Image

    if im.mode in _16BIT_MODES:
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"{name}: {path} is a 32-bit integer image with values from {a.min()} "
                             f"to {a.max()}; only 8- and 16-bit images are supported")
        a = a.astype(np.float32) / 65535.0
        if size is not None:
            a = np.asarray(Image.fromarray(a, mode="F").resize((size[1], size[0]), Image.BILINEAR))
        if mode == "RGB":
            a = np.repeat(a[:, :, None], 3, axis=2)
        return np.ascontiguousarray(a, dtype=np.float32), 16
    if im.mode == "F":
        raise ValueError(f"{name}: {path} is a floating-point image (PIL mode F), whose value range "
                         "is not defined; save it as an 8- or 16-bit image, or as a .npy array")
    im = im.convert(mode)
    if size is not None:
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0, 8


def load_image_folder(folder, name: str = "images", *, resize=None, mode=None,
                      skip_unreadable: bool = False) -> Dataset:
    """Read every image under ``folder`` (recursively, sorted by path) into a Dataset.

    Pixels are scaled to [0, 1]: 8-bit images (grayscale, RGB, palette; alpha is dropped) divided
    by 255, 16-bit grayscale images by 65535 (keeping their 16 bits); ``Dataset.bit_depth`` is the
    largest depth found. Images of different sizes are refused unless ``resize`` is given.
    Unreadable files are an error, or with ``skip_unreadable`` are skipped and listed in
    ``Dataset.skipped``.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    size = _parse_size(resize)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L' (grayscale) or 'RGB', got {mode!r}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    images, readable, skipped = [], [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
                readable.append(p)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if not skip_unreadable:
                raise ValueError(f"{name}: cannot read image {p} ({exc}); pass skip_unreadable "
                                 "(--skip-unreadable) to skip such files and list them") from None
            skipped.append((p.relative_to(folder).as_posix(), str(exc)))
    if not images:
        raise ValueError(f"{name}: none of the {len(files)} image files under {folder} could be read")
    files = readable
    if mode is None:
        mode = "L" if all(_is_gray(im) for im in images) else "RGB"
    arrays = []
    depth = 8
    first = None
    for p, im in zip(files, images):
        if size is None:
            if first is None:
                first = (p, im.size)
            elif im.size != first[1]:
                raise ValueError(
                    f"{name}: images have different sizes: {first[0].name} is {first[1][0]}x{first[1][1]} "
                    f"but {p.name} is {im.size[0]}x{im.size[1]} (width x height); pass resize=(H, W) "
                    "(--resize on the command line)"
                )
        a, bits = _decode(im, mode, size, p, name)
        depth = max(depth, bits)
        arrays.append(a)
    stack = np.stack(arrays)
    ids = np.array([p.relative_to(folder).as_posix() for p in files])
    x = stack.reshape(stack.shape[0], -1)
    return Dataset(x, ids, tuple(stack.shape[1:]), str(folder), "images", tuple(skipped),
                   bit_depth=depth)


def load_series(source, name: str = "series"):
    """Time series from an array, a list of arrays, a ``.npy``/``.npz`` file or a ``.csv`` file.

    Returns ``(data, ids, description)`` where ``data`` is what
    :func:`memaudit.adapters.timeseries.as_series_list` accepts. A ``.npz`` file may hold an
    ``ids`` array beside the series (``file.npz:key`` picks the array); a ``.csv``/``.txt`` file
    holds one series per row (comma-separated; rows may differ in length, empty trailing cells are
    ignored).
    """
    if not isinstance(source, (str, os.PathLike)):
        return source, None, {"source": "array", "format": "array"}
    path, key = _path_and_key(source, name)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None, {"source": str(path), "format": "npy"}
        if suffix == ".npz":
            data, ids, key = _read_npz(path, key, name)
            return data, ids, {"source": f"{path}:{key}", "format": "npz"}
        if suffix in (".csv", ".txt"):
            series = []
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                cells = [c.strip() for c in line.split(",")]
                while cells and cells[-1] == "":
                    cells.pop()
                if not cells:
                    continue
                try:
                    series.append(np.array([float(c) for c in cells]))
                except ValueError:
                    raise ValueError(f"{name}: {path.name} line {lineno} is not a row of numbers: "
                                     f"{line[:60]!r}") from None
            if not series:
                raise ValueError(f"{name}: {path.name} holds no series")
            return series, None, {"source": str(path), "format": "csv"}
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: could not read {path} ({exc})") from exc
    raise ValueError(f"{name}: cannot read {path}: expected a .npy, .npz or .csv file of series")
