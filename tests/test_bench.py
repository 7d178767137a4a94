"""The bench scripts run end to end in their --quick setting (opt-in: pytest -m slow)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script, expect", [("knn.py", "memory-mapped reference"),
                                            ("dedup.py", "dense / memaudit exact time"),
                                            ("subsequence.py", "ratio stumpy.match / memaudit"),
                                            ("faiss_tile.py", "ratio default / 16384"),
                                            ("audit.py", "sklearn / memaudit")])
def test_bench_quick(script, expect, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--tmp",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert expect in out.stdout
    assert ("agrees with memaudit" in out.stdout or "recall 1.0000" in out.stdout
            or "same best match as memaudit: 40/40" in out.stdout
            or "same flagged samples: True" in out.stdout)
