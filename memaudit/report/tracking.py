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
    return (f"<h2>Memorization over training</h2><p>tau_gen = {c.tau_gen}, tau_mem = {c.tau_mem}, "
            f"recommended checkpoint: <b>{c.recommended}</b></p>"
            f"{figure(c.plot, figsize=(7.5, 4.4), margins=(0.75, 1.5, 0.8, 0.15))}"
            f"<table><tr><th>step</th><th>f_mem</th><th>95% CI ({how})</th>"
            f"<th>{esc(c.quality_name or 'quality')}</th></tr>{rows}</table><ul>{rules}</ul>")
