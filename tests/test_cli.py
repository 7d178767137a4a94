import json
import re

import numpy as np
import pytest
from PIL import Image

from memaudit.runners import AuditConfig
from memaudit.cli import EXIT_ERROR, EXIT_GATE, EXIT_OK, EXIT_USAGE, build_parser, main
from memaudit.io import atomic_write_text
from memaudit.report import SCHEMA_VERSION


@pytest.fixture
def sets(tmp_path, rng):
    train = rng.normal(size=(200, 6, 6)).astype(np.float32)
    samples = rng.normal(size=(50, 6, 6)).astype(np.float32)
    samples[[4, 17, 33]] = train[[10, 20, 30]]
    holdout = rng.normal(size=(80, 6, 6)).astype(np.float32)
    paths = {}
    for name, x in (("train", train), ("samples", samples), ("holdout", holdout)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], x)
    return paths


def _audit(paths, out, *extra):
    return main(["audit", "--train", str(paths["train"]), "--samples", str(paths["samples"]),
                 "--out", str(out), "--no-progress", *extra])


def test_audit_writes_a_versioned_report(sets, tmp_path, capsys):
    out = tmp_path / "out"
    code = _audit(sets, out, "--holdout", str(sets["holdout"]), "--seed", "3")
    assert code == EXIT_OK
    text = capsys.readouterr().out
    assert "memorized (d1/d2 < 0.3333): 6.00% (3/50)" in text
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "memaudit.report" and report["schema_version"] == SCHEMA_VERSION
    assert report["seed"] == 3 and report["config"]["seed"] == 3
    assert report["config"]["threshold"] == pytest.approx(1 / 3)
    for pkg in ("python", "memaudit", "numpy", "faiss-cpu", "scikit-learn"):
        assert report["versions"][pkg]
    nr = report["sections"]["nn_ratio"]
    assert nr["n_memorized"] == 3 and nr["control"]["rate"]["count"] == 0
    flagged = [i for i, m in enumerate(nr["per_sample"]["memorized"]) if m]
    assert flagged == [4, 17, 33]
    assert [nr["per_sample"]["nn_id"][i] for i in flagged] == [10, 20, 30]
    assert report["inputs"]["train"]["item_shape"] == [6, 6]
    html = (out / "report.html").read_text()
    assert "<svg" in html and html.count("data:image/png;base64,") == 2 * 16
    assert "Excess over control" in html
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries


def test_fail_above_gates_with_a_distinct_exit_code(sets, tmp_path, capsys):
    assert _audit(sets, tmp_path / "a", "--fail-above", "0.05") == EXIT_GATE  # 6% > 5%
    assert "gate: FAIL" in capsys.readouterr().out
    assert _audit(sets, tmp_path / "b", "--fail-above", "0.1") == EXIT_OK
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["gate"] == {"figure": "nn_ratio.rate", "value": 0.06, "fail_above": 0.05,
                              "passed": False}
    assert _audit(sets, tmp_path / "c", "--holdout", str(sets["holdout"]), "--gate", "excess",
                  "--fail-above", "0.07") == EXIT_OK


def test_json_output(sets, tmp_path, capsys):
    assert _audit(sets, tmp_path / "j", "--json", "--threshold", "1/2") == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_memorized"] == 3 and summary["rate"]["value"] == 0.06
    assert summary["report_json"].endswith("report.json")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "1.5"], "threshold (--threshold) must lie in (0, 1)"),
        (["--threshold", "0"], "threshold (--threshold) must lie in (0, 1)"),
        (["--gate", "excess", "--fail-above", "0.1"], "needs a holdout"),
        (["--fail-above", "2"], "--fail-above) must lie in [0, 1]"),
    ],
)
def test_bad_settings_exit_1_with_a_message(sets, tmp_path, capsys, extra, message):
    assert _audit(sets, tmp_path / "x", *extra) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("memaudit: error:") and message in err
    assert not (tmp_path / "x" / "report.json").exists()


def test_bad_inputs_exit_1(sets, tmp_path, capsys, rng):
    missing = dict(sets, train=tmp_path / "nope.npy")
    assert _audit(missing, tmp_path / "x") == EXIT_ERROR
    assert "nope.npy does not exist" in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", rng.normal(size=(5, 7)))
    assert _audit(dict(sets, samples=tmp_path / "wide.npy"), tmp_path / "x") == EXIT_ERROR
    assert "samples has 7 features per item but train has 36" in capsys.readouterr().err
    np.save(tmp_path / "one.npy", rng.normal(size=(1, 6, 6)))
    assert _audit(dict(sets, train=tmp_path / "one.npy"), tmp_path / "x") == EXIT_ERROR
    assert "at least 2 training items" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--train", "x.npy"])
    assert exc.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--train", "a", "--samples", "b", "--out", "c", "--threshold", "abc"])
    assert exc.value.code == EXIT_USAGE
    assert main([]) == EXIT_USAGE


def test_help_is_complete(capsys):
    parser = build_parser()
    audit = parser._subparsers._group_actions[0].choices["audit"]
    text = audit.format_help()
    exposed = {"train", "samples", "holdout", "threshold", "metric", "backend", "index",
               "carlini_alpha", "carlini_n", "n_bootstrap", "confidence", "seed", "resize", "mode",
               "gallery", "fail_above", "gate", "skip_unreadable", "duplicates",
               "duplicates_threshold", "membership", "ranges", "layouts", "out", "progress",
               "cluster", "shard_rows", "csv",
               "model", "scheduler", "n_samples", "sampler", "steps", "batch_size", "device"}
    exposed |= {"features", "device", "feature_cache"}  # the feature space (adapters/features.py)
    # repeatable options, one value each; progress is switched off
    option = {"ranges": "range", "layouts": "layout", "progress": "no_progress"}
    for name in exposed:
        assert "--" + option.get(name, name).replace("_", "-") in text
    # every AuditConfig field is on the command line, except the notes that runners write
    fields = set(AuditConfig.__dataclass_fields__) - {"notes"}
    assert fields == exposed
    assert "Exit codes" in text and "Bonnaire" in text and "--no-progress" in text
    assert "--json" in text and "--out" in text


def test_image_folders_end_to_end(tmp_path, rng):
    def write(folder, arrays):
        folder.mkdir()
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(folder / f"{folder.name}_{i:03d}.png")

    train = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(40)]
    fresh = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(10)]
    write(tmp_path / "train", train)
    write(tmp_path / "gen", fresh + [train[7], train[31]])
    out = tmp_path / "out"
    code = main(["audit", "--train", str(tmp_path / "train"), "--samples", str(tmp_path / "gen"),
                 "--out", str(out), "--no-progress", "--gallery", "4"])
    assert code == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    ps = report["sections"]["nn_ratio"]["per_sample"]
    flagged = {ps["sample_id"][i]: ps["nn_id"][i] for i, m in enumerate(ps["memorized"]) if m}
    assert flagged == {"gen_010.png": "train_007.png", "gen_011.png": "train_031.png"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8 and "train_031.png" in html


def test_mixed_size_images_exit_1(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "t" / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "t" / "b.png")
    code = main(["audit", "--train", str(tmp_path / "t"), "--samples", str(tmp_path / "t"),
                 "--out", str(tmp_path / "o")])
    assert code == EXIT_ERROR and "different sizes" in capsys.readouterr().err
    code = main(["audit", "--train", str(tmp_path / "t"), "--samples", str(tmp_path / "t"),
                 "--out", str(tmp_path / "o"), "--resize", "8x8", "--no-progress"])
    assert code == EXIT_OK


def test_demo_finds_every_planted_copy(tmp_path, capsys):
    assert main(["demo", "--stand-in", "--out", str(tmp_path / "demo")]) == EXIT_OK
    out = capsys.readouterr().out
    assert re.search(r"planted copies flagged with the right training id: 50/50; "
                     r"held-out digits flagged: 0/250", out)
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["notes"][0].startswith("Demo stand-in")
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "Demo stand-in" in html and "50 of 50" in html
    for name in ("train", "samples", "holdout"):
        assert (tmp_path / "demo" / "data" / f"{name}.npz").exists()


def test_demo_trains_a_model_and_tracks_it(tmp_path, capsys):
    pytest.importorskip("torch")
    from memaudit.runners.demo import demo_model as _demo_model

    if _demo_model() is None:
        pytest.skip("the demo model (reference_models entry point) is not installed")
    assert main(["demo", "--steps", "30", "--samples-per-checkpoint", "30", "--out",
                 str(tmp_path / "d")]) in (EXIT_OK, EXIT_GATE)
    out = capsys.readouterr().out
    assert "memorization over training" in out and "recommended checkpoint" in out
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["notes"][0].startswith("Demo model")
    assert report["sections"]["tracking"]["steps"][-1] == 30 and report["sections"]["tracking"]["rules"]["tau_mem"]
    assert report["inputs"]["train"]["n_items"] == 8  # the default --n-train
    assert "Memorization over training" in (tmp_path / "d" / "report.html").read_text()
    assert (tmp_path / "d" / "model" / "run" / "config.json").exists()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_duplicates_command(tmp_path, rng, capsys):
    def write(folder, arrays, names=None):
        folder.mkdir()
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(folder / (names[i] if names else f"{folder.name}_{i:03d}.png"))

    imgs = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(12)]
    write(tmp_path / "train", imgs + [imgs[2], imgs[5]])  # two duplicates inside the training set
    write(tmp_path / "gen", [rng.integers(0, 256, (16, 16), dtype=np.uint8), imgs[7]])
    (tmp_path / "train" / "corrupt.png").write_bytes(b"not an image")
    args = ["duplicates", "--train", str(tmp_path / "train"), "--samples", str(tmp_path / "gen"),
            "--method", "exact", "--out", str(tmp_path / "dup"), "--no-progress"]
    assert main(args) == EXIT_ERROR  # a corrupt file stops the run, naming the file
    assert "corrupt.png" in capsys.readouterr().err
    assert main(args + ["--skip-unreadable"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "skipped 1 unreadable file" in out
    report = json.loads((tmp_path / "dup" / "duplicates.json").read_text())
    groups = report["sections"]["duplicates"]["train"]["groups"]
    assert sorted(sorted(g["members"]) for g in groups) == [["train_002.png", "train_012.png"],
                                                           ["train_005.png", "train_013.png"]]
    copies = report["sections"]["duplicates"]["samples_vs_train"]["groups"]
    assert copies == [{"queries": ["gen_001.png"], "reference": ["train_007.png"], "size": 2}]
    assert report["inputs"]["train"]["skipped"][0]["file"] == "corrupt.png"
    html = (tmp_path / "dup" / "duplicates.html").read_text()
    # thumbnails: the two groups inside train and the copy group (2 * 2 + 2), and the same six
    # items again in the table of closest pairs
    assert "corrupt.png" in html and html.count("data:image/png;base64,") == 2 * (2 * 2 + 2)


def test_audit_with_a_duplicates_section(sets, tmp_path):
    out = tmp_path / "d"
    assert _audit(sets, out, "--duplicates", "embedding", "--duplicates-threshold", "0.99") == EXIT_OK
    report = json.loads((out / "report.json").read_text())
    dup = report["sections"]["duplicates"]["samples_vs_train"]
    assert dup["n_pairs"] == 3 and dup["threshold"] == 0.99 and dup["threshold_source"] == "user"
    assert "Samples that copy training items" in (out / "report.html").read_text()


def test_subsequences_command(tmp_path, capsys):
    rng = np.random.default_rng(3)
    train = np.cumsum(rng.standard_normal((8, 400)), axis=1)
    fake = np.cumsum(rng.standard_normal((6, 256)), axis=1)
    fake[2, 64:128] = train[5, 200:264]
    hold = np.cumsum(rng.standard_normal((6, 256)), axis=1)
    np.save(tmp_path / "train.npy", train)
    np.savez(tmp_path / "fake.npz", series=fake, ids=np.array([f"gen{i}" for i in range(6)]))
    np.savetxt(tmp_path / "hold.csv", hold, delimiter=",")
    args = ["subsequences", "--train", str(tmp_path / "train.npy"), "--samples",
            str(tmp_path / "fake.npz"), "--holdout", str(tmp_path / "hold.csv"), "--window", "64",
            "--out", str(tmp_path / "out"), "--json", "--no-progress"]
    assert main(args) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["series_rate"]["count"] == 1 and out["excess"] is not None
    report = json.loads((tmp_path / "out" / "subsequences.json").read_text())
    top = report["sections"]["subsequences"]["lowest_ratio_windows"][0]
    assert (top["query_id"], top["match"], top["memorized"]) == ("gen2@64", "5@200", True)
    assert report["config"]["stride"] == 1 and report["seed"] == 0  # default: every window
    html = (tmp_path / "out" / "subsequences.html").read_text()
    assert "<svg" in html and "gen2" in html
    assert main(args + ["--fail-above", "0.1"]) == EXIT_GATE
    bad = np.array(train)
    bad[1, 7] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    capsys.readouterr()
    assert main(["subsequences", "--train", str(tmp_path / "bad.npy"), "--samples",
                 str(tmp_path / "fake.npz"), "--window", "64", "--out", str(tmp_path / "o2")]) == EXIT_ERROR
    assert "NaN or Inf value at step 7" in capsys.readouterr().err
    assert main(["subsequences", "--train", str(tmp_path / "nope.npy"), "--samples",
                 str(tmp_path / "fake.npz"), "--window", "64", "--out", str(tmp_path / "o3")]) == EXIT_ERROR


def test_series_from_ragged_csv(tmp_path):
    from memaudit.sources import load_series

    (tmp_path / "r.csv").write_text("1,2,3,4\n5,6\n7,8,9\n")
    series, ids, desc = load_series(tmp_path / "r.csv")
    assert [s.tolist() for s in series] == [[1, 2, 3, 4], [5, 6], [7, 8, 9]] and desc["format"] == "csv"
    (tmp_path / "x.txt").write_text("1,2\na,b\n")
    with pytest.raises(ValueError, match="line 2 is not a row of numbers"):
        load_series(tmp_path / "x.txt")


def test_membership_command_scores_and_samples(tmp_path, capsys):
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "m.npz", t10=rng.normal(1.5, 1, 200), t100=rng.normal(0, 1, 200))
    np.savez(tmp_path / "n.npz", t10=rng.normal(0, 1, 200), t100=rng.normal(0, 1, 200))
    args = ["membership", "--member-scores", str(tmp_path / "m.npz"), "--nonmember-scores",
            str(tmp_path / "n.npz"), "--out", str(tmp_path / "o"), "--json", "--n-bootstrap", "200"]
    assert main(args) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["setting"] == "t10" and out["evaluation"]["auc"]["value"] > 0.75
    saved = json.loads((tmp_path / "o" / "membership.json").read_text())
    split = saved["sections"]["membership"]["split"]
    assert not set(split["calibration"]["members"]) & set(split["evaluation"]["members"])
    assert "<svg" in (tmp_path / "o" / "membership.html").read_text()
    assert main(args + ["--fail-above", "0.6"]) == EXIT_GATE
    capsys.readouterr()
    members, nonmembers = rng.normal(size=(80, 5)), rng.normal(size=(80, 5))
    samples = np.r_[members[:40] + 0.01 * rng.normal(size=(40, 5)), rng.normal(size=(60, 5))]
    for name, arr in (("mem", members), ("non", nonmembers), ("gen", samples)):
        np.save(tmp_path / f"{name}.npy", arr)
    assert main(["membership", "--members", str(tmp_path / "mem.npy"), "--nonmembers",
                 str(tmp_path / "non.npy"), "--samples", str(tmp_path / "gen.npy"), "--out",
                 str(tmp_path / "o2"), "--n-bootstrap", "100"]) == EXIT_OK
    assert "distance to the nearest generated sample" in capsys.readouterr().out
    assert main(["membership", "--members", str(tmp_path / "mem.npy"), "--nonmembers",
                 str(tmp_path / "non.npy"), "--samples", str(tmp_path / "gen.npy"), "--attack",
                 "density", "--out", str(tmp_path / "o3")]) == EXIT_ERROR
    assert "--reference" in capsys.readouterr().err
