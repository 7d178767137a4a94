"""Every figure memaudit draws, one function each: the ``plot()`` of every result and the SVGs
embedded in the reports come from here (one plotting route, matplotlib).

Each function draws on ``ax`` (a new pyplot figure when None) and returns the Axes. Every figure
has labelled axes with units, and draws its threshold or random baseline; those lines carry a
``gid`` ("threshold", "baseline", "tau_gen", "tau_mem", "recommended") so tests and callers can
find them. This module depends on numpy and matplotlib only; matplotlib is imported inside the
functions, so importing memaudit stays fast.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["copy_rate_by_threshold", "duplicate_scores", "ratio_histogram", "roc_curve",
           "series_overlay", "to_svg", "training_curve"]

SAMPLES_COLOR, CONTROL_COLOR, THRESHOLD_COLOR = "#3b6fb6", "#e08a2c", "#a31515"


def _axes(ax, figsize):
    """``ax``, or the Axes of a new pyplot figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, layout="constrained")[1]


def _percent_axis(axis):
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))


def _log_axis(axis):
    """A log axis with plain tick labels at the powers of ten (0.001, 0.01, ...) and unlabelled
    minor ticks at 2 and 5 times them: mathtext labels and the eight default minor ticks a decade
    are most of the time a report spends drawing."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    axis.set_minor_formatter(NullFormatter())


def to_svg(draw, *args, figsize=(6.4, 3.2), margins=(0.75, 0.6, 0.2, 0.15), **kwargs) -> str:
    """``draw(*args, ax=..., **kwargs)`` rendered as an inline ``<svg>`` element (no pyplot).

    The figure is drawn on its own :class:`matplotlib.figure.Figure` (no global state, no GUI
    backend) with a transparent background; text stays text (``svg.fonttype = "none"``) and the
    output is deterministic. ``margins`` (left, bottom, right, top) are in inches: fixed margins
    render twice as fast as a layout engine, and the reports' figures have fixed labels.
    """
    import matplotlib
    from matplotlib.figure import Figure

    w, h = figsize
    left, bottom, right, top = margins
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "memaudit",
                                "font.size": 9}):
        fig = Figure(figsize=figsize)
        fig.patch.set_alpha(0)
        fig.subplots_adjust(left=left / w, bottom=bottom / h, right=1 - right / w, top=1 - top / h)
        draw(*args, ax=fig.add_subplot(), **kwargs)
        buf = io.StringIO()
        fig.savefig(buf, format="svg",  # no date, no creator: the same figure, the same bytes
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def ratio_histogram(ratio, threshold: float, *, control=None, ax=None, floor: float = 1e-3,
                    bins: int = 40, label: str = "samples", what: str = "samples"):
    """Histogram of d1/d2 on a log axis, as a share of each set, with the threshold k.

    Parameters
    ----------
    ratio : array-like
        d1 / d2 per item (NaN values, items that were not evaluated, are left out).
    threshold : float
        k: an item is memorized when d1/d2 < k (drawn as a dashed line).
    control : array-like, optional
        The held-out control's ratios through the same probe (drawn beside the samples).
    floor : float, default=1e-3
        Ratios below it (exact copies have 0) are counted in the first bin.
    label, what : str
        Legend label of ``ratio`` and the noun of the y axis ("samples", "windows").
    """
    ax = _axes(ax, (6, 3.5))
    edges = np.geomspace(floor, 1.0, bins + 1)
    series = [(label, ratio, SAMPLES_COLOR)]
    if control is not None:
        series.append(("held-out control", control, CONTROL_COLOR))
    for name, r, color in series:
        r = np.asarray(r, dtype=np.float64)
        r = r[np.isfinite(r)]
        if r.size:
            below = int((r < threshold).sum())
            ax.hist(np.clip(r, floor, 1.0), bins=edges, weights=np.full(r.size, 1 / r.size),
                    histtype="stepfilled", color=color, alpha=0.55,
                    label=f"{name}: {below} of {r.size} below k")
    ax.axvline(threshold, color=THRESHOLD_COLOR, ls="--", lw=1.2, gid="threshold",
               label=f"threshold k = {threshold:.3g}")
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlim(floor, 1.0)
    ax.set_xlabel(f"d1 / d2 (ratio of distances, log scale; below {floor:g} in the first bin)")
    ax.set_ylabel(f"share of {what}")
    _percent_axis(ax.yaxis)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def roc_curve(fpr, tpr, n_nonmembers: int, *, auc: float | None = None, target_fprs=(), ax=None):
    """ROC curve on log-log axes (the low false-positive rates are what matters), with the random
    diagonal and the smallest false-positive rate ``n_nonmembers`` can resolve.

    Parameters
    ----------
    fpr, tpr : array-like
        The ROC points (as in ``MembershipResult.roc_fpr`` / ``roc_tpr``).
    n_nonmembers : int
        Non-members evaluated: FPRs below 1/n are not resolved.
    auc : float, optional
        Shown in the legend.
    target_fprs : iterable of float
        FPRs at which the TPR is reported (thin vertical lines).
    """
    ax = _axes(ax, (4.5, 4.5))
    floor = 1.0 / max(2 * n_nonmembers, 2)
    f = np.maximum(np.asarray(fpr, dtype=np.float64), floor)
    t = np.maximum(np.asarray(tpr, dtype=np.float64), floor)
    name = "attack" if auc is None else f"attack (AUC {auc:.3f})"
    ax.plot(f, t, color=THRESHOLD_COLOR, lw=1.6, drawstyle="steps-post", label=name)
    ax.plot([floor, 1], [floor, 1], color="0.4", ls="--", lw=1, gid="baseline",
            label="random guessing (TPR = FPR)")
    ax.axvline(1 / max(n_nonmembers, 1), color="0.6", lw=0.8, ls=":", gid="resolution",
               label=f"smallest resolvable FPR (1/{n_nonmembers})")
    for k, target in enumerate(target_fprs):
        ax.axvline(target, color="0.75", lw=0.6, gid="target_fpr",
                   label="FPRs the TPR is read at" if k == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axis(ax.xaxis)
    _log_axis(ax.yaxis)
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel("false-positive rate (non-members flagged, log scale)")
    ax.set_ylabel("true-positive rate (members flagged, log scale)")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def training_curve(steps, f_mem, low, high, *, control=None, quality=None, quality_name=None,
                   tau_gen=None, tau_mem=None, recommended=None, interval: str = "95% CI",
                   ax=None):
    """The memorized fraction over training steps with its interval, quality on a second labelled
    axis, and tau_gen, tau_mem and the recommended checkpoint marked.

    Parameters
    ----------
    steps : array-like of int
        Training steps (log axis).
    f_mem, low, high : array-like
        The memorized fraction and its interval at each step.
    control : array-like, optional
        f_mem of held-out real data at each step (the floor near-twins produce).
    quality : array-like, optional
        A quality measure per step, lower is better (right axis, named ``quality_name``).
    tau_gen, tau_mem, recommended : int, optional
        Generalisation time, memorization time and the checkpoint to keep (vertical lines).
    interval : str
        The interval's name in the legend ("95% CI (Wilson)").

    Returns
    -------
    Axes
        The f_mem axes (the quality axes is its twin, ``ax.right_ax``).
    """
    ax = _axes(ax, (7.5, 4.6))
    steps = np.asarray(steps, dtype=np.float64)
    ax.fill_between(steps, low, high, color=THRESHOLD_COLOR, alpha=0.2, lw=0,
                    label=f"f_mem {interval}")
    ax.plot(steps, f_mem, "o-", color=THRESHOLD_COLOR, ms=3, lw=1.6, label="f_mem (samples)")
    if control is not None:
        ax.plot(steps, control, "s--", color=CONTROL_COLOR, ms=3, lw=1,
                label="f_mem of held-out real data (control)")
    ax.axhline(0, color="0.5", lw=0.8, gid="baseline")
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    if np.max(steps) < 10 * np.min(steps):  # under a decade: label the 2x and 5x ticks too
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("training step (log scale)")
    ax.set_ylabel("memorized fraction f_mem")
    _percent_axis(ax.yaxis)
    top = max(float(np.nanmax(np.r_[np.asarray(high, float), 0.05])) * 1.15, 0.05)
    ax.set_ylim(-0.02 * top, top)
    handles, labels = ax.get_legend_handles_labels()
    for t, name, color, ls in ((tau_gen, "tau_gen (quality converged)", "#17692c", ":"),
                               (tau_mem, "tau_mem (memorization starts)", THRESHOLD_COLOR, "--"),
                               (recommended, "recommended checkpoint", "#1f4e9c", "-")):
        if t is not None:
            line = ax.axvline(t, color=color, ls=ls, lw=1.2, gid=name.split(" ")[0])
            handles.append(line)
            labels.append(f"{name}: step {int(t)}")
    ax.right_ax = None
    if quality is not None:
        name = quality_name or "quality"
        if "lower is better" not in name:
            name += " (lower is better)"
        right = ax.twinx()
        (q,) = right.plot(steps, quality, "d-", color="0.35", ms=3, lw=1,
                          label=f"{name}, right axis")
        qv = np.asarray(quality, dtype=float)
        qv = qv[np.isfinite(qv)]
        if qv.size and qv.min() > 0 and qv.max() / qv.min() > 100:  # spans decades: log axis
            right.set_yscale("log")
            name += ", log scale"
        right.set_ylabel(name)
        handles.append(q)
        labels.append(q.get_label())
        ax.right_ax = right
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=2,
              frameon=False)
    return ax


def series_overlay(generated, training, *, normalize: bool, ax=None, title: str | None = None):
    """A generated window (red, dashed) drawn over the training stretch it matches (black).

    Parameters
    ----------
    generated, training : array-like of shape (length,) or (length, channels)
    normalize : bool
        Draw both z-normalised (per channel), as the search compared them.
    """
    ax = _axes(ax, (3.2, 1.6))
    g, t = np.asarray(generated, dtype=np.float64), np.asarray(training, dtype=np.float64)
    if g.ndim == 1:
        g, t = g[:, None], t[:, None]
    if normalize:
        g, t = _z(g), _z(t)
    x = np.arange(g.shape[0])
    for c in range(g.shape[1]):
        ax.plot(x, t[:, c], color="#222", lw=1.2, label="training stretch" if c == 0 else None)
        ax.plot(x, g[:, c], color=THRESHOLD_COLOR, lw=1.2, ls="--",
                label="generated window" if c == 0 else None)
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0, max(g.shape[0] - 1, 1))
    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(3))
    ax.set_xlabel("step in window")
    ax.set_ylabel("z-score" if normalize else "value")
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def _z(x):
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1), 0.0)


SCORE_LABELS = {"exact": "distance (0: identical quantized pixels)",
                "embedding": "cosine similarity of embeddings (1: identical direction)",
                "tiled_l2": "tiled L2 distance of pixels"}


def duplicate_scores(scores, threshold, method: str, *, control=None, ax=None,
                     label: str = "matched pairs"):
    """Histogram of the matched pairs' scores with the matching threshold.

    Parameters
    ----------
    scores : array-like
        Hamming distances (hashes), cosine similarities (embedding), tiled L2 distances or zeros
        (exact) of the matched pairs.
    threshold : float or None
        The matching threshold (None for exact matches: a pair matches at distance 0).
    method : str
        The matcher, which names the x axis.
    control : array-like, optional
        The scores of held-out items' matches to the same training set, through the same matcher.
    """
    ax = _axes(ax, (6, 3.2))
    xlabel = SCORE_LABELS.get(method, f"Hamming distance of {method} codes (bits)")
    hashes = method not in SCORE_LABELS
    limit = 0.0 if threshold is None else float(threshold)
    series = [(label, np.asarray(scores, dtype=np.float64), SAMPLES_COLOR)]
    if control is not None:
        series.append(("held-out control", np.asarray(control, dtype=np.float64), CONTROL_COLOR))
    both = np.concatenate([s for _, s, _ in series] + [np.array([limit])])
    lo, hi = float(both.min()), float(both.max())
    if hashes:
        edges = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5)
    else:
        pad = max(hi - lo, 1e-3) * 0.05
        edges = np.linspace(lo - pad, hi + pad, 31)
    for name, s, color in series:
        ax.hist(s, bins=edges, histtype="stepfilled", color=color, alpha=0.55,
                label=f"{name} ({s.size})")
    what = "at least" if method == "embedding" else "at most"
    ax.axvline(limit, color=THRESHOLD_COLOR, ls="--", lw=1.2, gid="threshold",
               label="match: identical" if threshold is None else f"match: {what} {limit:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs (count)")
    ax.legend(fontsize=8)
    return ax


def copy_rate_by_threshold(thresholds, samples, holdout, *, threshold, control_share: float,
                           recommended=None, method: str = "hash", ax=None):
    """The share of samples and of held-out items within each Hamming distance of a training item:
    the curve a hash threshold is chosen from (copies lift the samples above the control).

    Parameters
    ----------
    thresholds : array-like of int
        Hamming distances d (bits).
    samples, holdout : array-like
        Share of samples (held-out items) within d of some training item.
    threshold : int
        The threshold the matches used.
    control_share : float
        The control level a threshold should keep (drawn as the baseline).
    recommended : int, optional
        The loosest d at which the control stays at or below ``control_share``.
    """
    ax = _axes(ax, (6, 3.2))
    ax.plot(thresholds, samples, "o-", color=SAMPLES_COLOR, ms=3, label="generated samples")
    ax.plot(thresholds, holdout, "s--", color=CONTROL_COLOR, ms=3, label="held-out control")
    ax.axhline(control_share, color="0.4", ls=":", lw=1, gid="baseline",
               label=f"control level {100 * control_share:g}%")
    ax.axvline(threshold, color=THRESHOLD_COLOR, ls="--", lw=1.2, gid="threshold",
               label=f"threshold used: {threshold:g}")
    if recommended is not None:
        ax.axvline(recommended, color="#17692c", ls=":", lw=1.2, gid="recommended",
                   label=f"recommended by the control: {recommended}")
    ax.set_xlabel(f"Hamming distance of {method} codes, at most (bits)")
    ax.set_ylabel("share matching a training item")
    _percent_axis(ax.yaxis)
    ax.legend(fontsize=8)
    return ax
