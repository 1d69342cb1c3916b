# %% [markdown]
# # 08 · What pruning forgets: flips, pruning-identified exemplars, classes
#
# Top-1 accuracy is a mean: it can hide a concentrated loss. After Hooker et al. (2019, "What do compressed deep
# neural networks forget?", arXiv 1911.05248), every checkpoint of every seed predicts every evaluation image
# (`lib.forget.run`: one forward pass per image and checkpoint, nothing else is computed) and the stage counts:
#
# - **flips**: per seed, the images whose prediction at a sparsity differs from that seed's own dense network's;
# - **PIEs** (pruning-identified exemplars), Hooker et al.'s definition: an image is a PIE at a sparsity when the
#   **modal label over the population of pruned networks** (one per seed) differs from the **modal label over the
#   population of dense networks**; a tie in a mode goes to the lowest class index. **PIEs need a population:**
#   with one seed the "modal" label is that network's prediction and a PIE is only a flip, so the stage then
#   shows per-image flips and leaves `pie_share` empty. Add seeds (params.yaml `seeds`) for PIEs;
# - **per-class changes**: each class's accuracy change from the dense population, and Welch's t test over
#   seeds of the class's accuracy *relative to its network's top-1* (class accuracy minus overall accuracy, per
#   network: is this class hurt more than the test set as a whole?), the p-values adjusted over the classes of a
#   sparsity (`correction`: Holm, family-wise; or Benjamini-Hochberg). Undefined with one seed;
# - the **most forgotten images**: forgotten (PIE, or flipped with one seed) at the most sparsities, earliest first;
# - **across dimensions**: the per-image table joined with RQ1's and RQ2's per-image tables on (checkpoint, image)
#   where the stages score the same images (the embedded test split: RQ1 its first `interpret.n_images`, RQ2 a
#   seeded sample of `discover.n_images`); the real-data presets score different datasets (ImageNet images
#   here, COCO masks and boxes there) and join nothing.
#
# *Deviations from Hooker et al.:* populations of a few seeds instead of 30 networks; Welch's t over those seeds
# (each seed's pruned network descends from its own dense one, which Welch's test treats as independent samples,
# as the paper does); the embedded data has no atypical or mislabelled images by construction.

# %% tags=["parameters"]
arch = "cnn"
plan = "lrr"
source = "data/smoke/prune/cnn/lrr"        # the prune stage's (arch, plan) folder; each seed's run in seed<k>
seeds = [0]                                # one prune run per seed (params.yaml `seeds`); PIEs need two or more
dataset = {"name": "shapes", "root": "data/smoke/shapes"}   # lib.data.datasets.classification_data
split = "test"
n_images: int | None = None                # None: every image of the split
batch_size = 256
correction = "holm"                        # holm (family-wise over a sparsity's classes) | bh (false discovery rate)
alpha = 0.05
gallery_size = 12
interpret_dir: str | None = "data/smoke/interpret/cnn/lrr"   # RQ1's (arch, plan) folder to join; None: skip
discover_dir: str | None = "data/smoke/discover/cnn/lrr"     # RQ2's
device: str | None = "cpu"                 # None: the GPU when there is one
out_dir = "data/smoke/forget/cnn/lrr"

# %%
import pandas as pd

import lib.project
from lib.forget import (across_dimensions, class_names, most_forgotten, plot_class_changes, plot_dimensions,
                        plot_forgetting, plot_gallery, save_tables, seed_dir)
from lib.forget.run import configure, measure
from lib.plots import chance_of
from lib.results import save_figure, save_stage_metrics

lib.project.enter_project()
# every parameter checked and parsed once, before any compute (the stage's check is this same call)
run = configure(source, seeds, dataset, split, n_images, batch_size, correction, alpha, gallery_size, interpret_dir,
                discover_dir, device, state_dir=f"{out_dir}/state")
result = measure(run)
names = class_names(dataset)
print(f"{result.images['image'].nunique()} images x {result.images['step'].nunique()} checkpoints x "
      f"{len(result.seeds)} seed(s)")
if not result.population:
    print("One seed: PIEs need a population of pruned and dense networks (two seeds or more); "
          "the figures show per-image flips instead and pie_share is left empty.")

# %% [markdown]
# ## Flips and PIEs against sparsity (accuracy on the evaluated images on the right axis)
#
# `acc` is the mean over seeds of each checkpoint's accuracy on these images; where they are the prune stage's
# whole test split it equals the prune stage's `test_acc` (both printed).

# %%
table = pd.DataFrame(result.rows)
fig = plot_forgetting(result.rows, result.population, title=f"{arch} / {plan}", chance=chance_of(seed_dir(source, seeds[0])))
save_figure(fig, out_dir, "forgetting")
table.round(4)

# %% [markdown]
# ## Classes: change of accuracy from the dense population (percentage points)

# %%
fig = plot_class_changes(result.classes, names, title=f"{arch} / {plan}")
save_figure(fig, out_dir, "classes")
result.classes.round(4)

# %% [markdown]
# ## The most forgotten images
#
# Title: image id, its label, the dense population's modal label, and the modal label (one seed: the prediction) at
# the first sparsity where it is forgotten.

# %%
forgotten = most_forgotten(result.images, gallery_size)
fig = plot_gallery(result.pictures, result.ids, forgotten, names)
save_figure(fig, out_dir, "gallery")
forgotten

# %% [markdown]
# ## Across dimensions: are the forgotten images those RQ1's maps or RQ2's boxes also miss?
#
# Each joined column is the other stage's per-image score (`interpret:rma_<attribution>`, `discover:hit_<algorithm>`)
# on the same checkpoint and image; the figure compares its mean over the images that flip (any seed) with its mean
# over the others, at every pruned sparsity. Only the images both stages score are joined.

# %%
joined, compare, joined_stages = across_dimensions(result.images, {"interpret": run.interpret_dir,
                                                                    "discover": run.discover_dir}, result.seeds)
fig = plot_dimensions(compare, title=f"{arch} / {plan}: forgotten (flipped) images against the others")
save_figure(fig, out_dir, "dimensions")
print(f"joined with {joined_stages or 'no stage'}: {joined['image'].nunique()} images in common")
compare.round(3)

# %%
save_tables(out_dir, predictions=result.predictions, classes=result.classes, dimensions=joined)
save_stage_metrics(out_dir, result.rows, plot="forgetting", per_image=result.images, arch=arch, plan=plan,
                   seeds=result.seeds, population=result.population, n_images=int(result.images["image"].nunique()),
                   dataset=dataset, split=split, correction=correction, alpha=alpha,
                   most_forgotten=forgotten["image"].tolist())
