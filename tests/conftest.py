"""Shared fixtures: the real data in ../shared/data (tests that need it skip with a reason when absent)."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data; skips the test (with the reason) when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SHARED_DATA or put shared/ beside the repository)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """A tiny embedded dataset (seconds to make) shared by the tests of one session."""
    from lib.data import shapes

    root = tmp_path_factory.mktemp("shapes")
    shapes.generate(shapes.ShapesConfig(n_train=64, n_val=32, n_test=32, n_eval=16), root, progress=False)
    return root


@pytest.fixture(scope="session")
def pruned_cnn(tmp_path_factory) -> Path:
    """A pruning stage's output in miniature (seconds to make): ``pruning.json`` and two checkpoints of a seeded,
    untrained small_cnn (10 classes), dense and pruned to half its weights by global magnitude."""
    from lib import io
    from lib.models import create_model, save_checkpoint
    from lib.prune.masks import fold_masks, prunable_parameters, prune_step, sparsity_report

    root, records = tmp_path_factory.mktemp("prune"), []
    for step, target in enumerate((0.0, 0.5)):
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=10)
        params = prunable_parameters(model, ("conv", "linear"), ())
        if target:
            prune_step(model, params, target)
            fold_masks(model)
        file = f"checkpoints/step_{step:02d}.pt"
        save_checkpoint(root / file, model, "small_cnn", 10)
        records.append({"step": step, "file": file, "target": target, "test_acc": None,
                        "sparsity": sparsity_report(model, params)["sparsity"]})
    io.save_json(root / "pruning.json", {"checkpoints": records})
    return root
