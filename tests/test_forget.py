"""lib.forget: flips, PIEs (Hooker et al. 2019), per-class changes with Welch's t, and the stage on real checkpoints.

The population measures are recomputed here independently from a predictions table (scipy's mode and Welch
test, a Holm adjustment written out) and must agree with the stage's."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lib.forget import (checkpoint_rows, class_changes, compare_forgotten, flips, join_dimensions, modal_label, most_forgotten,
                        per_image, pies, welch_t)
from lib.forget.run import check_stage, forget, load_images, pictures_of, seed_dir


# ----------------------------------------------------------------------------- hand-computed cases
def test_modal_label_ties_go_to_the_lowest_class():
    predictions = np.array([[2, 1, 0], [2, 3, 1], [1, 3, 2]])  # image 0: 2,2,1; image 1: 1,3,3; image 2: 0,1,2 (tie)
    assert modal_label(predictions, 4).tolist() == [2, 3, 0]


def test_pies_compare_modal_labels_and_flips_compare_each_seed_with_its_own_dense():
    dense = np.array([[0, 1, 2], [0, 1, 2], [0, 2, 2]])
    pruned = np.array([[0, 2, 1], [1, 2, 2], [0, 1, 1]])
    # modal: dense [0, 1, 2]; pruned [0, 2, 1]  -> PIEs at images 1 and 2
    assert pies(dense, pruned, 3).tolist() == [False, True, True]
    assert flips(dense, pruned).tolist() == [[False, True, True], [True, True, False], [False, True, True]]


def test_pies_need_a_population():
    with pytest.raises(ValueError, match="population"):
        pies(np.array([[0, 1]]), np.array([[1, 1]]))


def test_welch_t_by_hand_and_against_scipy():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0, 8.0])
    # means 2 and 5; s2/n: 1/3 and (20/3)/4 = 5/3; t = -3 / sqrt(2) ; df = 4 / ((1/9)/2 + (25/9)/3)
    t, df, p = welch_t(a, b)
    assert t == pytest.approx(-3 / np.sqrt(2))
    assert df == pytest.approx(4 / ((1 / 9) / 2 + (25 / 9) / 3))
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert (t, p) == pytest.approx((reference.statistic, reference.pvalue))
    assert np.isnan(welch_t([1.0], [1.0, 2.0])[2]) and np.isnan(welch_t([1.0, 1.0], [2.0, 2.0])[2])


# ----------------------------------------------------------------------------- independent recomputation
def random_predictions(seeds=3, steps=4, images=40, classes=4, seed=0) -> pd.DataFrame:
    """Predictions that drift away from each seed's dense ones as the step grows."""
    rng = np.random.default_rng(seed)
    labels = np.arange(images) % classes
    rows = []
    for k in range(seeds):
        dense = np.where(rng.random(images) < 0.8, labels, rng.integers(0, classes, images))
        for step in range(steps):
            changed = rng.random(images) < 0.15 * step
            prediction = np.where(changed, rng.integers(0, classes, images), dense)
            rows.append(pd.DataFrame({"seed": k, "step": step, "sparsity": 0.3 * step, "image": [f"i{j:03d}" for j in
                                      range(images)], "label": labels, "prediction": prediction}))
    return pd.concat(rows, ignore_index=True)


def holm(p):
    """Holm's step-down adjustment, written out."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_pies_flips_and_class_changes_agree_with_an_independent_recomputation():
    predictions = random_predictions()
    images, classes = per_image(predictions, 4), class_changes(predictions, "holm", 0.05)
    rows = checkpoint_rows(images, classes)
    seeds, steps = sorted(predictions["seed"].unique()), sorted(predictions["step"].unique())
    ids = sorted(predictions["image"].unique())
    cube = {(k, s): predictions[(predictions.seed == k) & (predictions.step == s)].set_index("image")
            .loc[ids, "prediction"].to_numpy() for k in seeds for s in steps}
    labels = predictions[(predictions.seed == 0) & (predictions.step == 0)].set_index("image").loc[ids, "label"].to_numpy()
    dense_mode = stats.mode(np.stack([cube[(k, 0)] for k in seeds]), axis=0, keepdims=False).mode
    for s in steps:
        pruned_mode = stats.mode(np.stack([cube[(k, s)] for k in seeds]), axis=0, keepdims=False).mode
        mine = images[images.step == s].set_index("image").loc[ids]
        assert mine["pie"].tolist() == (pruned_mode != dense_mode).astype(float).tolist()
        flipped = np.mean([cube[(k, s)] != cube[(k, 0)] for k in seeds], axis=0)
        assert np.allclose(mine["flip"], flipped)
        row = next(r for r in rows if r["step"] == s)
        assert row["pie_share"] == pytest.approx(np.mean(pruned_mode != dense_mode))
        assert row["flip_share"] == pytest.approx(flipped.mean())
        assert row["acc"] == pytest.approx(np.mean([cube[(k, s)] == labels for k in seeds]))
        if s == 0:
            continue
        p_values, changes = [], []
        for c in range(4):
            def relative(step, k):
                return np.mean(cube[(k, step)][labels == c] == c) - np.mean(cube[(k, step)] == labels)
            p_values.append(stats.ttest_ind([relative(s, k) for k in seeds], [relative(0, k) for k in seeds],
                                            equal_var=False).pvalue)
            changes.append(np.mean([np.mean(cube[(k, s)][labels == c] == c) - np.mean(cube[(k, 0)][labels == c] == c)
                                    for k in seeds]))
        mine = classes[classes.step == s].set_index("class").loc[range(4)]
        assert np.allclose(mine["p_value"], p_values) and np.allclose(mine["change"], changes)
        assert np.allclose(mine["p_adjusted"], holm(p_values))
        significant = np.array(holm(p_values)) <= 0.05
        assert row["classes_hurt"] == (significant & (mine["relative_change"].to_numpy() < 0)).sum()


def test_one_seed_counts_flips_and_leaves_pies_and_welch_undefined():
    predictions = random_predictions(seeds=1)
    images = per_image(predictions)
    classes = class_changes(predictions)
    rows = checkpoint_rows(images, classes)
    assert images["pie"].isna().all() and all(np.isnan(r["pie_share"]) for r in rows)
    assert classes["p_value"].isna().all() and not classes["significant"].any()
    assert all(np.isnan(r["classes_hurt"]) for r in rows if r["step"] > 0)
    assert rows[0]["flip_share"] == 0 and rows[-1]["flip_share"] > 0
    gallery = most_forgotten(images, 5)  # ranked by flips
    assert len(gallery) == 5 and (gallery["score"].diff().dropna() <= 0).all()


def test_the_predictions_table_is_checked():
    predictions = random_predictions(seeds=2)
    with pytest.raises(ValueError, match="step 0"):
        per_image(predictions[predictions.step > 0])
    with pytest.raises(ValueError, match="different checkpoint steps"):
        per_image(predictions[~((predictions.seed == 1) & (predictions.step == 3))])
    with pytest.raises(ValueError, match="lacks columns"):
        per_image(predictions.drop(columns="label"))


def test_join_matches_rq1_and_rq2_ids_of_the_same_image():
    images = pd.DataFrame({"step": [0, 0, 1, 1], "sparsity": [0, 0, 0.5, 0.5], "image": ["test_00001", "test_00002"] * 2,
                           "flip": [0, 0, 1, 0]})
    interpret = pd.DataFrame({"step": [0, 1], "image": ["test_00001"] * 2, "rma_gradcam": [0.5, 0.2]})
    discover = pd.DataFrame({"step": [0, 1, 0, 1], "image": ["test_1", "test_1", "test_2", "test_2"],
                             "hit_lost": [1.0, 0.0, 1.0, 1.0]})
    joined = join_dimensions(images, {"interpret": interpret, "discover": discover},
                             {"interpret": ["rma_gradcam"], "discover": ["hit_lost"]})
    rows = joined[["step", "image", "interpret:rma_gradcam", "discover:hit_lost"]].values.tolist()
    assert rows[0] == [0, "test_00001", 0.5, 1.0] and rows[2] == [1, "test_00001", 0.2, 0.0]
    assert rows[1][:2] == [0, "test_00002"] and np.isnan(rows[1][2]) and rows[1][3] == 1.0  # RQ1 lacks image 2
    compare = compare_forgotten(joined, ["interpret:rma_gradcam", "discover:hit_lost"]).set_index("dimension")
    assert compare.loc["interpret:rma_gradcam", ["forgotten", "n_forgotten", "n_kept"]].tolist() == [0.2, 1, 0]
    assert compare.loc["discover:hit_lost", ["forgotten", "kept", "n_kept"]].tolist() == [0.0, 1.0, 1]


# ----------------------------------------------------------------------------- the stage
PARAMS = {"seeds": [0], "dataset": {"name": "shapes", "root": "x"}, "split": "test", "n_images": None,
          "correction": "holm", "alpha": 0.05, "batch_size": 8, "gallery_size": 4}


@pytest.mark.parametrize("change, message", [
    ({"seeds": []}, "seeds"), ({"seeds": [0, 0]}, "seeds"), ({"seeds": "0"}, "seeds"),
    ({"dataset": {"name": "nope", "root": "x"}}, "dataset"), ({"split": "eval"}, "split"),
    ({"n_images": 0}, "n_images"), ({"correction": "bonferroni"}, "correction"), ({"alpha": 1.5}, "alpha"),
    ({"batch_size": 0}, "batch_size")])
def test_bad_parameters_are_refused_before_any_compute(change, message):
    assert check_stage(PARAMS) == []
    with pytest.raises(ValueError, match=message):
        check_stage({**PARAMS, **change})


@pytest.mark.slow
def test_the_stage_predicts_every_seed_checkpoint_and_image_and_resumes(tiny_shapes, pruned_source, tmp_path,
                                                                          monkeypatch):
    from lib import analysis

    source = tmp_path / "lrr"  # the (arch, plan) folder, each seed's prune run in seed<k> (lib.pipeline's layout)
    source.mkdir()
    (source / "seed0").symlink_to(pruned_source("small_cnn", targets=(0.5, 0.8)))
    dataset = {"name": "shapes", "root": str(tiny_shapes)}
    done = forget(source, [0], dataset, n_images=20, batch_size=8, state_dir=tmp_path / "state", progress=False)
    assert len(done.predictions) == 3 * 20 and set(done.predictions["step"]) == {0, 1, 2}
    assert not done.population and done.images["pie"].isna().all()
    assert [r["step"] for r in done.rows] == [0, 1, 2] and done.rows[0]["flip_share"] == 0
    assert done.pictures.shape == (len(done.ids), 64, 64, 3) and done.pictures.dtype == np.uint8
    assert list(done.ids) == most_forgotten(done.images, 12)["image"].tolist()
    assert (tmp_path / "state" / "seed0").is_dir()
    data, ids, _ = load_images(dataset, "test", 5, "small_cnn")
    pictures = pictures_of(data, [0, 3], "small_cnn")  # the inputs back as the dataset's uint8 images
    assert np.abs(pictures.astype(int) - np.load(tiny_shapes / "test.npz")["images"][[0, 3]]).max() <= 1
    calls = []
    original = analysis.State.save
    monkeypatch.setattr(analysis.State, "save", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    again = forget(source, [0], dataset, n_images=20, batch_size=8, state_dir=tmp_path / "state", progress=False)
    assert calls == []  # every checkpoint came from the state
    pd.testing.assert_frame_equal(again.predictions, done.predictions)


def test_each_seed_reads_its_own_prune_run(pruned_cnn, tmp_path):
    assert seed_dir("data/prune/cnn/lrr", 1) == Path("data/prune/cnn/lrr/seed1")
    (tmp_path / "seed0").symlink_to(pruned_cnn)
    with pytest.raises(FileNotFoundError, match="seed1"):  # a seed whose prune run is missing is named
        forget(tmp_path, [0, 1], {"name": "shapes", "root": "x"}, progress=False)


def test_the_forget_package_has_the_analyses_files_and_runs_on_the_loop():
    from lib.pipeline import POPULATION_ANALYSES, STAGES

    assert POPULATION_ANALYSES == ("forget",) and STAGES["forget"].check == "lib.forget.run:check_stage"
    folder = Path(__file__).resolve().parents[1] / "lib" / "forget"
    assert {"methods.py", "metrics.py", "run.py", "plots.py"} <= {p.name for p in folder.glob("*.py")}
    assert "analysis.score_checkpoints(" in (folder / "run.py").read_text()
