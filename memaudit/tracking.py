"""Memorization over training: f_mem(step), quality(step), tau_gen, tau_mem and a checkpoint to keep.

Model-agnostic: give generated samples for each training step (from checkpoints of any model), the
training set and, ideally, held-out real data. Bonnaire et al. 2025 show that sample quality becomes
good at tau_gen, independent of the training-set size n, and that memorization (f_mem, the share of
samples with d1/d2 < 1/3) starts later, at tau_mem proportional to n. Between the two lies the
window where a checkpoint generalizes without copying.

Rules (stated, documented, and recorded in the result):

- tau_mem: the first step whose memorized fraction is significantly above zero: the lower bound of
  its bootstrap interval is > 0; with held-out data, the lower bound of the *excess over the
  held-out control* must be > 0, so that near-duplicates in the data distribution do not count.
  ``tau_mem_rule="level"`` uses f_mem >= ``tau_mem_level`` (1%) instead.
- tau_gen: the first step whose quality has made 95% of its improvement, on a log scale:
  log q <= log q_best + ``tau_gen_tolerance`` (5%) x (log q_first - log q_best), or with
  ``tau_gen_scale="linear"`` q <= q_best + 5% x (q_first - q_best) (for distances whose floor is
  near zero and noisy, such as the energy distance). Quality is a distance
  between samples and held-out data, lower is better: the Fréchet distance (default), the energy
  distance or a callable, on raw values or on features from an extractor the user supplies.
- recommended checkpoint: the step with the best quality among steps before tau_mem.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from ._validation import as_2d_array, check_fraction, check_same_dim
from .probes.nn_ratio import DEFAULT_THRESHOLD, NNRatioProbe
from .results import jsonable
from .stats import StatsConfig

__all__ = ["TrainingCurve", "track_memorization", "frechet_distance", "energy_distance",
           "estimate_tau_gen", "tau_gen_threshold", "estimate_tau_mem", "level_crossing"]


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to two sets (the FID formula, on any features).

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).
    """
    a = np.asarray(as_2d_array(a, "a"), dtype=np.float64)
    b = np.asarray(as_2d_array(b, "b"), dtype=np.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 items per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    with warnings.catch_warnings():  # singular covariances (constant pixels) are common and fine
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular covariances: regularise, as pytorch-fid does
        eps = 1e-6 * np.eye(s_a.shape[0])
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * covmean)))


def _mean_pairwise(a, b, block: int = 2048) -> float:
    from scipy.spatial.distance import cdist

    total = 0.0
    for i in range(0, a.shape[0], block):
        total += cdist(a[i : i + block], b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(a, b) -> float:
    """Energy distance between two sets (Székely and Rizzo 2013), a two-sample distance.

    sqrt(2 E|X - Y| - E|X - X'| - E|Y - Y'|) over the empirical distributions (pairs include
    i = j), which is zero only when the two empirical distributions coincide; in one dimension it
    equals ``scipy.stats.energy_distance``. Unlike the Fréchet distance it sees more than two
    moments, so a model that collapses onto the modes of a mixture scores badly.
    """
    a = np.asarray(as_2d_array(a, "a"), dtype=np.float64)
    b = np.asarray(as_2d_array(b, "b"), dtype=np.float64)
    check_same_dim(a, b, "a", "b")
    d2 = 2 * _mean_pairwise(a, b) - _mean_pairwise(a, a) - _mean_pairwise(b, b)
    return float(np.sqrt(max(d2, 0.0)))


_QUALITY = {"frechet": (frechet_distance, "Fréchet distance"),
            "energy": (energy_distance, "energy distance")}


def level_crossing(steps, values, level: float) -> float:
    """First step where ``values`` reach ``level``, linearly interpolated in log(step); NaN if never.

    The read-off of a threshold crossing between two checkpoints on a log-spaced grid (used for
    tau_mem at a level in the n-sweeps and for onsets of the random-features loss curves).
    """
    steps, v = np.asarray(steps, float), np.asarray(values, float)
    hit = np.flatnonzero(v >= level)
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(steps[0])
    w = (level - v[i - 1]) / (v[i] - v[i - 1])
    return float(np.exp(np.log(steps[i - 1]) + w * (np.log(steps[i]) - np.log(steps[i - 1]))))


def estimate_tau_mem(steps, lows, values, rule: str = "lower_bound", level: float = 0.01):
    """First step whose memorization is significant (lower bound > 0) or reaches ``level``."""
    steps = np.asarray(steps)
    hit = np.asarray(lows) > 0 if rule == "lower_bound" else np.asarray(values) >= level
    idx = np.flatnonzero(hit)
    return int(steps[idx[0]]) if idx.size else None


def tau_gen_threshold(quality, tolerance: float = 0.05, scale: str = "log") -> float | None:
    """The quality level that counts as "all but ``tolerance`` of the improvement made".

    ``scale="log"``: log q_thr = log q_best + tolerance (log q_first - log q_best), for measures
    whose floor is far from zero next to its noise (FID); an astronomically bad first checkpoint
    does not pull the level up. ``scale="linear"``: q_thr = q_best + tolerance (q_first - q_best),
    for distances whose floor is near zero (the energy distance), where ratios between checkpoints
    on the floor are ratios of noise.
    """
    if scale not in ("log", "linear"):
        raise ValueError(f"tau_gen scale must be 'log' or 'linear', got {scale!r}")
    check_fraction(tolerance, "tau_gen tolerance")
    q = np.asarray(quality, dtype=float)
    ok = np.isfinite(q) & ((q > 0) if scale == "log" else True)
    if not ok.any():
        return None
    first, best = q[np.flatnonzero(ok)[0]], q[ok].min()
    if scale == "log":
        return float(np.exp(np.log(best) + tolerance * (np.log(first) - np.log(best))))
    return float(best + tolerance * (first - best))


def estimate_tau_gen(steps, quality, tolerance: float = 0.05, scale: str = "log"):
    """First step whose quality (lower is better) has made all but ``tolerance`` of its improvement.

    Relative to the improvement over training, not to the best value alone, so that the noise floor
    of a distance estimated from a few hundred samples does not push tau_gen late. On a log scale by
    default (log q <= log q_best + tolerance (log q_first - log q_best)), so that an astronomically
    bad first checkpoint does not pull it early; ``scale="linear"`` (q <= q_best + tolerance
    (q_first - q_best)) for distances whose floor is near zero and noisy, such as the energy
    distance, where 5% of a log-improvement is smaller than the checkpoint-to-checkpoint scatter.
    See :func:`tau_gen_threshold`.
    """
    thr = tau_gen_threshold(quality, tolerance, scale)
    if thr is None:
        return None
    q = np.asarray(quality, dtype=float)
    idx = np.flatnonzero(np.isfinite(q) & (q <= thr * (1 + 1e-12)))
    return int(np.asarray(steps)[idx[0]])


@dataclass(frozen=True)
class TrainingCurve:
    """Memorization and quality over training steps."""

    steps: np.ndarray
    f_mem: np.ndarray
    f_mem_low: np.ndarray
    f_mem_high: np.ndarray
    control: np.ndarray | None
    excess_low: np.ndarray | None
    n_samples: np.ndarray
    quality: np.ndarray | None
    quality_name: str | None
    losses: dict | None
    tau_mem: int | None
    tau_gen: int | None
    recommended: int | None
    rules: dict
    threshold: float
    results: list = field(repr=False, default_factory=list)
    f_mem_wilson: np.ndarray | None = None  # (n_steps, 2): the Wilson interval, shown in tables

    def _shown_interval(self):
        """The interval shown in tables and plots: Wilson (informative at 0), else the bootstrap."""
        if self.f_mem_wilson is not None:
            return self.f_mem_wilson[:, 0], self.f_mem_wilson[:, 1], "Wilson"
        return self.f_mem_low, self.f_mem_high, "bootstrap"

    def to_dict(self, per_sample: bool = True) -> dict:
        """JSON-safe summary: tau_gen, tau_mem, the recommended checkpoint and the rules;
        ``per_sample`` adds the per-step arrays (f_mem and its intervals, the control, quality,
        losses), one entry per checkpoint."""
        out = {
            "quality_name": self.quality_name, "tau_mem": self.tau_mem, "tau_gen": self.tau_gen,
            "recommended": self.recommended, "rules": self.rules, "threshold": self.threshold,
        }
        if per_sample:
            out.update({
                "steps": self.steps, "f_mem": self.f_mem, "f_mem_low": self.f_mem_low,
                "f_mem_high": self.f_mem_high, "f_mem_wilson": self.f_mem_wilson,
                "control_f_mem": self.control, "excess_low": self.excess_low,
                "n_samples": self.n_samples, "quality": self.quality, "losses": self.losses,
            })
        return jsonable(out)

    def window_text(self) -> str:
        """tau_gen, tau_mem and the recommended checkpoint in words: a value that was not found
        is said to be so ("not reached", "not resolved"), never printed as None."""
        tau_gen = ("not resolved (no quality measure, or too few finite quality values)"
                   if self.tau_gen is None else f"{self.tau_gen:.0f}")
        tau_mem = ("not reached at any checkpoint"
                   if self.tau_mem is None else f"{self.tau_mem:.0f}")
        rec = "none" if self.recommended is None else f"{self.recommended:.0f}"
        return f"tau_gen = {tau_gen}, tau_mem = {tau_mem}, recommended checkpoint: {rec}"

    def summary(self) -> str:
        lo, hi, how = self._shown_interval()
        head = f"95% CI ({how})"
        lines = [f"{'step':>10s} {'f_mem':>8s} {head:>19s}" + (" quality" if self.quality is not None else "")]
        for i, s in enumerate(self.steps):
            q = f" {self.quality[i]:.4g}" if self.quality is not None else ""
            lines.append(f"{int(s):>10d} {100 * self.f_mem[i]:7.2f}% "
                         f"[{100 * lo[i]:6.2f}%, {100 * hi[i]:6.2f}%]{q}")
        lines.append(self.window_text())
        return "\n".join(lines)

    def plot(self, ax=None):
        """f_mem with its interval over the training steps (log axis), quality on a second
        labelled axis, tau_gen, tau_mem and the recommended checkpoint marked
        (:func:`memaudit.figures.training_curve`); returns the f_mem Axes."""
        from .figures import training_curve

        lo, hi, how = self._shown_interval()
        return training_curve(self.steps, self.f_mem, lo, hi, control=self.control,
                              quality=self.quality, quality_name=self.quality_name,
                              tau_gen=self.tau_gen, tau_mem=self.tau_mem,
                              recommended=self.recommended, interval=f"95% CI ({how})", ax=ax)


def track_memorization(samples_by_step, train, holdout=None, *, threshold: float = DEFAULT_THRESHOLD,
                       features=None, quality="frechet", losses=None, tau_mem_rule: str = "lower_bound",
                       tau_mem_level: float = 0.01, tau_gen_tolerance: float = 0.05,
                       tau_gen_scale: str = "log", n_bootstrap: int = StatsConfig.n_bootstrap,
                       confidence: float = StatsConfig.confidence, seed: int = StatsConfig.seed,
                       progress=None) -> TrainingCurve:
    """Memorization and quality at each training step, and the window between tau_gen and tau_mem.

    Parameters
    ----------
    samples_by_step : mapping of int to array-like
        Generated samples at each training step (same number of features as ``train``).
    train : array-like
        The training set.
    holdout : array-like, optional
        Held-out real data: the control of the probe and the reference of the quality measure.
    threshold : float, default=1/3
    features : callable, optional
        Maps an array of items to feature vectors for the quality measure (e.g. a CLIP or
        Inception extractor loaded from a local file). Default: the raw values (pixels).
    quality : {"frechet", "energy"} or callable, default="frechet"
        The quality measure between samples and held-out data, lower is better: the Fréchet
        distance (the FID formula), the energy distance, or ``f(samples, reference) -> float``.
    losses : mapping of int to (train_loss, holdout_loss), optional
        Denoising losses at a fixed diffusion time, recorded as they are (the gap is reported).
    tau_mem_rule : {"lower_bound", "level"}
    tau_mem_level : float, default=0.01
    tau_gen_tolerance : float, default=0.05
    tau_gen_scale : {"log", "linear"}, default="log"
        Whether the tolerance is a share of the log-improvement of quality (FID-like measures) or of
        its plain improvement (distances whose floor is near zero, such as the energy distance).

    Returns
    -------
    TrainingCurve
    """
    if not samples_by_step:
        raise ValueError("samples_by_step is empty: give samples for at least one training step")
    if tau_mem_rule not in ("lower_bound", "level"):
        raise ValueError(f"tau_mem_rule must be 'lower_bound' or 'level', got {tau_mem_rule!r}")
    check_fraction(tau_mem_level, "tau_mem_level")
    tau_gen_threshold([1.0], tau_gen_tolerance, tau_gen_scale)  # validate before the long part
    if callable(quality):
        quality_fn, quality_label = quality, getattr(quality, "__name__", "user quality")
    elif quality in _QUALITY:
        quality_fn, quality_label = _QUALITY[quality]
    else:
        raise ValueError(f"quality must be 'frechet', 'energy' or a callable, got {quality!r}")
    steps = np.array(sorted(int(s) for s in samples_by_step))
    train = as_2d_array(train, "train", min_rows=2)
    probe = NNRatioProbe(threshold=threshold, carlini_alpha=None, n_bootstrap=n_bootstrap,
                         confidence=confidence, seed=seed, progress=progress).fit(train)
    ref = None
    if holdout is not None:
        holdout = as_2d_array(holdout, "holdout")
        ref = holdout if features is None else np.asarray(features(holdout))
    results, qualities = [], []
    for s in steps:
        samples = samples_by_step[s] if s in samples_by_step else samples_by_step[str(s)]
        samples = as_2d_array(samples, f"samples at step {s}")
        check_same_dim(samples, train, f"samples at step {s}", "train")
        res = probe.score(samples, holdout=holdout)
        results.append(res)
        if ref is not None:
            feats = samples if features is None else np.asarray(features(samples))
            qualities.append(float(quality_fn(feats, ref)))
    f_mem = np.array([r.rate.value for r in results])
    low = np.array([r.rate.low for r in results])
    high = np.array([r.rate.high for r in results])
    wilson = np.array([r.rate.wilson for r in results], dtype=float)
    control = excess_low = None
    if holdout is not None:
        control = np.array([r.control.rate.value for r in results])
        excess_low = np.array([r.excess.low for r in results])
    lows = excess_low if excess_low is not None else low
    tau_mem = estimate_tau_mem(steps, lows, f_mem, tau_mem_rule, tau_mem_level)
    quality_arr = np.array(qualities) if qualities else None
    tau_gen = (estimate_tau_gen(steps, quality_arr, tau_gen_tolerance, tau_gen_scale)
               if qualities else None)
    recommended = None
    if quality_arr is not None:
        before = steps < tau_mem if tau_mem is not None else np.ones(steps.size, bool)
        if before.any():
            recommended = int(steps[before][np.argmin(quality_arr[before])])
    loss_dict = None
    if losses:
        loss_dict = {int(k): {"train": float(v[0]), "holdout": float(v[1]),
                              "gap": float(v[1]) - float(v[0])} for k, v in losses.items()}
    rules = {
        "tau_mem": ("first step where the lower bound of the excess of f_mem over the held-out "
                    "control is > 0" if holdout is not None else
                    "first step where the lower bound of f_mem is > 0")
        if tau_mem_rule == "lower_bound" else f"first step where f_mem >= {tau_mem_level:g}",
        "tau_gen": (f"first step within {100 * tau_gen_tolerance:g}% of the total log-improvement "
                    "of quality: log q <= log q_best + tol (log q_first - log q_best)")
        if tau_gen_scale == "log" else
        (f"first step within {100 * tau_gen_tolerance:g}% of the total improvement of quality: "
         "q <= q_best + tol (q_first - q_best)"),
        "recommended": "best quality among steps before tau_mem",
        "quality": None if ref is None else
        (f"{quality_label} to held-out data, " + ("raw values" if features is None else "user features")),
    }
    return TrainingCurve(
        steps=steps, f_mem=f_mem, f_mem_low=low, f_mem_high=high, control=control,
        excess_low=excess_low, n_samples=np.array([r.n_samples for r in results]),
        quality=quality_arr, quality_name=None if ref is None else f"{quality_label} (lower is better)",
        losses=loss_dict, tau_mem=tau_mem, tau_gen=tau_gen, recommended=recommended, rules=rules,
        threshold=probe.threshold_, results=results, f_mem_wilson=wilson,
    )
