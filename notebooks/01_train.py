# %% [markdown]
# # 01 · Training the dense models
#
# Each architecture of the default pipeline is trained from scratch on the embedded dataset with the recipe
# below, once per seed of params.yaml's `seeds` (`seed`: the initialisation, data order and augmentation;
# `lib.train.fit`: a checkpoint every epoch, resumable, DVCLive logs, mixed precision and DistributedDataParallel
# when run on GPUs under `torchrun`). At paper scale `dataset` names real data (e.g.
# ImageNet's train and val splits, `presets/study_a.params.yaml`), and `pretrained` starts from a local weights
# file; with 0 epochs the pretrained model is only evaluated (Study B, `presets/study_b.params.yaml`).
#
# *Deviation from Study A:* ImageNet-1k with 90 (ResNets) or 300 (ViT) epochs there; here a small CNN and
# a small ViT trained for a few epochs on two CPU cores.

# %% tags=["parameters"]
arch = "cnn"
seed = 0  # the network's seed (params.yaml `seeds`): initialisation, data order, augmentation
model = "small_cnn"
model_kwargs = {}
data_dir = "data/smoke/shapes"
dataset = {}  # paper scale: e.g. {"name": "imagenet", "root": "/data/imagenet", "num_classes": 1000, ...}
pretrained = {}  # start from local weights, e.g. {"weights": "googlenet.pth", "drop_keys": ["aux1."]}; epochs 0: as is
recipe = {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
          "schedule": "cosine", "augment": ["flip", "crop"]}
out_dir = "data/smoke/train/cnn/seed0"

# %%
import pandas as pd

import lib.project
from lib import storage
from lib.plots import chance_of, plot_learning_curves
from lib.results import save_figure
from lib.train import stage_recipe, train_classifier

lib.project.enter_project()
recipe = stage_recipe(recipe, seed)  # the Recipe the stage's check parsed, with the run's seed
recipe

# %% [markdown]
# ## Train

# %%
result = train_classifier(model, data_dir, recipe, out_dir, model_kwargs=model_kwargs, dataset=dataset,
                          pretrained=pretrained, arch=arch)
history = pd.DataFrame(result.pop('history'))
history

# %% [markdown]
# ## Learning curves

# %%
fig = plot_learning_curves(history, f"{arch}: {model}", chance=chance_of(f"{out_dir}/model.pt"))
save_figure(fig, out_dir, "learning_curves")

# %%
storage.save_json(f'{out_dir}/metrics.json', {'arch': arch, 'seed': seed, **result})
result
