"""Seeds and controls (issue #28): one network per seed, the dense-retrained and random-initialisation controls,
and the parameter checks that refuse an empty matrix or a bad control before any compute."""

import copy

import pytest
import torch
import yaml

from lib import storage
from lib.models import create_model, load_checkpoint
from lib.pipeline import check_matrix, output_dir, summary_path
from lib.prune.runs import check_controls, run_pruning, save_results
from lib.results import list_checkpoints, source_lineage
from lib.train import Recipe, seed_everything, train_classifier, with_seed

KWARGS = {"widths": [4, 8], "convs": [1, 1]}
RECIPE = {"epochs": 1, "batch_size": 32, "lr": 0.05, "augment": ["flip"]}
LRR = {"schedule": "lrr", "rate": 0.5, "threshold": 0.7}


def weights(path):
    return storage.load_torch(path)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(root, data, seed):
    out = root / f"train/seed{seed}"
    train_classifier("small_cnn", data, Recipe.from_dict(with_seed(RECIPE, seed, "recipe")), out,
                     model_kwargs=KWARGS, arch="cnn", progress=False)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_shapes):
    root = tmp_path_factory.mktemp("seeds")
    return {seed: train(root, tiny_shapes, seed) for seed in (0, 1)}


def test_two_seeds_train_two_networks_and_a_rerun_of_one_seed_is_bit_identical(trained, tiny_shapes, tmp_path):
    assert not same(weights(trained[0] / "model.pt"), weights(trained[1] / "model.pt"))
    again = train(tmp_path, tiny_shapes, 1)
    assert same(weights(trained[1] / "model.pt"), weights(again / "model.pt"))


def test_a_recipe_or_plan_with_its_own_other_seed_is_refused():
    assert with_seed({"epochs": 1}, 2, "recipe") == {"epochs": 1, "seed": 2}
    assert with_seed({"seed": 2}, 2, "recipe") == {"seed": 2}
    with pytest.raises(ValueError, match=r"recipe.seed is 0 but the run's seed is 1.*remove recipe.seed"):
        with_seed({"seed": 0}, 1, "recipe")


def test_random_selection_draws_differ_between_seeds():
    from lib.prune import PruningPlan
    from lib.prune.masks import current_masks

    model = create_model("small_cnn", 10, **KWARGS)

    def mask(seed):
        pruned = copy.deepcopy(model)
        plan = PruningPlan(schedule="oneshot", targets=(0.5,), selection="random", seed=seed)
        plan.pruner_for(1).prune(pruned, plan.prunable(pruned, "small_cnn"), 0.5, torch.zeros(2, 3, 64, 64))
        return torch.cat([m.flatten() for m in current_masks(pruned).values()])

    assert torch.equal(mask(0), mask(0)) and not torch.equal(mask(0), mask(1))


@pytest.fixture(scope="module")
def runs(trained, tiny_shapes, tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    out = {}
    for name, control in (("lrr", None), ("lrr_retrained", "retrained"), ("random_init", "random_init")):
        out[name] = root / name
        results = run_pruning("cnn", name, str(trained[1]), LRR, RECIPE, str(out[name]), str(tiny_shapes),
                              progress=False, seed=1, control=control, control_of="lrr" if control == "retrained" else None)
        save_results(out[name], results, "cnn", name)
    return out


@pytest.mark.slow
def test_the_retrained_control_prunes_nothing_and_retrains_like_its_round(runs, trained, tiny_shapes, tmp_path):
    pruned, control = list_checkpoints(runs["lrr"]), list_checkpoints(runs["lrr_retrained"])
    assert [r["step"] for r in control] == [r["step"] for r in pruned] == [0, 1, 2]
    assert [r["sparsity"] for r in control] == [0.0, 0.0, 0.0] and pruned[-1]["sparsity"] > 0.7
    assert [r["retrain_epochs"] for r in control] == [r["retrain_epochs"] for r in pruned] == [0, 1, 2]
    assert [r["parent"] for r in control] == [r["parent"] for r in pruned]
    # step 1 is the dense model given exactly one round of the pruned run's retraining (recipe and seed)
    from lib.data.datasets import shapes_data
    from lib.models import get_spec
    from lib.prune.masks import fold_masks
    from lib.train import fit

    model, _ = load_checkpoint(trained[1] / "model.pt")
    spec = get_spec("small_cnn")
    data = shapes_data(tiny_shapes, spec.mean, spec.std)
    model.to(memory_format=torch.channels_last)
    fit(model, data["train"], data["val"], Recipe.from_dict({**RECIPE, "seed": 1}), tmp_path / "state",
        image_size=data["image_size"], progress=False)
    fold_masks(model)
    model.to(memory_format=torch.contiguous_format)
    expected = {k: v.detach() for k, v in model.state_dict().items()}
    assert same(expected, weights(control[1]["path"]))
    assert not same(weights(control[0]["path"]), weights(control[1]["path"]))


def test_a_oneshot_control_retrains_the_dense_model_once_for_every_step(trained, tiny_shapes, tmp_path):
    oneshot = {"schedule": "oneshot", "targets": [0.3, 0.6]}
    run_pruning("cnn", "c", str(trained[0]), oneshot, RECIPE, str(tmp_path), str(tiny_shapes), progress=False,
                control="retrained", control_of="oneshot")
    records = list_checkpoints(tmp_path)
    assert [(r["parent"], r["sparsity"], r["retrain_epochs"]) for r in records] == [(None, 0, 0), (0, 0, 1), (0, 0, 1)]
    assert same(weights(records[1]["path"]), weights(records[2]["path"]))
    assert records[1]["test_acc"] == records[2]["test_acc"]


def test_random_init_is_the_seeds_fresh_initialisation(runs, trained):
    records = list_checkpoints(runs["random_init"])
    assert [(r["step"], r["sparsity"], r["retrain_epochs"]) for r in records] == [(0, 0.0, 0)]
    seed_everything(1)
    expected = create_model("small_cnn", 10, **KWARGS).state_dict()
    assert same(expected, weights(records[0]["path"]))
    assert not same(weights(records[0]["path"]), weights(trained[1] / "model.pt"))
    seed_everything(0)
    assert not same(create_model("small_cnn", 10, **KWARGS).state_dict(), weights(records[0]["path"]))


def test_every_plans_checkpoints_are_hashed_so_analyses_can_verify_them(runs):
    """The controls' manifests too: an analysis refuses a checkpoint its manifest does not hash (lib.checkpoints)."""
    from lib.checkpoints import validate_source

    for name in ("lrr", "lrr_retrained", "random_init"):
        validate_source(runs[name], arch="cnn")
        assert all(len(r["sha256"]) == 64 for r in list_checkpoints(runs[name]))


def test_prune_metrics_and_manifest_name_the_seed_and_the_control(runs):
    expected = {"lrr": (None, None), "lrr_retrained": ("retrained", "lrr"), "random_init": ("random_init", None)}
    for name, (control, of) in expected.items():
        metrics = storage.load_json(runs[name] / "metrics.json")
        assert (metrics["seed"], metrics["control"], metrics["control_of"]) == (1, control, of)
        assert source_lineage(runs[name]) == {"seed": 1, "control": control, "control_of": of}


def test_a_prune_run_refuses_another_seeds_network(trained, tiny_shapes, tmp_path):
    with pytest.raises(ValueError, match=r"seed 0, but this run's seed is 1; point train_dir at data/train/cnn/seed1"):
        run_pruning("cnn", "lrr", str(trained[0]), LRR, RECIPE, str(tmp_path), str(tiny_shapes), progress=False, seed=1)


def test_layout_of_the_matrix_items():
    assert str(output_dir("train", "cnn", seed=2)) == "data/train/cnn/seed2"
    assert str(output_dir("prune", "cnn", "lrr", 0)) == "data/prune/cnn/lrr/seed0"
    assert str(output_dir("interpret_variant", "vit", "lrr", 1, "red")) == "data/interpret_variant/vit/lrr/seed1/red"
    assert str(summary_path("mis", "cnn", "lrr", 3)) == "metrics/mis/cnn-lrr-seed3.json"
    assert str(summary_path("train", "cnn", seed=0)) == "metrics/train/cnn-seed0.json"


# ----------------------------------------------------------------------------- parameter checks
def default_params():
    from pathlib import Path

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_the_default_declares_one_seed_and_both_controls():
    params = default_params()
    check_matrix(params)
    check_controls(params)
    assert params["seeds"] == [0]
    prune = params["prune"]
    assert prune["lrr_retrained"] == {"plan": prune["lrr"]["plan"], "control": "retrained", "control_of": "lrr"}
    assert prune["random_init"] == {"control": "random_init"}
    assert {"lrr", "lrr_retrained", "random_init"} <= set(params["plans"])


@pytest.mark.parametrize("key", ["archs", "plans", "seeds"])
def test_an_empty_matrix_is_refused(key):
    params = {**default_params(), key: []}
    with pytest.raises(ValueError, match=rf"`{key}` must be a non-empty list"):
        check_matrix(params)


@pytest.mark.parametrize("change, message", [
    ({"seeds": [0, 0]}, "lists \\['0'\\] more than once"),
    ({"seeds": [-1]}, "non-negative integers"),
    ({"seeds": ["1"]}, "non-negative integers"),
    ({"plans": ["lrr", "nope"]}, "lists \\['nope'\\], which `prune` does not define"),
    ({"archs": ["cnn", "resnet"]}, "which `models` does not define"),
])
def test_a_bad_matrix_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        check_matrix({**default_params(), **change})


@pytest.mark.parametrize("entry, plans, message", [
    ({"plan": {"schedule": "lrr"}, "control": "retrained", "control_of": "gone"}, None,
     "control_of names 'gone', which is no plan of `prune:`"),
    ({"plan": {"schedule": "lrr", "rate": 0.2}, "control": "retrained", "control_of": "lrr"}, None,
     "plan differs from prune.lrr.plan"),
    ({"control": "retrained"}, None, "control: retrained needs control_of"),
    ({"control": "dense"}, None, "unknown control 'dense'"),
    ({"control": "random_init", "plan": {"schedule": "lrr"}}, None, "a random_init control prunes nothing"),
    ({"control": "random_init", "control_of": "lrr"}, None, "random_init is the control of no plan"),
    ({"control_of": "lrr"}, None, "control_of 'lrr' is given without control"),
    (None, ["lrr_retrained"], "lists lrr_retrained, the control of lrr, without lrr"),
])
def test_a_bad_control_is_refused_naming_the_parameter_and_fix(entry, plans, message):
    params = default_params()
    if entry is not None:
        params["prune"]["bad"] = entry
    if plans is not None:
        params["plans"] = plans
    with pytest.raises(ValueError, match=message):
        check_controls(params)


def test_the_params_check_refuses_an_empty_plan_list_before_dvc(tmp_path):
    from lib.experiment import PresetError, check_plans

    with pytest.raises(PresetError, match="`plans` must be a non-empty list"):
        check_plans({**default_params(), "plans": []}, "params.yaml")


def test_a_retrained_control_without_retraining_is_refused_by_the_stage_check(tiny_shapes):
    from lib.prune.runs import check_stage
    from lib.stage import notebook_parameters

    p = {**notebook_parameters("notebooks/02_prune.ipynb"), "control": "retrained", "control_of": "lrr",
         "recipe": {**RECIPE, "epochs": 0}}
    with pytest.raises(ValueError, match="retrains nothing"):
        check_stage(p)
    assert check_stage({**p, "recipe": RECIPE}) is not None
