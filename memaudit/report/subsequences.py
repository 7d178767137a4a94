"""The subsequence section (generated windows drawn over the training stretches they match,
z-normalised when the search was) and subsequences.json / subsequences.html."""

from __future__ import annotations

import numpy as np

from ..figures import series_overlay
from .document import document, write_json_html
from .html import esc, figure, fmt_rate, page

__all__ = ["subsequence_html", "write_subsequence_report"]


def _windows_html(res, samples, train, train_ids, sample_ids, k: int = 12) -> str:
    order = np.argsort(np.nan_to_num(res.ratio, nan=np.inf), kind="stable")
    order = order[res.evaluable[order]][:k]  # windows without a match are not drawn
    L = res.length
    cells = []
    for i in order:
        qs, qo = int(res.query_series[i]), int(res.query_offset[i])
        ms, mo = int(res.match_series[i]), int(res.match_offset[i])
        svg = figure(series_overlay, samples[qs][qo : qo + L], train[ms][mo : mo + L],
                     normalize=res.normalize, figsize=(3.25, 1.7),
                     margins=(0.66, 0.42, 0.1, 0.08))
        cls = "pair wide flag" if res.memorized[i] else "pair wide"
        cells.append(
            f'<div class="{cls}">{svg}'
            f"generated <code>{esc(str(sample_ids[qs]))}@{qo}</code><br>"
            f"training <code>{esc(str(train_ids[ms]))}@{mo}</code><br>"
            f"d1 = {res.d1[i]:.3g}, d2 = {res.d2[i]:.3g}, ratio = {res.ratio[i]:.3f}"
            f"{' <b>memorized</b>' if res.memorized[i] else ''}</div>")
    return f'<div class="pairs">{"".join(cells)}</div>'


def _rates_table(result, d: dict) -> str:
    rows = [("memorized windows (d1/d2 &lt; %.3g)" % result.threshold, fmt_rate(d["window_rate"])),
            ("generated series with a memorized window", fmt_rate(d["series_rate"]))]
    if result.n_not_evaluable:
        rows.append(("constant windows, not evaluable under z-normalisation (not in the rates)",
                     f"{result.n_not_evaluable} of {result.d1.size}"))
    if d["match_rate"]:
        rows.append((f"windows within {result.max_distance:g} of a training stretch",
                     fmt_rate(d["match_rate"])))
    if d["control"]:
        rows.append(("held-out series with a memorized window (control)",
                     fmt_rate(d["control"]["series_rate"])))
        rows.append(("excess over control", fmt_rate(d["excess"])))
    return "<table>" + "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows) + "</table>"


def subsequence_html(result, d: dict, samples, train, *, train_ids, sample_ids) -> str:
    """The section of a :class:`~memaudit.probes.subsequence.SubsequenceResult` (``d``: its
    ``to_dict()``), with the lowest-ratio windows drawn over their matches."""
    from ..probes.subsequence import CONSTANT_RULE, CONSTANT_RULE_RAW, TIE_RULE

    mode = "z-normalised" if result.normalize else "raw"
    if result.stride == 1:
        stride = ("every window (stride 1, the default): a replayed stretch of "
                  f"{result.length} steps or more is compared whole at any offset")
    else:
        stride = (f"a window every {result.stride} steps (the default, 1, compares every window): "
                  f"only replays of {result.length + result.stride - 1} steps or more are sure to "
                  "contain a compared window")
    constant = CONSTANT_RULE if result.normalize else CONSTANT_RULE_RAW
    skipped = ", ".join(str(s) for s in result.skipped) or "none"
    flat = ", ".join(str(s) for s in result.not_evaluable) or "none"
    return f"""<p>Windows of {result.length} steps of {result.n_series} generated series, {esc(stride)}, against
every window of every training series, {mode} Euclidean distance (exact: float64 distances and the
true nearest stretches). d1: nearest training stretch; d2: nearest stretch that does not start
within {result.exclusion_zone} steps of the first in the same series. A window is memorized when
d1/d2 &lt; {result.threshold:.3g}. Intervals of window rates resample whole series (overlapping
windows are not independent).</p>
<p>Ties: {esc(TIE_RULE)}. Constant windows: {esc(constant)}.</p>
{_rates_table(result, d)}
<h2>Distribution of d1/d2 over the windows</h2>
{figure(result.plot)}
<h2>Closest generated windows (red, dashed) over their training matches (black)</h2>
{_windows_html(result, samples, train, train_ids, sample_ids)}
<p>Generated series too short for one window (not scored, listed): {esc(skipped)}</p>
<p>Generated series whose every window is constant (not evaluable under z-normalisation, not
counted): {esc(flat)}</p>"""


def write_subsequence_report(out_dir, result, samples, train, *, train_ids, sample_ids,
                             inputs: dict, config: dict, versions: dict,
                             elapsed: float = 0.0, gate: dict | None = None, notes=()) -> dict:
    """Write subsequences.json and subsequences.html into ``out_dir`` (atomically).

    ``samples`` and ``train`` are the validated series lists (length_i, channels) the result was
    computed on; the HTML draws the lowest-ratio generated windows over their training matches.
    ``gate`` and ``notes`` are as in :func:`memaudit.report.document.document`.

    Returns
    -------
    dict
        ``{"json": path, "html": path}``.
    """
    space = (f"windows of {result.length} steps, "
             f"{'z-normalised' if result.normalize else 'raw values'}, Euclidean distance")
    data = document("subsequences", {"subsequences": result.to_dict()}, config=config,
                    versions=versions, inputs=inputs, elapsed=elapsed, gate=gate, notes=notes,
                    space=space)
    body = subsequence_html(result, data["sections"]["subsequences"], samples, train,
                            train_ids=train_ids, sample_ids=sample_ids)
    return write_json_html(out_dir, "subsequences", data,
                           page(data, "memaudit: do generated series replay training stretches?",
                                body))
