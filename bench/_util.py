"""Shared by the bench scripts (run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

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
