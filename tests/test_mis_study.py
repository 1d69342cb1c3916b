"""Study B's MIS analyses: the checkpoint loop, controls, rank correlations, and the stage's parameters."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import spearmanr

from lib.data.image_pool import load_pool
from lib.mis import TaskConfig, create_backend
from lib.mis import metrics as mis_metrics
from lib.mis import run as mis_run
from lib.models import create_model
from lib.stage import check_parameters, notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_mis.ipynb"


@pytest.fixture(scope="module")
def scored(tiny_shapes, tmp_path_factory, pruned_source):
    pool = load_pool({"split": "test"}, tiny_shapes)
    backends = [create_backend({"name": "pixel", "image_size": 16}), create_backend({"name": "pixel", "image_size": 8})]
    backends[1].name = "pixel8"  # a second backend under another name
    scorers = mis_run.build_scorers(pool, backends, tmp_path_factory.mktemp("emb"), TaskConfig(6, 2, 2, 3), alpha=8.0,
                                  progress=False)
    source = pruned_source("small_cnn", targets=(0.6,))
    run, control = mis_run.score_checkpoints(source, pool, scorers, controls={"random_init": True, "collapse_sparsity": 0.95},
                                           progress=False)
    return pool, run, control


def test_one_row_per_checkpoint_with_model_level_values(scored):
    pool, run, control = scored
    rows = run.checkpoints
    assert rows["step"].tolist() == [0, 1] and rows["sparsity"].iloc[1] == pytest.approx(0.6, abs=0.01)
    for column in ("mis", "mis_p05", "mis_p95", "solved", "mis_logits", "mis_softmax", "mis_pixel8", "pool_acc"):
        assert rows[column].notna().all(), column
    assert (rows["mis_p05"] <= rows["mis"]).all() and (rows["mis"] <= rows["mis_p95"]).all()
    assert rows["units"].tolist() == [16 + 32 + 64 + 128] * 2
    hidden = run.units[(run.units.step == 0) & (run.units.backend == "pixel") & ~run.units.layer.isin(["logits", "softmax"])]
    assert rows["mis"].iloc[0] == pytest.approx(hidden["mis"].mean())
    assert set(run.layers["layer"]) == {"features.0", "features.2", "features.4", "features.6", "logits", "softmax"}
    assert len(run.examples) == 2


def test_class_table_matches_the_pool(scored):
    pool, run, _ = scored
    classes = run.classes[(run.classes.step == 0) & (run.classes.backend == "pixel")]
    assert sorted(classes["class"]) == sorted(set(pool.labels.tolist()))
    assert classes["images"].sum() == len(pool)
    accuracy = (classes["accuracy"] * classes["images"]).sum() / len(pool)
    assert accuracy == pytest.approx(run.checkpoints["pool_acc"].iloc[0])
    correlations = mis_metrics.class_table_correlations(run.classes)
    assert set(correlations["layer"]) == {"logits", "softmax"} and len(correlations) == 2 * 2 * 2


def test_controls_are_scored_like_checkpoints(scored):
    _, _, control = scored
    assert control.checkpoints["control"].tolist() == ["random_init", "collapse"]
    assert control.checkpoints["sparsity"].iloc[1] == pytest.approx(0.95, abs=0.01)
    assert control.checkpoints["mis"].notna().all()


def test_reinitialised_model_is_a_fresh_copy():
    torch.manual_seed(0)
    model = create_model("small_vit", num_classes=3, img_size=32, embed_dim=24, depth=1, num_heads=2)
    with torch.no_grad():
        model.pos_embed.fill_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = mis_run.reinitialised(model, seed=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    assert not torch.equal(fresh.head.weight, model.head.weight)
    assert fresh.pos_embed.std() < 0.1  # loose parameters redrawn too
    assert torch.equal(mis_run.reinitialised(model, seed=1).head.weight, fresh.head.weight)


def test_rank_correlation_is_spearman_with_missing_values_dropped():
    x, y = [0, 0.2, 0.4, 0.6, 0.8], [0.5, 0.52, 0.51, 0.6, 0.7]
    expected = spearmanr(x, y)
    result = mis_metrics.rank_correlation(x, y)
    assert result["rho"] == pytest.approx(expected.statistic) and result["p"] == pytest.approx(expected.pvalue)
    assert mis_metrics.rank_correlation(x + [0.9], y + [np.nan])["n"] == 5
    assert np.isnan(mis_metrics.rank_correlation(x, [0.5] * 5)["rho"])


def test_unknown_control_is_rejected(tiny_shapes, pruned_source):
    source = pruned_source("small_cnn", targets=(0.6,))
    with pytest.raises(ValueError, match="unknown control"):
        mis_run.score_checkpoints(source, None, {}, controls={"retrain": True})
    with pytest.raises(ValueError, match="collapse_sparsity"):
        mis_run.score_checkpoints(source, None, {}, controls={"collapse_sparsity": 1.5})


def test_stage_and_preset_parameters_are_known_to_the_notebook():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    check_parameters(NOTEBOOK, {**params["mis"], "arch": "cnn", "plan": "lrr", "data_dir": "d", "source": "p",
                                "embeddings_dir": "e"})
    parameters = yaml.safe_load((ROOT / "presets" / "lite0.params.yaml").read_text())["mis"]  # the real-data study
    check_parameters(NOTEBOOK, {**parameters, "arch": "lite0", "plan": "oneshot", "source": "p", "embeddings_dir": "e"})
    for tasks in (notebook_parameters(NOTEBOOK)["tasks"], params["mis"]["tasks"], parameters["tasks"]):
        TaskConfig.from_dict(tasks)  # valid counts everywhere


def test_the_reports_mis_items_average_to_the_stages_own_mis(scored, tmp_path):
    """The report resamples MIS per unit: per checkpoint, the mean of its items must be the stage's ``mis``
    (hidden units of the first backend, the output layers and the controls' units left out)."""
    from lib.report import item_table

    _, run, control = scored
    mis_run.save_tables(tmp_path, run, control)
    items = item_table("mis", tmp_path / "per_unit.csv")
    assert not items["layer"].isin(["logits", "softmax"]).any() and items["control"].isna().all()
    means = items.groupby("step")["mis"].mean()
    for row in run.checkpoints.to_dict("records"):
        assert means[row["step"]] == pytest.approx(row["mis"])
