"""Probes: pure array functions plus a probe class each, on one contract (scikit-learn style).

Every probe class is built ``Probe(**params)``, fitted with ``fit(reference, ids=None)`` and scored
with ``score(samples, ids=None, *, holdout=None, holdout_ids=None)``; see
:mod:`memaudit.probes._contract` and docs/writing-a-probe.md. Probes see arrays and ids only: they
import no adapter, source or report module.
"""

from ._contract import NotFittedError, Probe
from .duplicates import CopyRateResult, DuplicateResult, DuplicatesProbe
from .membership import MembershipProbe, MembershipResult, membership_metrics
from .nn_ratio import DEFAULT_THRESHOLD, NNRatioProbe, NNRatioResult, nn_ratio
from .subsequence import SubsequenceProbe, SubsequenceResult

__all__ = ["Probe", "NotFittedError", "NNRatioProbe", "NNRatioResult", "nn_ratio",
           "DEFAULT_THRESHOLD", "DuplicatesProbe", "DuplicateResult", "CopyRateResult",
           "MembershipProbe", "MembershipResult", "membership_metrics", "SubsequenceProbe",
           "SubsequenceResult", "PROBES"]

# every probe class: the convention test (tests/test_probe_contract.py) runs each through the contract
PROBES = (NNRatioProbe, DuplicatesProbe, MembershipProbe, SubsequenceProbe)
