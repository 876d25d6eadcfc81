"""Turning painted marks into a partial annotation (plain NumPy, no GUI)."""
from __future__ import annotations

import numpy as np

from ..minerals import IGNORE, MINERALS

__all__ = ["strokes_to_mask", "hex_color"]


def hex_color(code: int) -> str:
    """LumenStone colour of a code as ``#rrggbb``."""
    for m in MINERALS:
        if m.code == int(code):
            return "#%02x%02x%02x" % m.color
    raise ValueError(f"unknown class code {code!r}")


def strokes_to_mask(rgba: np.ndarray, shape: tuple[int, int], *, tolerance: float = 40.0,
                    min_alpha: int = 128) -> np.ndarray:
    """Partial annotation from strokes painted in LumenStone colours.

    Parameters
    ----------
    rgba : (m, n, 4) uint8 ndarray
        The painted layer (transparent where nothing is painted), at any scale.
    shape : (M, N) tuple
        Size of the image the marks belong to.
    tolerance : float
        Largest RGB distance from a LumenStone colour (anti-aliased stroke edges
        farther from every colour stay unmarked).
    min_alpha : int
        Pixels more transparent than this stay unmarked.

    Returns
    -------
    mask : (M, N) uint8 ndarray
        Codes where painted, 255 elsewhere.
    """
    import cv2

    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected an RGBA layer of shape (m, n, 4), got {rgba.shape}")
    colors = np.array([m.color for m in MINERALS], np.float32)
    codes = np.array([m.code for m in MINERALS], np.uint8)
    rgb = rgba[..., :3].astype(np.float32).reshape(-1, 3)
    d2 = ((rgb[:, None, :] - colors[None]) ** 2).sum(-1)
    best = d2.argmin(axis=1)
    ok = (d2[np.arange(len(best)), best] <= tolerance ** 2) & (rgba[..., 3].ravel() >= min_alpha)
    small = np.where(ok, codes[best], np.uint8(IGNORE)).reshape(rgba.shape[:2]).astype(np.uint8)
    h, w = shape
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
