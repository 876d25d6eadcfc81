"""Segmentation metrics accumulated over a whole dataset.

IoU per class is the sum of intersections over the sum of unions across all
images (not a mean of per-image IoUs); mean IoU is taken over the classes that
occur in the ground truth; pixel accuracy counts labelled pixels only (255 is
ignored, never counted as correct).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..minerals import IGNORE

__all__ = ["ConfusionMatrix", "confusion", "Scores"]

N_CODES = 256


def confusion(gt: np.ndarray, pred: np.ndarray, n: int = N_CODES) -> np.ndarray:
    """(n, n) int64 matrix; rows ground truth, columns prediction; GT 255 ignored."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    g = gt.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    keep = g != IGNORE
    return np.bincount(g[keep] * n + p[keep], minlength=n * n).reshape(n, n)


@dataclass
class Scores:
    iou: dict[int, float]
    miou: float
    pixel_accuracy: float
    n_images: int
    n_pixels: int

    def as_dict(self) -> dict:
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "iou": {str(k): v for k, v in sorted(self.iou.items())},
            "n_images": self.n_images,
            "n_labelled_pixels": self.n_pixels,
        }


class ConfusionMatrix:
    """Accumulates a confusion matrix over images of LumenStone codes."""

    def __init__(self):
        self.matrix = np.zeros((N_CODES, N_CODES), np.int64)
        self.n_images = 0

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.matrix += confusion(gt, pred)
        self.n_images += 1

    def scores(self) -> Scores:
        m = self.matrix
        tp = np.diag(m).astype(np.float64)
        gt_count = m.sum(1).astype(np.float64)
        pred_count = m.sum(0).astype(np.float64)
        union = gt_count + pred_count - tp
        present = np.flatnonzero(gt_count > 0)
        iou = {int(c): float(tp[c] / union[c]) for c in present}
        total = m.sum()
        return Scores(
            iou=iou,
            miou=float(np.mean(list(iou.values()))) if iou else float("nan"),
            pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
            n_images=self.n_images,
            n_pixels=int(total),
        )

    def compact(self) -> tuple[list[int], np.ndarray]:
        """Codes that occur (in GT or prediction) and the sub-matrix over them."""
        used = np.flatnonzero((self.matrix.sum(0) + self.matrix.sum(1)) > 0)
        return [int(c) for c in used], self.matrix[np.ix_(used, used)]
