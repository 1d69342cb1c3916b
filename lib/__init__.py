"""Helper library for "what does pruning do to a vision network beyond its accuracy?".

Modules map to the research steps:

- ``lib.data``        datasets: the embedded procedural default and loaders for real ones
- ``lib.models``      one model registry and factory (``create_model``), checkpoints
- ``lib.train``       the seeded training loop (resume, DVCLive, DDP)
- ``lib.prune``       pruners, schedules (LRR, one-shot, iterative), accounting
- ``lib.stage``       running a notebook as a DVC stage, parameter validation
- ``lib.storage``          atomic writes and safe loading
"""

__version__ = "0.1.0"
