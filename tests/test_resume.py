"""Resume that survives damaged run files: truncated checkpoints, torn stats.jsonl lines, stale
temporaries; checkpoints that load without executing pickles; one loader for each run file."""

import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from reference_models.ddpm.checkpoints import (CheckpointError, RunFileWarning,  # noqa: E402
                                               checkpoint_path, load_checkpoint, read_stats,
                                               readable_checkpoints)
from reference_models.ddpm.config import TrainConfig  # noqa: E402
from reference_models.ddpm.train import checkpoint_steps, train  # noqa: E402

# the tiny configuration of the exact-resume tests in test_ddpm.py: checkpoints at 1, 3, 6, 16, 40
CFG = TrainConfig(n_train=16, n_holdout=8, steps=40, n_checkpoints=5, batch_size=8, width=8,
                  optimizer="sgd", lr=0.01)
QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of CFG."""
    assert checkpoint_steps(40, 5) == [1, 3, 6, 16, 40]
    run = tmp_path_factory.mktemp("straight") / "run"
    train(CFG, run, **QUIET)
    return run


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _assert_same_end(a: Path, b: Path) -> None:
    """Final checkpoints equal bit for bit (weights, optimizer moments, random states), same stats."""
    ka = load_checkpoint(checkpoint_path(a, 40))["tensors"]
    kb = load_checkpoint(checkpoint_path(b, 40))["tensors"]
    assert ka.keys() == kb.keys()
    for k in ka:
        torch.testing.assert_close(ka[k], kb[k], rtol=0, atol=0, msg=k)

    def strip(run):
        return [{k: v for k, v in rec.items() if k != "seconds"} for rec in read_stats(run)]

    assert strip(a) == strip(b)
    assert [r["step"] for r in read_stats(b)] == checkpoint_steps(40, 5)


def _warnings_text(record) -> str:
    return "\n".join(str(w.message) for w in record if issubclass(w.category, RunFileWarning))


def test_truncated_latest_checkpoint_and_torn_stats_line_resume_bit_identically(straight, tmp_path):
    run = tmp_path / "killed"
    train(CFG, run, stop_after=20, **QUIET)  # a kill after step 20: latest checkpoint is step 16
    latest = checkpoint_path(run, 16)
    _truncate(latest)  # a disk that filled up, a copy that stopped half-way
    with open(run / "stats.jsonl", "a") as fh:  # a kill in the middle of appending a record
        fh.write('{"step": 17, "loss": 0.3')
    n_lines = len((run / "stats.jsonl").read_text().splitlines())
    with pytest.raises(CheckpointError, match=re.escape(str(latest))):
        load_checkpoint(latest)
    logged = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert readable_checkpoints(run) == [checkpoint_path(run, s) for s in (1, 3, 6)]
        train(CFG, run, log=logged.append)
    text = _warnings_text(record)
    assert f"skipping checkpoint {latest}" in text and "safetensors" in text
    assert f"line {n_lines} of {run / 'stats.jsonl'}" in text
    assert logged[0] == f"resumed {run} at step 6"  # fell back to the previous readable one
    _assert_same_end(straight, run)
    # the damaged checkpoint was written again on the way, equal to the straight run's
    redone = load_checkpoint(latest)["tensors"]
    for k, v in load_checkpoint(checkpoint_path(straight, 16))["tensors"].items():
        torch.testing.assert_close(redone[k], v, rtol=0, atol=0)


def test_a_checkpoint_whose_header_opens_but_content_fails_is_passed_over(straight, tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "killed"
    train(CFG, run, stop_after=20, **QUIET)
    bad = checkpoint_path(run, 18)  # whole safetensors file, but not this run's config
    save_file({"x": torch.zeros(3)}, str(bad), metadata={"config": '{"no_such_field": 1}', "step": "18"})
    logged = []
    with pytest.warns(RunFileWarning, match=re.escape(f"checkpoint {bad} cannot be read")):
        train(CFG, run, log=logged.append)
    assert logged[0] == f"resumed {run} at step 16"
    _assert_same_end(straight, run)


def test_a_run_whose_only_checkpoint_is_truncated_starts_again_with_a_warning(straight, tmp_path):
    run = tmp_path / "r"
    train(CFG, run, stop_after=2, **QUIET)  # only step 1 was saved
    only = checkpoint_path(run, 1)
    assert [p.name for p in (run / "checkpoints").iterdir()] == [only.name]
    _truncate(only)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert readable_checkpoints(run) == []
        with pytest.raises(FileNotFoundError, match="no readable checkpoints"):
            readable_checkpoints(run, required=True)
        logged = []
        train(CFG, run, log=logged.append)
    text = _warnings_text(record)
    assert f"skipping checkpoint {only}" in text
    assert f"{run} has checkpoints but none is readable; training from step 0" in text
    assert not any(m.startswith("resumed") for m in logged)
    _assert_same_end(straight, run)


def test_no_readable_checkpoint_and_another_config_is_refused(tmp_path):
    run = tmp_path / "r"
    train(CFG, run, stop_after=2, **QUIET)
    _truncate(checkpoint_path(run, 1))
    other = TrainConfig(**{**CFG.__dict__, "lr": 0.02})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunFileWarning)
        with pytest.raises(ValueError, match=r"another config \(config.json\)"):
            train(other, run, **QUIET)
    assert TrainConfig.from_json((run / "config.json").read_text()) == CFG  # left as it was


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_removes_the_temporaries_of_dead_runs_only(tmp_path):
    run = tmp_path / "r"
    train(CFG, run, stop_after=4, **QUIET)
    dead = _dead_pid()
    stale = [run / f".stats.jsonl.{dead}.k3j_9x.tmp",
             run / "checkpoints" / f".step_00000006.safetensors.{dead}.a8Qz1w.tmp"]
    live = run / "checkpoints" / f".step_00000006.safetensors.{os.getpid()}.b2c3d4.tmp"
    for p in stale + [live]:
        p.write_bytes(b"half a file")
    other = run / "notes.tmp"  # not named like a temporary: never touched
    other.write_text("mine")
    train(CFG, run, stop_after=8, **QUIET)
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.read_text() == "mine"  # a writer that is still running
    live.unlink()
    assert read_stats(run)[-1]["step"] == 6


def test_read_stats_skips_torn_lines_with_their_number(tmp_path):
    recs = [{"step": 1, "loss": 0.5}, {"step": 3, "loss": 0.25}]
    (tmp_path / "stats.jsonl").write_text(
        json.dumps(recs[0]) + "\n" + '{"step": 2, "lo\n' + json.dumps(recs[1]) + "\n[1, 2]\n"
        + '{"step": 9, "loss"')
    with pytest.warns(RunFileWarning) as record:
        assert read_stats(tmp_path) == recs
    text = _warnings_text(record)
    for line in (2, 4, 5):
        assert f"line {line} of {tmp_path / 'stats.jsonl'}" in text
    assert "line 1 " not in text and "line 3 " not in text
    assert read_stats(tmp_path / "absent") == []


class _Trap:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_named_like_a_checkpoint_is_refused_without_running_it(tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pickle-was-executed"
    fake = checkpoint_path(run, 5)
    fake.write_bytes(pickle.dumps(_Trap(marker)))
    torch.save({"w": torch.zeros(2)}, checkpoint_path(run, 7))  # a torch pickle (zip) file
    with pytest.warns(RunFileWarning, match="not a readable safetensors file"):
        assert readable_checkpoints(run) == []
    with pytest.raises(CheckpointError):
        load_checkpoint(fake)
    assert not marker.exists()


def test_every_reader_skips_the_truncated_checkpoint(straight, tmp_path):
    from reference_models.ddpm.track import samples_at_checkpoints

    run = tmp_path / "killed"
    train(CFG, run, stop_after=20, **QUIET)
    _truncate(checkpoint_path(run, 3))
    with pytest.warns(RunFileWarning, match=re.escape(str(checkpoint_path(run, 3)))):
        got = samples_at_checkpoints(run, n_samples=2, steps=3)
    assert sorted(got) == [1, 6, 16]
    ref = samples_at_checkpoints(straight, n_samples=2, steps=3)
    for s in got:
        np.testing.assert_array_equal(got[s], ref[s])


def test_run_files_are_read_through_one_loader_each():
    """No module globs checkpoints or parses stats.jsonl itself (so every reader skips damage)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("reference_models/**/*.py"), root / "memaudit" / "runners" / "demo.py"]:
        if path.name == "checkpoints.py":
            continue
        text = path.read_text()
        if re.search(r"glob\([\"']step_", text) or re.search(r"stats\.jsonl[\"']\)?\.read_", text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_checkpoints_are_written_read_and_turned_into_models_in_one_module():
    """Only checkpoints.py touches safetensors or loads a state dict: track, membership, sweep and
    ts_diffusion rebuild models through ``load_model``, resume through ``restore_training_state``."""
    import ast

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted(root.glob("reference_models/**/*.py")):
        if path.name == "checkpoints.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m.split(".")[0] == "safetensors" for m in mods):
                offenders.append(f"{path.relative_to(root)}:{node.lineno} imports safetensors")
            if isinstance(node, ast.Attribute) and node.attr == "load_state_dict":
                offenders.append(f"{path.relative_to(root)}:{node.lineno} calls load_state_dict")
    assert offenders == []


def test_load_model_rebuilds_the_trained_network(straight):
    from reference_models.ddpm.checkpoints import load_model

    model, ck = load_model(checkpoint_path(straight, 40))
    assert not model.training and ck["step"] == 40 and ck["config"] == CFG
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ck["tensors"][f"model.{k}"], rtol=0, atol=0)
