"""The convert runner: any input memaudit reads -> one memory-mapped ``.npy`` file and its ids.

``memaudit convert SRC --out x.npy`` decodes an image folder, a ``save_to_disk`` dataset folder,
an ``.npz`` array (or, from Python, a ``datasets.Dataset``, a torch ``Dataset`` / ``DataLoader``
or a ``DataFrame``) in batches into ``x.npy`` (``numpy.load(..., mmap_mode="r")`` reads it without
loading it) and writes ``x.npy.json`` beside it: the ids (file names relative to the folder, row
numbers, the DataFrame's index), the source, the item shape and the convention. Audits read the
pair as they would read the source: the same ids, the same pixel convention (images: float32 in
[0, 1], channels-last, declared "image files" with their bit depth), so that auditing ``x.npy``
gives the numbers auditing the folder gives, without decoding it again.

Both files appear whole or not at all (:func:`memaudit.io.atomic_npy`): a killed convert leaves no
half file, only a temporary that the next run removes. The sidecar records a fingerprint of the
array file, so an array and a sidecar that do not belong together are refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._blocks import iter_blocks
from .._progress import Progress, with_progress
from ..io import atomic_npy, atomic_write_json, remove_stale_temporaries
from ..sources import SIDECAR_FORMAT, Dataset, array_fingerprint, open_source, sidecar_path
from ._common import Run, image_options, option, package_versions, progress_option, resolved

__all__ = ["ConvertConfig", "ConvertRun", "run_convert"]

_RESIZE, _MODE, _SKIP = image_options(group="inputs", listed_in="the sidecar")


@dataclass
class ConvertConfig:
    """What to convert and where; every field's default is in its ``help`` (``memaudit convert
    -h``)."""

    source: object = option(None, "what to convert: an image folder, a folder saved with "
                            "datasets' save_to_disk (DIR or DIR:COLUMN), a .npy or .npz file "
                            "(FILE.npz:KEY); from Python also a datasets.Dataset, a torch Dataset "
                            "or DataLoader, or a pandas DataFrame", kind="path", required=True,
                            metavar="SRC", flag="source", group="inputs")
    out: object = option(None, "the .npy file to write (its ids and convention go to FILE.json "
                         "beside it)", kind="path", required=True, metavar="FILE.npy",
                         default_text="none: not written", group="output")
    resize: object = _RESIZE  # the image-folder options (runners._common.image_options)
    mode: str | None = _MODE
    skip_unreadable: bool = _SKIP
    progress: bool | None = progress_option(group="output")

    def resolved(self) -> dict:
        return resolved(self)


@dataclass
class ConvertRun(Run):
    """What :func:`run_convert` returns: the files written and what they hold."""

    shape: tuple = ()
    dtype: str = ""
    kind: str = ""
    n_skipped: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        p = self.paths
        lines = [f"wrote {p['npy']}: {self.shape[0]} items of shape {tuple(self.shape[1:])}, "
                 f"{self.dtype} ({self.kind})",
                 f"ids and convention: {p['sidecar']}"]
        if self.n_skipped:
            lines.append(f"{self.n_skipped} unreadable file(s) skipped, listed in the sidecar")
        lines.append(f"read it with: memaudit audit --train {p['npy']} ...  (or numpy.load(path, "
                     "mmap_mode='r'))")
        return "\n".join(lines)

    def to_summary(self) -> dict:
        return {"npy": str(self.paths["npy"]), "sidecar": str(self.paths["sidecar"]),
                "shape": list(self.shape), "dtype": self.dtype, "kind": self.kind,
                "n_skipped": self.n_skipped, "elapsed": self.elapsed}


def _check(config: ConvertConfig) -> Path:
    if config.source is None:
        raise ValueError("convert needs a source (SRC)")
    if config.out is None:
        raise ValueError("convert needs an output file (--out FILE.npy)")
    out = Path(config.out)
    if out.suffix.lower() != ".npy":
        raise ValueError(f"--out {out}: the output is a .npy file; name it FILE.npy")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name ending in .npy")
    src = config.source
    if isinstance(src, (str, Path)) and Path(str(src)).resolve() == out.resolve():
        raise ValueError(f"--out {out} is the source itself; choose another file")
    from ..io import check_writable_dir

    check_writable_dir(out.parent if str(out.parent) else ".", "--out folder")
    return out


def _write_dataset(ds: Dataset, writer, bar) -> None:
    """A Dataset read in place (arrays, .npy, .npz, DataFrame) written block by block."""
    shape = tuple(ds.item_shape) if int(np.prod(ds.item_shape)) == ds.x.shape[1] else (ds.x.shape[1],)
    for _, block in iter_blocks(ds.x, "source"):
        writer.append(np.asarray(block).reshape((block.shape[0],) + shape))
        bar.update(block.shape[0])


def _convention(kind: str, bit_depth, item_shape) -> dict | None:
    """What the sidecar declares: image sources are pixels in [0, 1] channels-last."""
    if kind != "images":
        return None
    return {"kind": "pixels", "value_range": [0.0, 1.0],
            "range_source": f"{bit_depth or 8}-bit image files",
            "layout": "HW" if len(item_shape) == 2 else "HWC", "dtype": "float32"}


@with_progress
def run_convert(config: ConvertConfig) -> ConvertRun:
    """Convert ``config.source`` into ``config.out`` (a .npy file) and its sidecar.

    Returns
    -------
    ConvertRun
        ``.paths`` (``npy``, ``sidecar``), ``.shape``, ``.dtype``, ``.kind``.

    Examples
    --------
    >>> run = run_convert(ConvertConfig(source="train_images/", out="train.npy"))  # doctest: +SKIP
    >>> np.load("train.npy", mmap_mode="r").shape  # doctest: +SKIP
    """
    out = _check(config)
    t0 = time.perf_counter()
    found = open_source(config.source, "source", resize=config.resize, mode=config.mode,
                        skip_unreadable=config.skip_unreadable)
    remove_stale_temporaries(out.parent if str(out.parent) else Path("."))
    side = sidecar_path(out)
    with atomic_npy(out) as writer:
        if isinstance(found, Dataset):
            with Progress(len(found), "source: writing rows", unit="row") as bar:
                _write_dataset(found, writer, bar)
            ids, skipped, depth = found.ids, found.skipped, found.bit_depth
            kind, source = found.kind, found.source
        else:
            with Progress(found.total, found.desc, unit="item") as bar:
                ids, skipped, depth = found.write(writer, bar)
            kind, source = found.kind, found.source
        shape = writer.finish()
        writer.fh.flush()
        meta = {
            "format": SIDECAR_FORMAT,
            "kind": kind,
            "source": source if isinstance(source, str) else str(source),
            "shape": [int(v) for v in shape],
            "dtype": str(writer.dtype),
            "bit_depth": depth,
            "convention": _convention(kind, depth, shape[1:]),
            "fingerprint": array_fingerprint(writer.fh.name),
            "ids": [v if isinstance(v, (str, int, float)) else str(v)
                    for v in np.asarray(ids).tolist()],
            "skipped": [list(s) for s in skipped],
            "config": config.resolved(),
            "versions": package_versions(),
        }
        # the sidecar first: until the array is renamed into place, an old array beside it has
        # another fingerprint and the pair is refused, never read with the wrong ids
        atomic_write_json(side, meta, indent=None)
    run = ConvertRun(config=config, paths={"npy": out, "sidecar": side}, shape=tuple(shape),
                     dtype=str(meta["dtype"]), kind=kind, n_skipped=len(skipped),
                     elapsed=time.perf_counter() - t0)
    return run
