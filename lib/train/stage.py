"""The train stage (notebook 01): its check, before any compute, and its driver ``train_classifier``."""

from __future__ import annotations

from pathlib import Path

from lib import distributed as dd
from lib.train.loop import data_identity, evaluate, fit, log_history
from lib.train.recipe import Recipe, seed_everything, with_seed


def train_classifier(model_name: str, data_dir: str | Path, recipe: Recipe, out_dir: str | Path,
                     model_kwargs: dict | None = None, dataset: dict | None = None, pretrained: dict | None = None,
                     progress: bool = True, arch: str | None = None) -> dict:
    """Train a registered model; write ``model.pt`` and DVCLive logs to ``out_dir``.

    Data: the embedded dataset in ``data_dir``, or ``dataset`` (the prune stage's dataset dict, e.g.
    ``{"name": "imagenet", "root": ..., "num_classes": 1000, ...}``, see ``lib.prune.runs``).
    ``pretrained``: start from a local weights file instead of a random initialisation,
    ``{"weights": path, "drop_keys": [...], "recorded_acc": 0.6978}`` (the pruning presets' pretrained
    models, ``lib.models.pretrained``); with ``recipe.epochs`` 0 the model is taken as it is and
    only evaluated (Study B prunes torchvision's ImageNet GoogLeNet), otherwise it is fine-tuned.
    ``arch``: the pipeline's name of the architecture (``cnn``), stored in the checkpoint so that a later stage
    given another ``arch`` refuses it (:func:`lib.models.registry.check_arch`).
    Everything is validated (model name, recipe, data, weights) before the first training step. The training
    state lives in ``out_dir/state`` until the run has finished, so an interrupted run resumes.
    """
    import shutil

    from lib.data import shapes
    from lib.data.datasets import classification_data
    from lib.models import get_spec, load_pretrained, save_checkpoint

    out_dir = Path(out_dir)
    spec = get_spec(model_name)
    pretrained = dict(pretrained or {})
    num_classes = check_training(model_name, recipe, dataset, pretrained, model_kwargs)
    if dataset:
        dataset = {k: v for k, v in dataset.items() if k != "num_classes"}
    else:
        dataset = {"name": "shapes", "root": str(data_dir)}
        num_classes = len(shapes.load_meta(data_dir)["classes"])
    data = classification_data(dataset, spec.mean, spec.std)
    seed_everything(recipe.seed)
    source = {"model": model_name, "num_classes": num_classes, "model_kwargs": model_kwargs or {}, **pretrained}
    model = load_pretrained(source)
    if recipe.epochs:
        history = fit(model, data["train"], data["val"], recipe, out_dir / "state", image_size=data["image_size"],
                      live_dir=out_dir / "dvclive", progress=progress,
                      run_info={"model": model_name, "kwargs": model_kwargs, "data": data_identity(data),
                                **({"pretrained": pretrained} if pretrained else {})})["history"]
    else:  # the pretrained model as it is: its evaluation is the whole learning curve (epoch 0)
        model.to(dd.default_device())
        history = [{"epoch": 0, "val_acc": evaluate(model, data["val"]),  # evaluation-only data: no train split
                    "train_acc": evaluate(model, data["train"]) if len(data["train"]) else None}]
        log_history(out_dir / "dvclive", history)
    test_acc = evaluate(model, data["test"])
    if dd.is_main():
        save_checkpoint(out_dir / "model.pt", model, model_name, num_classes, model_kwargs, recipe=recipe.identity(),
                        test_acc=test_acc, **({"arch": arch} if arch else {}), **({"weights": str(pretrained["weights"]),
                                               "recorded_acc": pretrained.get("recorded_acc")} if pretrained else {}))
        shutil.rmtree(out_dir / "state", ignore_errors=True)
    dd.barrier()
    return {"model": model_name, "params": sum(p.numel() for p in model.parameters()), "test_acc": test_acc,
            "val_acc": history[-1]["val_acc"], "epochs": recipe.epochs, "history": history,
            **({"recorded_acc": pretrained.get("recorded_acc")} if pretrained else {})}


def has_weights(pretrained: dict | None, model_kwargs: dict | None = None) -> bool:
    """Whether the model starts from trained weights: a local file (``pretrained``) or the weights a model's
    package ships (``model_kwargs: {pretrained: true}``, e.g. ``efficientnet_lite0``)."""
    return bool(pretrained) or bool((model_kwargs or {}).get("pretrained"))


def stage_recipe(recipe: dict, seed: int) -> Recipe:
    """The train stage's recipe (params.yaml ``train.<arch>.recipe``) with the run's ``seed``: what the stage's check
    refuses and what notebook 01 trains with are the same parse."""
    recipe = Recipe.from_dict(with_seed(recipe, seed, "recipe"))
    if recipe.distill is not None:
        raise ValueError("train.recipe.distill: distillation retrains a pruned model towards the dense one, so it "
                         "belongs in the retraining recipe (retrain.<arch>.recipe); remove it from train")
    return recipe


def check_training(model_name: str, recipe: Recipe, dataset: dict | None, pretrained: dict | None,
                   model_kwargs: dict | None, exists: bool = True) -> int | None:
    """The checks of a training run, before any compute: :func:`check_stage` runs them on the stage's parameters
    before the notebook starts (``exists`` False: input files are listed for the runner, not opened) and
    :func:`train_classifier` again on its arguments. Returns ``dataset``'s class count (None: the embedded
    dataset, whose classes its ``meta.json`` lists).

    ``pretrained`` holds the weights file of a pretrained source (``lib.models.pretrained``): 'weights' and
    optionally 'drop_keys', 'recorded_acc'; the source's model, classes and kwargs are the stage's own parameters."""
    from lib.data.datasets import check_training_data
    from lib.models import WEIGHTS_KEYS, check_pretrained

    check_training_data(dataset, recipe.epochs)
    pretrained = pretrained or {}
    if set(pretrained) - set(WEIGHTS_KEYS) or (pretrained and not pretrained.get("weights")):
        raise ValueError(f"pretrained takes 'weights' (a local file) and optionally 'drop_keys', 'recorded_acc'; "
                         f"got {sorted(pretrained)} (the model, its classes and kwargs are the parameters model, "
                         "dataset.num_classes and model_kwargs)")
    check_pretrained({"model": model_name, **pretrained}, exists=exists)
    if recipe.epochs == 0 and not has_weights(pretrained, model_kwargs):
        raise ValueError("recipe.epochs 0 trains nothing: give pretrained weights (pretrained.weights, or "
                         "model_kwargs {pretrained: true} for a model that ships its own), or at least one epoch")
    if dataset and "num_classes" not in dataset:
        raise ValueError(f"dataset {dataset.get('name')!r} needs num_classes (e.g. 1000 for ImageNet)")
    return int(dataset["num_classes"]) if dataset else None


def check_stage(p: dict) -> list[tuple]:
    """The train stage's parameters, checked before any compute; returns the input paths it reads."""
    import torch

    from lib.data.datasets import check_dataset, dataset_paths
    from lib.models import create_model

    recipe = stage_recipe(p["recipe"], p["seed"])
    num_classes = check_training(p["model"], recipe, p["dataset"], p["pretrained"], p["model_kwargs"], exists=False)
    with torch.device("meta"):  # the architecture is built, no memory is touched
        # the architecture only: weights a package ships (model_kwargs pretrained) are loaded when the stage runs
        create_model(p["model"], num_classes=num_classes or 10,
                     **{k: v for k, v in (p["model_kwargs"] or {}).items() if k != "pretrained"})
    needed = []
    if p["dataset"]:
        dataset = {k: v for k, v in p["dataset"].items() if k != "num_classes"}
        check_dataset(dataset, exists=False)
        needed += dataset_paths(dataset)
    else:
        needed.append(("data_dir", p["data_dir"], "shapes"))
    if p["pretrained"]:
        needed.append(("pretrained.weights", p["pretrained"]["weights"], "weights"))
    return needed
