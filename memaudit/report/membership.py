"""The membership-inference section (a calibrated attack's evaluation, its ROC and split) and
membership.json / membership.html for ``memaudit membership``."""

from __future__ import annotations

import json

from .document import document, write_json_html
from .html import esc, figure, page

__all__ = ["membership_html", "write_membership_report"]


def _iv(d: dict, confidence: float, pct: bool = False) -> str:
    """The figure as in the text summary: value, leading interval, the other one beside it."""
    from ..probes.membership import interval_text

    text = esc(interval_text(d, confidence, pct))
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
    notes = "".join(f'<p class="note">{esc(n)}</p>' if n.startswith("warning")
                    else f"<p><small>{esc(n)}</small></p>" for n in ev["notes"])
    chosen = (f"Threshold {d['threshold']:.4g}" if d["setting"] is None else
              f"Attack setting <code>{esc(str(d['setting']))}</code> and threshold "
              f"{d['threshold']:.4g}")
    return f"""<h2>{esc(title)}</h2>{flag}
{notes}<p>{chosen} chosen on the calibration split; the figures below are on the disjoint
evaluation split ({ev['n_members']} members, {ev['n_nonmembers']} non-members). Each figure has
a {pct}% stratified bootstrap interval and a closed-form one that stays informative at the bounds;
the one that covers better is shown first (docs/probes/membership.md); random guessing in the last
column.</p>
<div class="side"><table>
<tr><th>figure</th><th>value and {pct}% interval</th><th>random</th></tr>{table}</table>
{figure(res.plot, figsize=(4.4, 4.2), margins=(0.75, 0.6, 0.15, 0.15))}</div>
<details><summary>Split manifest ({counts})</summary>
<pre>{esc(json.dumps(split, indent=1))}</pre></details>
"""


def membership_section(res, attack: str) -> dict:
    """The JSON section of a calibrated attack: which attack, then its result."""
    return {"attack": attack, **res.to_dict()}


def write_membership_report(out_dir, result, *, config: dict, versions: dict, inputs: dict,
                            attack: str, elapsed: float = 0.0, gate: dict | None = None,
                            notes=(), space: str | None = None, attacks: dict | None = None) -> dict:
    """membership.json and membership.html for ``memaudit membership`` (atomically).

    Parameters
    ----------
    result : CalibratedAttack
        The attack, calibrated on one split and evaluated on the other.
    inputs : dict
        Per input, its description or the path of a scores file.
    attack : str
        What the attack is (recorded in section ``membership`` as ``attack``).
    gate, notes, space
        As in :func:`memaudit.report.document.document`.
    attacks : dict of str to (CalibratedAttack, str), optional
        Several attacks on one model (``memaudit membership --model``): written under section
        ``attacks`` by name, each with a section of its own in the page; ``result`` is the gated
        one (the strongest).

    Returns
    -------
    dict of str to Path
        ``json`` and ``html``: the two files written (:func:`write_json_html`).
    """
    sections = {"membership": membership_section(result, attack)}
    if attacks:
        sections["attacks"] = {k: membership_section(r, a) for k, (r, a) in attacks.items()}
    data = document("membership", sections,
                    config=config, versions=versions, inputs=inputs, elapsed=elapsed, gate=gate,
                    notes=notes, space=space)
    if not attacks:
        body = (f"<p>Attack: <b>{esc(attack)}</b></p>" + membership_html(result, "Result"))
    else:  # each attack once; the gated one is named
        body = (f"<p>Model attacks; the strongest on the evaluation half, <b>{esc(attack)}</b>, "
                "is the gated figure.</p>"
                + "".join(membership_html(r, a) for r, a in attacks.values()))
    return write_json_html(out_dir, "membership", data,
                           page(data, "memaudit: can an attacker tell training items from "
                                      "held-out ones?", body))
