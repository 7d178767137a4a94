"""Power-law fits of the scaling studies (tau_mem against n, rise times against psi_n, E_score).

:func:`fit_exponent` is the bare least-squares slope. :func:`exponent_fit` is what a study reports:
the slope with every interval that can honestly be put on it, side by side, and a reason instead of
a number when the fit is not resolved:

- ``ols``: the regression interval over the points, slope +- t(m - 2) x its standard error
  (scipy.stats.linregress on log x, log y): it sees the scatter of the points about the line,
  checkpoint grid and seeds included, and needs at least 3 points;
- ``seed_level``: the slope fitted on each seed alone, and a bootstrap over seeds only (the points
  of each x resampled with replacement, nothing else), when some x has >= 2 seeds; with few seeds
  it has few distinct values, which is why it is reported beside the others, not instead;
- ``bootstrap``: the caller's own bootstrap slopes (e.g. the sweep's resampling of the generated
  samples and of the seeds), summarised by their percentiles; a replicate in which some run never
  reaches the level is unresolved (NaN), and when more of them than one tail of the interval holds
  ((1 - confidence) / 2) the percentiles would be censored, so no bootstrap interval is given.

A fit is *resolved* only when every point is a finite positive value: a run that never reached a
level has no tau there, and dropping it would bias the slope towards the runs that did reach it
(the largest n are the ones that do not), so the fit says "not resolved: level reached in k of m
runs" instead.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_exponent", "exponent_fit", "format_fit"]


def fit_exponent(x, y) -> tuple[float, float]:
    """Slope and intercept of log y against log x (least squares): y ~ exp(intercept) x^slope.

    Points whose y is not finite (a run that never crossed the level) are left out; with fewer
    than two distinct x left the fit is undefined and both values are NaN. Studies that report an
    exponent with intervals use :func:`exponent_fit`, which refuses such a fit instead.

    Parameters
    ----------
    x, y : array_like
        Positive abscissae (n, psi_n) and values (times, scores), of the same length.

    Returns
    -------
    (float, float)
        The exponent and the intercept of the log-log line.

    Examples
    --------
    >>> slope, icpt = fit_exponent([1, 2, 4], [3, 6, 12])
    >>> round(slope, 6), round(float(np.exp(icpt)), 6)
    (1.0, 3.0)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y)
    if np.unique(x[ok]).size < 2:
        return float("nan"), float("nan")
    slope, icpt = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return float(slope), float(icpt)


def _percentiles(values, confidence: float):
    a = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(values, [a, 100 - a])
    return [float(lo), float(hi)]


def _seed_level(lx, ly, groups, confidence: float, n_bootstrap: int, seed: int) -> dict:
    from scipy import stats

    labels = sorted(set(groups.tolist()), key=str)
    per_seed = {}
    for g in labels:
        m = groups == g
        if np.unique(lx[m]).size >= 2:
            per_seed[str(g)] = float(np.polyfit(lx[m], ly[m], 1)[0])
    out = {"n_seeds": len(labels), "per_seed": per_seed, "ci": None, "per_seed_t_ci": None,
           "method": "bootstrap over seeds only (the points of each x resampled with replacement)"}
    cells = [np.flatnonzero(lx == v) for v in np.unique(lx)]
    if max(c.size for c in cells) < 2:
        out["reason"] = "one seed per x: no seed-level interval"
        return out
    rng = np.random.default_rng(seed)
    slopes = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(c, size=c.size, replace=True) for c in cells])
        slopes[b] = np.polyfit(lx[idx], ly[idx], 1)[0]
    out["ci"] = _percentiles(slopes, confidence)
    out["n_bootstrap"] = int(n_bootstrap)
    out["n_distinct"] = int(np.unique(np.round(slopes, 12)).size)
    if len(per_seed) >= 2:
        v = np.array(list(per_seed.values()))
        half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
        out["per_seed_t_ci"] = [float(v.mean() - half), float(v.mean() + half)]
    return out


def exponent_fit(x, y, *, groups=None, bootstrap=None, confidence: float = 0.95,
                 n_bootstrap: int = 1000, seed: int = 0, what: str = "level reached") -> dict:
    """The exponent of y ~ x^a with its OLS, seed-level and (given) bootstrap intervals.

    Parameters
    ----------
    x, y : array_like
        Abscissae (n, W) and values (tau_mem of each run), one entry per run. A non-finite or
        non-positive y is a run where the quantity does not exist (the level was never reached).
    groups : array_like, optional
        The seed of each run: adds the seed-level interval.
    bootstrap : array_like, optional
        Slopes from the caller's own bootstrap (non-finite entries, unresolved replicates, are
        counted and left out).
    confidence : float, default=0.95
    n_bootstrap : int, default=1000
        Resamples of the seed-level bootstrap.
    seed : int, default=0
        Seed of the seed-level bootstrap.
    what : str, default="level reached"
        Wording of the not-resolved reason ("level reached in k of m runs").

    Returns
    -------
    dict
        ``resolved``, ``reason`` (None when resolved), ``n_points``, ``n_finite``, ``exponent``
        and ``intercept`` (None when not resolved), ``ols`` (``ci``, ``stderr``, ``dof``, ``t``;
        ``ci`` None with a ``reason`` under 3 points), ``seed_level`` (None without groups) and
        ``bootstrap`` (None without bootstrap slopes).

    Examples
    --------
    >>> f = exponent_fit([64, 128, 256], [640, 1280, 2560])
    >>> round(f["exponent"], 6), [round(c, 6) for c in f["ols"]["ci"]]
    (1.0, [1.0, 1.0])
    >>> exponent_fit([64, 128, 256], [640, 1280, float("nan")])["reason"]
    'not resolved: level reached in 2 of 3 runs'
    """
    from scipy import stats

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y need one entry per run: {x.size} x values, {y.size} y values")
    if x.size and (not np.all(np.isfinite(x)) or np.any(x <= 0)):
        raise ValueError("x must be finite and positive (a power law is fitted on log x)")
    ok = np.isfinite(y) & (y > 0)
    out = {"resolved": False, "reason": None, "n_points": int(y.size), "n_finite": int(ok.sum()),
           "confidence": confidence, "exponent": None, "intercept": None, "ols": None,
           "seed_level": None, "bootstrap": None}
    if not ok.all():
        out["reason"] = f"not resolved: {what} in {int(ok.sum())} of {y.size} runs"
        return out
    if np.unique(x).size < 2:
        out["reason"] = f"not resolved: {np.unique(x).size} distinct x (a slope needs 2)"
        return out
    lx, ly = np.log(x), np.log(y)
    reg = stats.linregress(lx, ly)
    out.update(resolved=True, exponent=float(reg.slope), intercept=float(reg.intercept))
    dof = y.size - 2
    if dof >= 1:
        t = float(stats.t.ppf(0.5 + confidence / 2, dof))
        se = float(reg.stderr)
        out["ols"] = {"ci": [float(reg.slope - t * se), float(reg.slope + t * se)], "stderr": se,
                      "dof": dof, "t": t}
    else:
        out["ols"] = {"ci": None, "stderr": None, "dof": 0, "t": None,
                      "reason": "2 points: no residual degrees of freedom"}
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.shape != x.shape:
            raise ValueError(f"groups needs one entry per run: {groups.size} for {x.size} runs")
        out["seed_level"] = _seed_level(lx, ly, groups, confidence, n_bootstrap, seed)
    if bootstrap is not None:
        b = np.asarray(bootstrap, float).ravel()
        good = b[np.isfinite(b)]
        bad = b.size - good.size
        boot = {"ci": None, "n": int(b.size), "n_unresolved": int(bad)}
        if good.size and bad <= (1 - confidence) / 2 * b.size:
            boot["ci"] = _percentiles(good, confidence)
        else:  # more unresolved replicates than one tail holds: the percentiles would be censored
            boot["reason"] = (f"{bad} of {b.size} bootstrap replicates unresolved (a run never "
                              "reaches the level): no bootstrap interval")
        out["bootstrap"] = boot
    return out


def _ci(ci) -> str:
    if ci is None or any(c is None or not np.isfinite(c) for c in ci):
        return "-"  # not defined (e.g. a slope from one point per seed)
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def format_fit(fit: dict, name: str = "n") -> str:
    """One line for a markdown report: "∝ n^1.12; 95% intervals: OLS [...], seeds [...], bootstrap
    [...]", or the not-resolved reason (never "n^nan")."""
    if not fit["resolved"]:
        return fit["reason"]
    parts = []
    if fit.get("bootstrap"):
        b = fit["bootstrap"]
        extra = f", {b['n_unresolved']} of {b['n']} replicates unresolved" if b["n_unresolved"] else ""
        parts.append(f"bootstrap (samples and seeds) {_ci(b['ci'])}{extra}" if b["ci"]
                     else b["reason"])
    ols = fit["ols"]
    parts.append(f"OLS residuals {_ci(ols['ci'])}" if ols["ci"] else f"OLS: {ols['reason']}")
    sl = fit.get("seed_level")
    if sl:
        per = ", ".join(f"seed {k}: {v:.2f}" for k, v in sl["per_seed"].items())
        parts.append(f"seeds only {_ci(sl['ci'])}" if sl["ci"] else sl["reason"])
        if per:
            parts.append(f"per seed {per}")
    pct = f"{100 * fit['confidence']:g}%"
    return f"∝ {name}^{fit['exponent']:.2f}; {pct} intervals: " + "; ".join(parts)


def main(argv=None) -> int:
    """``python -m reference_models.fits --x 64 64 128 128 --y 7940 8239 17745 21804 --groups 0 1 0 1``:
    the exponent of published points with its OLS and seed-level intervals."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m reference_models.fits",
                                description="Fit y ~ x^a on given points: the exponent and its intervals.")
    p.add_argument("--x", type=float, nargs="+", required=True, help="abscissae, one per run (n)")
    p.add_argument("--y", type=float, nargs="+", required=True, help="values, one per run (tau_mem)")
    p.add_argument("--groups", nargs="+", help="the seed of each run (adds the seed-level interval)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--json", action="store_true", help="print the whole fit as JSON")
    a = p.parse_args(argv)
    if len(a.x) != len(a.y) or (a.groups is not None and len(a.groups) != len(a.x)):
        p.error(f"--x, --y (and --groups) need one entry per run: got {len(a.x)}, {len(a.y)}"
                + (f", {len(a.groups)}" if a.groups is not None else ""))
    fit = exponent_fit(a.x, a.y, groups=a.groups, confidence=a.confidence)
    print(json.dumps(fit, indent=1) if a.json else format_fit(fit, "x"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
