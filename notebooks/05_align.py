# %% [markdown]
# # 05 · Alignment with human perception (RQ3)
#
# Study A's third question, measured the way the model-vs-human benchmark does (Geirhos et al., NeurIPS
# 2021; `lib.align`, following bethgelab/model-vs-human's definitions). Every checkpoint of a pruning
# run classifies out-of-distribution images:
#
# - **Decisions.** An ImageNet model's softmax probabilities are mapped to the 16 entry-level categories by
#   averaging over each category's ImageNet classes (the benchmark's WordNet-id lists); the embedded default's
#   models decide among their own classes.
# - **Datasets.** Model-vs-human's cue-conflict, edge and silhouette stimuli (and any of its 17 datasets
#   present under `mvh_root`), with the human observers' trials; for the embedded default its own
#   cue-conflict, edge and silhouette splits, and the benchmark's **12 parametric distortions** (colour,
#   contrast, high-pass, low-pass, phase scrambling, power equalisation, false colour, rotation, Eidolon
#   I/II/III, uniform noise) applied to its test images at the benchmark's condition levels.
# - **Analyses.** 16-class (own-class) accuracy per dataset and condition (OOD accuracy = mean over
#   datasets; a dataset's value leaves out the conditions the benchmark excludes: its control condition
#   and those where humans score below 0.2); **shape bias** on cue-conflict (shape decisions / (shape +
#   texture decisions), images whose shape and texture agree excluded); against every human observer on the same images: **accuracy
#   difference** (squared, as the benchmark), **observed consistency** and **error consistency** (Cohen's
#   kappa of trial-wise correctness, chance agreement from the two accuracies), averaged over observers;
#   the observers compared with each other give the **human ceiling** (shaded: range over observers).
#
# *Deviations from the benchmark:* phase scrambling pairs conjugate frequencies correctly (the released
# code does not); false colour uses a nominal display gamma (the measured one is not published); the Eidolon
# factory's noise standardisation and 2-D blur are fixed as their intent states; eidolons of the 64 px
# embedded images are made at 64 px with reach and grain scaled by 64/256, and `eidolon_fields` independent
# displacement fields per condition are shared in turn by its images (the factory draws one per image). The embedded default has no
# human observers: its consistency is shown with the dense model instead, and says so.

# %% tags=["parameters"]
arch = "cnn"
plan = "lrr"
source = "data/smoke/prune/cnn/lrr/seed0"  # a prune stage's output directory (lib.checkpoints)
data_dir = "data/smoke/shapes"
mvh_root = ""
datasets = ["cue-conflict", "edge", "silhouette"]
n_split = 40
distortions = {"colour": ["cr", "bw"], "contrast": ["c100", "c10"], "high-pass": ["inf", "1.0"],
               "low-pass": ["0", "3"], "phase-scrambling": ["0", "90"], "power-equalisation": ["0", "pow"],
               "false-colour": ["True", "False"], "rotation": ["0", "180"], "eidolonI": ["1-10-10", "16-10-10"],
               "eidolonII": ["1-3-10", "16-3-10"], "eidolonIII": ["1-0-10", "16-0-10"],
               "uniform-noise": ["0.0", "0.2"]}
n_images = 10
eidolon_size = 64
eidolon_fields = 4
image_size = 224
seed = 0
accuracy_over = "ood_conditions"  # ood_conditions (the benchmark's aggregation) | all_images (Study A)
batch_size = 256
out_dir = "data/smoke/align/cnn/lrr/seed0"

# %%
import pandas as pd

import lib.project
from lib.align.metrics import checkpoint_rows, human_summary, per_image
from lib.align.plots import distortion_levels, plot_examples, stage_figures
from lib.align.run import configure, decide_checkpoints, evaluation_set, save_observer_trials
from lib.results import save_figure, save_stage_metrics, source_lineage

lib.project.enter_project()
# every parameter checked and parsed once, before any compute (the stage's check is this same call)
run = configure(source, data_dir, mvh_root, datasets, distortions, n_images, n_split, seed, eidolon_size,
                eidolon_fields, image_size, accuracy_over, batch_size, state_dir=f"{out_dir}/state")
evaluation = evaluation_set(run)
pd.DataFrame([{"dataset": c.dataset, "condition": c.condition, "images": len(c.images)} for c in evaluation.conditions])

# %% [markdown]
# ## Stimuli (first image of every condition), prepared once for all checkpoints

# %%
save_figure(plot_examples(evaluation), out_dir, 'stimuli')

# %% [markdown]
# ## Decisions of every checkpoint

# %%
records, trials = decide_checkpoints(run, evaluation)
frame = pd.DataFrame(checkpoint_rows(records, trials, evaluation.humans, run.accuracy_over)).assign(arch=arch, plan=plan)
frame.set_index("step").T

# %% [markdown]
# ## The human observers: accuracy, shape bias and mutual consistency (the ceiling)
#
# Empty for the embedded default, which has no human observers.

# %%
humans = human_summary(evaluation.humans)
pd.DataFrame(humans).T

# %% [markdown]
# ## Metrics
#
# Beside the per-trial table, `human_trials.csv`: the observers' trials of the images the model decided (none for
# the embedded default), from which the report recomputes `ec_humans` for its test of every checkpoint against dense.
# `metrics.json` also holds what the figures below are drawn from besides the tables (`lib.redraw` draws them again
# from the folder): the datasets, the observers' summary, chance and the distortions' levels.

# %%
metrics = {"arch": arch, "plan": plan, **source_lineage(source), "datasets": evaluation.datasets, "humans": humans,
           "chance": {m: 1 / len(evaluation.categories) for m in ("ood_acc", "ood_acc_all_images")},
           "distortions": distortion_levels(run.distortions)}
trial_table = per_image(trials, run.accuracy_over)
save_stage_metrics(out_dir, frame.to_dict("records"), plot="alignment", per_image=trial_table, **metrics)
save_observer_trials(out_dir, evaluation.humans, trials)

# %% [markdown]
# ## Figures
#
# `accuracy`: OOD accuracy against sparsity, per dataset (dashed: chance); `shape_bias`: shape bias on cue-conflict
# (no cue-conflict dataset: no figure); `error_consistency`: error consistency against sparsity; `distortions`:
# accuracy against distortion level, one line per checkpoint (no parametric distortions: no figure).

# %%
for name, fig in stage_figures(frame, trial_table, metrics).items():
    if fig is not None:
        save_figure(fig, out_dir, name)
