"""Training: the recipe, the input pipeline, the seeded loop and the train stage, one module each.

- ``lib.train.recipe``: :class:`Recipe` (a run's parameters), :func:`with_seed`, :func:`seed_everything`;
- ``lib.train.loaders``: seeded per-item augmentation, global batches across ranks, DataLoaders;
- ``lib.train.loop``: :func:`fit` (a checkpoint every epoch, resume, AMP, DDP), :func:`evaluate`, the resume key;
- ``lib.train.stage``: the train stage's check (:func:`check_stage`) and driver (:func:`train_classifier`).

Everything is importable from ``lib.train`` itself, as before the split.
"""

from lib.train.loaders import (  # noqa: F401
    Augmented,
    GlobalBatchSampler,
    SeededBatches,
    build_augmentation,
    default_workers,
    item_seed,
    make_loader,
)
from lib.train.loop import (  # noqa: F401
    AUX_WEIGHT,
    build_optimizer,
    build_scheduler,
    data_identity,
    evaluate,
    fit,
    log_history,
    predict,
)
from lib.train.recipe import Recipe, seed_everything, with_seed  # noqa: F401
from lib.train.stage import check_stage, check_training, has_weights, stage_recipe, train_classifier  # noqa: F401
