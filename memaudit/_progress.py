"""Progress bars on stderr, one mechanism for every stage (decoding, encoding, search, bootstrap,
attacks).

Whether bars are shown is decided once per run, in this order:

1. ``enabled`` given to :class:`Progress` (True / False);
2. the run's setting, set by :func:`progress_scope` (every runner enters it with its config's
   ``progress`` field: ``--progress`` True, ``--no-progress`` False, neither None);
3. otherwise: when stderr is a terminal.

So ``memaudit audit ... --progress 2> log.txt`` writes every stage's bar into the log, and
``--no-progress`` silences all of them. Bars are drawn by tqdm when it is installed (it is a
dependency of the ``datasets`` and ``diffusers`` stacks), else by a small writer of the same
``desc: ...%`` line.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import time
from contextlib import contextmanager

__all__ = ["Progress", "progress_scope", "with_progress", "shown", "track"]

_SCOPE: contextvars.ContextVar = contextvars.ContextVar("memaudit_progress", default=None)


def shown(enabled: bool | None = None) -> bool:
    """Whether a bar is drawn: ``enabled``, else the run's setting, else stderr is a terminal."""
    if enabled is None:
        enabled = _SCOPE.get()
    if enabled is None:
        try:
            enabled = sys.stderr.isatty()
        except (AttributeError, ValueError):  # a closed or replaced stderr
            enabled = False
    return bool(enabled)


@contextmanager
def progress_scope(enabled: bool | None):
    """Set the run's progress setting for every bar created inside the block (None: unchanged)."""
    if enabled is None:
        yield
        return
    token = _SCOPE.set(bool(enabled))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def with_progress(run):
    """Decorate a runner ``run(config, ...)``: its stages follow ``config.progress``."""

    @functools.wraps(run)
    def wrapper(config, *args, **kwargs):
        with progress_scope(getattr(config, "progress", None)):
            return run(config, *args, **kwargs)

    return wrapper


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the usual stacks
        return None
    return tqdm


class Progress:
    """Report ``done / total`` units of work on stderr, at most every ``interval`` seconds.

    Parameters
    ----------
    total : int
        Units of work expected (rows, pairs, images, resamples).
    desc : str
        Label printed before the bar (it names the stage).
    enabled : bool or None
        ``None`` follows the run's setting (:func:`progress_scope`), else stderr being a terminal.
    interval : float
        Seconds between redraws.
    unit : str
        What one unit is ("it", "img", "pair").
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None, interval: float = 0.5,
                 unit: str = "it"):
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = shown(enabled)
        self.interval = interval
        self.done = 0
        self._start = time.perf_counter()
        self._last = -float("inf")
        self._bar = None
        tqdm = _tqdm() if self.enabled else None
        if tqdm is not None:
            self._bar = tqdm(total=self.total, desc=desc, file=sys.stderr, mininterval=interval,
                             unit=unit, leave=True, dynamic_ncols=True, ascii=not _utf8())

    def update(self, n: int) -> None:
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._write(now)

    def _write(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        elapsed = now - self._start
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        sys.stderr.write(
            f"\r{self.desc}: [{bar}] {100 * frac:5.1f}% {elapsed:6.1f}s elapsed, ~{eta:5.1f}s left"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled:
            self._write(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable, total: int, desc: str, enabled: bool | None = None, unit: str = "it"):
    """Yield from ``iterable`` with a :class:`Progress` bar advanced by one per item."""
    with Progress(total, desc, enabled, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def _utf8() -> bool:
    enc = getattr(sys.stderr, "encoding", None) or ""
    return enc.lower().replace("-", "") in ("utf8", "utf_8")
