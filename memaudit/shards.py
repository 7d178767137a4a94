"""Sharded sets: one set of items stored as several pieces, read shard by shard, never whole.

Three stores are read as one set, rows in a fixed order:

- a folder of ``.npy`` files, concatenated in file-name order (one shard per file); a folder of
  images stays an image folder (:func:`memaudit.sources.load_image_folder`), and a folder that
  mixes both is refused;
- a zarr array (a folder holding ``zarr.json`` or ``.zarray``), cut along its first axis into
  shards of whole chunks;
- row ranges of one memory-mapped ``.npy`` file (:meth:`ShardedSet.from_npy`), or of an array in
  memory (:meth:`ShardedSet.from_array`).

A :class:`Shard` is a small picklable description (a path and a row range), so that a Dask worker
opens the file itself and nothing but the description travels. The same sets are searched in
process, shard after shard, or on a cluster (:mod:`memaudit.distributed`); the results are the
same (see docs/scale.md).

Every shard is checked before long work: its dtype (real numbers, one dtype for the set) and its
number of features when the set is opened (headers only), NaN/Inf in the one streaming pass that
also takes the value range (:meth:`ShardedSet.observe`), each refusal naming the shard and the item.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Shard", "ShardedSet", "is_sharded_source", "load_sharded", "DEFAULT_SHARD_BYTES"]

# rows per shard when one file or array is cut into row ranges: about this many bytes each
DEFAULT_SHARD_BYTES = 256 << 20
_READ_BYTES = 32 << 20  # rows read at a time when a shard is streamed
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _zarr_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zarray").is_file())


def is_sharded_source(path, name: str = "data") -> bool:
    """Whether ``path`` is read as a sharded set: a zarr array, or a folder of ``.npy`` files.

    A folder holding both ``.npy`` and image files is refused (one line): which of the two it
    means cannot be told.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    if _zarr_folder(path):
        return True
    names = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    npy = [p for p in names if p.suffix.lower() == ".npy"]
    images = [p for p in names if p.suffix.lower() in _IMAGE_SUFFIXES]
    if npy and images:
        raise ValueError(f"{name}: {path} holds both .npy files ({len(npy)}) and images ({len(images)}): "
                         "a folder is either shards of one array or an image folder; move one "
                         "kind out")
    return bool(npy)


@dataclass(frozen=True)
class Shard:
    """One piece of a sharded set: rows ``lo:hi`` of a file (or of an in-memory array).

    Attributes
    ----------
    name : str
        How errors and reports name it (the file name, with the rows when it is a range).
    kind : {"npy", "zarr", "memory"}
    path : str
        The ``.npy`` file or zarr folder ("" for memory).
    lo, hi : int
        Rows of the file that the shard holds.
    start : int
        Position of its first row in the whole set.
    data : ndarray or None
        The rows themselves (``kind="memory"`` only).
    stamp : tuple
        File size and modification time (a random token for memory): a worker's cached index of
        a changed file, or of another array, is never reused.
    """

    name: str
    kind: str
    path: str
    lo: int
    hi: int
    start: int
    data: np.ndarray | None = None
    stamp: tuple = ()

    @property
    def n(self) -> int:
        return self.hi - self.lo

    @property
    def stop(self) -> int:
        return self.start + self.n

    @property
    def key(self) -> tuple:
        """Identifies the shard's content (a worker's index cache is keyed on it)."""
        return (self.kind, self.path, self.lo, self.hi, self.stamp)

    def load(self, rows: slice | None = None) -> np.ndarray:
        """The shard's rows as a 2-D array: a memory map for ``.npy`` (nothing read yet), an
        array for zarr and memory. ``rows`` selects local rows."""
        a, b = self.lo, self.hi
        if rows is not None:
            a, b = self.lo + (rows.start or 0), min(self.hi, self.lo + (rows.stop or self.n))
        if self.kind == "npy":
            x = np.load(self.path, mmap_mode="r", allow_pickle=False)[a:b]
        elif self.kind == "zarr":
            x = np.asarray(_open_zarr(self.path)[a:b])
        else:
            x = self.data[a - self.lo : b - self.lo]
        return x.reshape(x.shape[0], -1)

    def __reduce__(self):  # a memory-mapped slice is not what travels: the description is
        return (Shard, (self.name, self.kind, self.path, self.lo, self.hi, self.start,
                        None if self.data is None else np.ascontiguousarray(self.data),
                        self.stamp))


def _open_zarr(path):
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr comes with memaudit[dask]
        raise ImportError("reading a zarr array needs zarr: pip install 'memaudit[dask]'") from exc
    arr = zarr.open_array(str(path), mode="r")
    return arr


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def _check_dtype(dtype, what: str) -> None:
    if np.dtype(dtype).kind not in "fiu":
        raise TypeError(f"{what}: dtype {dtype} is not supported; give real numbers (float or "
                        "integer)")


class ShardedSet:
    """A set of items stored as shards, read as one ``(n_items, n_features)`` set.

    It behaves like a read-only 2-D array where that is cheap: ``shape``, ``dtype``, ``len``, and
    indexing by an integer, a slice or a list of positions (the rows are read from the shards
    that hold them). It is never turned into one array: ``numpy.asarray`` on it is refused with
    one line, so that no code path reads a set larger than memory whole by accident.

    Parameters
    ----------
    shards : sequence of Shard
        In set order; their ``start`` positions follow each other.
    item_shape : tuple
        Shape of one item before flattening.
    dtype : numpy dtype
    source : str
        Where the set came from (for reports).
    """

    ndim = 2

    def __init__(self, shards, item_shape, dtype, source: str):
        self.shards = tuple(shards)
        if not self.shards:
            raise ValueError(f"{source}: no shards")
        self.item_shape = tuple(item_shape)
        self.dtype = np.dtype(dtype)
        self.source = str(source)
        self.n_features = int(np.prod(self.item_shape)) if self.item_shape else 1
        self._starts = np.array([s.start for s in self.shards], dtype=np.int64)
        self.client = None  # set by memaudit.distributed: where observe() reads the shards

    # -- array-like -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return (int(self.shards[-1].stop), self.n_features)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"ShardedSet({self.source!r}, {len(self.shards)} shards, shape={self.shape}, "
                f"dtype={self.dtype})")

    def __array__(self, dtype=None, copy=None):
        raise ValueError(f"{self.source}: a sharded set ({len(self.shards)} shards, "
                         f"{self.shape[0]} items) is read shard by shard and never loaded whole; "
                         "convert its values before sharding it, or give it as one .npy file")

    def rows(self, positions) -> np.ndarray:
        """The items at ``positions`` (any order, repeats allowed), read from their shards."""
        pos = np.asarray(positions, dtype=np.int64).ravel()
        n = self.shape[0]
        if pos.size and (pos.min() < -n or pos.max() >= n):
            raise IndexError(f"{self.source}: item index out of range for {n} items")
        pos = np.where(pos < 0, pos + n, pos)
        out = np.empty((pos.size, self.n_features), dtype=self.dtype)
        which = np.searchsorted(self._starts, pos, side="right") - 1
        for s in np.unique(which):
            sel = np.flatnonzero(which == s)
            shard = self.shards[s]
            local = pos[sel] - shard.start
            a, b = int(local.min()), int(local.max()) + 1
            out[sel] = shard.load(slice(a, b))[local - a]
        return out

    def __getitem__(self, key):
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            return self.rows([key])[0]
        if isinstance(key, slice):
            return self.rows(np.arange(n)[key])
        if isinstance(key, tuple):
            raise IndexError("a sharded set is indexed by items only")
        return self.rows(key)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as one array (a batch of queries)."""
        return self.rows(np.arange(start, min(stop, self.shape[0])))

    # -- validation -----------------------------------------------------------------------------
    def map(self, func, *args) -> list:
        """``[func(shard, *args) for shard in shards]``, on the cluster when one is attached."""
        if self.client is None:
            return [func(s, *args) for s in self.shards]
        futures = self.client.map(func, self.shards, *[[a] * len(self.shards) for a in args],
                                  pure=False)
        return self.client.gather(futures)

    def observe(self, name: str) -> tuple[float, float, float, float]:
        """Smallest and largest value and the 0.1% / 99.9% quantiles, refusing NaN/Inf by shard.

        The quantiles are taken over the same evenly spaced rows as
        :func:`memaudit.conventions.observe` takes of the concatenated set, so both give the same
        convention. Each shard is streamed once (on the cluster when one is attached).
        """
        n, d = self.shape
        every = max(1, (n * d) // (1 << 22))
        parts = self.map(_summarize, name, every)
        lo = min(p[0] for p in parts)
        hi = max(p[1] for p in parts)
        sample = np.concatenate([p[2] for p in parts])
        q_lo, q_hi = np.quantile(sample, [0.001, 0.999])
        return float(lo), float(hi), float(q_lo), float(q_hi)

    def describe(self) -> dict:
        """The shards, for the report: how many, their names and row ranges."""
        return {"source": self.source, "n_shards": len(self.shards), "n_items": self.shape[0],
                "shards": [{"name": s.name, "start": s.start, "n_items": s.n}
                           for s in self.shards]}

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_npy_folder(cls, folder, name: str = "data") -> "ShardedSet":
        """The ``.npy`` files of ``folder`` (not its sub-folders), one shard each, in file-name
        order; their headers (dtype, item shape) are checked here, their values by
        :meth:`observe`."""
        folder = Path(folder)
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() == ".npy" and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{name}: no .npy files in {folder}")
        shards, start, shape0, dtype0 = [], 0, None, None
        for p in files:
            try:
                x = np.load(p, mmap_mode="r", allow_pickle=False)
            except Exception as exc:
                raise ValueError(f"{name}: shard {p.name} of {folder} could not be read as a .npy "
                                 f"file ({exc})") from None
            what = f"{name}: shard {p.name}"
            _check_dtype(x.dtype, what)
            if x.ndim < 2:
                raise ValueError(f"{what} has shape {x.shape}; every shard is (n_items, ...) with "
                                 "the same item shape")
            if shape0 is None:
                shape0, dtype0, first = x.shape[1:], x.dtype, p.name
            elif x.shape[1:] != shape0:
                raise ValueError(f"{what} holds items of shape {x.shape[1:]} but shard {first} "
                                 f"holds {shape0}: every shard must have the same item shape "
                                 "(same number of features)")
            elif x.dtype != dtype0:
                raise ValueError(f"{what} is {x.dtype} but shard {first} is {dtype0}: save every "
                                 "shard with one dtype")
            if x.shape[0] == 0:
                raise ValueError(f"{what} is empty (0 items); remove it")
            shards.append(Shard(p.name, "npy", str(p), 0, x.shape[0], start, stamp=_stamp(p)))
            start += x.shape[0]
        return cls(shards, shape0, dtype0, str(folder))

    @classmethod
    def from_zarr(cls, path, name: str = "data", shard_rows: int | None = None) -> "ShardedSet":
        """A zarr array cut along its first axis: shards of whole chunks, about
        :data:`DEFAULT_SHARD_BYTES` each unless ``shard_rows`` is given."""
        arr = _open_zarr(path)
        what = f"{name} ({Path(path).name})"
        _check_dtype(arr.dtype, what)
        if arr.ndim < 2 or arr.shape[0] == 0:
            raise ValueError(f"{what}: expected a zarr array of shape (n_items, ...), got "
                             f"{arr.shape}")
        rows = _shard_rows(arr.shape, arr.dtype, shard_rows, chunk=int(arr.chunks[0]))
        shards = [Shard(f"{Path(path).name}[{a}:{min(a + rows, arr.shape[0])}]", "zarr",
                        str(path), a, min(a + rows, arr.shape[0]), a)
                  for a in range(0, arr.shape[0], rows)]
        return cls(shards, arr.shape[1:], arr.dtype, str(path))

    @classmethod
    def from_npy(cls, path, name: str = "data", shard_rows: int | None = None) -> "ShardedSet":
        """Row ranges of one memory-mapped ``.npy`` file, ``shard_rows`` each (default: about
        :data:`DEFAULT_SHARD_BYTES`)."""
        path = Path(path)
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_dtype(x.dtype, f"{name} ({path.name})")
        rows = _shard_rows(x.shape, x.dtype, shard_rows)
        st = _stamp(path)
        shards = [Shard(f"{path.name}[{a}:{min(a + rows, x.shape[0])}]", "npy", str(path), a,
                        min(a + rows, x.shape[0]), a, stamp=st) for a in range(0, x.shape[0], rows)]
        return cls(shards, x.shape[1:], x.dtype, str(path))

    @classmethod
    def from_array(cls, x, name: str = "data", shard_rows: int | None = None,
                   source: str = "array") -> "ShardedSet":
        """Row ranges of an array (a memory map of a ``.npy`` file is cut into file ranges)."""
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        path = getattr(x, "filename", None)
        if isinstance(x, np.memmap) and path and x.offset is not None and x.ndim >= 2:
            whole = np.load(path, mmap_mode="r", allow_pickle=False)
            if whole.shape[0] == x.shape[0] and whole.size == x.size:
                return cls.from_npy(path, name, shard_rows)
        _check_dtype(x.dtype, name)
        rows = _shard_rows(x.shape, x.dtype, shard_rows)
        x2 = x.reshape(x.shape[0], -1)
        # a memory shard holds its own rows: local row 0 is data[0]
        shards = [Shard(f"{name}[{a}:{min(a + rows, x.shape[0])}]", "memory", "", 0,
                        x2[a : a + rows].shape[0], a, data=x2[a : a + rows],
                        stamp=(uuid.uuid4().hex,))
                  for a in range(0, x.shape[0], rows)]
        return cls(shards, x.shape[1:], x.dtype, source)


def _shard_rows(shape, dtype, shard_rows, chunk: int = 1) -> int:
    if shard_rows is not None:
        if isinstance(shard_rows, bool) or int(shard_rows) != shard_rows or shard_rows < 1:
            raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
        return int(shard_rows)
    row_bytes = max(1, int(np.prod(shape[1:])) * np.dtype(dtype).itemsize)
    rows = max(1, DEFAULT_SHARD_BYTES // row_bytes)
    return max(chunk, rows - rows % chunk)


def _summarize(shard: Shard, name: str, every: int):
    """(min, max, the values of the set's rows that are multiples of ``every``) of one shard,
    streamed; NaN/Inf refused naming the shard, the item in it and in the set."""
    x = shard.load()
    n, d = x.shape
    step = max(1, _READ_BYTES // max(1, d * x.dtype.itemsize))
    lo, hi, picks = np.inf, -np.inf, []
    for a in range(0, n, step):
        blk = np.asarray(x[a : a + step])
        if blk.dtype.kind == "f":
            bad = ~np.isfinite(blk).all(axis=1)
            if bad.any():
                i = a + int(np.flatnonzero(bad)[0])
                value = "NaN" if np.isnan(blk[i - a]).any() else "Inf"
                raise ValueError(f"{name}: shard {shard.name} holds {value} at item {i} (item "
                                 f"{shard.start + i} of the set); remove or repair that item")
        if blk.size:
            lo, hi = min(lo, float(blk.min())), max(hi, float(blk.max()))
        first = (-(shard.start + a)) % every  # the next set row that is a multiple of every
        picks.append(np.asarray(blk[first::every], dtype=np.float64).ravel())
    if shard.kind == "npy":
        from .neighbors import _release  # the page release of the streamed search

        mm = getattr(x, "_mmap", None)
        if mm is not None:
            _release(mm)
    return lo, hi, np.concatenate(picks) if picks else np.empty(0)


def load_sharded(path, name: str = "data", *, shard_rows: int | None = None):
    """``(ShardedSet, kind)`` of a sharded store (see the module): kind "zarr" or "npy-shards".
    :func:`memaudit.sources.load_dataset` makes it a Dataset whose ids are the positions."""
    path = Path(path)
    if _zarr_folder(path):
        return ShardedSet.from_zarr(path, name, shard_rows), "zarr"
    return ShardedSet.from_npy_folder(path, name), "npy-shards"


def as_sharded(ds, name: str, shard_rows: int | None = None):
    """``ds`` (a Dataset) with its items as a :class:`ShardedSet`: row ranges of its array or
    file when it is not sharded already, a zarr array re-cut when ``shard_rows`` is given (a
    folder of ``.npy`` files keeps one shard per file)."""
    from dataclasses import replace

    if isinstance(ds.x, ShardedSet):
        if ds.kind == "zarr" and shard_rows is not None:  # re-cut at the rows asked for
            return replace(ds, x=ShardedSet.from_zarr(ds.source, name, shard_rows))
        return ds
    x = ShardedSet.from_array(ds.x, name, shard_rows, source=ds.source)
    x.item_shape = tuple(ds.item_shape)
    return replace(ds, x=x)


def is_sharded(x) -> bool:
    return isinstance(x, ShardedSet)

