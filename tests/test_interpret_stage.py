"""The RQ1 checkpoint loop, its input checks, and the parameters of its stage and preset."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from lib.interpret import score_checkpoints
from lib.data.masks import load_ground_truth
from lib.stage import check_parameters, load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_interpret.ipynb"
FAST = {"ig_smoothgrad": {"steps": 3, "samples": 1}}


@pytest.fixture(scope="module")
def source(pruned_source):
    """small_cnn with random weights, dense and pruned one-shot to 50% (notebook 02's checkpoints)."""
    return pruned_source("small_cnn", targets=(0.5,))


@pytest.mark.slow
def test_scores_every_checkpoint_and_image(tiny_shapes, source):
    data = load_ground_truth("shapes", tiny_shapes, limit=4)
    scores = score_checkpoints(source, data, attribution_options=FAST, tolerance=2, perturbation_steps=4,
                               blur_sigma=1.0, batch_size=3, gallery_size=2, progress=False)
    assert [r["step"] for r in scores.rows] == [0, 1]
    assert scores.rows[1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert scores.attributions == ["gradcam", "guided_gradcam", "ig_smoothgrad", "saliency"]
    for metric in ("rma", "rra", "pointing", "gini", "deletion", "insertion"):
        for attribution in scores.attributions:
            values = scores.per_image[f"{metric}_{attribution}"]
            assert values.between(0, 1).all()
            assert scores.rows[0][f"{metric}_{attribution}"] == pytest.approx(values[:4].mean())
    assert len(scores.per_image) == 8 and set(scores.per_image["step"]) == {0, 1}
    share = data["masks"].reshape(4, -1).mean(1).mean()
    assert scores.baseline["uniform_rma"] == pytest.approx(share)
    assert scores.gallery["maps"][1]["gradcam"].shape == (2, 64, 64)
    assert scores.rows[0]["scored_acc"] == pytest.approx(scores.per_image["correct"][:4].mean())


def test_a_finished_run_is_kept_and_reused_only_with_the_same_settings(tiny_shapes, tmp_path, monkeypatch, source):
    from lib.interpret import run

    data = load_ground_truth("shapes", tiny_shapes, limit=2)
    options = dict(attributions=["gradcam", "saliency"], perturbation_steps=2, progress=False)
    first = score_checkpoints(source, data, state_dir=tmp_path, **options)
    assert sorted(p.name.split(".")[0] for p in tmp_path.iterdir()) == ["step_00", "step_01"]

    def no_compute(*args, **kwargs):
        raise AssertionError("a finished checkpoint was recomputed")

    monkeypatch.setattr(run, "score_model", no_compute)
    again = score_checkpoints(source, data, state_dir=tmp_path, **options)
    assert again.rows == first.rows and again.per_image.equals(first.per_image)
    with pytest.raises(AssertionError, match="recomputed"):  # other settings: the state does not apply
        score_checkpoints(source, data, state_dir=tmp_path, tolerance=3, **options)


def test_bad_input_fails_before_any_compute(tiny_shapes, tmp_path, source):
    data = load_ground_truth("shapes", tiny_shapes, limit=2)
    with pytest.raises(ValueError, match="unknown attribution"):
        score_checkpoints(source, data, attributions=["gradcam", "lime"], progress=False)
    with pytest.raises(FileNotFoundError, match="prune stage"):
        score_checkpoints(tmp_path, data, progress=False)
    empty = {**data, "masks": np.zeros_like(data["masks"])}
    with pytest.raises(ValueError, match="empty ground-truth"):
        score_checkpoints(source, empty, progress=False)
    with pytest.raises(ValueError, match="attention blocks"):
        score_checkpoints(source, data, attributions=["attention"], progress=False)


def test_stage_and_preset_parameters_are_the_notebooks():
    params = load_params(["interpret"], ROOT / "params.yaml")
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["interpret"]
    words = stage["cmd"].split("--set", 1)[1].split()
    sets = dict(w.split("=", 1) for w in words[:next((i for i, w in enumerate(words) if w.startswith("--")), None)])
    check_parameters(NOTEBOOK, {**params, **sets, "out_dir": "x"})
    lite0 = ROOT / "presets" / "lite0.params.yaml"  # the real-data study: both mask modes
    for variant in ([], ["variants.interpret.red_channel"]):
        preset = load_params(["interpret", *variant], lite0)
        check_parameters(NOTEBOOK, {**preset, **sets, "out_dir": "x"})
        assert preset["mask"] == ("red_channel" if variant else "foreground") and preset["dataset"] == "coco"
        assert preset["ig_smoothgrad"]["steps"] == 50 and preset["ig_smoothgrad"]["samples"] == 2  # Study A
    study_a = load_params(["interpret"], ROOT / "presets" / "study_a.params.yaml")
    assert study_a["ig_smoothgrad"]["steps"] == 50 and study_a["ig_smoothgrad"]["samples"] == 2
    assert study_a.get("metrics") is None  # every score; the embedded default spends its budget on images
    assert params["n_images"] >= 40 and set(params["metrics"]) >= {"rma", "rra"}


def test_metrics_subset_skips_the_others_and_changes_nothing(tiny_shapes, pruned_source):
    data = load_ground_truth("shapes", tiny_shapes, limit=3)
    source = pruned_source("small_cnn", targets=(0.5,))
    options = dict(attributions=["gradcam", "saliency"], tolerance=2, perturbation_steps=4, batch_size=3, progress=False)
    full = score_checkpoints(source, data, **options)
    cheap = score_checkpoints(source, data, metrics=["rma", "rra"], **options)
    columns = [c for c in cheap.per_image.columns if c.split("_")[0] in ("rma", "rra", "pointing", "gini",
                                                                          "deletion", "insertion")]
    assert sorted(columns) == ["rma_gradcam", "rma_saliency", "rra_gradcam", "rra_saliency"]
    for column in columns:
        assert np.allclose(cheap.per_image[column], full.per_image[column])
    assert set(cheap.baseline) == {"uniform_rma", "uniform_rra"}
    with pytest.raises(ValueError, match="metric"):
        score_checkpoints(source, data, metrics=["accuracy"], **options)
