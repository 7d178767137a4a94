"""Duplicate groups of the duplicates probe: matches as graph edges, groups as its components.

A chain of near-copies ends up in one group (scipy.sparse.csgraph connected components). A group
far larger than copies form (:func:`component_limit`) means the threshold joins unrelated items:
:func:`component_check` records the largest group (per threshold for hashes) and the loosest
threshold whose groups stay at the copy scale, and :func:`component_warning` words it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["component_limit", "duplicate_groups", "best_first", "component_check", "component_warning",
           "largest_group", "HASH_METHODS"]

HASH_METHODS = ("phash", "dhash")


def component_limit(n_nodes: int) -> int:
    """Largest group size expected from copies: ``max(10, ceil(1% of the items in the graph))``.

    A planted or real copy joins an original and a few copies; a connected component larger than
    this means the threshold chains unrelated items together.
    """
    return max(10, math.ceil(0.01 * n_nodes))


def _graph(pairs, n_q, n_r, cross):
    n = n_q + n_r if cross else n_q
    b = pairs[:, 1] + (n_q if cross else 0)
    return coo_matrix((np.ones(len(pairs)), (pairs[:, 0], b)), shape=(n, n))


def _labels(pairs, n_q, n_r, cross):
    return connected_components(_graph(pairs, n_q, n_r, cross), directed=False)[1]


def largest_group(pairs, n_q, n_r, cross) -> int:
    if len(pairs) == 0:
        return 1 if (n_q + n_r) else 0
    return int(np.bincount(_labels(pairs, n_q, n_r, cross)).max())


def duplicate_groups(pairs, n_q, n_r, cross):
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


def best_first(pairs, scores, method):
    key = -scores if method == "embedding" else scores
    order = np.lexsort((pairs[:, 1], pairs[:, 0], key))
    return pairs[order], scores[order]


def component_check(method, thr, pairs, scores, n_q, n_r, cross, largest):
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
        return largest_group(pairs[better <= cut], n_q, n_r, cross)

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


def component_warning(method, thr, check):
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
