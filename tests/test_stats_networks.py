"""lib.stats with several networks per step, the accuracy guard, the control, decisions; calibration under a
null where every (seed, checkpoint) network has its own random offset.

Monte-Carlo tolerances: a rate that must stay at most alpha may exceed it by 3 binomial standard errors of the
number of simulated data sets (``_bound``); a power of at least 0.8 is asserted on the observed share."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lib import stats

ALPHA = 0.05
SPARSITIES = np.round(1 - 0.8 ** np.arange(12), 3)  # a dozen checkpoints, dense first


def _bound(runs):
    return ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / runs)


def _networks(rng, seeds, items, checkpoints=12, rho=0.8, offset=1.0):
    """(seeds, items, checkpoints): unit-variance item values correlated ``rho`` across checkpoints (the same
    items in every network), plus an offset of SD ``offset`` per (seed, checkpoint) network."""
    shared = rng.normal(size=(1, items, 1))
    own = rng.normal(size=(seeds, items, checkpoints))
    return np.sqrt(rho) * shared + np.sqrt(1 - rho) * own + offset * rng.normal(size=(seeds, 1, checkpoints))


# --- by hand ---------------------------------------------------------------------------------------------------

def test_network_level_t_by_hand():
    # three networks, one item each, dense 0 and one pruned checkpoint: differences 1, 2, 3
    values = np.array([[[0.0, 1.0]], [[0.0, 2.0]], [[0.0, 3.0]]])
    spot = stats.sweet_spot(values, [0, 0.5])
    t = 2.0 / (1.0 / np.sqrt(3))
    assert spot["unit"] == "network" and spot["seeds"] == 3 and spot["p_value"] == pytest.approx(sps.t.sf(t, 2))
    assert spot["p_value"] == pytest.approx(sps.ttest_1samp([1, 2, 3], 0, alternative="greater").pvalue)
    half = sps.t.isf(0.025, 2) / np.sqrt(3)
    assert spot["gain_interval"] == pytest.approx([2 - half, 2 + half])
    # two pruned checkpoints: the selected one's p is Bonferroni over the two
    two = stats.sweet_spot(np.concatenate([values, np.zeros((3, 1, 1))], 2), [0, 0.5, 0.7])
    assert two["p_value"] == pytest.approx(2 * sps.t.sf(t, 2)) and two["checkpoints"] == 2
    assert two["verdict"].endswith("[across 3 networks per step]") or not two["beats_dense"]


def test_the_accuracy_guard_keeps_broken_checkpoints_out():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(20, 4)) + [0, 0.3, 0, 5.0]  # the big gain is at a broken checkpoint
    spot = stats.sweet_spot(values, [0, 0.2, 0.4, 0.9], claimable=[True, True, True, False])
    assert spot["step_index"] != 3 and spot["checkpoints"] == 2 and spot["checkpoints_total"] == 3
    none = stats.sweet_spot(values, [0, 0.2, 0.4, 0.9], claimable=[True, False, False, False])
    assert none["step_index"] == 0 and not none["beats_dense"]
    assert none["verdict"] == "no checkpoint within the accuracy tolerance to claim"
    with pytest.raises(ValueError, match="claimable"):
        stats.sweet_spot(values, [0, 0.2, 0.4, 0.9], claimable=[True, True])


def test_the_control_and_its_verdicts():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, 3))
    pruned = base + [0, 1.0, 0]
    beats_both = stats.sweet_spot(pruned, [0, 0.3, 0.5], reference=base, n_resamples=999)
    assert beats_both["beats_control"] and beats_both["verdict"].startswith("beats dense and its retrained control")
    assert beats_both["family_tests"] == 2  # against dense and against the control
    trained_more = base + [0, 1.0, 0]  # the control gained as much: extra training, not pruning
    only_dense = stats.sweet_spot(pruned, [0, 0.3, 0.5], reference=trained_more + 0.01 * rng.normal(size=(30, 3)),
                                  n_resamples=999)
    assert only_dense["beats_dense"] and not only_dense["beats_control"]
    assert only_dense["verdict"].startswith("beats dense, not its retrained control (adjusted p ")
    assert only_dense["verdict"].endswith("[about this one network per step, not about pruning]")


def test_too_few_items_for_a_claim_among_the_family():
    """The issue's case: 12 metrics, 6 items, a gain of 20 SD: p 1/64, times 12 = 0.1875 > alpha; the verdict
    must not offer a detectable gain."""
    rng = np.random.default_rng(3)
    records = []
    for m in range(12):
        values = rng.normal(size=(6, 5))
        if m == 0:
            values[:, 2] += 20
        records.append(stats.sweet_spot(values, [0, 0.2, 0.4, 0.6, 0.8], n_resamples=2000, seed=m))
    stats.claim(records, ALPHA)
    assert records[0]["p_value"] == pytest.approx(1 / 64) and records[0]["p_adjusted"] == pytest.approx(0.1875)
    assert records[0]["verdict"] == "too few items for a claim among 12 tests (smallest p 0.0156, times 12: 0.188)"
    assert not any(r["verdict"].startswith("no gain detected") for r in records)


def test_the_detectable_gain_uses_the_claimable_checkpoints_and_the_family():
    rng = np.random.default_rng(4)
    values = rng.normal(size=(40, 5))
    values[:, 4] += rng.normal(size=40) * 5  # a broken checkpoint with a wild spread
    guarded = stats.sweet_spot(values, [0, 0.2, 0.4, 0.6, 0.8], claimable=[True, True, True, True, False])
    d = values[:, 1:4] - values[:, :1]
    sd = np.sqrt(np.mean(d.std(0, ddof=1) ** 2))
    assert guarded["difference_sd"] == pytest.approx(sd)
    assert guarded["detectable_gain"] == pytest.approx(stats.detectable_gain(sd, 40, ALPHA, tests=3))
    family = stats.claim([guarded, dict(guarded), dict(guarded)], ALPHA)
    assert family[0]["detectable_gain"] == pytest.approx(stats.detectable_gain(sd, 40, ALPHA, tests=9))


def test_shape_bias_and_kappa_by_hand_and_against_the_align_metrics():
    from lib.align.metrics import ErrorConsistency, ShapeBias

    shape, texture = np.array([0, 1, 2, 3, 1]), np.array([1, 2, 3, 0, 1])  # the last trial has no conflict
    decisions = np.array([[0, 2, 0, 3, 1], [1, 2, 3, 0, 1]])
    # row 0: shape on trials 0, 3 (2 shape), texture on trial 1 (1 texture): 2/3; row 1: texture on all four: 0
    assert stats.shape_bias(decisions, shape, texture) == pytest.approx([2 / 3, 0.0])
    names = np.array(list("abcd"))
    trials = pd.DataFrame({"object_response": names[decisions[0]], "category": names[shape], "texture": names[texture]})
    assert stats.shape_bias(decisions[:1], shape, texture)[0] == pytest.approx(ShapeBias().analysis(trials)["shape-bias"])
    rng = np.random.default_rng(5)
    a, b = rng.random((2, 50)) < 0.6
    frame = lambda c: pd.DataFrame({"object_response": c.astype(int), "category": 1, "image_id": range(50)})  # noqa: E731
    assert stats.kappa(a, b)[0] == pytest.approx(ErrorConsistency().analysis(frame(a), frame(b))["error-consistency"])


# --- calibration ---------------------------------------------------------------------------------------------

def _family(data, seed=0, n_resamples=400):
    records = [stats.sweet_spot(v, SPARSITIES, n_resamples=n_resamples, seed=seed + m) for m, v in enumerate(data)]
    return stats.claim(records, ALPHA)


def test_null_with_network_offsets_as_large_as_the_items_spread():
    """200 data sets of 4 metrics, 3 seeds, 16 items, 12 checkpoints, every (seed, checkpoint) network with an
    offset of SD equal to the item SD, no effect of pruning: any claim in at most alpha + 3 s.e. of the data
    sets. The item-level test of one network and the intersection-union over seeds, on the same kind of data,
    fire far more often: the reason the unit of inference is the network."""
    rng = np.random.default_rng(10)
    runs = 200
    claims, items_claims, every = [], [], []
    for d in range(runs):
        data = [_networks(rng, 3, 16) for _ in range(4)]
        family = _family(data, seed=100 * d)
        claims.append(any(r["beats_dense"] for r in family))
        every.append(any(stats.adjust([r.get("p_every_network", 1.0) for r in family])[i] <= ALPHA
                         and r["step_index"] != 0 for i, r in enumerate(family)))
        items_claims.append(any(r["beats_dense"] for r in _family([v[0] for v in data], seed=100 * d)))
    assert np.mean(claims) <= _bound(runs)
    assert np.mean(items_claims) > 3 * ALPHA and np.mean(every) > 2 * ALPHA


def test_a_gain_shared_by_every_seed_is_found():
    """5 seeds, offsets as large as the item spread, a gain shared by every network at three adjacent
    checkpoints of one metric of four, of the size :func:`lib.stats.detectable_gain` gives for the between-network
    spread at Bonferroni over 11 checkpoints x 4 metrics: found in >= 80% of 100 data sets, at a planted
    checkpoint; the other metrics claimed in at most alpha + 3 s.e."""
    rng = np.random.default_rng(11)
    spread = np.sqrt(2 * 1.0 ** 2 + 2 * 0.2 / 16)  # per-seed difference: two offsets and the items' own noise
    gain = stats.detectable_gain(spread, 5, ALPHA, tests=11 * 4)
    planted = [5, 6, 7]
    found, others = [], []
    for d in range(100):
        data = [_networks(rng, 5, 16) for _ in range(4)]
        data[0][:, :, planted] += gain
        family = _family(data, seed=100 * d)
        found.append(family[0]["beats_dense"] and family[0]["step_index"] in planted)
        others.append(any(r["beats_dense"] for r in family[1:]))
    assert np.mean(found) >= 0.8
    assert np.mean(others) <= _bound(100)


def _trials(rng, trials=80, checkpoints=6, lift=0.0, at=3):
    """Cue-conflict trials: each trial's own shape propensity; every checkpoint follows the shape with it
    (plus ``lift`` at checkpoint ``at``), the texture otherwise. Returns (decisions, statistic)."""
    shape = rng.integers(0, 4, trials)
    texture = (shape + rng.integers(1, 4, trials)) % 4
    propensity = rng.beta(2, 3, trials)[:, None] + np.where(np.arange(checkpoints) == at, lift, 0.0)
    follows = rng.random((trials, checkpoints)) < propensity
    decisions = np.where(follows, shape[:, None], texture[:, None]).astype(float)
    return decisions, lambda rows: stats.shape_bias(rows, shape, texture)


def test_the_shape_bias_swap_test_is_calibrated_and_finds_a_shift():
    rng = np.random.default_rng(12)
    sparsities = np.linspace(0, 0.9, 6)
    null = [stats.swap_sweet_spot(*_trials(rng), sparsities, n_resamples=300, seed=d)["p_value"] <= ALPHA
            for d in range(300)]
    assert np.mean(null) <= _bound(300)
    found = []
    for d in range(100):
        spot = stats.swap_sweet_spot(*_trials(rng, lift=0.35), sparsities, n_resamples=300, seed=d)
        found.append(spot["beats_dense"] and spot["step_index"] == 3)
    assert np.mean(found) >= 0.8


def test_the_kappa_swap_test_is_calibrated_and_finds_a_shift():
    """Error consistency with a human observer: every checkpoint's correctness depends on the trial's difficulty
    alike (null), or one checkpoint copies the human's correctness on 60% of the trials (a shift)."""
    rng = np.random.default_rng(13)
    sparsities = np.linspace(0, 0.9, 6)

    def simulate(copy=0.0):
        difficulty = rng.random(120)
        human = rng.random(120) > difficulty
        correct = rng.random((120, 6)) > difficulty[:, None]
        copied = rng.random(120) < copy
        correct[:, 3] = np.where(copied, human, correct[:, 3])
        return correct.astype(float), lambda rows: stats.kappa(rows == 1, human)

    null = [stats.swap_sweet_spot(*simulate(), sparsities, n_resamples=300, seed=d)["p_value"] <= ALPHA
            for d in range(300)]
    assert np.mean(null) <= _bound(300)
    found = [(s := stats.swap_sweet_spot(*simulate(0.6), sparsities, n_resamples=300, seed=d))["beats_dense"]
             and s["step_index"] == 3 for d in range(100)]
    assert np.mean(found) >= 0.8
