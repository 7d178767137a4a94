"""Reading large arrays block by block, each block checked for NaN/Inf (private).

Shared by the images adapter (hashes of memory-mapped image sets) and the duplicates probe (range
search over memory-mapped features), so that a file larger than memory is read once in bounded
memory, whichever layer reads it.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_finite

__all__ = ["iter_blocks", "BLOCK_BYTES", "HASH_BITS"]

BLOCK_BYTES = 32 << 20  # float64 working memory per block
# Width of the perceptual hash codes (pHash, dHash): written by the images adapter, compared by
# the duplicates probe (Hamming distances from 0 to 64).
HASH_BITS = 64


def iter_blocks(x: np.ndarray, name: str, row_bytes: int | None = None):
    """Yield ``(start, block)`` over the rows of ``x``, each block checked for NaN/Inf.

    A memory-mapped ``x`` is copied block by block and its pages are released after each copy,
    so that a file larger than memory is read once in bounded memory.
    """
    from .neighbors import _release

    n = x.shape[0]
    per_row = int(row_bytes or 8 * max(1, int(np.prod(x.shape[1:]))))
    rows = max(1, BLOCK_BYTES // per_row)
    mm = getattr(x, "_mmap", None) if isinstance(x, np.memmap) else None
    for start in range(0, n, rows):
        block = x[start : start + rows]
        if mm is not None:
            block = np.array(block)
            _release(mm)
        check_finite(block.reshape(block.shape[0], -1), name, offset=start)
        yield start, block
