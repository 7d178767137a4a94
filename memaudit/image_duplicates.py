"""Duplicates and copies of images and feature arrays: the images adapter through the duplicates probe.

:func:`find_duplicates`, :func:`find_copies` and :func:`find_copies_with_control` take images of
any layout (HW, HWC, CHW, flat squares) and value range, or feature vectors for ``"embedding"``,
put every set compared under one pixel convention and compute what each method compares with
:mod:`memaudit.adapters.images` (content digests, pHash / dHash codes, pixels in [0, 1] for
tiled_l2), then match them with :func:`memaudit.probes.duplicates.match_sets`. The probe itself sees
arrays only (:class:`memaudit.probes.duplicates.DuplicatesProbe`); this module is the one place
that joins the two layers, above both.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_2d_array, check_ids, check_same_dim
from .adapters.images import duplicate_codes, duplicate_scale, tile_reader
from .probes.duplicates import (NPROBE, RECALL_SAMPLE, CopyRateResult, DuplicateResult,
                                check_index, check_threshold, copy_rates, match_sets)
from .stats import StatsConfig

__all__ = ["find_duplicates", "find_copies", "find_copies_with_control"]

_HASHED = ("exact", "phash", "dhash")


def _prepare_cross(samples, reference, item_shape, extra=()):
    raw_shape = tuple(np.shape(samples))[1:]
    q = as_2d_array(samples, "samples")
    r = as_2d_array(reference, "reference")
    check_same_dim(q, r, "samples", "reference")
    others = []
    for x, name in extra:
        o = as_2d_array(x, name)
        check_same_dim(o, r, name, "reference")
        others.append(o)
    item_shape = tuple(item_shape) if item_shape is not None else raw_shape
    return q, r, others, item_shape


class _Sets:
    """The sets of one search under one convention: what each is compared as, and the notes."""

    def __init__(self, method, sets, item_shape, value_range, levels):
        self.method, self.item_shape = method, item_shape
        self.scale = duplicate_scale(method, sets, value_range, levels)
        self.codes, self.notes = {}, {}
        if method == "tiled_l2":
            self.hwc, self.prep = tile_reader(item_shape, self.scale, sets[0][1])

    def compared(self, x, name):
        """What ``method`` compares for set ``name`` (hashes computed once per set)."""
        if self.method not in _HASHED:
            return x
        if name not in self.codes:
            self.notes[name] = []
            self.codes[name] = duplicate_codes(x, self.method, self.item_shape, self.scale, name,
                                               self.notes[name])
        return self.codes[name]

    def match(self, xq, xr, thr, source, cross, ids, ref_ids, names, index, nlist, nprobe,
              recall_sample, seed, progress, pair_search=None) -> DuplicateResult:
        fq = self.compared(xq, names[0])
        fr = self.compared(xr, names[1]) if cross else fq
        notes = list(self.notes.get(names[0], []))
        if cross:
            notes += self.notes.get(names[1], [])
        tiles = None
        if self.method == "tiled_l2":
            tiles = (self.hwc, (self.prep, self.prep), str(self.scale))
        scale = self.scale
        note = None
        if scale is not None and scale.source.startswith("joint"):
            note = (f"pixel convention computed from the data ({scale}); give value_range "
                    "(and levels) to state it")
        return match_sets(fq, fr, self.method, thr, source, cross, ids, ref_ids, index=index,
                          nlist=nlist, nprobe=nprobe, recall_sample=recall_sample, seed=seed,
                          progress=progress, names=names, tiles=tiles, notes=notes,
                          scale=None if scale is None else scale.to_dict(), scale_note=note,
                          pair_search=pair_search)


def find_duplicates(x, method: str = "embedding", *, ids=None, item_shape=None, threshold=None,
                    value_range=None, levels=None, index: str = "exact", nlist: int | None = None,
                    nprobe: int = NPROBE, recall_sample: int = RECALL_SAMPLE, seed: int = StatsConfig.seed,
                    progress=None) -> DuplicateResult:
    """Duplicate groups within one set (training-set hygiene).

    Parameters
    ----------
    x : array-like of shape (n_items, ...)
        Images (for exact, perceptual hashes and tiled_l2) or feature vectors (for embedding).
        Memory-mapped arrays are read in blocks.
    method : {"exact", "phash", "dhash", "embedding", "tiled_l2"}, default="embedding"
    ids : array-like, optional
        Item names (file names, original indices).
    item_shape : tuple, optional
        Shape of one image ((H, W), (H, W, C), (C, H, W)) when ``x`` is flat; taken from ``x``
        when it is not.
    threshold : int or float, optional
        Hamming distance at most, an integer from 0 to 64 (hashes; default 10, fit for
        photographs, see docs/probes/duplicates.md), cosine similarity at least, in (0, 1]
        (embedding; default 0.95), or tiled l2 distance at most, in (0, 1] (tiled_l2, pixels in [0, 1]; default 0.15).
        ``exact`` takes none.
    value_range : (lo, hi), optional
        The pixels' convention: ``lo`` is black, ``hi`` white ((0, 1) for images read from files,
        (-1, 1) for diffusers outputs, (0, 255) for 8-bit arrays). Exact hashes quantize
        ``round((x - lo) * levels / (hi - lo))``; perceptual hashes convert to 8 bits on it;
        tiled_l2 maps it to [0, 1]. Without it: see :func:`memaudit.adapters.images.pixel_scale` (tiled_l2:
        uint8 / 255, floats as [0, 1]). Embedding ignores it.
    levels : int, optional
        Quantization levels of exact hashes (255 for 8-bit sources, 65535 for 16-bit ones).
    index : {"exact", "ivf"}, default="exact"
        Embedding only: exact range search, or k-means cells searched by one GEMM per cell
        (``nlist`` cells, default sqrt(n); each query scans its ``nprobe`` nearest cells) with
        its recall against exact search measured on ``recall_sample`` queries. Within a set, a
        pair can also be found from its other end, so the reported recall is a lower bound.

    Returns
    -------
    DuplicateResult
    """
    raw_shape = tuple(np.shape(x))[1:]
    arr = as_2d_array(x, "items", min_rows=1)
    item_shape = tuple(item_shape) if item_shape is not None else raw_shape
    ids = check_ids(ids, arr.shape[0], "ids")
    thr, source = check_threshold(method, threshold)
    check_index(method, index)
    sets = _Sets(method, [(arr, "items")], item_shape, value_range, levels)
    return sets.match(arr, arr, thr, source, False, ids, None, ("items", "items"), index, nlist,
                      nprobe, recall_sample, seed, progress)


def find_copies(samples, reference, method: str = "embedding", *, sample_ids=None,
                reference_ids=None, item_shape=None, threshold=None, value_range=None,
                levels=None, index: str = "exact", nlist: int | None = None, nprobe: int = NPROBE,
                recall_sample: int = RECALL_SAMPLE, seed: int = StatsConfig.seed, progress=None) -> DuplicateResult:
    """Which samples copy which reference (training) items; same options as :func:`find_duplicates`.

    ``pairs[:, 0]`` are sample positions and ``pairs[:, 1]`` reference positions, best first;
    groups join the samples and training items connected by matches. Both sets are read with one
    pixel convention: ``value_range`` and ``levels`` when given, else one computed over both sets
    together (stated in ``scale`` and the summary).
    """
    q, r, _, item_shape = _prepare_cross(samples, reference, item_shape)
    thr, source = check_threshold(method, threshold)
    check_index(method, index)
    sets = _Sets(method, [(q, "samples"), (r, "reference")], item_shape, value_range, levels)
    return sets.match(q, r, thr, source, True, check_ids(sample_ids, q.shape[0], "sample_ids"),
                      check_ids(reference_ids, r.shape[0], "reference_ids"),
                      ("samples", "reference"), index, nlist, nprobe, recall_sample, seed,
                      progress)


def find_copies_with_control(samples, reference, holdout, method: str = "embedding", *,
                             sample_ids=None, reference_ids=None, holdout_ids=None,
                             item_shape=None, threshold=None, value_range=None, levels=None,
                             index: str = "exact", nlist: int | None = None, nprobe: int = NPROBE,
                             recall_sample: int = RECALL_SAMPLE, n_bootstrap: int = StatsConfig.n_bootstrap,
                             confidence: float = StatsConfig.confidence, seed: int = StatsConfig.seed,
                             progress=None) -> CopyRateResult:
    """The copy rate of samples against ``reference`` and its control, held-out real items.

    Samples and held-out items go through the same matcher (method, threshold, one pixel
    convention for the three sets). The copy rate is the share of samples that match at least one
    reference item; the control rate the same share of held-out items, which the model never saw:
    what near-twins in the data distribution alone produce. The excess is their difference.

    Parameters
    ----------
    samples, reference, holdout : array-like of shape (n, ...)
    n_bootstrap, confidence :
        Intervals of the rates (:func:`memaudit.stats.rate`) and of the excess
        (:func:`memaudit.stats.rate_difference`), seeded from ``seed`` through
        ``numpy.random.SeedSequence(seed).spawn(3)``.
    Other parameters as in :func:`find_copies`.

    Returns
    -------
    CopyRateResult
    """
    q, r, (h,), item_shape = _prepare_cross(samples, reference, item_shape,
                                            extra=[(holdout, "holdout")])
    thr, source = check_threshold(method, threshold)
    check_index(method, index)
    sets = _Sets(method, [(q, "samples"), (r, "reference"), (h, "holdout")], item_shape,
                 value_range, levels)
    r_ids = check_ids(reference_ids, r.shape[0], "reference_ids")
    common = (index, nlist, nprobe, recall_sample, seed, progress)
    res_s = sets.match(q, r, thr, source, True, check_ids(sample_ids, q.shape[0], "sample_ids"),
                       r_ids, ("samples", "reference"), *common)
    res_h = sets.match(h, r, thr, source, True, check_ids(holdout_ids, h.shape[0], "holdout_ids"),
                       r_ids, ("holdout", "reference"), *common)
    return copy_rates(res_s, res_h, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
