"""The figures of the studies: matplotlib on the Agg backend, imported on first use, saved atomically.

Figures are optional: :func:`pyplot` raises ``ImportError`` when matplotlib is missing and the
studies then write their JSON and tables without the PNGs (``pip install 'memaudit[plot]'``).
"""

from __future__ import annotations

import numpy as np

from memaudit.io import atomic_path

__all__ = ["pyplot", "save_png", "collapse_norm"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display).

    Returns
    -------
    module
        ``matplotlib.pyplot``.

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def legends(axes, **kw) -> None:
    """A legend on every panel that has a labelled artist (a panel can be empty: runs whose
    f_mem stays 0 are left out of a collapse), without matplotlib's warning for the others."""
    for a in np.atleast_1d(axes).ravel():
        if a.get_legend_handles_labels()[0]:
            a.legend(**kw)


def save_png(fig, path, *, dpi: int = 110, close: bool = True) -> None:
    """Lay ``fig`` out (``tight_layout`` unless it has a layout engine), save it as a PNG atomically (a killed study never leaves
    half a file), then close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or os.PathLike
        The target file.
    dpi : int, default 110
        The resolution of every study figure.
    close : bool, default True
        Close the figure after saving (frees its memory in long studies).
    """
    if fig.get_layout_engine() is None:  # figures made with constrained layout keep it
        fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    if close:
        pyplot().close(fig)


def collapse_norm(f_mem):
    """f_mem / f_mem(last checkpoint) for a collapse plot, or None when the last value is 0 or not
    finite (nothing to normalise by: such a run is left out of the collapse, not drawn as a spike
    of 0 / 1e-12)."""
    import numpy as np

    f = np.asarray(f_mem, float)
    if f.size == 0 or not np.isfinite(f[-1]) or f[-1] <= 0:
        return None
    return f / f[-1]

