"""Loading and validating inputs, keeping ids so that a report names the exact training item.

Sources: numpy arrays and torch tensors; ``.npy`` files (memory-mapped, streamed by the search);
``.npz`` archives (``file.npz`` with one array, or ``file.npz:key``; an ``ids`` array inside is
used as ids); folders of PNG/JPEG/BMP/WebP images (grayscale or RGB, optional resize; ids are the
file paths relative to the folder), streamed in batches with parallel decode; folders written by
``datasets``' ``save_to_disk`` (``DIR`` or ``DIR:COLUMN``; an image column or numeric columns;
ids are row numbers); from Python, ``datasets.Dataset``, torch ``Dataset`` / ``DataLoader`` and
pandas ``DataFrame`` objects. Every source goes through :func:`open_source`, which the runners
(through :func:`load_dataset`) and ``memaudit convert`` share.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import as_2d_array, check_finite, check_ids

__all__ = ["Dataset", "load_dataset", "open_source", "load_image_folder", "load_series",
           "IMAGE_SUFFIXES", "sidecar_path", "scratch_folder", "decode_workers", "array_fingerprint",
           "SIDECAR_FORMAT"]

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
                 skip_unreadable: bool = False, progress=None) -> Dataset:
    """Load and validate a set of items from an array, a file, a folder or a Python object.

    Parameters
    ----------
    source : array-like, torch.Tensor, str, path or object
        An array ``(n_items, ...)``; a ``.npy`` file (memory-mapped; a ``FILE.npy.json`` sidecar
        written by ``memaudit convert`` gives its ids and convention); a ``.npz`` file, optionally
        as ``"file.npz:key"``; a folder of images (streamed); a folder written by
        ``datasets.Dataset.save_to_disk``; or, from Python, a ``datasets.Dataset``, a
        ``torch.utils.data.Dataset`` or ``DataLoader``, or a ``pandas.DataFrame`` of numeric
        columns. Streamed sources (image folders, datasets, torch datasets) are decoded in
        batches into a scratch ``.npy`` file that the Dataset memory-maps.
    name : str
        Used in error messages ("train", "samples", "holdout").
    ids : array-like, optional
        Ids for array inputs (default: positions 0..n-1).
    resize : int or (height, width), optional
        Images only: resize every image (an int means a square).
    mode : {"L", "RGB"}, optional
        Images only: grayscale or colour. Default: "L" when every image is grayscale, else "RGB".
    skip_unreadable : bool, default=False
        Images only: skip files that cannot be decoded instead of failing; they are listed in
        ``Dataset.skipped`` (and in reports), never dropped silently.
    progress : bool or None
        Progress bar on stderr while decoding (see :mod:`memaudit._progress`).

    Returns
    -------
    Dataset
    """
    found = open_source(source, name, ids=ids, resize=resize, mode=mode,
                        skip_unreadable=skip_unreadable)
    return found if isinstance(found, Dataset) else _materialize(found, progress)


def open_source(source, name: str = "data", *, ids=None, resize=None, mode=None,
                skip_unreadable: bool = False):
    """What :func:`load_dataset` and ``memaudit convert`` share: the source checked and opened.

    Returns a :class:`Dataset` for sources read in place (arrays, ``.npy``/``.npz`` files,
    DataFrames) or a pending stream for the decoded ones (image folders, datasets, torch
    datasets); every check that can refuse the source runs here, before any decoding.
    """
    if not isinstance(source, (str, os.PathLike)):
        found = _open_object(source, name, ids=ids, resize=resize, mode=mode,
                                    skip_unreadable=skip_unreadable)
        if found is not None:
            return found
        if resize is not None or mode is not None:
            raise ValueError(f"{name}: resize and mode apply to images only, not to arrays")
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
        if key is not None and not is_saved_dataset(path):
            raise ValueError(f"{name}: {path}:{key} names a column, but {path} is not a folder "
                             "saved with datasets' save_to_disk")
        if ids is not None:
            raise ValueError(f"{name}: ids come from the file names of an image folder")
        if is_saved_dataset(path):
            return _open_saved_dataset(path, name, key, resize=resize, mode=mode,
                                              skip_unreadable=skip_unreadable)
        return _folder_source(path, name, resize, mode, skip_unreadable)
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
        meta = read_sidecar(path, raw, name)
        if meta is not None:
            if ids is None:
                ids = np.array(meta["ids"])
            skipped = tuple((f, r) for f, r in meta.get("skipped", []))
            return Dataset(arr, check_ids(ids, arr.shape[0], name), tuple(raw.shape[1:]),
                           str(path), meta["kind"], skipped, bit_depth=meta.get("bit_depth"))
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
        f"{name}: cannot read {path}: expected a .npy or .npz file or a folder (of images, or "
        "saved with datasets' save_to_disk)"
    )


SIDECAR_FORMAT = "memaudit-convert/1"


def array_fingerprint(path) -> str:
    """BLAKE2b of a file's size, first and last MiB: ties a sidecar to the array it describes."""
    import hashlib

    size = os.path.getsize(path)
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(size - (1 << 20))
        h.update(fh.read(1 << 20))
    return h.hexdigest()


def sidecar_path(npy_path) -> Path:
    """The file beside ``x.npy`` that holds its ids and convention: ``x.npy.json``."""
    p = Path(npy_path)
    return p.with_name(p.name + ".json")


def read_sidecar(path: Path, raw: np.ndarray, name: str) -> dict | None:
    """The ``memaudit convert`` sidecar of ``path``, checked against the array; None if absent."""
    import json

    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read {side.name} beside {path.name} ({exc}); delete it "
                         "or convert again") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        return None  # somebody else's JSON file: the array is read as a plain .npy
    shape = [int(v) for v in raw.shape]
    if (meta.get("shape") == shape and len(meta.get("ids", ())) == shape[0]
            and meta.get("fingerprint") != array_fingerprint(path)):
        raise ValueError(f"{name}: {side.name} was written for another {path.name} (its "
                         "fingerprint differs): the two files do not belong together; convert "
                         "again")
    if meta.get("shape") != shape or len(meta.get("ids", ())) != shape[0]:
        raise ValueError(f"{name}: {side.name} describes an array of shape {meta.get('shape')} "
                         f"with {len(meta.get('ids', ()))} ids but {path.name} has shape "
                         f"{shape}: the two files do not belong together; convert again")
    return meta


def _path_and_key(source, name: str) -> tuple[Path, str | None]:
    """``"file.npz:key"`` -> (Path("file.npz"), "key"); other paths -> (path, None). Must exist."""
    text = os.fspath(source)
    key = None
    if ".npz:" in text:
        text, key = text.split(".npz:", 1)
        text += ".npz"
    path = Path(text)
    if not path.exists() and key is None and ":" in text:
        folder, column = text.rsplit(":", 1)  # "DIR:COLUMN" of a saved dataset
        if Path(folder).is_dir() and is_saved_dataset(Path(folder)):
            return Path(folder), column
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
                      skip_unreadable: bool = False, progress=None) -> Dataset:
    """Read every image under ``folder`` (recursively, sorted by path) into a Dataset.

    Pixels are scaled to [0, 1]: 8-bit images (grayscale, RGB, palette; alpha is dropped) divided
    by 255, 16-bit grayscale images by 65535 (keeping their 16 bits); ``Dataset.bit_depth`` is the
    largest depth found. Images of different sizes are refused unless ``resize`` is given.
    Unreadable files are an error, or with ``skip_unreadable`` are skipped and listed in
    ``Dataset.skipped``.

    The folder is streamed: file headers are read first (modes and sizes, so that a bad folder is
    refused before any decoding), then images are decoded in batches by a pool of threads
    (Pillow's decoders release the GIL) and appended to a scratch ``.npy`` file that the returned
    Dataset memory-maps (:func:`scratch_folder`), so that peak memory does not grow with the
    number of images (docs/io.md gives the measurement).
    """
    return _materialize(_folder_source(folder, name, resize, mode, skip_unreadable), progress)


def _folder_source(folder, name, resize, mode, skip_unreadable) -> "_Pending":
    folder = Path(folder)
    files = sorted((p.relative_to(folder).as_posix() for p in folder.rglob("*")
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                   key=lambda r: r.split("/"))  # the order of the paths' parts
    if not files:
        raise ValueError(f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")

    ids = np.array(files)  # one compact array of names; the list goes
    del files

    def open_item(i):
        from PIL import Image

        return Image.open(folder / str(ids[i]))

    items = _ImageItems(len(ids), open_item, lambda i: folder / str(ids[i]), ids,
                        f"image files under {folder}")
    return _image_pending(items, name, str(folder), resize, mode, skip_unreadable)


# ----------------------------------------------------------------------------- streamed decoding
_BATCH = 256  # images decoded per batch: bounded memory, enough work for the threads
_BATCH_BYTES = 16 << 20  # and at most this many bytes of decoded pixels per batch


def decode_workers() -> int:
    """Threads that decode images: the usable cores, at most 8 (``MEMAUDIT_DECODE_WORKERS``)."""
    env = os.environ.get("MEMAUDIT_DECODE_WORKERS")
    if env:
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass(frozen=True)
class _ImageItems:
    """Images to decode, by position: ``open(i)`` gives a (lazily loaded) PIL image, ``label(i)``
    names it in messages, ``ids[i]`` is its id."""

    n: int
    open: object
    label: object
    ids: np.ndarray
    what: str  # "image files under DIR", "rows of column 'image' of ..."


@dataclass
class _Pending:
    """A source that is streamed: ``write(writer, bar)`` appends its items, as (b, *item_shape)
    float32 or numeric blocks, to an :class:`memaudit.io.NpyWriter` and returns ``(ids, skipped,
    bit_depth)``; ``total`` is the number of items (for the progress bar)."""

    kind: str
    source: str
    total: int
    write: object
    desc: str


def _image_pending(items: _ImageItems, name, source, resize, mode, skip_unreadable) -> _Pending:
    """Check the headers of every image (readable, one size, gray or colour) before decoding."""
    from PIL import UnidentifiedImageError

    size = _parse_size(resize)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L' (grayscale) or 'RGB', got {mode!r}")
    errors = (UnidentifiedImageError, OSError, SyntaxError, ValueError)

    def unreadable(i, exc):
        if not skip_unreadable:
            raise ValueError(f"{name}: cannot read image {items.label(i)} ({exc}); pass "
                             "skip_unreadable (--skip-unreadable) to skip such files and list "
                             "them") from None
        return (str(items.ids[i]), str(exc))

    def head(i):
        try:
            with items.open(i) as im:
                return i, im.size, (_is_gray(im) if mode is None else None), None
        except errors as exc:
            return i, None, None, exc

    keep, skipped, gray, first = [], [], True, None

    def heads(pool):  # in chunks: a future per file at once would grow with the folder
        for s in range(0, items.n, 4 * _BATCH):
            yield from pool.map(head, range(s, min(items.n, s + 4 * _BATCH)))

    with ThreadPoolExecutor(decode_workers()) as pool:
        for i, im_size, is_gray, exc in heads(pool):
            if exc is not None:
                skipped.append(unreadable(i, exc))
                continue
            keep.append(i)
            gray = gray and bool(is_gray)
            if size is None:
                if first is None:
                    first = (i, im_size)
                elif im_size != first[1]:
                    a, b = Path(str(items.label(first[0]))).name, Path(str(items.label(i))).name
                    raise ValueError(
                        f"{name}: images have different sizes: {a} is {first[1][0]}x{first[1][1]} "
                        f"but {b} is {im_size[0]}x{im_size[1]} (width x height); pass "
                        "resize=(H, W) (--resize on the command line)")
    if not keep:
        raise ValueError(f"{name}: none of the {items.n} {items.what} could be read")
    mode = mode or ("L" if gray else "RGB")

    def decode(i):
        try:
            with items.open(i) as im:
                im.load()
                a, bits = _decode(im, mode, size, items.label(i), name)
                return i, a, bits, None
        except errors as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(f"{name}:"):
                raise
            return i, None, 0, exc

    w, h = size[::-1] if size is not None else first[1]
    step = max(1, min(_BATCH, _BATCH_BYTES // (4 * w * h * (3 if mode == "RGB" else 1))))

    def write(writer, bar):
        kept, depth, lost = [], 8, list(skipped)
        with ThreadPoolExecutor(decode_workers()) as pool:
            for s in range(0, len(keep), step):
                batch = []
                for i, a, bits, exc in pool.map(decode, keep[s : s + step]):
                    if exc is not None:
                        lost.append(unreadable(i, exc))
                        continue
                    batch.append(a)
                    kept.append(i)
                    depth = max(depth, bits)
                if batch:
                    writer.append(np.stack(batch))
                bar.update(len(keep[s : s + step]))
        if not kept:
            raise ValueError(f"{name}: none of the {items.n} {items.what} could be read")
        return items.ids[np.asarray(kept, dtype=np.int64)], tuple(lost), depth

    return _Pending("images", source, len(keep), write, f"{name}: decoding images")


def scratch_folder() -> Path:
    """Where streamed inputs are decoded to for an audit: ``$MEMAUDIT_SCRATCH``, else
    ``<tempdir>/memaudit-scratch``. Files there are deleted when their Dataset is released (and
    at exit); those of killed runs are removed by the next run."""
    import tempfile

    folder = Path(os.environ.get("MEMAUDIT_SCRATCH") or Path(tempfile.gettempdir()) / "memaudit-scratch")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _materialize(pending: _Pending, progress=None, *, item_shape=None) -> Dataset:
    """Stream ``pending`` into a scratch .npy file and memory-map it (deleted with the Dataset)."""
    import tempfile
    import weakref

    from ._progress import Progress
    from .io import NpyWriter, remove_stale_temporaries

    folder = scratch_folder()
    remove_stale_temporaries(folder)
    fd, path = tempfile.mkstemp(prefix=f".{pending.kind}.{os.getpid()}.", suffix=".npy", dir=folder)
    try:
        with os.fdopen(fd, "r+b") as fh, Progress(pending.total, pending.desc, progress) as bar:
            writer = NpyWriter(fh)
            ids, skipped, depth = pending.write(writer, bar)
            writer.finish()
        raw = np.load(path, mmap_mode="r")
    except BaseException:
        _unlink(path)
        raise
    weakref.finalize(raw._mmap, _unlink, path)
    x = raw.reshape(raw.shape[0], -1)
    return Dataset(x, ids, tuple(item_shape or raw.shape[1:]), pending.source, pending.kind,
                   skipped, bit_depth=depth)


# ----------------------------------------------------------------------------- Python objects
def _module_of(obj) -> str:
    return type(obj).__module__.split(".")[0]


def _open_object(source, name, *, ids, resize, mode, skip_unreadable):
    """A DataFrame, a ``datasets.Dataset`` or a torch Dataset / DataLoader; None for anything
    else (arrays and tensors are read as arrays). Nothing is imported that the caller has not."""
    import sys

    top = _module_of(source)
    if top == "pandas" and type(source).__name__ == "DataFrame":
        return _open_frame(source, name, ids, resize, mode)
    if top == "datasets":
        kind = type(source).__name__
        if kind in ("DatasetDict", "IterableDatasetDict"):
            raise ValueError(f"{name}: a DatasetDict holds the splits {list(source)}; give one "
                             f"split, e.g. dataset[{next(iter(source), 'train')!r}]")
        if kind == "Dataset":
            if ids is not None:
                raise ValueError(f"{name}: the ids of a datasets.Dataset are its row numbers")
            return _dataset_source(source, name, None, "datasets.Dataset", resize, mode,
                                   skip_unreadable)
        raise ValueError(f"{name}: a datasets.{kind} cannot be read (an iterable dataset has no "
                         "length); give a datasets.Dataset or its save_to_disk folder")
    if "torch" in sys.modules:
        from torch.utils.data import DataLoader
        from torch.utils.data import Dataset as TorchDataset

        if isinstance(source, (DataLoader, TorchDataset)):
            if ids is not None:
                raise ValueError(f"{name}: the ids of a torch dataset are its positions")
            return _torch_source(source, name, resize, mode, skip_unreadable)
    return None


def _open_frame(df, name, ids, resize, mode) -> Dataset:
    """A DataFrame of numeric columns as items (rows) of features (columns); ids: its index."""
    import pandas as pd

    if resize is not None or mode is not None:
        raise ValueError(f"{name}: resize and mode apply to images only, not to a DataFrame")
    for col in df.columns:
        dt = df[col].dtype
        if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)):
            raise ValueError(f"{name}: DataFrame column {col!r} is {dt}, not numeric; drop it "
                             f"(df.drop(columns=[{col!r}])) or encode it as numbers")
    if df.shape[1] == 0:
        raise ValueError(f"{name}: the DataFrame has no columns")
    try:
        x = df.to_numpy(dtype=np.float64 if any(df.dtypes == np.float64) else np.float32)
    except (TypeError, ValueError) as exc:  # nullable dtypes holding pd.NA
        raise ValueError(f"{name}: the DataFrame holds missing values ({exc}); fill or drop "
                         "them") from None
    arr = as_2d_array(x, name)
    ids = check_ids(df.index.to_numpy() if ids is None else ids, arr.shape[0], name)
    return Dataset(arr, ids, (arr.shape[1],), f"DataFrame of {df.shape[1]} columns", "dataframe")


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' ``save_to_disk`` (a Dataset, or a
    DatasetDict whose splits are subfolders)."""
    return ((path / "dataset_info.json").is_file() and (path / "state.json").is_file()) or (
        path / "dataset_dict.json").is_file()


def _open_saved_dataset(path: Path, name, column, *, resize, mode, skip_unreadable):
    if (path / "dataset_dict.json").is_file():
        import json

        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise ValueError(f"{name}: {path} holds the splits {splits} of a DatasetDict; give one "
                         f"split's folder, e.g. {path / (splits[0] if splits else 'train')}")
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{name}: {path} is a folder saved by the datasets package, which is "
                          "not installed: pip install 'memaudit[datasets]'") from None
    try:
        ds = datasets.load_from_disk(str(path))  # a local folder: nothing is downloaded
    except Exception as exc:  # noqa: BLE001 - arrow/json errors of a damaged folder
        raise ValueError(f"{name}: cannot read {path} as a saved dataset ({exc})") from None
    return _dataset_source(ds, name, column, str(path), resize, mode, skip_unreadable)


def _dataset_source(ds, name, column, source, resize, mode, skip_unreadable):
    """The image column of a ``datasets.Dataset`` (decoded as an image folder is) or its numeric
    columns (one feature vector per row); ids are row numbers."""
    import datasets

    if len(ds) == 0:
        raise ValueError(f"{name}: {source} has no rows")
    feats = ds.features
    if column is not None:
        if column not in feats:
            raise KeyError(f"{name}: {source} has no column {column!r}; it has {list(feats)}")
        cols = [column]
    else:
        cols = list(feats)
    images = [c for c in cols if isinstance(feats[c], datasets.Image)]
    if len(images) > 1:
        raise ValueError(f"{name}: {source} has several image columns {images}; say which one as "
                         f"{source}:{images[0]}")
    if images:
        col = images[0]
        raw = ds.cast_column(col, datasets.Image(decode=False)).select_columns([col])

        def open_item(i):
            from PIL import Image

            cell = raw[int(i)][col]
            if cell is None:
                raise ValueError("an empty cell")
            if cell.get("bytes") is not None:
                return Image.open(io.BytesIO(cell["bytes"]))
            return Image.open(cell["path"])

        items = _ImageItems(len(ds), open_item, lambda i: f"row {i} of {source}",
                            np.arange(len(ds)), f"rows of column {col!r} of {source}")
        pending = _image_pending(items, name, f"{source}:{col}", resize, mode, skip_unreadable)
        return pending
    if resize is not None or mode is not None:
        raise ValueError(f"{name}: resize and mode apply to images; {source} has no image column")
    for c in cols:
        f = feats[c]
        dtype = getattr(f, "dtype", None) or getattr(getattr(f, "feature", None), "dtype", None)
        if isinstance(f, datasets.ClassLabel):
            dtype = "int64"
        if dtype is None or not (dtype.startswith(("int", "uint", "float")) or dtype == "bool"):
            raise ValueError(f"{name}: column {c!r} of {source} is {f}, not numeric; select the "
                             "numeric columns (ds.select_columns([...])) or give an image column")
    numeric = ds.select_columns(cols).with_format("numpy")

    def write(writer, bar):
        for s in range(0, len(numeric), _ROWS):
            batch = numeric[s : s + _ROWS]
            parts = []
            for c in cols:
                v = np.asarray(batch[c])
                if v.dtype == object:
                    raise ValueError(f"{name}: column {c!r} of {source} holds sequences of "
                                     "different lengths; items must all have the same size")
                parts.append(v.reshape(v.shape[0], -1).astype(np.float32 if v.dtype != np.float64
                                                              else np.float64))
            block = np.concatenate(parts, axis=1)
            check_finite(block, name, offset=s)
            writer.append(block)
            bar.update(block.shape[0])
        return np.arange(writer.n), (), None

    return _Pending("dataset", f"{source} ({', '.join(cols)})", len(ds), write,
                    f"{name}: reading dataset")


_ROWS = 1024  # rows of a numeric dataset or torch dataset read per batch


def _first_field(item, name):
    """The input of a dataset item: the item itself, the first element of a (x, y) tuple, or the
    one of the usual keys of a dict."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError(f"{name}: a torch dataset item is empty")
        return item[0]
    if isinstance(item, dict):
        for key in ("image", "pixel_values", "img", "x", "input"):
            if key in item:
                return item[key]
        raise ValueError(f"{name}: torch dataset items are dicts with keys {list(item)}; none is "
                         "'image', 'pixel_values', 'img', 'x' or 'input': wrap it to return the "
                         "input first")
    return item


def _to_rows(v, name) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    v = np.asarray(v)
    if v.dtype.kind not in "fiub":
        raise ValueError(f"{name}: torch dataset items are {v.dtype}, not numbers")
    return v


def _torch_source(source, name, resize, mode, skip_unreadable):
    """A torch Dataset (items, or (x, y) tuples: x is used) or a DataLoader (batches) as items."""
    from torch.utils.data import DataLoader, RandomSampler

    loader = source if isinstance(source, DataLoader) else None
    dataset = loader.dataset if loader is not None else source
    if loader is not None and (isinstance(loader.sampler, RandomSampler)
                               or type(loader.sampler).__name__ != "SequentialSampler"):
        raise ValueError(f"{name}: the DataLoader draws items in a random or custom order "
                         f"({type(loader.sampler).__name__}), so positions would not name dataset "
                         "items; give the dataset, or a DataLoader with shuffle=False")
    try:
        n = len(dataset)
    except TypeError:
        raise ValueError(f"{name}: the torch dataset has no length (an IterableDataset); give a "
                         "map-style Dataset") from None
    if n == 0:
        raise ValueError(f"{name}: the torch dataset is empty")
    first = _first_field(dataset[0], name)
    if type(first).__module__.startswith("PIL"):
        items = _ImageItems(n, lambda i: _first_field(dataset[int(i)], name),
                            lambda i: f"item {i} of the torch dataset", np.arange(n),
                            "items of the torch dataset")
        return _image_pending(items, name, f"torch {type(dataset).__name__}", resize, mode,
                              skip_unreadable)
    if resize is not None or mode is not None:
        raise ValueError(f"{name}: resize and mode apply to images; this torch dataset gives "
                         "tensors (resize them in its transform)")

    def batches():
        if loader is not None:
            for b in loader:
                yield _to_rows(_first_field(b, name), name)
        else:
            for s in range(0, n, _ROWS):
                yield np.stack([_to_rows(_first_field(dataset[i], name), name)
                                for i in range(s, min(n, s + _ROWS))])

    def write(writer, bar):
        for block in batches():
            if block.ndim == 1:
                block = block[:, None]
            if block.dtype.kind == "f":
                check_finite(block.reshape(block.shape[0], -1), name, offset=writer.n)
            writer.append(block)
            bar.update(block.shape[0])
        if writer.n != n and loader is not None and not loader.drop_last:
            raise ValueError(f"{name}: the DataLoader gave {writer.n} items for a dataset of {n}")
        return np.arange(writer.n), (), None

    return _Pending("torch", f"torch {type(source).__name__}", n, write,
                    f"{name}: reading torch dataset")


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
