"""Where the segmentation model is unsure, and which regions most deserve labels.

Scores are computed from the softmax probabilities of a
:class:`core.segmentation.Prediction` (``probs``: (K, m, n) at the working
scale) and brought to the image size by bilinear interpolation. All scores lie
in [0, 1], 1 = most uncertain.

References
----------
.. [1] Settles B., "Active Learning Literature Survey", University of
   Wisconsin-Madison Computer Sciences Technical Report 1648, 2009.
.. [2] Scheffer T., Decomain C., Wrobel S., "Active hidden Markov models for
   information extraction", IDA 2001, 309-318. doi:10.1007/3-540-44816-0_31
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..registry import Registry

__all__ = ["SCORES", "DEFAULT_SCORE", "UNSURE", "uncertainty_map", "select_regions", "Regions", "to_uint8",
           "unsure_share"]

SCORES: Registry = Registry("uncertainty score")
# margin captures the most model errors per image (0.533, bench/results/annotation.md); least-confidence is level
DEFAULT_SCORE = "margin"
UNSURE = 0.5  # a pixel is unsure when its two likeliest minerals are less than 0.5 apart (margin score above 0.5)


def _top2(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if p.shape[0] == 1:
        return p[0], np.zeros_like(p[0])
    part = np.partition(p, p.shape[0] - 2, axis=0)
    return part[-1], part[-2]


@SCORES.register("margin", doc="1 - (p1 - p2): small gap between the two likeliest minerals")
def _margin(p: np.ndarray) -> np.ndarray:
    p1, p2 = _top2(p)
    return 1.0 - (p1 - p2)


@SCORES.register("entropy", doc="Shannon entropy of the class probabilities, divided by log K")
def _entropy(p: np.ndarray) -> np.ndarray:
    k = p.shape[0]
    q = np.clip(p, 1e-7, 1.0)
    h = -(q * np.log(q)).sum(0)
    return h / np.log(max(k, 2))


@SCORES.register("least-confidence", doc="1 - p1: low probability of the chosen mineral")
def _least(p: np.ndarray) -> np.ndarray:
    p1, _ = _top2(p)
    return (1.0 - p1) * (p.shape[0] / max(p.shape[0] - 1, 1))


def unsure_share(probs: np.ndarray, *, score: str = DEFAULT_SCORE, threshold: float = UNSURE,
                 step: int = 2) -> float:
    """The share of an image where the model is unsure: pixels of the working-scale probabilities ``probs``
    (K, m, n) whose ``score`` is above ``threshold``, read on every ``step``-th row and column (the probabilities
    change over many pixels, and a panorama's are large)."""
    fn = SCORES.get(score)
    p = np.asarray(probs)[:, ::step, ::step]
    if p.size == 0:
        return 0.0
    unsure = 0
    for y in range(0, p.shape[1], 256):  # in strips: a panorama's probabilities are large
        unsure += int((fn(p[:, y:y + 256].astype(np.float32)) > threshold).sum())
    return unsure / (p.shape[1] * p.shape[2])


def region_mean(u: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Replace every pixel's score by the mean score of its region.

    A region is a connected (8-neighbour) area of one predicted class. A grain the model has wrong as a
    whole is often only moderately unsure everywhere, while correct grains are unsure only along their
    edges: averaging per region ranks the doubtful grain above the thin edge bands.
    """
    out = np.empty_like(u, dtype=np.float32)
    flat_u = u.ravel().astype(np.float64)
    for c in np.unique(labels):
        sel = labels == c
        n, cc = cv2.connectedComponents(sel.astype(np.uint8), connectivity=8)
        idx = cc.ravel()
        sums = np.bincount(idx, weights=flat_u, minlength=n)
        cnt = np.bincount(idx, minlength=n)
        mean = (sums / np.maximum(cnt, 1)).astype(np.float32)
        out[sel] = mean[cc[sel]]
    return out


@SCORES.register("region-entropy", doc="entropy averaged over each connected region of one predicted mineral: "
                 "whole grains the model doubts rank above the edges of grains it is sure of")
def _region_entropy(p: np.ndarray) -> np.ndarray:
    return region_mean(_entropy(p), np.argmax(p, axis=0))


@SCORES.register("region-margin", doc="margin averaged over each connected region of one predicted mineral")
def _region_margin(p: np.ndarray) -> np.ndarray:
    return region_mean(_margin(p), np.argmax(p, axis=0))


def uncertainty_map(
    probs: np.ndarray,
    *,
    shape: tuple[int, int] | None = None,
    score: str = DEFAULT_SCORE,
) -> np.ndarray:
    """Per-pixel uncertainty.

    Parameters
    ----------
    probs : (K, m, n) ndarray
        Softmax probabilities (any float type) at the working scale.
    shape : (M, N) tuple, optional
        Output size (the image's); default the probabilities' own size.
    score : str
        One of ``SCORES.names()``.

    Returns
    -------
    (M, N) float32 ndarray
        0 = certain, 1 = most uncertain.
    """
    fn = SCORES.get(score)
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"probabilities must be a (K, m, n) array, got shape {p.shape}")
    u = np.clip(fn(p.astype(np.float32)), 0.0, 1.0).astype(np.float32)
    if shape is not None and tuple(shape[:2]) != u.shape:
        M, N = shape[:2]
        u = cv2.resize(u, (N, M), interpolation=cv2.INTER_LINEAR)
    return u


@dataclass
class Regions:
    """Regions most worth labelling.

    Attributes
    ----------
    mask : (M, N) bool ndarray
        The selected pixels.
    boxes : list of dict
        One per connected region, largest first: ``x, y, width, height,
        area`` (pixels) and ``mean`` (mean uncertainty).
    fraction : float
        Share of the image selected.
    """

    mask: np.ndarray
    boxes: list[dict]
    fraction: float


def select_regions(umap: np.ndarray, *, fraction: float = 0.10, smooth: float = 0.0,
                   max_boxes: int = 50) -> Regions:
    """The most uncertain ``fraction`` of the image, as regions.

    Parameters
    ----------
    umap : (M, N) float ndarray
        Uncertainty map from :func:`uncertainty_map`.
    fraction : float
        Share of the image to select, in (0, 1].
    smooth : float
        Gaussian smoothing (pixels) before ranking, which joins scattered
        pixels into regions; 0 ranks pixels as they are.
    max_boxes : int
        Most regions listed in ``boxes``.

    Returns
    -------
    Regions
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    u = np.asarray(umap, np.float32)
    if u.ndim != 2:
        raise ValueError(f"an uncertainty map must be 2-D, got shape {u.shape}")
    if smooth > 0:
        u = cv2.GaussianBlur(u, (0, 0), smooth)
    n = u.size
    k = max(1, int(round(fraction * n)))
    # rank on a subsample for the threshold, then take ties in scan order to hit k exactly
    sample = u.ravel()[:: max(1, n // 2_000_000)]
    thr = float(np.quantile(sample, 1.0 - fraction))
    mask = u > thr
    short = k - int(mask.sum())
    if short > 0:
        eq = np.flatnonzero((u == thr).ravel())[:short]
        mask.ravel()[eq] = True
    elif short < 0:
        extra = np.flatnonzero(mask.ravel())
        order = np.argsort(u.ravel()[extra], kind="stable")[: -short]
        mask.ravel()[extra[order]] = False
    n_lab, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    sums = np.bincount(lab.ravel(), weights=np.asarray(umap, np.float32).ravel(), minlength=n_lab)
    order = np.argsort(-stats[1:, 4])[:max_boxes] + 1
    boxes = [{"x": int(stats[r, 0]), "y": int(stats[r, 1]), "width": int(stats[r, 2]), "height": int(stats[r, 3]),
              "area": int(stats[r, 4]), "mean": float(sums[r] / max(stats[r, 4], 1))} for r in order]
    return Regions(mask=mask, boxes=boxes, fraction=float(mask.mean()))


def to_uint8(umap: np.ndarray) -> np.ndarray:
    """8-bit map: 0 = certain, 255 = most uncertain."""
    return np.clip(np.rint(np.asarray(umap, np.float32) * 255.0), 0, 255).astype(np.uint8)
