"""Membership attacks that need only generated samples (no model access; any modality).

- :func:`distance_attack` (Chen et al. 2020, "GAN-Leaks", full black-box): a candidate whose
  nearest generated sample is close was likely in the training set; score = minus the distance
  to its k-th nearest generated sample (k = 1 in the paper).
- :func:`density_ratio_attack` (in the spirit of van Breugel et al. 2023, "DOMIAS"): a model that
  memorizes puts more mass near its training items than the data law does; score =
  log p_gen(x) - log p_ref(x), with Gaussian kernel density estimates of the generated samples and
  of reference real data that was *not* used in training (and is not among the candidates).

Both return one score per candidate, higher = "member"; evaluate them with
:func:`memaudit.probes.membership.membership_metrics` or
:func:`memaudit.probes.calibration.calibrated_attack`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .._validation import as_2d_array, check_positive_int, check_same_dim
from ..neighbors import NeighborIndex
from ..stats import StatsConfig

__all__ = ["distance_attack", "density_ratio_attack", "kde_log_density", "scott_bandwidth"]


def distance_attack(candidates, generated, *, k: int = 1, metric: str = "l2",
                    progress=None, **search) -> np.ndarray:
    """Minus the distance from each candidate to its k-th nearest generated sample.

    Parameters
    ----------
    candidates : array-like or numpy.memmap of shape (n, ...)
        Items whose membership is tested. A memory-mapped array (e.g. a training set on disk) is
        streamed in blocks of ``block_bytes``, never loaded whole.
    generated : array-like of shape (m, ...)
        Samples of the model.
    k : int, default=1
        Which nearest generated sample (k = 1 in the paper).
    metric : {"l2", "cosine"}, default="l2"
    progress : bool or None
        Progress bar on stderr.
    **search
        :class:`memaudit.neighbors.NeighborIndex` options (backend, index, block sizes). The
        distances are exact (those of the float64 brute force) with exact search.

    Returns
    -------
    ndarray of shape (n,), float64
        Higher = more likely a member.
    """
    c = as_2d_array(candidates, "candidates")
    g = as_2d_array(generated, "generated")
    check_same_dim(c, g, "candidates", "generated")
    check_positive_int(k, "k")
    if k > g.shape[0]:
        raise ValueError(f"k={k} but there are only {g.shape[0]} generated samples")
    index = NeighborIndex(metric, progress=progress, **search).fit(g, name="generated")
    nb = index.search(c, k=k, name="candidates")
    return -nb.distances[:, k - 1].astype(np.float64)


def scott_bandwidth(x: np.ndarray) -> float:
    """Scott's rule for an isotropic Gaussian kernel: n^(-1/(d+4)) times the mean per-feature std."""
    n, d = x.shape
    sd = float(np.mean(np.std(x, axis=0)))
    return max(sd, 1e-12) * n ** (-1.0 / (d + 4))


def kde_log_density(points, data, bandwidth: float, block: int = 2048) -> np.ndarray:
    """log of (1/m) sum_j N(x; y_j, h^2 I) at each point x, computed in blocks (no m x n matrix)."""
    from scipy.spatial.distance import cdist

    x = np.asarray(points, dtype=np.float64)
    y = np.asarray(data, dtype=np.float64)
    d = x.shape[1]
    out = np.empty(x.shape[0])
    const = -np.log(y.shape[0]) - 0.5 * d * np.log(2 * np.pi * bandwidth**2)
    for s in range(0, x.shape[0], block):
        d2 = cdist(x[s : s + block], y, "sqeuclidean")
        out[s : s + block] = logsumexp(-d2 / (2 * bandwidth**2), axis=1) + const
    return out


def density_ratio_attack(candidates, generated, reference, *, bandwidth=None,
                         n_components: int | None = None,
                         seed: int = StatsConfig.seed) -> np.ndarray:
    """log p_gen(x) - log p_ref(x) at each candidate (Gaussian KDEs).

    Parameters
    ----------
    candidates : array-like (n, d)
        Items whose membership is tested.
    generated : array-like (m, d)
        Samples of the model.
    reference : array-like (r, d)
        Real data from the same law that was not in training (not the candidates).
    bandwidth : float or (float, float), optional
        Kernel widths for the generated and reference KDEs (default: Scott's rule for each, after
        standardizing the features by the reference's mean and std).
    n_components : int, optional
        Project onto this many principal components of the reference first (KDEs degrade in high
        dimension; DOMIAS uses a flow there).
    """
    c = as_2d_array(candidates, "candidates")
    g = as_2d_array(generated, "generated", min_rows=2)
    r = as_2d_array(reference, "reference", min_rows=2)
    check_same_dim(c, g, "candidates", "generated")
    check_same_dim(c, r, "candidates", "reference")
    c, g, r = (np.asarray(a, dtype=np.float64) for a in (c, g, r))
    if n_components is not None:
        from sklearn.decomposition import PCA

        check_positive_int(n_components, "n_components")
        pca = PCA(n_components=min(n_components, r.shape[1], r.shape[0]), random_state=seed).fit(r)
        c, g, r = pca.transform(c), pca.transform(g), pca.transform(r)
    mu, sd = r.mean(0), r.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    c, g, r = (c - mu) / sd, (g - mu) / sd, (r - mu) / sd
    if bandwidth is None:
        h_g, h_r = scott_bandwidth(g), scott_bandwidth(r)
    else:
        h_g, h_r = (bandwidth, bandwidth) if np.isscalar(bandwidth) else bandwidth
        if not (h_g > 0 and h_r > 0):
            raise ValueError(f"bandwidths must be > 0, got {bandwidth!r}")
    return kde_log_density(c, g, h_g) - kde_log_density(c, r, h_r)
