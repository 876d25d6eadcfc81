"""Tile sets with known truth, cut from one real photograph (for tests and benchmarks)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TileSet", "make_tile_set", "position_rmse"]


@dataclass
class TileSet:
    """Tiles cut from a photograph.

    Attributes
    ----------
    tiles : list of (h, w, 3) uint8 ndarray
        Row-major order.
    truth : (T, 3, 3) ndarray
        Maps tile pixels to pixels of the source photograph.
    grid : (rows, cols)
    gains : (T,) ndarray
        Exposure factors applied.
    vignetting : (T,) ndarray
        Relative corner fall-off applied.
    """

    tiles: list
    truth: np.ndarray
    grid: tuple[int, int]
    gains: np.ndarray
    vignetting: np.ndarray


def make_tile_set(image: np.ndarray, *, grid=(3, 3), overlap: float = 0.25, jitter: float = 25.0,
                  rotation_deg: float = 0.15, vignetting=(0.10, 0.20), exposure: float = 0.10,
                  noise: float = 2.0, jpeg: int | None = 90, tile_size: tuple[int, int] | None = None,
                  seed: int = 0) -> TileSet:
    """Cut a jittered, rotated, vignetted, noisy grid of tiles with recorded truth.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
        Source photograph.
    grid : (rows, cols)
    overlap : float
        Nominal overlap fraction between neighbours.
    jitter : float
        Uniform random position error, ±px.
    rotation_deg : float
        Uniform random rotation, ±degrees.
    vignetting : (lo, hi)
        Corner fall-off range (0.15 = corners 15 % darker).
    exposure : float
        Uniform random exposure factor 1 ± this.
    noise : float
        Gaussian sensor noise σ (DN).
    jpeg : int or None
        JPEG quality of a round trip (None: none).
    tile_size : (w, h), optional
        Default: the largest that fits the grid inside the image.
    seed : int

    Returns
    -------
    TileSet
    """
    import cv2

    rng = np.random.default_rng(seed)
    rows, cols = grid
    ih, iw = image.shape[:2]
    margin = jitter + 10
    if tile_size is None:
        tw = int((iw - 2 * margin) / (1 + (cols - 1) * (1 - overlap)))
        th = int((ih - 2 * margin) / (1 + (rows - 1) * (1 - overlap)))
        # keep the rotation inside the image
        tw -= int(np.ceil(th * np.sin(np.radians(rotation_deg)))) + 2
        th -= int(np.ceil(tw * np.sin(np.radians(rotation_deg)))) + 2
    else:
        tw, th = tile_size
    sx, sy = tw * (1 - overlap), th * (1 - overlap)
    tiles, truth, gains, vigs = [], [], [], []
    cu, cv = (tw - 1) / 2.0, (th - 1) / 2.0
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
    r2 = ((xx - cu) ** 2 + (yy - cv) ** 2) / (cu * cu + cv * cv)
    for r in range(rows):
        for c in range(cols):
            cx = margin + cu + c * sx + rng.uniform(-jitter, jitter)
            cy = margin + cv + r * sy + rng.uniform(-jitter, jitter)
            a = np.radians(rng.uniform(-rotation_deg, rotation_deg))
            co, si = np.cos(a), np.sin(a)
            h = np.array([[co, -si, cx - (co * cu - si * cv)], [si, co, cy - (si * cu + co * cv)], [0, 0, 1.0]])
            t = cv2.warpAffine(image, h[:2], (tw, th), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT).astype(np.float32)
            v = rng.uniform(*vignetting)
            g = 1 + rng.uniform(-exposure, exposure)
            t *= ((1 - v * r2) * g)[..., None]
            if noise:
                t += rng.normal(0, noise, t.shape).astype(np.float32)
            t = np.clip(t + 0.5, 0, 255).astype(np.uint8)
            if jpeg:
                ok, buf = cv2.imencode(".jpg", t[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg)])
                t = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
            tiles.append(t)
            truth.append(h)
            gains.append(g)
            vigs.append(v)
    return TileSet(tiles, np.array(truth), (rows, cols), np.array(gains), np.array(vigs))


def position_rmse(estimated: np.ndarray, truth: np.ndarray, shapes, *, points: str = "centres") -> float:
    """Tile position RMSE (px) after removing the best rigid motion between the two frames.

    The panorama's origin and orientation are arbitrary, so the estimated
    positions are compared with the true ones after the rigid transform that
    fits them best (Kabsch).

    Parameters
    ----------
    estimated, truth : (T, 3, 3) ndarray
        Tile-to-panorama and tile-to-source maps.
    shapes : list of (h, w)
    points : {"centres", "corners"}
        Compare tile centres (positions), or the four corners (also tests rotation).

    Returns
    -------
    rmse : float
    """
    pe, pt = [], []
    for he, ht, (h, w) in zip(estimated, truth, shapes):
        if points == "centres":
            q = np.array([[(w - 1) / 2.0, (h - 1) / 2.0, 1.0]])
        else:
            q = np.array([[0, 0, 1.0], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]])
        pe.append((q @ he.T)[:, :2])
        pt.append((q @ ht.T)[:, :2])
    pe, pt = np.vstack(pe), np.vstack(pt)
    me, mt = pe.mean(axis=0), pt.mean(axis=0)
    u, _, vt = np.linalg.svd((pt - mt).T @ (pe - me))
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, d]) @ vt
    fitted = (pt - mt) @ rot + me
    return float(np.sqrt(np.mean(np.sum((fitted - pe) ** 2, axis=1))))
