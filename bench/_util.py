"""Shared by the bench scripts (run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import os
import resource


def peak_rss() -> int:
    """Peak resident memory of this process in bytes.

    VmHWM from /proc (Linux): unlike getrusage's ru_maxrss, it is not inherited from the parent
    process across fork + exec (the parent may have touched a multi-GB memmap while writing data).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as printed by every bench."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spin(stop):  # pragma: no cover - runs in the neighbour process
    while not stop.is_set():
        sum(range(10_000))


class BusyNeighbour:
    """``with BusyNeighbour(on):`` another process spins on one core of pure Python work for the
    block (the shared machine CI runners and clusters usually are); nothing when ``on`` is
    false."""

    def __init__(self, on: bool = True):
        self.on = on
        self.proc = None

    def __enter__(self):
        if self.on:
            import multiprocessing as mp

            self.stop = mp.Event()
            self.proc = mp.Process(target=_spin, args=(self.stop,), daemon=True)
            self.proc.start()
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop.set()
            self.proc.join(timeout=5)
