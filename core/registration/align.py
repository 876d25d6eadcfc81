"""Alignment of crossed-polar (XPL) shots to the plane-polarised (PPL) reference.

Under crossed polars every mineral changes brightness and colour, and an
anisotropic grain can turn from bright to dark as the stage rotates, so the
raw intensities of a PPL and an XPL photograph cannot be compared. What they
share is *structure*: grain boundaries, polishing scratches, pits and cracks.
Both images are therefore turned into a structure image, the gradient
magnitude of the logarithm of the luminance (a multiplicative re-lighting of a
region becomes an additive constant that the gradient removes, and edges keep
their strength whatever their polarity), normalised by its local mean.

1. Keypoints and descriptors (SIFT [1]_ by default) on the structure images at
   a working size of about 1200 px, nearest-neighbour matching with Lowe's
   ratio test.
2. RANSAC [2]_ fit of a similarity (stage rotation + shift) or a full affine
   transform.
3. Refinement at full resolution: up to 96 well-spread inliers are re-measured
   by phase correlation of 96x96 structure patches (the XPL patch resampled
   through the current transform), then a robust least-squares fit.
   ``rmse_px`` is the residual of this fit in full-resolution pixels.

A fit is reported as failed (``ok=False``, with the reason) when there are too
few inliers, the scale is implausible, or the refined control points disagree:
an unrelated image is reported, never silently warped.

References
----------
.. [1] Lowe D.G., "Distinctive image features from scale-invariant keypoints",
   IJCV 60, 91-110, 2004. doi:10.1023/B:VISI.0000029664.99615.94
.. [2] Fischler M.A., Bolles R.C., "Random sample consensus", Commun. ACM 24(6),
   381-395, 1981. doi:10.1145/358669.358692
.. [3] Korshunov D. et al., Mining Science and Technology (Russia) 10(3),
   2025, 232-244. doi:10.17073/2500-0632-2025-05-416
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from ..registry import Registry

__all__ = [
    "FEATURES",
    "MODELS",
    "Prepared",
    "Registration",
    "structure_image",
    "prepare",
    "register",
    "register_series",
    "warp_to_reference",
    "transform_error",
]

ProgressFn = Optional[Callable[[float, str], None]]

FEATURES: Registry = Registry("feature detector")
MODELS: Registry = Registry("transform model")


def _sift(img: np.ndarray, n: int):
    det = cv2.SIFT_create(nfeatures=n)
    kp, desc = det.detectAndCompute(img, None)
    pts = np.float32([k.pt for k in kp]).reshape(-1, 2)
    # OpenCV's SIFT reports positions a quarter pixel past the pixel-centre
    # convention used everywhere else here (measured on exact 90-degree turns).
    return pts - 0.25, desc, cv2.NORM_L2


def _orb(img: np.ndarray, n: int):
    det = cv2.ORB_create(nfeatures=n, scaleFactor=1.3, nlevels=6, edgeThreshold=15, patchSize=31)
    kp, desc = det.detectAndCompute(img, None)
    pts = np.float32([k.pt for k in kp]).reshape(-1, 2)
    return pts, desc, cv2.NORM_HAMMING


FEATURES.add("sift", _sift, doc="SIFT keypoints on structure images (Lowe 2004); accurate, the default")
FEATURES.add("orb", _orb, doc="ORB keypoints on structure images (Rublee et al. 2011); faster, less accurate")


def _fit_similarity(src, dst, thresh):
    return cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thresh,
                                       maxIters=4000, confidence=0.999)


def _fit_affine(src, dst, thresh):
    return cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thresh,
                                maxIters=4000, confidence=0.999)


MODELS.add("similarity", _fit_similarity, doc="rotation + uniform scale + shift (a turning stage), 4 parameters")
MODELS.add("affine", _fit_affine, doc="full affine, 6 parameters")


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2:
        g = image
    else:
        raise ValueError(f"expected an (M, N, 3) RGB or (M, N) grey image, got shape {image.shape}")
    if g.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {g.dtype}")
    return g


def _structure_float(grey: np.ndarray, *, sigma: float = 1.0, eps: float | None = None) -> np.ndarray:
    g = grey.astype(np.float32)
    if eps is None:
        eps = max(float(np.median(g[::7, ::7])) * 0.1, 2.0)
    lg = np.log(g + eps)
    if sigma > 0:
        lg = cv2.GaussianBlur(lg, (0, 0), sigma)
    gx = cv2.Sobel(lg, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lg, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def structure_image(image: np.ndarray, *, scale: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """Appearance-independent structure image used for matching.

    Parameters
    ----------
    image : (M, N, 3) or (M, N) uint8 ndarray
    scale : float
        Resize factor applied before the gradient (area interpolation).
    sigma : float
        Gaussian smoothing of the log-luminance, pixels at the working scale.

    Returns
    -------
    structure : (m, n) uint8 ndarray
        Gradient magnitude of log-luminance divided by its local mean
        (window of 1/8 of the shorter side), mapped to 0-255.
    """
    g = _grey(image)
    if scale != 1.0:
        g = cv2.resize(g, (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    mag = _structure_float(g, sigma=sigma)
    win = max(15, (min(mag.shape) // 8) | 1)
    local = cv2.blur(mag, (win, win)) + 1e-3 + float(mag.mean()) * 0.2
    s = mag / local
    hi = float(np.percentile(s[::5, ::5], 99.5)) + 1e-6
    return np.clip(s * (255.0 / hi), 0, 255).astype(np.uint8)


@dataclass
class Prepared:
    """Keypoints of one image, ready for matching.

    Attributes
    ----------
    shape : (M, N) tuple
        Full-resolution size.
    scale : float
        Working scale of the keypoints.
    points : (K, 2) float32 ndarray
        Keypoint positions ``(x, y)`` at full resolution (pixel centres at integers).
    descriptors : (K, D) ndarray
    norm : int
        OpenCV norm for matching the descriptors.
    grey : (M, N) uint8 ndarray
        Full-resolution luminance (for refinement).
    features : str
    """

    shape: tuple
    scale: float
    points: np.ndarray
    descriptors: np.ndarray | None
    norm: int
    grey: np.ndarray
    features: str


@dataclass
class Registration:
    """Result of aligning one XPL shot to the PPL reference.

    Attributes
    ----------
    A : (2, 3) float64 ndarray
        Maps an XPL pixel ``(x, y, 1)`` (pixel centres at integers) to PPL
        pixel coordinates. Identity when the fit failed.
    ok : bool
        Whether the fit is trustworthy.
    inliers : int
        RANSAC inliers among the keypoint matches.
    matches : int
        Keypoint matches that passed the ratio test.
    rmse_px : float
        Residual of the final fit, full-resolution pixels (NaN if failed).
    control_points : int
        Refinement patches that agreed with the final fit.
    angle_deg : float
        Rotation of ``A`` (stage angle of the shot relative to the PPL image).
    scale : float
        Scale of ``A`` (1 for an unchanged magnification).
    message : str
        Why the fit failed, or ``""``.
    """

    A: np.ndarray
    ok: bool
    inliers: int = 0
    matches: int = 0
    rmse_px: float = float("nan")
    control_points: int = 0
    angle_deg: float = float("nan")
    scale: float = float("nan")
    message: str = ""

    def as_dict(self) -> dict:
        return {"A": np.asarray(self.A).round(6).tolist(), "ok": bool(self.ok), "inliers": int(self.inliers),
                "matches": int(self.matches),
                "rmse_px": None if not np.isfinite(self.rmse_px) else round(float(self.rmse_px), 4),
                "control_points": int(self.control_points),
                "angle_deg": None if not np.isfinite(self.angle_deg) else round(float(self.angle_deg), 4),
                "scale": None if not np.isfinite(self.scale) else round(float(self.scale), 6),
                "message": self.message}


def _scale_matrix(s: float) -> np.ndarray:
    """Full-resolution pixel -> working-scale pixel (area resize, centres at integers)."""
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])


def prepare(image: np.ndarray, *, features: str = "sift", work_side: int = 1200, n_features: int = 4000) -> Prepared:
    """Detect keypoints on the structure image of ``image``.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
    features : str
        Name in :data:`FEATURES`.
    work_side : int
        Longest side of the working image used for keypoints.
    n_features : int
        Most keypoints kept.
    """
    detect = FEATURES.get(features)
    grey = _grey(image)
    h, w = grey.shape
    s = min(1.0, work_side / max(h, w))
    st = structure_image(grey, scale=s)
    pts, desc, norm = detect(st, n_features)
    if len(pts):
        Sinv = np.linalg.inv(_scale_matrix(s))
        pts = (pts @ Sinv[:2, :2].T + Sinv[:2, 2]).astype(np.float32)
    return Prepared(shape=(h, w), scale=s, points=pts, descriptors=desc, norm=norm, grey=grey, features=features)


def _matcher(norm: int):
    if norm == cv2.NORM_L2:
        cv2.setRNGSeed(0)  # FLANN's randomised trees: same matches on every run
        return cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})
    return cv2.BFMatcher(norm)


def _params(A: np.ndarray) -> tuple[float, float]:
    return float(np.degrees(np.arctan2(A[1, 0], A[0, 0]))), float(np.sqrt(abs(np.linalg.det(A[:, :2]))))


def _local_patch(grey: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """Sample ``grey`` at ``M @ (u, v, 1)`` for a size x size patch grid (M maps patch -> image)."""
    return cv2.warpAffine(grey, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def _refine(ref: Prepared, mov: Prepared, A: np.ndarray, pts_mov: np.ndarray, *, model: str,
            patch: int = 96, n_max: int = 96) -> tuple[np.ndarray, int, float]:
    """Re-measure control points by patch phase correlation at full resolution and refit."""
    h, w = ref.shape
    # well-spread control points: one per cell of a coarse grid, in the PPL frame
    p_ref = pts_mov @ A[:, :2].T + A[:, 2]
    margin = patch
    keep = (p_ref[:, 0] > margin) & (p_ref[:, 0] < w - margin) & (p_ref[:, 1] > margin) & (p_ref[:, 1] < h - margin)
    p_ref = p_ref[keep]
    if len(p_ref) < 6:
        return A, 0, float("nan")
    cells = int(np.ceil(np.sqrt(n_max)))
    cid = (np.minimum((p_ref[:, 1] / h * cells).astype(int), cells - 1) * cells
           + np.minimum((p_ref[:, 0] / w * cells).astype(int), cells - 1))
    _, first = np.unique(cid, return_index=True)
    centres = np.round(p_ref[first]).astype(np.float64)
    win = cv2.createHanningWindow((patch, patch), cv2.CV_32F)
    half = (patch - 1) / 2.0
    src, dst, resp = [], [], []
    Ah = np.vstack([A, [0, 0, 1]])
    Ainv = np.linalg.inv(Ah)
    pad = 4
    big = patch + 2 * pad
    for cx, cy in centres:
        # patch grid (u, v) -> reference pixels: (cx - half - pad + u, cy - half - pad + v)
        T = np.array([[1, 0, cx - half - pad], [0, 1, cy - half - pad], [0, 0, 1.0]])
        r = _local_patch(ref.grey, T[:2], big)
        m = _local_patch(mov.grey, (Ainv @ T)[:2], big)
        sr = _structure_float(r, sigma=1.0)[pad:-pad, pad:-pad]
        sm = _structure_float(m, sigma=1.0)[pad:-pad, pad:-pad]
        if sr.std() < 1e-4 or sm.std() < 1e-4:
            continue
        (dx, dy), q = cv2.phaseCorrelate(sm - sm.mean(), sr - sr.mean(), win)
        if abs(dx) > 4 or abs(dy) > 4:
            continue
        # the structure seen at (cx, cy) in the reference is seen in the warped moving patch at (cx - dx, cy - dy)
        p_ref_pt = np.array([cx, cy])
        p_mov_in_ref = p_ref_pt - np.array([dx, dy])
        x_mov = Ainv[:2, :2] @ p_mov_in_ref + Ainv[:2, 2]
        src.append(x_mov)
        dst.append(p_ref_pt)
        resp.append(q)
    if len(src) < 6:
        return A, len(src), float("nan")
    src = np.float64(src)
    dst = np.float64(dst)
    resp = np.float64(resp)
    keep = resp > 0.05
    for _ in range(3):
        if keep.sum() < 6:
            return A, int(keep.sum()), float("nan")
        A_new = _lsq(src[keep], dst[keep], model)
        res = np.linalg.norm(src @ A_new[:, :2].T + A_new[:, 2] - dst, axis=1)
        thr = max(0.75, 3.0 * 1.4826 * float(np.median(res[keep])))
        keep = (res < thr) & (resp > 0.05)
    A_new = _lsq(src[keep], dst[keep], model)
    res = np.linalg.norm(src[keep] @ A_new[:, :2].T + A_new[:, 2] - dst[keep], axis=1)
    return A_new, int(keep.sum()), float(np.sqrt(np.mean(res ** 2)))


def _lsq(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray:
    n = len(src)
    if model == "similarity":
        # [a -b tx; b a ty]
        M = np.zeros((2 * n, 4))
        M[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
        M[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
        a, b, tx, ty = np.linalg.lstsq(M, dst.reshape(-1), rcond=None)[0]
        return np.array([[a, -b, tx], [b, a, ty]])
    X = np.column_stack([src, np.ones(n)])
    sol = np.linalg.lstsq(X, dst, rcond=None)[0]
    return sol.T.copy()


def register(
    reference: np.ndarray | Prepared,
    moving: np.ndarray | Prepared,
    *,
    features: str = "sift",
    model: str = "similarity",
    refine: bool = True,
    ratio: float = 0.85,
    min_inliers: int = 15,
    max_rmse: float = 2.0,
    scale_range: tuple[float, float] = (0.8, 1.25),
    work_side: int = 1200,
) -> Registration:
    """Align one XPL shot (``moving``) to the PPL reference.

    Parameters
    ----------
    reference : (M, N, 3) uint8 ndarray or Prepared
        The PPL image (prepare it once with :func:`prepare` for a series).
    moving : (M', N', 3) uint8 ndarray or Prepared
        The XPL shot.
    features : str
        Name in :data:`FEATURES` (ignored for already prepared inputs).
    model : str
        Name in :data:`MODELS`.
    refine : bool
        Re-measure control points at full resolution and refit.
    ratio : float
        Lowe's ratio-test threshold.
    min_inliers : int
        Fewer RANSAC inliers than this is a failure.
    max_rmse : float
        A refined residual above this (full-resolution px) is a failure.
    scale_range : (float, float)
        Plausible scale of the transform (the magnification does not change
        between shots of a series).
    work_side : int
        Longest side of the working image for keypoints.

    Returns
    -------
    Registration
    """
    fit = MODELS.get(model)
    ref = reference if isinstance(reference, Prepared) else prepare(reference, features=features, work_side=work_side)
    mov = moving if isinstance(moving, Prepared) else prepare(moving, features=ref.features, work_side=work_side)
    if mov.norm != ref.norm:
        raise ValueError("the two images were prepared with different feature detectors")
    fail = Registration(A=np.array([[1.0, 0, 0], [0, 1.0, 0]]), ok=False)
    if ref.descriptors is None or mov.descriptors is None or len(ref.points) < 8 or len(mov.points) < 8:
        fail.message = "too little structure (edges, scratches, grain boundaries) to find keypoints"
        return fail
    knn = _matcher(ref.norm).knnMatch(mov.descriptors, ref.descriptors, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    fail.matches = len(good)
    if len(good) < min_inliers:
        fail.message = f"only {len(good)} keypoint matches; the images do not seem to show the same field"
        return fail
    src = np.float32([mov.points[m.queryIdx] for m in good])
    dst = np.float32([ref.points[m.trainIdx] for m in good])
    thresh = 2.5 / ref.scale  # ~2.5 working pixels
    A, inl = fit(src, dst, thresh)
    n_inl = int(inl.sum()) if inl is not None else 0
    fail.inliers = n_inl
    if A is None or n_inl < min_inliers:
        fail.message = (f"only {n_inl} of {len(good)} matches agree on one transform; "
                        "the images do not seem to show the same field")
        return fail
    angle, sc = _params(A)
    if not (scale_range[0] <= sc <= scale_range[1]):
        fail.message = f"implausible scale {sc:.3f} between the shots; the images do not seem to show the same field"
        return fail
    inl_mask = inl.ravel().astype(bool)
    res = np.linalg.norm(src[inl_mask] @ A[:, :2].T + A[:, 2] - dst[inl_mask], axis=1)
    rmse = float(np.sqrt(np.mean(res ** 2)))
    n_ctrl = 0
    if refine:
        A2, n_ctrl, rmse2 = _refine(ref, mov, A.astype(np.float64), src[inl_mask], model=model)
        if n_ctrl >= 6 and np.isfinite(rmse2):
            A, rmse = A2, rmse2
        else:
            fail.message = (f"only {n_ctrl} control points could be re-measured at full resolution; "
                            "the fit is not reliable")
            return fail
    angle, sc = _params(A)
    if rmse > max_rmse:
        fail.message = f"residual {rmse:.2f} px is above the limit of {max_rmse} px; the fit is not reliable"
        fail.rmse_px = rmse
        return fail
    return Registration(A=np.asarray(A, np.float64), ok=True, inliers=n_inl, matches=len(good), rmse_px=rmse,
                        control_points=n_ctrl, angle_deg=angle, scale=sc)


def warp_to_reference(image: np.ndarray, A: np.ndarray, shape: tuple[int, int], *,
                      return_valid: bool = False):
    """Resample an XPL shot into the PPL frame.

    Parameters
    ----------
    image : (M', N', C) or (M', N') ndarray
    A : (2, 3) ndarray
        XPL pixel -> PPL pixel map (as in :class:`Registration`).
    shape : (M, N) tuple
        Size of the PPL image.
    return_valid : bool
        Also return the (M, N) bool mask of PPL pixels the shot covers fully
        (their interpolation does not reach past the shot's border).

    Returns
    -------
    warped : (M, N, C) or (M, N) ndarray
        Zero outside the shot.
    valid : (M, N) bool ndarray, only with ``return_valid``
    """
    h, w = shape[:2]
    out = cv2.warpAffine(image, np.asarray(A, np.float64), (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if not return_valid:
        return out
    ones = np.full(image.shape[:2], 255, np.uint8)
    valid = cv2.warpAffine(ones, np.asarray(A, np.float64), (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0) == 255
    return out, valid


def register_series(
    ppl: np.ndarray,
    xpl: list,
    *,
    features: str = "sift",
    model: str = "similarity",
    refine: bool = True,
    warp: bool = True,
    progress: ProgressFn = None,
) -> tuple[list, list]:
    """Align every XPL shot of a series to the PPL image.

    Parameters
    ----------
    ppl : (M, N, 3) uint8 ndarray
    xpl : list of (M', N', 3) uint8 ndarray
    features, model, refine
        As in :func:`register`.
    warp : bool
        Also resample each successfully aligned shot into the PPL frame.
    progress : callable(fraction, message), optional

    Returns
    -------
    results : list of Registration
    aligned : list of (M, N, 3) uint8 ndarray or None
        The shot in the PPL frame, None where the fit failed (or ``warp`` is False).
    """
    if not len(xpl):
        raise ValueError("give at least one XPL image")
    n = len(xpl)
    if progress:
        progress(0.0, "keypoints of the PPL image")
    ref = prepare(ppl, features=features)
    results, aligned = [], []
    for i, x in enumerate(xpl):
        if progress:
            progress((i + 0.5) / (n + 0.5), f"aligning XPL shot {i + 1} of {n}")
        r = register(ref, x, model=model, refine=refine)
        results.append(r)
        aligned.append(warp_to_reference(x, r.A, ppl.shape[:2]) if (r.ok and warp) else None)
    if progress:
        progress(1.0, "done")
    return results, aligned


def transform_error(A_est: np.ndarray, A_true: np.ndarray, shape: tuple[int, int], *, step: int = 8) -> dict:
    """Alignment error of an estimated transform over the whole moving image.

    Parameters
    ----------
    A_est, A_true : (2, 3) ndarray
        XPL -> PPL maps.
    shape : (M, N) tuple
        Size of the moving (XPL) image; errors are measured on a grid of its pixels.
    step : int
        Grid spacing.

    Returns
    -------
    dict with ``mean_px`` and ``max_px``.
    """
    h, w = shape[:2]
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    P = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    d = np.linalg.norm((np.asarray(A_est) - np.asarray(A_true)) @ P, axis=0)
    return {"mean_px": float(d.mean()), "max_px": float(d.max())}
