import pytest
import torch

from lib.models import create_model, load_checkpoint, save_checkpoint
from lib.prune import (PruningPlan, apply_masks, current_masks, fold_masks, prunable_parameters, prune_step,
                       sparsity_report)


def _zeros(params):
    return sum(int((m.weight == 0).sum()) for _, m in params), sum(m.weight.numel() for _, m in params)


@pytest.mark.parametrize("name,classifier", [("small_cnn", "fc"), ("small_vit", "head")])
def test_global_step_removes_exactly_the_share_of_the_remaining_eligible_weights(name, classifier):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    params = prunable_parameters(model, exclude=(classifier,))
    head = dict(model.named_modules())[classifier].weight.detach().clone()
    original = {p.key: p.weight.detach().clone() for p in params}
    prune_step(model, params, 0.2)
    zeros, total = _zeros(params)
    assert zeros == round(0.2 * total)
    prune_step(model, params, 0.2)  # 20% of the *remaining* weights: sparsity 1 - 0.8^2
    zeros, total = _zeros(params)
    assert abs(zeros - (total - round(0.8 * round(0.8 * total)))) <= 1
    assert torch.equal(dict(model.named_modules())[classifier].weight, head)  # the excluded classifier is untouched
    # global magnitude: every surviving weight is at least as large as every removed one
    masks = current_masks(model)
    alive = torch.cat([original[k][masks[k]].abs().flatten() for k in original])
    dead = torch.cat([original[k][~masks[k]].abs().flatten() for k in original])
    assert alive.min() >= dead.max()


def test_masks_survive_saving_and_keep_weights_zero_during_retraining(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10)
    params = prunable_parameters(model, exclude=("fc",))
    prune_step(model, params, 0.5)
    masks = current_masks(model)
    fold_masks(model)
    save_checkpoint(tmp_path / "p.pt", model, "small_cnn", 10, masks=masks)
    loaded, info = load_checkpoint(tmp_path / "p.pt")
    assert info["masks"].keys() == masks.keys()
    assert all(torch.equal(info["masks"][k], masks[k]) for k in masks)
    apply_masks(loaded, info["masks"])
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.5)
    loaded.train()
    for _ in range(2):
        optimizer.zero_grad()
        loaded(torch.randn(4, 3, 64, 64)).sum().backward()
        optimizer.step()
    fold_masks(loaded)
    for key, mask in masks.items():
        weight = dict(loaded.named_parameters())[key]
        assert (weight[~mask] == 0).all() and (weight[mask] != 0).any()


def test_sparsity_report_counts_per_layer_and_in_total():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1, bias=False), torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1))
        model[2].weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 3.0]]))
        model[2].bias.zero_()
    report = sparsity_report(model, prunable_parameters(model))
    assert report["per_layer"]["0"] == {"params": 2, "zeros": 1, "sparsity": 0.5}
    assert report["per_layer"]["2"]["zeros"] == 3
    assert report["sparsity"] == pytest.approx(4 / 6)
    assert (report["params"], report["zeros"]) == (8, 6)


def test_lrr_plan_follows_study_a():
    plan = PruningPlan(schedule="lrr", rate=0.2, threshold=0.95)
    sparsities = [s for s, _ in plan.sparsities()]
    assert len(sparsities) == 14 and sparsities[0] == pytest.approx(0.2)
    assert all(s == pytest.approx(1 - 0.8 ** (i + 1)) for i, s in enumerate(sparsities))
    assert sparsities[-1] >= 0.95 > sparsities[-2]
    assert [p for _, p in plan.sparsities()] == list(range(14))  # each round continues from the previous one


def test_oneshot_and_iterative_plans():
    assert PruningPlan(schedule="oneshot", targets=(0.8, 0.5)).sparsities() == [(0.5, 0), (0.8, 0)]
    steps = PruningPlan(schedule="iterative", targets=(0.6, 0.9), steps=3).sparsities()
    assert [round(s, 6) for s, _ in steps] == [0.2, 0.4, 0.6, 0.9] and [p for _, p in steps] == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs,match", [({"threshold": 1.0}, "threshold"), ({"rate": 0}, "rate"),
                                          ({"schedule": "magic"}, "schedule"),
                                          ({"schedule": "oneshot", "targets": (1.2,)}, "target"),
                                          ({"schedule": "oneshot"}, "target"),
                                          # lrr's rate and threshold have no default of their own (params.yaml's)
                                          ({"threshold": 0.5}, "lrr needs rate"), ({"rate": 0.5}, "lrr needs threshold")])
def test_bad_plans_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningPlan(**kwargs)


def test_unknown_plan_fields_are_refused():
    with pytest.raises(ValueError, match="unknown pruning parameter"):
        PruningPlan.from_dict({"rate": 0.2, "treshold": 0.9})


def test_notebook_02_runs_params_yaml_lrr_plan_and_says_what_it_does():
    """One default per value: notebook 02's plan is params.yaml's prune.lrr.plan, and its markdown's description of
    the schedule (rate a round, rounds, final sparsity) is what that plan runs."""
    from pathlib import Path

    import yaml

    from lib.stage import notebook_parameters

    root = Path(__file__).resolve().parents[1]
    plan = yaml.safe_load((root / "params.yaml").read_text())["prune"]["lrr"]["plan"]
    assert notebook_parameters(root / "notebooks/02_prune.ipynb")["plan"] == plan
    targets = [s for s, _ in PruningPlan.from_dict(plan).sparsities()]
    markdown = " ".join((root / "notebooks/02_prune.py").read_text().replace("\n# ", " ").split())
    assert f"removes {plan['rate']:.0%} a round, {len(targets)} rounds to {targets[-1]:.1%}" in markdown
