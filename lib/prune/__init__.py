"""Pruning: prunable layers, masks, Study B's pruners, schedules, accounting and compaction.

- ``masks``: which weights are prunable, masks as parametrizations, folding, sparsity report;
- ``methods``: ``Unstructured``, ``Filters``, ``Connections`` (L1 or random, global or per layer, masked or
  zeroed once); ``masks`` is the lower layer (it imports nothing from ``methods``);
- ``schedules``: ``PruningPlan`` (pruner + schedule: lrr / iterative / oneshot) and ``run_schedule``;
- ``accounting``: parameters, zeros, removed channels and MACs (dense, sparse, compacted);
- ``compaction``: physically smaller models that compute the same function, saved without pickles;
- ``runs``: the prune notebook's driver (datasets, pretrained dense models, grids of runs).
"""

from lib.prune.accounting import accounting, layer_macs  # noqa: F401
from lib.prune.compaction import CompactionError, compact, load_compacted, save_compacted  # noqa: F401
from lib.prune.masks import (  # noqa: F401
    Prunable,
    apply_masks,
    current_masks,
    fold_masks,
    prunable_parameters,
    prune_step,
    sparsity_report,
)
from lib.prune.methods import Connections, Filters, Unstructured, get_pruner  # noqa: F401
from lib.prune.schedules import PruningPlan, list_checkpoints, run_schedule  # noqa: F401
