"""lib.stats: the sweet spot's selection-aware test, its intervals, the correction across metrics, calibration."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from lib import stats

ALPHA = 0.05
SPARSITIES = np.round(1 - 0.8 ** np.arange(12), 3)  # a dozen checkpoints, dense first


def _paired(rng, datasets, metrics, items, checkpoints=12, rho=0.8):
    """Per-item values, unit variance, correlation ``rho`` between the checkpoints of one item."""
    shared = rng.normal(size=(datasets, metrics, items, 1))
    return np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(size=(datasets, metrics, items, checkpoints))


def _gains(*columns):
    values = np.zeros((len(columns[0]), len(columns) + 1))
    for j, column in enumerate(columns, 1):
        values[:, j] = column
    return values


# --- the sign-flip test, by hand ---------------------------------------------------------------------------

def test_exact_sign_flip_p_value_by_hand():
    # One pruned checkpoint, differences 1, 2, 3, -1 (sum 5 of magnitudes 7). Flipping a set of items of total
    # magnitude s gives a sum of 7 - 2s, and the t statistic grows with the sum (the squares do not change):
    # sums >= 5 need s <= 1: no flip, flip the 1 or flip the -1. 3 of the 2^4 = 16 flips.
    spot = stats.sweet_spot(_gains([1, 2, 3, -1]), [0, 0.5])
    assert spot["exact"] and spot["p_value"] == pytest.approx(3 / 16) and spot["p_floor"] == 1 / 16
    assert spot["step_index"] == 1 and spot["gain"] == pytest.approx(1.25)
    # A mirror checkpoint (-1, -2, -3, 1) joins the max: every flip now counts |sum| >= 5, twice as many.
    mirrored = stats.sweet_spot(_gains([1, 2, 3, -1], [-1, -2, -3, 1]), [0, 0.5, 0.7])
    assert mirrored["step_index"] == 1 and mirrored["p_value"] == pytest.approx(6 / 16)
    # four items can never reach 0.05 (the smallest p is 1/16): the verdict says so
    assert not spot["beats_dense"] and spot["verdict"].startswith("too few items for a claim among 1 tests")


def test_sign_flip_matches_a_brute_force_max_t():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(6, 4)) + [0, 0.8, 0.3, -0.2]
    spot = stats.sweet_spot(values, [0, 0.2, 0.4, 0.6], n_resamples=64)
    assert spot["exact"] and spot["resamples"] == 64
    d = values[:, 1:] - values[:, :1]
    best = spot["step_index"] - 1
    observed = sps.ttest_1samp(d[:, best], 0).statistic
    hits = 0
    for signs in itertools.product([1, -1], repeat=6):
        t = sps.ttest_1samp(np.array(signs)[:, None] * d, 0).statistic  # a t per checkpoint, flipped rows
        hits += np.nanmax(t) >= observed - 1e-9
    assert spot["p_value"] == pytest.approx(hits / 64)


def test_random_flips_when_enumeration_is_too_long():
    rng = np.random.default_rng(4)
    values = rng.normal(size=(30, 5)) + [0, 0, 1.0, 0, 0]
    spot = stats.sweet_spot(values, [0, 0.2, 0.4, 0.6, 0.8], n_resamples=999, seed=1)
    assert not spot["exact"] and spot["p_value"] == pytest.approx(1 / 1000) and spot["p_floor"] == 1 / 1000
    assert spot["step_index"] == 2 and spot["beats_dense"] and spot["verdict"].startswith("beats dense")
    assert spot == stats.sweet_spot(values, [0, 0.2, 0.4, 0.6, 0.8], n_resamples=999, seed=1)  # seeded


# --- degenerate cases --------------------------------------------------------------------------------------

def test_zero_variance_differences():
    base = np.linspace(0.2, 0.7, 6)
    values = np.stack([base, base + 0.1, base + 0.02], 1)
    spot = stats.sweet_spot(values, [0, 0.2, 0.4])
    assert spot["p_value"] == pytest.approx(1 / 64) and spot["beats_dense"]  # only the identity flip reaches t = inf
    assert spot["gain_interval"] == pytest.approx([0.1, 0.1]) and spot["sparsity_interval"] == [0.2, 0.2]
    assert spot["detectable_gain"] == pytest.approx(0, abs=1e-9)
    worse = stats.sweet_spot(np.stack([base, base + 0.1, base - 0.3], 1), [0, 0.2, 0.4])
    assert worse["p_value"] == pytest.approx(2 / 64)  # flipping every item turns the constant loss into a gain
    flat = stats.sweet_spot(np.stack([base, base, base], 1), [0, 0.2, 0.4])
    assert flat["step_index"] == 0 and flat["p_value"] == 1 and not flat["beats_dense"]
    assert flat["verdict"].startswith("no gain detected")


def test_one_item_ties_missing_values_and_no_pruned_checkpoint():
    one = stats.sweet_spot([[0.1, 0.5, 0.3]], [0, 0.2, 0.4])
    assert one["items"] == 1 and one["step_index"] == 1 and one["p_value"] == 0.5 and not one["beats_dense"]
    assert np.isnan(one["detectable_gain"]) and np.isnan(one["gain_interval"]).all()
    assert one["verdict"].startswith("too few items for a claim among 1 tests")
    tie = stats.sweet_spot([[0.0, 1.0, 1.0], [1.0, 2.0, 2.0]], [0, 0.2, 0.4])
    assert tie["step_index"] == 1  # the less sparse of two equal checkpoints
    assert stats.sweet_spot([[1.0, 1.0], [2.0, 2.0]], [0, 0.2])["step_index"] == 0  # a tie with dense is dense
    values = np.array([[0.0, 1.0], [np.nan, 5.0], [1.0, 2.0], [2.0, np.nan]])
    assert stats.sweet_spot(values, [0, 0.2])["items"] == 2  # items kept only where every checkpoint has a value
    only_dense = stats.sweet_spot([[1.0], [2.0]], [0])
    assert only_dense["step_index"] == 0 and only_dense["verdict"] == "no pruned checkpoint to test"
    with pytest.raises(ValueError, match="every checkpoint"):
        stats.sweet_spot([[np.nan, 1.0]], [0, 0.2])
    with pytest.raises(ValueError, match="one sparsity per checkpoint"):
        stats.sweet_spot([[0.0, 1.0]], [0])


def test_direction_lower_is_better():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(12, 4)) - [0, 0, 1.5, 0]  # checkpoint 2 lowers the metric
    lower = stats.sweet_spot(values, [0, 0.2, 0.4, 0.6], higher_is_better=False)
    assert lower["step_index"] == 2 and lower["gain"] > 0 and lower["beats_dense"]
    assert lower["value"] == pytest.approx(values[:, 2].mean()) and lower["dense"] == pytest.approx(values[:, 0].mean())
    assert lower["gain"] == pytest.approx(lower["dense"] - lower["value"])
    assert lower["gain_interval"][0] > 0 and not lower["higher_is_better"]
    mirrored = stats.sweet_spot(-values, [0, 0.2, 0.4, 0.6])
    for key in ("step_index", "p_value", "gain", "gain_interval", "sparsity_interval"):
        assert mirrored[key] == pytest.approx(lower[key])
    higher = stats.sweet_spot(values, [0, 0.2, 0.4, 0.6])  # tested for an increase, the decrease is no gain
    assert higher["step_index"] != 2 and not higher["beats_dense"]


# --- corrections across metrics ----------------------------------------------------------------------------

def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, running max 0.02, 0.03, 0.06, 0.06
    assert stats.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04, running min from the top: the same
    assert stats.adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(6)
    many = rng.uniform(0, 0.2, 40) ** 2
    assert stats.adjust(many, "bh") == pytest.approx(sps.false_discovery_control(many, method="bh"))
    assert np.isnan(stats.adjust([0.01, np.nan, 0.02])[1]) and stats.adjust([0.01, np.nan, 0.02])[0] == 0.02
    assert stats.adjust([0.6, 0.9]).tolist() == [1.0, 1.0] and len(stats.adjust([])) == 0
    with pytest.raises(ValueError, match="holm"):
        stats.adjust(p, "bonferoni")


def test_against_statsmodels_if_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(7).uniform(0, 0.1, 25)
    assert stats.adjust(p, "holm") == pytest.approx(multitest.multipletests(p, method="holm")[1])
    assert stats.adjust(p, "bh") == pytest.approx(multitest.multipletests(p, method="fdr_bh")[1])


def test_claim_over_a_family_and_the_detectable_gain():
    rng = np.random.default_rng(8)
    strong = rng.normal(size=(30, 4)) + [0, 0, 2.0, 0]
    weak = rng.normal(size=(30, 4)) * 0.2 + [0, 0, 0.09, 0]
    records = [stats.sweet_spot(v, [0, 0.2, 0.4, 0.6], n_resamples=999) for v in (strong, weak)]
    alone = records[1]["beats_dense"], records[1]["p_value"], records[1]["detectable_gain"]
    stats.claim(records + [stats.sweet_spot(rng.normal(size=(30, 4)), [0, 0.2, 0.4, 0.6]) for _ in range(8)], ALPHA)
    assert records[0]["beats_dense"] and records[0]["p_adjusted"] >= records[0]["p_value"]
    assert records[1]["p_value"] == alone[1] and records[1]["p_adjusted"] >= alone[1]
    assert records[1]["detectable_gain"] > alone[2]  # a larger family needs a larger gain
    if not records[1]["beats_dense"]:
        assert records[1]["verdict"] == f"no gain detected (could have detected >= {records[1]['detectable_gain']:.3g})"
    bh = stats.claim([dict(r) for r in records], ALPHA, "bh")
    assert all(b["p_adjusted"] <= r["p_adjusted"] for b, r in zip(bh, records)) and bh[0]["correction"] == "bh"
    # the detectable gain: the noncentral t of a one-sided paired t test, near the normal formula for many items
    z = sps.norm.isf(ALPHA / 33) + sps.norm.isf(0.2)
    assert stats.detectable_gain(2.0, 400, ALPHA, tests=33) == pytest.approx(z * 2.0 / 20, rel=0.02)
    delta = stats.detectable_gain(1.0, 10, ALPHA) * np.sqrt(10)
    assert sps.nct.sf(sps.t.isf(ALPHA, 9), 9, delta) == pytest.approx(0.8)


# --- calibration ---------------------------------------------------------------------------------------------

def _claims(data, correction="holm", n_resamples=500, seed=0):
    """Per data set: the claimed records of its metrics (one family), each record of every metric."""
    out = []
    for d, metrics in enumerate(data):
        records = [stats.sweet_spot(v, SPARSITIES, n_resamples=n_resamples, seed=seed + 100 * d + m)
                   for m, v in enumerate(metrics)]
        out.append(stats.claim(records, ALPHA, correction))
    return out


def _bound(runs):
    return ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / runs)


def test_no_more_false_claims_than_alpha_under_the_global_null():
    """200 data sets of 5 metrics, 16 paired items, 12 checkpoints, within-item correlation 0.8, no gain
    anywhere: the share of data sets with any claim is the family-wise error rate (<= alpha + 3 s.e.);
    under the global null the false discovery rate is the same share, so BH meets the same bound."""
    data = _paired(np.random.default_rng(10), 200, 5, 16)
    holm = _claims(data)
    rate = np.mean([any(r["beats_dense"] for r in family) for family in holm])
    assert rate <= _bound(200)
    p = np.array([[r["p_value"] for r in family] for family in holm])
    bh_rate = np.mean([(stats.adjust(row, "bh") <= ALPHA).any() for row in p])
    assert bh_rate <= _bound(200)
    assert np.mean(p <= ALPHA) <= _bound(p.size)  # each metric's own test is calibrated too


def test_the_winners_curse_case_is_calibrated():
    """The case that gave 32% false claims: 8 images, 12 checkpoints, correlation 0.8, one metric."""
    data = _paired(np.random.default_rng(11), 300, 1, 8)
    claims = _claims(data, n_resamples=256)  # 2^8 flips: exact
    assert all(family[0]["exact"] for family in claims)
    assert np.mean([family[0]["beats_dense"] for family in claims]) <= _bound(300)


def test_a_planted_gain_is_found_where_it_was_planted():
    """A gain of 0.8 sd of the per-item values at three adjacent sparsities of one metric of five (40 items):
    found (Holm over the five) in >= 80% of data sets, its location interval covering all three planted
    sparsities in a large majority; and nothing claimed for the other four beyond alpha."""
    rng = np.random.default_rng(12)
    data = _paired(rng, 100, 5, 40)
    planted = [5, 6, 7]
    data[:, 0, :, planted] += 0.8
    claims = _claims(data)
    found = [f[0]["beats_dense"] and f[0]["step_index"] in planted for f in claims]
    covers = [f[0]["sparsity_interval"][0] <= SPARSITIES[5] and f[0]["sparsity_interval"][1] >= SPARSITIES[7]
              for f in claims]
    assert np.mean(found) >= 0.8
    assert np.mean(covers) >= 0.75
    inside = [f[0]["gain_interval"][0] <= 0.8 <= f[0]["gain_interval"][1] for f in claims]
    assert np.mean(inside) >= 0.8  # the winner's mean is biased up; the simultaneous interval absorbs it
    assert np.mean([any(r["beats_dense"] for r in f[1:]) for f in claims]) <= _bound(100)
    assert all(f[0]["detectable_gain"] < 0.8 for f in claims)  # 40 items were enough to see it
