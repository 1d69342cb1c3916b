"""RQ3 end to end on tiny inputs: sets prepared once, every checkpoint decided, rows and human summaries."""

import numpy as np
import pandas as pd
import pytest

from lib.align import metrics as am
from lib.align import run as ev
from lib.stage import check_parameters, load_params

NOTEBOOK = "notebooks/05_align.ipynb"


@pytest.fixture(scope="module")
def evaluation(tiny_shapes):
    return ev.prepare(tiny_shapes, datasets=["cue-conflict", "edge"],
                      distortions={"contrast": ["c100", "c10"], "colour": ["cr", "bw"], "eidolonIII": ["4-0-10"]},
                      n_images=8, n_split=12, eidolon_size=64, eidolon_fields=2, progress=False)


@pytest.fixture(scope="module")
def evaluated(evaluation, pruned_source):
    return ev.evaluate(pruned_source("small_cnn", targets=(0.5,)), evaluation, batch_size=16, progress=False)


def test_prepare_embedded(evaluation):
    assert evaluation.datasets == ["cue-conflict", "edge", "contrast", "colour", "eidolonIII"]
    assert [len(c.images) for c in evaluation.conditions] == [12, 12, 8, 8, 8, 8, 8]
    cue = evaluation.conditions[0].table
    assert (cue["category"] != cue["texture"]).all()  # the embedded cue-conflict split always conflicts
    assert not evaluation.imagenet16 and evaluation.humans is None


@pytest.mark.slow
def test_every_checkpoint_decides_every_image_once(evaluation, evaluated):
    records, trials = evaluated
    assert [r["step"] for r in records] == [0, 1]
    assert len(trials) == 2 * sum(len(c.images) for c in evaluation.conditions)
    assert set(trials["object_response"]) <= set(evaluation.categories)
    # greyscale at full contrast and the colour set's greyscale condition are the same images: same decisions
    grey = trials[(trials["dataset"] == "contrast") & (trials["condition"] == "c100")]["object_response"].to_numpy()
    bw = trials[(trials["dataset"] == "colour") & (trials["condition"] == "bw")]["object_response"].to_numpy()
    assert np.array_equal(grey, bw)


def test_checkpoint_rows(evaluated):
    records, trials = evaluated
    rows = am.checkpoint_rows(records, trials)
    dense, pruned = rows
    assert dense["ec_dense/edge"] == 1.0 and dense["sparsity"] == 0
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.01)
    expected = {"acc/cue-conflict", "acc/edge", "acc/contrast", "acc/contrast/c10", "shape_bias", "ood_acc"}
    assert expected <= set(dense)
    part = trials[(trials["step"] == 1) & (trials["dataset"] == "contrast") & (trials["condition"] == "c10")]
    # the dataset's value leaves out the benchmark's control condition (c100)
    assert pruned["acc/contrast"] == pytest.approx((part["object_response"] == part["category"]).mean())
    assert not any(k.startswith("ec/") for k in dense)  # no human observers for the embedded data
    table = am.per_image(trials)
    assert len(table) == len(trials) and set(table["correct"]) <= {0, 1}
    assert dense["ec_dense"] == 1.0 and -1 <= pruned["ec_dense"] <= 1  # kappa with the dense model


def test_the_mean_ood_score_over_trials_is_the_stage_ood_acc(evaluated):
    """The report resamples ``ood_score`` per trial: its mean must be the stage's own ``ood_acc``, the
    control conditions (contrast c100, colour cr) left out as there, whatever the conditions' sizes."""
    records, trials = evaluated
    rows = {r["step"]: r for r in am.checkpoint_rows(records, trials)}
    table = am.per_image(trials)
    assert table.loc[table["condition"].isin(["c100", "cr"]), "ood_score"].isna().all()
    for step, part in table.groupby("step"):
        assert part["ood_score"].mean() == pytest.approx(rows[step]["ood_acc"])
    every = {r["step"]: r for r in am.checkpoint_rows(records, trials, accuracy_over="all_images")}
    for step, part in am.per_image(trials, "all_images").groupby("step"):  # Study A's aggregation: every image
        assert part["ood_score"].notna().all() and part["ood_score"].mean() == pytest.approx(every[step]["ood_acc"])
    assert table.groupby("step")["trial"].apply(lambda t: t.is_unique).all()


def test_aggregate_leaves_out_the_benchmarks_excluded_conditions():
    assert am.aggregate("contrast", {"c100": 1.0, "c10": 0.5, "c05": 0.3}) == pytest.approx(0.4)
    assert am.aggregate("edge", {"0": 0.3}) == 0.3
    assert np.isnan(am.aggregate("colour", {"cr": 1.0}))  # only the control was run


def test_rows_against_human_observers():
    """A fabricated two-observer experiment where every number is known."""
    ids = ["a", "b", "c", "d"]
    frame = lambda subj, responses, **kw: pd.DataFrame({  # noqa: E731
        "subj": subj, "image_id": ids, "category": ["cat", "cat", "dog", "dog"], "texture": ["dog", "dog", "cat", "cat"],
        "object_response": responses, "condition": "0", "dataset": "cue-conflict", **kw})
    humans = pd.concat([frame("subject-01", ["cat", "cat", "dog", "cat"]), frame("subject-02", ["cat", "dog", "dog", "cat"])])
    model = frame("step_00", ["cat", "cat", "dog", "cat"], step=0, sparsity=0.0)
    row, = am.checkpoint_rows([{"step": 0, "sparsity": 0.0}], model, humans)
    assert row["acc/cue-conflict"] == 0.75 and row["shape_bias"] == 0.75
    # identical to subject-01 (kappa 1); with subject-02: observed 3/4, expected .75*.5+.25*.5 = .5 -> kappa .5
    assert row["ec/cue-conflict"] == pytest.approx((1.0 + 0.5) / 2)
    assert row["obs_cons/cue-conflict"] == pytest.approx((1.0 + 0.75) / 2)
    assert row["acc_diff/cue-conflict"] == pytest.approx((0 + 0.25 ** 2) / 2)
    summary = am.human_summary(humans)["cue-conflict"]
    assert summary["shape_bias"] == pytest.approx(5 / 8)  # pooled: 3 + 2 shape, 1 + 2 texture decisions
    assert summary["error_consistency"] == pytest.approx(0.5)
    assert summary["accuracy_min"] == 0.5 and summary["accuracy_max"] == 0.75


def test_the_observer_trials_written_are_those_behind_ec_humans(tmp_path):
    """Matched by dataset, condition and image with the model's trials; the benchmark's excluded conditions (contrast
    c100) and images the model did not decide left out; no file without observers, and an earlier one removed."""
    def table(dataset, condition, ids, **columns):
        return pd.DataFrame({"dataset": dataset, "condition": condition, "image_id": ids, "category": "cat",
                             "object_response": "cat", **columns})

    model = pd.concat([table("contrast", "c100", ["a", "b"]), table("contrast", "c10", ["a", "b"]),
                       table("edge", "0", ["a"])], ignore_index=True).assign(step=0, sparsity=0.0, subj="step_00")
    humans = pd.concat([table("contrast", "c100", ["a", "b"]), table("contrast", "c10", ["a", "b", "c"]),
                        table("edge", "0", ["a", "b"]), table("silhouette", "0", ["a"])],
                       ignore_index=True).assign(subj="subject-01", rt=0.5)
    path = ev.save_observer_trials(tmp_path, humans, model)
    assert path == tmp_path / am.HUMAN_TRIALS
    written = pd.read_csv(path, dtype=str)
    assert list(written.columns) == list(am.HUMAN_TRIAL_COLUMNS)
    assert am.trial_key(written).tolist() == ["contrast/c10/a", "contrast/c10/b", "edge/0/a"]
    assert set(am.trial_key(written)) <= set(am.per_image(model)["trial"])  # the report's key of a model's trial
    assert ev.save_observer_trials(tmp_path, None, model) is None and not path.exists()
    assert am.observer_trials(humans[humans["dataset"] == "silhouette"], model) is None  # nothing matches


def test_bad_inputs_fail_before_compute(tiny_shapes):
    with pytest.raises(ValueError, match="c100"):
        ev.prepare(tiny_shapes, distortions={"contrast": ["c7"]}, n_images=4, progress=False)
    with pytest.raises(ValueError, match="evaluation splits"):
        ev.prepare(tiny_shapes, datasets=["sketch"], progress=False)
    with pytest.raises(ValueError, match="embedded default"):
        ev.prepare(mvh_root="../shared/data/model-vs-human", distortions={"contrast": ["c10"]}, progress=False)
    with pytest.raises(FileNotFoundError, match="download"):
        ev.prepare(mvh_root=tiny_shapes, datasets=["edge"], progress=False)


@pytest.mark.slow
def test_model_and_evaluation_set_must_agree(evaluation, pruned_source):
    with pytest.raises(ValueError, match="16-class|classes"):
        ev.evaluate(pruned_source("small_cnn", targets=(0.5,), num_classes=7), evaluation, progress=False)


def test_16_class_decisions_of_an_imagenet_model_on_real_stimuli(shared_data, pruned_source):
    """EfficientNet-Lite0 (ImageNet weights, its own normalisation) recognises the undistorted silhouettes well above chance."""
    evaluation = ev.prepare(mvh_root=shared_data / "model-vs-human", datasets=["silhouette"], progress=False)
    evaluation.conditions[0].images = evaluation.conditions[0].images[::8]  # 20 of the 160 images
    evaluation.conditions[0].table = evaluation.conditions[0].table.iloc[::8].reset_index(drop=True)
    source = pruned_source("efficientnet_lite0", targets=(0.1,), num_classes=1000, model_kwargs={"pretrained": True})
    records, trials = ev.evaluate(source, evaluation, batch_size=20, progress=False)
    assert set(trials["object_response"]) <= set(evaluation.categories)
    assert (trials["object_response"] == trials["category"]).mean() > 0.3  # chance: 1/16


def test_params_and_preset_are_known_to_the_notebook():
    check_parameters(NOTEBOOK, load_params(["align"]))
    parameters = load_params(["align"], "presets/lite0.params.yaml")  # the real-data study
    check_parameters(NOTEBOOK, parameters)
    assert parameters["accuracy_over"] == "ood_conditions"  # Study A's aggregation is in every row beside it


def test_figures_render_with_and_without_humans(evaluation, evaluated):
    import matplotlib

    matplotlib.use("Agg")
    from lib.align import plots

    records, trials = evaluated
    frame = pd.DataFrame(am.checkpoint_rows(records, trials)).assign(arch="cnn", plan="lrr")
    humans = {"edge": {"accuracy": 0.9, "accuracy_min": 0.6, "accuracy_max": 0.95},
              "cue-conflict": {"shape_bias": 0.96, "shape_bias_min": 0.92, "shape_bias_max": 0.99}}
    figures = [plots.plot_metric_per_dataset(frame, "acc", evaluation.datasets, humans, "accuracy", chance=0.1),
               plots.plot_shape_bias(frame, humans), plots.plot_error_consistency(frame, evaluation.datasets),
               plots.plot_distortion_curves(trials, plots.distortion_levels({"contrast": ["c10", "c100"]})),
               plots.plot_examples(evaluation)]
    assert all(len(f.axes) for f in figures)
    # nothing to draw: no figure (no placeholder image saying so)
    assert plots.plot_shape_bias(frame.drop(columns="shape_bias")) is None
    assert plots.plot_distortion_curves(trials, {}) is None
    assert "dense model" in figures[2]._suptitle.get_text()  # no humans: says so
    assert plots.distortion_levels({"contrast": ["c10", "c100"]}) == {"contrast": ["c100", "c10"]}  # benchmark order
