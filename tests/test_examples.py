"""The examples/ scripts run, in a small setting, and find what they planted."""

import runpy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_audit_arrays_example(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["audit_arrays.py", "--n-train", "300", "--n-samples", "120",
                                      "--n-copies", "9", "--size", "16", "--out", str(tmp_path)])
    ns = runpy.run_path(str(ROOT / "examples" / "audit_arrays.py"), run_name="not_main")
    result = ns["main"](sys.argv[1:])
    out = capsys.readouterr().out
    assert result.memorized.sum() == 9
    assert "flagged with the right source: 9" in out
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.html").exists()
    assert np.all(result.ratio[result.memorized] < 1 / 3)
