"""Outputs people use: per-item tables (to_frame, --csv) equal to the result arrays, and progress
bars on stderr for every stage with --progress, none without."""

import numpy as np
import pytest
from PIL import Image

from memaudit.cli import main
from memaudit.image_duplicates import find_copies_with_control, find_duplicates
from memaudit.probes.nn_ratio import NNRatioProbe
from memaudit.probes.subsequence import SubsequenceProbe

pd = pytest.importorskip("pandas")


def _planted(rng, n=60, d=12, copies=(3, 17)):
    train = rng.normal(size=(n, d))
    samples = np.concatenate([rng.normal(size=(8, d)), train[list(copies)]])
    return train, samples


def test_nn_ratio_frame_is_the_result(rng):
    train, samples = _planted(rng)
    r = NNRatioProbe(n_bootstrap=50).fit(train, ids=[f"t{i}" for i in range(60)]).score(
        samples, ids=[f"s{i}" for i in range(10)])
    f = r.to_frame()
    assert len(f) == 10 and f["sample_id"].tolist() == [f"s{i}" for i in range(10)]
    for col in ("d1", "d2", "ratio", "nn_index", "nn2_index", "memorized"):
        np.testing.assert_array_equal(f[col].to_numpy(), getattr(r, col))
    np.testing.assert_array_equal(f["nn_id"].to_numpy(), r.nn_id)
    np.testing.assert_array_equal(f["carlini_score"].to_numpy(), r.carlini_score)
    # the planted copies, by name, and nothing else
    assert f.loc[f.memorized, "nn_id"].tolist() == ["t3", "t17"]
    assert NNRatioProbe(carlini_alpha=None, n_bootstrap=50).fit(train).score(samples).to_frame() \
        .columns.tolist() == ["sample_id", "d1", "d2", "ratio", "nn_index", "nn_id", "nn2_index",
                              "memorized"]


def test_duplicates_frames(rng):
    x = rng.normal(size=(20, 16))
    x[7], x[12], x[15] = x[2], x[2], x[9]
    r = find_duplicates(x, "exact", ids=[f"i{k}" for k in range(20)])
    f = r.to_frame()
    groups = {tuple(sorted(f.loc[f.group == g, "item"])) for g in set(f.group) if g >= 0}
    assert groups == {(2, 7, 12), (9, 15)}
    assert (f.loc[f.item == 7, "group_size"] == 3).all() and (f.group == -1).sum() == 15
    train = rng.normal(size=(30, 16))
    samples = np.concatenate([rng.normal(size=(5, 16)), train[[4]]])
    holdout = rng.normal(size=(6, 16))
    c = find_copies_with_control(samples, train, holdout, "exact",
                                 reference_ids=[f"t{k}" for k in range(30)], n_bootstrap=50)
    cf = c.to_frame()
    assert cf["set"].tolist() == ["samples"] * 6 + ["holdout"] * 6
    s = cf[cf.set == "samples"]
    assert s.copied.tolist() == [False] * 5 + [True] and s.match_id.iloc[5] == "t4"
    assert s.match_index.iloc[5] == 4 and s.score.iloc[5] == 0.0
    assert c.samples.n_duplicated == int(s.copied.sum())


def test_subsequence_frame(rng):
    train = [rng.normal(size=100) for _ in range(3)]
    gen = [np.concatenate([rng.normal(size=20), train[1][30:62], rng.normal(size=20)])]
    r = SubsequenceProbe(length=32, n_bootstrap=50).fit(train).score(gen)
    f = r.to_frame()
    assert len(f) == r.d1.size
    for col in ("d1", "d2", "ratio", "memorized", "match_series", "match_offset", "query_offset"):
        np.testing.assert_array_equal(f[col].to_numpy(), getattr(r, col))
    hit = f.loc[f.d1.idxmin()]
    assert hit.query_offset == 20 and hit.match_series == 1 and hit.match_offset == 30


def _images(folder, arrays):
    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"im{i:02d}.png")


def test_csv_and_progress_from_the_command_line(tmp_path, rng, capsys):
    imgs = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    _images(tmp_path / "train", imgs[:20])
    _images(tmp_path / "holdout", imgs[20:])
    samples = np.concatenate([imgs[[5]], rng.integers(0, 256, (7, 8, 8))]).astype(np.float32) / 255
    np.save(tmp_path / "s.npy", samples)
    base = ["audit", "--train", str(tmp_path / "train"), "--samples", str(tmp_path / "s.npy"),
            "--holdout", str(tmp_path / "holdout"), "--membership", "--n-bootstrap", "50"]
    assert main(base + ["--out", str(tmp_path / "a"), "--csv", str(tmp_path / "a.csv"),
                        "--progress"]) == 0
    err = capsys.readouterr().err
    for stage in ("train: decoding images", "holdout: decoding images", "knn (",
                  "bootstrap (membership AUC, TPR)"):
        assert stage in err, stage
    table = pd.read_csv(tmp_path / "a.csv")
    assert len(table) == 8 and table.memorized.tolist() == [True] + [False] * 7
    assert table.nn_id.iloc[0] == "im05.png"
    assert main(base + ["--out", str(tmp_path / "b")]) == 0  # stderr is not a terminal: silent
    assert capsys.readouterr().err == ""
    assert main(base + ["--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["duplicates", "--train", str(tmp_path / "train"), "--samples",
                 str(tmp_path / "s.npy"), "--method", "exact", "--out", str(tmp_path / "d"),
                 "--csv", str(tmp_path / "d.csv"), "--progress"]) == 0
    d = pd.read_csv(tmp_path / "d.csv")
    assert set(d.result) == {"train", "samples_vs_train"}
    assert d[d.result == "samples_vs_train"].match_id.iloc[0] == "im05.png"
    assert "decoding images" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "e"), "--csv", str(tmp_path)]) == 1
    assert "is a folder; give a file name" in capsys.readouterr().err
