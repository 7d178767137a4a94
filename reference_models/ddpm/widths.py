"""The width law at fixed n: do tau_gen and tau_mem scale as 1/W (Bonnaire et al. 2025, Fig. 3)?

    python -m reference_models.ddpm.widths runs/w8 runs/w16 runs/w32 --out runs/widths
    python -m reference_models.ddpm.sweep --analyse-width runs/w8 runs/w16 runs/w32 --out runs/widths

Each argument is a sweep folder (``python -m reference_models.ddpm.sweep --width W``, analysed: it
holds sweep.json) of one base width W. The paper finds tau_gen ∝ 1/W and tau_mem ∝ n/W, i.e. quality
curves collapse against step x W and the normalised f_mem against step x W / n. Reads the per-run
tau_gen and tau_mem(1/5/10%) that each sweep fixed by its own rules (``reference_models.ddpm.sweep``)
and writes, in ``--out``:

- widths.md / widths.json: per run W, n, seed, tau_gen, tau_mem at each level, tau_gen x W and
  tau_mem(1%) x W / n; at each n with >= 2 widths the exponents of tau_gen and of tau_mem against W
  (the paper: -1) with their OLS and seed-level intervals (``reference_models.fits.exponent_fit``);
- widths_quality.png: quality against step and against step x W;
- widths_fmem.png: f_mem / f_mem(last) against step / n and against step x W / n.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from memaudit.io import atomic_write_text
from memaudit.results import jsonable

from ..figures import collapse_norm, legends, pyplot, save_png
from ..fits import exponent_fit, format_fit

__all__ = ["load_width_sweeps", "analyse_widths", "widths_table", "main"]




def _num(x) -> float:
    return float("nan") if x is None else float(x)


def load_width_sweeps(dirs) -> list[dict]:
    """The runs of each sweep folder with their width: one dict per run (``W``, ``n``, ``seed``,
    ``steps``, ``f_mem``, ``quality``, ``tau_gen``, ``tau_mem`` per level, the sweep folder).

    Raises ``ValueError`` (one line naming the folder and the fix) when a folder has no sweep.json,
    mixes widths, or two folders have the same width.
    """
    runs, seen, levels = [], {}, None
    for d in map(Path, dirs):
        path = d / "sweep.json"
        if not path.is_file():
            raise ValueError(f"{d} has no sweep.json: analyse it first (python -m "
                             f"reference_models.ddpm.sweep --out {d} --analyse-only)")
        try:
            summary = json.loads(path.read_text())
            sweep_runs = summary["runs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a sweep summary ({exc}); rerun the sweep's --analyse-only") \
                from None
        if not sweep_runs:
            raise ValueError(f"{path} holds no runs; train and track the sweep first")
        these = tuple(sorted(summary["fits"], key=float))  # the sweep's levels ("0.01", ...)
        if levels is not None and these != levels:
            raise ValueError(f"{d} has tau_mem levels {these}, the others {levels}: analyse every "
                             "sweep with the same code")
        levels = these
        widths = {r["config"]["width"] for r in sweep_runs}
        if len(widths) != 1:
            raise ValueError(f"{d} mixes widths {sorted(widths)}: give one sweep folder per width")
        w = widths.pop()
        if w in seen:
            raise ValueError(f"{d} and {seen[w]} both have width {w}: give one folder per width")
        seen[w] = d
        for i, r in enumerate(sweep_runs):
            runs.append({
                "sweep": str(d), "W": int(w), "n": int(r["n"]), "seed": int(r["seed"]),
                "steps": r["steps"], "f_mem": r["f_mem"], "quality": r["quality"],
                "quality_name": r.get("quality_name"), "early_steps": r.get("early_steps"),
                "early_quality": r.get("early_quality"), "tau_gen": r.get("tau_gen"),
                "tau_gen_log": r.get("tau_gen_log_checkpoint"),
                "max_f_mem": r.get("max_f_mem", max(r["f_mem"]) if r["f_mem"] else None),
                "tau_mem": {lv: summary["fits"][lv]["tau_mem"][i] for lv in levels},
            })
    if len(seen) < 2:
        raise ValueError(f"the width law needs sweeps at >= 2 widths; got {len(seen)} "
                         f"({', '.join(map(str, dirs))})")
    return sorted(runs, key=lambda r: (r["n"], r["W"], r["seed"]))


def _levels(runs) -> list[str]:
    return sorted(runs[0]["tau_mem"], key=float)


def analyse_widths(dirs, out) -> dict:
    """Read the sweeps of ``dirs`` (one width each), fit against W, write widths.json/.md/.png."""
    runs = load_width_sweeps(dirs)
    levels = _levels(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fits = {}
    for n in sorted({r["n"] for r in runs}):
        at = [r for r in runs if r["n"] == n]
        if len({r["W"] for r in at}) < 2:
            continue
        ws, seeds = [r["W"] for r in at], [r["seed"] for r in at]
        fn = {"tau_gen": exponent_fit(ws, [_num(r["tau_gen"]) for r in at], groups=seeds,
                                      what="tau_gen read"),
              "tau_gen_log": exponent_fit(ws, [_num(r.get("tau_gen_log")) for r in at],
                                          groups=seeds, what="tau_gen (log rule) read")}
        for lv in levels:
            fn[f"tau_mem_{lv}"] = exponent_fit(ws, [_num(r["tau_mem"][lv]) for r in at], groups=seeds)
        fits[str(n)] = fn
    summary = jsonable({
        "sweeps": [str(d) for d in dirs], "runs": runs, "fits_against_W": fits,
        "rules": {"tau_gen, tau_mem": "as read by each sweep (reference_models.ddpm.sweep)",
                  "exponent": "least squares of log tau on log W over every run at one n; "
                              "intervals: OLS residuals, bootstrap over seeds only",
                  "paper": "tau_gen ∝ 1/W, tau_mem ∝ n/W (exponent -1 against W)"}})
    atomic_write_text(out / "widths.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "widths.md", widths_table(summary))
    try:
        plot_widths(summary, out)
    except ImportError:
        pass
    return summary


def _cell(t, peak) -> str:
    t = _num(t)
    if np.isfinite(t):
        return f"{t:,.0f}"
    return "never" if peak is None else f"never (max f_mem {100 * peak:.1f}%)"


def widths_table(summary: dict) -> str:
    """Markdown: one row per run, then the exponents against W at each n."""
    levels = _levels(summary["runs"])
    first = levels[0]
    qname = summary["runs"][0].get("quality_name") or "quality"
    lines = ["| W | n | seed | steps | tau_gen | tau_gen (log rule) | final quality | "
             + " | ".join(f"tau_mem({100 * float(lv):g}%)" for lv in levels)
             + f" | tau_gen x W | tau_mem({100 * float(first):g}%) x W / n |",
             "|" + "---|" * (9 + len(levels))]
    for r in summary["runs"]:
        tg, t1 = _num(r["tau_gen"]), _num(r["tau_mem"][first])
        q = _num(r["quality"][-1]) if r.get("quality") else float("nan")
        lines.append(f"| {r['W']} | {r['n']} | {r['seed']} | {r['steps'][-1]:,} | "
                     f"{_cell(tg, None)} | {_cell(r.get('tau_gen_log'), None)} | "
                     + (f"{q:.4g}" if np.isfinite(q) else "-") + " | "
                     + " | ".join(_cell(r["tau_mem"][lv], r["max_f_mem"]) for lv in levels)
                     + f" | {_cell(tg * r['W'], None)} | "
                     + (f"{t1 * r['W'] / r['n']:,.1f}" if np.isfinite(t1) else "-") + " |")
    lines.append("")
    lines.append(f"Final quality: {qname} at the last checkpoint. tau_gen (linear rule) is where "
                 "quality made 95% of its plain improvement, the log rule 95% of its log "
                 "improvement (at a checkpoint); a width whose final quality is far from the "
                 "others' has not learned the data as well, and its tau_gen reads differ most.")
    lines.append("")
    for n, fn in summary["fits_against_W"].items():
        lines.append(f"- n = {n}: tau_gen {format_fit(fn['tau_gen'], 'W')}")
        if "tau_gen_log" in fn:
            lines.append(f"- n = {n}: tau_gen (log rule) {format_fit(fn['tau_gen_log'], 'W')}")
        for lv in levels:
            lines.append(f"- n = {n}: tau_mem({100 * float(lv):g}%) {format_fit(fn[f'tau_mem_{lv}'], 'W')}")
    lines.append("- the paper: tau_gen ∝ W^-1 and tau_mem ∝ n W^-1")
    return "\n".join(lines) + "\n"


def plot_widths(summary: dict, out) -> None:
    """widths_quality.png (quality vs step and step x W) and widths_fmem.png (normalised f_mem vs
    step / n and step x W / n)."""
    plt = pyplot()
    out = Path(out)
    runs = summary["runs"]
    ws = sorted({r["W"] for r in runs})
    ns = sorted({r["n"] for r in runs})
    colors = {w: plt.cm.plasma(0.85 * i / max(1, len(ws) - 1)) for i, w in enumerate(ws)}
    styles = {n: s for n, s in zip(ns, ["-", "--", ":", "-."] * 8)}
    first_seed = min(r["seed"] for r in runs)

    def label(r):
        return (f"W = {r['W']}" + (f", n = {r['n']}" if len(ns) > 1 else "")
                if r["seed"] == first_seed else None)

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        q = dict(zip(r["early_steps"] or [], r["early_quality"] or [])) | dict(zip(r["steps"], r["quality"] or []))
        st = np.array(sorted(q), float)
        qq = np.array([_num(q[s]) for s in sorted(q)], float)
        if st.size:
            for a, x in zip(ax, (st, st * r["W"])):
                a.plot(x, qq, styles[r["n"]], color=colors[r["W"]], label=label(r))
    qname = runs[0].get("quality_name") or "quality"
    ax[0].set(xscale="log", yscale="log", xlabel="training step", ylabel=qname)
    ax[1].set(xscale="log", yscale="log", xlabel="step x W", ylabel=qname,
              title="paper: collapse (tau_gen ∝ 1/W)")
    legends(ax, fontsize=7)
    save_png(fig, out / "widths_quality.png")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        st, f = np.array(r["steps"], float), np.array([_num(v) for v in r["f_mem"]], float)
        norm = collapse_norm(f)
        if norm is None:  # final f_mem 0: nothing to normalise by (left out, not a spike)
            continue
        ax[0].plot(st / r["n"], norm, styles[r["n"]], color=colors[r["W"]], label=label(r))
        ax[1].plot(st * r["W"] / r["n"], norm, styles[r["n"]], color=colors[r["W"]], label=label(r))
    ax[0].set(xscale="log", xlabel="step / n", ylabel="f_mem / f_mem(last)")
    ax[1].set(xscale="log", xlabel="step x W / n", ylabel="f_mem / f_mem(last)",
              title="paper: collapse (tau_mem ∝ n/W)")
    legends(ax, fontsize=7)
    save_png(fig, out / "widths_fmem.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_models.ddpm.widths",
                                description="The width law: tau_gen and tau_mem per W from sweeps at fixed n.")
    p.add_argument("sweeps", nargs="+", help="analysed sweep folders, one per width (sweep.json)")
    p.add_argument("--out", required=True, help="folder for widths.md/.json and the two figures")
    a = p.parse_args(argv)
    try:
        summary = analyse_widths(a.sweeps, a.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(widths_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
