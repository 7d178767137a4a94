"""Duplicate and copy sections (a :class:`~memaudit.probes.duplicates.DuplicateResult`, the copy
rate beside its control) and duplicates.json / duplicates.html for ``memaudit duplicates``."""

from __future__ import annotations

from .document import document, write_json_html
from .html import display_range, esc, figure, page, thumbs

__all__ = ["TITLES", "copy_rate_html", "duplicates_html", "duplicates_sections",
           "write_duplicates_report"]

# the searches a duplicates section holds, and which set queries the training set in each
TITLES = {"train": "Inside the training set", "samples": "Inside the samples",
          "samples_vs_train": "Samples that copy training items",
          "holdout_vs_train": "Held-out items that match training items (the control)"}
_QUERIES = {"samples_vs_train": "samples", "holdout_vs_train": "holdout"}


def _pairs_table(res, queries, other, lo, hi, max_pairs: int) -> str:
    from ..probes.duplicates import PAIRS_LISTED

    head = ("<tr><th>sample</th><th>training item</th>" if res.cross
            else "<tr><th>item</th><th>item</th>") + f"<th>{res.score_name}</th></tr>"
    rows = "".join(
        f"<tr><td>{thumbs(queries, [i], lo, hi)}<br><small>position {i}</small></td>"
        f"<td>{thumbs(other, [j], lo, hi)}<br><small>position {j}</small></td>"
        f"<td class='num'>{score:.4g}</td></tr>"
        for (i, j), score in zip(res.pairs[:max_pairs].tolist(), res.scores[:max_pairs]))
    more = res.n_pairs - min(max_pairs, res.n_pairs)
    tail = (f"<p><small>{more} more pair(s); the JSON lists the closest "
            f"{min(res.n_pairs, PAIRS_LISTED)} of {res.n_pairs}.</small></p>" if more else "")
    return f"<h3>Closest pairs</h3><table>{head}{rows}</table>{tail}"


def _group_html(res, k, g, queries, reference, lo, hi, max_members) -> str:
    limit = res.components.get("limit")
    size = sum(len(v) for v in g.values())
    cap = 4 if limit is not None and size > limit else max_members
    if res.cross:
        q, r = list(g["queries"][:cap]), list(g["reference"][:cap])
        shown = (f" (far larger than copies form: {cap} of each shown, all in the JSON)"
                 if cap < max_members else "")
        return (f'<div class="group"><b>group {k + 1}</b>: {len(g["queries"])} sample(s) '
                f'&harr; {len(g["reference"])} training item(s){shown}<br>samples: '
                f'{thumbs(queries, q, lo, hi)}<br>training: {thumbs(reference, r, lo, hi)}</div>')
    m = list(g["members"][:cap])
    more = ""
    if len(g["members"]) > cap:
        more = (f" (far larger than copies form: {cap} shown, all in the JSON)"
                if cap < max_members else f" (first {cap} shown)")
    return (f'<div class="group"><b>group {k + 1}</b>: {len(g["members"])} items{more}<br>'
            f'{thumbs(queries, m, lo, hi)}</div>')


def duplicates_html(res, queries, reference=None, max_groups: int = 8, max_members: int = 8,
                    max_pairs: int = 20) -> str:
    """HTML of a duplicates result: its summary and notes (warnings first), the histogram of the
    matched pairs' scores with the threshold, a table of the closest pairs (``max_pairs``, the
    rest in the JSON) and the largest groups as galleries; a group far larger than copies form
    shows only a few members."""
    lines = res.summary().split("\n")
    parts = [f"<p>{esc(lines[0])}</p>"]
    for note in res.notes:
        parts.append(f'<p class="note">{esc(note)}</p>' if note.startswith("warning:")
                     else f"<p><small>{esc(note)}</small></p>")
    lo, hi = display_range(queries, reference)
    if res.n_pairs:
        if res.method != "exact":  # exact pairs all sit at distance 0: nothing to draw
            parts.append(figure(res.plot, figsize=(6.4, 2.8)))
        parts.append(_pairs_table(res, queries, reference if res.cross else queries, lo, hi,
                                  max_pairs))
    if not res.groups:
        parts.append("<p>No group found.</p>")
    parts += [_group_html(res, k, g, queries, reference, lo, hi, max_members)
              for k, g in enumerate(res.groups[:max_groups])]
    if len(res.groups) > max_groups:
        parts.append(f"<p><small>{len(res.groups) - max_groups} more groups in the JSON "
                     "report.</small></p>")
    return "".join(parts)


def duplicates_sections(results: dict, datasets: dict, level: int = 2) -> str:
    """One titled section per search in ``results`` (keys as in :data:`TITLES`)."""
    out = []
    for key, res in results.items():
        if key in _QUERIES:
            body = duplicates_html(res, datasets.get(_QUERIES[key]), datasets.get("train"))
        else:
            body = duplicates_html(res, datasets.get(key))
        out.append(f"<h{level}>{TITLES.get(key, esc(key))}</h{level}>{body}")
    return "".join(out)


def copy_rate_html(control) -> str:
    """The copy rate, its held-out control and the excess (``memaudit duplicates --holdout``)."""
    def row(label, r, sign=""):
        count = "" if r.count is None else f"{r.count} / {r.n}"
        wilson = "" if r.wilson is None else f"[{100 * r.wilson[0]:.2f}%, {100 * r.wilson[1]:.2f}%]"
        return (f"<tr><td>{label}</td><td class='num'>{100 * r.value:{sign}.2f}%</td>"
                f"<td class='num'>{count}</td><td class='num'>[{100 * r.low:.2f}%, "
                f"{100 * r.high:.2f}%]</td><td class='num'>{wilson}</td></tr>")

    pct = int(round(100 * control.rate.confidence))
    parts = ["<h2>Copy rate and its held-out control</h2>",
             "<p>Share of items that match at least one training item, through the same matcher: "
             "generated samples, and held-out real items the model never saw (the control: what "
             "near-twins in the data alone produce). The excess is the difference.</p>",
             f"<table><tr><th></th><th>rate</th><th>count</th><th>{pct}% bootstrap</th>"
             f"<th>{pct}% Wilson</th></tr>",
             row("samples", control.rate), row("held-out control", control.control_rate),
             row("excess over control", control.excess, "+"), "</table>",
             f"<p>{esc(control.summary())}</p>"]
    if control.samples.n_pairs or control.control.n_pairs:
        parts.append(figure(control.plot, figsize=(6.4, 2.8)))
    by = control.by_threshold
    if by is not None:
        cells = "".join(f"<tr><td class='num'>{d}</td><td class='num'>{100 * a:.2f}%</td>"
                        f"<td class='num'>{100 * b:.2f}%</td></tr>"
                        for d, a, b in zip(by["threshold"], by["samples"], by["holdout"]))
        parts.append("<details><summary>Matched share by Hamming distance</summary><table><tr><th>"
                     f"distance at most</th><th>samples</th><th>held-out</th></tr>{cells}</table>"
                     "</details>")
    return "".join(parts)


def write_duplicates_report(out_dir, results: dict, datasets: dict, config: dict,
                            versions: dict, elapsed: float = 0.0, control=None, *,
                            gate: dict | None = None, notes=(), space: str | None = None) -> dict:
    """Write duplicates.json and duplicates.html for ``memaudit duplicates`` (atomically).

    Parameters
    ----------
    results : dict of str to DuplicateResult
        The searches, keyed as in :data:`TITLES` (``train``, ``samples_vs_train``, ...).
    datasets : dict of str to Dataset
        The loaded sets (``train``, ``samples``, ``holdout``; None where not given): their
        descriptions go under ``inputs`` and their images into the thumbnails.
    control : CopyRateResult, optional
        From ``--holdout``: the copy rate beside its held-out control (section ``copy_rate``).
    gate, notes, space
        As in :func:`memaudit.report.document.document`.

    Returns
    -------
    dict
        ``{"json": path, "html": path}``.
    """
    data = document("duplicates",
                    {"duplicates": {k: v.to_dict() for k, v in results.items()},
                     "copy_rate": None if control is None else control.to_dict()},
                    config=config, versions=versions, elapsed=elapsed, gate=gate, notes=notes,
                    space=space, inputs={k: v.describe() for k, v in datasets.items()
                                         if v is not None})
    body = ("" if control is None else copy_rate_html(control)) + duplicates_sections(results,
                                                                                      datasets)
    return write_json_html(out_dir, "duplicates", data,
                           page(data, "memaudit: duplicates and copies", body))
