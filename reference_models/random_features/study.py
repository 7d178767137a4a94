"""Write the random-features study: spectrum, losses, collapse, E_score minimum and the tau_mem table.

    python -m reference_models.random_features --out rf-study            # ~13 min on 1 thread, d = 50
    python -m reference_models.random_features --out rf-study --d 100    # slower, closer to the paper
    python -m reference_models.random_features --grid-only --grid-d 10 --grid-psi-p 64 128 256 512 \
        --grid-psi-n 4 8 16 32 --grid-seeds 2 --out rf-profile         # L_gen rise as p >> n

Everything is computed here, from the Gaussian-equivalent matrices (closed-form gradient flow) and,
as a check, from gradient descent with sampled tanh features and fresh noise at every step.
Measured tau_mem is defined, without a tuned threshold, as the time at which the generalization loss
L_gen = L_test - L_train reaches half of its value at tau = infinity (the closed form gives that
limit exactly); the onset time at which L_gen first reaches 0.1 is reported beside it, and so is the
tau_mem implied by the empirical spectrum's smallest rho_1 eigenvalue. The (psi_p, psi_n) grid gives
the Fig. 5 C heat maps of L_gen at tau = 1e3 and 1e4 and, per psi_p, the times at which L_gen reaches
10%, 50% and 90% of its limit with their exponents against psi_n (proportional growth needs p >> n).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from memaudit.io import atomic_write_text
from memaudit.tracking import level_crossing

from ..figures import pyplot, save_png
from ..fits import fit_exponent
from .constants import rf_constants
from .dynamics import ClosedForm, gaussian_equivalent, simulate_sampled
from .spectrum import empirical_rho1, theory_density

PAPER_ESCORE_EXPONENT = 0.59  # Bonnaire et al. 2025, Fig. 13 (psi_p = 32, t = 0.01)
ONSET_LEVEL = 0.1  # L_gen departs from 0: the first tau where L_gen >= 0.1


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


crossing_time = level_crossing  # first tau where a curve reaches a level (log-linear)


def exponent(x, y) -> float:
    """Slope of log y against log x (least squares; :func:`reference_models.fits.fit_exponent`)."""
    return fit_exponent(x, y)[0]


def spectrum_part(out: Path, d: int, psi_p: float, psi_n: float, t: float, seed: int, plt):
    m = gaussian_equivalent(d, psi_p, psi_n, t, seed=seed)
    ev = np.linalg.eigvalsh(m.U)
    lo, hi = empirical_rho1(ev, m.c, m.d)
    pred_lo, pred_hi = m.c.rho1_edges(psi_p, psi_n)
    grid = np.linspace(0.5 * pred_lo, 1.3 * pred_hi, 300)
    dens = theory_density(grid, m.c, psi_p, psi_n)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    edges = np.linspace(grid[0], grid[-1], 61)
    bulk = ev[(ev >= edges[0]) & (ev <= edges[-1])]
    # weights 1 / (p * bin width): the histogram is the spectral density, like Im q / pi
    ax.hist(bulk, bins=edges, weights=np.full(bulk.size, 1 / (m.p * (edges[1] - edges[0]))),
            alpha=0.6, label=f"eigenvalues of U (d = {d}, one draw)")
    ax.plot(grid, dens, "k-", lw=1.5, label="Theorem 3.1 density")
    for e in (pred_lo, pred_hi):
        ax.axvline(e, color="C3", ls="--", lw=1)
    ax.axvline(np.nan, color="C3", ls="--", lw=1, label=r"$\rho_1$ edges $s_t^2+v_t^2(1\pm\sqrt{\psi_p/\psi_n})^2$")
    ax.set_xlabel(r"eigenvalue $\lambda$")
    ax.set_ylabel(r"density $\rho(\lambda)$")
    ax.set_title(rf"Spectrum of U: $\psi_p$={psi_p:g}, $\psi_n$={psi_n:g}, t={t:g} (memorization bulk $\rho_1$)",
                 fontsize=9)
    ax.legend(fontsize=7)
    save_png(fig, out / "spectrum.png")
    mass = float(np.nansum(dens) * (grid[1] - grid[0]))
    return {"d": d, "psi_p": psi_p, "psi_n": psi_n, "t": t,
            "empirical_edges": [lo, hi], "predicted_edges": [float(pred_lo), float(pred_hi)],
            "relative_error": [abs(lo / pred_lo - 1), abs(hi / pred_hi - 1)],
            "theory_rho1_mass": mass, "expected_rho1_mass": psi_n / psi_p,
            "delta_peak_fraction": float(np.mean(np.isclose(ev, m.c.s2, rtol=1e-6, atol=1e-12)))}


def losses_part(out: Path, d: int, psi_p: float, psi_ns, t: float, seeds, taus, plt):
    c = rf_constants(t)
    rows, curves = [], {}
    for psi_n in psi_ns:
        per_seed = []
        for seed in seeds:
            t0 = time.perf_counter()
            m = gaussian_equivalent(d, psi_p, psi_n, t, seed=seed)
            cf = ClosedForm(m)
            cur = cf.curves(taus)
            inf = cf.curves([np.inf])
            lo_emp, _ = empirical_rho1(cf.lam, m.c, m.d)
            gen_inf = float(inf["gen"][0])
            per_seed.append({
                "curves": cur,
                "gen_inf": gen_inf,
                "tau_half": crossing_time(taus, cur["gen"], 0.5 * gen_inf),
                "tau_onset": crossing_time(taus, cur["gen"], ONSET_LEVEL),
                "tau_spectrum": psi_p / (c.delta * lo_emp),
                "score_min": float(np.min(cur["score"])),
                "tau_score_min": float(taus[int(np.argmin(cur["score"]))]),
            })
            _log(f"  psi_n = {psi_n:g}, seed {seed}: p = {m.p}, n = {m.n}, "
                 f"{time.perf_counter() - t0:.1f} s")
        curves[psi_n] = {k: np.mean([s["curves"][k] for s in per_seed], axis=0)
                         for k in per_seed[0]["curves"]}
        mean = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0] if k != "curves"}
        std = {k: float(np.std([s[k] for s in per_seed])) for k in per_seed[0] if k != "curves"}
        rows.append({"psi_n": psi_n, "tau_mem_predicted": c.tau_mem(psi_p, psi_n), **mean,
                     "std": std})
    return rows, curves


def plot_losses(out, taus, curves, rows, psi_p, t, plt):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (psi_n, cur) in enumerate(curves.items()):
        col = f"C{i}"
        axes[0].plot(taus, cur["train"], "-", color=col, label=rf"$\psi_n$={psi_n:g} train")
        axes[0].plot(taus, cur["test"], "--", color=col, label="test")
        axes[1].plot(taus, cur["gen"], color=col, label=rf"$\psi_n$={psi_n:g}")
        tau_mem = rows[i]["tau_mem_predicted"]
        axes[2].plot(taus / tau_mem, cur["gen"] / rows[i]["gen_inf"], color=col,
                     label=rf"$\psi_n$={psi_n:g}")
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel(r"$L_{gen} = L_{test} - L_{train}$")
    axes[2].set_ylabel(r"$L_{gen} / L_{gen}(\infty)$")
    axes[2].set_xlabel(r"$\tau / \tau_{mem}$, $\tau_{mem} = \psi_p / (\Delta_t \lambda_{min})$")
    for ax in axes[:2]:
        ax.set_xlabel(r"training time $\tau = k\eta/d^2$")
    for ax in axes:
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(rf"Random-features dynamics (closed form, Gaussian equivalent), $\psi_p$={psi_p:g}, t={t:g}",
                 fontsize=10)
    save_png(fig, out / "losses.png")


def plot_score(out, taus, curves, rows, score_rows, plt):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (psi_n, cur) in enumerate(curves.items()):
        axes[0].plot(taus, cur["score"], color=f"C{i}", label=rf"$\psi_n$={psi_n:g}")
        axes[0].plot(rows[i]["tau_score_min"], rows[i]["score_min"], "o", color=f"C{i}")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel(r"$\tau$")
    axes[0].set_ylabel(r"$E_{score}$")
    axes[0].legend(fontsize=7)
    for label, rs, mk in score_rows:
        x = [r["psi_n"] for r in rs]
        y = [r["score_min"] for r in rs]
        slope = exponent(x, y)
        axes[1].loglog(x, y, mk + "-", label=f"{label}: slope {slope:.2f}")
    axes[1].set_xlabel(r"$\psi_n$")
    axes[1].set_ylabel(r"min over $\tau$ of $E_{score}$")
    axes[1].set_title(f"paper (psi_p=32, t=0.01): slope -{PAPER_ESCORE_EXPONENT}", fontsize=9)
    axes[1].legend(fontsize=7)
    save_png(fig, out / "escore.png")


def sampled_part(out, d, psi_p, psi_ns, t, taus, dtau, seed, plt):
    """Gradient descent with sampled tanh features and fresh noise, beside the closed form."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    res = []
    for i, psi_n in enumerate(psi_ns):
        t0 = time.perf_counter()
        sim = simulate_sampled(d, psi_p, psi_n, t, taus, dtau=dtau, seed=seed)
        cf = ClosedForm(gaussian_equivalent(d, psi_p, psi_n, t, seed=seed)).curves(taus)
        ax.plot(taus, sim["gen"], "o", ms=3, color=f"C{i}", label=rf"sampled, $\psi_n$={psi_n:g}")
        ax.plot(taus, cf["gen"], "-", color=f"C{i}", label="Gaussian equivalent, closed form")
        _log(f"  sampled features psi_n = {psi_n:g}: {time.perf_counter() - t0:.1f} s")
        res.append({"psi_n": psi_n,
                    "max_abs_diff_train": float(np.max(np.abs(sim["train"] - cf["train"]))),
                    "max_abs_diff_test": float(np.max(np.abs(sim["test"] - cf["test"]))),
                    "gen_final_sampled": float(sim["gen"][-1]),
                    "gen_final_closed_form": float(cf["gen"][-1])})
    ax.set_xscale("log")
    ax.set_xlabel(r"$\tau$")
    ax.set_ylabel(r"$L_{gen}$")
    ax.set_title(f"Sampled tanh features, fresh noise each step (d = {d}) vs closed form", fontsize=9)
    ax.legend(fontsize=7)
    save_png(fig, out / "sampled.png")
    return res


def mode_groups_part(d: int, psi_p: float, psi_ns, t: float, taus, seed: int = 0):
    """Which eigenmodes of U carry L_gen: the d just above s_t^2, rho_1, or rho_2.

    L_gen is recomputed with the d low modes held at zero (never trained); their share of L_gen(inf)
    and the timing of what remains are reported.
    """
    rows = []
    for psi_n in psi_ns:
        m = gaussian_equivalent(d, psi_p, psi_n, t, seed=seed)
        cf = ClosedForm(m)
        lam = cf.lam
        above = np.flatnonzero(lam > m.c.s2 * (1 + 1e-6))
        low = above[:d]
        keep = np.ones(lam.size, bool)
        keep[low] = False
        full = cf.curves(taus, mask=None)["gen"]
        rest = cf.curves(taus, mask=keep)["gen"]
        rows.append({
            "psi_n": psi_n,
            "low_lambda_range": [float(lam[low].min()), float(lam[low].max())],
            "gen_inf_all_modes": float(full[-1]),
            "gen_inf_without_low_modes": float(rest[-1]),
            "tau_half_all_modes": crossing_time(taus, full, 0.5 * full[-1]),
            "tau_half_without_low_modes": crossing_time(taus, rest, 0.5 * rest[-1]),
            "tau_90_without_low_modes": crossing_time(taus, rest, 0.9 * rest[-1]),
        })
    return rows


RISE_LEVELS = (0.1, 0.5, 0.9)  # L_gen / L_gen(inf) read-offs of the onset study


def grid_part(d: int, psi_ps, psi_ns, t: float, taus, heat_taus, seeds, fit_range=(4, 32)) -> dict:
    """L_gen over a (psi_p, psi_n) grid at one d: the Fig. 5 C heat maps and the rise of L_gen.

    For every cell (closed form, Gaussian equivalent, averaged over ``seeds``): L_gen at each of
    ``heat_taus``, L_gen(inf), and the times at which L_gen first reaches 10%, 50% and 90% of
    L_gen(inf) (log-linear interpolation on ``taus``), beside the predicted tau_mem. Exponents of
    those times against psi_n are fitted per psi_p over the psi_n in ``fit_range`` (the paper's
    Fig. 5 range by default) that are below psi_p.
    """
    P, N = len(psi_ps), len(psi_ns)
    gen_at = np.full((len(heat_taus), P, N), np.nan)
    gen_inf = np.full((P, N), np.nan)
    rise = np.full((len(RISE_LEVELS), P, N), np.nan)
    curves = {}
    for i, psi_p in enumerate(psi_ps):
        for j, psi_n in enumerate(psi_ns):
            t0 = time.perf_counter()
            at, inf, rs, cur = [], [], [], []
            for seed in seeds:
                cf = ClosedForm(gaussian_equivalent(d, psi_p, psi_n, t, seed=seed))
                gen = cf.curves(np.concatenate([taus, heat_taus, [np.inf]]))["gen"]  # one pass
                g, g_inf = gen[:len(taus)], float(gen[-1])
                at.append(gen[len(taus):-1])
                inf.append(g_inf)
                rs.append([crossing_time(taus, g, q * g_inf) for q in RISE_LEVELS])
                cur.append(g / g_inf)
            gen_at[:, i, j] = np.mean(at, axis=0)
            gen_inf[i, j] = np.mean(inf)
            rise[:, i, j] = np.mean(rs, axis=0)
            curves[(psi_p, psi_n)] = np.mean(cur, axis=0)
            _log(f"  grid psi_p = {psi_p:g}, psi_n = {psi_n:g}: {time.perf_counter() - t0:.1f} s")
    c = rf_constants(t)
    pred = np.array([[c.tau_mem(pp, pn) for pn in psi_ns] for pp in psi_ps])
    slopes = {}
    for i, psi_p in enumerate(psi_ps):
        x_all = np.asarray(psi_ns, float)  # the p > n side, where rho_1 has a left edge above s_t^2
        ok = (x_all < psi_p) & (x_all >= fit_range[0]) & (x_all <= fit_range[1])
        if ok.sum() >= 2:
            x = np.asarray(psi_ns, float)[ok]
            slopes[f"{psi_p:g}"] = {
                "psi_n": x.tolist(),
                "predicted_tau_mem": exponent(x, pred[i, ok]),
                **{f"rise_{int(100 * q)}": exponent(x, rise[k, i, ok]) for k, q in enumerate(RISE_LEVELS)},
            }
    return {"d": d, "t": t, "psi_p": list(map(float, psi_ps)), "psi_n": list(map(float, psi_ns)),
            "seeds": len(seeds), "fit_range": list(fit_range), "heat_taus": list(map(float, heat_taus)), "gen_at": gen_at,
            "gen_inf": gen_inf, "rise_levels": list(RISE_LEVELS), "rise": rise,
            "tau_mem_predicted": pred, "exponents": slopes, "_curves": curves, "_taus": taus}


def plot_grid(out: Path, g: dict, plt):
    """heatmap.png (L_gen over psi_n and psi_p at each heat tau) and onset.png (collapse in tau/psi_n)."""
    pp, pn = np.asarray(g["psi_p"]), np.asarray(g["psi_n"])
    fig, axes = plt.subplots(1, len(g["heat_taus"]), figsize=(5.2 * len(g["heat_taus"]), 4))
    vmax = np.nanmax(g["gen_at"])
    for k, ax in enumerate(np.atleast_1d(axes)):
        im = ax.imshow(g["gen_at"][k], origin="lower", cmap="magma", vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(pn.size), [f"{v:g}" for v in pn])
        ax.set_yticks(range(pp.size), [f"{v:g}" for v in pp])
        ax.set_xlabel(r"$\psi_n = n/d$")
        ax.set_ylabel(r"$\psi_p = p/d$")
        ax.plot(np.arange(pn.size), np.interp(np.log(pn), np.log(pp), np.arange(pp.size),
                                              left=np.nan, right=np.nan), "w--", lw=1, label="n = p")
        ax.set_title(rf"$L_{{gen}}$ at $\tau$ = {g['heat_taus'][k]:g} (d = {g['d']}, t = {g['t']:g})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        fig.colorbar(im, ax=ax)
    save_png(fig, out / "heatmap.png")

    fitted = [p for p in g["psi_p"] if f"{p:g}" in g["exponents"]]
    shown = fitted[:1] + fitted[-1:] if len(fitted) > 1 else fitted  # smallest and largest psi_p
    lo, hi = g["fit_range"]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(4.4 * (len(shown) + 1), 3.6))
    taus = g["_taus"]
    for ax, psi_p in zip(axes, shown):
        for j, psi_n in enumerate(pn[(pn < psi_p) & (pn >= lo) & (pn <= hi)]):
            ax.plot(taus / psi_n, g["_curves"][(psi_p, psi_n)], color=f"C{j}", label=rf"$\psi_n$={psi_n:g}")
        ax.set_xscale("log")
        ax.set_xlabel(r"$\tau / \psi_n$")
        ax.set_ylabel(r"$L_{gen} / L_{gen}(\infty)$")
        ax.set_title(rf"$\psi_p$ = {psi_p:g}: collapse in $\tau/\psi_n$? (d = {g['d']})", fontsize=9)
        ax.legend(fontsize=6)
    ax = axes[-1]
    for i, psi_p in enumerate(g["psi_p"]):
        e = g["exponents"].get(f"{psi_p:g}")
        if e is None:
            continue
        x = np.asarray(e["psi_n"])
        y = g["rise"][1, i][np.isin(pn, x)]
        ax.loglog(x, y, "o-", color=f"C{i}", label=rf"$\psi_p$={psi_p:g}: slope {e['rise_50']:.2f}")
    last = g["psi_p"].index(fitted[-1])
    x0 = np.asarray(g["exponents"][f"{fitted[-1]:g}"]["psi_n"])
    y0 = g["rise"][1, last][np.isin(pn, x0)][0]
    ax.loglog(x0, y0 * x0 / x0[0], "k:", lw=1, label="slope 1")
    ax.set_title("half-rise time of $L_{gen}$", fontsize=9)
    ax.set_xlabel(r"$\psi_n$")
    ax.set_ylabel(r"$\tau$ where $L_{gen}$ = half its limit")
    ax.legend(fontsize=6)
    save_png(fig, out / "onset.png")


def grid_table(g: dict) -> str:
    """Markdown: L_gen(inf) and the 10/50/90% rise times per cell, and the fitted exponents."""
    lines = [f"L_gen rise over (psi_p, psi_n), d = {g['d']}, t = {g['t']:g}, {g['seeds']} draw(s): "
             "tau at 10% / 50% / 90% of L_gen(inf), predicted tau_mem",
             "", "| psi_p | psi_n | L_gen(inf) | 10% | 50% | 90% | predicted tau_mem | "
             + " | ".join(f"L_gen at tau={v:g}" for v in g["heat_taus"]) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(g["heat_taus"])]
    for i, pp in enumerate(g["psi_p"]):
        for j, pn in enumerate(g["psi_n"]):
            if pn >= pp:
                continue
            r = g["rise"][:, i, j]
            lines.append(f"| {pp:g} | {pn:g} | {g['gen_inf'][i, j]:.3f} | {r[0]:,.0f} | {r[1]:,.0f} | "
                         f"{r[2]:,.0f} | {g['tau_mem_predicted'][i, j]:,.0f} | "
                         + " | ".join(f"{g['gen_at'][k, i, j]:.3f}" for k in range(len(g["heat_taus"]))) + " |")
    lines += ["", f"Exponents of the rise times against psi_n ({g['fit_range'][0]:g} <= psi_n <= "
              f"{g['fit_range'][1]:g}, psi_n < psi_p):", ""]
    for pp, e in g["exponents"].items():
        lines.append(f"- psi_p = {pp}: 10% {e['rise_10']:.2f}, 50% {e['rise_50']:.2f}, 90% {e['rise_90']:.2f}; "
                     f"predicted tau_mem {e['predicted_tau_mem']:.2f} (psi_n {', '.join(f'{v:g}' for v in e['psi_n'])})")
    return "\n".join(lines) + "\n"


def write_table(out: Path, rows, psi_p, t, d, seeds) -> str:
    lines = [
        f"Predicted vs measured tau_mem, psi_p = {psi_p:g}, t = {t:g}, d = {d}, "
        f"{len(seeds)} draw(s) per psi_n (mean)",
        "",
        "| psi_n | predicted psi_p/(Delta_t lambda_min) | from the empirical spectrum | "
        "L_gen at half its limit | L_gen onset (L_gen >= 0.1) | L_gen(inf) | min E_score (at tau) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['psi_n']:g} | {r['tau_mem_predicted']:,.0f} | {r['tau_spectrum']:,.0f} | "
            f"{r['tau_half']:,.0f} | {r['tau_onset']:,.0f} | {r['gen_inf']:.3f} | "
            f"{r['score_min']:.4f} ({r['tau_score_min']:.0f}) |"
        )
    x = [r["psi_n"] for r in rows]
    lines += [
        "",
        f"Fitted exponents against psi_n: tau_mem predicted {exponent(x, [r['tau_mem_predicted'] for r in rows]):.2f}, "
        f"L_gen half-rise {exponent(x, [r['tau_half'] for r in rows]):.2f}, "
        f"L_gen onset {exponent(x, [r['tau_onset'] for r in rows]):.2f}, "
        f"E_score minimum {exponent(x, [r['score_min'] for r in rows]):.2f}.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "table.md", text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m reference_models.random_features",
        description="Random-features theory of memorization (Bonnaire et al. 2025, Sec. 3): "
        "spectrum, loss curves, collapse, E_score minimum and a predicted-vs-measured tau_mem table.")
    p.add_argument("--out", default="rf-study", help="output folder (figures, table.md, results.json)")
    p.add_argument("--d", type=int, default=50, help="input dimension for the loss study (50-100)")
    p.add_argument("--spectrum-d", type=int, default=100, help="dimension of the spectrum figure")
    p.add_argument("--psi-p", type=float, default=64.0)
    p.add_argument("--psi-n", type=float, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--t", type=float, default=0.1, help="diffusion time of the loss study")
    p.add_argument("--seeds", type=int, default=2, help="draws per psi_n (results are averaged)")
    p.add_argument("--sampled-d", type=int, default=30,
                   help="dimension of the sampled-features check (0 to skip)")
    p.add_argument("--grid-d", type=int, default=16, help="dimension of the (psi_p, psi_n) grid (0: skip)")
    p.add_argument("--grid-psi-p", type=float, nargs="+", default=[8, 16, 32, 64, 128, 256],
                   help="psi_p = p/d values of the grid (rows of the heat maps)")
    p.add_argument("--grid-psi-n", type=float, nargs="+", default=[1, 2, 4, 8, 16, 32, 64],
                   help="psi_n = n/d values of the grid (columns of the heat maps)")
    p.add_argument("--grid-seeds", type=int, default=1, help="draws per grid cell")
    p.add_argument("--grid-fit-psi-n", type=float, nargs=2, default=[4, 32],
                   help="psi_n range of the exponent fits (default: the paper's Fig. 5 range)")
    p.add_argument("--grid-only", action="store_true",
                   help="only the (psi_p, psi_n) grid: heatmap.png, onset.png, the grid table")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    a = p.parse_args(argv)
    try:
        plt = pyplot()
    except ImportError:
        p.error("the study's figures need matplotlib: pip install matplotlib")
    if a.quick:
        a.d, a.spectrum_d, a.seeds, a.sampled_d, a.psi_n = 12, 16, 1, 8, [2, 4]
        a.grid_d, a.grid_psi_p, a.grid_psi_n, a.grid_fit_psi_n = 6, [4, 8], [1, 2, 4], [1, 4]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results = {"config": vars(a).copy()}

    taus_long = np.logspace(-1, 7, 321)
    table = ""
    if not a.grid_only:
        _log(f"spectrum: d = {a.spectrum_d}, psi_p = {a.psi_p:g}, psi_n = 8, t = 0.01 (Fig. 4)")
        results["spectrum"] = spectrum_part(out, a.spectrum_d, a.psi_p, 8.0 if not a.quick else 2.0,
                                            0.01, 0, plt)

        taus = np.logspace(-1, 6, 141)
        _log(f"losses: d = {a.d}, psi_p = {a.psi_p:g}, t = {a.t:g}, psi_n = {a.psi_n}")
        rows, curves = losses_part(out, a.d, a.psi_p, a.psi_n, a.t, range(a.seeds), taus, plt)
        results["tau_mem"] = rows
        plot_losses(out, taus, curves, rows, a.psi_p, a.t, plt)

        # E_score minimum at the paper's Fig. 13 setting (psi_p = 32, t = 0.01)
        psi_p13 = 32.0 if not a.quick else 8.0
        psi_n13 = [2, 4, 8, 16] if not a.quick else [2, 4]
        _log(f"E_score minimum: psi_p = {psi_p13:g}, t = 0.01, psi_n = {psi_n13} (Fig. 13 setting)")
        rows13, _ = losses_part(out, a.d, psi_p13, psi_n13, 0.01, range(a.seeds), taus, plt)
        results["escore_fig13"] = rows13
        plot_score(out, taus, curves, rows, [
            (f"psi_p={a.psi_p:g}, t={a.t:g}", rows, "o"),
            (f"psi_p={psi_p13:g}, t=0.01", rows13, "s"),
        ], plt)
        results["escore_exponent"] = {
            "loss_study": exponent([r["psi_n"] for r in rows], [r["score_min"] for r in rows]),
            "fig13_setting": exponent([r["psi_n"] for r in rows13], [r["score_min"] for r in rows13]),
            "paper": -PAPER_ESCORE_EXPONENT,
        }

        if a.sampled_d > 0:
            _log(f"sampled features: d = {a.sampled_d}, psi_p = {a.psi_p:g}, t = {a.t:g}")
            s_taus = np.logspace(0, 4.3, 25)
            results["sampled"] = sampled_part(out, a.sampled_d, a.psi_p, a.psi_n[:2], a.t, s_taus,
                                              dtau=2.0, seed=0, plt=plt)

        _log("mode groups: L_gen with and without the d modes just above s_t^2")
        groups = mode_groups_part(a.d, a.psi_p, a.psi_n, a.t, taus_long)
        results["mode_groups"] = groups
        table = write_table(out, rows, a.psi_p, a.t, a.d, range(a.seeds))
        x = [g["psi_n"] for g in groups]
        table += (
            "\nL_gen by eigenmode group (seed 0): psi_n | lambda range of the d low modes | L_gen(inf) "
            "all modes | without the low modes | half-rise without them | 90% without them\n"
            + "".join(f"{g['psi_n']:g} | [{g['low_lambda_range'][0]:.4f}, {g['low_lambda_range'][1]:.4f}] | "
                      f"{g['gen_inf_all_modes']:.3f} | {g['gen_inf_without_low_modes']:.3f} | "
                      f"{g['tau_half_without_low_modes']:,.0f} | {g['tau_90_without_low_modes']:,.0f}\n"
                      for g in groups)
            + f"Exponents without the low modes: half-rise "
              f"{exponent(x, [g['tau_half_without_low_modes'] for g in groups]):.2f}, 90% point "
              f"{exponent(x, [g['tau_90_without_low_modes'] for g in groups]):.2f}.\n"
        )
    if a.grid_d > 0:
        _log(f"grid: d = {a.grid_d}, psi_p = {a.grid_psi_p}, psi_n = {a.grid_psi_n}, t = {a.t:g}")
        grid = grid_part(a.grid_d, a.grid_psi_p, a.grid_psi_n, a.t, taus_long, [1e3, 1e4],
                         range(a.grid_seeds), tuple(a.grid_fit_psi_n))
        plot_grid(out, grid, plt)
        table += "\n" + grid_table(grid)
        results["grid"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in grid.items() if not k.startswith("_")}
    atomic_write_text(out / "table.md", table)
    results["elapsed_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    print(table)
    if not a.grid_only:
        print(f"spectrum: empirical rho_1 edges {results['spectrum']['empirical_edges']} vs predicted "
              f"{results['spectrum']['predicted_edges']}")
        print(f"E_score minimum exponent: {results['escore_exponent']}")
    print(f"wrote {out}/ in {results['elapsed_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
