"""Scribble masks: drawing strokes and simulating a user's rough strokes.

``strokes_to_mask`` rasterises polylines (for example from the page's canvas,
already mapped to image pixels) into a scribble mask. ``synthetic_scribbles``
draws one rough straight stroke through the interior of every sizeable
connected region of a reference mask, which is how the benchmarks and tests
stand in for a geologist.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from ..minerals import IGNORE

__all__ = ["strokes_to_mask", "synthetic_scribbles", "Stroke"]

Stroke = tuple  # (code, width_px, (P, 2) array of (x, y) full-resolution points)


def strokes_to_mask(shape: tuple[int, int], strokes: Iterable[Stroke], *, base: np.ndarray | None = None) -> np.ndarray:
    """Rasterise strokes into a scribble mask.

    Parameters
    ----------
    shape : (M, N) tuple
        Image size.
    strokes : iterable of (code, width, points)
        ``points`` is a (P, 2) array of (x, y) image pixels; later strokes
        paint over earlier ones.
    base : (M, N) uint8 ndarray, optional
        Scribbles to draw onto (copied).

    Returns
    -------
    (M, N) uint8 ndarray
        Codes on the strokes, 255 elsewhere.
    """
    out = np.full(shape[:2], IGNORE, np.uint8) if base is None else np.array(base, np.uint8, copy=True)
    for code, width, pts in strokes:
        p = np.asarray(pts, np.float64).reshape(-1, 2)
        if p.size == 0:
            continue
        w = max(1, int(round(width)))
        q = np.round(p).astype(np.int32).reshape(-1, 1, 2)
        if len(q) == 1:
            cv2.circle(out, tuple(int(v) for v in q[0, 0]), max(1, w // 2), int(code), -1, lineType=cv2.LINE_8)
        else:
            cv2.polylines(out, [q], False, int(code), thickness=w, lineType=cv2.LINE_8)
    return out


def synthetic_scribbles(
    mask: np.ndarray,
    *,
    min_area: int = 500,
    width: int = 5,
    length_fraction: float = 0.6,
    margin: int = 3,
    neck: int = 4,
    jitter_deg: float = 20.0,
    seed: int = 0,
) -> np.ndarray:
    """One rough straight stroke per connected region of a reference mask.

    Regions are the 8-connected parts of one code after an opening of radius
    ``neck``, so that areas joined only by thin cracks or rims count as
    separate regions, as a person would see them. For every region of at
    least ``min_area`` pixels, a straight segment starts at the region's deepest interior point
    (largest distance to its edge), runs along its main axis turned by a random
    angle, and stops ``margin`` pixels before it would leave the region, or
    at ``length_fraction`` of the region's length.

    Parameters
    ----------
    mask : (M, N) uint8 ndarray
        Reference codes (255 = unlabelled, never scribbled).
    min_area : int
        Smaller regions get no stroke.
    width : int
        Stroke width in pixels.
    length_fraction : float
        Longest stroke as a fraction of the region's main-axis length.
    margin : int
        Distance kept from the region's edge.
    neck : int
        Radius of the opening that separates regions joined by thin necks.
    jitter_deg : float
        Largest random turn of the stroke away from the main axis.
    seed : int

    Returns
    -------
    (M, N) uint8 ndarray
        Codes on the strokes, 255 elsewhere.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    rng = np.random.default_rng(seed)
    out = np.full(mask.shape, IGNORE, np.uint8)
    half = width / 2.0
    for code in np.unique(mask):
        if code == IGNORE:
            continue
        sel = (mask == code).astype(np.uint8)
        if neck > 0:
            ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * neck + 1, 2 * neck + 1))
            sel = cv2.morphologyEx(sel, cv2.MORPH_OPEN, ker)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(sel, connectivity=8)
        for r in range(1, n):
            x0, y0, w, h, area = stats[r]
            if area < min_area:
                continue
            x0p, y0p = max(0, x0 - 1), max(0, y0 - 1)
            sub = (lab[y0p:y0 + h + 1, x0p:x0 + w + 1] == r).astype(np.uint8)
            dist = cv2.distanceTransform(np.pad(sub, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
            cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
            if dist[cy, cx] < half + 1:
                continue
            yy, xx = np.nonzero(sub)
            cov = np.cov(np.stack([xx, yy]).astype(np.float64)) if yy.size > 2 else np.eye(2)
            vals, vecs = np.linalg.eigh(cov)
            axis = vecs[:, -1]
            extent = 4.0 * np.sqrt(max(vals[-1], 1.0))
            ang = np.deg2rad(rng.uniform(-jitter_deg, jitter_deg))
            c, s = np.cos(ang), np.sin(ang)
            d = np.array([c * axis[0] - s * axis[1], s * axis[0] + c * axis[1]])
            lim = length_fraction * extent / 2.0
            ends = []
            for sign in (1.0, -1.0):
                t = 0.0
                while t + 1.0 <= lim:
                    px = cx + sign * (t + 1.0) * d[0]
                    py = cy + sign * (t + 1.0) * d[1]
                    ix, iy = int(round(px)), int(round(py))
                    if not (0 <= iy < dist.shape[0] and 0 <= ix < dist.shape[1]) or dist[iy, ix] < half + margin:
                        break
                    t += 1.0
                ends.append((cx + sign * t * d[0] + x0p, cy + sign * t * d[1] + y0p))
            p1 = tuple(int(round(v)) for v in ends[0])
            p2 = tuple(int(round(v)) for v in ends[1])
            cv2.line(out, p1, p2, int(code), thickness=max(1, int(width)), lineType=cv2.LINE_8)
    # strokes are drawn inside their regions; never let a wide stroke claim pixels of another code
    out[(out != IGNORE) & (out != mask)] = IGNORE
    return out
