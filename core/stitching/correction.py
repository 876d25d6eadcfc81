"""Per-tile corrections applied before registration: flat field and lens distortion.

The flat-field divide here is deliberately small (one reference image of an
empty, evenly lit field); a fuller calibration module can replace it later.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["flat_field_gain", "apply_flat_field", "LensModel", "read_lens", "undistort"]


def flat_field_gain(reference: np.ndarray, *, sigma: float = 25.0) -> np.ndarray:
    """Per-pixel gain that flattens the illumination recorded in ``reference``.

    Parameters
    ----------
    reference : (M, N, 3) or (M, N) ndarray
        Photograph of a blank, evenly reflecting field taken with the same optics
        (uint8, uint16 or float).
    sigma : float
        Gaussian smoothing (px) that removes dust and texture from the reference.

    Returns
    -------
    gain : (M, N, C) float32 ndarray
        ``mean(reference) / smooth(reference)`` per channel; multiply a tile by it.

    Raises
    ------
    ValueError
        If the reference is empty or nearly black, or plainly a photograph of a sample rather than of a blank
        field (:func:`core.calibration.flatfield.check_blank_field`).
    """
    import cv2

    from core.calibration.flatfield import check_blank_field

    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim == 2:
        ref = ref[..., None]
    if ref.size == 0 or ref.ndim != 3:
        raise ValueError("the flat-field reference must be a 2-D grey or RGB image")
    check_blank_field(ref)
    h, w = ref.shape[:2]
    if sigma > 4:
        # blur at reduced resolution: the illumination is smooth, and a wide kernel at full size is slow
        f = 2.0 / sigma
        small = cv2.resize(ref, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma * f)
        smooth = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        smooth = cv2.GaussianBlur(ref, (0, 0), sigma) if sigma > 0 else ref
    if smooth.ndim == 2:
        smooth = smooth[..., None]
    peak = float(smooth.max())
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("the flat-field reference is black; photograph an evenly lit blank field")
    floor = 0.05 * smooth.max(axis=(0, 1), keepdims=True)
    smooth = np.maximum(smooth, floor)
    return (smooth.mean(axis=(0, 1), keepdims=True) / smooth).astype(np.float32)


def apply_flat_field(image: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Multiply ``image`` by a flat-field ``gain`` (see :func:`flat_field_gain`).

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
    gain : (M, N, C) float32 ndarray
        C is 1 or 3; resized to the image when the reference was taken at another size.

    Returns
    -------
    corrected : (M, N, 3) uint8 ndarray
    """
    import cv2

    h, w = image.shape[:2]
    if gain.shape[:2] != (h, w):
        gain = cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)
        if gain.ndim == 2:
            gain = gain[..., None]
    out = image.astype(np.float32) * gain
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class LensModel:
    """Brown–Conrady lens model (OpenCV's convention).

    Attributes
    ----------
    camera_matrix : (3, 3) ndarray
    dist_coeffs : (K,) ndarray
        ``k1, k2, p1, p2[, k3]``.
    """

    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray


def read_lens(path: str | os.PathLike) -> LensModel:
    """Read a lens calibration file.

    The file is JSON with ``camera_matrix`` (3×3, or ``fx``, ``fy``, ``cx``, ``cy``)
    and ``dist_coeffs`` (``[k1, k2, p1, p2, k3]``), as written by OpenCV's
    ``calibrateCamera``.

    Raises
    ------
    ValueError
        If the file is missing or lacks the coefficients.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: lens calibration file not found")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{p}: not a JSON lens calibration file") from None
    try:
        if "camera_matrix" in data:
            k = np.asarray(data["camera_matrix"], dtype=np.float64).reshape(3, 3)
        else:
            k = np.array([[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]], dtype=np.float64)
        d = np.asarray(data["dist_coeffs"], dtype=np.float64).ravel()
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{p}: needs 'camera_matrix' (or fx, fy, cx, cy) and 'dist_coeffs'") from None
    if d.size not in (4, 5, 8) or not np.all(np.isfinite(d)) or not np.all(np.isfinite(k)):
        raise ValueError(f"{p}: 'dist_coeffs' must hold 4, 5 or 8 finite numbers")
    return LensModel(k, d)


def undistort(image: np.ndarray, lens: LensModel) -> np.ndarray:
    """Remove lens distortion, keeping the image size and pixel scale.

    Parameters
    ----------
    image : (M, N, 3) ndarray
    lens : LensModel

    Returns
    -------
    image : (M, N, 3) ndarray
        Same dtype; resampled bicubically.

    References
    ----------
    D. C. Brown, "Decentering distortion of lenses", Photogrammetric Engineering 32(3), 1966.
    """
    import cv2

    return cv2.undistort(image, lens.camera_matrix, lens.dist_coeffs, None, lens.camera_matrix)
