"""report.json (versioned schema) and a self-contained report.html, written atomically."""

from __future__ import annotations

import html
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .io import atomic_write_pair, atomic_write_text, remove_stale_temporaries
from .adapters.pixels import image_layout, png_data_uri, to_display
from .gate import verdict_line
from .results import jsonable, rate_text

__all__ = ["Report", "SCHEMA_VERSION", "atomic_write_text", "write_json_html"]

SCHEMA = "memaudit.report"
SCHEMA_VERSION = "1.0"


@dataclass
class Report:
    """An audit's results, ready to be written as JSON and HTML."""

    config: dict
    versions: dict
    inputs: dict
    nn_ratio: object
    duplicates: dict | None = None
    membership: object = None
    tracking: object = None
    gate: dict | None = None
    notes: list = field(default_factory=list)
    elapsed: float = 0.0
    datasets: dict = field(default_factory=dict, repr=False)
    space: str = ""  # which space was compared: "pixels in [0, 1], 28x28 grayscale, L2 distance"
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def passed(self) -> bool:
        """False only when a gate was set and the gated rate is above it."""
        return self.gate is None or self.gate["passed"]

    def gallery(self) -> list[dict]:
        """The ``config['gallery']`` samples with the smallest ratio and their nearest items."""
        res = self.nn_ratio
        out = []
        for i in res.closest_pairs(int(self.config.get("gallery", 16))):
            out.append(
                {
                    "sample_index": int(i),
                    "sample_id": jsonable(res.sample_ids[i]),
                    "nn_index": int(res.nn_index[i]),
                    "nn_id": jsonable(res.nn_id[i]),
                    "nn2_index": int(res.nn2_index[i]),
                    "d1": float(res.d1[i]),
                    "d2": float(res.d2[i]),
                    "ratio": float(res.ratio[i]),
                    "memorized": bool(res.memorized[i]),
                }
            )
        return out

    def to_dict(self) -> dict:
        return jsonable(
            {
                "schema": SCHEMA,
                "schema_version": SCHEMA_VERSION,
                "created": self.created,
                "seed": self.config.get("seed"),
                "space": self.space,
                "config": self.config,
                "versions": self.versions,
                "inputs": self.inputs,
                "notes": self.notes,
                "gate": self.gate,
                "elapsed_seconds": round(self.elapsed, 3),
                "nn_ratio": self.nn_ratio.to_dict(per_sample=True),
                "duplicates": None if self.duplicates is None
                else {k: v.to_dict() for k, v in self.duplicates.items()},
                "membership": None if self.membership is None else self.membership.to_dict(),
                "tracking": None if self.tracking is None else self.tracking.to_dict(),
                "gallery": self.gallery(),
            }
        )

    def write(self, out_dir) -> dict:
        """Write report.json and report.html into ``out_dir`` (created if needed)."""
        out = Path(out_dir)
        data = self.to_dict()
        return write_json_html(out, "report", data, render_html(self, data))


def write_json_html(out_dir, stem: str, data: dict, page: str) -> dict:
    """Write ``stem``.json (strict JSON) and ``stem``.html into ``out_dir`` as one unit.

    Both files are written in full as temporaries before either is renamed (the JSON last), and
    both carry the same run id (the JSON's ``run_id``, the page's ``memaudit-run-id`` meta tag and
    footer): a pair whose ids differ was torn by a kill between the two renames. Temporaries left
    by killed runs in ``out_dir`` are removed first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    run_id = uuid.uuid4().hex
    data = {**data, "run_id": run_id}
    tag = f'<meta name="memaudit-run-id" content="{run_id}">'
    page = page.replace("<head>", "<head>" + tag, 1) if "<head>" in page else tag + page
    footer = f'<p><small>run id <code>{run_id}</code> (the same in {stem}.json)</small></p>'
    page = page.replace("</body>", footer + "</body>", 1) if "</body>" in page else page + footer
    paths = {"json": out / f"{stem}.json", "html": out / f"{stem}.html"}
    atomic_write_pair({paths["html"]: page,
                       paths["json"]: json.dumps(data, indent=2, allow_nan=False) + "\n"})
    return paths


# ----------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;
border-bottom:1px solid #eee;text-align:left;vertical-align:top}th{background:#f6f6f6}
.num{text-align:right;font-variant-numeric:tabular-nums}.note{background:#fff7d6;border:1px solid
#e8d48a;padding:.6em 1em;border-radius:4px}.pass{color:#17692c;font-weight:bold}.fail{color:#a31515;
font-weight:bold}.pairs{display:flex;flex-wrap:wrap;gap:12px}.pair{border:1px solid #ddd;
border-radius:4px;padding:6px;font-size:.8em;width:170px}.pair.flag{border-color:#a31515;
background:#fff2f2}.pair img{image-rendering:pixelated;width:80px;height:80px}code{font-size:.9em}
details{margin:.5em 0}small{color:#666}.group{display:inline-block;vertical-align:top;border:1px solid #ddd;border-radius:4px;
padding:6px;margin:6px 0}.thumb{display:inline-block;text-align:center;margin:3px;font-size:.7em;vertical-align:top}
.thumb img{image-rendering:pixelated;width:48px;height:48px}
"""


def _skipped_html(desc: dict) -> str:
    skipped = desc.get("skipped") or []
    if not skipped:
        return "none"
    items = "".join(f"<li><code>{html.escape(x['file'])}</code>: {html.escape(x['reason'])}</li>"
                    for x in skipped)
    return f"<b>{len(skipped)}</b><ul>{items}</ul>"


def gate_paragraph(g: dict | None) -> str:
    """The gate's verdict as an HTML paragraph (empty without a gate)."""
    if g is None:
        return ""
    verdict = '<span class="pass">PASS</span>' if g["passed"] else '<span class="fail">FAIL</span>'
    text = f"<p>Gate: {verdict} &mdash; {html.escape(verdict_line(g).split(' (', 1)[1][:-1])}"
    if g.get("reason"):
        text += f" ({html.escape(g['reason'])})"
    return text + "</p>"


def _read_as(desc: dict) -> str:
    conv = desc.get("convention")
    return "" if not conv else conv["description"]


def _fmt_rate(d: dict | None) -> str:
    """A rate as in its text summary (``rate_text``): the score interval, then the bootstrap."""
    if not d:
        return "&ndash;"
    head, tail = rate_text(d)
    return f"{html.escape(head)} <small>{html.escape(tail)}</small>"


def _histogram_svg(ratio: np.ndarray, control: np.ndarray | None, threshold: float) -> str:
    """An inline SVG histogram of log10(d1/d2), as fractions of each set, with the threshold."""
    floor = 1e-3
    bins = 40
    edges = np.linspace(np.log10(floor), 0.0, bins + 1)
    series = [("samples", ratio, "#3b6fb6")]
    if control is not None:
        series.append(("held-out control", control, "#e08a2c"))
    hists = []
    for label, r, colour in series:
        h, _ = np.histogram(np.log10(np.clip(r, floor, 1.0)), bins=edges)
        hists.append((label, h / max(1, r.size), colour))
    top = max(float(h.max()) for _, h, _ in hists) or 1.0
    w, hgt, left, bottom = 640, 240, 48, 36
    pw, ph = w - left - 10, hgt - bottom - 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" '
             f'font-size="11" font-family="sans-serif">']
    bw = pw / bins
    for s, (label, h, colour) in enumerate(hists):
        for b, v in enumerate(h):
            if v <= 0:
                continue
            bh = ph * v / top
            x = left + b * bw + (bw / 2 if s else 0) * (len(hists) > 1)
            width = bw / len(hists)
            parts.append(f'<rect x="{x:.1f}" y="{10 + ph - bh:.1f}" width="{width:.1f}" '
                         f'height="{bh:.1f}" fill="{colour}" opacity="0.85"/>')
    parts.append(f'<line x1="{left}" y1="{10 + ph}" x2="{left + pw}" y2="{10 + ph}" stroke="#444"/>')
    parts.append(f'<line x1="{left}" y1="10" x2="{left}" y2="{10 + ph}" stroke="#444"/>')
    for tick in range(int(np.log10(floor)), 1):
        x = left + (tick - np.log10(floor)) / -np.log10(floor) * pw
        parts.append(f'<text x="{x:.1f}" y="{hgt - 20}" text-anchor="middle">1e{tick}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{hgt - 4}" text-anchor="middle">d1 / d2 '
                 f'(log scale; values below 1e-3 in the first bin)</text>')
    parts.append(f'<text x="4" y="16">{100 * top:.0f}%</text>')
    tx = left + (np.log10(threshold) - np.log10(floor)) / -np.log10(floor) * pw
    parts.append(f'<line x1="{tx:.1f}" y1="10" x2="{tx:.1f}" y2="{10 + ph}" stroke="#a31515" '
                 f'stroke-dasharray="5,3"/>')
    parts.append(f'<text x="{tx + 4:.1f}" y="22" fill="#a31515">k = {threshold:.3g}</text>')
    for s, (label, _, colour) in enumerate(hists):
        y = 22 + 14 * (s + 1)
        parts.append(f'<rect x="{left + 10}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + 24}" y="{y}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _gallery_html(report: Report, gallery: list[dict]) -> str:
    train = report.datasets.get("train")
    samples = report.datasets.get("samples")
    if train is None or samples is None:
        return ""
    if image_layout(samples.item_shape) is None or image_layout(train.item_shape) is None:
        return "<p><small>Items are not images; no gallery.</small></p>"
    s_rows = np.asarray(samples.x[[g["sample_index"] for g in gallery]], dtype=np.float64)
    t_rows = np.asarray(train.x[[g["nn_index"] for g in gallery]], dtype=np.float64)
    both = np.concatenate([s_rows, t_rows])
    lo, hi = float(np.percentile(both, 0.5)), float(np.percentile(both, 99.5))
    s_img = to_display(s_rows, samples.item_shape, lo, hi)
    t_img = to_display(t_rows, train.item_shape, lo, hi)
    cells = []
    for g, a, b in zip(gallery, s_img, t_img):
        flag = " flag" if g["memorized"] else ""
        cells.append(
            f'<div class="pair{flag}"><img src="{png_data_uri(a)}" alt="sample"> '
            f'<img src="{png_data_uri(b)}" alt="nearest training item"><br>'
            f'sample <code>{html.escape(str(g["sample_id"]))}</code><br>'
            f'train <code>{html.escape(str(g["nn_id"]))}</code><br>'
            f'd1/d2 = {g["ratio"]:.3f}{" &mdash; <b>memorized</b>" if g["memorized"] else ""}</div>'
        )
    return (
        "<p>Left: generated sample; right: its nearest training item (same intensity scale). "
        "Red frames are flagged as memorized.</p>"
        f'<div class="pairs">{"".join(cells)}</div>'
    )


def _thumbs(ds, positions, lo, hi) -> str:
    """Thumbnails (or, for items that are not images, ids) of ``ds``'s items at ``positions``."""
    positions = [int(i) for i in positions]
    if not positions:
        return ""
    if ds is None or image_layout(ds.item_shape) is None:
        names = [ds.ids[i] if ds is not None else i for i in positions]
        return ", ".join(f"<code>{html.escape(str(v))}</code>" for v in names)
    rows = np.asarray(ds.x[np.asarray(positions)], dtype=np.float64)
    imgs = to_display(rows, ds.item_shape, lo, hi)
    return "".join(
        f'<span class="thumb"><img src="{png_data_uri(im, 48)}" alt=""><br>'
        f'<code>{html.escape(str(ds.ids[i]))}</code></span>' for i, im in zip(positions, imgs)
    )


def duplicates_html(res, queries, reference=None, max_groups: int = 8, max_members: int = 8,
                    max_pairs: int = 20) -> str:
    """HTML of a duplicates result: its summary and notes (warnings first), a table of the closest
    pairs (``max_pairs``, the rest in the JSON) and the largest groups as galleries; a group far
    larger than copies form shows only a few members."""
    esc = html.escape
    lines = res.summary().split("\n")
    parts = [f"<p>{esc(lines[0])}</p>"]
    for note in res.notes:
        cls = "note" if note.startswith("warning:") else ""
        parts.append(f'<p class="{cls}">{esc(note)}</p>' if cls else f"<p><small>{esc(note)}</small></p>")
    sets = [ds for ds in (queries, reference) if ds is not None]
    vals = np.concatenate([np.asarray(ds.x[: min(len(ds), 2000)], dtype=np.float64).ravel()
                           for ds in sets]) if sets else np.zeros(1)
    lo, hi = float(np.percentile(vals, 0.5)), float(np.percentile(vals, 99.5))
    other = reference if res.cross else queries
    if res.n_pairs:
        name = res.score_name
        head = ("<tr><th>sample</th><th>training item</th>" if res.cross
                else "<tr><th>item</th><th>item</th>") + f"<th>{name}</th></tr>"
        rows = []
        for (i, j), score in zip(res.pairs[:max_pairs].tolist(), res.scores[:max_pairs]):
            rows.append(f"<tr><td>{_thumbs(queries, [i], lo, hi)}<br><small>position {i}</small></td>"
                        f"<td>{_thumbs(other, [j], lo, hi)}<br><small>position {j}</small></td>"
                        f"<td class='num'>{score:.4g}</td></tr>")
        more = res.n_pairs - min(max_pairs, res.n_pairs)
        from .probes.duplicates import PAIRS_LISTED

        listed = min(res.n_pairs, PAIRS_LISTED)
        tail = (f"<p><small>{more} more pair(s); the JSON lists the closest {listed} of "
                f"{res.n_pairs}.</small></p>" if more else "")
        parts.append(f"<h3>Closest pairs</h3><table>{head}{''.join(rows)}</table>{tail}")
    if not res.groups:
        parts.append("<p>No group found.</p>")
    limit = res.components.get("limit")
    for k, g in enumerate(res.groups[:max_groups]):
        size = sum(len(v) for v in g.values())
        cap = 4 if limit is not None and size > limit else max_members
        if res.cross:
            q, r = list(g["queries"][:cap]), list(g["reference"][:cap])
            shown = (f" (far larger than copies form: {cap} of each shown, all in the JSON)"
                     if cap < max_members else "")
            parts.append(f'<div class="group"><b>group {k + 1}</b>: {len(g["queries"])} sample(s) '
                         f'&harr; {len(g["reference"])} training item(s){shown}<br>samples: '
                         f'{_thumbs(queries, q, lo, hi)}<br>training: {_thumbs(reference, r, lo, hi)}</div>')
        else:
            m = list(g["members"][:cap])
            more = ""
            if len(g["members"]) > cap:
                more = (f" (far larger than copies form: {cap} shown, all in the JSON)"
                        if cap < max_members else f" (first {cap} shown)")
            parts.append(f'<div class="group"><b>group {k + 1}</b>: {len(g["members"])} items{more}<br>'
                         f'{_thumbs(queries, m, lo, hi)}</div>')
    if len(res.groups) > max_groups:
        parts.append(f"<p><small>{len(res.groups) - max_groups} more groups in the JSON report.</small></p>")
    return "".join(parts)


def _duplicates_sections(report: Report) -> str:
    if not report.duplicates:
        return ""
    train, samples = report.datasets.get("train"), report.datasets.get("samples")
    out = ["<h2>Duplicates</h2>"]
    if "train" in report.duplicates:
        out.append("<h3>Inside the training set</h3>")
        out.append(duplicates_html(report.duplicates["train"], train))
    if "samples_vs_train" in report.duplicates:
        out.append("<h3>Samples that copy training items</h3>")
        out.append(duplicates_html(report.duplicates["samples_vs_train"], samples, train))
    return "".join(out)


def _tracking_section(report: Report) -> str:
    c = report.tracking
    if c is None:
        return ""
    w, h, pad = 520, 180, 36
    xs = np.log10(np.maximum(c.steps, 1))
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1e-9)
    shown_low, shown_high, how = c._shown_interval()
    top = max(float(np.max(shown_high)), 0.05)

    def pt(x, y):
        return f"{pad + (x - x0) / (x1 - x0) * (w - 2 * pad):.1f},{h - pad - y / top * (h - 2 * pad):.1f}"

    band = " ".join(pt(x, y) for x, y in zip(xs, shown_high)) + " " + " ".join(
        pt(x, y) for x, y in zip(xs[::-1], shown_low[::-1]))
    line = " ".join(pt(x, y) for x, y in zip(xs, c.f_mem))
    marks = ""
    for t, name, color in ((c.tau_gen, "tau_gen", "#17692c"), (c.tau_mem, "tau_mem", "#a31515"),
                           (c.recommended, "keep", "#1f4e9c")):
        if t is not None:
            x = pt(np.log10(t), 0).split(",")[0]
            marks += (f'<line x1="{x}" x2="{x}" y1="{pad - 10}" y2="{h - pad}" stroke="{color}" '
                      f'stroke-dasharray="3,3"/><text x="{x}" y="{pad - 14}" font-size="10" '
                      f'fill="{color}" text-anchor="middle">{name}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'style="background:#fafafa;border:1px solid #eee"><polygon points="{band}" '
           f'fill="#c0392b" fill-opacity="0.2"/><polyline points="{line}" fill="none" '
           f'stroke="#c0392b" stroke-width="1.6"/>{marks}<text x="{pad}" y="{h - 10}" '
           f'font-size="10">step {int(c.steps[0])} … {int(c.steps[-1])} (log scale); f_mem from 0 '
           f'to {100 * top:.0f}%</text></svg>')
    rows = "".join(
        f"<tr><td class='num'>{int(s)}</td><td class='num'>{100 * f:.1f}%</td>"
        f"<td class='num'><small>[{100 * lo:.1f}%, {100 * hi:.1f}%]</small></td>"
        f"<td class='num'>{'' if c.quality is None else f'{c.quality[i]:.4g}'}</td></tr>"
        for i, (s, f, lo, hi) in enumerate(zip(c.steps, c.f_mem, shown_low, shown_high)))
    rules = "".join(f"<li>{k}: {html.escape(str(v))}</li>" for k, v in c.rules.items() if v)
    return (f"<h2>Memorization over training</h2><p>tau_gen = {c.tau_gen}, tau_mem = {c.tau_mem}, "
            f"recommended checkpoint: <b>{c.recommended}</b></p>{svg}<table><tr><th>step</th>"
            f"<th>f_mem</th><th>95% CI ({how})</th><th>{html.escape(c.quality_name or 'quality')}</th></tr>"
            f"{rows}</table><ul>{rules}</ul>")


def _membership_section(report: Report) -> str:
    if report.membership is None:
        return ""
    from .report_membership import membership_html

    return membership_html(report.membership, "Membership inference (distance to the nearest "
                                              "generated sample, GAN-Leaks style)")


def render_html(report: Report, data: dict) -> str:
    nr = data["nn_ratio"]
    res = report.nn_ratio
    esc = html.escape
    rows = []
    if data.get("space"):
        rows.append(("Compared in", f"<b>{esc(data['space'])}</b>"))
    rows.append(("Memorized fraction f<sub>mem</sub> (d1/d2 &lt; k)", _fmt_rate(nr["rate"])))
    if nr["control"] is not None:
        rows.append(("Held-out control, same probe", _fmt_rate(nr["control"]["rate"])))
        rows.append(("<b>Excess over control</b>", _fmt_rate(nr["excess_over_control"])))
    if nr["closer_to_train_than_holdout"] is not None:
        c = nr["closer_to_train_than_holdout"]
        rows.append(
            (f"Samples closer to train than to held-out (expected {100 * c['expected']:.1f}% "
             "without memorization)",
             _fmt_rate(c) + f" <small>{c['n_train']} training vs {c['n_holdout']} held-out items</small>")
        )
    if nr["carlini"] is not None:
        c = nr["carlini"]
        rows.append((f"Carlini et al. relative criterion (&alpha; = {c['alpha']:g}, "
                     f"{c['n_nearest']} nearest)", _fmt_rate(c["rate"])))
        if nr["control"] is not None and nr["control"]["carlini"] is not None:
            rows.append(("&nbsp;&nbsp;same criterion on the held-out control",
                         _fmt_rate(nr["control"]["carlini"]["rate"])))
    rows.append(("Exact copies (d1 = 0)", str(nr["n_exact_copies"])))
    gate_html = gate_paragraph(data["gate"])
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in data["notes"])
    inputs = "".join(
        f"<tr><td>{k}</td><td>{esc(str(v['source']))}</td><td class='num'>{v['n_items']}</td>"
        f"<td>{esc(str(tuple(v['item_shape'])))}</td><td>{v['dtype']}</td>"
        f"<td>{esc(_read_as(v))}</td><td>{_skipped_html(v)}</td></tr>"
        for k, v in data["inputs"].items() if v is not None
    )
    flagged = res.flagged()[:100]
    flag_rows = "".join(
        f"<tr><td class='num'>{i}</td><td><code>{esc(str(res.sample_ids[i]))}</code></td>"
        f"<td><code>{esc(str(res.nn_id[i]))}</code></td><td class='num'>{res.d1[i]:.4g}</td>"
        f"<td class='num'>{res.d2[i]:.4g}</td><td class='num'>{res.ratio[i]:.4f}</td></tr>"
        for i in flagged
    )
    flag_table = (
        "<table><tr><th>#</th><th>sample id</th><th>nearest training id</th><th>d1</th><th>d2</th>"
        f"<th>d1/d2</th></tr>{flag_rows}</table>"
        + (f"<p><small>First 100 of {int(res.memorized.sum())}; all are in report.json.</small></p>"
           if res.memorized.sum() > 100 else "")
        if flag_rows else "<p>No sample is flagged.</p>"
    )
    config_rows = "".join(
        f"<tr><td>{esc(k)}</td><td><code>{esc(json.dumps(v))}</code></td></tr>"
        for k, v in data["config"].items() if k != "notes"
    )
    version_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in data["versions"].items()
    )
    control_ratio = None if res.control is None else res.control.ratio
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>memaudit report</title>
<style>{_CSS}</style></head><body>
<h1>memaudit: memorization audit</h1>
<p><small>{esc(data['created'])} &middot; memaudit {esc(str(data['versions'].get('memaudit')))}
&middot; schema {data['schema_version']} &middot; seed {data['seed']}
&middot; {data['elapsed_seconds']:.1f} s</small></p>
{notes}
<h2>Headline</h2>
<table>{''.join(f'<tr><td>{a}</td><td>{b}</td></tr>' for a, b in rows)}</table>
{gate_html}
<p><small>A sample is memorized when its nearest training item is closer than k = {nr['threshold']:.4g}
times its second-nearest (d1/d2 &lt; k, {esc(nr['metric'])} distance; {esc(nr['threshold_source'])}).
The control is real held-out data through the same probe: its rate is the floor that
near-duplicates in the data distribution alone produce. Intervals: {esc(nr['rate'].get('score_method') or '')} score interval first, then the {esc(nr['rate']['method'])}.</small></p>
<h2>Distribution of d1/d2</h2>
{_histogram_svg(res.ratio, control_ratio, res.threshold)}
<h2>Closest generated / training pairs</h2>
{_gallery_html(report, data['gallery'])}
<h2>Flagged samples</h2>
{flag_table}
{_duplicates_sections(report)}
{_membership_section(report)}
{_tracking_section(report)}
<h2>Inputs</h2>
<table><tr><th>set</th><th>source</th><th>items</th><th>item shape</th><th>dtype</th><th>read as</th><th>skipped files</th></tr>{inputs}</table>
<details><summary>Resolved configuration</summary><table>{config_rows}</table></details>
<details><summary>Package versions</summary><table>{version_rows}</table></details>
</body></html>
"""


def write_duplicates_report(out_dir, results: dict, datasets: dict, config: dict,
                            versions: dict, elapsed: float = 0.0, control=None) -> dict:
    """Write duplicates.json and duplicates.html for ``memaudit duplicates`` (atomically).

    ``control`` (a :class:`memaudit.probes.duplicates.CopyRateResult`, from ``--holdout``) adds
    the copy rate beside its held-out control (JSON key ``copy_rate``).
    """
    def copy_rate_html(control) -> str:
        """Rows of the copy rate, its held-out control and the excess (``memaudit duplicates --holdout``)."""
        def row(label, r, sign=""):
            count = "" if r.count is None else f"{r.count} / {r.n}"
            wilson = "" if r.wilson is None else f"[{100 * r.wilson[0]:.2f}%, {100 * r.wilson[1]:.2f}%]"
            return (f"<tr><td>{label}</td><td class='num'>{100 * r.value:{sign}.2f}%</td><td class='num'>{count}</td>"
                    f"<td class='num'>[{100 * r.low:.2f}%, {100 * r.high:.2f}%]</td><td class='num'>{wilson}</td></tr>")

        pct = int(round(100 * control.rate.confidence))
        parts = ["<h2>Copy rate and its held-out control</h2>",
                 "<p>Share of items that match at least one training item, through the same matcher: "
                 "generated samples, and held-out real items the model never saw (the control: what "
                 "near-twins in the data alone produce). The excess is the difference.</p>",
                 f"<table><tr><th></th><th>rate</th><th>count</th><th>{pct}% bootstrap</th>"
                 f"<th>{pct}% Wilson</th></tr>",
                 row("samples", control.rate), row("held-out control", control.control_rate),
                 row("excess over control", control.excess, "+"), "</table>",
                 f"<p>{html.escape(control.summary())}</p>"]
        by = control.by_threshold
        if by is not None:
            cells = "".join(f"<tr><td class='num'>{d}</td><td class='num'>{100 * a:.2f}%</td>"
                            f"<td class='num'>{100 * b:.2f}%</td></tr>"
                            for d, a, b in zip(by["threshold"], by["samples"], by["holdout"]))
            parts.append("<details><summary>Matched share by Hamming distance</summary><table><tr><th>"
                         f"distance at most</th><th>samples</th><th>held-out</th></tr>{cells}</table></details>")
        return "".join(parts)

    out = Path(out_dir)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = jsonable({
        "schema": "memaudit.duplicates",
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "seed": config.get("seed"),
        "config": config,
        "versions": versions,
        "inputs": {k: v.describe() for k, v in datasets.items() if v is not None},
        "elapsed_seconds": round(elapsed, 3),
        "results": {k: v.to_dict() for k, v in results.items()},
        "copy_rate": None if control is None else control.to_dict(),
    })
    esc = html.escape
    sections = [] if control is None else [copy_rate_html(control)]
    titles = {"train": "Inside the training set", "samples": "Inside the samples",
              "samples_vs_train": "Samples that copy training items",
              "holdout_vs_train": "Held-out items that match training items (the control)"}
    pairs_of = {"samples_vs_train": "samples", "holdout_vs_train": "holdout"}
    for key, res in results.items():
        if key in pairs_of:
            body = duplicates_html(res, datasets.get(pairs_of[key]), datasets.get("train"))
        else:
            body = duplicates_html(res, datasets.get(key))
        sections.append(f"<h2>{titles.get(key, esc(key))}</h2>{body}")
    inputs = "".join(
        f"<tr><td>{k}</td><td>{esc(str(v['source']))}</td><td class='num'>{v['n_items']}</td>"
        f"<td>{_skipped_html(v)}</td></tr>" for k, v in data["inputs"].items()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>memaudit duplicates</title>
<style>{_CSS}</style></head><body>
<h1>memaudit: duplicates and copies</h1>
<p><small>{esc(created)} &middot; memaudit {esc(str(versions.get('memaudit')))} &middot;
seed {config.get('seed')} &middot; {elapsed:.1f} s</small></p>
{''.join(sections)}
<h2>Inputs</h2>
<table><tr><th>set</th><th>source</th><th>items</th><th>skipped files</th></tr>{inputs}</table>
<details><summary>Resolved configuration</summary><pre>{esc(json.dumps(config, indent=2))}</pre></details>
</body></html>
"""
    return write_json_html(out, "duplicates", data, page)
