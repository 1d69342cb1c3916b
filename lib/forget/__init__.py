"""The forget step: what pruning gives up, image by image and class by class (Hooker et al. 2019).

- ``methods``  predictions, modal labels over a population of seeds, flips and pruning-identified exemplars (PIEs)
- ``metrics``  the per-image table, per-class changes with Welch's t over seeds, the checkpoint rows, the most
               forgotten images, and the join with the other stages' per-image tables
- ``run``      every seed's checkpoints predict every image (the loop of ``lib.analysis``), then the metrics
- ``plots``    flips and PIEs against sparsity, per-class changes, the gallery, the other dimensions
"""

from lib.forget.methods import MIN_POPULATION, flips, modal_label, pies, predict  # noqa: F401
from lib.forget.metrics import (  # noqa: F401
    canonical_image,
    checkpoint_rows,
    class_changes,
    compare_forgotten,
    join_dimensions,
    most_forgotten,
    per_image,
    welch_t,
    with_flips,
)
from lib.forget.plots import plot_class_changes, plot_dimensions, plot_forgetting, plot_gallery  # noqa: F401
from lib.forget.run import (  # noqa: F401
    Forgetting,
    across_dimensions,
    check_stage,
    class_names,
    forget,
    read_items,
    save_tables,
    seed_dir,
)
