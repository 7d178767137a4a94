"""What every runner shares: config fields that carry their help, defaults read from their owners,
input loading, one-line errors that name the option, and the result of a run.

A config field is a dataclass field whose ``metadata`` says what it means (``help``) and, for the
command line, how its value is read (``kind``, ``choices``, ``metavar``, ``flag``, ``group``,
``required``, ``default_text``). :mod:`memaudit.cli` builds every parser from these fields, so an
option's default and help are written once, here, beside the setting.
"""

from __future__ import annotations

import contextlib
import inspect
import platform
import re
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path

import numpy as np

from ..io import check_writable_dir
from .._validation import check_positive_int, check_same_dim
from ..conventions import harmonize, parse_declarations
from ..gate import GATES, Gate, verdict_line
from ..sources import Dataset, load_dataset
from ..stats import StatsConfig

__all__ = ["option", "defaults_of", "STATS", "SETS", "Run", "package_versions", "load_inputs",
           "resolved", "option_errors", "flag_of", "check_out", "declarations", "out_option",
           "progress_option", "gate_options", "image_options", "cluster_options",
           "check_cluster_options", "csv_option"]

STATS = StatsConfig()  # the defaults of n_bootstrap, confidence and seed, owned by memaudit.stats
GATE = Gate()  # the defaults of fail_above and gate, owned by memaudit.gate
SETS = ("train", "samples", "holdout")  # the inputs of audit, duplicates and subsequences


def defaults_of(obj) -> dict:
    """The keyword defaults of a class's ``__init__`` or of a function, by parameter name."""
    return {k: p.default for k, p in inspect.signature(obj).parameters.items()
            if p.default is not inspect.Parameter.empty}


def option(default=None, help: str = "", *, factory=None, **cli):
    """A config field with its help text and how the command line reads it (see the module)."""
    meta = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def image_options(*, group: str | None = None, listed_in: str = "the report") -> tuple:
    """The image-folder fields every runner that reads images shares: ``resize``, ``mode`` and
    ``skip_unreadable`` (new field objects on each call, one set per config class)."""
    g = {} if group is None else {"group": group}
    return (option(None, "image folders: resize every image (e.g. 32 or 32x32)", kind="size",
                   metavar="HxW", default_text="none: images keep their size", **g),
            option(None, "image folders: read as grayscale (L) or colour (RGB)",
                   choices=("L", "RGB"), default_text="L when every image is grayscale, else RGB",
                   **g),
            option(False, f"image folders: skip files that cannot be decoded (listed in "
                   f"{listed_in}) instead of failing", **g))


def _declaration_help(what: str, sets: tuple) -> str:
    if what == "range":
        return (f"declare the value range of an input (SET one of {', '.join(sets)}; no SET= for "
                "all), e.g. samples=-1,1 (diffusers) or samples=0,255 (uint8): it is converted to "
                "the first set's range. Without it, inputs whose ranges differ are refused, never "
                "compared as they are. Repeatable")
    return ("declare the layout of an input, e.g. samples=CHW (PyTorch's channels-first): it is "
            "converted to the first set's layout. Repeatable")


def declarations(what: str, sets: tuple, **cli):
    """The ``ranges`` / ``layouts`` field of a config over the inputs ``sets``.

    Its value is a dict ``{"samples": "-1,1"}`` or the command line's list ``["samples=-1,1",
    "0,1"]`` (an entry without ``SET=`` applies to every set).
    """
    return option(None, _declaration_help(what, sets), kind="declarations", flag=f"--{what}",
                  metavar=f"[SET=]{'LO,HI' if what == 'range' else 'HWC|CHW'}", sets=sets,
                  default_text="none: inferred, and a mismatch is refused", **cli)


def out_option(stem: str, **cli):
    """The ``out`` field: the folder the runner writes ``stem``.json and ``stem``.html into."""
    return option(None, f"folder for {stem}.json and {stem}.html", kind="path", required=True,
                  metavar="DIR", default_text="none: not written", **cli)


def progress_option(**cli):
    """The ``progress`` field: None shows bars when stderr is a terminal; --progress: True (also
    when stderr is a file or a pipe); --no-progress: False (:mod:`memaudit._progress`)."""
    return option(None, "progress bars on stderr for every stage (decoding, encoding, search, "
                  "bootstrap, attacks); --progress also when stderr is not a terminal, "
                  "--no-progress turns them off", kind="tristate", flag="--progress",
                  default_text="on when stderr is a terminal", **cli)


def gate_options(figure: str, choices: str | None = None, *, metavar: str = "RATE", **cli):
    """The ``fail_above`` field (and, with ``choices``, the ``gate`` field) of the one Gate.

    ``figure`` names what --fail-above reads; ``choices`` says what each gate choice reads.
    """
    fail_above = option(GATE.fail_above, f"fail (exit code 3) when {figure} is above {metavar}"
                        + (" (a fraction: 0.01 = 1%)" if metavar == "RATE" else ""),
                        kind="fraction", metavar=metavar, default_text="none: no gate", **cli)
    if choices is None:
        return fail_above
    return fail_above, option(GATE.gate, choices, choices=GATES, **cli)


def flag_of(f) -> str:
    """The command-line option of a config field: ``--n-bootstrap`` for ``n_bootstrap``."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


@contextlib.contextmanager
def option_errors(config, aliases: dict | None = None):
    """Name the option in a parameter error: ``stride must ...`` -> ``stride (--stride) must ...``.

    ``aliases`` maps a probe's parameter name to the config field it comes from (``length`` ->
    ``window``). Only errors about settings pass through here, never errors about data.
    """
    flags = {f.name: flag_of(f) for f in fields(config)}
    for probe_name, field_name in (aliases or {}).items():
        flags[probe_name] = flags[field_name]
    try:
        yield
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        m = re.match(r"(\w+) (?!\()", msg)  # "name (...)" is named already
        if m and m.group(1) in flags:
            name = m.group(1)
            field_name = (aliases or {}).get(name, name)
            raise type(exc)(f"{field_name} ({flags[name]}) {msg[m.end():]}") from None
        raise


def check_out(config) -> None:
    """Refuse, before any work, an output folder (or --csv file) that cannot be written (one
    line)."""
    if getattr(config, "out", None) is not None:
        check_writable_dir(config.out)
    csv = getattr(config, "csv", None)
    if csv is not None:
        p = Path(csv)
        if p.is_dir():
            raise ValueError(f"--csv {p} is a folder; give a file name, e.g. {p / 'items.csv'}")
        check_writable_dir(p.parent if str(p.parent) else ".", "--csv folder")
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("--csv needs pandas: pip install 'memaudit[pandas]'") from None


def csv_option(what: str, **cli):
    """The ``csv`` field: also write the run's per-item table (``to_frame()``) to a CSV file."""
    return option(None, f"also write the per-item table ({what}) as CSV to this file",
                  kind="path", metavar="FILE.csv", default_text="none: not written", **cli)


def package_versions() -> dict:
    """Versions of Python and of the packages that shape the numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("memaudit", "numpy", "scipy", "scikit-learn", "faiss-cpu", "Pillow", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def parsed_declarations(config, names) -> tuple[dict, dict]:
    """The config's ``ranges`` and ``layouts`` as dicts (command-line lists parsed; one-line
    errors)."""
    out = []
    for attr, flag in (("ranges", "--range"), ("layouts", "--layout")):
        value = getattr(config, attr, None)
        if isinstance(value, dict) or value is None:
            out.append(dict(value or {}))
        else:
            values = [value] if isinstance(value, str) else value
            out.append(parse_declarations(values, names, flag))
    return out[0], out[1]


def _load(value, name, config) -> Dataset | None:
    if value is None or isinstance(value, Dataset):
        return value
    return load_dataset(value, name, resize=getattr(config, "resize", None),
                        mode=getattr(config, "mode", None),
                        skip_unreadable=getattr(config, "skip_unreadable", False),
                        progress=getattr(config, "progress", None))


def load_inputs(config, names=("train", "samples", "holdout")):
    """Load the inputs a config names and bring them to one convention (or refuse, one line).

    Returns ``(datasets, notes)``: a dict name -> Dataset (None for inputs not given), every
    Dataset with its :class:`memaudit.conventions.Convention`, converted where the config declares
    a range or layout; and notes for the report. The first name is the reference (the training
    set, or the members).
    """
    ranges, layouts = parsed_declarations(config, names)
    loaded = {k: _load(getattr(config, k), k, config) for k in names}
    first = names[0]
    for k, ds in loaded.items():
        if ds is not None and k != first:
            check_same_dim(ds.x, loaded[first].x, k, first)
    return harmonize(loaded, ranges=ranges, layouts=layouts)


def resolved(config, **override) -> dict:
    """A JSON-safe copy of a config for the report; arrays are described by their shape."""
    def safe(v):
        if isinstance(v, Dataset):
            return v.source
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {str(k): safe(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
            return list(v)
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return f"<{type(v).__name__} of shape {tuple(np.shape(v))}>"

    values = {f.name: getattr(config, f.name) for f in fields(config)}
    return {k: safe(v) for k, v in {**values, **override}.items()}


@dataclass
class Run:
    """What every runner returns: its typed result (in the subclass), the gate and the files.

    Attributes
    ----------
    config : the config dataclass the run was made from
    gate : dict or None
        The gate's record (figure, value, fail_above, passed), also written in the report.
    paths : dict or None
        ``{"json": Path, "html": Path}`` once the report is written (``config.out`` or
        :meth:`write`).
    notes : list of str
        Remarks for the report; those starting with "warning" are also printed on stderr.
    """

    config: object
    gate: dict | None = None
    paths: dict | None = None
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """False only when a gate was set and the gated figure is above it (or not computed)."""
        return self.gate is None or bool(self.gate["passed"])

    def warnings(self) -> list:
        """The lines for stderr: every note that starts with "warning"."""
        return [n for n in self.notes if n.startswith("warning")]

    def _tail(self) -> list:
        """The last lines of every text summary: the gate's verdict and the report's files."""
        lines = [] if self.gate is None else [verdict_line(self.gate)]
        if self.paths is not None:
            lines.append(f"report: {self.paths['json']}\n        {self.paths['html']}")
        return lines

    def to_frame(self):
        """The run's per-item table (pandas); each runner says what one row is."""
        raise NotImplementedError(f"{type(self).__name__} has no per-item table")

    def write_csv(self, path) -> Path:
        """Write :meth:`to_frame` as CSV (atomically, no index column); returns the path."""
        from ..io import atomic_write_text

        atomic_write_text(path, self.to_frame().to_csv(index=False))
        if self.paths is not None:
            self.paths["csv"] = Path(path)
        return Path(path)

    def _report_paths(self) -> dict:
        return {} if self.paths is None else {k: str(v) for k, v in self.paths.items()}


def cluster_options(**cli):
    """The ``cluster`` and ``shard_rows`` fields: where the searches run (memaudit.distributed)
    and how a training set given as one file or zarr array is cut into shards."""
    cluster = option(None, "search on a Dask cluster: local:N (N worker processes here), "
                     "tcp://HOST:PORT or a scheduler .json file (Python: a distributed.Client); "
                     "needs memaudit[dask]; the results are the same", kind="text", metavar="SPEC",
                     default_text="none: in this process", **cli)
    shard_rows = option(None, "rows per shard of a training set given as one .npy file or a zarr "
                        "array (a folder of .npy files: one shard per file)", kind="int",
                        metavar="N", default_text="about 256 MiB a shard", **cli)
    return cluster, shard_rows


def check_cluster_options(config) -> None:
    """Refuse a bad ``cluster`` spec or ``shard_rows`` before any work (one line)."""
    from ..distributed import check_cluster

    with option_errors(config):
        check_cluster(config.cluster)
        if config.shard_rows is not None:
            check_positive_int(config.shard_rows, "shard_rows")
