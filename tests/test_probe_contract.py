"""The probe contract, checked over every probe class (memaudit.probes.PROBES).

``Probe(**params)`` stores its parameters; ``fit(reference, ids=None)`` returns the probe, its
fitted state in attributes ending in ``_``; ``score(samples, ids=None, *, holdout=None,
holdout_ids=None)`` returns a result whose ``to_dict(per_sample=...)`` is JSON; unfitted use raises
one error worded the same for every probe; the seed drives the bootstrap and nothing else changes
with it; ids come back with the items. Plus the layer rule: probes import no adapter, source or
report module.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re

import numpy as np
import pytest

import memaudit
from memaudit.probes import (PROBES, DuplicatesProbe, MembershipProbe, NNRatioProbe, NotFittedError,
                             SubsequenceProbe)


def _nn_ratio(rng):
    train = rng.normal(size=(200, 16))
    samples = np.vstack([rng.normal(size=(40, 16)), train[:20] + 1e-3 * rng.normal(size=(20, 16))])
    holdout = np.vstack([rng.normal(size=(55, 16)), train[50:55] + 1e-3])
    return dict(params=dict(n_bootstrap=50), reference=train, samples=samples, holdout=holdout,
                headline=lambda r: r.rate, holdout_ids=lambda r: r.control.sample_ids)


def _duplicates(rng):
    train = rng.normal(size=(200, 16))
    samples = np.vstack([rng.normal(size=(40, 16)), train[:20]])
    holdout = np.vstack([rng.normal(size=(55, 16)), train[50:55]])
    return dict(params=dict(threshold=0.99, n_bootstrap=50), reference=train, samples=samples,
                holdout=holdout, headline=lambda r: r.rate, holdout_ids=lambda r: r.control.ids)


def _membership(rng):
    members, nonmembers = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    generated = np.vstack([members[:30] + 0.3 * rng.normal(size=(30, 8)), rng.normal(size=(30, 8))])
    return dict(params=dict(n_bootstrap=50), reference=generated, samples=members,
                holdout=nonmembers, headline=lambda r: r.auc, holdout_ids=lambda r: r.nonmember_ids)


def _subsequence(rng):
    train = np.cumsum(rng.standard_normal((6, 200)), axis=1)
    samples = np.cumsum(rng.standard_normal((12, 120)), axis=1)
    for i in range(5):  # replayed stretches in 5 of 12 generated series
        samples[i, 30:90] = train[i, 50:110]
    holdout = np.cumsum(rng.standard_normal((8, 120)), axis=1)
    return dict(params=dict(length=32, stride=8, n_bootstrap=50), reference=train,
                samples=samples, holdout=holdout, headline=lambda r: r.series_rate,
                holdout_ids=lambda r: r.control.series_ids)


CASES = {NNRatioProbe: _nn_ratio, DuplicatesProbe: _duplicates, MembershipProbe: _membership,
         SubsequenceProbe: _subsequence}

# docs/writing-a-probe.md: its example probe, its use and its test case run here, so they stay true
_GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "writing-a-probe.md"
_BLOCKS = re.findall(r"```python\n(.*?)```", _GUIDE.read_text(), re.S)
_DOC: dict = {}
for _block in _BLOCKS:
    exec(compile(_block, str(_GUIDE), "exec"), _DOC)
CASES[_DOC["ExactCopyProbe"]] = _DOC["_exact_copy"]


def test_every_probe_class_is_checked():
    assert len(_BLOCKS) == 3 and _DOC["res"].rate.count == 10  # the guide's example ran
    assert set(PROBES) == set(CASES) - {_DOC["ExactCopyProbe"]}


@pytest.fixture(params=list(CASES), ids=lambda c: c.__name__)
def case(request):
    spec = CASES[request.param](np.random.default_rng(7))
    n, h = len(spec["samples"]), len(spec["holdout"])
    spec.update(cls=request.param, ref_ids=[f"ref-{i}" for i in range(len(spec["reference"]))],
                ids=[f"sample-{i}" for i in range(n)], h_ids=[f"held-{i}" for i in range(h)])
    return spec


def _fit(case, **params):
    probe = case["cls"](**{**case["params"], **params})
    return probe.fit(case["reference"], ids=case["ref_ids"])


def _score(case, **params):
    return _fit(case, **params).score(case["samples"], case["ids"], holdout=case["holdout"],
                                      holdout_ids=case["h_ids"])


def test_init_stores_parameters_and_fit_returns_self_with_fitted_state(case):
    probe = case["cls"](**case["params"])
    before = dict(vars(probe))
    for name, value in case["params"].items():
        assert probe.get_params()[name] is value
    assert probe.fit(case["reference"], ids=case["ref_ids"]) is probe
    learned = set(vars(probe)) - set(before)
    assert learned and all(a.endswith("_") for a in learned)
    assert {k: vars(probe)[k] for k in before} == before  # the parameters are left as given


def test_bad_parameters_are_refused_by_fit_not_init(case):
    probe = case["cls"](**{**case["params"], "n_bootstrap": 0})  # stored, not checked
    with pytest.raises(ValueError, match="n_bootstrap"):
        probe.fit(case["reference"])


def test_unfitted_score_raises_the_one_error(case):
    probe = case["cls"](**case["params"])
    name = case["cls"].__name__
    with pytest.raises(NotFittedError) as err:
        probe.score(case["samples"], holdout=case["holdout"])
    # one wording for every probe: only the class name differs
    assert str(err.value).replace(name, "Probe") == (
        "Probe is not fitted: call Probe(...).fit(reference) before score(samples)")
    assert isinstance(err.value, RuntimeError)


def test_score_returns_a_result_whose_dict_is_json(case):
    res = _score(case)
    full, brief = res.to_dict(per_sample=True), res.to_dict(per_sample=False)
    for d in (full, brief):
        json.dumps(d, allow_nan=False)
    # per_sample adds the per-sample arrays and changes nothing else
    assert "per_sample" in full and "per_sample" not in brief
    assert set(brief) <= set(full)
    assert {k: full[k] for k in brief if k != "pairs_listed"} == {
        k: v for k, v in brief.items() if k != "pairs_listed"}
    assert len(full["per_sample"]["sample_id"]) == len(case["samples"])
    assert res.to_dict() == full  # per_sample=True is the default everywhere


def test_every_result_plots_on_labelled_axes(case):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = _score(case)
    ax = res.plot()
    try:
        assert isinstance(ax, matplotlib.axes.Axes)
        assert ax.get_xlabel() and ax.get_ylabel()  # every figure names its axes
        assert ax.has_data()
        fig, given = plt.subplots()
        assert res.plot(ax=given) is given  # draws on the axes it is given
    finally:
        plt.close("all")


def test_ids_round_trip(case):
    res = _score(case)
    assert res.to_dict()["per_sample"]["sample_id"] == case["ids"]
    assert list(case["holdout_ids"](res)) == case["h_ids"]


def test_same_seed_same_result_and_the_seed_moves_the_bootstrap(case):
    assert _score(case, seed=3).to_dict() == _score(case, seed=3).to_dict()
    rates = [case["headline"](_score(case, seed=s)) for s in range(6)]
    # the point estimate does not depend on the seed, the bootstrap interval does
    assert len({r.value for r in rates}) == 1
    assert 0 < rates[0].value < 1
    assert len({(r.low, r.high) for r in rates}) > 1
    assert all(f"seed {s}" in r.method or "stream" in r.method for s, r in enumerate(rates))


def test_holdout_is_the_control(case):
    res = _fit(case).score(case["samples"], case["ids"], holdout=case["holdout"],
                           holdout_ids=case["h_ids"])
    if case["cls"] is MembershipProbe:  # non-members are required: they are the attack's control
        with pytest.raises(ValueError, match="holdout"):
            _fit(case).score(case["samples"])
        assert res.n_nonmembers == len(case["holdout"])
    else:
        alone = _fit(case).score(case["samples"], case["ids"])
        assert case["headline"](alone).value == case["headline"](res).value
        assert alone.to_dict()["per_sample"]["sample_id"] == case["ids"]


# ----------------------------------------------------------------------------- layer direction
_FORBIDDEN = ("memaudit.adapters", "memaudit.sources", "memaudit.report", "memaudit.cli",
              "memaudit.audit", "memaudit.image_duplicates")


def _imports(path: pathlib.Path, package: str):
    """Every module a file imports (lazy imports inside functions included), made absolute."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names)


def test_probes_import_no_adapter_source_or_report():
    root = pathlib.Path(memaudit.__file__).parent / "probes"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    bad = [(f.name, m) for f in files for m in _imports(f, "memaudit.probes")
           if re.match("|".join(re.escape(x) + r"(\.|$|_)" for x in _FORBIDDEN), m)]
    assert bad == []


def test_the_import_scan_sees_relative_and_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from ..adapters.images import phash\n\ndef g():\n    from ..report import x\n")
    got = set(_imports(f, "memaudit.probes"))
    assert {"memaudit.adapters.images", "memaudit.report"} <= got
