"""Duplicates inside a set, and copies across two sets: exact, perceptual and embedding matches.

Duplicated training items are the ones diffusion models copy first (Carlini et al. 2023; Somepalli
et al. 2023). This probe answers two questions with the same machinery:

- within one set (training-set hygiene): which items are duplicates of each other;
- across two sets (samples vs training set): which generated samples copy which training items,
  and, with a held-out set through the same matcher, how many real unseen items match just as
  well: the control of the copy rate (:class:`DuplicatesProbe` with ``holdout``).

The probe sees arrays only. What it compares, per method:

- ``"exact"``: keys, one per item (1-D array), equal keys match; the images adapter writes them as
  content digests of the quantized pixels (:func:`memaudit.adapters.images.content_digests`);
- ``"phash"`` / ``"dhash"``: packed 64-bit codes, (n, 8) uint8 (:func:`memaudit.adapters.images.phash`),
  within a Hamming distance (default 10 bits, imagededup's, fit for photographs; digit-like images
  need 0-1), searched exactly with a FAISS binary index;
- ``"embedding"``: cosine similarity at or above a threshold (default 0.95) on any feature vectors
  (pixels, CLIP embeddings), by FAISS range search: exact by default, over blocks of the reference;
  ``index="ivf"`` groups the vectors in k-means cells and compares each query with its nearest
  cells by GEMM, and its recall against exact search is measured on a sample and reported;
- ``"tiled_l2"``: images (n, H, W) or (n, H, W, C) with pixels in [0, 1]: the extraction distance
  of Carlini et al. 2023, the largest root-mean-square pixel difference over a 4 x 4 grid of tiles;
  a pair matches when it is at most the threshold (exact, see
  :mod:`memaudit.probes._range_search`).

Images of any layout and value range go through :mod:`memaudit.image_duplicates`
(``find_duplicates``, ``find_copies``, ``find_copies_with_control``), which computes these arrays
with the images adapter under one pixel convention for every set and calls :func:`match_sets`.

Matches are edges of a graph; duplicate groups are its connected components, and a group far
larger than copies form carries a warning with the thresholds at which the groups stay small
(:mod:`memaudit.probes._groups`).

Memory-mapped inputs are read in blocks whose pages are released after use, and every block is
checked for NaN and Inf, so memory stays bounded by the block size, not the file size (exact,
perceptual hashes, tiled_l2 and exact embedding search; ``index="ivf"`` holds the normalised
vectors in memory).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .._blocks import HASH_BITS
from .._validation import as_2d_array, check_fraction, check_ids
from ..results import Rate, jsonable
from ..stats import StatsConfig, rate, rate_difference, spawn
from ._contract import Probe
from ._groups import (HASH_METHODS, best_first, component_check, component_limit,
                      component_warning, duplicate_groups)
from ._range_search import (binary_pairs, embedding_pairs, exact_pairs, measure_recall,
                            UnitRows, range_index, range_pairs,
                            tiled_l2_distance, tiled_pairs)

__all__ = ["DuplicatesProbe", "DuplicateResult", "CopyRateResult", "match_sets", "copy_rates",
           "tiled_l2_distance", "component_limit", "parse_threshold", "check_threshold",
           "METHODS", "DEFAULTS"]

METHODS = ("exact", "phash", "dhash", "embedding", "tiled_l2")
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
NPROBE = 8  # ivf: cells each query scans
RECALL_SAMPLE = 1000  # ivf: queries on which the recall against exact search is measured


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
        The pixel convention the hashes and tiles used (:class:`memaudit.adapters.images.PixelScale`).
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

    def to_frame(self):
        """One row per item: its group (within a set) or its best match (across sets) (pandas)."""
        from ..results import duplicates_frame

        return duplicates_frame(self)

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

    def to_dict(self, per_sample: bool = True, *, max_groups: int = 50,
                max_pairs: int = PAIRS_LISTED, max_matches: int = _MATCHES_LISTED) -> dict:
        """JSON-safe summary; ``per_sample`` adds the item listings: groups (ids), the best
        ``max_pairs`` pairs and, across sets, each matched query's best ``max_matches`` reference
        items."""
        def named(g):
            if self.cross:
                return {"queries": self.ids[g["queries"]],
                        "reference": self.reference_ids[g["reference"]],
                        "size": len(g["queries"]) + len(g["reference"])}
            return {"members": self.ids[g["members"]], "size": len(g["members"])}

        other = self.reference_ids if self.cross else self.ids
        a, b = ("query", "reference") if self.cross else ("a", "b")
        listed = self.pairs[:max_pairs] if per_sample else self.pairs[:0]
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
            "pairs_listed": len(pairs) if per_sample else 0,
            "notes": self.notes,
        }
        if per_sample:
            out["groups"] = [named(g) for g in self.groups[:max_groups]]
            out["pairs"] = pairs
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
    samples : DuplicateResult
        Samples vs training set.
    rate : Rate
        Share of samples that match at least one training item.
    control : DuplicateResult or None
        Held-out real items vs the same training set, through the same matcher (method,
        threshold, pixel convention).
    control_rate : Rate or None
        Share of held-out items that match at least one training item.
    excess : Rate or None
        ``rate - control_rate``: the copying that held-out real data does not explain.
    by_threshold : dict or None
        Hashes: for every Hamming distance d from 0 to the threshold, the share of samples (and of
        held-out items) within d of a training item (the curve to choose a threshold from).
    recommended_threshold : int or None
        Hashes with a control: the loosest d up to the threshold at which at most 1% of held-out
        items match (:data:`CONTROL_SHARE`); None when even d = 0 matches more.
    """

    samples: DuplicateResult
    rate: Rate
    control: DuplicateResult | None = None
    control_rate: Rate | None = None
    excess: Rate | None = None
    by_threshold: dict | None = None
    recommended_threshold: int | None = None

    def to_frame(self):
        """The samples' rows, then the held-out control's, with a ``set`` column (pandas)."""
        from ..results import copies_frame

        return copies_frame(self)

    def to_dict(self, per_sample: bool = True) -> dict:
        """JSON-safe summary; ``per_sample`` adds, per sample (and held-out item), its id and
        whether it matches a training item."""
        out = {
            "method": self.samples.method,
            "threshold": self.samples.threshold,
            "copy_rate": self.rate,
            "control_rate": self.control_rate,
            "excess_over_control": self.excess,
            "by_threshold": self.by_threshold,
            "control_share": CONTROL_SHARE,
            "recommended_threshold": self.recommended_threshold,
        }
        if per_sample:
            out["per_sample"] = {"sample_id": self.samples.ids, "matched": self.samples.matched}
            if self.control is not None:
                out["per_sample"]["holdout"] = {"id": self.control.ids,
                                                "matched": self.control.matched}
        return jsonable(out)

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
        if self.control is None:
            return f"copy rate {self.rate}; no held-out control (give holdout to read it)"
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


# ----------------------------------------------------------------------------- thresholds
def check_threshold(method, threshold):
    """``(threshold, source)`` for ``method``: the default and its source when None, else the
    checked value and "user"."""
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


def check_index(method, index):
    if index not in ("exact", "ivf"):
        raise ValueError(f"index must be 'exact' or 'ivf', got {index!r}")
    if index != "exact" and method != "embedding":
        raise ValueError("an approximate index applies to method='embedding' only")


# ----------------------------------------------------------------------------- matching arrays
def match_sets(fq, fr, method, threshold, source, cross, ids, ref_ids, *, index="exact",
               nlist=None, nprobe=NPROBE, recall_sample=RECALL_SAMPLE, seed=StatsConfig.seed,
               progress=None, names=("items", "items"), tiles=None, notes=(), scale=None,
               scale_note=None, pair_search=None) -> DuplicateResult:
    """One search of ``fq`` against ``fr`` (or of ``fq`` within itself when not ``cross``).

    Parameters
    ----------
    fq, fr : ndarray
        What the method compares (see the module docstring): keys, codes, feature rows, or
        tiled_l2 image rows (flat, laid out (H, W, C)).
    method, threshold, source : str, float, str
        ``threshold`` and ``source`` as :func:`check_threshold` returns them.
    cross : bool
    ids, ref_ids : ndarray
    tiles : ((H, W, C), (prep_q, prep_r), convention)
        tiled_l2 only (required there): the image shape, the block readers that turn a block of
        rows into float32 pixels in [0, 1] laid out (H, W, C), and the pixel convention's name
        for the out-of-range error.
    notes : sequence of str
        Remarks made while preparing the arrays (kept in the result).
    scale : dict, optional
        The pixel convention the arrays were made under, recorded in the result.
    scale_note : str, optional
        A remark appended last (the convention was computed from the data).
    pair_search : callable, optional
        The exact embedding search to use instead of :func:`embedding_pairs` (same arguments
        and answer; memaudit.distributed's runs it shard by shard on a cluster).

    Returns
    -------
    DuplicateResult
    """
    notes = list(notes)
    recall = sample = None
    if method == "exact":
        pairs, scores = exact_pairs(fq, fr, cross)
    elif method in HASH_METHODS:
        pairs, scores = binary_pairs(fq, fr, threshold, cross, progress)
    elif method == "tiled_l2":
        hwc, preps, convention = tiles
        pairs, scores = tiled_pairs(fq, fr, threshold, cross, hwc, preps, convention, names,
                                    progress)
    elif index == "exact":
        pairs, scores = (pair_search or embedding_pairs)(fq, fr, threshold, cross, names,
                                                         progress)
    else:
        # the sets as given (memory-mapped or not), normalised where used: no copy of either
        uq = UnitRows(fq, names[0])
        ur = UnitRows(fr, names[1]) if cross else uq
        idx = range_index(ur, index, nlist, nprobe, seed, names[1])
        pairs, scores = range_pairs(idx, uq, threshold, cross, progress)
        recall, sample = measure_recall(idx, uq, ur, threshold, cross, recall_sample, seed, names)
    pairs, scores = best_first(pairs, scores, method)
    n_q, n_r = fq.shape[0], (fr.shape[0] if cross else 0)
    found = duplicate_groups(pairs, n_q, n_r, cross)
    largest = max([sum(len(v) for v in g.values()) for g in found], default=1)
    check = component_check(method, threshold, pairs, scores, n_q, n_r, cross, largest)
    warning = component_warning(method, threshold, check)
    if warning:
        notes.insert(0, warning)
    if scale_note:
        notes.append(scale_note)
    return DuplicateResult(
        method=method, threshold=threshold, threshold_source=source, cross=cross, pairs=pairs,
        scores=scores, groups=found, ids=ids, reference_ids=ref_ids if cross else None,
        n_items=len(ids), n_reference=len(ref_ids) if cross else 0, index=index, recall=recall,
        recall_sample=sample, notes=notes, scale=scale, components=check,
    )


def _share_by_threshold(res, thr):
    """For d = 0..thr: the share of queries within Hamming distance d of a reference item."""
    best = np.full(res.n_items, np.inf)
    np.minimum.at(best, res.pairs[:, 0], res.scores)
    return [float(np.mean(best <= d)) for d in range(int(thr) + 1)]


def copy_rates(res_s: DuplicateResult, res_h: DuplicateResult | None = None, *,
               n_bootstrap: int = StatsConfig.n_bootstrap,
               confidence: float = StatsConfig.confidence,
               seed=StatsConfig.seed) -> CopyRateResult:
    """The copy rate of the samples' search ``res_s`` and, with the held-out items' search
    ``res_h``, its control and the excess: intervals from :func:`memaudit.stats.rate` and
    :func:`memaudit.stats.rate_difference`, seeded through ``SeedSequence(seed).spawn(3)``
    (samples, control, excess)."""
    s1, s2, s3 = spawn(seed, 3)
    kw = dict(n_bootstrap=n_bootstrap, confidence=confidence)
    r_s = rate(res_s.matched, seed=s1, label="samples", **kw)
    hashes = res_s.method in HASH_METHODS
    thr = res_s.threshold
    if res_h is None:
        by = {"threshold": list(range(int(thr) + 1)),
              "samples": _share_by_threshold(res_s, thr)} if hashes else None
        return CopyRateResult(samples=res_s, rate=r_s, by_threshold=by)
    r_h = rate(res_h.matched, seed=s2, label="holdout", **kw)
    excess = rate_difference(r_s, r_h, seed=s3, **kw)
    by = rec = None
    if hashes:
        by = {"threshold": list(range(int(thr) + 1)),
              "samples": _share_by_threshold(res_s, thr),
              "holdout": _share_by_threshold(res_h, thr)}
        ok = [d for d, share in zip(by["threshold"], by["holdout"]) if share <= CONTROL_SHARE]
        rec = max(ok) if ok else None
    return CopyRateResult(samples=res_s, rate=r_s, control=res_h, control_rate=r_h, excess=excess,
                          by_threshold=by, recommended_threshold=rec)


# ----------------------------------------------------------------------------- probe class
def _as_compared(x, method, name):
    """``(array, tiles)``: ``x`` checked as what ``method`` compares (see the module docstring)."""
    if method == "exact":
        keys = np.asarray(x)
        if keys.ndim != 1 or keys.size == 0:
            raise ValueError(f"{name}: method 'exact' compares one key per item (a non-empty 1-D "
                             f"array, e.g. memaudit.adapters.images.content_digests), got shape "
                             f"{keys.shape}")
        return keys, None
    if method in HASH_METHODS:
        codes = np.asarray(x)
        if codes.ndim != 2 or codes.shape[1] != HASH_BITS // 8 or codes.dtype != np.uint8:
            raise ValueError(f"{name}: method {method!r} compares packed {HASH_BITS}-bit codes, "
                             f"(n, {HASH_BITS // 8}) uint8 (memaudit.adapters.images.{method}), "
                             f"got shape {codes.shape} and dtype {codes.dtype}")
        return np.ascontiguousarray(codes), None
    if method == "tiled_l2":
        shape = tuple(np.shape(x))[1:]
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
            raise ValueError(f"{name}: method 'tiled_l2' compares images (n, H, W) or (n, H, W, C) "
                             f"with pixels in [0, 1] (other layouts: memaudit.image_duplicates), "
                             f"got shape {(np.shape(x)[0],) + shape}")
        rows = as_2d_array(x, name)
        hwc = shape if len(shape) == 3 else shape + (1,)

        def prep(block, offset):
            return np.ascontiguousarray(block, dtype=np.float32)

        return rows, (hwc, prep)
    return as_2d_array(x, name), None


class DuplicatesProbe(Probe):
    """Which samples copy which reference (training) items, and how many more than held-out data.

    ``fit(reference)`` keeps the training set in the representation ``method`` compares (see the
    module docstring: feature vectors for ``"embedding"``, keys, hash codes or [0, 1] images for
    the others); ``score(samples, holdout=...)`` matches the samples, and the held-out items
    through the same matcher, and returns the copy rate beside its control.

    Parameters
    ----------
    method : {"exact", "phash", "dhash", "embedding", "tiled_l2"}, default="embedding"
    threshold : int or float, optional
        Default and range per method in :data:`DEFAULTS` (:func:`check_threshold`).
    index : {"exact", "ivf"}, default="exact"
        Embedding only: exact range search, or k-means cells (``nlist`` cells, default sqrt(n);
        ``nprobe`` scanned per query) with the recall measured on ``recall_sample`` queries.
    nlist, nprobe, recall_sample : int
    n_bootstrap, confidence, seed : int, float, int
        Intervals of the rates (defaults: :class:`memaudit.stats.StatsConfig`), streams from
        ``SeedSequence(seed).spawn(3)``; ``seed`` also seeds the ivf cells and recall sample.
    progress : bool or None

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(200, 32))
    >>> samples = np.vstack([rng.normal(size=(9, 32)), train[5:6]])
    >>> res = DuplicatesProbe(threshold=0.99).fit(train).score(samples, holdout=rng.normal(size=(50, 32)))
    >>> res.samples.pairs.tolist(), res.rate.count, res.control_rate.count
    ([[9, 5]], 1, 0)
    """

    def __init__(self, *, method: str = "embedding", threshold=None, index: str = "exact",
                 nlist: int | None = None, nprobe: int = NPROBE,
                 recall_sample: int = RECALL_SAMPLE, n_bootstrap: int = StatsConfig.n_bootstrap,
                 confidence: float = StatsConfig.confidence, seed: int = StatsConfig.seed,
                 progress=None):
        self.method = method
        self.threshold = threshold
        self.index = index
        self.nlist = nlist
        self.nprobe = nprobe
        self.recall_sample = recall_sample
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.seed = seed
        self.progress = progress

    def fit(self, reference, ids=None) -> "DuplicatesProbe":
        """Check the settings and keep the reference (training) set.

        Parameters
        ----------
        reference : array-like of shape (n_reference, ...)
            What ``method`` compares (see the module docstring).
        ids : array-like of shape (n_reference,), optional
        """
        self.threshold_, self.threshold_source_ = check_threshold(self.method, self.threshold)
        check_index(self.method, self.index)
        StatsConfig(self.n_bootstrap, self.confidence, self.seed)  # one-line errors
        self.reference_, self.tiles_ = _as_compared(reference, self.method, "reference")
        self.reference_ids_ = check_ids(ids, self.reference_.shape[0], "reference ids")
        return self

    def _match(self, x, ids, name):
        q, tiles = _as_compared(x, self.method, name)
        if q.shape[1:] != self.reference_.shape[1:]:
            raise ValueError(f"{name} have shape {q.shape[1:]} per item but the reference has "
                             f"{self.reference_.shape[1:]}")
        if tiles is not None:
            if tiles[0] != self.tiles_[0]:
                raise ValueError(f"{name} are images of shape {tiles[0]} but the reference images "
                                 f"are {self.tiles_[0]}")
            tiles = (tiles[0], (tiles[1], self.tiles_[1]), "[0, 1]")
        return match_sets(q, self.reference_, self.method, self.threshold_,
                          self.threshold_source_, True, check_ids(ids, q.shape[0], f"{name} ids"),
                          self.reference_ids_, index=self.index, nlist=self.nlist,
                          nprobe=self.nprobe, recall_sample=self.recall_sample, seed=self.seed,
                          progress=self.progress, names=(name, "reference"), tiles=tiles)

    def score(self, samples, ids=None, *, holdout=None, holdout_ids=None) -> CopyRateResult:
        """Match the samples (and the held-out items, the control) against the reference.

        Parameters
        ----------
        samples : array-like of shape (n_samples, ...)
        ids : array-like, optional
        holdout : array-like, optional
            Held-out real items through the same matcher: the control of the copy rate.
        holdout_ids : array-like, optional

        Returns
        -------
        CopyRateResult
        """
        self._check_fitted()
        res_s = self._match(samples, ids, "samples")
        res_h = None if holdout is None else self._match(holdout, holdout_ids, "holdout")
        return copy_rates(res_s, res_h, n_bootstrap=self.n_bootstrap, confidence=self.confidence,
                          seed=self.seed)
