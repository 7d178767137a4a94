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
    """

    x: np.ndarray
    ids: np.ndarray
    item_shape: tuple
    source: str
    kind: str
    skipped: tuple = ()  # (path, reason) of unreadable files skipped on request

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_image(self) -> bool:
        """Whether items can be shown as images (an image folder, or an image-shaped array)."""
        from .adapters.pixels import image_layout

        return self.kind == "images" or image_layout(self.item_shape) is not None

    def describe(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "n_items": len(self),
            "item_shape": list(self.item_shape),
            "n_features": int(self.x.shape[1]),
            "dtype": str(self.x.dtype),
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
            raise ValueError(f"{name}: could not read {path} as a .npy file ({exc})") from exc
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


def load_image_folder(folder, name: str = "images", *, resize=None, mode=None,
                      skip_unreadable: bool = False) -> Dataset:
    """Read every image under ``folder`` (recursively, sorted by path) into a Dataset.

    Pixels are scaled to [0, 1]. Images of different sizes are refused unless ``resize`` is given.
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
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            if not skip_unreadable:
                raise ValueError(f"{name}: cannot read image {p} ({exc}); pass skip_unreadable "
                                 "(--skip-unreadable) to skip such files and list them") from exc
            skipped.append((p.relative_to(folder).as_posix(), str(exc)))
    if not images:
        raise ValueError(f"{name}: none of the {len(files)} image files under {folder} could be read")
    files = readable
    if mode is None:
        mode = "L" if all(im.mode in ("1", "L", "I", "I;16", "F") for im in images) else "RGB"
    arrays = []
    first = None
    for p, im in zip(files, images):
        im = im.convert(mode)
        if size is not None:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        elif first is None:
            first = (p, im.size)
        elif im.size != first[1]:
            raise ValueError(
                f"{name}: images have different sizes: {first[0].name} is {first[1][0]}x{first[1][1]} "
                f"but {p.name} is {im.size[0]}x{im.size[1]} (width x height); pass resize=(H, W) "
                "(--resize on the command line)"
            )
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    stack = np.stack(arrays)
    ids = np.array([p.relative_to(folder).as_posix() for p in files])
    x = stack.reshape(stack.shape[0], -1)
    return Dataset(x, ids, tuple(stack.shape[1:]), str(folder), "images", tuple(skipped))


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
