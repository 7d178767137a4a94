"""The memorization-over-training section (a :class:`memaudit.tracking.TrainingCurve`)."""

from __future__ import annotations

from .html import esc, figure

__all__ = ["tracking_html"]


def tracking_html(c) -> str:
    """f_mem with its interval and quality over the training steps (figure and table), with
    tau_gen, tau_mem, the recommended checkpoint and the rules that chose them."""
    low, high, how = c._shown_interval()
    rows = "".join(
        f"<tr><td class='num'>{int(s)}</td><td class='num'>{100 * f:.1f}%</td>"
        f"<td class='num'><small>[{100 * lo:.1f}%, {100 * hi:.1f}%]</small></td>"
        f"<td class='num'>{'' if c.quality is None else f'{c.quality[i]:.4g}'}</td></tr>"
        for i, (s, f, lo, hi) in enumerate(zip(c.steps, c.f_mem, low, high)))
    rules = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in c.rules.items() if v)
    return (f"<h2>Memorization over training</h2><p>{esc(c.window_text())}</p>"
            f"{figure(c.plot, figsize=(7.5, 4.4), margins=(0.75, 1.5, 0.8, 0.15))}"
            f"<table><tr><th>step</th><th>f_mem</th><th>95% CI ({how})</th>"
            f"<th>{esc(c.quality_name or 'quality')}</th></tr>{rows}</table><ul>{rules}</ul>")


def _attack_table(rows) -> str:
    """Per checkpoint, each model attack's evaluation AUC (interval shown first) and timestep."""
    from ..results import interval_text

    names = [k for k in rows[0] if k != "step"]
    head = "".join(f"<th>{esc(rows[0][k]['attack'])} AUC (t)</th>" for k in names)
    body = "".join(
        f"<tr><td class='num'>{r['step']}</td>" + "".join(
            f"<td class='num'>{esc(interval_text(r[k]['auc'], r[k]['auc']['confidence']))}"
            f" ({r[k]['timestep']})</td>" for k in names) + "</tr>" for r in rows)
    return (f"<h3>Membership attacks per checkpoint</h3><p>Each attack's timestep and threshold "
            f"are chosen on a calibration half of the members and non-members; the AUC is on the "
            f"other half ({rows[0][names[0]]['n_members']} members, "
            f"{rows[0][names[0]]['n_nonmembers']} non-members); 0.5 is random guessing.</p>"
            f"<table><tr><th>step</th>{head}</tr>{body}</table>")


def write_tracking_report(out_dir, curves: dict, attacks: dict | None, *, config: dict,
                          versions: dict, inputs: dict, notes=(), elapsed: float = 0.0,
                          checkpoints=(), generation: dict | None = None) -> dict:
    """tracking.json and tracking.html for ``memaudit track`` (the shared envelope, atomically).

    Parameters
    ----------
    curves : dict of str to TrainingCurve
        One per tracked set of weights ("unet", "unet_ema", or "model" for a run sampler's run).
    attacks : dict of str to list of dict, optional
        Per set of weights, one row per checkpoint (``TrackRun.attack_rows``).
    checkpoints : list of dict
        ``{"step", "path", "variants"}`` in step order.
    generation : dict
        How the samples were drawn (sampler, steps, seeds, the conversion).

    Returns
    -------
    dict of str to Path
    """
    from .document import document, write_json_html
    from .html import page

    sections = {"tracking": {k: c.to_dict() for k, c in curves.items()},
                "attacks": attacks, "checkpoints": list(checkpoints),
                "generation": generation or {}}
    data = document("tracking", sections, config=config, versions=versions, inputs=inputs,
                    elapsed=elapsed, notes=notes)
    body = []
    for variant, curve in curves.items():
        body.append(f"<h2>Weights: <code>{esc(variant)}</code></h2>" + tracking_html(curve))
        if attacks and attacks.get(variant):
            body.append(_attack_table(attacks[variant]))
    gen = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in (generation or {}).items())
    body.append(f"<h2>Samples</h2><ul>{gen}</ul>")
    return write_json_html(out_dir, "tracking", data,
                           page(data, "memaudit: memorization over training", "\n".join(body)))
