"""Simulated crossed-polar (XPL) rotation series built from a PPL image and its mask.

There is no public XPL data for the LumenStone images, so training sets and
benchmarks for the XPL step are *simulated*: every shot is rendered from the
plane-polarised (PPL) photograph and its mask with the optical facts of the
mineral catalogue, then moved as a rotating microscope stage would move it.

Model of one shot at stage angle ``theta`` (linear light, per pixel)::

    I_xpl = I_ppl * (extinction + strength * sin^2(2 (phi + theta))) * tint * exposure

- ``strength`` is the mineral's ``anisotropy_strength`` (0 for isotropic
  minerals, which therefore stay dark at every angle);
- ``phi`` is the extinction orientation of the grain, drawn independently for
  every connected component of an anisotropic mineral, so neighbouring grains
  brighten at different stage angles (period 90 degrees);
- ``extinction`` (residual brightness) and the two ``tint`` colours a grain
  swings between are drawn per mineral, ``exposure`` is a per-shot camera
  gain (the "re-lighting"); Gaussian noise is added in sRGB.

The stage turns about an off-centre point and slides a little between shots;
the true transform of every shot is returned so that registration can be
scored against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..minerals import MINERALS, IGNORE

__all__ = ["SimulatedSeries", "simulate_xpl_series", "stage_transform", "SIMULATED_LABEL"]

SIMULATED_LABEL = "SIMULATED XPL (rendered from PPL + mask; not a real crossed-polar photograph)"

_STRENGTH = np.zeros(256, np.float32)
for _m in MINERALS:
    _STRENGTH[_m.code] = _m.anisotropy_strength


@dataclass
class SimulatedSeries:
    """A simulated PPL + XPL series with its ground truth.

    Attributes
    ----------
    ppl : (M, N, 3) uint8 ndarray
        The plane-polarised reference (the input image, with noise).
    xpl : list of (M, N, 3) uint8 ndarray
        Simulated crossed-polar shots, each in its own (rotated, shifted) frame.
    transforms : list of (2, 3) float64 ndarray
        True affine map of each shot: XPL pixel ``(x, y, 1)`` -> PPL pixel
        coordinates (pixel centres at integer coordinates).
    angles : list of float
        Stage angle of each shot, degrees (counter-clockwise in the image).
    orientation : (M, N) float32 ndarray
        Extinction orientation ``phi`` of every pixel in the PPL frame, degrees
        in [0, 90); NaN where the mineral is isotropic.
    strength : (M, N) float32 ndarray
        Anisotropy strength used for every pixel (PPL frame).
    label : str
        Always says that the series is simulated.
    """

    ppl: np.ndarray
    xpl: list
    transforms: list
    angles: list
    orientation: np.ndarray
    strength: np.ndarray
    label: str = field(default=SIMULATED_LABEL)


def stage_transform(angle_deg: float, centre: tuple[float, float], shift: tuple[float, float]) -> np.ndarray:
    """Affine XPL -> PPL map of a stage turned by ``angle_deg`` about ``centre`` and moved by ``shift``.

    A specimen point seen at PPL pixel ``p`` is seen in the shot at
    ``R (p - c) + c + t``; the returned (2, 3) matrix is the inverse of that,
    mapping shot pixels back to PPL pixels.
    """
    a = np.deg2rad(angle_deg)
    R = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # counter-clockwise on screen (y down)
    c = np.asarray(centre, np.float64)
    t = np.asarray(shift, np.float64)
    fwd = np.eye(3)
    fwd[:2, :2] = R
    fwd[:2, 2] = c + t - R @ c
    inv = np.linalg.inv(fwd)
    return inv[:2]


def _grain_orientation(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    orient = np.full(mask.shape, np.nan, np.float32)
    for code in np.unique(mask):
        if code == IGNORE or _STRENGTH[code] <= 0:
            continue
        n, comp = cv2.connectedComponents((mask == code).astype(np.uint8), connectivity=8)
        phis = rng.uniform(0.0, 90.0, size=n).astype(np.float32)
        sel = comp > 0
        orient[sel] = phis[comp[sel]]
    return orient


def simulate_xpl_series(
    ppl: np.ndarray,
    mask: np.ndarray,
    *,
    n_shots: int = 6,
    step_deg: float = 15.0,
    start_deg: float | None = None,
    centre: tuple[float, float] | None = None,
    max_shift: float = 40.0,
    angle_jitter: float = 0.5,
    extinction: float = 0.05,
    noise: float = 3.0,
    seed: int = 0,
) -> SimulatedSeries:
    """Render a simulated XPL rotation series.

    Parameters
    ----------
    ppl : (M, N, 3) uint8 ndarray
        Plane-polarised photograph.
    mask : (M, N) uint8 ndarray
        LumenStone codes of ``ppl`` (255 = unlabelled, treated as isotropic).
    n_shots : int
        Number of XPL shots.
    step_deg : float
        Stage rotation between consecutive shots, degrees.
    start_deg : float, optional
        Stage angle of the first shot; default ``step_deg``.
    centre : (x, y), optional
        Rotation centre in PPL pixels; default a random off-centre point
        within 20 % of the image size from the middle.
    max_shift : float
        Largest stage slide between shots, pixels.
    angle_jitter : float
        Standard deviation of the error of the stage angle, degrees.
    extinction : float
        Typical residual brightness of extinct (isotropic) material, linear
        fraction; every mineral gets its own value, 0.5-2 times this.
    noise : float
        Standard deviation of Gaussian noise, 8-bit units.
    seed : int
        Seed of everything random.

    Returns
    -------
    SimulatedSeries
    """
    ppl = np.asarray(ppl)
    if ppl.ndim != 3 or ppl.shape[2] != 3 or ppl.dtype != np.uint8:
        raise ValueError(f"the PPL image must be (M, N, 3) uint8 RGB, got {ppl.shape} {ppl.dtype}")
    if mask.shape != ppl.shape[:2]:
        raise ValueError(f"the mask {mask.shape} does not match the image {ppl.shape[:2]}")
    if n_shots < 1:
        raise ValueError(f"n_shots must be at least 1, got {n_shots}")
    rng = np.random.default_rng(seed)
    h, w = mask.shape
    if centre is None:
        centre = (w / 2 + rng.uniform(-0.2, 0.2) * w, h / 2 + rng.uniform(-0.2, 0.2) * h)
    start = step_deg if start_deg is None else start_deg
    orient = _grain_orientation(mask, rng)
    strength = _STRENGTH[mask]
    lin = (ppl.astype(np.float32) / 255.0) ** 2.2
    # per-mineral re-lighting: residual brightness when extinct, and two anisotropy
    # tints that a grain swings between as the stage turns
    ext_lut = (extinction * rng.uniform(0.5, 2.0, 256)).astype(np.float32)
    tint_a = rng.uniform(0.75, 1.25, (256, 3)).astype(np.float32)
    tint_b = rng.uniform(0.75, 1.25, (256, 3)).astype(np.float32)
    ext = ext_lut[mask]
    ta, tb = tint_a[mask], tint_b[mask]
    phi_rad = np.deg2rad(np.nan_to_num(orient, nan=0.0))
    shots, transforms, angles = [], [], []
    for k in range(n_shots):
        theta = start + k * step_deg + rng.normal(0.0, angle_jitter)
        s2 = np.sin(2.0 * (phi_rad + np.deg2rad(theta))) ** 2
        factor = ext + strength * s2
        tint = ta + (tb - ta) * s2[..., None]
        rendered = lin * factor[..., None] * tint
        exposure = rng.uniform(0.6, 1.0) / max(float(np.percentile(rendered[::4, ::4], 99.5)), 1e-4)
        srgb = np.clip(rendered * exposure, 0, 1) ** (1 / 2.2) * 255.0
        shift = rng.uniform(-max_shift, max_shift, 2)
        A = stage_transform(theta, centre, shift)
        shot = cv2.warpAffine(srgb.astype(np.float32), A, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        shot = shot + rng.normal(0.0, noise, shot.shape).astype(np.float32)
        shots.append(np.clip(np.rint(shot), 0, 255).astype(np.uint8))
        transforms.append(A)
        angles.append(float(theta))
    noisy_ppl = np.clip(np.rint(ppl + rng.normal(0.0, noise, ppl.shape)), 0, 255).astype(np.uint8)
    return SimulatedSeries(ppl=noisy_ppl, xpl=shots, transforms=transforms, angles=angles,
                           orientation=orient, strength=strength.astype(np.float32))
