# %% [markdown]
# # 03 · Interpretability (RQ1): attribution maps against ground-truth masks
#
# Study A's first question. For every checkpoint of a pruning run, the **predicted class** of each image
# is attributed with (`lib.interpret.methods`, captum-style classes):
#
# - **Grad-CAM** on `cam_layer` (default: the model spec's last block; for a ViT, its `norm1`, since the
#   last block's patch outputs never reach the class-token head);
# - **Guided Grad-CAM** (guided backpropagation x the upsampled Grad-CAM map; rectifier networks only);
# - **Integrated Gradients inside SmoothGrad** (captum's `IntegratedGradients` averaged over noisy copies,
#   as its `NoiseTunnel` does; Study A: 2 noise samples, zero baseline, 50 steps, captum's noise std 1.0
#   in normalised-input units; each image's noise is seeded by its content, so batching changes nothing);
# - **Saliency** (absolute input gradient);
# - for ViTs, the last block's **CLS-to-patch attention** summed over heads, and **attention rollout**
#   (weights recomputed from each block's qkv projection, so timm's fused attention is no obstacle).
#
# Grad-CAM, Guided Grad-CAM, Saliency and the attention maps share one forward pass per batch (and one
# ordinary plus one guided backward pass). Relevance maps follow Study A's code: pixel attributions are
# pooled over channels as the **sum of squares**, map attributions are upsampled bilinearly and **min-max
# normalised**. Each map is scored against the image's binary object mask (`lib.interpret.metrics`):
# **relevance mass accuracy** (RMA: relevance inside the mask / total) and **relevance rank accuracy**
# (RRA: share of the K most relevant pixels inside the mask, K = mask size), after Arras et al.'s
# CLEVR-XAI; and beyond the paper the **pointing game** (maximum within `pointing_tolerance` px of the
# mask), **Gini sparseness**, and RISE's **deletion/insertion AUC** (probability of the predicted class as
# pixels are removed, or inserted into a blurred copy, most relevant first; `blur_sigma = 0` inserts into the
# mean colour instead, the embedded default, whose classes are carried by colour, which a blur keeps). A
# uniform map's scores (RMA = RRA = the mask's share of the image) are the chance level drawn in every panel.
#
# *Deviations from Study A:* the embedded dataset's exact object masks stand in for PASCAL VOC 2012 (the
# VOC loader, `lib.data.masks.load_voc_segmentation`, reads the real format; it builds the foreground from
# the class ids, not from the red channel as the released code does, which drops whole classes); fewer
# images (`n_images`) at 64 px; ties in RRA and the pointing game are scored in expectation (the released
# code breaks them by an unstable sort); Guided Grad-CAM's guided backward also covers ReLU6 (captum's only
# hooks `nn.ReLU`). Smoke defaults below use fewer IG steps; `params.yaml` holds the pipeline's values.
#
# **Sanity check** (Adebayo et al. 2018, "Sanity checks for saliency maps"; `lib.interpret.sanity`): on the first
# `sanity_images` images of every checkpoint, the maps of the same network with **every layer's weights
# re-initialised at once** (the end point of the cascading randomisation, top layer first, as Quantus's MPRT) are
# compared with its own by Spearman rank correlation (`sanity_<attribution>`), and scored (`random_rma_`,
# `random_rra_`: the floor RMA/RRA must clear). An attribution whose correlation reaches `sanity_threshold` at
# some checkpoint **fails**: its maps would look alike for any weights, so its RMA/RRA trends are not the network's.

# %% tags=["parameters"]
arch = "cnn"
plan = "lrr"
dataset = "shapes"                      # shapes | voc12 | coco (lib.data.masks.load_ground_truth)
mask = "foreground"                    # foreground | red_channel (VOC, COCO: Study A's reading of the mask file)
data_dir = "data/smoke/shapes"
split = "test"
source = "data/smoke/prune/cnn/lrr/seed0"  # a prune stage's output directory (lib.checkpoints)
n_images = 8
image_size = 224                        # real datasets: shorter side resized, centre crop
attributions = None                          # None: every attribution that applies to the model family
cam_layer = None                        # None: the model spec's cam_layer
metrics = None                          # None: every score; e.g. ["rma", "rra", "pointing", "gini"] skips the
                                        # deletion/insertion curves (2 x perturbation_steps passes per map)
ig_smoothgrad = {"steps": 8, "samples": 2, "noise_std": 1.0, "internal_batch_size": 128, "seed": 0}
rollout = {"head_fusion": "mean"}
pointing_tolerance = 2                  # pixels: the usual 15 px at VOC's ~500 px, scaled to 64 px
perturbation_steps = 8
blur_sigma: float = 0                          # insertion starts from a blur (RISE: 5 px at 224 px); 0: the mean colour
batch_size = 8
eval_batch_size = 128
gallery_size = 3
sanity_images = 2                       # the randomisation test on the first images (0: none)
sanity_seed = 0
sanity_threshold = 0.5                  # an attribution fails at a mean rank correlation >= this
device: str | None = "cpu"         # None: the GPU when there is one
out_dir = "data/smoke/interpret/cnn/lrr/seed0"

# %%
import pandas as pd

import lib.project
from lib.interpret.run import configure, score
from lib.interpret.plots import plot_gallery, stage_figures
from lib.data.masks import load_ground_truth
from lib.plots import chance_levels
from lib.results import save_figure, save_stage_metrics, source_lineage

lib.project.enter_project()
# every scoring parameter checked and parsed once, before any compute (the stage's check is this same call)
run = configure(source, attributions, {"ig_smoothgrad": ig_smoothgrad, "rollout": rollout}, cam_layer, metrics,
                pointing_tolerance, perturbation_steps, blur_sigma, batch_size, eval_batch_size, gallery_size,
                sanity_images, sanity_seed, sanity_threshold, device, state_dir=f"{out_dir}/state")
data = load_ground_truth(dataset, data_dir, split=split, limit=n_images, image_size=image_size, mask=mask)
print(f"{len(data['masks'])} images of {dataset}, {data['images'].shape[1]} px; "
      f"objects cover {data['masks'].mean():.1%} of the pixels")

# %% [markdown]
# ## Attribute and score every checkpoint

# %%
scores = score(run, data)
table = pd.DataFrame(scores.rows).assign(arch=arch, plan=plan)
print("uniform map:", {k: round(v, 3) for k, v in scores.baseline.items()})
table.round(3)

# %% [markdown]
# ## Sanity check: do the maps depend on the weights?
#
# Per attribution, the largest mean rank correlation over the checkpoints between the network's maps and those of
# the same network with random weights, and whether it stays below `sanity_threshold` (passed).

# %%
pd.DataFrame(scores.sanity).T

# %% [markdown]
# ## Metrics
#
# Beside `plots/scores.csv`, `metrics.json` holds what the figures below are drawn from (`lib.redraw` draws them
# again from the folder): the attributions, the uniform map's scores, and chance (1 / the network's classes).

# %%
metrics = {"arch": arch, "plan": plan, **source_lineage(source), "dataset": dataset, "n_images": len(data["masks"]),
           "attributions": scores.attributions, "sanity": scores.sanity, "n_sanity_images": sanity_images,
           **scores.baseline, "chance": chance_levels(source)}
save_stage_metrics(out_dir, table.to_dict("records"), plot="scores", per_image=scores.per_image, **metrics)

# %% [markdown]
# ## Scores against sparsity, test accuracy on the second axis
#
# `rma_rra`: RMA and RRA (Study A's figure); `scores`: the pointing game, sparseness and faithfulness.

# %%
for name, fig in stage_figures(table, metrics).items():
    save_figure(fig, out_dir, name)

# %% [markdown]
# ## The same images across sparsities (yellow: the ground-truth mask)

# %%
fig = plot_gallery(scores.gallery, scores.attributions)
save_figure(fig, out_dir, "gallery")
