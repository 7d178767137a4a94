"""Runners: a config dataclass -> ``run_*`` -> a typed run result, with the report written.

Runners are the only layer that knows about files: they load and harmonize the inputs
(:mod:`memaudit.sources`, :mod:`memaudit.conventions`), check every setting before any long work,
call the probes on arrays, apply the one :class:`memaudit.gate.Gate` and write the report
(:mod:`memaudit.report`). The command line (:mod:`memaudit.cli`) builds its parsers from the
config dataclasses' fields and calls these functions.

==========================  =====================  ===================  =========================
command                     config                 runner               returns
==========================  =====================  ===================  =========================
``memaudit audit``          AuditConfig            run_audit            AuditRun (``.report``)
``memaudit duplicates``     DuplicatesConfig       run_duplicates       DuplicatesRun
``memaudit subsequences``   SubsequencesConfig     run_subsequences     SubsequencesRun
``memaudit membership``     MembershipConfig       run_membership       MembershipRun
``memaudit demo``           DemoConfig             run_demo             DemoRun (``.audit``)
``memaudit track``          TrackConfig            run_tracking         TrackRun (``.curves``)
``memaudit convert``        ConvertConfig          run_convert          ConvertRun (``.paths``)
==========================  =====================  ===================  =========================

Every run result has ``gate`` (the gate's record, None without a gate), ``passed``, ``paths``
(the report's files once written: set ``out`` in the config, or call ``write(out_dir)``),
``summary()`` (the text the command prints) and ``to_summary()`` (its ``--json``).
"""

from ._common import Run, load_inputs, package_versions
from .audit import AuditConfig, AuditRun, run_audit
from .convert import ConvertConfig, ConvertRun, run_convert
from .demo import DemoConfig, DemoRun, run_demo
from .duplicates import DuplicatesConfig, DuplicatesRun, run_duplicates
from .membership import MembershipConfig, MembershipRun, run_membership
from .subsequences import SubsequencesConfig, SubsequencesRun, run_subsequences
from .track import TrackConfig, TrackRun, run_tracking

__all__ = ["AuditConfig", "AuditRun", "run_audit", "DuplicatesConfig", "DuplicatesRun",
           "run_duplicates", "SubsequencesConfig", "SubsequencesRun", "run_subsequences",
           "MembershipConfig", "MembershipRun", "run_membership", "DemoConfig", "DemoRun",
           "run_demo", "Run", "load_inputs", "package_versions", "CONFIGS", "TrackConfig",
           "TrackRun", "run_tracking", "ConvertConfig", "ConvertRun", "run_convert"]

# command -> (config dataclass, runner): what the command line dispatches on
CONFIGS = {
    "audit": (AuditConfig, run_audit),
    "duplicates": (DuplicatesConfig, run_duplicates),
    "subsequences": (SubsequencesConfig, run_subsequences),
    "membership": (MembershipConfig, run_membership),
    "demo": (DemoConfig, run_demo),
    "track": (TrackConfig, run_tracking),
    "convert": (ConvertConfig, run_convert),
}
