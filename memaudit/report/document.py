"""The one document envelope of every report (report.json, duplicates.json, membership.json,
subsequences.json) and the atomic writer of a JSON/HTML pair."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..io import atomic_write_pair, remove_stale_temporaries
from ..results import jsonable

__all__ = ["ENVELOPE_KEYS", "SCHEMA_VERSION", "document", "now", "write_json_html"]

SCHEMA_VERSION = "2.0"
# every report's top-level keys, in this order (docs/report.md describes each)
ENVELOPE_KEYS = ("schema", "schema_version", "run_id", "created", "elapsed_seconds", "seed",
                 "config", "versions", "inputs", "space", "notes", "gate", "sections")


def now() -> str:
    """The current UTC time as the reports write it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def document(command: str, sections: dict, *, config: dict, versions: dict, inputs: dict,
             gate: dict | None = None, seed=None, created: str | None = None,
             elapsed: float = 0.0, notes=(), space: str | None = None) -> dict:
    """A report's JSON content: the envelope every command shares, results under ``sections``.

    Parameters
    ----------
    command : str
        "report" (the audit), "duplicates", "membership" or "subsequences": the schema is
        ``memaudit.<command>``.
    sections : dict
        The results, one key per section (None for a section the run did not compute).
    config, versions : dict
        The resolved configuration and the package versions.
    inputs : dict
        Per input set, its description (a dict with at least ``source``) or the path it came
        from (written as ``{"source": path}``); sets that were not given are left out.
    gate : dict, optional
        The gate's record (:meth:`memaudit.gate.Gate.apply`); None when no gate was set.
    seed : int, optional
        The seed of every random choice; default ``config["seed"]``.
    created : str, optional
        UTC time of the run; default now.
    elapsed : float
        Wall time of the run in seconds.
    notes : iterable of str
        Free text shown at the top of the page (warnings first-class).
    space : str, optional
        Which space was compared ("pixels in [0, 1], 8x8 grayscale, L2 (Euclidean) distance").

    Returns
    -------
    dict
        JSON-safe, with the keys of :data:`ENVELOPE_KEYS` but ``run_id`` (added by
        :func:`write_json_html`).
    """
    described = {k: ({"source": str(v)} if isinstance(v, (str, Path)) else v)
                 for k, v in inputs.items() if v is not None}
    return jsonable({
        "schema": f"memaudit.{command}",
        "schema_version": SCHEMA_VERSION,
        "created": created or now(),
        "elapsed_seconds": round(float(elapsed), 3),
        "seed": config.get("seed") if seed is None else seed,
        "config": config,
        "versions": versions,
        "inputs": described,
        "space": space or None,
        "notes": list(notes),
        "gate": gate,
        "sections": sections,
    })


def write_json_html(out_dir, stem: str, data: dict, page: str) -> dict:
    """Write ``stem``.json (strict JSON) and ``stem``.html into ``out_dir`` as one unit.

    Both files are written in full as temporaries before either is renamed (the JSON last), and
    both carry the same run id (the JSON's ``run_id``, the page's ``memaudit-run-id`` meta tag and
    footer): a pair whose ids differ was torn by a kill between the two renames. Temporaries left
    by killed runs in ``out_dir`` are removed first.

    Returns
    -------
    dict
        ``{"json": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    run_id = uuid.uuid4().hex
    data = {**data, "run_id": run_id}
    data = {**{k: data[k] for k in ENVELOPE_KEYS if k in data}, **data}  # envelope order first
    tag = f'<meta name="memaudit-run-id" content="{run_id}">'
    page = page.replace("<head>", "<head>" + tag, 1) if "<head>" in page else tag + page
    footer = f'<p><small>run id <code>{run_id}</code> (the same in {stem}.json)</small></p>'
    page = page.replace("</body>", footer + "</body>", 1) if "</body>" in page else page + footer
    paths = {"json": out / f"{stem}.json", "html": out / f"{stem}.html"}
    atomic_write_pair({paths["html"]: page,
                       paths["json"]: json.dumps(data, indent=2, allow_nan=False) + "\n"})
    return paths
