"""memaudit.io is public API: its examples run and docs/io.md lists every writer."""

import doctest
import os
from pathlib import Path

import pytest

import memaudit.io as mio

ROOT = Path(__file__).resolve().parents[1]


def test_the_examples_in_the_docstrings_run():
    result = doctest.testmod(mio, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_docs_io_lists_every_public_name():
    text = (ROOT / "docs" / "io.md").read_text()
    assert [n for n in mio.__all__ if f"`{n}(" not in text] == []
    for name in mio.__all__:
        doc = getattr(mio, name).__doc__
        assert "Parameters\n    ----------" in doc, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with mio.atomic_path(target, suffix=".png") as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["a.png"]


def test_stale_temporaries_of_dead_processes_only_are_removed(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max of 4194304: no such process
    stale = tmp_path / f".ckpt.safetensors.{dead}.a8Qz1w.tmp"
    live = tmp_path / f".ckpt.safetensors.{os.getpid()}.b2c3d4.tmp"
    other = tmp_path / ".hidden.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert mio.remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
