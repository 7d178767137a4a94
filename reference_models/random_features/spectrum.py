"""The spectrum of the train feature correlation U (Bonnaire et al. 2025, Theorem 3.1 and 3.2).

The Stieltjes transform q(z) = (1/p) Tr (U - z)^{-1} solves, together with
r(z) = (1/p) Tr(Sigma^{1/2} W^T (U - z)^{-1} W Sigma^{1/2}) / d and s(z) = (1/p) Tr(W^T (U - z)^{-1} W) / d,

    s_hat = b_t^2 psi_p + 1/q
    D     = 1 + a_t^2 e^{-2t} (psi_p/psi_n) r + (psi_p/psi_n) v_t^2 q
    r_hat = psi_p a_t^2 e^{-2t} / D
    s     = int d rho_Sigma(l) 1 / (s_hat + l r_hat)
    r     = int d rho_Sigma(l) l / (s_hat + l r_hat)
    0     = psi_p (s_t^2 - z) + psi_p v_t^2 / D + (1 - psi_p)/q - s/q^2

(the printed equations have psi_p/psi_p where psi_p/psi_n is meant; the official script uses p/n;
r and s carry a 1/d so that they are O(1), which the large-z limit of the equations requires).
The density is rho(lambda) = lim_{eps -> 0+} Im q(lambda + i eps) / pi. We solve for (q, r) at each
lambda, continuing eps from 10 down to ``eps_min`` so that the root stays on the physical branch
(Im q > 0), and warm-start each lambda from its neighbour's solution.

For psi_p, psi_n >> 1 (Theorem 3.2) the memorization bulk rho_1 is a shifted Marchenko-Pastur law on
[s_t^2 + v_t^2 (1 - sqrt(psi_p/psi_n))^2, s_t^2 + v_t^2 (1 + sqrt(psi_p/psi_n))^2]
(``RFConstants.rho1_edges``); in regime I (psi_p > psi_n) a fraction 1 - (1 + psi_n)/psi_p of the
eigenvalues sits exactly at s_t^2, and the bulk rho_2 of weight 1/psi_p lives on the scale psi_p.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import root

from .constants import RFConstants

__all__ = ["theory_density", "empirical_rho1"]


def _residual(qr, z, c: RFConstants, psi_p, psi_n, rho_sigma):
    q, r = qr
    A2 = c.a**2 * np.exp(-2 * c.t)
    ratio = psi_p / psi_n
    D = 1 + A2 * ratio * r + ratio * c.v2 * q
    s_hat = c.b**2 * psi_p + 1 / q
    r_hat = psi_p * A2 / D
    lam, w = rho_sigma
    den = s_hat + lam * r_hat
    s = np.sum(w / den)
    r_new = np.sum(w * lam / den)
    f1 = r - r_new
    f2 = psi_p * (c.s2 - z) + psi_p * c.v2 / D + (1 - psi_p) / q - s / q**2
    return f1, f2


def _solve(z, guess, c, psi_p, psi_n, rho_sigma):
    def fun(x):
        q, r = complex(x[0], x[1]), complex(x[2], x[3])
        f1, f2 = _residual((q, r), z, c, psi_p, psi_n, rho_sigma)
        # scale the second equation by q^2 to keep both of order one
        f2 = f2 * q * q
        return [f1.real, f1.imag, f2.real, f2.imag]

    x0 = [guess[0].real, guess[0].imag, guess[1].real, guess[1].imag]
    sol = root(fun, x0, method="hybr", options={"xtol": 1e-12})
    q, r = complex(sol.x[0], sol.x[1]), complex(sol.x[2], sol.x[3])
    ok = sol.success and q.imag >= -1e-12
    return (q, r), ok


def theory_density(lams, c: RFConstants, psi_p: float, psi_n: float, *, rho_sigma=None,
                   eps_min: float = 1e-6, eps_steps: int = 30) -> np.ndarray:
    """The Theorem 3.1 spectral density of U at the points ``lams``.

    Parameters
    ----------
    lams : array-like
        Points on the real axis.
    c : RFConstants
    psi_p, psi_n : float
        p / d and n / d.
    rho_sigma : (eigenvalues, weights), optional
        The data covariance's spectrum; default a single eigenvalue sigma_x^2.
    eps_min : float
        Smallest imaginary part reached by the continuation.

    Returns
    -------
    ndarray
        Im q(lambda + i eps_min) / pi (NaN where the solver did not converge).
    """
    if rho_sigma is None:
        rho_sigma = (np.array([c.sigma_x**2]), np.array([1.0]))
    rho_sigma = (np.asarray(rho_sigma[0], float), np.asarray(rho_sigma[1], float))
    lams = np.asarray(lams, float)
    # sweep left to right, then right to left: a point where the warm start from one side lands
    # on a wrong branch is found from the other
    fwd = _sweep(lams, c, psi_p, psi_n, rho_sigma, eps_min, eps_steps)
    if np.isfinite(fwd).all():
        return fwd
    bwd = _sweep(lams[::-1], c, psi_p, psi_n, rho_sigma, eps_min, eps_steps)[::-1]
    return np.where(np.isfinite(fwd), fwd, bwd)


def _sweep(lams, c, psi_p, psi_n, rho_sigma, eps_min, eps_steps):
    mean_l = float(np.sum(rho_sigma[0] * rho_sigma[1]))
    eps_path = np.logspace(1, np.log10(eps_min), eps_steps)
    out = np.full(len(lams), np.nan)
    prev = None
    for i, lam in enumerate(lams):
        sol = None
        # warm start from the neighbour at eps_min; fall back to the full continuation
        if prev is not None:
            sol, ok = _solve(complex(lam, eps_min), prev, c, psi_p, psi_n, rho_sigma)
            if not ok:
                sol = None
        if sol is None:
            z = complex(lam, eps_path[0])
            guess = (-1 / z, -mean_l / z)
            ok = True
            for eps in eps_path:
                guess, ok = _solve(complex(lam, eps), guess, c, psi_p, psi_n, rho_sigma)
                if not ok:
                    break
            sol = guess if ok else None
        if sol is not None:
            out[i] = sol[0].imag / np.pi
            prev = sol
        else:
            prev = None
    return out


def empirical_rho1(eigenvalues: np.ndarray, c: RFConstants, d: int) -> tuple[float, float]:
    """Edges of the memorization bulk rho_1 among the eigenvalues of one draw of U (regime I).

    U = G G^T / n + b^2 W W^T / d + s^2 I has p - n - d eigenvalues exactly at s^2 (the delta peak,
    eigenvectors with W^T v = 0) and n + d above it. Sorted, those are: d eigenvalues just above the
    peak (the data part of G, coupled to the span of W, is pushed down), the n - d of rho_1, and the
    d of rho_2 on the scale psi_p. The Theorem 3.1 density agrees: the mass of its rho_1 bulk is
    (psi_n - 1) / psi_p. In the limit psi_n >> 1 of Theorem 3.2 the first group is negligible.
    """
    ev = np.sort(np.asarray(eigenvalues, float))
    above = ev[ev > c.s2 * (1 + 1e-6) + 1e-12]
    if above.size < 3 * d:
        raise ValueError(f"expected at least n + d = {3 * d}+ eigenvalues above the s_t^2 peak, "
                         f"found {above.size}; is psi_n > 2?")
    rho1 = above[d : above.size - d]
    return float(rho1[0]), float(rho1[-1])
