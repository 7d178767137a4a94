"""Duplicates inside a set, and copies across two sets: exact, perceptual and embedding matches.

Duplicated training items are the ones diffusion models copy first (Carlini et al. 2023; Somepalli
et al. 2023). This probe answers two questions with the same machinery:

- within one set (training-set hygiene): which items are duplicates of each other;
- across two sets (samples vs training set): which generated samples copy which training items,
  and, with a held-out set through the same matcher (:func:`find_copies_with_control`), how many
  real unseen items match just as well: the control of the copy rate.

Methods:

- ``"exact"``: equal content hashes of the quantized pixels (:func:`memaudit.hashing.content_hashes`),
  one pixel convention (:class:`memaudit.hashing.PixelScale`) for every set compared;
- ``"phash"`` / ``"dhash"``: imagehash-compatible 64-bit perceptual hashes within a Hamming
  distance (default 10 bits, imagededup's, fit for photographs; digit-like images need 0-1),
  searched exactly with a FAISS binary index;
- ``"embedding"``: cosine similarity at or above a threshold (default 0.95) on any feature vectors
  (pixels, CLIP embeddings), by FAISS range search: exact by default, over blocks of the reference;
  ``index="ivf"`` groups the vectors in k-means cells and compares each query with its nearest
  cells by GEMM, and its recall against exact search is measured on a sample and reported;
- ``"tiled_l2"``: the extraction distance of Carlini et al. 2023 on images: split both images into
  a 4 x 4 grid of non-overlapping tiles, take the root-mean-square pixel difference (pixels in
  [0, 1]) of each pair of tiles and keep the largest; a pair matches when it is at most the
  threshold. Exact: the squared global RMS difference is the (size-weighted) mean of the squared
  tile RMS differences, so it never exceeds the largest tile's; an exact L2 range search at the
  threshold therefore returns every candidate, and the tiles are compared on those only.

Matches are edges of a graph; duplicate groups are its connected components
(scipy.sparse.csgraph), so a chain of near-copies ends up in one group. A group far larger than
copies form (:func:`component_limit`) means the threshold joins unrelated items: the result then
carries a warning with the thresholds at which the groups stay small.

Memory-mapped inputs are read in blocks whose pages are released after use, and every block is
checked for NaN and Inf, so memory stays bounded by the block size, not the file size (exact,
perceptual hashes, tiled_l2 and exact embedding search; ``index="ivf"`` holds the normalised
vectors in memory).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .._validation import as_2d_array, check_fraction, check_ids, check_same_dim
from ..hashing import HASH_BITS, PixelScale, _digests, _perceptual, iter_blocks, pixel_scale
from ..results import jsonable
from ._range_search import (binary_pairs, embedding_pairs, float_pairs, measure_recall,
                            normalized, range_index, range_pairs)

__all__ = ["DuplicateResult", "CopyRateResult", "find_duplicates", "find_copies",
           "find_copies_with_control", "tiled_l2_distance", "component_limit", "parse_threshold",
           "METHODS", "DEFAULTS"]

METHODS = ("exact", "phash", "dhash", "embedding", "tiled_l2")
HASH_METHODS = ("phash", "dhash")
TILE_GRID = 4  # Carlini et al. 2023: 16 non-overlapping tiles (4 x 4), the largest tile distance
# threshold and where it comes from, per method
DEFAULTS = {
    "exact": (None, "identical quantized pixels (content hash); takes no threshold"),
    "phash": (10, "Hamming distance <= 10 of 64 bits: imagededup's default max_distance_threshold, "
                  "fit for photographs; digit-like images need 0-1 (docs/probes/duplicates.md)"),
    "dhash": (10, "Hamming distance <= 10 of 64 bits: imagededup's default max_distance_threshold, "
                  "fit for photographs; digit-like images need 0 (docs/probes/duplicates.md)"),
    "embedding": (0.95, "cosine similarity >= 0.95: memaudit's default for near-identical items "
                        "(imagededup uses 0.9 for CNN features)"),
    "tiled_l2": (0.15, "largest RMS pixel difference over a 4 x 4 grid of tiles <= 0.15 (pixels in "
                       "[0, 1]): the tiled l2 distance of Carlini et al. 2023 (Sec. 4), threshold "
                       "memaudit's default; check it against a held-out control"),
}
CONTROL_SHARE = 0.01  # a threshold is recommended by the control when <= 1% of held-out items match
PAIRS_LISTED = 10_000  # pairs written to JSON (best first); all are in DuplicateResult.pairs
_MATCHES_LISTED = 10  # reference items listed per query in JSON (best first)


def component_limit(n_nodes: int) -> int:
    """Largest group size expected from copies: ``max(10, ceil(1% of the items in the graph))``.

    A planted or real copy joins an original and a few copies; a connected component larger than
    this means the threshold chains unrelated items together.
    """
    return max(10, math.ceil(0.01 * n_nodes))


@dataclass(frozen=True)
class DuplicateResult:
    """Matched pairs and duplicate groups.

    Attributes
    ----------
    method : str
    threshold : float or None
        Hamming distance (hashes, at most), cosine similarity (embedding, at least), tiled l2
        distance (tiled_l2, at most), or None (exact).
    threshold_source : str
    cross : bool
        True for copies across two sets (queries vs reference), False within one set.
    pairs : ndarray of shape (m, 2)
        Matched (i, j): within a set, positions with i < j; across sets, (query position, reference
        position). Best first (smallest distance, largest similarity), ties by position.
    scores : ndarray of shape (m,)
        Hamming distance, tiled l2 distance or cosine similarity of each pair (0 for exact).
    groups : list of dict
        Connected components with at least two members, largest first: ``{"queries": positions,
        "reference": positions}`` across sets, ``{"members": positions}`` within a set.
    ids, reference_ids : ndarray
        Ids of the (query) items and, across sets, of the reference items.
    n_items, n_reference : int
    recall : float or None
        For an approximate index: recall of the matched pairs against exact search on a sample.
    recall_sample : int or None
    notes : list of str
        Warnings (starting with "warning:") and remarks, also printed by :meth:`summary`.
    scale : dict or None
        The pixel convention the hashes and tiles used (:class:`memaudit.hashing.PixelScale`).
    components : dict
        The group-size check: the rule, its limit, the largest group and, when it is exceeded or
        for hashes, the largest group per threshold and the loosest threshold within the limit.
    """

    method: str
    threshold: float | None
    threshold_source: str
    cross: bool
    pairs: np.ndarray
    scores: np.ndarray
    groups: list
    ids: np.ndarray
    reference_ids: np.ndarray | None
    n_items: int
    n_reference: int
    index: str = "exact"
    recall: float | None = None
    recall_sample: int | None = None
    notes: list = field(default_factory=list)
    scale: dict | None = None
    components: dict = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def n_duplicated(self) -> int:
        """Items in some group (within a set), or queries matched to a reference item (across)."""
        if self.cross:
            return int(np.unique(self.pairs[:, 0]).size)
        return int(sum(len(g["members"]) for g in self.groups))

    @property
    def matched(self) -> np.ndarray:
        """One flag per query (across sets) or item (within): does it match anything?"""
        flags = np.zeros(self.n_items, dtype=bool)
        flags[self.pairs[:, 0]] = True
        if not self.cross:
            flags[self.pairs[:, 1]] = True
        return flags

    @property
    def score_name(self) -> str:
        return "similarity" if self.method == "embedding" else "distance"

    def matches(self, i: int) -> np.ndarray:
        """Reference positions matched to query ``i`` (across sets), best first."""
        return self.pairs[self.pairs[:, 0] == i, 1]  # pairs are sorted best first

    def warnings(self) -> list:
        return [n for n in self.notes if n.startswith("warning:")]

    def to_dict(self, max_groups: int = 50, max_pairs: int = PAIRS_LISTED,
                max_matches: int = _MATCHES_LISTED) -> dict:
        """JSON-safe summary: groups (ids), the best ``max_pairs`` pairs and, across sets, each
        matched query's best ``max_matches`` reference items."""
        def named(g):
            if self.cross:
                return {"queries": self.ids[g["queries"]],
                        "reference": self.reference_ids[g["reference"]],
                        "size": len(g["queries"]) + len(g["reference"])}
            return {"members": self.ids[g["members"]], "size": len(g["members"])}

        other = self.reference_ids if self.cross else self.ids
        a, b = ("query", "reference") if self.cross else ("a", "b")
        listed = self.pairs[:max_pairs]
        pairs = [{a: int(i), f"{a}_id": self.ids[i], b: int(j), f"{b}_id": other[j],
                  self.score_name: s}
                 for (i, j), s in zip(listed.tolist(), self._score_values(self.scores[:max_pairs]))]
        out = {
            "probe": "duplicates",
            "method": self.method,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "score": self.score_name,
            "cross": self.cross,
            "scale": self.scale,
            "n_items": self.n_items,
            "n_reference": self.n_reference,
            "n_pairs": self.n_pairs,
            "n_groups": len(self.groups),
            "n_duplicated": self.n_duplicated,
            "index": self.index,
            "recall": self.recall,
            "recall_sample": self.recall_sample,
            "components": self.components,
            "groups": [named(g) for g in self.groups[:max_groups]],
            "pairs": pairs,
            "pairs_listed": len(pairs),
            "notes": self.notes,
        }
        if self.cross:
            out["matches"] = self._matches_dict(max_matches)
        return jsonable(out)

    def _matches_dict(self, cap):
        if not self.n_pairs:
            return []
        q = self.pairs[:, 0]
        order = np.argsort(q, kind="stable")  # stable: best first within each query
        bounds = np.flatnonzero(np.diff(q[order])) + 1
        out = []
        for run in np.split(order, bounds):
            i = int(q[run[0]])
            top = run[:cap]
            out.append({"query": i, "query_id": self.ids[i], "n_matches": len(run),
                        "reference": self.pairs[top, 1], "reference_ids": self.reference_ids[self.pairs[top, 1]],
                        self.score_name: self._score_values(self.scores[top])})
        return out

    def _score_values(self, scores):
        """Scores as JSON numbers: Hamming distances as integers."""
        return [int(v) for v in scores] if self.method in HASH_METHODS else [float(v) for v in scores]

    def plot(self, ax=None):
        """Histogram of the matched pairs' scores with the threshold
        (:func:`memaudit.figures.duplicate_scores`); returns the Axes."""
        from ..figures import duplicate_scores

        return duplicate_scores(self.scores, self.threshold, self.method, ax=ax,
                                label="sample / training pairs" if self.cross else "pairs")

    def summary(self) -> str:
        what = "queries matching a reference item" if self.cross else "items in duplicate groups"
        thr = "none" if self.threshold is None else f"{self.threshold:g}"
        line = (f"{self.method}: {self.n_pairs} matched pairs, {len(self.groups)} groups, "
                f"{self.n_duplicated} {what} (threshold {thr}: {self.threshold_source})")
        if self.cross and self.n_items:
            line += f"; {self.n_duplicated}/{self.n_items} = {100 * self.n_duplicated / self.n_items:.2f}% of queries"
        if self.scale is not None:
            s = self.scale
            line += (f"; pixels [{s['value_range'][0]:g}, {s['value_range'][1]:g}] -> levels "
                     f"0..{s['levels']} ({s['source']})")
        if self.recall is not None:
            line += f"; {self.index} recall {self.recall:.4f} on {self.recall_sample} queries"
        return "\n  ".join([line] + list(self.notes))


@dataclass(frozen=True)
class CopyRateResult:
    """The copy rate of samples against a training set, beside its held-out control.

    Attributes
    ----------
    samples, control : DuplicateResult
        Samples vs training set, and held-out real items vs the same training set, through the
        same matcher (method, threshold, pixel convention).
    rate, control_rate : Rate
        Share of samples (held-out items) that match at least one training item.
    excess : Rate
        ``rate - control_rate``: the copying that held-out real data does not explain.
    by_threshold : dict or None
        Hashes: for every Hamming distance d from 0 to the threshold, the share of samples and of
        held-out items within d of a training item (the curve to choose a threshold from).
    recommended_threshold : int or None
        Hashes: the loosest d up to the threshold at which at most 1% of held-out items match
        (:data:`CONTROL_SHARE`); None when even d = 0 matches more.
    """

    samples: DuplicateResult
    control: DuplicateResult
    rate: object
    control_rate: object
    excess: object
    by_threshold: dict | None = None
    recommended_threshold: int | None = None

    def to_dict(self) -> dict:
        return jsonable({
            "method": self.samples.method,
            "threshold": self.samples.threshold,
            "copy_rate": self.rate.to_dict(),
            "control_rate": self.control_rate.to_dict(),
            "excess_over_control": self.excess.to_dict(),
            "by_threshold": self.by_threshold,
            "control_share": CONTROL_SHARE,
            "recommended_threshold": self.recommended_threshold,
        })

    def plot(self, ax=None):
        """Hashes: the matched share of samples and of held-out items by Hamming distance
        (:func:`memaudit.figures.copy_rate_by_threshold`); other matchers: the scores of the
        samples' and the control's matched pairs (:func:`memaudit.figures.duplicate_scores`).
        Returns the Axes."""
        from ..figures import copy_rate_by_threshold, duplicate_scores

        if self.by_threshold is None:
            return duplicate_scores(self.samples.scores, self.samples.threshold,
                                    self.samples.method, control=self.control.scores, ax=ax,
                                    label="samples")
        by = self.by_threshold
        return copy_rate_by_threshold(by["threshold"], by["samples"], by["holdout"],
                                      threshold=self.samples.threshold,
                                      recommended=self.recommended_threshold,
                                      control_share=CONTROL_SHARE, method=self.samples.method,
                                      ax=ax)

    def summary(self) -> str:
        line = (f"copy rate {self.rate}; held-out control {self.control_rate}; excess over control "
                f"{100 * self.excess.value:+.2f}%, {int(round(100 * self.excess.confidence))}% CI "
                f"[{100 * self.excess.low:+.2f}%, {100 * self.excess.high:+.2f}%]")
        if self.by_threshold is not None:
            if self.recommended_threshold is None:
                line += (f"; even at threshold 0 more than {100 * CONTROL_SHARE:g}% of held-out "
                         "items match: this hash cannot separate copies from near-twins here")
            else:
                line += (f"; the control stays at or below {100 * CONTROL_SHARE:g}% up to threshold "
                         f"{self.recommended_threshold}")
        return line


# ----------------------------------------------------------------------------- exact matches
def _exact_pairs(h_q, h_r, cross):
    """Pairs of equal digests (``S16`` arrays): across sets every (query, reference) pair,
    within one set every (i, j) with i < j of each class of equal items."""
    if not cross:
        order = np.argsort(h_q, kind="stable")
        s = h_q[order]
        bounds = np.flatnonzero(s[1:] != s[:-1]) + 1
        pairs = [np.zeros((0, 2), np.int64)]
        for run in np.split(order, bounds):
            if run.size >= 2:
                run = np.sort(run)
                a, b = np.triu_indices(run.size, 1)
                pairs.append(np.stack([run[a], run[b]], axis=1))
        pairs = np.concatenate(pairs).astype(np.int64)
        return pairs, np.zeros(len(pairs))
    order = np.argsort(h_r, kind="stable")
    s = h_r[order]
    lo = np.searchsorted(s, h_q, "left")
    hi = np.searchsorted(s, h_q, "right")
    counts = hi - lo
    i = np.repeat(np.arange(len(h_q)), counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    j = order[starts + np.arange(counts.sum())] if counts.sum() else np.zeros(0, np.int64)
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    return pairs, np.zeros(len(pairs))


# ----------------------------------------------------------------------------- tiled l2
def _tile_bounds(h, w):
    rows = [int(r[0]) for r in np.array_split(np.arange(h), TILE_GRID)]
    cols = [int(c[0]) for c in np.array_split(np.arange(w), TILE_GRID)]
    return rows, cols


def tiled_l2_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest tile RMS difference between images ``a[k]`` and ``b[k]`` (pairs, pixels in [0, 1]).

    ``a`` and ``b`` are (m, H, W) or (m, H, W, C); tiles follow ``np.array_split`` of each side
    into 4, so sides that do not divide by 4 give tiles that differ by one pixel.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim == 3:
        d = d[..., None]
    h, w = d.shape[1:3]
    rows, cols = _tile_bounds(h, w)
    sums = np.add.reduceat(np.add.reduceat((d * d).sum(axis=3), rows, axis=1), cols, axis=2)
    counts = np.outer(np.diff(rows + [h]), np.diff(cols + [w])) * d.shape[3]
    return np.sqrt(sums / counts).reshape(len(d), -1).max(axis=1)


def _tiled_images(item_shape, name):
    from ..adapters.pixels import image_layout

    layout = image_layout(item_shape)
    if layout is None:
        raise ValueError(f"tiled_l2 needs images; {name} of shape {tuple(item_shape)} are not images "
                         "(arrays shaped (n, H, W), (n, H, W, C) or (n, C, H, W), or an image folder)")
    shape = tuple(int(s) for s in item_shape)
    if layout == "flat-square":
        side = math.isqrt(shape[0])
        hwc, perm = (side, side, 1), None
    elif layout == "HW":
        hwc, perm = shape + (1,), None
    elif layout == "CHW":
        hwc, perm = (shape[1], shape[2], shape[0]), (0, 2, 3, 1)
    else:
        hwc, perm = shape, None
    if min(hwc[:2]) < TILE_GRID:
        raise ValueError(f"tiled_l2 needs images of at least {TILE_GRID} x {TILE_GRID} pixels, "
                         f"{name} are {hwc[0]} x {hwc[1]}")

    def images(rows):
        if perm is None:
            return rows.reshape((len(rows),) + hwc)
        return rows.reshape((len(rows), shape[0], shape[1], shape[2])).transpose(perm)

    return images


def _tiled_scale(sets, value_range):
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


def _tiled_pairs(xq, xr, thr, cross, item_shape, scale, names, progress):
    import faiss

    images = _tiled_images(item_shape, names[0])
    d = xr.shape[1]

    def prep(name):
        def f(block, offset):
            u = scale.to_unit(block)
            lo, hi = float(u.min()), float(u.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                bad = int(np.flatnonzero(((u < -1e-6) | (u > 1 + 1e-6)).any(axis=1))[0])
                raise ValueError(
                    f"tiled_l2 compares pixels in [0, 1]; {name} item {offset + bad} has values "
                    f"outside {str(scale)}: give the value_range that holds them (uint8 images "
                    "are divided by 255 automatically)")
            return np.ascontiguousarray(u)
        return f

    def build(rb):
        idx = faiss.IndexFlatL2(d)
        idx.add(rb)
        return idx

    chunk = max(1, (32 << 20) // (8 * d))

    def refine(qb, rb, i, j, _):
        dist = np.concatenate([tiled_l2_distance(images(qb[i[s : s + chunk]]), images(rb[j[s : s + chunk]]))
                               for s in range(0, len(i), chunk)]) if len(i) else np.zeros(0)
        return dist <= thr, dist

    # global RMS <= largest tile RMS, so every match lies within this L2 radius (FAISS keeps
    # squared distances strictly below it; widen by a relative 1e-5 against float32 rounding)
    radius = np.float32(thr**2 * d * (1 + 1e-5) + 1e-6)
    return float_pairs(xq, xr, cross, prep(names[0]), prep(names[1]), build, radius, refine,
                        names, progress, "l2 range search (tiled_l2)")


# ----------------------------------------------------------------------------- groups
def _graph(pairs, n_q, n_r, cross):
    n = n_q + n_r if cross else n_q
    b = pairs[:, 1] + (n_q if cross else 0)
    return coo_matrix((np.ones(len(pairs)), (pairs[:, 0], b)), shape=(n, n))


def _labels(pairs, n_q, n_r, cross):
    return connected_components(_graph(pairs, n_q, n_r, cross), directed=False)[1]


def _largest(pairs, n_q, n_r, cross) -> int:
    if len(pairs) == 0:
        return 1 if (n_q + n_r) else 0
    return int(np.bincount(_labels(pairs, n_q, n_r, cross)).max())


def _groups(pairs, n_q, n_r, cross):
    n = n_q + n_r if cross else n_q
    labels = _labels(pairs, n_q, n_r, cross) if n else np.zeros(0, np.int64)
    sizes = np.bincount(labels, minlength=labels.max() + 1 if n else 0)
    big = np.flatnonzero(sizes >= 2)
    order = np.argsort(labels, kind="stable")
    members_of = np.split(order, np.cumsum(sizes)[:-1]) if n else []
    groups = []
    for lab in big:
        members = members_of[lab]  # sorted positions (stable argsort of the labels)
        if cross:
            groups.append({"queries": members[members < n_q],
                           "reference": members[members >= n_q] - n_q})
        else:
            groups.append({"members": members})
    groups.sort(key=lambda g: (-sum(len(v) for v in g.values()),
                               int(min(v.min() if len(v) else n for v in g.values()))))
    return groups


def _best_first(pairs, scores, method):
    key = -scores if method == "embedding" else scores
    order = np.lexsort((pairs[:, 1], pairs[:, 0], key))
    return pairs[order], scores[order]


def _component_check(method, thr, pairs, scores, n_q, n_r, cross, largest):
    """The group-size rule; for hashes (and when the rule is broken) the largest group by
    threshold and the loosest threshold whose groups stay at the copy scale."""
    n_nodes = n_q + n_r if cross else n_q
    limit = component_limit(n_nodes)
    out = {"rule": "largest group <= max(10, 1% of the items in the graph)", "limit": limit,
           "n_nodes": n_nodes, "largest": largest, "exceeded": largest > limit}
    if method == "exact" or (method not in HASH_METHODS and not out["exceeded"]) or not len(pairs):
        return out
    better = -scores if method == "embedding" else scores  # smaller is a closer match

    def size_at(cut):
        return _largest(pairs[better <= cut], n_q, n_r, cross)

    if method in HASH_METHODS:
        cuts = np.arange(int(thr) + 1)
        sizes = [size_at(d) for d in cuts]
        out["largest_by_threshold"] = {int(d): s for d, s in zip(cuts, sizes)}
    else:
        cuts, sizes = np.unique(better), None
    # the copy scale: groups of at most max(10, the largest group of the closest matches)
    scale = max(10, sizes[0] if sizes else size_at(cuts[0]))
    if sizes:
        best = max(k for k, s in enumerate(sizes) if s <= scale)
    else:  # the largest group grows with the threshold: binary search over the matched scores
        lo, hi, best = 1, len(cuts) - 1, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            if size_at(cuts[mid]) <= scale:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
    rec = cuts[best]
    out["copy_scale"] = int(scale)
    out["recommended_threshold"] = (int(rec) if method in HASH_METHODS
                                    else float(-rec if method == "embedding" else rec))
    return out


def _component_warning(method, thr, check):
    if not check["exceeded"]:
        return None
    msg = (f"warning: the largest group joins {check['largest']} of {check['n_nodes']} items, far "
           f"more than copies form (rule: {check['rule']} = {check['limit']}); ")
    if method == "exact":
        return msg + "these items have identical pixels: check the group (blank or placeholder images?)"
    op = ">=" if method == "embedding" else "<="
    return msg + (f"at threshold {thr:g} the matches chain unrelated items. Groups stay at the copy "
                  f"scale (at most {check['copy_scale']} items) at threshold {op} "
                  f"{check['recommended_threshold']:g}: use threshold {check['recommended_threshold']:g} "
                  "(--threshold), or calibrate it with a held-out control (--holdout); measured "
                  "thresholds in docs/probes/duplicates.md")


# ----------------------------------------------------------------------------- public API
def _threshold(method, threshold):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if threshold is None:
        return DEFAULTS[method]
    if method == "exact":
        raise ValueError("method 'exact' takes no threshold (items match when their quantized "
                         "pixels are identical); drop the threshold or use phash, dhash, embedding "
                         "or tiled_l2")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if method == "embedding":
        return check_fraction(threshold, "threshold (cosine similarity)", low_open=True,
                              high_open=False), "user"
    if method == "tiled_l2":
        t = float(threshold)
        if not np.isfinite(t) or t <= 0 or t > 1:
            raise ValueError(f"threshold (tiled l2, pixels in [0, 1]) must be in (0, 1], got {threshold!r}")
        return t, "user"
    t = float(threshold)
    if not np.isfinite(t) or t != int(t):
        raise ValueError(f"threshold (Hamming distance of {method}) must be an integer from 0 to "
                         f"{HASH_BITS}, got {threshold!r}")
    if not 0 <= t <= HASH_BITS:
        raise ValueError(f"threshold (Hamming distance of {method}) must be an integer from 0 to "
                         f"{HASH_BITS} (at least 0, at most {HASH_BITS}), got {int(t)}")
    return int(t), "user"


def parse_threshold(method: str, text):
    """A threshold given as text (the command line), parsed for ``method`` with one-line errors.

    phash/dhash: an integer Hamming distance from 0 to 64; embedding and tiled_l2: a number (or a
    fraction such as 19/20) in (0, 1]; exact: none. ``None`` stays None (the default).
    """
    from fractions import Fraction

    if text is None:
        return None
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "exact":
        raise ValueError("--threshold does not apply to method exact (items match when their "
                         "quantized pixels are identical); drop it")
    if method in HASH_METHODS:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError(f"--threshold for {method} is a Hamming distance, an integer from 0 "
                             f"to {HASH_BITS}; got {text!r}") from None
        if not 0 <= value <= HASH_BITS:
            raise ValueError(f"--threshold for {method} is a Hamming distance, an integer from 0 "
                             f"to {HASH_BITS}; got {value}")
        return value
    what = "cosine similarity" if method == "embedding" else "tiled l2 distance (pixels in [0, 1])"
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        value = float("nan")
    if not 0 < value <= 1:
        raise ValueError(f"--threshold for {method} is a {what} in (0, 1]; got {text!r}")
    return value


def _check_index(method, index):
    if index not in ("exact", "ivf"):
        raise ValueError(f"index must be 'exact' or 'ivf', got {index!r}")
    if index != "exact" and method != "embedding":
        raise ValueError("an approximate index applies to method='embedding' only")


def _scale(method, sets, value_range, levels):
    if method in ("exact", "phash", "dhash"):
        return pixel_scale(*sets, value_range=value_range, levels=levels)
    if method == "tiled_l2":
        return _tiled_scale(sets, value_range)
    return None


def _features(x, method, item_shape, scale, name, notes):
    if method == "exact":
        return _digests(x, item_shape, scale, name)
    clipped = []
    codes = _perceptual(method, x, item_shape, None, scale, name, clipped)
    if clipped[0]:
        notes.append(f"{name}: {clipped[0]} item(s) have pixels outside {scale.lo:g}..{scale.hi:g}, "
                     "clipped to 0..255 for the 8-bit conversion of the hashes")
    return codes


def _checked(x, name):
    """The whole array, read (and checked for NaN/Inf) block by block when memory-mapped."""
    if not isinstance(x, np.memmap):
        return np.asarray(x)
    return np.concatenate([b for _, b in iter_blocks(x, name)])


def _run(xq, xr, method, thr, source, cross, item_shape, ids, ref_ids, index, nlist, nprobe,
         recall_sample, seed, progress, scale, names, ref_features=None):
    """One search; ``ref_features`` = (hashes, notes) of the reference when already computed."""
    notes = []
    recall = sample = None
    if method in ("exact", "phash", "dhash"):
        fq = _features(xq, method, item_shape, scale, names[0], notes)
        if not cross:
            fr = fq
        elif ref_features is not None:
            fr = ref_features[0]
            notes += ref_features[1]
        else:
            fr = _features(xr, method, item_shape, scale, names[1], notes)
        if method == "exact":
            pairs, scores = _exact_pairs(fq, fr, cross)
        else:
            pairs, scores = binary_pairs(fq, fr, thr, cross, progress)
    elif method == "tiled_l2":
        pairs, scores = _tiled_pairs(xq, xr, thr, cross, item_shape, scale, names, progress)
    elif index == "exact":
        pairs, scores = embedding_pairs(xq, xr, thr, cross, names, progress)
    else:
        fq = normalized(_checked(xq, names[0]), names[0])
        fr = normalized(_checked(xr, names[1]), names[1]) if cross else fq
        idx = range_index(fr, index, nlist, nprobe, seed)
        pairs, scores = range_pairs(idx, fq, thr, cross, progress)
        recall, sample = measure_recall(idx, fq, fr, thr, cross, recall_sample, seed)
    pairs, scores = _best_first(pairs, scores, method)
    n_q, n_r = xq.shape[0], (xr.shape[0] if cross else 0)
    groups = _groups(pairs, n_q, n_r, cross)
    largest = max([sum(len(v) for v in g.values()) for g in groups], default=1)
    check = _component_check(method, thr, pairs, scores, n_q, n_r, cross, largest)
    warning = _component_warning(method, thr, check)
    if warning:
        notes.insert(0, warning)
    if scale is not None and scale.source.startswith("joint"):
        notes.append(f"pixel convention computed from the data ({scale}); give value_range "
                     "(and levels) to state it")
    return DuplicateResult(
        method=method, threshold=thr, threshold_source=source, cross=cross, pairs=pairs,
        scores=scores, groups=groups, ids=ids, reference_ids=ref_ids if cross else None,
        n_items=len(ids), n_reference=len(ref_ids) if cross else 0, index=index, recall=recall,
        recall_sample=sample, notes=notes, scale=None if scale is None else scale.to_dict(),
        components=check,
    )


def find_duplicates(x, method: str = "embedding", *, ids=None, item_shape=None, threshold=None,
                    value_range=None, levels=None, index: str = "exact", nlist: int | None = None,
                    nprobe: int = 8, recall_sample: int = 1000, seed: int = 0,
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
        tiled_l2 maps it to [0, 1]. Without it: see :func:`memaudit.hashing.pixel_scale` (tiled_l2:
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
    thr, source = _threshold(method, threshold)
    _check_index(method, index)
    sets = [(arr, "items")]
    scale = _scale(method, sets, value_range, levels)
    return _run(arr, arr, method, thr, source, False, item_shape, ids, None, index, nlist, nprobe,
                recall_sample, seed, progress, scale, ("items", "items"))


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


def find_copies(samples, reference, method: str = "embedding", *, sample_ids=None,
                reference_ids=None, item_shape=None, threshold=None, value_range=None,
                levels=None, index: str = "exact", nlist: int | None = None, nprobe: int = 8,
                recall_sample: int = 1000, seed: int = 0, progress=None) -> DuplicateResult:
    """Which samples copy which reference (training) items; same options as :func:`find_duplicates`.

    ``pairs[:, 0]`` are sample positions and ``pairs[:, 1]`` reference positions, best first;
    groups join the samples and training items connected by matches. Both sets are read with one
    pixel convention: ``value_range`` and ``levels`` when given, else one computed over both sets
    together (stated in ``scale`` and the summary).
    """
    q, r, _, item_shape = _prepare_cross(samples, reference, item_shape)
    thr, source = _threshold(method, threshold)
    _check_index(method, index)
    sets = [(q, "samples"), (r, "reference")]
    scale = _scale(method, sets, value_range, levels)
    return _run(q, r, method, thr, source, True, item_shape,
                check_ids(sample_ids, q.shape[0], "sample_ids"),
                check_ids(reference_ids, r.shape[0], "reference_ids"), index, nlist, nprobe,
                recall_sample, seed, progress, scale, ("samples", "reference"))


def _share_by_threshold(res, thr):
    """For d = 0..thr: the share of queries within Hamming distance d of a reference item."""
    best = np.full(res.n_items, np.inf)
    np.minimum.at(best, res.pairs[:, 0], res.scores)
    return [float(np.mean(best <= d)) for d in range(int(thr) + 1)]


def find_copies_with_control(samples, reference, holdout, method: str = "embedding", *,
                             sample_ids=None, reference_ids=None, holdout_ids=None,
                             item_shape=None, threshold=None, value_range=None, levels=None,
                             index: str = "exact", nlist: int | None = None, nprobe: int = 8,
                             recall_sample: int = 1000, n_bootstrap: int = 1000,
                             confidence: float = 0.95, seed: int = 0,
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
    from ..stats import rate, rate_difference

    q, r, (h,), item_shape = _prepare_cross(samples, reference, item_shape,
                                            extra=[(holdout, "holdout")])
    thr, source = _threshold(method, threshold)
    _check_index(method, index)
    sets = [(q, "samples"), (r, "reference"), (h, "holdout")]
    scale = _scale(method, sets, value_range, levels)
    r_ids = check_ids(reference_ids, r.shape[0], "reference_ids")
    common = (index, nlist, nprobe, recall_sample, seed, progress, scale)
    ref = None
    if method in ("exact", "phash", "dhash"):  # hash the reference once for both searches
        ref_notes = []
        ref = (_features(r, method, item_shape, scale, "reference", ref_notes), ref_notes)
    res_s = _run(q, r, method, thr, source, True, item_shape,
                 check_ids(sample_ids, q.shape[0], "sample_ids"), r_ids, *common,
                 ("samples", "reference"), ref)
    res_h = _run(h, r, method, thr, source, True, item_shape,
                 check_ids(holdout_ids, h.shape[0], "holdout_ids"), r_ids, *common,
                 ("holdout", "reference"), ref)
    s1, s2, s3 = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3))
    r_s = rate(res_s.matched, n_bootstrap=n_bootstrap, confidence=confidence, seed=s1,
               label="samples")
    r_h = rate(res_h.matched, n_bootstrap=n_bootstrap, confidence=confidence, seed=s2,
               label="holdout")
    excess = rate_difference(r_s, r_h, n_bootstrap=n_bootstrap, confidence=confidence, seed=s3)
    by = rec = None
    if method in HASH_METHODS:
        by = {"threshold": list(range(int(thr) + 1)),
              "samples": _share_by_threshold(res_s, thr),
              "holdout": _share_by_threshold(res_h, thr)}
        ok = [d for d, share in zip(by["threshold"], by["holdout"]) if share <= CONTROL_SHARE]
        rec = max(ok) if ok else None
    return CopyRateResult(samples=res_s, control=res_h, rate=r_s, control_rate=r_h, excess=excess,
                          by_threshold=by, recommended_threshold=rec)
