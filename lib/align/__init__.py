"""The align step (RQ3): alignment with human perception the model-vs-human way (Geirhos et al., NeurIPS 2021).

- ``methods``      how outputs become decisions: the 16 entry-level categories and the ImageNet-1k -> 16
                   mapping, or the model's own classes
- ``distortions``  the 12 parametric distortions as transforms for any image set (``eidolon``: the Eidolon factory)
- ``metrics``      accuracy, accuracy difference, shape bias, error consistency (one small class each), and
                   each checkpoint's row and per-trial table from its decisions
- ``run``          evaluation sets prepared once, every checkpoint's decisions (the loop of ``lib.analysis``)
- ``plots``        figures in the benchmark's style
"""
