"""Atomic writes: a file appears whole or not at all (reports, caches, checkpoints, data files).

This is public API (documented in docs/io.md): memaudit's reports and caches and the training
runs of ``reference_models`` write through it.

Every temporary is created beside its target as ``.<name>.<pid>.<random><suffix>``, so that
:func:`remove_stale_temporaries` can tell the leftovers of a killed run (their process is gone)
from the temporaries of a run that is still writing. Each writer fsyncs the file before renaming
it over the target and fsyncs the folder after, so a crash leaves the old file or the new one.

Examples
--------
>>> import tempfile, pathlib
>>> from memaudit.io import atomic_write_text
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "note.txt", "whole or not at all")
>>> (folder / "note.txt").read_text()
'whole or not at all'
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "atomic_write_json",
           "atomic_savez", "atomic_write_pair", "remove_stale_temporaries", "check_writable_dir",
           "NpyWriter", "atomic_npy"]

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+(?P<suffix>\.[A-Za-z0-9]+)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporaries that killed runs left in ``folder``; return what was removed.

    Only files named like this module's temporaries (``.<name>.<pid>.<random>.<ext>``) whose
    process no longer runs are removed; a run still writing keeps its temporaries.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to clean (not recursively). A folder that does not exist is left alone.

    Returns
    -------
    list of pathlib.Path
        The temporaries deleted.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m is None or not p.is_file() or _pid_alive(int(m.group("pid"))):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def _pending(path, suffix: str = ".tmp"):
    """A temporary beside ``path``, deleted on failure; the caller renames it on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    For writers that want a file name rather than bytes (``savefig``, ``safetensors.save_file``).
    The temporary file gets the usual permissions (mkstemp makes 0600). The caller's writer is
    responsible for flushing; the rename and the folder's fsync happen here.

    Parameters
    ----------
    path : str or os.PathLike
        The target. Its folder is created when missing.
    suffix : str, default ".tmp"
        The temporary's extension; it matters for writers that append an extension of their own
        (``np.savez`` adds ".npz" unless it is there, matplotlib picks the format from it).

    Yields
    ------
    str
        The temporary's path. When the block raises, the temporary is deleted and ``path`` is
        untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from memaudit.io import atomic_path
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "data.bin"
    >>> with atomic_path(target) as tmp:
    ...     _ = pathlib.Path(tmp).write_bytes(b"payload")
    >>> target.read_bytes()
    b'payload'
    """
    path = Path(path)
    with _pending(path, suffix) as tmp:
        yield tmp
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_synced(tmp, data: bytes) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` (fsynced) to a temporary file beside ``path``, then rename it over.

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    data : bytes
        Its whole content.
    """
    with atomic_path(path) as tmp:
        _write_synced(tmp, data)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8, fsynced) to a temporary file beside ``path``, then rename it over.

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    text : str
        Its whole content, encoded as UTF-8 (no newline is added).
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, data, *, indent: int | None = 2) -> None:
    """Strict JSON (no NaN) of ``data`` written atomically, with a final newline.

    Parameters
    ----------
    path : str or os.PathLike
        The target file.
    data : object
        Anything ``json.dumps`` accepts; a NaN or infinity raises ``ValueError`` before any write.
    indent : int or None, default 2
        Passed to ``json.dumps``.
    """
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def atomic_savez(path, **arrays) -> None:
    """``np.savez`` into a temporary file beside ``path``, fsynced, then renamed over it.

    Parameters
    ----------
    path : str or os.PathLike
        The target file (name it ``.npz``: the name is used as given).
    **arrays : array_like
        The arrays to store, by name, as for ``numpy.savez``.
    """
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_pair(files: dict) -> None:
    """Write several files as one unit as far as a file system allows: all temporaries first.

    Every file is written and fsynced as a temporary before the first rename, so a failure while
    writing leaves the old files untouched; only a kill between two renames (microseconds) can
    leave a mixed set, which the run id that reports carry in both files reveals.

    Parameters
    ----------
    files : dict
        Maps each path to its content, ``bytes`` or ``str`` (written as UTF-8), in the order of
        the renames. Put the file that readers treat as the record (report.json) last.
    """
    with ExitStack() as stack:
        tmps = []
        for path, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            tmp = stack.enter_context(_pending(path))
            _write_synced(tmp, data)
            tmps.append((tmp, Path(path)))
        for tmp, path in tmps:
            os.replace(tmp, path)
        for folder in {p.parent for _, p in tmps}:
            _fsync_dir(folder)


def check_writable_dir(path, what: str = "--out") -> Path:
    """Check, before any computation, that ``path`` is a writable folder or can be created.

    Nothing is left behind: the folder itself is created only when the report is written.

    Parameters
    ----------
    path : str or os.PathLike
        The output folder.
    what : str, default "--out"
        How the message names the folder (the option the user gave it with).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        One line naming the problem: the path is a file, a parent is a file, or the folder (or
        the nearest existing parent) cannot be written to.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {p} is a file, not a folder; give a folder for the report")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{what} {p}: {probe} is a file, so the folder cannot be created")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".write-check.{os.getpid()}.", suffix=".tmp",
                                   dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"{what} {p} is not writable ({reason}); choose another folder") from None
    return p


class NpyWriter:
    """Rows appended to an open ``.npy`` file whose length is known only at the end.

    A fixed-size header is reserved first and rewritten by :meth:`finish` with the final shape,
    so that items can be streamed in (decoded in batches) without holding them in memory and
    without a memory map: written pages go to the OS page cache, never to this process.

    Parameters
    ----------
    fh : binary file object
        Open for writing (and seeking) at position 0.
    """

    HEADER_BYTES = 256  # magic, version, length and the padded dict: a multiple of 64

    def __init__(self, fh):
        self.fh = fh
        self.n = 0
        self.item_shape = None
        self.dtype = None
        fh.write(b"\0" * self.HEADER_BYTES)

    def append(self, block) -> None:
        """Append ``block`` (n_rows, *item_shape); every block must share the first one's item
        shape and dtype."""
        import numpy as np

        block = np.ascontiguousarray(block)
        if self.item_shape is None:
            self.item_shape, self.dtype = tuple(int(s) for s in block.shape[1:]), block.dtype
        elif tuple(block.shape[1:]) != self.item_shape or block.dtype != self.dtype:
            raise ValueError(f"items change shape or type while streaming: {self.item_shape} "
                             f"{self.dtype} then {tuple(block.shape[1:])} {block.dtype}")
        self.fh.write(block.tobytes())
        self.n += int(block.shape[0])

    def finish(self) -> tuple:
        """Write the header for the rows appended; return the array's shape."""
        import numpy as np

        if self.item_shape is None:
            raise ValueError("no items were written")
        shape = (self.n,) + self.item_shape
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
             "shape": tuple(int(v) for v in shape)}
        text = repr(d).encode("latin1")
        room = self.HEADER_BYTES - 10  # magic (6), version (2), header length (2)
        if len(text) + 1 > room:  # pragma: no cover - a shape of hundreds of digits
            raise ValueError(f"shape {shape} does not fit the reserved .npy header")
        head = b"\x93NUMPY\x01\x00" + room.to_bytes(2, "little") + text.ljust(room - 1) + b"\n"
        self.fh.flush()
        self.fh.seek(0)
        self.fh.write(head)
        self.fh.seek(0, os.SEEK_END)
        self.fh.flush()
        return shape


@contextmanager
def atomic_npy(path):
    """Stream rows into ``path`` (a ``.npy`` file) that appears whole or not at all.

    Yields a :class:`NpyWriter` on a temporary beside ``path``; when the block ends the header is
    written, the file fsynced and renamed over ``path``. When the block raises (or the process is
    killed) ``path`` is untouched; a killed run's temporary is named so that
    :func:`remove_stale_temporaries` deletes it.

    Parameters
    ----------
    path : str or os.PathLike
        The target ``.npy`` file. Its folder is created when missing.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from memaudit.io import atomic_npy
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
    >>> with atomic_npy(target) as w:
    ...     w.append(np.zeros((2, 3), np.float32)); w.append(np.ones((1, 3), np.float32))
    >>> np.load(target).tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    """
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "r+b") as fh:
            writer = NpyWriter(fh)
            yield writer
            writer.finish()
            os.fsync(fh.fileno())
