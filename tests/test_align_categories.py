"""The 16-category decision: indices rebuilt from WordNet ids equal the benchmark's, mean (not sum) aggregation."""

import numpy as np
import pytest

from lib.align.methods import CATEGORIES, ImageNetTo16Classes, OwnClasses, imagenet_indices, imagenet_wnids

# the hard-coded index lists of modelvshuman/helper/human_categories.py (HumanCategories.*_indices)
BENCHMARK_INDICES = {
    "airplane": [404], "bear": [294, 295, 296, 297], "bicycle": [444, 671],
    "bird": [8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92, 93, 94,
             95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140, 141, 142, 143,
             144, 145],
    "boat": [472, 554, 625, 814, 914], "bottle": [440, 720, 737, 898, 899, 901, 907], "car": [436, 511, 817],
    "cat": [281, 282, 283, 284, 285, 286], "chair": [423, 559, 765, 857], "clock": [409, 530, 892],
    "dog": [152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171,
            172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
            193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 205, 206, 207, 208, 209, 210, 211, 212, 213,
            214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 228, 229, 230, 231, 232, 233, 234,
            235, 236, 237, 238, 239, 240, 241, 243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256,
            257, 259, 261, 262, 263, 265, 266, 267, 268],
    "elephant": [385, 386], "keyboard": [508, 878], "knife": [499], "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}


def test_categories_are_the_benchmarks_sorted_16():
    assert list(CATEGORIES) == sorted(BENCHMARK_INDICES)


@pytest.mark.parametrize("category", sorted(BENCHMARK_INDICES))
def test_indices_rebuilt_from_wordnet_ids_equal_the_benchmarks(category):
    assert list(imagenet_indices(category)) == BENCHMARK_INDICES[category]


def test_class_order_is_the_sorted_wordnet_ids_of_the_sample_images(shared_data):
    names = sorted(p.name for p in (shared_data / "imagenet-sample-images").iterdir() if p.suffix == ".JPEG")
    assert [n.split("_")[0] for n in names] == list(imagenet_wnids())
    # spot checks by name: index 404 is the airliner, 499 the cleaver (the knife category)
    assert names[404].startswith("n02690373_airliner") and names[499].startswith("n03041632_cleaver")


def test_decision_is_the_mean_not_the_sum_over_a_category():
    p = np.zeros((1, 1000))
    p[0, BENCHMARK_INDICES["dog"]] = 0.004   # 109 dog classes: sum 0.44, mean 0.004
    p[0, 499] = 0.01                          # knife has one class
    p /= p.sum()
    mapping = ImageNetTo16Classes()
    assert mapping(p)[0] == "knife"
    assert mapping.probabilities(p)[0, CATEGORIES.index("dog")] == pytest.approx(p[0, 152])


def test_decisions_for_a_batch_and_bad_shapes():
    p = np.full((3, 1000), 1e-4)
    p[0, 404], p[1, 294], p[2, 867] = 1, 1, 1
    assert list(ImageNetTo16Classes()(p)) == ["airplane", "bear", "truck"]
    with pytest.raises(ValueError, match="1000"):
        ImageNetTo16Classes()(np.ones((2, 10)))


def test_own_classes():
    decide = OwnClasses(["a", "b", "c"])
    assert list(decide(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]))) == ["b", "a"]
    with pytest.raises(ValueError, match="3"):
        decide(np.ones((1, 4)))
