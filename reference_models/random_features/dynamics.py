"""Training dynamics of the random-features score model, in closed form and by gradient descent.

Model (Bonnaire et al. 2025, Section 3): s_A(x) = (A / sqrt(p)) tanh(W x / sqrt(d)), W in R^{p x d}
i.i.d. N(0, 1) and frozen, A in R^{d x p} trained from A = 0 on the denoising loss at one time t

    L_train = 1/(d n) sum_nu E_xi || sqrt(Delta_t) s_A(x_t^nu) + xi ||^2 .

With B = A / sqrt(p), U = (1/n) sum_nu E_xi[sigma sigma^T] (p x p) and V = (1/n) sum_nu E_xi[sigma xi^T]
(p x d), the loss is quadratic: L = 1 + (Delta/d) Tr(B U B^T) + (2 sqrt(Delta)/d) Tr(B V), and gradient
descent in the paper's time tau = k eta / d^2 has the closed form (Prop. C.1)

    B(tau) = -Delta^{-1/2} V^T U^{-1} (I - exp(-(2 Delta / psi_p) U tau)).

L_test is the same expression with the population matrices U~, V~ (fresh data), L_gen = L_test - L_train,
and the score error E_score = (1/d) E_{x ~ P_t} || s_A(x) - grad log P_t(x) ||^2 for Gaussian data
(grad log P_t(x) = -x / Gamma_t^2) is (1/d)[Tr(B U~ B^T) + (2/sqrt(Delta)) Tr(B V~)] + 1/Gamma_t^2.

After one eigendecomposition U = Q diag(lambda) Q^T every curve costs O(p^2) per time point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import RFConstants, rf_constants

__all__ = ["RFMatrices", "gaussian_equivalent", "sampled_matrices", "ClosedForm", "gd_on_matrices",
           "simulate_sampled", "loss_terms"]


@dataclass
class RFMatrices:
    """One draw of the problem: weights, training data and the correlation matrices."""

    W: np.ndarray  # (p, d)
    X: np.ndarray  # (d, n) training points
    U: np.ndarray  # (p, p) train feature correlation
    U_test: np.ndarray  # (p, p) population feature correlation U~
    V: np.ndarray  # (p, d) train feature-noise correlation
    V_test: np.ndarray  # (p, d) population V~
    c: RFConstants
    d: int
    p: int
    n: int

    @property
    def psi_p(self) -> float:
        return self.p / self.d

    @property
    def psi_n(self) -> float:
        return self.n / self.d


def _sizes(d, psi_p, psi_n):
    p, n = int(round(psi_p * d)), int(round(psi_n * d))
    if min(d, p, n) < 1:
        raise ValueError(f"d, p = psi_p d and n = psi_n d must be positive (got {d}, {p}, {n})")
    return p, n


def _draw(d, psi_p, psi_n, t, sigma_x, seed):
    """Sizes, constants, and one seeded draw of the weights W (p, d) and training data X (d, n)."""
    p, n = _sizes(d, psi_p, psi_n)
    c = rf_constants(t, sigma_x)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((p, d))
    X = sigma_x * rng.standard_normal((d, n))
    return p, n, c, rng, W, X


def _population(W, c: RFConstants, d):
    """U~ and V~ for isotropic Gaussian data: linear part kappa1 = E[sigma'(Gamma u)] = mu1 / Gamma."""
    gamma = np.sqrt(c.gamma2)
    kappa1 = c.mu1 / gamma
    WWt = W @ W.T / d
    U_test = kappa1**2 * c.gamma2 * WWt + (c.sigma_sq - kappa1**2 * c.gamma2) * np.eye(W.shape[0])
    V_test = kappa1 * np.sqrt(c.delta) * W / np.sqrt(d)
    return U_test, V_test


def gaussian_equivalent(d: int, psi_p: float, psi_n: float, t: float, *, sigma_x: float = 1.0,
                        seed: int = 0) -> RFMatrices:
    """The Gaussian-equivalent matrices (Lemmas C.1-C.4) for one draw of W, X and Omega.

    U = G G^T / n + b_t^2 W W^T / d + s_t^2 I, with G = e^{-t} a_t W X / sqrt(d) + v_t Omega;
    U~ = kappa1^2 W Sigma_t W^T / d + (E[sigma^2] - kappa1^2 Gamma_t^2) I; V = V~ = kappa1 sqrt(Delta) W / sqrt(d).
    """
    p, n, c, rng, W, X = _draw(d, psi_p, psi_n, t, sigma_x, seed)
    omega = rng.standard_normal((p, n))
    G = np.exp(-t) * c.a * (W @ X) / np.sqrt(d) + np.sqrt(c.v2) * omega
    U = G @ G.T / n + c.b**2 * (W @ W.T) / d + c.s2 * np.eye(p)
    U_test, V_test = _population(W, c, d)
    return RFMatrices(W, X, U, U_test, V_test.copy(), V_test, c, d, p, n)


def sampled_matrices(d: int, psi_p: float, psi_n: float, t: float, *, sigma_x: float = 1.0,
                     seed: int = 0, noise_draws: int = 200, batch: int = 20) -> RFMatrices:
    """U and V estimated from real tanh features, averaging ``noise_draws`` noise draws per point.

    Used to check the Gaussian equivalence, not for dynamics: a fixed set of noise draws lets a model
    fit those draws (use :func:`simulate_sampled` with fresh noise at every step for dynamics).
    """
    p, n, c, rng, W, X = _draw(d, psi_p, psi_n, t, sigma_x, seed)
    U = np.zeros((p, p))
    V = np.zeros((p, d))
    e, sd = np.exp(-t), np.sqrt(c.delta)
    for s in range(0, noise_draws, batch):
        m = min(batch, noise_draws - s)
        xi = rng.standard_normal((m, d, n))
        F = np.tanh(np.einsum("pd,mdn->mpn", W, e * X[None] + sd * xi) / np.sqrt(d))
        U += np.einsum("mpn,mqn->pq", F, F)
        V += np.einsum("mpn,mdn->pd", F, xi)
    U /= n * noise_draws
    V /= n * noise_draws
    U_test, V_test = _population(W, c, d)
    return RFMatrices(W, X, U, U_test, V, V_test, c, d, p, n)


def loss_terms(B: np.ndarray, m: RFMatrices) -> dict:
    """L_train, L_test, L_gen and E_score of a readout B = A / sqrt(p) (shape (d, p))."""
    c, d = m.c, m.d
    sd = np.sqrt(c.delta)
    l_train = 1 + c.delta / d * np.sum((B @ m.U) * B) + 2 * sd / d * np.trace(B @ m.V)
    quad_test = np.sum((B @ m.U_test) * B) / d
    lin_test = np.trace(B @ m.V_test) / d
    l_test = 1 + c.delta * quad_test + 2 * sd * lin_test
    e_score = quad_test + 2 / sd * lin_test + 1 / c.gamma2
    return {"train": float(l_train), "test": float(l_test), "gen": float(l_test - l_train),
            "score": float(e_score)}


class ClosedForm:
    """The exact gradient-flow curves for given matrices (Prop. C.1), from one eigendecomposition."""

    def __init__(self, m: RFMatrices):
        self.m = m
        c = m.c
        lam, Q = np.linalg.eigh(m.U)
        self.lam = lam
        self.Q = Q
        M = m.V.T @ Q  # (d, p): V^T Q
        self.w_train = np.sum(M * M, axis=0)  # ||M_{:,i}||^2
        # test quadratic form: f^T K f with K = (Q^T U~ Q) o (M^T M)
        self.K = (Q.T @ m.U_test @ Q) * (M.T @ M)
        self.lin_test = np.einsum("ik,ki->i", Q.T @ m.V_test, M)  # (Q^T V~ M)_{ii}
        self.rate = 2 * c.delta / m.psi_p

    def readout(self, tau: float) -> np.ndarray:
        """B(tau) = -Delta^{-1/2} V^T Q diag((1 - e^{-rate lambda tau}) / lambda) Q^T."""
        f = -np.expm1(-self.rate * self.lam * tau) / self.lam
        return -(self.m.V.T @ self.Q * f) @ self.Q.T / np.sqrt(self.m.c.delta)

    def curves(self, taus, mask=None) -> dict:
        """L_train, L_test, L_gen, E_score at each tau (arrays).

        ``mask`` (bool per eigenmode of U) keeps only some modes trained (the others stay at 0), to
        see which part of the spectrum carries each curve.
        """
        c, d = self.m.c, self.m.d
        sd = np.sqrt(c.delta)
        taus = np.asarray(taus, dtype=float)
        out = {k: np.empty(taus.size) for k in ("train", "test", "gen", "score")}
        for j, tau in enumerate(taus):
            f = -np.expm1(-self.rate * self.lam * tau) / self.lam
            if mask is not None:
                f = np.where(mask, f, 0.0)
            # with B = -Delta^{-1/2} M diag(f) Q^T:
            l_train = 1 + np.sum(self.w_train * (self.lam * f**2 - 2 * f)) / d
            quad = f @ self.K @ f / (c.delta * d)  # (1/d) Tr(B U~ B^T)
            lin = -(self.lin_test @ f) / (sd * d)  # (1/d) Tr(B V~)
            l_test = 1 + c.delta * quad + 2 * sd * lin
            out["train"][j] = l_train
            out["test"][j] = l_test
            out["gen"][j] = l_test - l_train
            out["score"][j] = quad + 2 / sd * lin + 1 / c.gamma2
        return out


def gd_on_matrices(m: RFMatrices, taus, dtau: float) -> dict:
    """Plain gradient descent on B with the given matrices, step ``dtau`` in paper time.

    The discrete update B <- B - dtau (2 Delta / psi_p)(B U + V^T / sqrt(Delta)) is the gradient step
    A <- A - eta grad_A L with tau = k eta / d^2; as dtau -> 0 it follows the closed form.
    """
    c = m.c
    rate = 2 * c.delta / m.psi_p
    B = np.zeros((m.d, m.p))
    drive = m.V.T / np.sqrt(c.delta)
    taus = np.sort(np.asarray(taus, dtype=float))
    out = {k: [] for k in ("train", "test", "gen", "score")}
    k = 0
    for tau in taus:
        while (k + 1) * dtau <= tau + 1e-12:
            B -= dtau * rate * (B @ m.U + drive)
            k += 1
        for key, v in loss_terms(B, m).items():
            out[key].append(v)
    return {k: np.array(v) for k, v in out.items()}


def simulate_sampled(d: int, psi_p: float, psi_n: float, t: float, taus, *, dtau: float,
                     seed: int = 0, n_test: int | None = None, n_score: int = 10_000,
                     eval_draws: int = 4, progress=None) -> dict:
    """Gradient descent with real tanh features and fresh noise at every step (SM D's numerics).

    Each step draws new noise xi for every training point, so the model cannot fit a fixed set of
    noise draws. L_train is evaluated on the training points with ``eval_draws`` fresh draws, L_test on
    ``n_test`` fresh points (default n), E_score on ``n_score`` points from P_t = N(0, Gamma_t^2 I).
    """
    p, n = _sizes(d, psi_p, psi_n)
    c = rf_constants(t)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((p, d))
    X = rng.standard_normal((d, n))
    n_test = n_test or n
    e, sd, sq = np.exp(-t), np.sqrt(c.delta), np.sqrt(d)
    B = np.zeros((d, p))
    lr = dtau * d**2 / p  # B <- B - (eta / p) grad_B L with eta = dtau d^2

    def denoise_loss(points, draws):
        tot = 0.0
        for _ in range(draws):
            xi = rng.standard_normal(points.shape)
            F = np.tanh(W @ (e * points + sd * xi) / sq)
            tot += np.sum((sd * (B @ F) + xi) ** 2) / (d * points.shape[1])
        return tot / draws

    x_score = np.sqrt(c.gamma2) * rng.standard_normal((d, n_score))
    F_score = np.tanh(W @ x_score / sq)
    out = {k: [] for k in ("train", "test", "gen", "score")}
    taus = np.sort(np.asarray(taus, dtype=float))
    k = 0
    for tau in taus:
        while (k + 1) * dtau <= tau + 1e-12:
            xi = rng.standard_normal((d, n))
            F = np.tanh(W @ (e * X + sd * xi) / sq)
            resid = sd * (B @ F) + xi  # (d, n)
            grad = 2 * sd / (d * n) * resid @ F.T
            B -= lr * grad
            k += 1
        l_train = denoise_loss(X, eval_draws)
        l_test = denoise_loss(rng.standard_normal((d, n_test)), eval_draws)
        score = np.sum((B @ F_score + x_score / c.gamma2) ** 2) / (d * n_score)
        for key, v in (("train", l_train), ("test", l_test), ("gen", l_test - l_train),
                       ("score", score)):
            out[key].append(v)
        if progress:
            progress(tau)
    return {k: np.array(v) for k, v in out.items()}
