"""Retraining by distillation (lib.distill): the loss on hand-computed cases, a student that moves towards its
teacher, the teacher-output cache, resume after a kill mid-epoch, the distillation datasets, refusals."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lib.distill as distill
import lib.train as train
from lib.data import shapes
from lib.distill import Distillation, distillation_loss, pack
from lib.models import create_model
from lib.train import Recipe, fit, seed_everything


def _recipe(epochs=2, **distillation):
    return Recipe(epochs=epochs, batch_size=16, lr=0.2, seed=3, augment=("flip",), weight_decay=0.0,
                  distill={"temperature": 2.0, **distillation})


def _model(seed):
    seed_everything(seed)
    return create_model("small_cnn", num_classes=10, widths=(4, 8, 8, 8))


@pytest.fixture(scope="module")
def data(tiny_shapes):
    """64 training and 32 validation images of the tiny embedded dataset (seconds per run)."""
    full = shapes.datasets(tiny_shapes)
    return {"train": torch.utils.data.Subset(full["train"], range(64)), "val": torch.utils.data.Subset(full["val"], range(32))}


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    """A small CNN trained one epoch on the labels, its logits sharpened (x 10): a teacher with opinions the
    student starts without."""
    model = _model(1)
    fit(model, data["train"], data["val"], Recipe(epochs=1, batch_size=16, lr=0.05, seed=1),
        tmp_path_factory.mktemp("teacher"), image_size=64, progress=False)
    with torch.no_grad():
        model.fc.weight *= 10
        model.fc.bias *= 10
    return model.eval()


def _distil(data, teacher, state_dir, recipe):
    student = _model(2)
    history = fit(student, data["train"], data["val"], recipe, state_dir, image_size=64, progress=False,
                  teacher=teacher)["history"]
    return student, history


@torch.no_grad()
def _kl(teacher, student, dataset, temperature=2.0):
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    teacher.eval(), student.eval()
    return float(F.kl_div(F.log_softmax(student(x) / temperature, 1), F.log_softmax(teacher(x) / temperature, 1),
                          reduction="batchmean", log_target=True))


def test_loss_on_hand_computed_cases():
    # teacher (1/2, 1/2), student (3/4, 1/4) at T=1: KL = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3)
    targets = pack(torch.tensor([[0.0, 0.0]]), torch.tensor([-1]))
    student = torch.tensor([[math.log(3.0), 0.0]])
    assert float(distillation_loss(student, targets, 1.0)) == pytest.approx(0.5 * math.log(4 / 3))
    # T=2: the student's logits halve, p = (sqrt 3, 1) / (sqrt 3 + 1); times T^2 = 4
    p = np.array([math.sqrt(3), 1.0]) / (math.sqrt(3) + 1)
    expected = 4 * float(np.sum(0.5 * np.log(0.5 / p)))
    assert float(distillation_loss(student, targets, 2.0)) == pytest.approx(expected)
    # identical logits: 0; a labelled item adds ce_weight x its cross-entropy, an unlabelled one nothing
    assert float(distillation_loss(student, pack(student, torch.tensor([-1])), 3.0)) == pytest.approx(0.0, abs=1e-7)
    labelled = pack(student, torch.tensor([1]))
    assert float(distillation_loss(student, labelled, 3.0, ce_weight=0.5)) == pytest.approx(0.5 * math.log(4.0))
    assert float(distillation_loss(student, pack(student, torch.tensor([-1])), 3.0, ce_weight=0.5)) == pytest.approx(0.0)


def test_loss_against_the_textbook_formula():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 5), torch.randn(6, 5), torch.tensor([0, 4, -1, 2, -1, 1])
    t = 3.0
    p_t, p_s = torch.softmax(teacher / t, 1), torch.softmax(student / t, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * t * t
    ce = F.cross_entropy(student[labels >= 0], labels[labels >= 0])
    assert float(distillation_loss(student, pack(teacher, labels), t, 0.3)) == pytest.approx(float(kl + 0.3 * ce), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("outputs", ["cached", "on_the_fly"])
def test_a_distilled_student_moves_towards_its_teacher(data, teacher, tmp_path, outputs):
    before = _kl(teacher, _model(2), data["val"])
    student, history = _distil(data, teacher, tmp_path / "state", _recipe(teacher_outputs=outputs))
    after = _kl(teacher, student, data["val"])
    assert after < 0.5 * before, (before, after)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0 <= history[-1]["train_acc"] <= 1  # agreement with the teacher's top-1


@pytest.mark.slow
@pytest.mark.parametrize("outputs", ["cached", "on_the_fly"])
def test_a_network_distilled_towards_itself_is_left_unchanged(data, teacher, tmp_path, outputs):
    """Student = teacher (frozen batch norm, so train mode computes what eval mode does): every target the loop
    yields is the student's own output on exactly the image it is given, so the loss and its gradient are zero
    and a large learning rate moves nothing. A teacher output of another item, view (flip) or preprocessing
    than the student's image would move it."""
    student = copy.deepcopy(teacher)
    recipe = Recipe(epochs=2, batch_size=16, lr=0.5, momentum=0.9, seed=3, augment=("flip",), weight_decay=0.0,
                    distill={"temperature": 2.0, "teacher_outputs": outputs, "batch_norm": "frozen"})
    history = fit(student, data["train"], data["val"], recipe, tmp_path / "state", image_size=64, progress=False,
                  teacher=teacher)["history"]
    assert all(abs(h["train_loss"]) < 1e-6 and h["train_acc"] == 1.0 for h in history), history
    x = torch.stack([data["val"][i][0] for i in range(len(data["val"]))])
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(x), teacher.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_frozen_batch_norm_keeps_the_running_statistics(data, teacher, tmp_path):
    def running(model):
        return [b.clone() for name, b in model.named_buffers() if name.endswith("running_mean")]

    initial = running(_model(2))
    frozen, _ = _distil(data, teacher, tmp_path / "f" / "state", _recipe(epochs=1, batch_norm="frozen"))
    trained, _ = _distil(data, teacher, tmp_path / "t" / "state", _recipe(epochs=1, batch_norm="train"))
    assert all(torch.equal(a, b) for a, b in zip(initial, running(frozen)))
    assert not all(torch.equal(a, b) for a, b in zip(initial, running(trained)))
    assert not torch.equal(_model(2).features[0][0].weight, frozen.features[0][0].weight)  # the rest learnt


@pytest.mark.slow
def test_the_teacher_outputs_are_computed_once_and_reused(data, teacher, tmp_path, teacher_calls):
    calls = teacher_calls
    _distil(data, teacher, tmp_path / "a" / "state", _recipe(epochs=1))
    first = calls["n"]
    assert first > 0 and len(list((tmp_path / "a").glob("teacher_outputs/teacher_*.pt"))) == 1
    _distil(data, teacher, tmp_path / "a" / "state2", _recipe(epochs=1))  # another round: same teacher and data
    assert calls["n"] == first
    other = _model(5)  # another teacher: another cache file
    _distil(data, other, tmp_path / "a" / "state3", _recipe(epochs=1))
    assert calls["n"] > first and len(list((tmp_path / "a").glob("teacher_outputs/teacher_*.pt"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("outputs", ["cached", "on_the_fly"])
def test_resume_after_a_kill_mid_epoch_is_bit_identical(data, teacher, tmp_path, monkeypatch, outputs):
    recipe = _recipe(teacher_outputs=outputs)
    reference, reference_history = _distil(data, teacher, tmp_path / "reference" / "state", recipe)
    steps_per_epoch = len(data["train"]) // recipe.batch_size
    calls = {"n": 0}
    real = distill.Distiller.__call__

    def loss_then_kill(self, logits, targets):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:  # the third batch of epoch 2
            raise KeyboardInterrupt
        return real(self, logits, targets)

    monkeypatch.setattr(distill.Distiller, "__call__", loss_then_kill)
    with pytest.raises(KeyboardInterrupt):
        _distil(data, teacher, tmp_path / "run" / "state", recipe)
    monkeypatch.setattr(distill.Distiller, "__call__", real)
    assert torch.load(tmp_path / "run" / "state" / "last.pt", weights_only=True)["epoch"] == 1
    resumed, history = _distil(data, teacher, tmp_path / "run" / "state", recipe)
    assert history == reference_history
    assert all(torch.equal(x, y) for x, y in zip(reference.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.slow
def test_a_state_distilled_from_another_teacher_is_not_resumed(data, teacher, tmp_path):
    _distil(data, teacher, tmp_path / "state", _recipe(epochs=1, teacher_outputs="on_the_fly"))
    fit_log = []
    student = _model(2)
    import lib.storage as storage

    real_notice = storage.notice
    storage.notice = fit_log.append
    try:
        fit(student, data["train"], data["val"], _recipe(epochs=1, teacher_outputs="on_the_fly"), tmp_path / "state",
            image_size=64, progress=False, teacher=_model(7))
    finally:
        storage.notice = real_notice
    assert any("another run" in line for line in fit_log)


@pytest.mark.parametrize("params, match", [
    ({"temperature": 0}, "temperature"),
    ({"ce_weight": -1}, "ce_weight"),
    ({"teacher_outputs": "later"}, "teacher_outputs"),
    ({"batch_norm": "fixed"}, "batch_norm"),
    ({"temprature": 2}, "unknown distillation parameter"),
    ({"temperature": "hot"}, "temperature"),
])
def test_bad_distillation_parameters_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        Recipe(distill=params)


def test_random_crops_cannot_use_cached_teacher_outputs():
    with pytest.raises(ValueError, match="on_the_fly"):
        Recipe(augment=("flip", "crop"), distill={"teacher_outputs": "cached"})
    Recipe(augment=("flip", "crop"), distill={"teacher_outputs": "on_the_fly"})  # accepted


def test_distillation_needs_a_teacher_and_labels_for_its_cross_entropy(data, teacher, tmp_path):
    with pytest.raises(ValueError, match="teacher"):
        fit(_model(2), data["train"], data["val"], _recipe(), tmp_path / "a", image_size=64, progress=False)
    unlabelled = torch.utils.data.TensorDataset(torch.zeros(32, 3, 64, 64), torch.full((32,), -1))
    with pytest.raises(ValueError, match="ce_weight"):
        fit(_model(2), unlabelled, data["val"], _recipe(ce_weight=1.0), tmp_path / "b", image_size=64,
            progress=False, teacher=teacher)


def test_the_train_stage_refuses_a_distillation_recipe():
    p = {"recipe": {"epochs": 1, "augment": [], "distill": {"temperature": 4.0}}, "dataset": None, "pretrained": {},
         "model": "small_cnn", "model_kwargs": {}, "data_dir": "data/shapes", "seed": 0}
    with pytest.raises(ValueError, match="retrain"):
        train.check_stage(p)


def test_tiny_imagenet_labels_are_imagenet_classes(shared_data):
    from lib.data.datasets import classification_data

    dataset = {"name": "tiny_imagenet", "root": str(shared_data / "tiny-imagenet-200"), "image_size": 96,
               "test_root": str(shared_data / "imagenet-sample-images"), "limit": 50, "n_val": 10}
    data = classification_data(dataset, (0.5,) * 3, (0.5,) * 3)
    assert len(data["train"]) == 50 and len(data["test"]) == 1000 and len(data["val"]) == 10
    image, label = data["train"][0]
    assert image.shape == (3, 96, 96)
    # each training image's label is the ImageNet index of its wnid: the sample image of that index has that wnid
    samples = sorted((shared_data / "imagenet-sample-images").iterdir())
    annotations = dict(line.split("\t")[:2] for line in
                       (shared_data / "tiny-imagenet-200/val/val_annotations.txt").read_text().splitlines())
    for i in range(5):
        name = data["train"].files[i].name
        assert samples[int(data["train"].labels[i])].name.startswith(annotations[name])
    unlabelled = classification_data({**dataset, "labels": "none"}, (0.5,) * 3, (0.5,) * 3)
    assert (unlabelled["train"].labels == -1).all()
    with pytest.raises(ValueError, match="test_root"):
        classification_data({k: v for k, v in dataset.items() if k != "test_root"}, (0.5,) * 3, (0.5,) * 3)
