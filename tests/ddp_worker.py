"""Trains a tiny ViT on the embedded dataset; run alone or under torchrun (see test_distributed.py)."""

import sys

import torch

from lib import distributed as dd
from lib import storage
from lib.data import shapes
from lib.models import create_model
from lib.train import Recipe, evaluate, fit, seed_everything

if __name__ == "__main__":
    data_dir, out = sys.argv[1], sys.argv[2]
    dd.init_from_env()
    torch.set_num_threads(1)
    recipe = Recipe(epochs=2, batch_size=16, optimizer="adamw", lr=1e-3, augment=(), seed=0)
    data = shapes.datasets(data_dir)
    seed_everything(0)
    model = create_model("small_vit", num_classes=10, embed_dim=32, depth=1, num_heads=2)
    history = fit(model, data["train"], data["val"], recipe, f"{out}.state", image_size=64, progress=False)["history"]
    result = {"state": model.state_dict(), "test_acc": evaluate(model, data["test"]), "history": history}
    storage.save_torch(out, result)  # rank 0 only
