import numpy as np
import pytest

from memaudit import NNRatioProbe, nn_ratio
from memaudit.probes.nn_ratio import DEFAULT_THRESHOLD
from naive import naive_nn_ratio


def _planted(rng, n_train=400, n_fresh=150, d=64):
    train = rng.normal(size=(n_train, d))
    samples = rng.normal(size=(n_fresh, d))
    exact = {3: 11, 50: 250, 77: 399}  # sample position -> training index
    perturbed = {10: 0, 120: 42, 149: 123}
    for pos, src in exact.items():
        samples[pos] = train[src]
    for pos, src in perturbed.items():
        samples[pos] = train[src] + rng.normal(scale=0.05, size=d)  # ~4% of the spacing
    return train, samples, {**exact, **perturbed}


@pytest.mark.parametrize("backend", ["faiss", "numpy", "torch"])
def test_planted_copies_are_flagged_with_the_right_training_id(rng, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    train, samples, truth = _planted(rng)
    ids = np.array([f"img_{i:04d}.png" for i in range(len(train))])
    res = nn_ratio(samples, train, train_ids=ids, backend=backend)
    assert set(res.flagged().tolist()) == set(truth)  # all planted ones, nothing else
    for pos, src in truth.items():
        assert res.nn_index[pos] == src
        assert res.nn_id[pos] == f"img_{src:04d}.png"
    assert res.rate.count == len(truth) and res.rate.value == len(truth) / len(samples)
    assert res.n_exact_copies == 3
    # exact copies have d1 = 0 exactly (the refine step removes the GEMM rounding)
    np.testing.assert_array_equal(res.d1[[3, 50, 77]], 0.0)


def test_agrees_with_brute_force(rng):
    train = rng.normal(size=(80, 6))
    samples = np.vstack([rng.normal(size=(40, 6)), train[:10] + rng.normal(scale=0.2, size=(10, 6))])
    res = nn_ratio(samples, train, carlini_n=20)
    want = naive_nn_ratio(samples, train, carlini_n=20)
    for key in ("d1", "d2", "ratio", "carlini_score"):
        np.testing.assert_allclose(getattr(res, key), want[key], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(res.memorized, want["memorized"])
    np.testing.assert_array_equal(res.carlini_memorized, want["carlini_memorized"])
    np.testing.assert_array_equal(res.nn_index, want["nn_index"])
    assert 0 < res.memorized.sum() < 50  # the grid above crosses the threshold both ways


def test_copy_of_a_duplicated_training_item_is_memorized_not_nan(rng):
    train = rng.normal(size=(50, 8))
    train[20] = train[30]  # the training set holds a duplicate
    samples = np.vstack([train[20], rng.normal(size=8)])
    res = nn_ratio(samples, train)
    assert res.d1[0] == 0 and res.d2[0] == 0
    assert res.ratio[0] == 0.0 and res.memorized[0]  # the paper's code reads 0/0 as not memorized
    assert np.isfinite(res.ratio).all()


def test_fresh_samples_from_the_training_distribution_give_rate_zero(rng):
    # control with a known answer: i.i.d. Gaussian samples in d = 64 have d1/d2 close to 1
    train = rng.normal(size=(1000, 64))
    res = nn_ratio(rng.normal(size=(500, 64)), train, holdout=rng.normal(size=(500, 64)))
    assert res.rate.count == 0 and res.control.rate.count == 0
    assert res.ratio.min() > 0.7
    # without copying, the nearest of 1000 train + 500 held-out items is a training item with
    # probability 1000 / 1500; the interval must cover it
    share = res.closer_to_train
    assert res.closer_sizes == {"n_train": 1000, "n_holdout": 500, "expected": 2 / 3}
    assert share.low <= 2 / 3 <= share.high


def test_control_excess_and_closer_share_with_copies(rng):
    train = rng.normal(size=(300, 32))
    samples = np.vstack([train[:60] + 0.01, rng.normal(size=(140, 32))])
    res = nn_ratio(samples, train, holdout=rng.normal(size=(300, 32)), seed=7)
    assert res.rate.value == pytest.approx(0.3)
    assert res.control.rate.value == 0.0
    assert res.excess.value == pytest.approx(res.rate.value - res.control.rate.value)
    assert res.excess.low > 0.2
    # copies are always closer to train; fresh ones half the time (equal sizes): 0.3 + 0.7 * 0.5
    assert res.closer_to_train.low <= 0.65 <= res.closer_to_train.high
    d = res.to_dict()
    assert d["control"]["rate"]["count"] == 0 and "per_sample" not in d["control"]


def test_same_seed_same_result_and_seed_matters(rng):
    train = rng.normal(size=(200, 16))
    samples = np.vstack([train[:30] + 0.01, rng.normal(size=(70, 16))])
    holdout = rng.normal(size=(150, 16))
    a = nn_ratio(samples, train, holdout=holdout, seed=5)
    b = nn_ratio(samples, train, holdout=holdout, seed=5)
    c = nn_ratio(samples, train, holdout=holdout, seed=6)
    assert a.to_dict() == b.to_dict()
    assert "seed 5" in a.rate.method
    assert (a.rate.low, a.rate.high) != (c.rate.low, c.rate.high)
    assert a.rate.value == c.rate.value  # the seed moves intervals, never the point estimate


def test_carlini_neighbourhood_is_clamped_to_the_training_set(rng):
    train = rng.normal(size=(12, 5))
    res = nn_ratio(train[:3] + 0.001, train)
    assert res.carlini_n == 12
    want = naive_nn_ratio(train[:3] + 0.001, train, carlini_n=12)
    np.testing.assert_allclose(res.carlini_score, want["carlini_score"])
    assert nn_ratio(train[:3], train, carlini_alpha=None).carlini_rate is None


def test_defaults_are_the_papers():
    p = NNRatioProbe()
    assert p.threshold == DEFAULT_THRESHOLD == 1 / 3
    assert p.metric == "l2" and p.carlini_alpha == 0.5 and p.carlini_n == 50
    assert p.n_bootstrap == 1000 and p.confidence == 0.95


@pytest.mark.parametrize("threshold", [0, 1, 1.5, -0.1, float("nan")])
def test_threshold_outside_unit_interval_is_refused(rng, threshold):
    with pytest.raises(ValueError, match="threshold must lie in \\(0, 1\\)"):
        NNRatioProbe(threshold=threshold).fit(rng.normal(size=(5, 2)))


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="at least 2 training items"):
        NNRatioProbe().fit(rng.normal(size=(1, 4)))
    probe = NNRatioProbe().fit(rng.normal(size=(10, 4)))
    with pytest.raises(ValueError, match="samples has 3 features per item but train has 4"):
        probe.score(rng.normal(size=(2, 3)))
    with pytest.raises(ValueError, match="holdout has 5 features"):
        probe.score(rng.normal(size=(2, 4)), holdout=rng.normal(size=(3, 5)))
    with pytest.raises(ValueError, match="samples is empty"):
        probe.score(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        probe.score(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="expected 10 ids"):
        NNRatioProbe().fit(rng.normal(size=(10, 4)), ids=np.arange(9))
    with pytest.raises(RuntimeError, match="not fitted"):
        NNRatioProbe().score(rng.normal(size=(2, 4)))
    with pytest.raises(TypeError, match="threshold must be a real number"):
        NNRatioProbe(threshold="1/3").fit(rng.normal(size=(5, 2)))


def test_to_dict_is_json_safe(rng):
    import json

    train = rng.normal(size=(50, 4))
    res = nn_ratio(np.vstack([train[:2], rng.normal(size=(5, 4))]), train,
                   holdout=rng.normal(size=(20, 4)))
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["per_sample"]["memorized"][:2] == [True, True]
    assert d["threshold_source"].startswith("k = 1/3")
    assert "Bonnaire" in d["threshold_source"]


def test_plot(rng):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    train = rng.normal(size=(50, 4))
    res = nn_ratio(train[:5] + 0.01, train, holdout=rng.normal(size=(20, 4)))
    ax = res.plot()
    assert ax.get_xlabel().startswith("d1 / d2") and ax.get_xscale() == "log"
    assert len(ax.patches) > 0
