# %% [markdown]
# # 04 · Unsupervised object discovery (RQ2)
#
# Study A's second question: does the pruned backbone still *find the object* without any supervision?
# Each checkpoint's last feature map is read as a set of patch features (`lib.discover.PatchFeatures`):
# for CNNs the output of the architecture's `feature_layer` (ResNet `layer4`), normalised by **LOST's
# LayerNorm** over patches x channels, optionally with the last stage dilated (`features["dilation"]`);
# for ViTs the **keys** of the last block's attention (`features["which"]`: `k`, `q`, `v` or `tokens`),
# class token dropped. Two algorithms turn the features of an image into one box:
#
# - **LOST** (Simeoni et al., BMVC 2021): patch similarity A = F F^T; the *seed* is the patch with the
#   fewest positive correlations; among the k lowest-degree patches (k = 100, capped by the number of
#   patches) those correlating positively with the seed vote; the box encloses the 4-connected
#   component of positive votes that holds the seed, mapped to pixels by the feature stride.
# - **TokenCut** (Wang et al., CVPR 2022): a graph on the L2-normalised patches (weight 1 where cosine
#   similarity > tau, eps elsewhere), its normalized cut from the second-smallest generalized
#   eigenvector (`scipy.linalg.eigh`), the side of the largest |eigenvector| entry is the object, the box
#   encloses its component holding that patch.
#
# **Score:** CorLoc, the share of images whose box has IoU >= 0.5 with some ground-truth box, and mean
# IoU; per-image values are kept (`per_image.csv`). **Baseline:** a box centred in the image, at every
# side fraction; the best fraction is tuned on the ground truth, so it is an optimistic baseline.
#
# *Deviations from Study A:* the embedded shapes instead of VOC07/12 and COCO20k (the loaders for those
# are `lib.data.boxes`; the real-data presets use COCO128 and Tiny ImageNet), small models with 8x8 maps.
# Ties in LOST's degree go to the lower patch index (the reference's sort leaves them unspecified); an
# image where LOST finds no positive vote gets no box (the reference raises); an IoU of exactly 0.5 counts
# (the reference's IoU adds 1e-7 to the union).
#
# **Feature centring (a deviation from LOST):** with the features exactly as LOST defines them, the maps
# of the small models (and of EfficientNet-Lite0's last block) are dominated by a component that all
# patches of an image share: nearly all patch pairs correlate positively, the degree no longer separates
# object from background, and both algorithms return about the whole image. The default pipeline and the
# presets therefore set `features["centre"] = True`: each image's mean patch feature is subtracted first;
# the LOST and TokenCut steps themselves are unchanged. The diagnosis below scores LOST's own features
# (`compare_features`) on the dense checkpoint beside them.

# %% tags=["parameters"]
arch = "cnn"
plan = "lrr"
source = "data/smoke/prune/cnn/lrr/seed0"  # a prune stage's output directory (lib.checkpoints)
dataset = {"name": "shapes", "root": "data/smoke/shapes", "split": "test"}
n_images: int | None = 100
seed = 0
resize = None
features = {"centre": True}
compare_features = {}
algorithms = {"lost": {"k_patches": 100}, "tokencut": {"tau": 0.2, "eps": 1e-5}}
batch_size = 64
centre_fractions = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
gallery_images = 6
gallery_rows = 3
out_dir = "data/smoke/discover/cnn/lrr/seed0"

# %%
import pandas as pd

import lib.project
from lib.discover import centred_baseline, gallery_steps, plot_gallery
from lib.discover.plots import stage_figures
from lib.discover.run import configure, diagnose, score
from lib.plots import chance_levels
from lib.results import save_figure, save_stage_metrics, source_lineage

lib.project.enter_project()
# every parameter checked and parsed once, before any compute (the stage's check is this same call)
run = configure(source, dataset, n_images, seed, resize, features, compare_features, algorithms, batch_size,
                centre_fractions, gallery_images, gallery_rows, state_dir=f"{out_dir}/state")
data = run.load_data()
print(f"{data.name}: {len(data)} images, {sum(len(b) for b in data.boxes)} ground-truth boxes")

# %% [markdown]
# ## Baseline: a box centred in the image

# %%
baseline = centred_baseline(data, run.centre_fractions)
best = baseline.loc[baseline["corloc"].idxmax()]
baseline.round(3)

# %% [markdown]
# ## Why the features are centred: diagnosis on the dense checkpoint
#
# `positive_pairs`: share of patch pairs with a positive correlation (LOST's degree can only single out
# the object when many pairs are negative); `lost_seed_in_box`: share of images whose LOST seed lies in a
# ground-truth box. Then both algorithms with `compare_features` on the dense checkpoint.

# %%
diagnosis = diagnose(run, data)
compare_rows, _ = score(run, data, run.compare_features, steps=[0])
diagnosis

# %% [markdown]
# ## Discover objects with every checkpoint

# %%
rows, per_image = score(run, data)
table = pd.DataFrame(rows)
table.round(3)

# %% [markdown]
# ## Metrics
#
# Beside `plots/corloc.csv`, `metrics.json` holds what the CorLoc figure is drawn from (`lib.redraw` draws it again
# from the folder): the algorithms, the tuned centred box, and chance (1 / the network's classes).

# %%
compare = {f"compare_{k}": v for k, v in compare_rows[0].items() if k.startswith(("corloc_", "miou_"))}
metrics = {"arch": arch, "plan": plan, **source_lineage(source), "dataset": data.name, "n_images": len(data),
           "features": features, "algorithms": algorithms, "centred_box_corloc": float(best["corloc"]),
           "centred_box_fraction": float(best["fraction"]), "compare_features": compare_features, **compare,
           "chance": chance_levels(source)}
save_stage_metrics(out_dir, rows, plot="corloc", per_image=per_image, **metrics)

# %% [markdown]
# ## CorLoc against sparsity (test accuracy on the right axis)

# %%
for name, fig in stage_figures(rows, metrics).items():
    save_figure(fig, out_dir, name)

# %% [markdown]
# ## Predicted (dashed, dotted) and true (yellow) boxes across sparsities

# %%
fig = plot_gallery(data, per_image, gallery_steps(rows, run.gallery_rows), run.gallery_images, list(run.algorithms))
save_figure(fig, out_dir, "gallery")
