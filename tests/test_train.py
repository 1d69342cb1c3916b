import pytest
import torch

import lib.train as train
import lib.train.loop as loop
from lib.data import shapes
from lib.models import create_model
from lib.train import Recipe, fit, seed_everything

RECIPE = Recipe(epochs=2, batch_size=16, lr=0.05, seed=3)


def _run(data, state_dir, recipe=RECIPE):
    seed_everything(recipe.seed)
    model = create_model("small_cnn", num_classes=10, widths=(4, 8, 8, 8))
    history = fit(model, data["train"], data["val"], recipe, state_dir, image_size=64, progress=False)["history"]
    return model, history


@pytest.fixture(scope="module")
def data(tiny_shapes):
    return shapes.datasets(tiny_shapes)


def test_training_is_deterministic_on_cpu(data, tmp_path):
    a, history_a = _run(data, tmp_path / "a")
    b, history_b = _run(data, tmp_path / "b")
    assert history_a == history_b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert (tmp_path / "a" / "last.pt").is_file()  # the per-epoch checkpoint


def test_interrupted_training_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    reference, _ = _run(data, tmp_path / "reference")
    calls = {"n": 0}
    real_evaluate = train.evaluate

    def evaluate_then_crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the end of epoch 2, before its checkpoint is written
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate_then_crash)  # what fit calls
    with pytest.raises(KeyboardInterrupt):
        _run(data, tmp_path / "run")
    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    resumed, history = _run(data, tmp_path / "run")
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(torch.equal(x, y) for x, y in zip(reference.state_dict().values(), resumed.state_dict().values()))


def test_a_state_of_another_run_is_not_resumed(data, tmp_path):
    _run(data, tmp_path / "s")
    other = Recipe(epochs=2, batch_size=16, lr=0.01, seed=3)
    _, history = _run(data, tmp_path / "s", other)
    assert [h["epoch"] for h in history] == [1, 2]  # trained from scratch, not resumed


def test_recipe_validation_names_the_field():
    with pytest.raises(ValueError, match="optimizer"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown training parameter"):
        Recipe.from_dict({"epoch": 3})


def test_schedules_anneal_and_warm_up():
    model = torch.nn.Linear(2, 2)
    for schedule in ("cosine", "step", "exponential", "constant"):
        recipe = Recipe(epochs=4, lr=0.1, schedule=schedule, step_size=2, gamma=0.5, warmup_epochs=1)
        optimizer = train.build_optimizer(model, recipe)
        scheduler = train.build_scheduler(optimizer, recipe, steps_per_epoch=10)
        lrs = []
        for _ in range(40):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lrs[0] < lrs[10]  # warm-up ramps up
        assert max(lrs) == pytest.approx(0.1)
        if schedule != "constant":
            assert lrs[-1] < 0.1
