"""Composing the panorama: exposure and vignetting compensation, seams, blending.

The output is rendered in horizontal bands (with a margin for the blending
pyramid), so memory holds the tiles, one band and the output array, which may
itself be a memory-mapped file.

References
----------
M. Brown and D. G. Lowe, "Automatic panoramic image stitching using invariant
features", IJCV 74, 59-73, 2007. doi:10.1007/s11263-006-0002-3 (gain compensation)

D. B. Goldman, "Vignette and exposure calibration and compensation", IEEE TPAMI
32(12), 2276-2288, 2010. doi:10.1109/TPAMI.2010.55

V. Kwatra, A. Schödl, I. Essa, G. Turk and A. Bobick, "Graphcut textures",
ACM TOG 22(3), 277-286, 2003. doi:10.1145/882262.882264

P. J. Burt and E. H. Adelson, "A multiresolution spline with application to
image mosaics", ACM TOG 2(4), 217-236, 1983. doi:10.1145/245.247
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from .adjust import lstsq

__all__ = ["SEAMS", "BLENDERS", "Photometric", "estimate_photometric", "render", "tile_footprints"]

SEAMS: Registry = Registry("seam finder")
_SEAM_PX = 5e4  # pixels per tile at the seam-finding scale
BLENDERS: Registry = Registry("blender")

SEAMS.add("graphcut", lambda: __import__("cv2").detail_GraphCutSeamFinder("COST_COLOR"),
          doc="Graph cut on colour differences: seams along the least visible path (default).")
SEAMS.add("graphcut_grad", lambda: __import__("cv2").detail_GraphCutSeamFinder("COST_COLOR_GRAD"),
          doc="Graph cut on colour and gradient differences (slower).")
SEAMS.add("dp", lambda: __import__("cv2").detail_DpSeamFinder("COLOR_GRAD"),
          doc="Dynamic-programming seams along the least visible path (fast).")
SEAMS.add("voronoi", lambda: __import__("cv2").detail.SeamFinder_createDefault(__import__("cv2").detail.SeamFinder_VORONOI_SEAM),
          doc="Voronoi seams: each pixel from the nearest tile centre (fast, ignores content).")
SEAMS.add("none", lambda: None, doc="No seams: every tile covers its whole footprint (blending does all the work).")

BLENDERS.add("multiband", lambda bands: __import__("cv2").detail_MultiBandBlender(0, bands),
             doc="Multi-band (Laplacian pyramid) blending: wide transitions for low frequencies, sharp for detail.")
BLENDERS.add("feather", lambda bands: __import__("cv2").detail_FeatherBlender(0.02),
             doc="Feathering: linear weights near the seam.")
BLENDERS.add("none", lambda bands: __import__("cv2").detail.Blender_createDefault(__import__("cv2").detail.Blender_NO),
             doc="No blending: hard seams.")


@dataclass
class Photometric:
    """Per-tile gains and a shared radial vignetting model.

    Attributes
    ----------
    log_gain : (T, 3) ndarray
        Natural-log gain of each tile and channel (0 = unchanged).
    vignetting : (2,) ndarray
        ``(a, b)`` of ``log V(r) = a r^2 + b r^4``, with ``r`` = 1 at the tile corners.
    """

    log_gain: np.ndarray
    vignetting: np.ndarray

    def correction(self, k: int, shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Multiplicative correction (y1-y0, x1-x0, 3) float32 for a region of tile ``k``."""
        v = self._vignette_map(tuple(shape))[y0:y1, x0:x1]
        g = np.exp(-self.log_gain[k]).astype(np.float32)
        return v[..., None] * g[None, None, :]

    def apply(self, k: int, tile: np.ndarray, shape: tuple[int, int], x0: int, y0: int) -> np.ndarray:
        """Corrected uint8 copy of ``tile``, a region of tile ``k`` (of full size ``shape``) at (x0, y0)."""
        import cv2

        if self.is_identity():
            return tile
        h, w = tile.shape[:2]
        v3 = self._vignette_map3(tuple(shape))[y0:y0 + h, x0:x0 + w]
        g = np.exp(-self.log_gain[k])
        c = cv2.multiply(v3, (float(g[0]), float(g[1]), float(g[2]), 0.0))
        return cv2.multiply(tile, c, dtype=cv2.CV_8U)

    def is_identity(self) -> bool:
        return not np.any(self.log_gain) and not np.any(self.vignetting)

    def _vignette_map3(self, shape):
        import cv2

        cache = self.__dict__.setdefault("_maps3", {})
        got = cache.get(shape)
        if got is None:
            v = self._vignette_map(shape)
            got = cv2.merge([v, v, v])
            if len(cache) < 4:
                cache[shape] = got
        return got

    def _vignette_map(self, shape):
        cache = self.__dict__.setdefault("_maps", {})
        got = cache.get(shape)
        if got is not None:
            return got
        h, w = shape
        a, b = (float(v) for v in self.vignetting)
        if a == 0 and b == 0:
            got = np.ones((h, w), np.float32)
        else:
            cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
            xs = ((np.arange(w, dtype=np.float32) - cx) ** 2)[None, :]
            ys = ((np.arange(h, dtype=np.float32) - cy) ** 2)[:, None]
            r2 = (xs + ys) / np.float32(cx * cx + cy * cy)
            got = np.exp(np.clip(-(a * r2 + b * r2 * r2), -0.7, 0.7)).astype(np.float32)
        if len(cache) < 4:
            cache[shape] = got
        return got


def _r2(pts, shape):
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return ((pts[:, 0] - cx) ** 2 + (pts[:, 1] - cy) ** 2) / (cx * cx + cy * cy)


def estimate_photometric(stack, alignment, *, vignetting: bool = True, gain: bool = True) -> Photometric:
    """Fit tile gains and a radial vignetting law to the overlaps.

    For each overlap sample, ``log I_i(p) - log I_j(q) = g_i - g_j + a (r_p² - r_q²) + b (r_p⁴ - r_q⁴)``;
    all are solved together by least squares with the mean gain fixed to 0,
    twice, dropping outliers (misregistered or moving content) the second time.

    Parameters
    ----------
    stack : TileStack
    alignment : Alignment

    Returns
    -------
    Photometric
    """
    import cv2

    n = len(stack)
    if not gain and not vignetting:
        return Photometric(np.zeros((n, 3)), np.zeros(2))
    s = stack.scale
    blurred = [cv2.GaussianBlur(im.astype(np.float32), (0, 0), 1.5) for im in stack.small_rgb]
    inv = [np.linalg.inv(h) for h in alignment.transforms]
    rows, rhs = [], []
    step = max(2.0, 8.0 / s)  # full-resolution spacing of samples
    for pm in alignment.pairs:
        i, j = pm.i, pm.j
        hj, wj = stack.shapes[j]
        hi, wi = stack.shapes[i]
        gx, gy = np.meshgrid(np.arange(4, wj - 4, step), np.arange(4, hj - 4, step))
        q = np.c_[gx.ravel(), gy.ravel()]
        pano = q @ alignment.transforms[j][:2, :2].T + alignment.transforms[j][:2, 2]
        p = pano @ inv[i][:2, :2].T + inv[i][:2, 2]
        ok = (p[:, 0] >= 4) & (p[:, 0] <= wi - 5) & (p[:, 1] >= 4) & (p[:, 1] <= hi - 5)
        p, q = p[ok], q[ok]
        if len(p) < 20:
            continue
        vi = _sample(blurred[i], (p + 0.5) * s - 0.5)
        vj = _sample(blurred[j], (q + 0.5) * s - 0.5)
        good = np.all((vi > 6) & (vi < 250) & (vj > 6) & (vj < 250), axis=1)
        p, q, vi, vj = p[good], q[good], vi[good], vj[good]
        if len(p) < 20:
            continue
        dr2 = _r2(p, (hi, wi)) - _r2(q, (hj, wj))
        dr4 = _r2(p, (hi, wi)) ** 2 - _r2(q, (hj, wj)) ** 2
        for c in range(3):
            row = np.zeros((len(p), 3 * n + 2))
            if gain:
                row[:, 3 * i + c] = 1
                row[:, 3 * j + c] -= 1
            if vignetting:
                row[:, -2] = dr2
                row[:, -1] = dr4
            rows.append(row)
            rhs.append(np.log(vi[:, c]) - np.log(vj[:, c]))
    if not rows:
        return Photometric(np.zeros((n, 3)), np.zeros(2))
    a = np.vstack(rows)
    b = np.concatenate(rhs)
    gauge = np.zeros((3, 3 * n + 2))
    for c in range(3):
        gauge[c, c:3 * n:3] = 100.0
    prior = np.eye(3 * n + 2) * 1e-2  # keeps unconstrained entries at 0
    keep = np.ones(len(b), bool)
    for _ in range(2):
        x = lstsq(np.vstack([a[keep], gauge, prior]), np.concatenate([b[keep], np.zeros(3), np.zeros(3 * n + 2)]))
        res = a @ x - b
        mad = 1.4826 * float(np.median(np.abs(res[keep] - np.median(res[keep])))) + 1e-6
        keep = np.abs(res) < 3 * mad
    return Photometric(x[:3 * n].reshape(n, 3), x[-2:].copy())


def _sample(img, pts):
    import cv2

    mx = pts[:, 0].astype(np.float32).reshape(1, -1)
    my = pts[:, 1].astype(np.float32).reshape(1, -1)
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, img.shape[2]).astype(np.float64)


def _scale_affine(s: float) -> np.ndarray:
    """Pixel-centre-preserving scaling ``x -> (x + 0.5) s - 0.5`` as a 3×3 matrix."""
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def tile_footprints(alignment) -> list[tuple[int, int, int, int]]:
    """Integer bounding box (x0, y0, x1, y1), end exclusive, of each tile in the panorama."""
    out = []
    w_, h_ = alignment.size
    for hk, (h, w) in zip(alignment.transforms, alignment.shapes):
        q = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float) @ hk[:2, :2].T + hk[:2, 2]
        x0, y0 = np.floor(q.min(axis=0)).astype(int)
        x1, y1 = np.ceil(q.max(axis=0)).astype(int) + 1
        out.append((max(0, x0), max(0, y0), min(w_, x1), min(h_, y1)))
    return out


def _seam_masks(stack, alignment, photo, seam: str):
    """Seam masks at low resolution: (scale, list of (mask uint8, corner (x, y)))."""
    import cv2

    finder = SEAMS.get(seam)()
    area = float(np.mean([h * w for h, w in stack.shapes]))
    s = min(1.0, float(np.sqrt(_SEAM_PX / area)))
    sp = _scale_affine(s)
    imgs, masks, corners = [], [], []
    for k, t in enumerate(stack.small_rgb):
        h, w = stack.shapes[k]
        small = cv2.resize(t, (max(4, round(w * s)), max(4, round(h * s))), interpolation=cv2.INTER_AREA).astype(np.float32)
        small *= photo.correction(k, small.shape[:2], 0, 0, small.shape[1], small.shape[0])
        m = sp @ alignment.transforms[k] @ np.linalg.inv(_scale_affine(s))
        q = np.array([[0, 0], [small.shape[1] - 1, 0], [0, small.shape[0] - 1],
                      [small.shape[1] - 1, small.shape[0] - 1]], float) @ m[:2, :2].T + m[:2, 2]
        x0, y0 = np.floor(q.min(axis=0)).astype(int)
        x1, y1 = np.ceil(q.max(axis=0)).astype(int) + 1
        mm = _translate(-x0, -y0) @ m
        warped = cv2.warpAffine(small, mm[:2], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
        valid = cv2.warpAffine(np.full(small.shape[:2], 255, np.uint8), mm[:2], (x1 - x0, y1 - y0),
                               flags=cv2.INTER_NEAREST)
        imgs.append(warped)
        masks.append(valid)
        corners.append((int(x0), int(y0)))
    if finder is not None and len(imgs) > 1:
        res = finder.find([cv2.UMat(im) for im in imgs], corners, [cv2.UMat(m) for m in masks])
        masks = [r.get() if isinstance(r, cv2.UMat) else np.asarray(r) for r in res]
    return s, list(zip(masks, corners))


def render(stack, alignment, *, photometric: Photometric | None = None, seam: str = "graphcut",
           blender: str = "multiband", bands: int | None = None, band_rows: int | None = None,
           out: np.ndarray | None = None, progress=None) -> np.ndarray:
    """Render the panorama band by band.

    Parameters
    ----------
    stack : TileStack
    alignment : Alignment
    photometric : Photometric, optional
        Gains and vignetting to compensate (none if omitted).
    seam : str
        Name in :data:`SEAMS`.
    blender : str
        Name in :data:`BLENDERS`.
    bands : int, optional
        Pyramid levels for multi-band blending (default from the tile size).
    band_rows : int, optional
        Output rows rendered at once (the memory bound); default about 40 Mpx per band.
    out : (H, W, 3) uint8 ndarray, optional
        Where to write (for example a memory-mapped TIFF); allocated if omitted.
    progress : callable(float), optional

    Returns
    -------
    panorama : (H, W, 3) uint8 ndarray
    """
    import cv2

    make_blender = BLENDERS.get(blender)
    n = len(stack)
    photo = photometric or Photometric(np.zeros((n, 3)), np.zeros(2))
    wp, hp = alignment.size
    if out is None:
        out = np.zeros((hp, wp, 3), np.uint8)
    elif out.shape != (hp, wp, 3):
        raise ValueError(f"output array must have shape {(hp, wp, 3)}, not {out.shape}")
    if bands is None:
        area = float(np.mean([h * w for h, w in stack.shapes]))
        bands = int(np.clip(np.log2(0.05 * np.sqrt(area)) - 1, 1, 7))
    margin = 4 * 2 ** bands
    if band_rows is None:
        band_rows = max(512, int(40e6 // max(wp, 1)))
    s_seam, seams = _seam_masks(stack, alignment, photo, seam)
    boxes = tile_footprints(alignment)
    inv = [np.linalg.inv(h) for h in alignment.transforms]
    starts = list(range(0, hp, band_rows))
    workers = max(1, min(4, os.cpu_count() or 1))
    photo._vignette_map3(tuple(stack.shapes[0]))  # build the shared map once, not in every thread
    for bi, y0 in enumerate(starts):
        y1 = min(hp, y0 + band_rows)
        ey0, ey1 = max(0, y0 - margin), min(hp, y1 + margin)
        def make_feed(k, ey0=ey0, ey1=ey1):
            bx0, by0, bx1, by1 = boxes[k]
            ry0, ry1 = max(by0, ey0), min(by1, ey1)
            if ry1 <= ry0 or bx1 <= bx0:
                return None
            rx0, rx1 = bx0, bx1
            th, tw = stack.shapes[k]
            q = np.array([[rx0, ry0], [rx1, ry0], [rx0, ry1], [rx1, ry1]], float) @ inv[k][:2, :2].T + inv[k][:2, 2]
            sx0, sy0 = np.maximum(np.floor(q.min(axis=0)).astype(int) - 3, 0)
            sx1, sy1 = np.minimum(np.ceil(q.max(axis=0)).astype(int) + 4, [tw, th])
            if sx1 <= sx0 or sy1 <= sy0:
                return None
            src = photo.apply(k, stack.tiles[k][sy0:sy1, sx0:sx1], (th, tw), sx0, sy0)
            m = _translate(-rx0, -ry0) @ alignment.transforms[k] @ _translate(sx0, sy0)
            size = (rx1 - rx0, ry1 - ry0)
            warped = cv2.warpAffine(src, m[:2], size, flags=cv2.INTER_LINEAR)
            # valid only where the whole interpolation support lies inside the tile
            valid = _valid_from_tile(_translate(-rx0, -ry0) @ alignment.transforms[k], (th, tw), size)
            smask, (cx, cy) = seams[k]
            up = np.array([[s_seam, 0, (rx0 + 0.5) * s_seam - 0.5 - cx],
                           [0, s_seam, (ry0 + 0.5) * s_seam - 0.5 - cy]])
            sm = cv2.warpAffine(smask, up, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP) >= 128
            return [k, warped, valid, sm, rx0, ry0]

        with ThreadPoolExecutor(workers) as ex:
            feeds = [f for f in ex.map(make_feed, range(n)) if f is not None]
        if not feeds:
            continue
        # pixels that the low-resolution seams leave to no tile go to any tile that covers them
        claimed = np.zeros((ey1 - ey0, wp), bool)
        for f in feeds:
            k, warped, valid, sm, rx0, ry0 = f
            f[3] = sm & valid
            claimed[ry0 - ey0:ry0 - ey0 + valid.shape[0], rx0:rx0 + valid.shape[1]] |= f[3]
        for f in feeds:
            k, warped, valid, sm, rx0, ry0 = f
            view = claimed[ry0 - ey0:ry0 - ey0 + valid.shape[0], rx0:rx0 + valid.shape[1]]
            hole = valid & ~view
            if hole.any():
                f[3] = sm | hole
                view |= hole
        bl = make_blender(bands)
        bl.prepare((0, ey0, wp, ey1 - ey0))
        for k, warped, valid, sm, rx0, ry0 in feeds:
            bl.feed(warped.astype(np.int16), sm.astype(np.uint8) * 255, (rx0, ry0))
        res, rmask = bl.blend(None, None)
        res = np.asarray(res)
        band = res[y0 - ey0:y1 - ey0]
        np.clip(band, 0, 255, out=band)
        band = band.astype(np.uint8)
        covered = np.asarray(rmask)[y0 - ey0:y1 - ey0] > 0
        band[~covered] = 0
        out[y0:y1] = band
        if progress is not None:
            progress((bi + 1) / len(starts))
    return out


def _valid_from_tile(m: np.ndarray, shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Pixels of a (size) ROI whose inverse-mapped position lies inside the tile (interpolation-safe)."""
    inv = np.linalg.inv(m)
    w, h = size
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    inv = inv.astype(np.float32)
    th, tw = shape
    xsrc = (inv[0, 0] * xs)[None, :] + (inv[0, 1] * ys + inv[0, 2])[:, None]
    ok = (xsrc >= 0) & (xsrc <= tw - 1)
    del xsrc
    ysrc = (inv[1, 0] * xs)[None, :] + (inv[1, 1] * ys + inv[1, 2])[:, None]
    ok &= (ysrc >= 0) & (ysrc <= th - 1)
    return ok
