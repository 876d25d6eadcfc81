"""Pairwise registration of overlapping tiles: the matcher registry.

Every matcher finds an initial transform between two tiles (phase correlation
of downscaled tiles, or local features with robust estimation), and by default
refines it at full resolution by sub-pixel phase correlation of blocks spread
over the overlap. The result of a pair is a set of point correspondences that
the global adjustment (:mod:`core.stitching.adjust`) uses.

References
----------
S. Preibisch, S. Saalfeld and P. Tomancak, "Globally optimal stitching of tiled
3D microscopic image acquisitions", Bioinformatics 25(11), 1463-1465, 2009.
doi:10.1093/bioinformatics/btp184

D. G. Lowe, "Distinctive image features from scale-invariant keypoints",
IJCV 60, 91-110, 2004. doi:10.1023/B:VISI.0000029664.99615.94

E. Rublee et al., "ORB: an efficient alternative to SIFT or SURF", ICCV 2011.
doi:10.1109/ICCV.2011.6126544

D. Barath, J. Noskova, M. Ivashechkin and J. Matas, "MAGSAC++, a fast, reliable
and accurate robust estimator", CVPR 2020. doi:10.1109/CVPR42600.2020.00138

J. Sun et al., "LoFTR: detector-free local feature matching with
transformers", CVPR 2021. doi:10.1109/CVPR46437.2021.00881

P. Lindenberger, P.-E. Sarlin and M. Pollefeys, "LightGlue: local feature
matching at light speed", ICCV 2023. doi:10.1109/ICCV51070.2023.01616
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..registry import Registry
from .phase import cross_power, fft2, highpass, ifft2_real, phase_correlate

__all__ = ["MATCHERS", "PairMatch", "TileStack", "Matcher", "make_matcher", "refine_pair"]

MATCHERS: Registry = Registry("matcher")

# Downscaled copies used to find pairs and initial offsets have this longest side.
COARSE_SIDE = 512


@dataclass
class PairMatch:
    """Correspondences between tile ``i`` and tile ``j``.

    Attributes
    ----------
    i, j : int
    pts_i, pts_j : (K, 2) float64 ndarray
        Matching points (x, y) in full-resolution pixel coordinates of each tile
        (pixel centres at integers).
    score : float
        Matcher-specific confidence (mean block peak height, or inlier ratio).
    method : str
    """

    i: int
    j: int
    pts_i: np.ndarray
    pts_j: np.ndarray
    score: float
    method: str
    initial: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(len(self.pts_i))


class TileStack:
    """The tiles being stitched, with cached grey and downscaled copies.

    Parameters
    ----------
    tiles : sequence of (M, N, 3) uint8 ndarray
    """

    def __init__(self, tiles):
        import cv2

        self.tiles = list(tiles)
        self.shapes = [t.shape[:2] for t in self.tiles]
        side = max(max(s) for s in self.shapes)
        self.scale = min(1.0, COARSE_SIDE / side)
        def shrink(t):
            h, w = t.shape[:2]
            return cv2.resize(t, (max(8, round(w * self.scale)), max(8, round(h * self.scale))),
                              interpolation=cv2.INTER_AREA)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as ex:
            self.small_rgb = list(ex.map(shrink, self.tiles))
        self.small = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) for rgb in self.small_rgb]
        self._hp = [highpass(s, 3.0) for s in self.small]

    def __len__(self) -> int:
        return len(self.tiles)

    def small_highpass(self) -> list[np.ndarray]:
        if self._hp is None:
            self._hp = [highpass(s, 3.0) for s in self.small]
        return self._hp

    @property
    def small_shapes(self) -> list[tuple[int, int]]:
        return [s.shape[:2] for s in self.small]

    def small_fft(self, k: int) -> np.ndarray:
        """FFT of the high-passed downscaled tile ``k``, zero-padded to the largest downscaled tile."""
        cache = self.__dict__.setdefault("_fft", {})
        if k not in cache:
            hh = max(s[0] for s in self.small_shapes)
            ww = max(s[1] for s in self.small_shapes)
            a = self.small_highpass()[k]
            pad = np.zeros((hh, ww), np.float32)
            pad[:a.shape[0], :a.shape[1]] = a
            cache[k] = fft2(pad)
        return cache[k]

    def grey_block(self, k: int, x0: int, y0: int, size: int) -> np.ndarray | None:
        """Full-resolution grey block ``size``×``size`` with top-left (x0, y0), None if outside."""
        import cv2

        h, w = self.shapes[k]
        if x0 < 0 or y0 < 0 or x0 + size > w or y0 + size > h:
            return None
        block = self.tiles[k][y0:y0 + size, x0:x0 + size]
        if block.ndim == 3:
            block = cv2.cvtColor(block, cv2.COLOR_RGB2GRAY)
        return block.astype(np.float32)

    def to_full(self, pts: np.ndarray) -> np.ndarray:
        """Downscaled pixel coordinates to full-resolution ones (pixel centres)."""
        return (np.asarray(pts, np.float64) + 0.5) / self.scale - 0.5


def _affine_inv(a: np.ndarray) -> np.ndarray:
    m = np.vstack([a, [0, 0, 1]])
    return np.linalg.inv(m)[:2]


def _apply(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ a[:, :2].T + a[:, 2]


def _direction_ok(t: np.ndarray, direction: str | None) -> bool:
    dx, dy = t
    if direction == "right":
        return dx > 0 and abs(dy) < dx
    if direction == "down":
        return dy > 0 and abs(dx) < dy
    return True


def coarse_offset(stack: TileStack, i: int, j: int, *, direction: str | None = None,
                  min_overlap: float = 0.02, n_peaks: int = 6) -> tuple[np.ndarray, float] | None:
    """Offset of tile ``j`` in tile ``i``'s frame by phase correlation of downscaled copies.

    Returns
    -------
    offset : (2,) ndarray
        Full-resolution (x, y) of tile ``j``'s origin in tile ``i``'s pixels.
    ncc : float
        Normalised cross-correlation over the implied overlap.
    Or None when no candidate overlaps enough.
    """
    import cv2

    hp = stack.small_highpass()
    a, b = hp[i], hp[j]
    hh = max(s[0] for s in stack.small_shapes)
    ww = max(s[1] for s in stack.small_shapes)
    r = cross_power(stack.small_fft(i), stack.small_fft(j), lowpass=0.25)
    corr = ifft2_real(r)
    best = None
    work = corr.copy()
    min_area = min_overlap * min(a.size, b.size)
    for _ in range(n_peaks):
        _, _, _, (kx, ky) = cv2.minMaxLoc(work)
        cv2.circle(work, (kx, ky), 3, float(work.min()), -1)
        for ty in (-ky, hh - ky):
            for tx in (-kx, ww - kx):
                t = np.array([tx, ty], np.float64)
                if not _direction_ok(t, direction):
                    continue
                x0, x1 = max(0, tx), min(a.shape[1], tx + b.shape[1])
                y0, y1 = max(0, ty), min(a.shape[0], ty + b.shape[0])
                if x1 - x0 < 6 or y1 - y0 < 6 or (x1 - x0) * (y1 - y0) < min_area:
                    continue
                oa = a[y0:y1, x0:x1]
                ob = b[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
                oa = oa - oa.mean()
                ob = ob - ob.mean()
                den = float(np.sqrt((oa * oa).sum() * (ob * ob).sum()))
                ncc = float((oa * ob).sum() / den) if den > 0 else 0.0
                if best is None or ncc > best[1]:
                    best = (t, ncc)
    if best is None:
        return None
    return best[0] / stack.scale, best[1]


def refine_pair(stack: TileStack, i: int, j: int, init: np.ndarray, *, block: int = 256,
                max_blocks: int = 6, min_quality: float = 0.02, tol: float = 1.0) -> PairMatch | None:
    """Sub-pixel correspondences by phase correlation of blocks over the overlap.

    Parameters
    ----------
    stack : TileStack
    i, j : int
    init : (2, 3) ndarray
        Initial affine map from tile ``j`` pixels to tile ``i`` pixels.
    block : int
        Largest block side (px).
    max_blocks : int
        Most blocks per pair.
    min_quality : float
        Blocks whose correlation peak is lower are dropped (featureless areas).
    tol : float
        Blocks disagreeing with the pair's consensus by more than this (px) are dropped.

    Returns
    -------
    PairMatch or None
        None when too few blocks agree (no real overlap or no texture).
    """
    hi, wi = stack.shapes[i]
    hj, wj = stack.shapes[j]
    corners = _apply(init, np.array([[0, 0], [wj - 1, 0], [0, hj - 1], [wj - 1, hj - 1]], np.float64))
    margin = 6
    x0 = max(0.0, corners[:, 0].min()) + margin
    x1 = min(wi - 1.0, corners[:, 0].max()) - margin
    y0 = max(0.0, corners[:, 1].min()) + margin
    y1 = min(hi - 1.0, corners[:, 1].max()) - margin
    ow, oh = x1 - x0, y1 - y0
    size = int(min(block, ow, oh)) // 2 * 2
    if size < 48:
        return None
    nx = max(1, int(np.ceil(ow / size)))
    ny = max(1, int(np.ceil(oh / size)))
    while nx * ny > max_blocks:
        if nx >= ny:
            nx -= 1
        else:
            ny -= 1
    cxs = np.linspace(x0 + size / 2, x1 - size / 2, nx) if nx > 1 else [0.5 * (x0 + x1)]
    cys = np.linspace(y0 + size / 2, y1 - size / 2, ny) if ny > 1 else [0.5 * (y0 + y1)]
    inv = _affine_inv(init)
    pts_i, pts_j, quals = [], [], []
    half = size // 2
    for cy in cys:
        for cx in cxs:
            ci = np.array([round(cx), round(cy)], np.int64)
            cj = np.rint(_apply(inv, ci[None].astype(np.float64))[0]).astype(np.int64)
            a = stack.grey_block(i, int(ci[0]) - half, int(ci[1]) - half, size)
            b = stack.grey_block(j, int(cj[0]) - half, int(cj[1]) - half, size)
            if a is None or b is None or a.std() < 1.0 or b.std() < 1.0:
                continue
            dx, dy, q = phase_correlate(a, b)
            if q < min_quality or abs(dx) > size / 4 or abs(dy) > size / 4:
                continue
            # b(x) = a(x + d): tile j pixel cj lies at ci + d in tile i
            pts_i.append(ci + np.array([dx, dy]))
            pts_j.append(cj.astype(np.float64))
            quals.append(q)
    if len(pts_i) < 2:
        return None
    pi, pj, qs = np.array(pts_i), np.array(pts_j), np.array(quals)
    keep = _consensus(pi, pj, tol)
    if keep.sum() < 2:
        return None
    return PairMatch(i, j, pi[keep], pj[keep], float(qs[keep].mean()), "phase", initial=init)


def _consensus(pi: np.ndarray, pj: np.ndarray, tol: float) -> np.ndarray:
    """Inliers of a similarity fit (iteratively trimmed; translation for < 3 points)."""
    keep = np.ones(len(pi), bool)
    for _ in range(4):
        if keep.sum() >= 3:
            a = _fit_similarity(pj[keep], pi[keep])
            res = np.linalg.norm(_apply(a, pj) - pi, axis=1)
        else:
            t = np.median(pi[keep] - pj[keep], axis=0)
            res = np.linalg.norm(pj + t - pi, axis=1)
        thr = max(tol, 3.0 * float(np.median(res[keep])))
        new = res <= thr
        if new.sum() < 2 or np.array_equal(new, keep):
            keep = new if new.sum() >= 2 else keep
            break
        keep = new
    return keep


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) mapping ``src`` to ``dst``."""
    n = len(src)
    m = np.zeros((2 * n, 4))
    m[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)]
    m[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(n), np.ones(n)]
    p, *_ = np.linalg.lstsq(m, dst.reshape(-1), rcond=None)
    a, b, tx, ty = p
    return np.array([[a, -b, tx], [b, a, ty]])


class Matcher:
    """Base class: find an initial transform for a pair, then refine it.

    Parameters
    ----------
    refine : bool
        Refine the initial transform with full-resolution block phase correlation.
    weights : str or None
        Local weight file(s) for learned matchers.
    """

    name = "base"

    def __init__(self, *, refine: bool = True, weights: str | None = None):
        self.refine = refine
        self.weights = weights
        self.stack: TileStack | None = None

    def prepare(self, stack: TileStack) -> None:
        self.stack = stack

    def initial(self, i: int, j: int, direction: str | None) -> tuple[np.ndarray, float, PairMatch | None] | None:
        """Initial (2, 3) map from tile ``j`` to tile ``i``, its score and raw correspondences."""
        raise NotImplementedError

    def match(self, i: int, j: int, direction: str | None = None) -> PairMatch | None:
        got = self.initial(i, j, direction)
        if got is None:
            return None
        init, score, raw = got
        if self.refine or raw is None:
            return refine_pair(self.stack, i, j, init)
        return raw


@MATCHERS.register("phase", doc="Phase correlation: downscaled tiles for the offset, full-resolution blocks for sub-pixel accuracy (fastest).")
class PhaseMatcher(Matcher):
    """Phase correlation: downscaled tiles for the offset, full-resolution blocks for sub-pixel accuracy."""

    name = "phase"
    min_ncc = 0.25

    def initial(self, i, j, direction):
        got = coarse_offset(self.stack, i, j, direction=direction)
        if got is None:
            return None
        t, ncc = got
        if ncc < self.min_ncc:
            return None
        init = np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])
        return init, ncc, None


class _FeatureMatcher(Matcher):
    """Local features on downscaled tiles, ratio test and MAGSAC++ similarity."""

    side = 1600
    ratio = 0.8
    min_inliers = 12
    norm = None

    def prepare(self, stack):
        import cv2

        super().prepare(stack)
        s = min(1.0, self.side / max(max(sh) for sh in stack.shapes))
        self.fscale = s
        self.features = []
        for t in stack.tiles:
            g = cv2.cvtColor(t, cv2.COLOR_RGB2GRAY) if t.ndim == 3 else t
            if s < 1:
                g = cv2.resize(g, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            kp, des = self.detect(g)
            pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2)
            self.features.append((pts, des))

    def detect(self, grey):
        raise NotImplementedError

    def initial(self, i, j, direction):
        import cv2

        pi, di = self.features[i]
        pj, dj = self.features[j]
        if di is None or dj is None or len(pi) < self.min_inliers or len(pj) < self.min_inliers:
            return None
        bf = cv2.BFMatcher(self.norm)
        knn = bf.knnMatch(dj, di, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        if len(good) < self.min_inliers:
            return None
        src = pj[[m.queryIdx for m in good]]
        dst = pi[[m.trainIdx for m in good]]
        return self._robust(src, dst, i, j, direction)

    def _robust(self, src, dst, i, j, direction):
        import cv2

        s = self.fscale
        full_src = (src + 0.5) / s - 0.5
        full_dst = (dst + 0.5) / s - 0.5
        a, inl = cv2.estimateAffine2D(full_src, full_dst, method=cv2.USAC_MAGSAC,
                                      ransacReprojThreshold=2.0 / s, maxIters=5000, confidence=0.999)
        if a is None or inl is None:
            return None
        inl = inl.ravel().astype(bool)
        if inl.sum() < self.min_inliers:
            return None
        a = _fit_similarity(full_src[inl], full_dst[inl])
        lin = a[:, :2]
        scale = np.sqrt(abs(np.linalg.det(lin)))
        if not 0.9 < scale < 1.1:  # a microscope stage does not zoom between frames
            return None
        if not _direction_ok(a[:, 2] + lin @ np.array([0.0, 0.0]), direction):
            return None
        raw = PairMatch(i, j, full_dst[inl], full_src[inl], float(inl.mean()), self.name, initial=a)
        return a, float(inl.mean()), raw


@MATCHERS.register("sift", doc="SIFT keypoints, ratio test and MAGSAC++ (robust to large unknown offsets).")
class SiftMatcher(_FeatureMatcher):
    """SIFT keypoints, ratio test and MAGSAC++."""

    name = "sift"

    def detect(self, grey):
        import cv2

        self.norm = cv2.NORM_L2
        return cv2.SIFT_create(nfeatures=4000).detectAndCompute(grey, None)


@MATCHERS.register("orb", doc="ORB keypoints, ratio test and MAGSAC++ (fast binary features).")
class OrbMatcher(_FeatureMatcher):
    """ORB keypoints, ratio test and MAGSAC++."""

    name = "orb"
    ratio = 0.85

    def detect(self, grey):
        import cv2

        self.norm = cv2.NORM_HAMMING
        return cv2.ORB_create(nfeatures=5000, fastThreshold=10).detectAndCompute(grey, None)


def _load_state(path: str, what: str):
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: {what} weight file not found; this matcher needs a local weight file")
    import torch

    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception:
        raise ValueError(f"{p}: not a readable PyTorch weight file") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return sd


class _LearnedMatcher(_FeatureMatcher):
    """Learned matchers run through kornia on downscaled tiles, with user-supplied weights only."""

    side = 800

    def prepare(self, stack):
        import cv2

        Matcher.prepare(self, stack)
        if not self.weights:
            raise ValueError(f"matcher {self.name!r} needs a local weight file (weights=...); "
                             "nothing is downloaded at run time")
        self.fscale = min(1.0, self.side / max(max(sh) for sh in stack.shapes))
        self.greys = []
        for t in stack.tiles:
            g = cv2.cvtColor(t, cv2.COLOR_RGB2GRAY) if t.ndim == 3 else t
            if self.fscale < 1:
                g = cv2.resize(g, None, fx=self.fscale, fy=self.fscale, interpolation=cv2.INTER_AREA)
            self.greys.append(g)
        self.build()

    def _tensor(self, k, rgb=False):
        import torch

        g = torch.from_numpy(self.greys[k]).float()[None, None] / 255.0
        h, w = g.shape[-2:]
        g = g[..., : h // 16 * 16, : w // 16 * 16]
        return g.repeat(1, 3, 1, 1) if rgb else g


@MATCHERS.register("loftr", doc="LoFTR (kornia) with a local weight file; detector-free, slow on CPU.")
class LoftrMatcher(_LearnedMatcher):
    """LoFTR through kornia, with a local weight file."""

    name = "loftr"

    def build(self):
        state = _load_state(self.weights, "LoFTR")
        import kornia.feature as KF

        self.net = KF.LoFTR(pretrained=None)
        self.net.load_state_dict(state)
        self.net.eval()

    def initial(self, i, j, direction):
        import torch

        with torch.inference_mode():
            out = self.net({"image0": self._tensor(j), "image1": self._tensor(i)})
        src = out["keypoints0"].numpy().astype(np.float64)
        dst = out["keypoints1"].numpy().astype(np.float64)
        if len(src) < self.min_inliers:
            return None
        return self._robust(src, dst, i, j, direction)


@MATCHERS.register("disk_lightglue", doc="DISK + LightGlue (kornia) with local weight files 'disk.pth,lightglue.pth'.")
class DiskLightGlueMatcher(_LearnedMatcher):
    """DISK keypoints matched by LightGlue, through kornia, with local weight files."""

    name = "disk_lightglue"

    def build(self):
        parts = [p.strip() for p in str(self.weights).split(",") if p.strip()]
        if len(parts) != 2:
            raise ValueError("matcher 'disk_lightglue' needs two weight files: 'DISK.pth,LIGHTGLUE.pth'")
        for p, what in zip(parts, ("DISK", "LightGlue")):
            if not Path(p).is_file():
                raise ValueError(f"{p}: {what} weight file not found; this matcher needs a local weight file")
        import kornia.feature as KF

        self.disk = KF.DISK()
        self.disk.load_state_dict(_load_state(parts[0], "DISK"))
        self.disk.eval()
        conf = dict(KF.LightGlue.features["disk"])
        conf.pop("weights", None)
        self.lg = KF.LightGlue(None, **conf)
        self.lg.load_state_dict(_load_state(parts[1], "LightGlue"), strict=False)
        self.lg.eval()
        self._feats = {}

    def _features(self, k):
        import torch

        if k not in self._feats:
            with torch.inference_mode():
                f = self.disk(self._tensor(k, rgb=True), n=2048, pad_if_not_divisible=True)[0]
            self._feats[k] = f
        return self._feats[k]

    def initial(self, i, j, direction):
        import torch

        fj, fi = self._features(j), self._features(i)
        hj, wj = self.greys[j].shape
        hi, wi = self.greys[i].shape
        with torch.inference_mode():
            out = self.lg({
                "image0": {"keypoints": fj.keypoints[None], "descriptors": fj.descriptors[None],
                           "image_size": torch.tensor([[wj, hj]])},
                "image1": {"keypoints": fi.keypoints[None], "descriptors": fi.descriptors[None],
                           "image_size": torch.tensor([[wi, hi]])},
            })
        m = out["matches"][0].numpy()
        if len(m) < self.min_inliers:
            return None
        src = fj.keypoints.numpy()[m[:, 0]].astype(np.float64)
        dst = fi.keypoints.numpy()[m[:, 1]].astype(np.float64)
        return self._robust(src, dst, i, j, direction)


def make_matcher(name: str, *, refine: bool = True, weights: str | os.PathLike | None = None) -> Matcher:
    """Instantiate the matcher called ``name`` (see ``MATCHERS.names()``)."""
    cls = MATCHERS.get(name)
    return cls(refine=refine, weights=None if weights is None else str(weights))
