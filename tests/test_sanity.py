"""lib.interpret.sanity: the model parameter randomisation test (Adebayo et al. 2018), by construction and against
Quantus's MPRT."""

import numpy as np
import pytest
import torch
from torch import nn

from lib.interpret.methods import create_attribution
from lib.interpret.metrics import GroundTruth, relevance_map
from lib.interpret.sanity import randomise, randomised_layers, rank_correlation, sanity_check, verdicts


class Squares(nn.Module):
    """Logits a * sum(x^2) + b: the saliency map is proportional to x^2 whatever the weights (weight-independent
    by construction)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.head = nn.Linear(1, classes)

    def forward(self, x):
        return self.head((x ** 2).flatten(1).sum(1, keepdim=True))


class Linear(nn.Module):
    """Logits W x + b: the saliency map of class c is W_c squared, entirely the weights'."""

    def __init__(self, classes: int = 4, size: int = 16):
        super().__init__()
        self.head = nn.Linear(3 * size * size, classes)

    def forward(self, x):
        return self.head(x.flatten(1))


def truth(n: int, size: int) -> GroundTruth:
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, size // 4:size // 2, size // 4:size // 2] = True
    return GroundTruth(masks, 2)


def saliency(model):
    return [create_attribution("saliency", model)]


def test_rank_correlation_by_hand():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    out = rank_correlation(a, b)
    assert out[:2].tolist() == pytest.approx([1.0, -1.0]) and np.isnan(out[2])
    # ties take average ranks: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4): r = 4.5 / sqrt(4.5 * 5)
    assert rank_correlation([[0.0, 0.0, 1.0, 2.0]], [[1.0, 2.0, 3.0, 4.0]])[0] == pytest.approx(4.5 / np.sqrt(4.5 * 5))


def test_weight_independent_maps_fail_and_weight_dependent_ones_pass():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16)
    independent = sanity_check(Squares().eval(), saliency, x, truth(6, 16))
    dependent = sanity_check(Linear().eval(), saliency, x, truth(6, 16))
    assert independent["sanity_saliency"].min() > 0.999  # the same ranking whatever the weights
    assert dependent["sanity_saliency"].abs().max() < 0.3
    rows = [{"sanity_saliency": independent["sanity_saliency"].mean()}]
    assert verdicts(rows, ["saliency"]) == {"saliency": {"max_rank_correlation": pytest.approx(1.0), "passed": False,
                                                         "threshold": 0.5}}
    assert verdicts([{"sanity_saliency": dependent["sanity_saliency"].mean()}], ["saliency"])["saliency"]["passed"]
    assert {"random_rma_saliency", "random_rra_saliency"} <= set(dependent.columns)


def test_randomisation_redraws_every_layer_and_leaves_the_model_alone():
    from lib.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    randomised = randomise(model, seed=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    changed = [k for k, v in randomised.state_dict().items() if k.endswith("weight") and not torch.equal(before[k], v)]
    weights = [k for k in before if k.endswith("weight") and before[k].ndim > 1]
    assert set(weights) <= set(changed)
    names = [name for name, _ in randomised_layers(model, seed=3)]
    assert names[0] == [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")][-1]  # top first


def test_against_quantus_mprt():
    """Quantus's MPRT (skip_layers: the trained against the fully randomised network, cascading top-down) with the
    same relevance maps as the explanation function gives the same per-image rank correlations."""
    quantus = pytest.importorskip("quantus", reason="quantus is not installed (pip install quantus): the reference "
                                                    "MPRT is not checked")
    from lib.interpret.methods import Attributor
    from lib.models import create_model, get_spec

    torch.manual_seed(0)
    spec = get_spec("small_cnn")
    model = create_model("small_cnn", num_classes=4).eval()
    x = torch.randn(5, 3, 32, 32)
    names = ("gradcam", "saliency")

    def make(network):
        return [create_attribution(n, network, spec) for n in names]

    mine = sanity_check(model, make, x, truth(5, 32), seed=7)
    with torch.no_grad():
        target = model(x).argmax(1)
    for name in names:
        def explain(model, inputs, targets, **kwargs):
            attribution = create_attribution(name, model, spec)
            _, maps = Attributor([attribution]).attribute(torch.as_tensor(inputs), torch.as_tensor(targets))
            return relevance_map(maps[name], attribution.pooling, size=(32, 32))[:, None].numpy()

        metric = quantus.MPRT(skip_layers=True, seed=7, layer_order="top_down", disable_warnings=True)
        scores = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None, explain_func=explain,
                        device="cpu", batch_size=8)
        last = list(scores)[-1]
        assert list(scores)[0] == "original" and np.allclose(scores["original"], 1.0)
        assert np.ptp(mine[f"sanity_{name}"]) > 0.01  # images differ: the comparison is not of constants
        assert np.allclose(scores[last], mine[f"sanity_{name}"], atol=1e-6), name


@pytest.mark.slow
def test_rq1_runs_the_check_on_every_checkpoint_with_its_own_maps(tiny_shapes, pruned_source):
    """RQ1's loop with ``sanity_images``: every checkpoint's row has the correlation and the randomised maps'
    RMA/RRA of each attribution, the same as the check run on its own; the other scores are unchanged."""
    from lib.checkpoints import iter_checkpoints
    from lib.data.masks import load_ground_truth
    from lib.data.transforms import normalize, to_tensor
    from lib.interpret import score_checkpoints
    from lib.models import get_spec

    source = pruned_source("small_cnn", targets=(0.5,))
    data = load_ground_truth("shapes", tiny_shapes, limit=4)
    options = dict(attributions=["gradcam", "saliency"], metrics=["rma", "rra"], batch_size=2, gallery_size=1,
                   progress=False)
    checked = score_checkpoints(source, data, sanity_images=3, sanity_seed=5, **options)
    plain = score_checkpoints(source, data, **options)
    assert set(checked.sanity) == {"gradcam", "saliency"} and plain.sanity == {}
    spec = get_spec("small_cnn")
    inputs = normalize(to_tensor(data["images"][:3]), spec.mean, spec.std)
    for row, base, (record, model) in zip(checked.rows, plain.rows, iter_checkpoints(source)):
        assert row["rma_gradcam"] == base["rma_gradcam"] and "sanity_gradcam" not in base
        alone = sanity_check(model, lambda m: [create_attribution(n, m, spec) for n in ("gradcam", "saliency")],
                             inputs, truth_of(data, 3), batch_size=2, seed=5)
        for column in alone.columns:
            assert row[column] == pytest.approx(alone[column].mean(), abs=1e-5), column
    assert checked.gallery["maps"][0]["gradcam"].shape[0] == 1  # the gallery keeps its own size
    # fewer images checked than the gallery keeps (notebook 03's smoke defaults: 2 checked, a gallery of 3)
    few = score_checkpoints(source, data, sanity_images=1, sanity_seed=5, **{**options, "gallery_size": 3})
    assert set(few.sanity) == {"gradcam", "saliency"}


def truth_of(data, count):
    return GroundTruth(torch.from_numpy(np.asarray(data["masks"][:count])), 15.0)
