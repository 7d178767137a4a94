"""The probe contract (scikit-learn style), shared by every probe class.

- ``__init__`` stores keyword parameters only, unchanged; nothing is validated or computed there.
- ``fit(reference, ids=None) -> self`` validates the parameters and the reference set and builds
  whatever the scoring needs; everything it learns is an attribute ending in ``_``.
- ``score(samples, ids=None, *, holdout=None, holdout_ids=None) -> Result``: ``holdout`` is held-out
  real data through the same probe, the control of every rate.
- Using a probe before ``fit`` raises :class:`NotFittedError`, worded the same for every probe.
- ``n_bootstrap``, ``confidence`` and ``seed`` default to :class:`memaudit.stats.StatsConfig`'s;
  every random stream comes from ``SeedSequence(seed).spawn`` (:func:`memaudit.stats.spawn`).

docs/writing-a-probe.md walks through a new probe; tests/test_probe_contract.py checks every probe
class against this contract.
"""

from __future__ import annotations

import inspect

__all__ = ["NotFittedError", "Probe"]


class NotFittedError(RuntimeError):
    """A probe was used before ``fit``."""


class Probe:
    """Base of every probe class: parameters, the fitted check and a readable ``repr``.

    A subclass names its fitted marker in ``_fitted_attr`` (an attribute set by ``fit``, ending in
    ``_``) and calls :meth:`_check_fitted` first thing in ``score``.
    """

    _fitted_attr = "reference_"

    def get_params(self) -> dict:
        """The constructor's parameters and their current values (scikit-learn's ``get_params``)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attr):
            name = type(self).__name__
            raise NotFittedError(f"{name} is not fitted: call {name}(...).fit(reference) before "
                                 "score(samples)")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                         if not hasattr(v, "shape"))
        return f"{type(self).__name__}({args})"
