"""memaudit: audit generative models for memorization of their training data.

The probe layer works on arrays ``(n_items, n_features)`` with ids; adapters turn images and
series into such arrays; the runners (:mod:`memaudit.runners`) load files, run the probes,
apply the gate and write a JSON and HTML report.
"""

__version__ = "0.1.0"

from .neighbors import NeighborIndex, Neighbors, knn  # noqa: E402
from .probes import NNRatioProbe, NNRatioResult, nn_ratio  # noqa: E402
from .results import Rate  # noqa: E402
from .runners import (AuditConfig, DemoConfig, DuplicatesConfig, MembershipConfig,  # noqa: E402
                      SubsequencesConfig, run_audit, run_demo, run_duplicates, run_membership,
                      run_subsequences)
from .sources import Dataset, load_dataset  # noqa: E402
from .tracking import TrainingCurve, track_memorization  # noqa: E402

__all__ = [
    "__version__",
    "knn",
    "NeighborIndex",
    "Neighbors",
    "nn_ratio",
    "NNRatioProbe",
    "NNRatioResult",
    "Rate",
    "Dataset",
    "load_dataset",
    "track_memorization",
    "TrainingCurve",
    "AuditConfig",
    "run_audit",
    "DuplicatesConfig",
    "run_duplicates",
    "SubsequencesConfig",
    "run_subsequences",
    "MembershipConfig",
    "run_membership",
    "DemoConfig",
    "run_demo",
]
