"""The constants of the Gaussian-equivalent random-features model (Bonnaire et al. 2025, Eqs. 12-14).

For the activation sigma = tanh, data with variance sigma_x^2 per coordinate (sigma_x^2 = Tr Sigma / d),
and one diffusion time t of the Ornstein-Uhlenbeck forward process x_t = e^{-t} x + sqrt(Delta_t) xi:

    Delta_t   = 1 - e^{-2t}
    Gamma_t^2 = e^{-2t} sigma_x^2 + Delta_t
    a_t   = E[sigma(e^{-t} sigma_x u + sqrt(Delta_t) v) u] / (e^{-t} sigma_x)
    b_t   = E[v sigma(e^{-t} sigma_x u + sqrt(Delta_t) v)]
    v_t^2 = E[sigma(e^{-t} sigma_x u + sqrt(Delta_t) v) sigma(e^{-t} sigma_x u + sqrt(Delta_t) w)]
            - a_t^2 e^{-2t} sigma_x^2
    s_t^2 = E[sigma(Gamma_t u)^2] - a_t^2 e^{-2t} sigma_x^2 - v_t^2 - b_t^2
    mu_1  = E[sigma(Gamma_t u) u]

with u, v, w independent standard normals. Every expectation is computed by Gauss-Hermite quadrature
(exact to machine precision for these smooth integrands), not by Monte Carlo as in the official
script; sigma_x is a standard deviation here, squared where the paper squares it (the official
script's variance slip is not reproduced).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RFConstants", "rf_constants", "gauss_hermite"]


def gauss_hermite(n: int = 120):
    """Nodes and weights for E[f(u)], u ~ N(0, 1) (probabilists' Hermite, weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / np.sqrt(2 * np.pi)


@dataclass(frozen=True)
class RFConstants:
    """The constants at one diffusion time (see the module docstring for the definitions)."""

    t: float
    sigma_x: float
    delta: float  # Delta_t
    gamma2: float  # Gamma_t^2
    a: float  # a_t
    b: float  # b_t
    v2: float  # v_t^2
    s2: float  # s_t^2
    mu1: float  # mu_1(t)
    sigma_sq: float  # E[sigma(Gamma_t u)^2], the "||sigma||^2" of the test correlation

    def to_dict(self) -> dict:
        return asdict(self)

    def rho1_edges(self, psi_p: float, psi_n: float) -> tuple[float, float]:
        """Support of the memorization bulk rho_1 (Theorem 3.2): s^2 + v^2 (1 -+ sqrt(psi_p/psi_n))^2."""
        r = np.sqrt(psi_p / psi_n)
        return self.s2 + self.v2 * (1 - r) ** 2, self.s2 + self.v2 * (1 + r) ** 2

    def tau_mem(self, psi_p: float, psi_n: float) -> float:
        """Predicted memorization time psi_p / (Delta_t lambda_min), lambda_min the left edge of rho_1."""
        return psi_p / (self.delta * self.rho1_edges(psi_p, psi_n)[0])


def rf_constants(t: float, sigma_x: float = 1.0, *, nodes: int = 120,
                 activation=np.tanh) -> RFConstants:
    """Compute the random-features constants at diffusion time ``t`` by Gauss-Hermite quadrature.

    Parameters
    ----------
    t : float
        Diffusion (Ornstein-Uhlenbeck) time, > 0.
    sigma_x : float, default=1
        Standard deviation of the data per coordinate (sqrt(Tr Sigma / d)).
    nodes : int, default=120
        Quadrature nodes per dimension.
    activation : callable, default=numpy.tanh

    Returns
    -------
    RFConstants

    Examples
    --------
    >>> c = rf_constants(0.1)
    >>> round(c.delta, 4), round(c.b, 4), round(c.v2, 5), round(c.s2, 5)
    (0.1813, 0.2579, 0.01384, 0.01357)
    """
    if not t > 0:
        raise ValueError(f"t must be positive, got {t}")
    if not sigma_x > 0:
        raise ValueError(f"sigma_x must be positive, got {sigma_x}")
    x, w = gauss_hermite(nodes)
    e = np.exp(-t)
    delta = 1 - np.exp(-2 * t)
    c = e * sigma_x  # the signal's standard deviation at time t
    gamma2 = c**2 + delta
    # sig[i, j] = sigma(c u_i + sqrt(delta) v_j)
    sig = activation(c * x[:, None] + np.sqrt(delta) * x[None, :])
    a = float(w @ (sig * x[:, None]) @ w) / c
    b = float(w @ (sig * x[None, :]) @ w)
    inner = sig @ w  # E_v sigma(c u + sqrt(delta) v), as a function of u
    v2 = float(w @ inner**2) - a**2 * c**2
    g = activation(np.sqrt(gamma2) * x)
    sigma_sq = float(w @ g**2)
    s2 = sigma_sq - a**2 * c**2 - v2 - b**2
    mu1 = float(w @ (g * x))
    return RFConstants(t=float(t), sigma_x=float(sigma_x), delta=float(delta), gamma2=float(gamma2),
                       a=float(a), b=b, v2=float(v2), s2=float(s2), mu1=mu1, sigma_sq=sigma_sq)
