"""Reports: one JSON envelope (:mod:`.document`) and one HTML page (:mod:`.html`) for every
command, one renderer per result type, figures from :mod:`memaudit.figures`.

``memaudit audit`` writes report.json / report.html (:class:`Report`), ``memaudit duplicates``,
``membership`` and ``subsequences`` write their own pair; docs/report.md describes the keys.
"""

from ..io import atomic_write_text
from .audit import Report, render_html
from .document import ENVELOPE_KEYS, SCHEMA_VERSION, document, write_json_html
from .duplicates import duplicates_html, write_duplicates_report
from .html import fmt_rate, gate_paragraph
from .membership import membership_html, write_membership_report
from .subsequences import write_subsequence_report

__all__ = ["ENVELOPE_KEYS", "Report", "SCHEMA_VERSION", "atomic_write_text", "document",
           "duplicates_html", "fmt_rate", "gate_paragraph", "membership_html", "render_html",
           "write_duplicates_report", "write_json_html", "write_membership_report",
           "write_subsequence_report"]
