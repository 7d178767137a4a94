"""The nearest-neighbour-ratio section: headline rates, the d1/d2 histogram, the gallery of the
closest pairs and the flagged samples."""

from __future__ import annotations

import numpy as np

from ..results import jsonable
from .html import display_range, esc, figure, fmt_rate

__all__ = ["gallery", "nn_ratio_html"]


def gallery(res, n: int) -> list[dict]:
    """The ``n`` samples with the smallest ratio and their nearest training items."""
    return [{"sample_index": int(i), "sample_id": jsonable(res.sample_ids[i]),
             "nn_index": int(res.nn_index[i]), "nn_id": jsonable(res.nn_id[i]),
             "nn2_index": int(res.nn2_index[i]), "d1": float(res.d1[i]), "d2": float(res.d2[i]),
             "ratio": float(res.ratio[i]), "memorized": bool(res.memorized[i])}
            for i in res.closest_pairs(n)]


def _headline(nr: dict) -> str:
    rows = [("Memorized fraction f<sub>mem</sub> (d1/d2 &lt; k)", fmt_rate(nr["rate"]))]
    if nr["control"] is not None:
        rows.append(("Held-out control, same probe", fmt_rate(nr["control"]["rate"])))
        rows.append(("<b>Excess over control</b>", fmt_rate(nr["excess_over_control"])))
    if nr["closer_to_train_than_holdout"] is not None:
        c = nr["closer_to_train_than_holdout"]
        rows.append(
            (f"Samples closer to train than to held-out (expected {100 * c['expected']:.1f}% "
             "without memorization)",
             fmt_rate(c) + f" <small>{c['n_train']} training vs {c['n_holdout']} held-out items</small>"))
    if nr["carlini"] is not None:
        c = nr["carlini"]
        rows.append((f"Carlini et al. relative criterion (&alpha; = {c['alpha']:g}, "
                     f"{c['n_nearest']} nearest)", fmt_rate(c["rate"])))
        if nr["control"] is not None and nr["control"]["carlini"] is not None:
            rows.append(("&nbsp;&nbsp;same criterion on the held-out control",
                         fmt_rate(nr["control"]["carlini"]["rate"])))
    rows.append(("Exact copies (d1 = 0)", str(nr["n_exact_copies"])))
    return "<table>" + "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows) + "</table>"


def _gallery_html(items: list[dict], train, samples) -> str:
    from ..adapters.images import image_layout, png_data_uri, to_display

    if train is None or samples is None or not items:
        return ""
    if image_layout(samples.item_shape) is None or image_layout(train.item_shape) is None:
        return "<p><small>Items are not images; no gallery.</small></p>"
    s_rows = np.asarray(samples.x[[g["sample_index"] for g in items]], dtype=np.float64)
    t_rows = np.asarray(train.x[[g["nn_index"] for g in items]], dtype=np.float64)
    lo, hi = display_range(samples, train)
    cells = []
    for g, a, b in zip(items, to_display(s_rows, samples.item_shape, lo, hi),
                       to_display(t_rows, train.item_shape, lo, hi)):
        flag = " flag" if g["memorized"] else ""
        cells.append(
            f'<div class="pair{flag}"><img src="{png_data_uri(a)}" alt="sample"> '
            f'<img src="{png_data_uri(b)}" alt="nearest training item"><br>'
            f'sample <code>{esc(str(g["sample_id"]))}</code><br>'
            f'train <code>{esc(str(g["nn_id"]))}</code><br>'
            f'd1/d2 = {g["ratio"]:.3f}{" &mdash; <b>memorized</b>" if g["memorized"] else ""}</div>')
    return ("<h2>Closest generated / training pairs</h2>"
            "<p>Left: generated sample; right: its nearest training item (same intensity scale). "
            f'Red frames are flagged as memorized.</p><div class="pairs">{"".join(cells)}</div>')


def _flagged_html(res, limit: int = 100) -> str:
    flagged = res.flagged()[:limit]
    if not flagged.size:
        return "<h2>Flagged samples</h2><p>No sample is flagged.</p>"
    rows = "".join(
        f"<tr><td class='num'>{i}</td><td><code>{esc(str(res.sample_ids[i]))}</code></td>"
        f"<td><code>{esc(str(res.nn_id[i]))}</code></td><td class='num'>{res.d1[i]:.4g}</td>"
        f"<td class='num'>{res.d2[i]:.4g}</td><td class='num'>{res.ratio[i]:.4f}</td></tr>"
        for i in flagged)
    n = int(res.memorized.sum())
    more = (f"<p><small>First {limit} of {n}; all are in report.json.</small></p>"
            if n > limit else "")
    return ("<h2>Flagged samples</h2><table><tr><th>#</th><th>sample id</th><th>nearest training "
            f"id</th><th>d1</th><th>d2</th><th>d1/d2</th></tr>{rows}</table>{more}")


def nn_ratio_html(res, nr: dict, items: list[dict], datasets: dict) -> str:
    """The section of an :class:`~memaudit.probes.nn_ratio.NNRatioResult`.

    ``nr`` is its ``to_dict()``, ``items`` the gallery (:func:`gallery`), ``datasets`` the loaded
    sets (``train``, ``samples``) whose images the gallery shows.
    """
    return f"""<h2>Headline</h2>
{_headline(nr)}
<p><small>A sample is memorized when its nearest training item is closer than k = {nr['threshold']:.4g}
times its second-nearest (d1/d2 &lt; k, {esc(nr['metric'])} distance; {esc(nr['threshold_source'])}).
The control is real held-out data through the same probe: its rate is the floor that
near-duplicates in the data distribution alone produce. Intervals: {esc(nr['rate'].get('score_method') or '')}
score interval first, then the {esc(nr['rate']['method'])}.</small></p>
<h2>Distribution of d1/d2</h2>
{figure(res.plot)}
{_gallery_html(items, datasets.get('train'), datasets.get('samples'))}
{_flagged_html(res)}"""
