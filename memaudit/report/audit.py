"""The audit's report: report.json (the shared envelope) and a self-contained report.html."""

from __future__ import annotations

from dataclasses import dataclass, field

from .document import document, now, write_json_html
from .duplicates import duplicates_sections
from .html import page
from .membership import membership_html, membership_section
from .nn_ratio import gallery, nn_ratio_html
from .tracking import tracking_html

__all__ = ["AUDIT_ATTACK", "Report", "render_html"]

# the membership attack ``memaudit audit --membership`` runs
AUDIT_ATTACK = "distance to the nearest generated sample (GAN-Leaks)"


@dataclass
class Report:
    """An audit's results, ready to be written as JSON and HTML."""

    config: dict
    versions: dict
    inputs: dict
    nn_ratio: object
    duplicates: dict | None = None
    membership: object = None
    tracking: object = None
    gate: dict | None = None
    notes: list = field(default_factory=list)
    elapsed: float = 0.0
    datasets: dict = field(default_factory=dict, repr=False)
    space: str = ""  # which space was compared: "pixels in [0, 1], 28x28 grayscale, L2 distance"
    created: str = field(default_factory=now)

    @property
    def passed(self) -> bool:
        """False only when a gate was set and the gated rate is above it."""
        return self.gate is None or self.gate["passed"]

    def gallery(self) -> list[dict]:
        """The ``config['gallery']`` samples with the smallest ratio and their nearest items."""
        return gallery(self.nn_ratio, int(self.config.get("gallery", 16)))

    def to_dict(self) -> dict:
        """report.json's content: the envelope, results under ``sections`` (docs/report.md)."""
        sections = {
            "nn_ratio": self.nn_ratio.to_dict(per_sample=True),
            "gallery": self.gallery(),
            "duplicates": None if self.duplicates is None
            else {k: v.to_dict() for k, v in self.duplicates.items()},
            "membership": None if self.membership is None
            else membership_section(self.membership, AUDIT_ATTACK),
            "tracking": None if self.tracking is None else self.tracking.to_dict(),
        }
        return document("report", sections, config=self.config, versions=self.versions,
                        inputs=self.inputs, gate=self.gate, created=self.created,
                        elapsed=self.elapsed, notes=self.notes, space=self.space)

    def write(self, out_dir) -> dict:
        """Write report.json and report.html into ``out_dir`` (created if needed)."""
        data = self.to_dict()
        return write_json_html(out_dir, "report", data, render_html(self, data))


def render_html(report: Report, data: dict) -> str:
    """report.html of ``report`` (``data``: its :meth:`Report.to_dict`)."""
    s = data["sections"]
    body = [nn_ratio_html(report.nn_ratio, s["nn_ratio"], s["gallery"], report.datasets)]
    if report.duplicates:
        body.append("<h2>Duplicates</h2>"
                    + duplicates_sections(report.duplicates, report.datasets, level=3))
    if report.membership is not None:
        body.append(membership_html(report.membership, "Membership inference (distance to the "
                                    "nearest generated sample, GAN-Leaks style)"))
    if report.tracking is not None:
        body.append(tracking_html(report.tracking))
    return page(data, "memaudit: memorization audit", "\n".join(body))
