"""The interpret step (RQ1, interpretability): attribution maps of pruned checkpoints, scored against ground-truth object masks.

- ``methods``  captum-style attributions (Grad-CAM, Guided Grad-CAM, IG in SmoothGrad, Saliency,
               ViT attention and rollout) and the ``Attributor`` that shares one forward pass between them
- ``metrics``  relevance maps and their scores: RMA, RRA, pointing game, Gini, deletion/insertion AUC
- ``run``      each checkpoint scored (``score_checkpoints``, on the loop of ``lib.analysis``)
- ``plots``    scores against sparsity with test accuracy, map galleries
"""

from lib.interpret.run import Scores, score_checkpoints, score_model  # noqa: F401
from lib.interpret.methods import (  # noqa: F401
    DEFAULT_ATTRIBUTIONS,
    ATTRIBUTIONS,
    Attributor,
    SharedPass,
    create_attribution,
)
from lib.interpret.metrics import (  # noqa: F401
    DeletionAUC,
    GiniSparseness,
    GroundTruth,
    InsertionAUC,
    PointingGame,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    relevance_map,
    uniform_scores,
)
