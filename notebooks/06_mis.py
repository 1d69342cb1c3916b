# %% [markdown]
# # 06 · Unit interpretability: the Machine Interpretability Score (Study B)
#
# Study B (von Rad & Seuffert) measures interpretability **per unit** with the Machine Interpretability
# Score (MIS; Zimmermann, Klindt & Brendel, NeurIPS 2024), which predicts without humans how well people
# would do IMI's psychophysics task for one unit (`lib.mis`):
#
# 1. **Activations.** One batched forward pass per checkpoint over an image pool; each unit's activation is
#    the spatial mean of its channel (ViTs: the mean over patch tokens). Layers: every block of the main
#    stack, the classifier's logits and their softmax (`layers`). Units with a range below 1e-8 are constant
#    and skipped.
# 2. **Tasks (IMI).** Per unit the pool is sorted; on each side the first `n_explanations` images are
#    explanations and the next `n_queries` queries. Task *t* shows `per_task` positive and `per_task`
#    negative explanations (disjoint strided ranks) and one query from each end (the paper: 180 + 20 per
#    side, 20 tasks of 9 + 9; scaled down with a warning when the pool is too small).
# 3. **Similarity.** A perceptual embedding of every pool image, computed once and cached for all
#    checkpoints; the similarity of two images is the cosine of their embeddings. Each query's margin is its
#    mean similarity to the positive minus to the negative explanations.
# 4. **Score.** Per task, sigmoid(`alpha` x (margin of the max-query - margin of the min-query)), the
#    probability that the machine picks the right query; a unit's MIS is its mean over tasks. Model-level
#    MIS is the mean over the hidden units (5-95 percentile band); the logit and softmax units are reported
#    apart. The plain share of tasks solved is reported beside it.
#
# Study B's analyses follow: MIS against the pruning rate with Spearman's rank correlation, the MIS of the
# classifier's units against per-class accuracy, networks at chance accuracy (randomly re-initialised,
# pruned to collapse without retraining) as a control, and per-layer profiles.
#
# *Deviations.* DreamSim (the paper's similarity) needs weights that are downloaded at first use; it is used
# only when installed with its weights already local, otherwise EfficientNet-Lite0's ImageNet features are
# the similarity (`lite0`; a supervised classifier, not a human-similarity model) with raw pixels as a floor.
# `alpha` was fitted to human data in the paper and is not public: a parameter here. The pool is a split of
# the embedded dataset (ImageNet train in the paper), so the task counts are scaled to it. Ties in the
# ranking are broken at random (seeded), not by the pool's order.

# %% tags=["parameters"]
arch = "cnn"
plan = "lrr"
data_dir = "data/smoke/shapes"
source = "data/smoke/prune/cnn/lrr/seed0"  # a prune stage's output directory (lib.checkpoints)
pool = {"split": "test"}
backends = [{"name": "lite0", "image_size": 128}, {"name": "pixel", "image_size": 32}]
embeddings_dir = "data/smoke/mis/embeddings"
layers = None  # None: every block of the main stack, then "logits" and "softmax"
tasks = {"n_explanations": 20, "n_queries": 5, "n_tasks": 5, "per_task": 4}
alpha = 16.0
aggregation = "mean"
controls = {"random_init": True, "collapse_sparsity": 0.99}
seed = 0
batch_size = 128
out_dir = "data/smoke/mis/cnn/lrr/seed0"

# %%
import pandas as pd

import lib.project
from lib.data.image_pool import load_pool
from lib.mis.metrics import class_table_correlations, trend_table
from lib.mis.plots import plot_unit_tasks, stage_figures
from lib.mis.run import build_scorers, configure, save_tables, score
from lib.plots import chance_levels
from lib.results import save_figure, save_stage_metrics, source_lineage

lib.project.enter_project()
# every parameter checked and parsed once, before any compute (the stage's check is this same call): the backends
# built, the task counts parsed
run = configure(source, data_dir, pool, backends, tasks, embeddings_dir, layers, alpha, aggregation, controls, seed,
                batch_size, state_dir=f"{out_dir}/state")
images = load_pool(run.pool, run.data_dir)
print(f"pool: {len(images)} images of {images.image_size} px ({images.source}); "
      f"backends: {[b.name for b in run.backends]}")

# %% [markdown]
# ## Similarity of every pair of pool images (embeddings cached per pool and backend)

# %%
scorers = build_scorers(images, list(run.backends), run.embeddings_dir, run.tasks, run.alpha, run.aggregation, run.seed)
primary = run.backends[0].name
scorers[primary].tasks

# %% [markdown]
# ## MIS of every unit of every checkpoint, and of the controls

# %%
result, control = score(run, images, scorers)
pd.concat([result.checkpoints, control.checkpoints], ignore_index=True).drop(columns="model").round(3)

# %% [markdown]
# ## MIS against sparsity: Spearman's rank correlation over the checkpoints

# %%
trend = trend_table(result.checkpoints)
trend.round(4)

# %% [markdown]
# ## Mean MIS per layer and checkpoint

# %%
result.layers[result.layers.backend == primary].pivot_table(index="layer", columns="sparsity", values="mis", sort=False).round(3)

# %% [markdown]
# ## The classifier's units against per-class accuracy
#
# Study B reports a low MIS for the softmax layer's units that does not follow class accuracy: for every
# checkpoint, the rank correlation across classes between the MIS of a class's logit (softmax) unit and the
# accuracy on that class's pool images (undefined, NaN, where every class has the same accuracy).

# %%
class_units = class_table_correlations(result.classes)
class_units.round(3)

# %% [markdown]
# ## Control: networks at chance accuracy
#
# Study B finds that networks at about chance accuracy still score a high MIS. The same architecture with
# freshly drawn weights (`random_init`) and the dense model pruned to `collapse_sparsity` without retraining
# (`collapse`) are scored exactly like the checkpoints.

# %%
control.checkpoints.drop(columns='model').round(3) if not control.checkpoints.empty else 'no controls'

# %% [markdown]
# ## One task of the dense model's most and least interpretable unit

# %%
if result.examples:
    save_figure(plot_unit_tasks(images, result.examples), out_dir, "mis_tasks")

# %% [markdown]
# ## Metrics
#
# Beside the tables, `metrics.json` holds what the figures below are drawn from (`lib.redraw` draws them again from
# the folder): the primary backend, the controls' rows and chance (1 / the network's classes).

# %%
rows = result.checkpoints.drop(columns="model").assign(arch=arch, plan=plan).to_dict("records")
metrics = {"arch": arch, "plan": plan, **source_lineage(source), "similarity": primary,
           "backends": [b.config() for b in run.backends], "pool": {"source": images.source, "images": len(images)},
           "tasks": vars(scorers[primary].tasks), "alpha": run.alpha, "aggregation": run.aggregation,
           "spearman": trend.set_index("metric").to_dict("index"),
           "controls": control.checkpoints.drop(columns="model", errors="ignore").to_dict("records"),
           "class_units": class_units.to_dict("records"), "chance": chance_levels(source)}
save_stage_metrics(out_dir, rows, plot="mis", **metrics)
save_tables(out_dir, result, control)

# %% [markdown]
# ## Figures
#
# `mis`: MIS against sparsity, accuracy on the second axis (the controls marked); `mis_units`: the distribution of
# the units' MIS per checkpoint; `mis_layers`: mean MIS per layer; `mis_classes`: the classifier's units against
# per-class accuracy (where the pool has labels).

# %%
for name, fig in stage_figures(pd.DataFrame(rows), result.units, result.layers, result.classes, metrics).items():
    if fig is not None:
        save_figure(fig, out_dir, name)
