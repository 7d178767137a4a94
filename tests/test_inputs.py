"""Inputs people have: datasets, torch datasets, DataFrames, streamed image folders, convert.

Every source is checked against the same items read another way (the arrays they were built from,
the image folder they were saved from), and every refusal is one line naming the problem.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memaudit.cli import main
from memaudit.runners import AuditConfig, ConvertConfig, run_audit, run_convert
from memaudit.sources import load_dataset, scratch_folder, sidecar_path

ROOT = Path(__file__).resolve().parents[1]


def _folder(path, arrays):
    path.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        sub = path / ("sub" if i % 4 == 0 else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray(a).save(sub / f"img_{i:03d}.png")
    return path


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, size=(13, 6, 5, 3), dtype=np.uint8)


def test_streamed_folder_is_memory_mapped_and_equal_to_the_pixels(tmp_path, rgb, monkeypatch):
    monkeypatch.setenv("MEMAUDIT_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setattr("memaudit.sources._BATCH", 4)  # several batches, a partial last one
    ds = load_dataset(_folder(tmp_path / "f", rgb), "train")
    assert isinstance(ds.x, np.memmap) and ds.x.shape == (13, 90) and ds.item_shape == (6, 5, 3)
    order = np.argsort([f"{'sub/' if i % 4 == 0 else ''}img_{i:03d}.png" for i in range(13)])
    np.testing.assert_array_equal(ds.x, rgb[order].reshape(13, -1) / np.float32(255))
    assert ds.ids[0] == "img_001.png" and ds.ids[-1] == "sub/img_012.png"
    scratch = list((tmp_path / "scratch").iterdir())
    assert len(scratch) == 1  # the scratch file lives while the Dataset does
    del ds
    import gc

    gc.collect()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_skipped_files_keep_the_ids_of_the_readable_ones(tmp_path, rgb, monkeypatch):
    monkeypatch.setenv("MEMAUDIT_SCRATCH", str(tmp_path / "scratch"))
    f = _folder(tmp_path / "f", rgb[:3])
    good = (f / "img_001.png").read_bytes()
    (f / "img_00z_truncated.png").write_bytes(good[: len(good) // 2])  # header fine, data cut
    with pytest.raises(ValueError, match="cannot read image .*truncated.png"):
        load_dataset(f)
    ds = load_dataset(f, skip_unreadable=True)
    assert ds.ids.tolist() == ["img_001.png", "img_002.png", "sub/img_000.png"]
    assert [s[0] for s in ds.skipped] == ["img_00z_truncated.png"]
    np.testing.assert_array_equal(ds.x[2], rgb[0].ravel() / np.float32(255))


def test_datasets_object_and_save_to_disk_folder(tmp_path, rgb):
    datasets = pytest.importorskip("datasets")
    d = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in rgb],
                                    "label": list(range(13))}).cast_column("image", datasets.Image())
    ds = load_dataset(d, "train")
    assert ds.kind == "images" and ds.item_shape == (6, 5, 3)
    np.testing.assert_array_equal(ds.x, rgb.reshape(13, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.ids, np.arange(13))
    d.save_to_disk(str(tmp_path / "saved"))
    again = load_dataset(tmp_path / "saved", "train")
    np.testing.assert_array_equal(again.x, ds.x)
    assert load_dataset(f"{tmp_path / 'saved'}:image").x.shape == (13, 90)
    with pytest.raises(KeyError, match="no column 'nope'"):
        load_dataset(f"{tmp_path / 'saved'}:nope")
    # numeric columns: one feature vector per row, in column order; a string column is refused
    num = datasets.Dataset.from_dict({"a": [1.0, 2.0], "v": [[3, 4], [5, 6]]})
    np.testing.assert_array_equal(load_dataset(num).x, [[1, 3, 4], [2, 5, 6]])
    with pytest.raises(ValueError, match="column 'text' .* not numeric"):
        load_dataset(datasets.Dataset.from_dict({"a": [1.0], "text": ["x"]}))
    dd = datasets.DatasetDict({"train": num})
    dd.save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ValueError, match="splits .*train.*give one split"):
        load_dataset(tmp_path / "dict")


def test_torch_dataset_and_dataloader(rng):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    x = rng.normal(size=(10, 3, 4, 4)).astype(np.float32)
    tds = TensorDataset(torch.from_numpy(x), torch.arange(10))
    for source in (tds, DataLoader(tds, batch_size=3)):
        ds = load_dataset(source, "samples")
        assert ds.item_shape == (3, 4, 4) and ds.kind == "torch"
        np.testing.assert_array_equal(ds.x, x.reshape(10, -1))
        np.testing.assert_array_equal(ds.ids, np.arange(10))
    with pytest.raises(ValueError, match="random or custom order .*shuffle=False"):
        load_dataset(DataLoader(tds, batch_size=3, shuffle=True))

    class Pil(torch.utils.data.Dataset):  # torchvision-style: (PIL image, label)
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Image.fromarray((np.full((5, 5), 40 * i)).astype(np.uint8)), i

    ds = load_dataset(Pil())
    assert ds.kind == "images" and ds.item_shape == (5, 5)
    np.testing.assert_allclose(ds.x[:, 0], np.arange(4) * 40 / 255, rtol=1e-6)


def test_dataframe(rng):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": rng.normal(size=5), "b": np.arange(5)}, index=list("vwxyz"))
    ds = load_dataset(df, "train")
    np.testing.assert_array_equal(ds.x, df.to_numpy())
    assert ds.ids.tolist() == list("vwxyz") and ds.kind == "dataframe"
    with pytest.raises(ValueError, match=r"DataFrame column 'name' is .*not numeric; drop it"):
        load_dataset(df.assign(name=["p"] * 5))


def test_convert_then_audit_equals_auditing_the_folder(tmp_path, rgb, rng):
    folder = _folder(tmp_path / "train", rgb)
    samples = np.concatenate([rgb[[2, 7]] / 255.0, rng.random((6, 6, 5, 3))]).astype(np.float32)
    np.save(tmp_path / "s.npy", samples)
    run = run_convert(ConvertConfig(source=str(folder), out=str(tmp_path / "x.npy"),
                                    progress=False))
    arr = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert arr.shape == (13, 6, 5, 3) and arr.dtype == np.float32 and run.shape == arr.shape
    meta = json.loads(sidecar_path(tmp_path / "x.npy").read_text())
    assert meta["convention"]["value_range"] == [0.0, 1.0] and meta["convention"]["layout"] == "HWC"
    direct = load_dataset(folder)
    assert meta["ids"] == direct.ids.tolist()
    np.testing.assert_array_equal(arr.reshape(13, -1), direct.x)
    a = run_audit(AuditConfig(train=str(folder), samples=str(tmp_path / "s.npy"), progress=False))
    b = run_audit(AuditConfig(train=str(tmp_path / "x.npy"), samples=str(tmp_path / "s.npy"),
                              progress=False))
    assert a.report.space == b.report.space
    np.testing.assert_array_equal(a.report.nn_ratio.ratio, b.report.nn_ratio.ratio)
    np.testing.assert_array_equal(a.report.nn_ratio.nn_id, b.report.nn_ratio.nn_id)
    # the two planted copies are found, named by their file
    copies = b.report.nn_ratio.nn_id[b.report.nn_ratio.memorized]
    assert sorted(copies.tolist()) == ["img_002.png", "img_007.png"]


def test_a_sidecar_that_does_not_belong_is_refused(tmp_path, rng):
    np.save(tmp_path / "a.npy", rng.random((4, 3)).astype(np.float32))
    assert main(["convert", str(tmp_path / "a.npy"), "--out", str(tmp_path / "x.npy"),
                 "--no-progress"]) == 0
    assert load_dataset(tmp_path / "x.npy").ids.tolist() == [0, 1, 2, 3]
    np.save(tmp_path / "x.npy", rng.random((4, 3)).astype(np.float32))  # same shape, new data
    with pytest.raises(ValueError, match="do not belong together"):
        load_dataset(tmp_path / "x.npy")


def test_convert_refusals(tmp_path, capsys):
    (tmp_path / "a.npy").write_bytes(b"")
    assert main(["convert", str(tmp_path / "nope"), "--out", str(tmp_path / "x.npy")]) == 1
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.txt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "does not exist" in err[0] and "name it FILE.npy" in err[1] and len(err) == 2


_SLOW_CONVERT = textwrap.dedent("""
    import sys, time
    import memaudit.sources as s
    real = s._decode
    def slow(*a, **k):
        time.sleep(0.05)
        return real(*a, **k)
    s._decode = slow
    from memaudit.cli import main
    sys.exit(main(["convert", sys.argv[1], "--out", sys.argv[2], "--progress"]))
""")


def test_a_killed_convert_leaves_no_half_file(tmp_path, rng):
    folder = _folder(tmp_path / "imgs", rng.integers(0, 256, (200, 8, 8), dtype=np.uint8))
    out = tmp_path / "out" / "x.npy"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), MEMAUDIT_DECODE_WORKERS="1")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, str(folder), str(out)],
                            env=env, stderr=subprocess.PIPE, text=True)
    line = ""
    while "decoding images" not in line:  # kill it in the middle of decoding
        line = proc.stderr.read(64)
        assert line or proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in out.parent.iterdir())
    assert not out.exists() and not sidecar_path(out).exists()
    assert len(left) == 1 and left[0].startswith(".x.npy.")  # the temporary, named for cleanup
    run_convert(ConvertConfig(source=str(folder), out=str(out), progress=False))
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.npy", "x.npy.json"]
    assert np.load(out).shape == (200, 8, 8)


def test_scratch_files_of_killed_runs_are_removed(tmp_path, monkeypatch, rgb):
    monkeypatch.setenv("MEMAUDIT_SCRATCH", str(tmp_path / "scratch"))
    stale = scratch_folder() / ".images.999999999.abc.npy"  # a pid that does not run
    stale.write_bytes(b"x")
    load_dataset(_folder(tmp_path / "f", rgb[:2]))
    assert not stale.exists()
