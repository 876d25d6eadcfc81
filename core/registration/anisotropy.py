"""Anisotropy maps from an aligned crossed-polar series, and network input encodings.

Under crossed polars an anisotropic grain's brightness follows
``I(theta) = a + b cos 4 theta + c sin 4 theta`` as the stage turns (period
90 degrees); an isotropic grain stays dark at every angle. From the aligned
shots (all in the PPL frame) this module computes per pixel the range
(max - min), the standard deviation, and, when the stage angles are known,
the fitted modulation amplitude and the stage angle of maximum brightness.

Encodings for the segmentation network (``ENCODINGS``) turn an aligned series
into extra uint8 input channels:

- ``"compact"`` (3 channels: mean, range and standard deviation of the XPL
  luminance). Independent of the number of shots and of the grains'
  orientations, so one model serves series of 3, 6 or 12 shots and a grain
  looks the same whatever angle it happens to extinguish at;
- ``"raw"`` (3 channels per shot: the aligned RGB shots in order), the
  published layout; it needs exactly the number of shots it was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..registry import Registry

__all__ = ["AnisotropyMaps", "anisotropy_maps", "ENCODINGS", "encode_xpl", "colour_angle"]

ENCODINGS: Registry = Registry("XPL encoding")


@dataclass
class AnisotropyMaps:
    """Per-pixel anisotropy of an aligned series (PPL frame).

    Attributes
    ----------
    range : (M, N) float32 ndarray
        Max - min luminance over the shots, 0-255 units.
    std : (M, N) float32 ndarray
        Standard deviation of the luminance over the shots.
    mean : (M, N) float32 ndarray
        Mean luminance over the shots.
    amplitude : (M, N) float32 ndarray or None
        Peak-to-peak amplitude of the fitted 90-degree-period sinusoid
        (None without stage angles).
    angle_max : (M, N) float32 ndarray or None
        Stage angle of maximum brightness, degrees in [0, 90) (None without
        stage angles; NaN where the fit is undetermined).
    valid : (M, N) bool ndarray
        Pixels covered by every shot.
    """

    range: np.ndarray
    std: np.ndarray
    mean: np.ndarray
    amplitude: np.ndarray | None
    angle_max: np.ndarray | None
    valid: np.ndarray


def _luma(images: list) -> np.ndarray:
    out = []
    for im in images:
        im = np.asarray(im)
        if im.ndim == 3:
            im = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        out.append(im.astype(np.float32))
    return np.stack(out)


def anisotropy_maps(aligned: list, *, angles=None, valid: np.ndarray | None = None,
                    min_amplitude: float = 4.0) -> AnisotropyMaps:
    """Range, standard deviation and angle of maximum brightness of an aligned series.

    Parameters
    ----------
    aligned : list of (M, N, 3) or (M, N) uint8 ndarray
        XPL shots resampled into the PPL frame (at least 2).
    angles : sequence of float, optional
        Stage angle of each shot in degrees (e.g. ``Registration.angle_deg``).
        With at least 3 shots at distinct angles (modulo 90), a sinusoid of
        period 90 degrees is fitted per pixel.
    valid : (M, N) bool ndarray, optional
        Pixels covered by every shot; by default pixels where no shot is
        exactly 0 in all channels.
    min_amplitude : float
        Where the fitted amplitude is below this (0-255 units), ``angle_max``
        is NaN (no measurable anisotropy).

    Returns
    -------
    AnisotropyMaps
    """
    if len(aligned) < 2:
        raise ValueError("anisotropy maps need at least 2 aligned XPL shots")
    shapes = {np.asarray(a).shape[:2] for a in aligned}
    if len(shapes) != 1:
        raise ValueError(f"the aligned shots differ in size: {sorted(shapes)}")
    L = _luma(aligned)
    if valid is None:
        cover = [np.asarray(a).reshape(*np.asarray(a).shape[:2], -1).max(axis=2) > 0 for a in aligned]
        valid = np.logical_and.reduce(cover)
    rng = (L.max(0) - L.min(0)).astype(np.float32)
    std = L.std(0).astype(np.float32)
    mean = L.mean(0).astype(np.float32)
    amp = ang = None
    if angles is not None:
        ang_deg = np.asarray(angles, np.float64)
        if ang_deg.size != len(aligned):
            raise ValueError(f"got {ang_deg.size} stage angles for {len(aligned)} shots")
        t = np.deg2rad(ang_deg) * 4.0
        X = np.column_stack([np.ones_like(t), np.cos(t), np.sin(t)])
        distinct = np.unique(np.round(np.mod(ang_deg, 90.0), 1)).size
        if distinct >= 3 and np.linalg.matrix_rank(X) == 3:
            P = np.linalg.pinv(X)  # (3, K)
            coef = np.tensordot(P, L, axes=(1, 0))  # (3, M, N)
            b, c = coef[1], coef[2]
            amp = (2.0 * np.hypot(b, c)).astype(np.float32)
            ang = np.mod(np.degrees(np.arctan2(c, b)) / 4.0, 90.0).astype(np.float32)
            ang[amp < min_amplitude] = np.nan
    for arr in (rng, std, mean, amp, ang):
        if arr is not None:
            arr[~valid] = np.nan if arr is ang else 0.0
    return AnisotropyMaps(range=rng, std=std, mean=mean, amplitude=amp, angle_max=ang, valid=valid)


def colour_angle(angle: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
    """Colour an angle map (cyclic hue over 0-90 degrees, black where NaN).

    Parameters
    ----------
    angle : (M, N) float ndarray
        Degrees in [0, 90), NaN for none.
    strength : (M, N) float ndarray, optional
        Brightness (e.g. the amplitude), normalised to its 99th percentile.

    Returns
    -------
    rgb : (M, N, 3) uint8 ndarray
    """
    hue = np.nan_to_num(np.mod(angle, 90.0) * 2.0, nan=0.0).astype(np.uint8)  # OpenCV hue 0-179
    val = np.full(angle.shape, 255, np.uint8)
    if strength is not None:
        hi = float(np.nanpercentile(strength, 99)) if np.isfinite(strength).any() else 1.0
        val = np.clip(np.nan_to_num(strength) / max(hi, 1e-6) * 255, 0, 255).astype(np.uint8)
    val[~np.isfinite(angle)] = 0
    hsv = np.stack([hue, np.full_like(hue, 255), val], axis=2)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _compact(aligned: list) -> np.ndarray:
    L = _luma(aligned)
    mean = L.mean(0)
    rng = L.max(0) - L.min(0)
    std = L.std(0) * 2.0
    return np.clip(np.rint(np.stack([mean, rng, std], axis=2)), 0, 255).astype(np.uint8)


def _raw(aligned: list) -> np.ndarray:
    chans = [np.asarray(a) if np.asarray(a).ndim == 3 else np.repeat(np.asarray(a)[..., None], 3, 2) for a in aligned]
    return np.ascontiguousarray(np.concatenate(chans, axis=2).astype(np.uint8))


ENCODINGS.add("compact", _compact, doc="3 channels: mean, range and 2x std of the XPL luminance (any number of shots)")
ENCODINGS.add("raw", _raw, doc="3 channels per shot: the aligned RGB shots in order (fixed number of shots)")


def encode_xpl(aligned: list, *, encoding: str = "compact", n_shots: int | None = None) -> np.ndarray:
    """Extra network input channels from an aligned XPL series.

    Parameters
    ----------
    aligned : list of (M, N, 3) uint8 ndarray
        Shots in the PPL frame.
    encoding : str
        Name in :data:`ENCODINGS`.
    n_shots : int, optional
        Number of shots the model expects (checked for ``"raw"``).

    Returns
    -------
    extra : (M, N, C) uint8 ndarray
        ``C = 3`` for ``"compact"``, ``3 * len(aligned)`` for ``"raw"``.
    """
    fn = ENCODINGS.get(encoding)
    if len(aligned) < 2:
        raise ValueError("give at least 2 aligned XPL images")
    if ENCODINGS.get_key(encoding) == "raw" and n_shots is not None and len(aligned) != n_shots:
        raise ValueError(f"this model was trained with {n_shots} XPL images, got {len(aligned)}")
    shapes = {np.asarray(a).shape[:2] for a in aligned}
    if len(shapes) != 1:
        raise ValueError(f"the aligned XPL images differ in size: {sorted(shapes)}")
    return fn(aligned)
