"""The runners from Python (config -> run_* -> typed result, report written), without the CLI; and
the command line's defaults and help, which must be the library's."""

import inspect
import json
import re
from dataclasses import fields

import numpy as np
import pytest

from memaudit.cli import build_parser, config_from, shown_default
from memaudit.gate import Gate
from memaudit.probes.calibration import calibration_split
from memaudit.image_duplicates import find_duplicates
from memaudit.probes.nn_ratio import NNRatioProbe
from memaudit.probes.subsequence import SubsequenceProbe
from memaudit.runners import (CONFIGS, AuditConfig, DemoConfig, DuplicatesConfig,
                              MembershipConfig, SubsequencesConfig, run_audit, run_demo,
                              run_duplicates, run_membership, run_subsequences)
from memaudit.stats import StatsConfig

# the least each command needs on the command line, and the same as config fields
REQUIRED = {
    "audit": ["--train", "t.npy", "--samples", "s.npy", "--out", "o"],
    "duplicates": ["--train", "t.npy", "--out", "o"],
    "subsequences": ["--train", "t.npy", "--samples", "s.npy", "--window", "8", "--out", "o"],
    "membership": ["--out", "o"],
    "demo": [],
    "track": ["--run", "r", "--train", "t.npy", "--out", "o"],
    "convert": ["--out", "x.npy"],
}
POSITIONAL = {"convert": {"source": "src"}}  # field -> value given before the options


def _as_fields(argv):
    return {k[2:]: (int(v) if v.isdigit() else v) for k, v in zip(argv[::2], argv[1::2])}


def _subparsers():
    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("command", list(CONFIGS))
def test_cli_defaults_are_the_library_defaults(command):
    """Parsing only the required options gives exactly the config built with those fields."""
    config_cls, _ = CONFIGS[command]
    given = POSITIONAL.get(command, {})
    args = build_parser().parse_args([command, *given.values(), *REQUIRED[command]])
    assert config_from(args) == config_cls(**_as_fields(REQUIRED[command]), **given)


def _help_of(parser) -> dict:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


@pytest.mark.parametrize("command", list(CONFIGS))
def test_help_states_every_default(command):
    parser = _subparsers()[command]
    text = "".join(parser.format_help().split())  # argparse wraps lines, even after a hyphen
    config_cls, _ = CONFIGS[command]
    by_dest = _help_of(parser)
    on_cli = [f for f in fields(config_cls) if f.metadata.get("cli", True) is not False]
    assert set(by_dest) == {f.name for f in on_cli} | {"json"}
    for f in on_cli:
        action = by_dest[f.name]
        stated = "required" if f.metadata.get("required") else f"default {shown_default(f)}"
        assert action.help.endswith(f"({stated})"), (f.name, action.help)
        assert "".join(action.help.replace("%%", "%").split()) in text
        if not f.metadata.get("required") and f.metadata.get("kind") != "declarations":
            assert action.default == f.default, f.name
    assert by_dest["json"].help.endswith("(default off)")


@pytest.mark.parametrize("command, option, stated", [
    ("audit", "--threshold", "default 1/3"),
    ("audit", "--n-bootstrap", "default 1000"),
    ("audit", "--confidence", "default 0.95"),
    ("audit", "--metric", "default l2"),
    ("duplicates", "--method", "default phash"),
    ("duplicates", "--threshold", "phash 10"),
    ("subsequences", "--stride", "default 1: every window"),
    ("subsequences", "--exclusion-zone", "default L - 1"),
    ("membership", "--calibration-fraction", "default 0.5"),
    ("demo", "--steps", "default 3000"),
    ("demo", "--out", "default memaudit-demo"),
])
def test_help_shows_the_values(command, option, stated):
    parser = _subparsers()[command]
    action = parser._option_string_actions[option]
    assert stated in action.help
    assert "".join(action.help.split()) in "".join(parser.format_help().split())


def test_config_defaults_are_read_from_their_owners():
    nn = {k: p.default for k, p in inspect.signature(NNRatioProbe).parameters.items()}
    ss = {k: p.default for k, p in inspect.signature(SubsequenceProbe).parameters.items()}
    stats, gate = StatsConfig(), Gate()
    audit, subseq = AuditConfig(), SubsequencesConfig()
    for name in ("threshold", "metric", "backend", "index", "carlini_alpha", "carlini_n"):
        assert getattr(audit, name) == nn[name], name
    for name in ("stride", "normalize", "exclusion_zone", "threshold", "max_distance", "layout"):
        assert getattr(subseq, name) == ss[name], name
    for config in (audit, subseq, DuplicatesConfig(), MembershipConfig()):
        assert (config.n_bootstrap, config.confidence, config.seed) == (
            stats.n_bootstrap, stats.confidence, stats.seed)
        assert config.fail_above == gate.fail_above
    assert DemoConfig().seed == stats.seed
    for config in (audit, subseq, DuplicatesConfig()):
        assert config.gate == gate.gate
    split = inspect.signature(calibration_split).parameters["fraction"].default
    assert MembershipConfig().calibration_fraction == split
    find = inspect.signature(find_duplicates).parameters
    assert DuplicatesConfig().index == find["index"].default
    # one deliberate difference, documented on both sides of it: files of images default to a
    # perceptual hash, arrays of features to the embedding
    assert DuplicatesConfig().method == "phash" and find["method"].default == "embedding"
    assert "phash" in DuplicatesConfig.__doc__ and "embedding" in DuplicatesConfig.__doc__


@pytest.fixture
def images(rng):
    train = rng.normal(size=(200, 6, 6)).astype(np.float32)
    samples = rng.normal(size=(50, 6, 6)).astype(np.float32)
    samples[[4, 17, 33]] = train[[10, 20, 30]]
    holdout = rng.normal(size=(80, 6, 6)).astype(np.float32)
    return train, samples, holdout


def test_run_audit_from_python(images, tmp_path):
    train, samples, holdout = images
    run = run_audit(AuditConfig(train=train, samples=samples, holdout=holdout, fail_above=0.05,
                                out=tmp_path, progress=False, n_bootstrap=200))
    nr = run.report.nn_ratio
    assert nr.flagged().tolist() == [4, 17, 33]
    assert nr.nn_index[[4, 17, 33]].tolist() == [10, 20, 30]
    assert run.gate == {"figure": "nn_ratio.rate", "value": 0.06, "fail_above": 0.05,
                        "passed": False} and not run.passed
    saved = json.loads(run.paths["json"].read_text())
    assert saved["gate"] == run.gate and saved["config"]["n_bootstrap"] == 200
    assert run.paths["html"].exists()
    assert run.to_summary()["n_memorized"] == 3
    assert "gate: FAIL" in run.summary()


def test_run_audit_without_out_writes_nothing_until_asked(images, tmp_path):
    train, samples, _ = images
    run = run_audit(AuditConfig(train=train, samples=samples, progress=False, n_bootstrap=50))
    assert run.paths is None and run.gate is None and run.passed
    assert run.write(tmp_path / "later")["json"].exists()


def test_run_duplicates_from_python_gates_the_copy_rate(rng, tmp_path):
    imgs = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    train = np.concatenate([imgs, imgs[[2, 5]]])  # two duplicates inside the training set
    samples = np.concatenate([rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), imgs[[7, 9]]])
    holdout = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    run = run_duplicates(DuplicatesConfig(train=train, samples=samples, holdout=holdout,
                                          method="exact", fail_above=0.1, out=tmp_path,
                                          progress=False, n_bootstrap=100))
    groups = sorted(sorted(g["members"]) for g in run.results["train"].groups)
    assert groups == [[2, 30], [5, 31]]
    assert run.results["samples_vs_train"].pairs.tolist() == [[8, 7], [9, 9]]
    assert run.control.rate.value == pytest.approx(0.2) and run.control.control_rate.value == 0
    assert run.gate["figure"] == "duplicates.copy_rate" and run.gate["value"] == pytest.approx(0.2)
    assert not run.passed
    saved = json.loads(run.paths["json"].read_text())
    assert saved["gate"] == run.gate and saved["config"]["method"] == "exact"
    excess = run_duplicates(DuplicatesConfig(train=train, samples=samples, holdout=holdout,
                                             method="exact", fail_above=0.25, gate="excess",
                                             progress=False, n_bootstrap=100))
    assert excess.gate["figure"] == "duplicates.excess_over_control" and excess.passed


@pytest.mark.parametrize("config, message", [
    (dict(fail_above=0.1), "give --samples"),
    (dict(samples="S", fail_above=0.1, gate="excess"), "needs a holdout"),
    (dict(samples="S", fail_above=1.5), "must lie in [0, 1]"),
    (dict(method="exact", threshold=3), "does not apply to method exact"),
    (dict(seed=-1), "seed (--seed) must be a non-negative integer"),
])
def test_run_duplicates_refuses_before_reading(tmp_path, config, message):
    missing = str(tmp_path / "missing.npy")
    config = {k: (missing if v == "S" else v) for k, v in config.items()}
    with pytest.raises(ValueError) as exc:
        run_duplicates(DuplicatesConfig(train=missing, **config))
    assert message in str(exc.value)


def test_run_subsequences_from_python(tmp_path):
    rng = np.random.default_rng(3)
    train = np.cumsum(rng.standard_normal((8, 300)), axis=1)
    fake = np.cumsum(rng.standard_normal((6, 200)), axis=1)
    fake[2, 64:128] = train[5, 100:164]
    hold = np.cumsum(rng.standard_normal((6, 200)), axis=1)
    run = run_subsequences(SubsequencesConfig(train=train, samples=fake, holdout=hold, window=64,
                                              fail_above=0.1, out=tmp_path, progress=False,
                                              n_bootstrap=100))
    res = run.result
    i = int(np.argmin(res.ratio))
    assert (res.query_series[i], res.query_offset[i], res.match_id[i]) == (2, 64, "5@100")
    assert res.series_rate.count == 1 and res.control is not None
    assert run.gate["figure"] == "subsequences.series_rate" and not run.passed
    saved = json.loads(run.paths["json"].read_text())
    assert saved["gate"] == run.gate and saved["config"]["exclusion_zone"] == 63


@pytest.mark.parametrize("config, message", [
    (dict(stride=0), "stride (--stride) must be at least 1"),
    (dict(window=0), "window (--window) must be at least 1"),
    (dict(threshold=1.5), "threshold (--threshold) must lie in (0, 1)"),
    (dict(fail_above=0.1, gate="excess"), "needs a holdout"),
])
def test_run_subsequences_refuses_before_reading(tmp_path, config, message):
    missing = str(tmp_path / "missing.npy")
    config = {"window": 16, **config}
    with pytest.raises(ValueError) as exc:
        run_subsequences(SubsequencesConfig(train=missing, samples=missing, **config))
    assert message in str(exc.value)


def test_run_membership_from_python(tmp_path):
    rng = np.random.default_rng(5)
    members = {"t10": rng.normal(1.5, 1, 200), "t100": rng.normal(0, 1, 200)}
    nonmembers = {"t10": rng.normal(0, 1, 200), "t100": rng.normal(0, 1, 200)}
    run = run_membership(MembershipConfig(member_scores=members, nonmember_scores=nonmembers,
                                          fail_above=0.6, out=tmp_path, n_bootstrap=100))
    assert run.result.setting == "t10" and run.result.evaluation.auc.value > 0.75
    assert run.gate["figure"] == "membership.evaluation.auc" and not run.passed
    saved = json.loads(run.paths["json"].read_text())
    assert saved["gate"] == run.gate and saved["sections"]["membership"]["attack"] == "scores given (settings: t10, t100)"
    named = re.escape("calibration_fraction (--calibration-fraction)")
    with pytest.raises(ValueError, match=named):
        run_membership(MembershipConfig(member_scores=members, nonmember_scores=nonmembers,
                                        calibration_fraction=1.0))


def test_run_membership_distance_attack_on_arrays(rng):
    members, nonmembers = rng.normal(size=(80, 5)), rng.normal(size=(80, 5))
    samples = np.r_[members[:40] + 0.01 * rng.normal(size=(40, 5)), rng.normal(size=(60, 5))]
    run = run_membership(MembershipConfig(members=members, nonmembers=nonmembers, samples=samples,
                                          n_bootstrap=100, progress=False))
    assert run.attack.startswith("distance to the nearest generated sample")
    assert run.result.evaluation.auc.value > 0.6 and run.paths is None and run.gate is None


def test_run_demo_stand_in_from_python(tmp_path):
    lines = []
    run = run_demo(DemoConfig(out=tmp_path, stand_in=True), log=lines.append)
    assert run.recovery["planted_flagged_with_right_source"] == run.recovery["planted"] == 50
    assert run.recovery["fresh_flagged"] == 0 and run.passed
    assert run.paths["json"].exists() and (tmp_path / "data" / "train.npz").exists()
    assert lines and lines[0].startswith("demo: scikit-learn digits")
    saved = json.loads(run.paths["json"].read_text())
    assert saved["config"]["duplicates"] == "exact" and saved["config"]["membership"] is True
