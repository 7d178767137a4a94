"""The report package: one envelope for the four reports, one plotting route (memaudit.figures)
whose every figure has labelled axes and its threshold or baseline, and plot() on every result."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from memaudit import figures  # noqa: E402
from memaudit.gate import Gate  # noqa: E402
from memaudit.report import (ENVELOPE_KEYS, SCHEMA_VERSION, Report,  # noqa: E402
                             write_duplicates_report, write_membership_report,
                             write_subsequence_report)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "report.md"


@pytest.fixture(scope="module")
def results():
    """One of every result type, on small inputs with planted copies."""
    from memaudit.probes.calibration import calibrated_attack, calibration_split
    from memaudit.image_duplicates import find_copies_with_control, find_duplicates
    from memaudit.probes.membership import membership_metrics
    from memaudit.probes.nn_ratio import nn_ratio
    from memaudit.probes.subsequence import SubsequenceProbe
    from memaudit.sources import load_dataset
    from memaudit.tracking import track_memorization

    rng = np.random.default_rng(0)
    train = rng.random((60, 8, 8)).astype(np.float32)
    samples = rng.random((30, 8, 8)).astype(np.float32)
    samples[:5] = train[:5]
    holdout = rng.random((30, 8, 8)).astype(np.float32)
    sets = {k: load_dataset(v, k) for k, v in (("train", train), ("samples", samples),
                                                ("holdout", holdout))}
    flat = {k: v.reshape(len(v), -1) for k, v in (("train", train), ("samples", samples),
                                                   ("holdout", holdout))}
    opts = dict(item_shape=(8, 8), value_range=(0, 1), levels=255)
    series_train = np.cumsum(rng.standard_normal((4, 120)), axis=1)
    series = np.cumsum(rng.standard_normal((3, 80)), axis=1)
    series[1, 10:42] = series_train[2, 50:82]
    series_hold = np.cumsum(rng.standard_normal((3, 80)), axis=1)
    m, n = rng.normal(1, 1, 100), rng.normal(0, 1, 100)
    by_step = {10: flat["holdout"][:20] + 0.3, 100: np.r_[flat["train"][:6], flat["holdout"][:14]],
               1000: np.r_[flat["train"][:15], flat["holdout"][:5]]}
    out = {
        "nn_ratio": nn_ratio(flat["samples"], flat["train"], holdout=flat["holdout"],
                             n_bootstrap=50),
        "membership": membership_metrics(m, n, n_bootstrap=50),
        "calibrated": calibrated_attack(m, n, calibration_split(100, 100), n_bootstrap=50),
        "tracking": track_memorization(by_step, flat["train"], flat["holdout"][20:],
                                       n_bootstrap=50),
        "duplicates": find_duplicates(flat["samples"], "embedding", threshold=0.99),
        "copy_rate_hash": find_copies_with_control(flat["samples"], flat["train"],
                                                   flat["holdout"], "phash", threshold=4,
                                                   n_bootstrap=50, **opts),
        "copy_rate": find_copies_with_control(flat["samples"], flat["train"], flat["holdout"],
                                              "embedding", threshold=0.99, n_bootstrap=50),
        "subsequence": SubsequenceProbe(32, n_bootstrap=20).fit(list(series_train)).score(
            list(series), holdout=list(series_hold)),
    }
    return out, sets, (series_train, series, series_hold)


def _axes():
    return Figure(figsize=(5, 3)).add_subplot()


def _lines(ax):
    return {line.get_gid() for line in ax.get_lines()}


@pytest.mark.parametrize("name", ["nn_ratio", "membership", "calibrated", "tracking",
                                  "duplicates", "copy_rate_hash", "copy_rate", "subsequence"])
def test_plot_returns_the_axes_of_every_result(results, name):
    import matplotlib.pyplot as plt

    res = results[0][name]
    ax = res.plot()
    assert isinstance(ax, Axes) and ax.get_xlabel() and ax.get_ylabel()
    assert _lines(ax) & {"threshold", "baseline"}  # every figure draws its reference line
    given = _axes()
    assert res.plot(ax=given) is given  # draws where it is told
    plt.close("all")


def test_the_copy_rate_of_a_hash_is_drawn_by_threshold(results):
    ax = results[0]["copy_rate_hash"].plot(ax=_axes())
    assert "Hamming distance" in ax.get_xlabel() and {"threshold", "baseline"} <= _lines(ax)
    assert len(ax.get_lines()[0].get_xdata()) == 5  # distances 0..4


FIGURES = {
    "ratio_histogram": lambda ax: figures.ratio_histogram(
        np.r_[0.0, np.linspace(0.1, 1, 20)], 1 / 3, control=np.linspace(0.5, 1, 20), ax=ax),
    "roc_curve": lambda ax: figures.roc_curve([0, 0.1, 0.5, 1], [0, 0.3, 0.8, 1], 50, auc=0.7,
                                              target_fprs=(0.01,), ax=ax),
    "training_curve": lambda ax: figures.training_curve(
        [10, 100, 1000], [0, 0.05, 0.3], [0, 0.01, 0.2], [0.05, 0.1, 0.4], control=[0, 0, 0.01],
        quality=[3.0, 1.0, 0.9], quality_name="Fréchet distance", tau_gen=100, tau_mem=1000,
        recommended=100, ax=ax),
    "series_overlay": lambda ax: figures.series_overlay(np.sin(np.arange(20.0)),
                                                        np.cos(np.arange(20.0)), normalize=True,
                                                        ax=ax),
    "duplicate_scores": lambda ax: figures.duplicate_scores([3, 5, 5, 8], 8, "phash",
                                                            control=[6, 7], ax=ax),
    "copy_rate_by_threshold": lambda ax: figures.copy_rate_by_threshold(
        [0, 1, 2], [0.1, 0.2, 0.3], [0, 0.005, 0.02], threshold=2, control_share=0.01,
        recommended=1, ax=ax),
}
REFERENCE = {"ratio_histogram": {"threshold"}, "roc_curve": {"baseline", "resolution"},
             "training_curve": {"baseline", "tau_gen", "tau_mem", "recommended"},
             "series_overlay": set(), "duplicate_scores": {"threshold"},
             "copy_rate_by_threshold": {"threshold", "baseline", "recommended"}}


def test_every_figure_function_is_tested():
    assert set(FIGURES) == {n for n in figures.__all__ if n != "to_svg"}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_has_labelled_axes_ticks_and_its_reference_lines(name):
    ax = FIGURES[name](_axes())
    assert ax.get_xlabel() and ax.get_ylabel()
    ax.figure.canvas.draw()  # ticks and their labels exist once drawn
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t.get_text() for t in axis.get_ticklabels() if t.get_visible()]
        assert len([t for t in labels if t]) >= 2
    assert REFERENCE[name] <= _lines(ax)
    if name == "series_overlay":
        assert [line.get_label() for line in ax.get_lines()] == ["training stretch",
                                                                 "generated window"]
    if name == "training_curve":  # quality on a second, labelled axis; the interval drawn
        assert ax.right_ax is not None and "Fréchet distance" in ax.right_ax.get_ylabel()
        assert ax.collections  # the f_mem interval band
        x = {g: line.get_xdata()[0] for g, line in ((ln.get_gid(), ln) for ln in ax.get_lines())
             if g in ("tau_gen", "tau_mem", "recommended")}
        assert x == {"tau_gen": 100, "tau_mem": 1000, "recommended": 100}


def test_a_histogram_counts_shares_and_puts_copies_in_the_first_bin():
    ax = figures.ratio_histogram(np.r_[0.0, 0.0, 0.5, 0.9], 1 / 3, ax=_axes(), floor=1e-3,
                                 bins=3)
    (poly,) = [p for p in ax.patches]
    heights = poly.get_xy()[:, 1]
    assert heights.max() == pytest.approx(0.5)  # two of four ratios are 0: half the set
    assert ax.get_xscale() == "log" and ax.get_xlim() == pytest.approx((1e-3, 1))


def test_svg_is_deterministic_and_self_contained():
    draw = FIGURES["training_curve"]
    a = figures.to_svg(lambda ax: draw(ax))
    assert a == figures.to_svg(lambda ax: draw(ax))
    assert a.startswith("<svg") and "<text" in a  # text stays text
    assert not re.search(r'(href|src)="https?:', a)


def _write_all(tmp_path, results):
    res, sets, (series_train, series, series_hold) = results
    gate = Gate(0.5).apply("figure", 0.25)
    versions = {"memaudit": "test"}
    paths = {}
    report = Report(config={"seed": 0, "gallery": 4}, versions=versions,
                    inputs={k: v.describe() for k, v in sets.items()}, nn_ratio=res["nn_ratio"],
                    membership=res["calibrated"], tracking=res["tracking"], gate=gate,
                    datasets=sets, space="pixels")
    paths["report"] = report.write(tmp_path / "audit")
    cr = res["copy_rate"]
    paths["duplicates"] = write_duplicates_report(
        tmp_path / "dup", {"samples_vs_train": cr.samples, "holdout_vs_train": cr.control},
        sets, {"seed": 0}, versions, control=cr, gate=gate)
    paths["membership"] = write_membership_report(
        tmp_path / "mem", res["calibrated"], config={"seed": 0}, versions=versions,
        inputs={"member_scores": "m.npy", "nonmember_scores": Path("n.npy")},
        attack="scores given", gate=gate)
    sub = res["subsequence"]
    paths["subsequences"] = write_subsequence_report(
        tmp_path / "sub", sub, list(series), list(series_train), train_ids=list(range(4)),
        sample_ids=["a", "b", "c"], inputs={"train": {"source": "t.npy"}}, config={"seed": 0},
        versions=versions, gate=gate)
    return paths, gate


def test_the_four_reports_share_one_envelope(tmp_path, results):
    paths, gate = _write_all(tmp_path, results)
    sections = {"report": {"nn_ratio", "gallery", "duplicates", "membership", "tracking"},
                "duplicates": {"duplicates", "copy_rate"}, "membership": {"membership"},
                "subsequences": {"subsequences"}}
    for command, p in paths.items():
        data = json.loads(p["json"].read_text())
        assert list(data) == list(ENVELOPE_KEYS), command
        assert data["schema"] == f"memaudit.{command}" and data["schema_version"] == SCHEMA_VERSION
        assert data["gate"] == gate and data["seed"] == 0
        assert set(data["sections"]) == sections[command]
        assert all("source" in v for v in data["inputs"].values())
        page = p["html"].read_text()
        assert f'content="{data["run_id"]}"' in page and "Gate: <span class=\"pass\">PASS" in page
        assert "<svg" in page and "<polyline" not in page  # matplotlib figures, no hand-drawn SVG
        assert page.count("<style>") == 1 and "<h2>Inputs</h2>" in page  # one skeleton
    mem = json.loads(paths["membership"]["json"].read_text())
    assert mem["inputs"] == {"member_scores": {"source": "m.npy"},
                             "nonmember_scores": {"source": "n.npy"}}
    assert mem["sections"]["membership"]["attack"] == "scores given"
    audit = json.loads(paths["report"]["json"].read_text())
    assert audit["sections"]["membership"]["attack"].startswith("distance to the nearest")
    assert [g["sample_index"] for g in audit["sections"]["gallery"]][:1] == [0]  # a planted copy
    tracking_page = paths["report"]["html"].read_text()
    assert "Memorization over training" in tracking_page and "recommended checkpoint" in tracking_page


def test_docs_list_every_envelope_key_and_every_moved_key():
    text = DOCS.read_text()
    for key in ENVELOPE_KEYS:
        assert f"`{key}`" in text, key
    for old in ("nn_ratio", "results", "result", "copy_rate", "gallery", "attack", "duplicates",
                "membership", "tracking"):
        assert re.search(rf"^\| `{old}` .*\| `sections\.", text, re.M), old
