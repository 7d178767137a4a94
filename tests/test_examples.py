"""The examples/ scripts run, in a small setting, and find what they planted."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

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


def _run_example(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    ns = runpy.run_path(str(ROOT / "examples" / name), run_name="not_main")
    return ns["main"](argv)


def test_audit_diffusers_pipeline_example(tmp_path, monkeypatch, capsys):
    """The example audits a pipeline folder the test saves; two training items are copies of
    samples 2 and 9 (drawn alone from their seeds): exactly those are flagged, and the first is
    redrawn alone with the same distance."""
    pytest.importorskip("diffusers")
    from test_diffusers import save_pipeline

    from memaudit.adapters.diffusers import sample, sample_seeds

    model = save_pipeline(tmp_path / "pipe")
    rng = np.random.default_rng(1)
    train = rng.random((50, 8, 8)).astype(np.float32)
    train[[4, 30]] = sample(model, seeds=sample_seeds(0, 24)[[2, 9]], steps=3)
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "holdout.npy", rng.random((30, 8, 8)).astype(np.float32))
    run = _run_example("audit_diffusers_pipeline.py",
                       ["--model", model, "--train", str(tmp_path / "train.npy"), "--holdout",
                        str(tmp_path / "holdout.npy"), "--n-samples", "24", "--steps", "3",
                        "--out", str(tmp_path / "out")], monkeypatch)
    out = capsys.readouterr().out
    assert np.flatnonzero(run.report.nn_ratio.memorized).tolist() == [2, 9]
    assert "sample-2 copies training item 4" in out and "sample-9 copies training item 30" in out
    assert "redrawn alone from its seed" in out and "(the same)" in out
    assert (tmp_path / "out" / "report.json").exists()


def test_track_diffusers_run_example(tmp_path, monkeypatch, capsys):
    pytest.importorskip("diffusers")
    from test_diffusers import save_run

    run_dir = save_run(tmp_path / "run", (30, 5))
    rng = np.random.default_rng(2)
    for name, n in (("train", 40), ("holdout", 30)):
        np.save(tmp_path / f"{name}.npy", rng.random((n, 8, 8)).astype(np.float32))
    run = _run_example("track_diffusers_run.py",
                       ["--run", run_dir, "--train", str(tmp_path / "train.npy"), "--holdout",
                        str(tmp_path / "holdout.npy"), "--n-samples", "12", "--steps", "2",
                        "--out", str(tmp_path / "out")], monkeypatch)
    out = capsys.readouterr().out
    assert run.curves["unet"].steps.tolist() == [5, 30]
    rec = run.curves["unet"].recommended
    assert f"unet: keep {Path(run_dir) / f'checkpoint-{rec}' / 'unet'}" in out
    assert (tmp_path / "out" / "tracking.html").exists()


def test_subsequences_on_a_cluster_example(tmp_path, monkeypatch, capsys):
    """On a LocalCluster of 2 workers, over 3 shards: every planted replay is found at its
    training series and offset, and the answer equals the one-process search bit for bit."""
    pytest.importorskip("distributed")
    run, one, planted = _run_example(
        "subsequences_on_a_cluster.py",
        ["--n-train", "30", "--length", "96", "--window", "24", "--shards", "3", "--workers", "2",
         "--out", str(tmp_path)], monkeypatch)
    out = capsys.readouterr().out
    res = run.result
    for g, o_g, t, o_t in planted:
        at = np.flatnonzero((res.query_series == g) & (res.query_offset == o_g))[0]
        assert res.match_id[at] == f"{t}@{o_t}" and res.memorized[at]
    assert "bit for bit: True" in out and "on 2 workers, 3 shards" in out
    assert np.array_equal(res.ratio, one.result.ratio, equal_nan=True)
    assert (tmp_path / "subsequences.html").exists()
