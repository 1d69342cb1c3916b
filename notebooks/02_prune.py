# %% [markdown]
# # 02 · Pruning
#
# **Methods** (`lib.prune.methods`), each selecting by L1 norm or at random (the control), over all
# prunable layers at once (`scope: global`) or layer by layer (`scope: layer`):
# - `unstructured`: single weights (Study A; Study B's unstructured sparsity);
# - `filters` (Study B's structured sparsity): whole output channels of a convolution (rows of a linear layer),
#   each with its bias and its batch-norm channel, so the removed channel outputs exactly zero;
# - `connections` (Study B's connection sparsity): whole input channels of a convolution (columns of a linear layer).
#
# Which layers are prunable is a parameter (`layers`: conv, linear; the classifier is excluded with
# `exclude_classifier`, other modules with `exclude`); sparsity is the share of the prunable weights removed.
#
# **Schedules** (`lib.prune.schedules`): `lrr`, Study A's learning-rate rewinding (each round removes `rate`
# of the remaining weights and retrains with the full recipe, optimizer and schedule rebuilt; round *i* has
# sparsity 1 - (1 - `rate`)^i, the rounds stopping once it reaches `threshold`: the pipeline's plan, params.yaml
# `prune.lrr.plan` and this notebook's default, removes 50% a round, 3 rounds to 87.5%; Study A's 20% a round is
# `presets/study_a.params.yaml`); `oneshot`, Study B's one-shot retraining (prune the dense
# model to each target, retrain; with `recipe["epochs"]` 0 no retraining at all: the pruned weights as they are, as
# `presets/lite0.params.yaml` prunes the pretrained EfficientNet-Lite0 for every analysis); `iterative`, Study B's iterative retraining (prune/retrain steps up to each
# target in turn, the first in `steps` steps). Every step is a checkpoint (`checkpoints/step_XX.pt`: folded
# weights and masks) listed in `pruning.json` with its accuracy and accounting: parameters and zeros per layer
# and in total, removed filters/connections per layer, MACs of the dense model, of its non-zero weights and of
# the compacted model (channels physically removed with torch-pruning, `lib.prune.compaction`); step 0 is the
# dense model.
#
# The default pipeline runs one plan on one model trained in `01` (`plan_overrides` changes fields of the
# plan for one architecture, e.g. Study A's 99.7% threshold for the ResNets); the presets run grids of dense models
# (`models`) and plans (`plans`) on real data (`dataset`), e.g. `presets/cifar10_resnet.yaml` (Study B's
# protocol in miniature on the pretrained CIFAR-10 ResNet-20/56, retrained on half of the CIFAR-10 test split
# and tested on the other half) and `presets/studyB_googlenet.yaml` (Study B at paper scale).
#
# **Seeds and controls.** The pipeline runs every plan once per seed of params.yaml's `seeds` (`seed`: retraining
# and random selection; the dense model is that seed's network from `01`). Two plans are controls, scored by every
# analysis like any plan: `control: retrained` (`control_of: lrr`) follows the named plan's schedule with nothing
# pruned, so its step r has had exactly the retraining of the pruned step r (`retrain_epochs`) and tells pruning
# from more training; `control: random_init` is one network of the architecture freshly initialised from the seed,
# the floor every score must clear.
#
# *Deviations.* Study A: each round retrains with the rewound schedule of a short recipe (`recipe["epochs"]`),
# not the 90/300 ImageNet epochs; the smoke threshold is lower than 95%. Study B: retraining is far shorter
# than its 50+ epochs (the CIFAR-10 preset: one epoch on 5,000 images per step, at lr 0.001 instead of 0.01,
# which makes the model drift on so little data); a filter is removed together
# with its batch-norm channel (Study B zeroes the filter only, which leaves the channel's batch-norm shift);
# global structured selection ranks channels by mean absolute weight (L1 norm / channel size) so that layers
# of different widths compare; structured pruners keep at least one channel per layer. The CIFAR-10 retraining
# images get the augmentation the released ResNets were trained with (black 4-pixel padding, random crop, flip):
# their batch-norm statistics depend on it (`lib/data/cifar10.py`).

# %% tags=["parameters"]
arch = "cnn"
plan_name = "lrr"
seed = 0  # the run's seed (params.yaml `seeds`): retraining and random selection; train_dir holds this seed's network
control: str | None = None  # a control instead of a pruned plan: retrained (plan, nothing pruned) | random_init
control_of: str | None = None  # retrained: the name of the pruned plan it controls
data_dir = "data/smoke/shapes"
train_dir = "data/smoke/train/cnn/seed0"
# params.yaml prune.lrr.plan, the pipeline's (the smoke run prunes as the pipeline does: 50%, 75%, 87.5%)
plan = {"schedule": "lrr", "rate": 0.5, "threshold": 0.85, "layers": ["conv", "linear"], "exclude_classifier": True}
recipe = {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "cosine", "augment": ["flip", "crop"]}
# Presets: real data and grids of dense models x plans (empty: one run of `plan` on the model in train_dir)
dataset = {}
models = {}
plans = {}
plan_overrides = {}  # per architecture: fields replacing the plan's, e.g. {"threshold": 0.997}
out_dir = "data/smoke/prune/cnn/lrr/seed0"

# %%
import pandas as pd

import lib.project
from lib.prune.plots import stage_figures
from lib.prune.runs import accuracy_table, configure, layer_table, prune, save_results
from lib.plots import chance_levels
from lib.results import save_figure

lib.project.enter_project()
# every parameter checked and parsed once, before any compute (the stage's check is this same call): the plans
# and the retraining recipe that run, their defaults filled in
run = configure(arch, plan_name, train_dir, plan, recipe, out_dir, data_dir, dataset=dataset, models=models, plans=plans,
                plan_overrides=plan_overrides, seed=seed, control=control, control_of=control_of)
run.plans

# %% [markdown]
# ## Prune and retrain

# %%
results = prune(run)
frame = pd.DataFrame(results["rows"])
frame[["arch", "plan", "step", "target", "sparsity", "test_acc", "pruned_acc", "val_acc", "retrain_epochs",
       "removed_share", "compacted_macs_ratio"]]

# %% [markdown]
# ## Dense models (`full_acc`: the whole split, where the data has one)

# %%
pd.DataFrame(results['dense']).T

# %% [markdown]
# ## Test accuracy by target sparsity (%)

# %%
accuracy_table(frame).round(4)

# %% [markdown]
# ## Test accuracy before retraining (%): the pruned model as pruning left it

# %%
accuracy_table(frame, "pruned_acc").round(4)

# %% [markdown]
# ## Sparsity per layer (first run)

# %%
layer_table(next(iter(results['records'].values()))).round(3)

# %% [markdown]
# ## Metrics, and accuracy against sparsity
#
# `metrics.json` also records chance (1 / the classes of the trained model; a grid's models are not in train_dir:
# not given), which the figure draws; `lib.redraw` draws it again from the folder.

# %%
chance = {} if models else chance_levels(f"{train_dir}/model.pt")
save_results(out_dir, results, arch, plan_name, chance)
for name, fig in stage_figures(frame, {"chance": chance}).items():
    save_figure(fig, out_dir, name)
