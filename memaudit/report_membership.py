"""HTML for membership-inference results (a section of the audit report, and membership.html)."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .results import jsonable

__all__ = ["membership_html", "roc_svg", "write_membership_report"]


def roc_svg(fpr, tpr, n_nonmembers: int, size: int = 260) -> str:
    """ROC curve on log-log axes (low false-positive rates are what matters) with the diagonal."""
    floor = 1.0 / max(2 * n_nonmembers, 2)
    lo = np.log10(floor)

    def xy(f, t):
        px = 30 + (np.log10(max(f, floor)) - lo) / -lo * (size - 40)
        py = size - 25 - (np.log10(max(t, floor)) - lo) / -lo * (size - 35)
        return f"{px:.1f},{py:.1f}"

    points = [xy(f, t) for f, t in zip(fpr, tpr)]  # every ROC point, minus repeats of a pixel
    curve = " ".join(p for i, p in enumerate(points) if i == 0 or p != points[i - 1])
    diag = f"{xy(floor, floor)} {xy(1, 1)}"
    ticks = "".join(
        f'<text x="{xy(10.0**e, floor).split(",")[0]}" y="{size - 8}" font-size="9" '
        f'text-anchor="middle">1e{e}</text>'
        f'<text x="27" y="{float(xy(floor, 10.0**e).split(",")[1]) + 3:.1f}" font-size="9" '
        f'text-anchor="end">1e{e}</text>' for e in range(int(np.ceil(lo)), 1))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'style="background:#fafafa;border:1px solid #eee">'
            f'<polyline fill="none" stroke="#999" stroke-dasharray="4,3" points="{diag}"/>'
            f'<polyline fill="none" stroke="#c0392b" stroke-width="1.6" points="{curve}"/>{ticks}'
            f'<text x="{size // 2}" y="{size - 0}" font-size="9" text-anchor="middle">FPR</text>'
            f'<text x="8" y="{size // 2}" font-size="9" transform="rotate(-90 8 {size // 2})" '
            f'text-anchor="middle">TPR</text></svg>')


def _iv(d: dict, confidence: float, pct: bool = False) -> str:
    """The figure as in the text summary: value, leading interval, the other one beside it."""
    from .probes.membership import interval_text

    text = html.escape(interval_text(d, confidence, pct))
    head, _, rest = text.partition(", ")
    return f"<b>{head}</b>, <small>{rest}</small>"


def membership_html(res, title: str = "Membership inference") -> str:
    """A section: what the attacker achieves on the evaluation split, the ROC, the split manifest."""
    d = res.to_dict()
    ev = d["evaluation"]
    conf = ev["confidence"]
    pct = int(round(100 * conf))
    rows = [("ROC AUC", _iv(ev["auc"], conf), "0.5")]
    for f, iv in ev["tpr_at_fpr"].items():
        label = f"TPR at {100 * float(f):g}% FPR"
        if iv["resolved"]:
            rows.append((label, _iv(iv, conf, True), f"{100 * float(f):g}%"))
        else:
            n = ev["n_nonmembers"]
            rows.append((label, f"<b>not resolved</b>: {n} non-members resolve FPRs of 1/{n} or "
                         "more", f"{100 * float(f):g}%"))
    rows.append(("balanced accuracy at the calibrated threshold",
                 _iv(d["balanced_accuracy"], conf), "0.5"))
    table = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    split = d["split"]
    counts = (f"calibration: {len(split['calibration']['members'])} members, "
              f"{len(split['calibration']['nonmembers'])} non-members; evaluation: "
              f"{len(split['evaluation']['members'])} members, "
              f"{len(split['evaluation']['nonmembers'])} non-members; seed {split['seed']}")
    flag = ("<p class='note'><b>Optimistic:</b> the setting and threshold were chosen on the "
            "evaluated items.</p>" if d["optimistic"] else "")
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' if n.startswith("warning")
                    else f"<p><small>{html.escape(n)}</small></p>" for n in ev["notes"])
    chosen = (f"Threshold {d['threshold']:.4g}" if d["setting"] is None else
              f"Attack setting <code>{html.escape(str(d['setting']))}</code> and threshold "
              f"{d['threshold']:.4g}")
    return f"""<h2>{html.escape(title)}</h2>{flag}
{notes}<p>{chosen} chosen on the calibration split; the figures below are on the disjoint
evaluation split ({ev['n_members']} members, {ev['n_nonmembers']} non-members). Each figure has
a {pct}% stratified bootstrap interval and a closed-form one that stays informative at the bounds;
the one that covers better is shown first (docs/probes/membership.md); random guessing in the last
column.</p>
<div style="display:flex;gap:24px;align-items:flex-start"><table>
<tr><th>figure</th><th>value and {pct}% interval</th><th>random</th></tr>{table}</table>
{roc_svg(ev['roc']['fpr'], ev['roc']['tpr'], ev['n_nonmembers'])}</div>
<details><summary>Split manifest ({counts})</summary>
<pre>{html.escape(json.dumps(split, indent=1))}</pre></details>
"""


def write_membership_report(out_dir, result, *, config: dict, versions: dict, inputs: dict,
                            attack: str, elapsed: float = 0.0, gate: dict | None = None) -> dict:
    """membership.json and membership.html for ``memaudit membership`` (atomically)."""
    from .report import _CSS, gate_paragraph, write_json_html

    out = Path(out_dir)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = jsonable({"schema": "memaudit.membership", "schema_version": "1.0", "created": created,
                     "seed": config.get("seed"), "config": config, "versions": versions,
                     "inputs": inputs, "attack": attack, "elapsed_seconds": round(elapsed, 3),
                     "gate": gate, "result": result.to_dict()})
    esc = html.escape
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>memaudit membership</title>
<style>{_CSS}</style></head><body>
<h1>memaudit: can an attacker tell training items from held-out ones?</h1>
<p><small>{esc(created)} &middot; memaudit {esc(str(versions.get('memaudit')))} &middot;
seed {config.get('seed')} &middot; {elapsed:.1f} s &middot; attack: {esc(attack)}</small></p>
{membership_html(result, "Result")}
{gate_paragraph(gate)}
<h2>Inputs</h2><pre>{esc(json.dumps(data['inputs'], indent=2))}</pre>
<details><summary>Resolved configuration</summary><pre>{esc(json.dumps(config, indent=2))}</pre></details>
<details><summary>Package versions</summary><pre>{esc(json.dumps(versions, indent=2))}</pre></details>
</body></html>
"""
    return write_json_html(out, "membership", data, page)
