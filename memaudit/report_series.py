"""subsequences.json and a self-contained subsequences.html: generated windows beside the training
stretches they match, drawn over each other (z-normalised when the search was)."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .probes.subsequence import CONSTANT_RULE, CONSTANT_RULE_RAW, TIE_RULE
from .report import _CSS, _fmt_rate, gate_paragraph, write_json_html
from .results import jsonable

__all__ = ["write_subsequence_report", "overlay_svg"]


def _z(x):
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1), 0.0)


def overlay_svg(generated: np.ndarray, training: np.ndarray, normalize: bool, width: int = 260,
                height: int = 90) -> str:
    """An inline SVG: the generated window (red) over the matched training stretch (black)."""
    g, t = np.asarray(generated, float), np.asarray(training, float)
    if g.ndim == 1:
        g, t = g[:, None], t[:, None]
    if normalize:
        g, t = _z(g), _z(t)
    lo, hi = min(g.min(), t.min()), max(g.max(), t.max())
    span = hi - lo if hi > lo else 1.0
    xs = np.linspace(4, width - 4, g.shape[0])

    def path(v, color, dash=""):
        ys = height - 4 - (v - lo) / span * (height - 8)
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        return (f'<polyline fill="none" stroke="{color}" stroke-width="1.3" {dash}'
                f'points="{pts}"/>')

    lines = []
    for c in range(g.shape[1]):
        lines.append(path(t[:, c], "#222"))
        lines.append(path(g[:, c], "#c0392b", 'stroke-dasharray="3,2" '))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'style="background:#fafafa;border:1px solid #eee">{"".join(lines)}</svg>')


def _windows_html(res, samples, train, train_ids, sample_ids, k: int = 12) -> str:
    order = np.argsort(np.nan_to_num(res.ratio, nan=np.inf), kind="stable")
    order = order[res.evaluable[order]][:k]  # windows without a match are not drawn
    L = res.length
    cells = []
    for i in order:
        qs, qo = int(res.query_series[i]), int(res.query_offset[i])
        ms, mo = int(res.match_series[i]), int(res.match_offset[i])
        svg = overlay_svg(samples[qs][qo : qo + L], train[ms][mo : mo + L], res.normalize)
        cls = "pair flag" if res.memorized[i] else "pair"
        cells.append(
            f'<div class="{cls}" style="width:270px">{svg}<br>'
            f"generated <code>{html.escape(str(sample_ids[qs]))}@{qo}</code><br>"
            f"training <code>{html.escape(str(train_ids[ms]))}@{mo}</code><br>"
            f"d1 = {res.d1[i]:.3g}, d2 = {res.d2[i]:.3g}, ratio = {res.ratio[i]:.3f}"
            f"{' <b>memorized</b>' if res.memorized[i] else ''}</div>")
    return f'<div class="pairs">{"".join(cells)}</div>'


def write_subsequence_report(out_dir, result, samples, train, *, train_ids, sample_ids,
                             inputs: dict, config: dict, versions: dict,
                             elapsed: float = 0.0, gate: dict | None = None) -> dict:
    """Write subsequences.json and subsequences.html into ``out_dir`` (atomically).

    ``samples`` and ``train`` are the validated series lists (length_i, channels) the result was
    computed on; the HTML draws the lowest-ratio generated windows over their training matches.
    """
    out = Path(out_dir)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = jsonable({
        "schema": "memaudit.subsequences", "schema_version": "1.0", "created": created,
        "seed": config.get("seed"), "config": config, "versions": versions, "inputs": inputs,
        "elapsed_seconds": round(elapsed, 3), "gate": gate, "result": result.to_dict(),
    })
    esc = html.escape
    d = data["result"]
    mode = "z-normalised" if result.normalize else "raw"
    rows = [("memorized windows (d1/d2 &lt; %.3g)" % result.threshold, _fmt_rate(d["window_rate"])),
            ("generated series with a memorized window", _fmt_rate(d["series_rate"]))]
    if result.n_not_evaluable:
        rows.append(("constant windows, not evaluable under z-normalisation (not in the rates)",
                     f"{result.n_not_evaluable} of {result.d1.size}"))
    if d["match_rate"]:
        rows.append((f"windows within {result.max_distance:g} of a training stretch",
                     _fmt_rate(d["match_rate"])))
    if d["control"]:
        rows.append(("held-out series with a memorized window (control)",
                     _fmt_rate(d["control"]["series_rate"])))
        rows.append(("excess over control", _fmt_rate(d["excess"])))
    table = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows)
    skipped = ", ".join(str(s) for s in result.skipped) or "none"
    flat = ", ".join(str(s) for s in result.not_evaluable) or "none"
    if result.stride == 1:
        stride = ("every window (stride 1, the default): a replayed stretch of "
                  f"{result.length} steps or more is compared whole at any offset")
    else:
        stride = (f"a window every {result.stride} steps (the default, 1, compares every window): "
                  f"only replays of {result.length + result.stride - 1} steps or more are sure to "
                  "contain a compared window")
    constant = CONSTANT_RULE if result.normalize else CONSTANT_RULE_RAW
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>memaudit subsequences</title>
<style>{_CSS}</style></head><body>
<h1>memaudit: do generated series replay training stretches?</h1>
<p><small>{esc(created)} &middot; memaudit {esc(str(versions.get('memaudit')))} &middot;
seed {config.get('seed')} &middot; {elapsed:.1f} s</small></p>
<p>Windows of {result.length} steps of {result.n_series} generated series, {esc(stride)}, against
every window of every training series, {mode} Euclidean distance (exact: float64 distances and the
true nearest stretches). d1: nearest training stretch; d2: nearest stretch that does not start
within {result.exclusion_zone} steps of the first in the same series. A window is memorized when
d1/d2 &lt; {result.threshold:.3g}. Intervals of window rates resample whole series (overlapping
windows are not independent).</p>
<p>Ties: {esc(TIE_RULE)}. Constant windows: {esc(constant)}.</p>
<table>{table}</table>
{gate_paragraph(gate)}
<h2>Closest generated windows (red, dashed) over their training matches (black)</h2>
{_windows_html(result, samples, train, train_ids, sample_ids)}
<h2>Inputs</h2>
<pre>{esc(json.dumps(data['inputs'], indent=2))}</pre>
<p>Generated series too short for one window (not scored, listed): {esc(skipped)}</p>
<p>Generated series whose every window is constant (not evaluable under z-normalisation, not
counted): {esc(flat)}</p>
<details><summary>Resolved configuration</summary><pre>{esc(json.dumps(config, indent=2))}</pre></details>
<details><summary>Package versions</summary><pre>{esc(json.dumps(versions, indent=2))}</pre></details>
</body></html>
"""
    return write_json_html(out, "subsequences", data, page)
