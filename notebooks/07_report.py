# %% [markdown]
# # Report: what pruning does beyond accuracy, tested
#
# Reads exactly the outputs that `params.yaml` declares (the matrix of `archs`, `plans`, `seeds` and `variants`);
# any other `metrics.json` under `data/` (a copied folder, a plan no longer declared) is named below and not read.
#
# **Which test, and what a claim is about.** A sweet spot is the claimable checkpoint with the best mean of a
# metric; its test keeps the selection inside (`lib.stats`).
#
# * *One network per step* (`seeds: [0]`, the embedded default): a max-t paired sign-flip test over the items
#   (Westfall & Young 1993). It is valid **given the networks**: a claim says that this pruned network beats this
#   dense network on these kinds of images. Two trainings differ by a random offset per network, which a test over
#   items takes for an effect, so every verdict says that it is about one network, not about pruning.
# * *Several networks per step* (`seeds: [0, 1, 2]`): the unit of inference is the network. Per seed, the mean
#   over items of each checkpoint minus that seed's dense mean; a one-sample t test over seeds (df = seeds - 1),
#   Bonferroni over the claimable checkpoints for the selected one. Its error rate holds when every (seed,
#   checkpoint) network has its own random offset (the between-network spread is the error term: a
#   random-effects analysis; Bouthillier et al. 2021; Dror et al. 2019 on item-level tests). `p_every_network`
#   (intersection-union: every seed's own item-level test rejects, Berger 1982) is shown beside it: it holds
#   "in every one of these networks", a statement given the networks, and no claim rests on it.
# * *What few seeds can show*: with 3 seeds the t test has 2 degrees of freedom; at 80% power, a Bonferroni share
#   of alpha over 11 claimable checkpoints and a family of 16 tests, it needs a gain of about 31 between-network
#   SDs of the per-seed difference (the `detectable_gain` column gives it in the metric's units); 5 seeds need
#   5.5 SDs, 10 seeds 2.0, 20 seeds 1.1. Three seeds show a large, consistent effect or nothing.
# * *Controls*: every claim is also tested against its round's dense-retrained control (same seed, same step,
#   paired per item; "beats dense and its retrained control" is the intersection-union of the two tests). The
#   random_init control's value is the floor (table column `random_init`, dotted in the figure).
# * *Accuracy guard*: a checkpoint may be claimed only when its top-1 drop from dense is at most `tolerance`
#   (absolute) in every network; the others are drawn (shaded) and tabled, never claimed or selected. The table
#   shows the selected checkpoint's `test_acc` and its `accuracy_drop`.
# * *Decisions* (shape bias; error consistency with humans where observer trials exist): a paired swap of the
#   pruned and the dense model's decisions per trial (exchangeable when the two decide alike), Bonferroni over
#   the claimable checkpoints; with several seeds, the network-level t test on their per-network values.
#   Error consistency with the dense model is 1 at dense by definition and is shown, never tested.
# * *What pruning forgets* (`forget`, where `params.yaml` has its section): one number per (arch, plan, step) over
#   the population of seeds, the same in every seed's row. Flips, PIEs and hurt classes are 0 at dense by
#   definition, so no checkpoint can beat dense: they are drawn and tabled as what pruning costs, never tested.
# * *Sanity of the maps* (RQ1, Adebayo et al. 2018): an attribution whose maps stay rank-correlated with those of
#   the same network with random weights (at or above the threshold in any output read) has every score marked in
#   the `sanity` column, and its verdicts say to read its trends as the image's, not the network's.
# * *The family*: every test against dense and every test against the control, Holm (family-wise) at `alpha`.
#   Where even the smallest p a test can give, times the family's size, is above `alpha`, the verdict reads
#   "too few items for a claim among N tests"; otherwise a "no" gives the gain it could have detected (80%
#   power, from the spread of the claimable checkpoints, at the family's multiplier).

# %% tags=["parameters"]
root = "data/smoke"
params_file: str | None = None  # the params file whose matrix (archs, plans, seeds, variants) the report reads
                             # (the pipeline: params.yaml); None: every output under root (this smoke run)
tolerance = 0.02            # accuracy guard: the largest top-1 drop from dense (absolute) of a claimable checkpoint
n_resamples = 2000          # sign flips / swaps / bootstrap resamples per test
alpha = 0.05                # error rate of the whole report
correction = "holm"         # holm (family-wise) | bh (false discovery rate)
seed = 0
out_dir = "data/smoke/report"

# %%
import lib.project
from lib import storage
from lib.report import (chance_levels, dimension_correlations, family_table, load_dimensions, parameter_counts,
                        plot_claims, plot_dimensions, read_matrix, readable, show, sparsity_table, undeclared_outputs)
from lib.results import save_figure

lib.project.enter_project()
matrix = read_matrix(params_file)
ignored = undeclared_outputs(root, matrix)
print("matrix:", matrix)
print(f"not read ({len(ignored)} outputs that params.yaml does not declare):", *ignored, sep="\n  ")
frame, columns = load_dimensions(root, matrix)
frame.round(3)

# %% [markdown]
# ## Sweet spots: tested against dense and the retrained control, error rate controlled across the report

# %%
spots, points = family_table(root, frame, columns, n_resamples=n_resamples, seed=seed, alpha=alpha,
                             correction=correction, tolerance=tolerance)
spots.insert(1, "params", spots["arch"].map(parameter_counts(root)) if len(spots) else [])
show(readable(spots))

# %% [markdown]
# ## The answer: each checkpoint's interval, dense and the controls, the accuracy guard, the claims

# %%
for arch in sorted(frame["arch"].unique()):
    save_figure(plot_claims(points, spots, arch, tolerance), out_dir, f"claims_{arch}")

# %% [markdown]
# ## Every dimension against sparsity (mean over seeds), one page per architecture

# %%
for arch in sorted(frame["arch"].unique()):
    fig = plot_dimensions(frame, columns, arch, chance=chance_levels(root, arch))
    save_figure(fig, out_dir, f"dimensions_{arch}")

# %% [markdown]
# ## Accuracy against sparsity (per seed)

# %%
accuracy = sparsity_table(frame, 'test_acc', index=("arch", "plan", "seed"))
accuracy.round(3)

# %% [markdown]
# ## Correlations between dimensions across checkpoints (Spearman)

# %%
metrics = [c for cols in columns.values() for c in cols]
correlations = {arch: dimension_correlations(part, metrics) for arch, part in frame.groupby("arch")}
for arch, table in correlations.items():
    display(table.round(2))

# %%
storage.save_json(f"{out_dir}/metrics.json", {
    "matrix": matrix,
    "not_read": ignored,
    "tolerance": tolerance,
    "accuracy": {"/".join(map(str, key)): row.dropna().to_dict() for key, row in accuracy.iterrows()},
    "sweet_spots": spots.to_dict("records"),
    "points": points.to_dict("records"),
    "correlations": {arch: table.round(4).to_dict() for arch, table in correlations.items()},
})
storage.save_json(f"{out_dir}/checkpoints.json", frame.to_dict("records"))
