"""Shared fixtures: the real data in ../shared/data, or $PRUNING_SHARED_DATA (tests that need it skip with a reason
when absent)."""

from pathlib import Path

import pytest
import torch

from lib import settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = settings.shared_data(ROOT)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data; skips the test (with the reason) when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set {settings.SHARED_DATA_ENV} or put shared/ beside the "
                    "repository)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """A tiny embedded dataset (seconds to make) shared by the tests of one session."""
    from lib.data import shapes

    root = tmp_path_factory.mktemp("shapes")
    shapes.generate(shapes.ShapesConfig(n_train=64, n_val=32, n_test=32, n_eval=16), root, progress=False)
    return root


@pytest.fixture(scope="session")
def pruned_source(tmp_path_factory):
    """A prune stage's output as notebook 02 writes it (checkpoints + manifest): ``model`` with its initial
    weights (random, or a package's pretrained ones through ``model_kwargs``) pruned one-shot by global L1
    magnitude to each of ``targets`` without retraining (a oneshot plan, recipe epochs 0), scored on a few random
    images. Call it as ``pruned_source(model, targets, num_classes=..., model_kwargs=...)``; one run per argument
    set per session."""
    made = {}

    def make(model: str = "small_cnn", targets=(0.5,), num_classes: int = 10, model_kwargs: dict | None = None,
             image_size: int = 32) -> str:
        key = (model, tuple(targets), num_classes, repr(model_kwargs), image_size)
        if key not in made:
            from lib.models import create_model, save_checkpoint
            from lib.prune.schedules import PruningPlan, run_schedule
            from lib.train import Recipe

            out = tmp_path_factory.mktemp(f"prune-{model}")
            torch.manual_seed(0)
            dense = save_checkpoint(out / "dense.pt", create_model(model, num_classes=num_classes, **(model_kwargs or {})),
                                    model, num_classes, model_kwargs or {})
            images = torch.randn(4, 3, image_size, image_size)
            split = torch.utils.data.TensorDataset(images, torch.arange(4) % num_classes)
            data = {"train": split, "val": split, "test": split, "image_size": image_size, "id": "random images"}
            plan = PruningPlan(schedule="oneshot", targets=tuple(targets))
            run_schedule(dense, plan, Recipe(epochs=0), data, out / "run", progress=False)
            made[key] = str(out / "run")
        return made[key]

    return make


@pytest.fixture(scope="session")
def pruned_cnn(pruned_source) -> Path:
    """A prune stage's output in miniature: a seeded, untrained small_cnn (10 classes), dense and pruned
    one-shot to half its weights by global magnitude."""
    return Path(pruned_source("small_cnn", targets=(0.5,)))


@pytest.fixture
def teacher_calls(monkeypatch) -> dict:
    """Counts the distillation teacher's forward calls (``calls["n"]``), the calls still made for real."""
    from lib import distill

    calls = {"n": 0}
    real = distill.Distiller.teacher_logits

    def counted(self, x):
        calls["n"] += 1
        return real(self, x)

    monkeypatch.setattr(distill.Distiller, "teacher_logits", counted)
    return calls
