# %% [markdown]
# # 00 · The embedded dataset
#
# Procedurally generated textured shapes on cluttered backgrounds (`lib.data.shapes`). Each class is a
# (shape, texture) pair, so shape and texture are two separable cues for the class; every image has its
# exact object mask and tight bounding box. Besides train/val/test, three evaluation splits follow the
# model-vs-human stimuli: **cue_conflict** (shape of one class, texture of another), **edge** (outline
# only) and **silhouette** (filled shape only). Deterministic from `seed`; nothing is downloaded.
#
# *Deviation from the papers:* Study A uses ImageNet, VOC and model-vs-human; this is the offline stand-in
# that keeps every code path and changes only sizes.

# %% tags=["parameters"]
seed = 0
image_size = 64
num_classes = 10
n_train = 200
n_val = 50
n_test = 100
n_eval = 40
distractors = 3
out_dir = "data/smoke/shapes"

# %%
import lib.project
from lib import storage
from lib.data import shapes
from lib.results import save_figure

lib.project.enter_project()
config = shapes.ShapesConfig(seed=seed, image_size=image_size, num_classes=num_classes, n_train=n_train,
                             n_val=n_val, n_test=n_test, n_eval=n_eval, distractors=distractors)

# %% [markdown]
# ## Generate every split

# %%
shapes.generate(config, out_dir)
shapes.load_meta(out_dir)['classes']

# %% [markdown]
# ## Examples (yellow: the ground-truth box)

# %%
fig = shapes.plot_examples(out_dir)
save_figure(fig, out_dir, 'examples')

# %%
summary = shapes.summary(out_dir)
storage.save_json(f'{out_dir}/summary.json', summary)
summary
