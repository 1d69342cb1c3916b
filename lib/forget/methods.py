"""What a population of networks predicts: every image's predicted class, the modal label over a population,
flips and pruning-identified exemplars (PIEs).

Definitions (Hooker et al. 2019, "What do compressed deep neural networks forget?", arXiv 1911.05248):

- a **population** at a checkpoint step is the set of networks of every seed at that step (step 0: the dense
  networks, one per seed; step s > 0: each seed's network pruned to the s-th sparsity of the plan);
- the **modal label** of an image over a population is the class predicted by the most networks of it; a tie
  goes to the lowest class index (``numpy.argmax`` of the counts, as ``scipy.stats.mode``);
- an image is a **PIE** at step s when the modal label over the pruned population (step s) differs from the
  modal label over the dense population (step 0). PIEs need a population: with one seed the modal label is
  that one network's prediction, and a PIE is only a **flip**;
- an image **flips** at step s for one seed when that seed's pruned network predicts another class than the
  same seed's dense network.

numpy and torch only; nothing here reads files.
"""

from __future__ import annotations

import numpy as np
import torch

MIN_POPULATION = 2  # networks per population below which PIEs are not defined (one network: a flip)


@torch.inference_mode()
def predict(model: torch.nn.Module, data, batch_size: int = 256,
            layout: torch.memory_format = torch.contiguous_format) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class, its softmax probability, true label) of every image of ``data`` (a torch dataset of
    (image, label) pairs, streamed ``batch_size`` at a time to the model's device: never all in memory).
    ``layout``: the memory format of the model and the batches (``torch.channels_last``: oneDNN's convolutions
    run about 1.5x faster in it on CPU, ``benchmarks/interpret.py``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    model = model.to(memory_format=layout)
    classes, confidences, labels = [], [], []
    for x, y in torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False):
        probabilities = model(x.to(device).contiguous(memory_format=layout)).float().softmax(-1)
        confidence, label = probabilities.max(-1)
        classes.append(label.cpu())
        confidences.append(confidence.cpu())
        labels.append(torch.as_tensor(y))
    return (torch.cat(classes).numpy().astype(np.int64), torch.cat(confidences).numpy().astype(np.float32),
            torch.cat(labels).numpy().astype(np.int64))


def modal_label(predictions: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """The modal label of every image over a population: ``predictions`` (networks, images) of class indices;
    ties go to the lowest class index."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[0] < 1:
        raise ValueError(f"predictions must be (networks, images) with at least one network, got {predictions.shape}")
    if predictions.size and predictions.min() < 0:
        raise ValueError("predictions must be class indices >= 0")
    num_classes = int(num_classes or (predictions.max() + 1 if predictions.size else 1))
    counts = np.zeros((num_classes, predictions.shape[1]), dtype=np.int64)
    for row in predictions:
        np.add.at(counts, (row, np.arange(len(row))), 1)
    return counts.argmax(0)


def flips(dense: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    """Per network and image, whether the pruned network predicts another class than its own dense network:
    ``dense`` and ``pruned`` (networks, images), row k of both the same seed."""
    dense, pruned = np.asarray(dense), np.asarray(pruned)
    if dense.shape != pruned.shape:
        raise ValueError(f"dense {dense.shape} and pruned {pruned.shape} predictions must pair seed by seed")
    return dense != pruned


def pies(dense: np.ndarray, pruned: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Whether each image is a PIE: the pruned population's modal label differs from the dense population's.
    ``dense``, ``pruned``: (networks, images). Needs :data:`MIN_POPULATION` networks on each side."""
    dense, pruned = np.asarray(dense), np.asarray(pruned)
    if min(len(dense), len(pruned)) < MIN_POPULATION:
        raise ValueError(f"PIEs need a population of at least {MIN_POPULATION} networks (seeds) on each side, got "
                         f"{len(dense)} dense and {len(pruned)} pruned: with one seed, count flips instead")
    classes = int(num_classes or max(dense.max(), pruned.max()) + 1)
    return modal_label(dense, classes) != modal_label(pruned, classes)
