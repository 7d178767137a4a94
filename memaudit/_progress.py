"""A small progress bar on stderr (no dependency), for searches and encoders that take a while."""

from __future__ import annotations

import sys
import time


class Progress:
    """Report ``done / total`` units of work on stderr, at most every ``interval`` seconds.

    Parameters
    ----------
    total : int
        Units of work expected (rows, pairs, images).
    desc : str
        Label printed before the bar.
    enabled : bool or None
        ``None`` shows the bar only when stderr is a terminal.
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None, interval: float = 0.5):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = bool(enabled)
        self.interval = interval
        self.done = 0
        self._start = time.perf_counter()
        self._last = -float("inf")

    def update(self, n: int) -> None:
        self.done += int(n)
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
        if self.enabled:
            self._write(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
