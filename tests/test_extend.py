"""Extending the pipeline: one registration per kind (model, pruner, attribution, dataset), each
then run through its stage's library entry point on smoke data. The "Extend it" section of docs/pipeline.md quotes these
registrations, so they are the code a user writes.

Every test undoes its registration (the ``registries`` fixture), so other tests see the registries unchanged.
"""

import re
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import storage
from lib.interpret import methods as attributions
from lib.data import datasets
from lib.models import registry
from lib.prune import methods as pruners


@pytest.fixture
def registries():
    """Each registry as it was before the test, put back after it."""
    saved = [(r, dict(r)) for r in (registry._REGISTRY, pruners.PRUNERS, attributions.ATTRIBUTIONS,
                                    datasets.DATASETS)]
    yield
    for r, before in saved:
        r.clear()
        r.update(before)


@pytest.mark.slow
def test_a_registered_model_trains_and_its_checkpoint_loads(registries, tiny_shapes, tmp_path):
    from lib.models import load_checkpoint, register_model
    from lib.train import Recipe, evaluate, train_classifier
    from lib.data import shapes

    # --- docs: a model ---
    @register_model("toy_mlp", classifier="fc")
    def toy_mlp(num_classes=10, hidden=16):
        model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(3 * 4 * 4, hidden), nn.ReLU())
        model.add_module("fc", nn.Linear(hidden, num_classes))
        return model
    # ---

    result = train_classifier("toy_mlp", tiny_shapes, Recipe(epochs=2, batch_size=16, lr=0.05), tmp_path,
                              model_kwargs={"hidden": 8}, progress=False)
    model, payload = load_checkpoint(tmp_path / "model.pt")
    assert payload["model"]["name"] == "toy_mlp" and payload["model"]["kwargs"] == {"hidden": 8}
    assert model.fc.in_features == 8 and result["params"] == sum(p.numel() for p in model.parameters())
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    test_set = shapes.datasets(tiny_shapes)["test"]
    assert evaluate(model, test_set) == pytest.approx(result["test_acc"])  # the checkpoint is the trained model
    torch.manual_seed(0)
    untrained = registry.create_model("toy_mlp", model.fc.out_features, hidden=8)
    assert not torch.equal(untrained.fc.weight, model.fc.weight)
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy_mlp")(toy_mlp)


def test_a_registered_pruning_method_prunes_two_steps(registries, tiny_shapes, tmp_path):
    from lib.models import create_model, load_checkpoint, save_checkpoint
    from lib.prune.methods import Unstructured, register_pruner
    from lib.prune.runs import run_pruning

    # --- docs: a pruner ---
    @register_pruner
    class Largest(Unstructured):
        """Removes the largest weights first (a toy: magnitude pruning upside down)."""

        name = "largest"

        def _scores(self, values, generator):  # the smallest scores are removed
            return -values
    # ---

    torch.manual_seed(0)
    dense = create_model("small_cnn", 10, widths=[4, 8], convs=[1, 1])
    save_checkpoint(tmp_path / "train" / "model.pt", dense, "small_cnn", 10, {"widths": [4, 8], "convs": [1, 1]},
                    arch="cnn")
    plan = {"pruner": "largest", "schedule": "oneshot", "targets": [0.3, 0.6]}
    out = tmp_path / "prune"
    result = run_pruning("cnn", "largest", str(tmp_path / "train"), plan, {"epochs": 0, "batch_size": 16}, str(out),
                         str(tiny_shapes), progress=False)
    records = storage.load_json(out / "pruning.json")["checkpoints"]
    assert [r["target"] for r in records] == [0.0, 0.3, 0.6] and len(result["rows"]) == 3
    # every conv and linear layer but the classifier (fc, left dense by the plan)
    names = [n for n, m in dense.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "fc"]
    dense_weights = torch.cat([dense.get_submodule(n).weight.detach().abs().flatten() for n in names])
    for record in records[1:]:
        model, _ = load_checkpoint(out / record["file"])
        kept = torch.cat([model.get_submodule(n).weight.detach().flatten() for n in names]) != 0
        assert 1 - kept.float().mean().item() == pytest.approx(record["target"], abs=0.01)
        assert dense_weights[kept].max() <= dense_weights[~kept].min()  # the largest ones went, none of the small


def test_a_registered_attribution_method_scores_two_checkpoints(registries, pruned_cnn, tiny_shapes):
    from lib.interpret.methods import Attribution, register_attribution
    from lib.interpret.run import score_checkpoints
    from lib.data.masks import load_ground_truth

    # --- docs: an attribution ---
    @register_attribution
    class InputMagnitude(Attribution):
        """|x|: the input's own magnitude, the same for every model (a toy baseline)."""

        name = "input_magnitude"

        def _from_pass(self, shared):
            return shared.inputs.abs().detach()
    # ---

    data = load_ground_truth("shapes", tiny_shapes, limit=4)
    scores = score_checkpoints(pruned_cnn, data, attributions=["input_magnitude", "saliency"], metrics=["rma", "rra"],
                               gallery_size=0, progress=False)
    assert scores.attributions == ["input_magnitude", "saliency"] and len(scores.rows) == 2
    dense, pruned = scores.rows
    for metric in ("rma", "rra"):
        assert 0 < dense[f"{metric}_input_magnitude"] <= 1
        # the map does not depend on the model, so neither do its scores (saliency's do)
        assert dense[f"{metric}_input_magnitude"] == pruned[f"{metric}_input_magnitude"]
    assert dense["rma_saliency"] != pruned["rma_saliency"]


@pytest.mark.slow
def test_a_registered_dataset_trains_and_evaluates(registries, tmp_path):
    from lib.data.datasets import check_dataset, register_dataset
    from lib.train import Recipe, train_classifier

    # --- docs: a dataset ---
    @register_dataset("bright_dark", keys=("n",))
    def bright_dark(root, mean, std, n=64):
        """Images of one grey level: class 1 brighter than mid-grey, class 0 darker (a toy)."""
        def split(seed):
            g = torch.Generator().manual_seed(seed)
            labels = torch.randint(0, 2, (n,), generator=g)
            level = 0.5 + (labels * 2 - 1) * (0.1 + 0.3 * torch.rand(n, generator=g))
            images = level.view(n, 1, 1, 1).expand(n, 3, 16, 16)
            images = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
            return torch.utils.data.TensorDataset(images.contiguous(), labels)
        return {"train": split(0), "val": split(1), "test": split(2), "image_size": 16}
    # ---

    dataset = {"name": "bright_dark", "root": str(tmp_path), "n": 64}
    check_dataset(dataset)
    with pytest.raises(ValueError, match=r"dataset 'bright_dark' has no parameter\(s\) \['size'\]"):
        check_dataset({**dataset, "size": 8})
    result = train_classifier("small_cnn", None, Recipe(epochs=3, batch_size=16, lr=0.05, augment=()),
                              tmp_path / "train", model_kwargs={"widths": [4, 8], "convs": [1, 1]},
                              dataset={**dataset, "num_classes": 2}, progress=False)
    assert result["test_acc"] >= 0.9  # chance is 0.5: the data reached the model, labels and all
    assert storage.load_torch(tmp_path / "train" / "model.pt")["model"]["num_classes"] == 2


def test_the_registrations_were_undone():
    """Runs after the tests above (file order): the registries hold none of their toys."""
    assert "toy_mlp" not in registry._REGISTRY and "largest" not in pruners.PRUNERS
    assert "input_magnitude" not in attributions.ATTRIBUTIONS and "bright_dark" not in datasets.DATASETS


def test_the_readme_quotes_these_registrations():
    """Each ``# --- docs: <kind> ---`` block above appears verbatim in the "Extend it" section of docs/pipeline.md."""
    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"# --- docs: (.*?) ---\n(.*?)\n *# ---\n", Path(__file__).read_text(), re.S)
    assert [kind for kind, _ in blocks] == ["a model", "a pruner", "an attribution", "a dataset"]
    page = (root / "docs" / "pipeline.md").read_text()
    section = page[page.index("## Extend it"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    for kind, block in blocks:
        assert textwrap.dedent(block) in code, f"docs/pipeline.md's Extend it section lacks the test's code for {kind}"
