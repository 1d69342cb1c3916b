"""LOST, TokenCut and CorLoc on constructed inputs whose answers are known by hand."""

import numpy as np
import pytest
import torch

from lib.data.boxes import BoxDataset
from lib.discover import (LOST, CorLoc, TokenCut, box_iou, build_algorithms, centred_baseline, centred_box,
                           grid_box_to_pixels)
from lib.discover.methods import seed_component

E1, E2, E3, E4 = np.eye(4)


def lost_scene():
    """A 6x6 grid: background e1; an object block (rows 1-2, cols 1-3) whose patch (1, 1) is the seed; a
    patch like the object at (5, 5), disconnected from it; two 'distractor' patches at (4, 0) and (5, 0).

    Pairwise dot products (hand-computed): seed.object = 1, seed.far = 0.98, seed.distractor = -0.1,
    seed.bg = -0.1, object.distractor = 0.1, object.bg = -0.1, far.distractor = 0.3, distractor.bg = 0.
    Degrees (positive correlations with the others): seed 6, distractors 7, object and far 8, bg 26.
    """
    feats = np.tile(E1, (6, 6, 1))
    for r, c in [(1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]:
        feats[r, c] = E2 + E4 - 0.1 * E1 + 0.1 * E3
    feats[1, 1] = E2 - 0.1 * E1 - 0.1 * E3
    feats[5, 5] = E2 + E4 - 0.1 * E1 + 0.3 * E3
    feats[4, 0] = feats[5, 0] = E3
    return torch.tensor(feats.reshape(36, 4), dtype=torch.float32)


OBJECT = np.zeros((6, 6), bool)
OBJECT[1:3, 1:4] = True


def test_lost_seed_degrees_expansion_and_box_are_the_expected_ones():
    (found,) = LOST(k_patches=5)(lost_scene(), (6, 6))
    degree = np.full(36, 26)
    degree[[7]] = 6
    degree[[24, 30]] = 7
    degree[[8, 9, 13, 14, 15, 35]] = 8
    np.testing.assert_array_equal(found.details["degree"], degree)
    assert found.seed == 7
    # stable sort: ties go to the lower index
    np.testing.assert_array_equal(found.details["potentials"], [7, 24, 30, 8, 9])
    np.testing.assert_array_equal(found.details["similars"], [7, 8, 9])  # the distractors correlate negatively
    votes = found.details["votes"] > 0
    expected_votes = OBJECT.copy()
    expected_votes[5, 5] = expected_votes[4, 0] = expected_votes[5, 0] = True  # three components
    np.testing.assert_array_equal(votes, expected_votes)
    np.testing.assert_array_equal(found.component, OBJECT)  # the one holding the seed
    assert found.box == (1, 1, 4, 3)


def test_lost_k_is_capped_and_k1_votes_with_the_seed_alone():
    (found,) = LOST(k_patches=100)(lost_scene(), (6, 6))
    assert len(found.details["potentials"]) == 36
    np.testing.assert_array_equal(found.details["similars"], [7, 8, 9, 13, 14, 15, 35])
    assert found.box == (1, 1, 4, 3)
    (alone,) = LOST(k_patches=1)(lost_scene(), (6, 6))
    np.testing.assert_array_equal(alone.details["similars"], [7])
    assert alone.box == (1, 1, 4, 3)


def test_lost_is_batched_per_image():
    scene = lost_scene()
    flipped = scene.reshape(6, 6, 4).flip(1).reshape(36, 4)  # the object mirrored left-right
    first, second = LOST(5)(torch.stack([scene, flipped]), (6, 6))
    assert first.box == (1, 1, 4, 3) and second.box == (2, 1, 5, 3)


def test_lost_without_positive_correlations_finds_nothing():
    (found,) = LOST()(torch.zeros(16, 8), (4, 4))
    assert found.box is None and not found.component.any()


def test_grid_box_to_pixels_scales_by_the_stride_and_clips_to_the_image():
    np.testing.assert_array_equal(grid_box_to_pixels((1, 1, 4, 3), (6, 6), (96, 96), (90, 85)), [16, 16, 64, 48])
    np.testing.assert_array_equal(grid_box_to_pixels((3, 0, 6, 6), (6, 6), (96, 96), (90, 85)), [48, 0, 85, 90])
    np.testing.assert_array_equal(grid_box_to_pixels((0, 0, 2, 1), (4, 8), (64, 64), (64, 64)), [0, 0, 16, 16])


def test_seed_component_picks_the_seeds_component():
    mask = np.array([[1, 1, 0, 0],
                     [0, 0, 0, 1],
                     [0, 0, 1, 1]], bool)
    assert seed_component(mask, 0)[0] == (0, 0, 2, 1)
    box, component = seed_component(mask, 11)
    assert box == (2, 1, 4, 3) and component.sum() == 3
    assert seed_component(mask, 2)[0] is None
    # 4-connectivity, as scipy.ndimage.label's default: diagonal neighbours are separate components
    assert seed_component(np.eye(3, dtype=bool), 0)[0] == (0, 0, 1, 1)


def two_clusters(grid=(5, 6), block=(slice(1, 3), slice(2, 5))):
    feats = np.tile(E1, (*grid, 1))
    feats[block] = E2
    mask = np.zeros(grid, bool)
    mask[block] = True
    return torch.tensor(feats.reshape(-1, 4), dtype=torch.float32), mask


def test_tokencut_cuts_the_object_from_the_background():
    feats, mask = two_clusters()
    (found,) = TokenCut(tau=0.2)(feats, mask.shape)
    np.testing.assert_array_equal(found.details["foreground"], mask)
    assert mask.flat[found.seed]
    assert found.box == (2, 1, 5, 3)
    np.testing.assert_array_equal(found.component, mask)


def test_tokencut_graph_is_binary_with_eps():
    feats = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [-1, 0]])
    weights = TokenCut(tau=0.2, eps=1e-5).graph(feats)
    cos01 = 0.9 / np.hypot(0.9, 0.1)
    assert cos01 > 0.2
    np.testing.assert_array_equal(weights[0], [1, 1, 1e-5, 1e-5])
    soft = TokenCut(tau=0.2, eps=1e-5, binary_graph=False).graph(feats)
    np.testing.assert_allclose(soft[0], [1, cos01, 1e-5, 1e-5], rtol=1e-6)


def test_fiedler_vector_matches_the_normalised_laplacian():
    rng = np.random.default_rng(0)
    algorithm = TokenCut(tau=0.1)
    weights = algorithm.graph(torch.tensor(rng.normal(size=(30, 8)), dtype=torch.float32))
    vector = algorithm.fiedler_vector(weights)
    # independent route: symmetric normalised Laplacian I - D^-1/2 W D^-1/2, x = D^-1/2 y
    inv_sqrt = 1 / np.sqrt(weights.sum(1))
    values, vectors = np.linalg.eigh(np.eye(30) - inv_sqrt[:, None] * weights * inv_sqrt[None, :])
    expected = inv_sqrt * vectors[:, 1]
    assert values[1] < values[2] - 1e-6  # a unique second eigenvalue, so the vector is defined up to scale
    cosine = vector @ expected / np.linalg.norm(vector) / np.linalg.norm(expected)
    assert abs(cosine) == pytest.approx(1, abs=1e-8)


def test_bipartition_does_not_depend_on_the_eigenvectors_sign():
    vector = np.array([0.5, 0.4, -0.1, -0.2, -0.3])
    for v in (vector, -vector):
        foreground, seed = TokenCut.bipartition(v)
        assert seed == 0
        np.testing.assert_array_equal(foreground, [True, True, False, False, False])


def test_methods_reject_bad_input():
    with pytest.raises(ValueError, match="k_patches"):
        LOST(k_patches=0)
    with pytest.raises(ValueError, match="tau"):
        TokenCut(tau=1.5)
    with pytest.raises(ValueError, match="grid"):
        LOST()(torch.zeros(10, 3), (3, 3))
    with pytest.raises(ValueError, match="unknown discovery algorithm"):
        build_algorithms({"lost": {}, "dino_seg": {}})


# ----------------------------------------------------------------------------- CorLoc
def test_box_iou_by_hand():
    np.testing.assert_allclose(box_iou([0, 0, 10, 10], [[5, 0, 15, 10], [0, 0, 10, 20], [0, 0, 10, 10], [20, 20, 30, 30]]),
                               [50 / 150, 0.5, 1.0, 0.0])
    assert box_iou([0, 0, 0, 0], [[0, 0, 0, 0]])[0] == 0  # empty union


def test_corloc_is_exact_on_hand_made_boxes():
    predictions = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], None, [2, 2, 4, 4]]
    truths = [np.array([[5, 0, 15, 10]]),                      # IoU 1/3: a miss
              np.array([[0, 0, 10, 20]]),                      # IoU exactly 0.5: a hit
              np.array([[20, 20, 30, 30], [0, 0, 10, 10]]),   # the second box matches: a hit
              np.array([[0, 0, 5, 5]]),                        # no prediction: a miss
              np.array([[0, 0, 4, 4]])]                        # IoU 4/16: a miss
    scores = CorLoc()(predictions, truths)
    np.testing.assert_allclose(scores["iou"], [1 / 3, 0.5, 1.0, 0.0, 0.25])
    np.testing.assert_array_equal(scores["hit"], [False, True, True, False, False])
    summary = CorLoc.summary(scores)
    assert summary["corloc"] == pytest.approx(2 / 5, abs=0)
    assert summary["miou"] == pytest.approx((1 / 3 + 0.5 + 1 + 0 + 0.25) / 5)
    assert CorLoc(threshold=0.3).summary(CorLoc(0.3)(predictions, truths))["corloc"] == pytest.approx(3 / 5)


def test_corloc_rejects_images_without_ground_truth():
    with pytest.raises(ValueError, match="with_boxes"):
        CorLoc()([[0, 0, 1, 1]], [np.zeros((0, 4))])


def test_centred_box_and_baseline():
    np.testing.assert_allclose(centred_box((100, 200), 0.5), [50, 25, 150, 75])
    np.testing.assert_allclose(centred_box((100, 200), 1.0), [0, 0, 200, 100])
    truths = [np.array([[50, 25, 150, 75]], np.float32), np.array([[0, 0, 100, 50]], np.float32)]
    data = BoxDataset("toy", ["a", "b"], truths, [["x"], ["x"]], arrays=np.zeros((2, 100, 200, 3), np.uint8))
    table = centred_baseline(data, fractions=(0.5, 1.0)).set_index("fraction")
    assert table.loc[0.5, "corloc"] == 0.5           # exact on the first; IoU 25*50/(5000+5000-1250) on the second
    assert table.loc[1.0, "corloc"] == 0.0           # IoU 5000/20000 and 5000/20000
    np.testing.assert_allclose(table.loc[1.0, "miou"], 0.25)


def test_batched_torch_tokencut_and_lost_equal_the_numpy_path():
    """The torch eigensolver (batched, any device) against scipy's generalized eigh on the same graphs."""
    rng = np.random.default_rng(3)
    feats = torch.tensor(rng.normal(size=(6, 49, 16)), dtype=torch.float32)
    for binary in (True, False):
        algorithm = TokenCut(tau=0.1, binary_graph=binary, device="cpu")
        vectors = algorithm.fiedler_vectors(feats).numpy()
        found = algorithm(feats, (7, 7))
        for b, weights in enumerate(algorithm.graph(feats)):
            reference = algorithm.fiedler_vector(weights)
            sign = np.sign(reference @ vectors[b])
            assert np.allclose(vectors[b] * sign, reference, atol=1e-8)
            foreground, seed = algorithm.bipartition(reference)
            assert found[b].seed == seed and np.array_equal(found[b].details["foreground"].ravel(), foreground)
    lost = LOST(5, device="cpu")(feats, (7, 7))
    plain = LOST(5)(feats, (7, 7))
    assert [f.box for f in lost] == [f.box for f in plain]
