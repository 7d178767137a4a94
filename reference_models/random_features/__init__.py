"""The paper's solvable model of memorization: random-features score matching at one diffusion time.

Bonnaire, Urfin, Biroli, Mezard 2025, Section 3 and SM C-D. ``constants`` (Eqs. 12-14, by
Gauss-Hermite quadrature), ``dynamics`` (Gaussian-equivalent matrices, the closed-form gradient flow of
Prop. C.1, gradient descent on the same matrices, and simulation with sampled tanh features and fresh
noise), ``spectrum`` (Theorem 3.1 density of U and the rho_1 edges), ``study`` (the command that writes
the figures and the predicted-vs-measured tau_mem table:
``python -m reference_models.random_features --out rf-study``).
"""

from .constants import RFConstants, rf_constants
from .dynamics import (ClosedForm, RFMatrices, gaussian_equivalent, gd_on_matrices, loss_terms,
                       sampled_matrices, simulate_sampled)
from .spectrum import empirical_rho1, theory_density

__all__ = ["RFConstants", "rf_constants", "RFMatrices", "gaussian_equivalent", "sampled_matrices",
           "ClosedForm", "gd_on_matrices", "loss_terms", "simulate_sampled", "theory_density",
           "empirical_rho1"]
