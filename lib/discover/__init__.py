"""The discover step (RQ2): unsupervised object discovery with a (pruned) backbone's last feature map: LOST, TokenCut, CorLoc.

- ``features``: :class:`PatchFeatures` (CNN maps with LOST's LayerNorm, optional dilation; ViT q/k/v/tokens)
- ``methods``:  :class:`LOST`, :class:`TokenCut` (one box per image on the patch grid)
- ``metrics``:  :class:`CorLoc` (IoU >= 0.5 with any ground-truth box), mean IoU, the centred-box baseline
- ``run``:      :func:`discover` over every checkpoint of a pruning run (the loop of ``lib.analysis``)
- ``plots``:    the notebook's figures
"""

from lib.discover.features import PatchFeatures, dilate_last_stages  # noqa: F401
from lib.discover.methods import LOST, ALGORITHMS, Discovery, TokenCut, build_algorithms, grid_box_to_pixels  # noqa: F401
from lib.discover.metrics import CorLoc, box_iou, centred_baseline, centred_box  # noqa: F401
from lib.discover.plots import gallery_steps, plot_corloc, plot_gallery  # noqa: F401
from lib.discover.run import InputImages, diagnose_features, discover  # noqa: F401
