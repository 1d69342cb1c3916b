"""Model-vs-human's metrics on hand-made trial tables, against sklearn's Cohen's kappa, and on the real observers."""

import numpy as np
import pandas as pd
import pytest

from lib.align import metrics


def trials(responses, categories, image_ids=None, **columns):
    ids = image_ids or [f"im{i}" for i in range(len(responses))]
    return pd.DataFrame({"object_response": responses, "category": categories, "image_id": ids,
                         "condition": "0", **columns})


def from_correct(correct, ids=None):
    return trials(["a" if c else "b" for c in correct], ["a"] * len(correct), ids)


def test_accuracy_and_squared_accuracy_difference():
    a = trials(["cat", "dog", "cat", "car"], ["cat", "dog", "cat", "cat"])  # 3 / 4
    b = trials(["cat", "dog", "dog", "car"], ["cat", "dog", "cat", "cat"])  # 2 / 4
    assert metrics.Accuracy().analysis(a) == {"16-class-accuracy": 0.75}
    assert metrics.AccuracyDifference().analysis(a, b)["16-class-accuracy-difference"] == pytest.approx(0.25 ** 2)


def test_shape_bias_hand_made():
    table = trials(
        ["cat", "cat", "dog", "bird", "car", "knife", "knife"],
        ["cat", "cat", "dog", "dog", "car", "bear", "knife"],   # shape class
        texture=["dog", "bird", "cat", "bird", "boat", "boat", "knife"],
    )
    # conflict trials: rows 0-5 (row 6 has shape == texture and is excluded although answered "knife")
    # shape decisions: rows 0, 1, 2, 4 -> 4; texture decisions: row 3 -> 1; row 5 is neither
    result = metrics.ShapeBias().analysis(table)
    assert result["shape-bias"] == pytest.approx(4 / 5)
    assert result["fraction-correct-shape"] == pytest.approx(4 / 7)  # of all trials, as the benchmark
    assert result["fraction-correct-texture"] == pytest.approx(1 / 7)


def test_shape_bias_all_texture_and_undefined():
    table = trials(["dog", "cat"], ["cat", "dog"], texture=["dog", "cat"])
    assert metrics.ShapeBias().analysis(table)["shape-bias"] == 0.0
    neither = trials(["car", "car"], ["cat", "dog"], texture=["dog", "cat"])
    assert np.isnan(metrics.ShapeBias().analysis(neither)["shape-bias"])
    with pytest.raises(ValueError, match="texture"):
        metrics.ShapeBias().analysis(trials(["cat"], ["cat"]))


def test_error_consistency_hand_computed_and_aligned_by_image():
    c1 = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # p1 = 0.6
    c2 = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]  # p2 = 0.5; agree on 4 + 3 = 7 trials
    ids = [f"im{i}" for i in range(10)]
    a, b = from_correct(c1, ids), from_correct(c2, ids).iloc[::-1]  # order must not matter
    result = metrics.ErrorConsistency().analysis(a, b)
    assert result["observed-consistency"] == pytest.approx(0.7)
    assert result["expected-consistency"] == pytest.approx(0.6 * 0.5 + 0.4 * 0.5)
    assert result["error-consistency"] == pytest.approx((0.7 - 0.5) / 0.5)


def test_error_consistency_extremes():
    same = from_correct([1, 0, 1, 0])
    assert metrics.ErrorConsistency().analysis(same, same)["error-consistency"] == 1.0
    perfect = from_correct([1, 1, 1])  # expected = observed = 1: defined as 1, as the benchmark
    assert metrics.ErrorConsistency().analysis(perfect, perfect)["error-consistency"] == 1.0
    opposite = metrics.ErrorConsistency().analysis(from_correct([1, 0, 1, 0]), from_correct([0, 1, 0, 1]))
    assert opposite["observed-consistency"] == 0 and opposite["error-consistency"] == pytest.approx(-1.0)


def test_error_consistency_equals_sklearn_cohen_kappa_on_correctness():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        c1 = rng.random(200) < rng.uniform(0.2, 0.9)
        c2 = np.where(rng.random(200) < 0.5, c1, rng.random(200) < 0.6)
        ours = metrics.ErrorConsistency().analysis(from_correct(c1), from_correct(c2))["error-consistency"]
        assert ours == pytest.approx(cohen_kappa_score(c1, c2))


def test_error_consistency_needs_the_same_images():
    with pytest.raises(ValueError, match="different images"):
        metrics.ErrorConsistency().analysis(from_correct([1, 0], ["a", "b"]), from_correct([1, 0], ["a", "c"]))
    with pytest.raises(ValueError, match="twice"):
        metrics.ErrorConsistency().analysis(from_correct([1, 0], ["a", "a"]), from_correct([1, 0], ["a", "b"]))


def test_compare_and_human_ceiling():
    ids = [f"im{i}" for i in range(4)]
    humans = pd.concat([from_correct(c, ids).assign(subj=s) for s, c in
                        [("subject-01", [1, 1, 0, 0]), ("subject-02", [1, 1, 0, 1]), ("subject-03", [1, 0, 0, 0])]])
    model = from_correct([1, 1, 0, 0], ids)
    versus = metrics.compare(model, humans).set_index("subj")
    assert versus.loc["subject-01", "error-consistency"] == 1.0
    assert versus.loc["subject-02", "observed-consistency"] == pytest.approx(0.75)
    pairs = metrics.human_ceiling(humans)
    assert len(pairs) == 3  # every pair once
    per_observer = metrics.per_observer(pairs)
    # subject-01 agrees with 02 on 3/4 (kappa 0.5) and with 03 on 3/4 (kappa 0.5)
    assert per_observer["subject-01"] == pytest.approx(0.5)


def test_real_observers_match_the_published_human_values(shared_data):
    """Humans' shape bias on cue-conflict is 0.96 in the benchmark (Geirhos et al. 2019/2021)."""
    from lib.align.metrics import human_summary
    from lib.data import modelvshuman

    root = shared_data / "model-vs-human"
    humans = pd.concat([modelvshuman.load_human_trials(root, name).assign(dataset=name)
                        for name in ("cue-conflict", "edge", "silhouette")])
    summary = human_summary(humans)
    assert summary["cue-conflict"]["shape_bias"] == pytest.approx(0.96, abs=0.01)
    assert summary["cue-conflict"]["shape_bias_min"] > 0.9  # every observer is strongly shape-biased
    for name in ("cue-conflict", "edge", "silhouette"):
        assert summary[name]["observers"] == 10
        # humans agree well beyond chance (kappa 0) with each other, far from the models' ~0.2
        assert 0.25 < summary[name]["error_consistency"] < 0.6
        assert summary[name]["error_consistency_min"] > 0.1
