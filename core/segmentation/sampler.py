"""Class-balanced patch sampling.

Per image and class, a map of how much of that class a patch centred at each
point would hold (a box filter of the class indicator, on a coarse grid). At
each step the currently least-represented class is chosen, then an image in
proportion to its content of that class, then a patch centre from that
image's map; the tallies of sampled pixels are updated with the patch's
actual content.

References
----------
.. [1] Korshunov D. et al., Mining Science and Technology (Russia) 10(3),
   2025, 232-244. doi:10.17073/2500-0632-2025-05-416
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ClassBalancedSampler", "PatchRequest"]


@dataclass(frozen=True)
class PatchRequest:
    image: int
    cy: int
    cx: int
    target_class: int


class ClassBalancedSampler:
    """Pick patch centres so that every class is sampled about equally.

    Parameters
    ----------
    masks : list of (M, N) uint8 ndarray
        Class *indices* (0..n_classes-1), 255 = ignore.
    n_classes : int
    patch : int
        Patch side in pixels.
    grid : int
        Stride of the coarse grid on which centre maps are kept.
    rng : numpy Generator
    """

    def __init__(self, masks, n_classes: int, patch: int, *, grid: int = 8, rng=None):
        self.n_classes = n_classes
        self.patch = patch
        self.grid = grid
        self.rng = rng if rng is not None else np.random.default_rng()
        self.shapes = [m.shape for m in masks]
        self.maps: list[dict[int, tuple[np.ndarray, np.ndarray]]] = []
        self.content = np.zeros((len(masks), n_classes), np.float64)
        self.dataset_pixels = np.zeros(n_classes, np.float64)
        for i, m in enumerate(masks):
            counts = np.bincount(m.ravel(), minlength=256)[:n_classes].astype(np.float64)
            self.dataset_pixels += counts
            self.content[i] = counts
            per_class = {}
            h, w = m.shape
            half = patch // 2
            for c in np.flatnonzero(counts):
                ind = (m == c).astype(np.float32)
                frac = cv2.blur(ind, (patch | 1, patch | 1), borderType=cv2.BORDER_CONSTANT)
                ys = np.arange(min(half, h - 1), max(h - half, min(half, h - 1) + 1), grid)
                xs = np.arange(min(half, w - 1), max(w - half, min(half, w - 1) + 1), grid)
                coarse = frac[np.ix_(ys, xs)].ravel().astype(np.float64)
                nz = np.flatnonzero(coarse > 0)
                if nz.size == 0:
                    # class only near the border: fall back to its pixels
                    yy, xx = np.nonzero(m == c)
                    pick = np.linspace(0, yy.size - 1, min(yy.size, 4096)).astype(int)
                    pos = np.stack([yy[pick], xx[pick]], 1)
                    per_class[int(c)] = (pos, np.full(len(pos), 1.0 / len(pos)))
                    continue
                p = coarse[nz]
                gy, gx = np.divmod(nz, xs.size)
                pos = np.stack([ys[gy], xs[gx]], 1)
                per_class[int(c)] = (pos, p / p.sum())
            self.maps.append(per_class)
        self.present = np.flatnonzero(self.dataset_pixels > 0)
        if self.present.size == 0:
            raise ValueError("no labelled pixels in the training masks")
        self.tally = np.zeros(n_classes, np.float64)

    def next(self) -> PatchRequest:
        """Choose the next patch centre (does not update the tallies)."""
        t = self.tally[self.present]
        cands = self.present[t == t.min()]
        c = int(self.rng.choice(cands))
        w = self.content[:, c]
        img = int(self.rng.choice(len(w), p=w / w.sum()))
        pos, p = self.maps[img][c]
        k = int(self.rng.choice(len(p), p=p))
        jitter = self.rng.integers(-(self.grid // 2), self.grid // 2 + 1, size=2)
        h, wd = self.shapes[img]
        cy = int(np.clip(pos[k, 0] + jitter[0], 0, h - 1))
        cx = int(np.clip(pos[k, 1] + jitter[1], 0, wd - 1))
        return PatchRequest(img, cy, cx, c)

    def update(self, patch_mask: np.ndarray) -> None:
        """Add the class counts of a sampled (index) mask patch to the tallies."""
        self.tally += np.bincount(patch_mask.ravel(), minlength=256)[: self.n_classes]

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        """(sampled share, dataset share) per class."""
        s = self.tally / max(self.tally.sum(), 1)
        d = self.dataset_pixels / max(self.dataset_pixels.sum(), 1)
        return s, d
