"""Per-unit interpretability: the Machine Interpretability Score (Zimmermann, Klindt, Brendel, NeurIPS 2024).

- ``activations``: spatial-mean activation of every unit of chosen layers on a pool, one pass per model;
- ``tasks``: IMI's tasks (most/least activating explanations and queries) as index tensors;
- ``similarity``: perceptual similarity backends (DreamSim when available offline, EfficientNet-Lite0, pixels);
- ``embeddings``: the pool's embeddings, computed once per (pool, backend) and cached;
- ``methods``: ``MIS(similarity)(activations)``, every unit and task at once;
- ``metrics``: a model's MIS level, the per-class table of its output units, rank correlations;
- ``run``: every checkpoint of a pruning run scored (the loop of ``lib.analysis``), and the controls;
- ``plots``: the notebook's figures.
"""

from lib.mis.activations import OUTPUT_LAYERS, constant_units, default_layers, unit_activations  # noqa: F401
# lib.mis.embeddings is not imported here: it is also a script (python -m lib.mis.embeddings), and runpy
# warns when the package has already imported the module it is asked to run.
from lib.mis.methods import MIS, UnitScores  # noqa: F401
from lib.mis.similarity import BackendUnavailable, create_backend, similarity_matrix  # noqa: F401
from lib.mis.tasks import TaskConfig, Tasks, build_tasks  # noqa: F401
