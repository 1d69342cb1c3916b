"""Every score on hand-computed cases."""

import math

import pytest
import torch
from torch import nn

from lib.interpret.metrics import (
    DeletionAUC,
    GiniSparseness,
    GroundTruth,
    InsertionAUC,
    PointingGame,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    minmax,
    relevance_map,
    uniform_scores,
)


def truth(mask, tolerance=0.0):
    return GroundTruth(torch.tensor(mask, dtype=torch.bool)[None], tolerance)


def one(values):
    return torch.tensor(values, dtype=torch.float64)[None]


def test_relevance_mass_accuracy():
    gt = truth([[1, 0], [0, 1]])
    assert RelevanceMassAccuracy()(one([[1, 3], [0, 4]]), gt).item() == pytest.approx(5 / 8)
    assert RelevanceMassAccuracy()(one([[0, 0], [0, 0]]), gt).item() == pytest.approx(0.5)  # no relevance: uniform


def test_relevance_rank_accuracy():
    gt = truth([[0, 1], [1, 0]])
    assert RelevanceRankAccuracy()(one([[4, 3], [2, 1]]), gt).item() == pytest.approx(0.5)  # top-2 = {4, 3}
    assert RelevanceRankAccuracy()(one([[1, 4], [3, 2]]), gt).item() == pytest.approx(1.0)
    # Ties at the K-th value: K = 2, three pixels tie at 1 and one of them is in the mask -> (0 + 2 * 1/3) / 2.
    gt = truth([[1, 0], [0, 1]])
    assert RelevanceRankAccuracy()(one([[1, 1], [1, 0]]), gt).item() == pytest.approx(1 / 3)
    # Ties above: 5 > 1 = 1 = 1: the top pixel is in the mask, one of the two remaining slots among three ties.
    gt = truth([[1, 1, 0, 0]])
    assert RelevanceRankAccuracy()(one([[5, 1, 1, 1]]), gt).item() == pytest.approx((1 + 1 / 3) / 2)


def test_pointing_game_tolerance_and_ties():
    mask = [[0] * 6 for _ in range(6)]
    mask[0][5] = 1  # the object is 5 pixels right of the map's maximum at (0, 0)
    relevance = torch.zeros(1, 6, 6, dtype=torch.float64)
    relevance[0, 0, 0] = 1
    assert PointingGame()(relevance, truth(mask, tolerance=5)).item() == 1
    assert PointingGame()(relevance, truth(mask, tolerance=4.9)).item() == 0
    relevance[0, 0, 5] = 1  # a second, equal maximum on the object: half a hit in expectation
    assert PointingGame()(relevance, truth(mask, tolerance=0)).item() == 0.5


def test_gini_by_hand():
    # sorted c = [0, 0, 1, 3], |c| = 4: 1 - 2 * (1/4 * 1.5/4 + 3/4 * 0.5/4) = 0.625
    assert GiniSparseness()(one([[3, 0], [1, 0]])).item() == pytest.approx(0.625)
    assert GiniSparseness()(one([[2, 2], [2, 2]])).item() == pytest.approx(0.0)
    assert GiniSparseness()(one([[0, 0], [0, 7]])).item() == pytest.approx(1 - 1 / 4)
    assert GiniSparseness()(one([[0, 0], [0, 0]])).item() == 0.0


def test_uniform_map_scores_the_chance_level():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 2:4, 2:7] = True  # 10 of 100 pixels
    scores = uniform_scores(GroundTruth(mask, tolerance=1))
    assert scores["rma"].item() == pytest.approx(0.1)
    assert scores["rra"].item() == pytest.approx(0.1)
    assert scores["pointing"].item() == pytest.approx(4 * 7 / 100 - 4 / 100)  # mask dilated by 1 px (a cross)
    assert scores["gini"].item() == 0


def test_relevance_map_pooling_and_normalisation():
    attributions = torch.zeros(1, 3, 2, 2)
    attributions[0, :, 0, 1] = torch.tensor([1.0, -2.0, 2.0])
    assert relevance_map(attributions, "square")[0, 0, 1].item() == 9.0
    cam = torch.tensor([[[0.0, 2.0], [1.0, 4.0]]])
    assert torch.equal(relevance_map(cam, "cam"), torch.tensor([[[0.0, 0.5], [0.25, 1.0]]]))
    up = relevance_map(cam, "cam", size=(8, 8))
    assert up.shape == (1, 8, 8) and up.min() == 0 and up.max() == 1
    assert torch.equal(minmax(torch.full((1, 3, 3), 5.0)), torch.ones(1, 3, 3))  # constant: uniform
    with pytest.raises(ValueError, match="pooling"):
        relevance_map(cam, "mean")


def test_scores_reject_bad_input():
    with pytest.raises(ValueError, match="empty ground-truth"):
        GroundTruth(torch.zeros(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-negative"):
        RelevanceMassAccuracy()(one([[-1, 1], [0, 0]]), truth([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        RelevanceMassAccuracy()(torch.ones(1, 3, 3), truth([[1, 0], [0, 0]]))


class LinearProbability(nn.Module):
    """Two classes, p(class 0) = sum of weight * pixel (inputs in [0, 1] and weights summing to 1)."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.tensor(weights).view(1, 1, 2, 2)

    def forward(self, x):
        p = (x * self.weights).sum(dim=(1, 2, 3)).clamp(1e-9, 1 - 1e-9)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_deletion_auc_by_hand():
    model, x, target = LinearProbability([0.4, 0.3, 0.2, 0.1]), torch.ones(1, 1, 2, 2), torch.tensor([0])
    deletion = DeletionAUC(steps=4, batch_size=3)
    # Most relevant first along the weights: p = 1, .6, .3, .1, 0 -> trapezoid with dx = 1/4 = 0.375.
    assert deletion(model, x, target, torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])).item() == pytest.approx(0.375)
    # The reverse order keeps the probability up: p = 1, .9, .7, .4, 0 -> 0.625.
    assert deletion(model, x, target, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])).item() == pytest.approx(0.625)


def test_insertion_auc_by_hand():
    model, x, target = LinearProbability([0.4, 0.3, 0.2, 0.1]), torch.ones(1, 1, 2, 2), torch.tensor([0])
    # blur_sigma=0 inserts into the zero image: p = 0, .4, .7, .9, 1 -> 0.25 * (.2 + .55 + .8 + .95) = 0.625
    insertion = InsertionAUC(steps=4, blur_sigma=0)
    assert insertion(model, x, target, torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])).item() == pytest.approx(0.625)


def test_insertion_starts_from_a_blur():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    blurred, original = InsertionAUC(blur_sigma=1.0).endpoints(x)
    assert original is x
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)  # a normalised Gaussian kernel
    assert blurred[0, 0, 8, 8].item() == pytest.approx(1 / (2 * math.pi), rel=0.1)
