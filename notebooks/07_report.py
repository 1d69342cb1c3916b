# %% [markdown]
# ## Sweet spots: selection-aware tests, error rate controlled across the report

# %% tags=["parameters"]
root = "data/smoke"
n_resamples = 2000          # sign flips / bootstrap resamples per test
alpha = 0.05                # error rate of the whole report
correction = "holm"         # holm (family-wise) | bh (false discovery rate)
seed = 0
out_dir = "data/smoke/report"

# %%
import lib.stage
from lib import storage
from lib.report import (chance_levels, dimension_correlations, load_dimensions, parameter_counts, plot_dimensions,
                        sparsity_table, sweet_spot_table)
from lib.results import save_figure

lib.stage.enter_project()
frame, columns = load_dimensions(root)
print({stage: cols for stage, cols in columns.items()})
frame.round(3)

# %% [markdown]
# ## Every dimension against sparsity, one page per architecture

# %%
for arch in sorted(frame["arch"].unique()):
    fig = plot_dimensions(frame, columns, arch, chance=chance_levels(root, arch))
    save_figure(fig, out_dir, f"dimensions_{arch}")

# %% [markdown]
# ## Accuracy against sparsity

# %%
accuracy = sparsity_table(frame, 'test_acc')
accuracy.round(3)

# %% [markdown]
# ## Sweet spots: selection-aware tests, error rate controlled across the report

# %%
spots = sweet_spot_table(root, frame, columns, n_resamples=n_resamples, seed=seed, alpha=alpha, correction=correction)
spots.insert(1, "params", spots["arch"].map(parameter_counts(root)) if len(spots) else [])
shown = [c for c in ["arch", "params", "plan", "metric", "dense", "value", "sparsity", "gain_interval",
                     "sparsity_interval", "p_value", "p_adjusted", "detectable_gain", "verdict"] if c in spots]
spots[shown].round(3)

# %% [markdown]
# ## Correlations between dimensions across checkpoints (Spearman)

# %%
metrics = [c for cols in columns.values() for c in cols]
correlations = {arch: dimension_correlations(part, metrics) for arch, part in frame.groupby("arch")}
for arch, table in correlations.items():
    display(table.round(2))

# %%
storage.save_json(f"{out_dir}/metrics.json", {
    "accuracy": {f"{a}/{m}": row.dropna().to_dict() for (a, m), row in accuracy.iterrows()},
    "sweet_spots": spots.to_dict("records"),
    "correlations": {arch: table.round(4).to_dict() for arch, table in correlations.items()},
})
storage.save_json(f"{out_dir}/checkpoints.json", frame.to_dict("records"))
