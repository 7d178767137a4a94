"""The one HTML page skeleton and stylesheet of every report, and the pieces renderers share
(rates, the gate's verdict, input tables, thumbnails, embedded figures)."""

from __future__ import annotations

import html
import json

import numpy as np

from ..gate import verdict_line
from ..results import rate_text

__all__ = ["CSS", "figure", "fmt_rate", "gate_paragraph", "page", "thumbs"]

esc = html.escape

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;
border-bottom:1px solid #eee;text-align:left;vertical-align:top}th{background:#f6f6f6}
.num{text-align:right;font-variant-numeric:tabular-nums}.note{background:#fff7d6;border:1px solid
#e8d48a;padding:.6em 1em;border-radius:4px}.pass{color:#17692c;font-weight:bold}.fail{color:#a31515;
font-weight:bold}.verdict{font-size:1.1em}.pairs{display:flex;flex-wrap:wrap;gap:12px}
.pair{border:1px solid #ddd;border-radius:4px;padding:6px;font-size:.8em;width:170px}
.pair.flag{border-color:#a31515;background:#fff2f2}.pair img{image-rendering:pixelated;width:80px;
height:80px}.pair.wide{width:300px}code{font-size:.9em}details{margin:.5em 0}small{color:#666}
.group{display:inline-block;vertical-align:top;border:1px solid #ddd;border-radius:4px;padding:6px;
margin:6px 0}.thumb{display:inline-block;text-align:center;margin:3px;font-size:.7em;
vertical-align:top}.thumb img{image-rendering:pixelated;width:48px;height:48px}
figure.plot{margin:.5em 0}figure.plot svg{max-width:100%;height:auto}
.side{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
"""


def fmt_rate(d: dict | None) -> str:
    """A rate as in its text summary (``rate_text``): the score interval, then the bootstrap."""
    if not d:
        return "&ndash;"
    head, tail = rate_text(d)
    return f"{esc(head)} <small>{esc(tail)}</small>"


def gate_paragraph(g: dict | None) -> str:
    """The gate's verdict as an HTML paragraph (empty without a gate)."""
    if g is None:
        return ""
    verdict = '<span class="pass">PASS</span>' if g["passed"] else '<span class="fail">FAIL</span>'
    text = (f'<p class="verdict">Gate: {verdict} &mdash; '
            f"{esc(verdict_line(g).split(' (', 1)[1][:-1])}")
    if g.get("reason"):
        text += f" ({esc(g['reason'])})"
    return text + "</p>"


def figure(draw, *args, figsize=(6.4, 3.2), margins=(0.75, 0.6, 0.2, 0.15), **kwargs) -> str:
    """A :mod:`memaudit.figures` function's figure (or a result's ``plot``) as an inline SVG in a
    ``<figure>`` (:func:`memaudit.figures.to_svg`; ``margins`` in inches)."""
    from ..figures import to_svg

    svg = to_svg(draw, *args, figsize=figsize, margins=margins, **kwargs)
    return f'<figure class="plot">{svg}</figure>'


def display_range(*sets, n: int = 2000) -> tuple[float, float]:
    """One intensity scale for thumbnails of ``sets`` (0.5 and 99.5 percentiles of their values)."""
    sets = [ds for ds in sets if ds is not None]
    if not sets:
        return 0.0, 1.0
    vals = np.concatenate([np.asarray(ds.x[: min(len(ds), n)], dtype=np.float64).ravel()
                           for ds in sets])
    return float(np.percentile(vals, 0.5)), float(np.percentile(vals, 99.5))


def thumbs(ds, positions, lo, hi) -> str:
    """Thumbnails (or, for items that are not images, ids) of ``ds``'s items at ``positions``."""
    from ..adapters.images import image_layout, png_data_uri, to_display

    positions = [int(i) for i in positions]
    if not positions:
        return ""
    if ds is None or image_layout(ds.item_shape) is None:
        names = [ds.ids[i] if ds is not None else i for i in positions]
        return ", ".join(f"<code>{esc(str(v))}</code>" for v in names)
    rows = np.asarray(ds.x[np.asarray(positions)], dtype=np.float64)
    imgs = to_display(rows, ds.item_shape, lo, hi)
    return "".join(
        f'<span class="thumb"><img src="{png_data_uri(im, 48)}" alt=""><br>'
        f'<code>{esc(str(ds.ids[i]))}</code></span>' for i, im in zip(positions, imgs)
    )


def _skipped(desc: dict) -> str:
    skipped = desc.get("skipped") or []
    if not skipped:
        return "none"
    items = "".join(f"<li><code>{esc(x['file'])}</code>: {esc(x['reason'])}</li>"
                    for x in skipped)
    return f"<b>{len(skipped)}</b><ul>{items}</ul>"


def _inputs_table(inputs: dict) -> str:
    """Every input set: source, size, shape, dtype, how its values were read, skipped files."""
    def size(v):
        if "n_items" in v:
            return str(v["n_items"])
        return "" if "n_series" not in v else f"{v['n_series']} series"

    def shape(v):
        if "item_shape" in v:
            return esc(str(tuple(v["item_shape"])))
        if "lengths" in v:
            return f"{v['lengths'][0]}&ndash;{v['lengths'][1]} steps &times; {v['channels']}"
        return ""

    def read_as(v):
        conv = v.get("convention")
        return esc(conv["description"]) if conv else esc(str(v.get("format", "")))

    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(str(v['source']))}</td><td class='num'>{size(v)}</td>"
        f"<td>{shape(v)}</td><td>{esc(str(v.get('dtype', '')))}</td><td>{read_as(v)}</td>"
        f"<td>{_skipped(v)}</td></tr>" for k, v in inputs.items())
    return ("<table><tr><th>set</th><th>source</th><th>items</th><th>item shape</th><th>dtype</th>"
            f"<th>read as</th><th>skipped files</th></tr>{rows}</table>")


def where_searched(config: dict) -> str:
    """One line on where the searches ran, from ``config["cluster"]`` (memaudit.distributed's
    record), when they ran on a cluster or over a sharded set; "" otherwise."""
    rec = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(rec, dict):
        return ""
    shards = "; ".join(f"{name} in {v.get('n_shards')} shards ({v.get('source')})"
                       for name, v in (rec.get("shards") or {}).items())
    if rec.get("workers"):
        where = (f"on a Dask cluster ({rec.get('cluster')}: {rec['workers']} workers, "
                 f"{rec.get('threads')} threads)")
    else:
        where = "in this process, shard by shard"
    return (f"<p>Searched {esc(where)}{'; ' + esc(shards) if shards else ''}. The results do not "
            "depend on the cluster or the shards (the same as one search over the whole set).</p>")


def _key_table(d: dict) -> str:
    return "<table>" + "".join(
        f"<tr><td>{esc(str(k))}</td><td><code>{esc(json.dumps(v))}</code></td></tr>"
        for k, v in d.items()) + "</table>"


def page(data: dict, heading: str, body: str) -> str:
    """A whole self-contained report page around ``body``.

    The skeleton every report shares: the title, one line of provenance (time, memaudit version,
    schema, seed, wall time), the gate's verdict, the notes (warnings highlighted), which space was
    compared, the body, then the inputs, the resolved configuration and the package versions.
    ``data`` is the report's JSON (:func:`memaudit.report.document.document`).
    """
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in data["notes"])
    space = (f"<p>Compared in: <b>{esc(data['space'])}</b></p>" if data.get("space") else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(heading)}</title>
<style>{CSS}</style></head><body>
<h1>{esc(heading)}</h1>
<p><small>{esc(data['created'])} &middot; memaudit {esc(str(data['versions'].get('memaudit')))}
&middot; schema {esc(data['schema'])} {esc(data['schema_version'])} &middot; seed {data['seed']}
&middot; {data['elapsed_seconds']:.1f} s</small></p>
{gate_paragraph(data['gate'])}
{notes}
{space}
{body}
<h2>Inputs</h2>
{_inputs_table(data['inputs'])}
{where_searched(data['config'])}
<details><summary>Resolved configuration</summary>{_key_table(data['config'])}</details>
<details><summary>Package versions</summary>{_key_table(data['versions'])}</details>
</body></html>
"""
