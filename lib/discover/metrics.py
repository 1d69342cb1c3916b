"""CorLoc and mean IoU of predicted boxes, and the centred-box baseline.

Boxes are ``[x0, y0, x1, y1)`` in pixels (x1/y1 exclusive): a box's area is (x1 - x0) * (y1 - y0).
CorLoc is the share of images whose predicted box has IoU >= 0.5 with at least one ground-truth box
(LOST's evaluation); mean IoU averages each image's best IoU. An image without a prediction scores 0.
*Deviation from LOST's code:* its IoU adds 1e-7 to the union (and to the heights), so a box with IoU of
exactly 0.5 is not counted there; here IoU is exact and ``>= 0.5`` counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def box_iou(box, boxes) -> np.ndarray:
    """IoU of one box with each row of ``boxes`` (n, 4); 0 where the union is empty."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class CorLoc:
    """``CorLoc()(predictions, ground_truths)`` -> per-image best IoU and hit (IoU >= threshold).

    predictions: one box (4,) per image, or None / NaNs where an algorithm found nothing.
    ground_truths: one (n_i, 4) array of boxes per image (n_i >= 1).
    """

    def __init__(self, threshold: float = 0.5):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold

    def best_iou(self, prediction, ground_truth) -> float:
        if prediction is None or np.isnan(np.asarray(prediction, dtype=float)).any():
            return 0.0
        if not len(ground_truth):
            raise ValueError("an image without ground-truth boxes has no CorLoc; drop it first (BoxDataset.with_boxes)")
        return float(box_iou(prediction, ground_truth).max())

    def __call__(self, predictions, ground_truths) -> pd.DataFrame:
        if len(predictions) != len(ground_truths):
            raise ValueError(f"{len(predictions)} predictions for {len(ground_truths)} images")
        ious = np.array([self.best_iou(p, g) for p, g in zip(predictions, ground_truths)])
        return pd.DataFrame({"iou": ious, "hit": ious >= self.threshold})

    @staticmethod
    def summary(scores: pd.DataFrame) -> dict:
        return {"corloc": float(scores["hit"].mean()), "miou": float(scores["iou"].mean())}


def centred_box(image_size: tuple[int, int], fraction: float) -> np.ndarray:
    """A box centred in an image of (height, width), ``fraction`` of each side long."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    height, width = image_size
    margin_x, margin_y = width * (1 - fraction) / 2, height * (1 - fraction) / 2
    return np.array([margin_x, margin_y, width - margin_x, height - margin_y], dtype=np.float32)


def centred_baseline(dataset, fractions=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), threshold: float = 0.5) -> pd.DataFrame:
    """CorLoc and mean IoU on ``dataset`` (a ``BoxDataset``) of a centred box of each side ``fraction``.

    One row per fraction. The best row is tuned on the ground truth itself: an optimistic baseline,
    the one to beat.
    """
    metric = CorLoc(threshold)
    sizes = [dataset.size(i) for i in range(len(dataset))]
    rows = []
    for fraction in fractions:
        scores = metric([centred_box(size, fraction) for size in sizes], dataset.boxes)
        rows.append({"fraction": fraction, **metric.summary(scores)})
    return pd.DataFrame(rows)
