"""Simulated changes of optics, for tests and benchmarks of the colour correction.

Each simulation takes an sRGB photograph and returns what another microscope
set-up could have recorded: a colour filter in the light path, or another
camera with its own colour response and tone curve. They are known,
deterministic transforms, so a correction can be judged against the original.
"""
from __future__ import annotations

import numpy as np

from ..registry import Registry
from .methods import from_linear, to_linear

__all__ = ["OPTICS", "simulate_optics", "vignette", "partial_annotation"]

OPTICS: Registry = Registry("simulated optics")

# a camera whose sensor mixes the channels more than sRGB primaries do
_CROSSTALK = np.array([[0.80, 0.16, 0.04],
                       [0.10, 0.78, 0.12],
                       [0.04, 0.18, 0.78]])


def _tone_s_curve(v: np.ndarray, strength: float = 0.35) -> np.ndarray:
    s = v * v * (3 - 2 * v)
    return (1 - strength) * v + strength * s


def _gains(g):
    def f(lin: np.ndarray) -> np.ndarray:
        return from_linear(np.clip(lin * np.asarray(g), 0, 1))

    return f


OPTICS.add("blue-filter", _gains([0.60, 0.82, 1.00]), doc="bluish filter: linear gains 0.60, 0.82, 1.00")
OPTICS.add("yellow-filter", _gains([1.00, 0.90, 0.50]), doc="yellow filter: linear gains 1.00, 0.90, 0.50")


def _other_camera(lin: np.ndarray) -> np.ndarray:
    out = np.clip(lin @ _CROSSTALK.T * np.array([1.06, 1.0, 0.88]), 0, 1)
    return _tone_s_curve(out ** (1 / 1.8))


OPTICS.add("other-camera", _other_camera,
           doc="channel cross-talk, gains 1.06/1.00/0.88, gamma 1.8 tone curve with an S-shaped contrast boost")


def simulate_optics(image: np.ndarray, kind: str) -> np.ndarray:
    """Re-photograph an image through simulated optics.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
        sRGB photograph.
    kind : str
        A name in :data:`OPTICS` ("blue-filter", "yellow-filter", "other-camera").

    Returns
    -------
    changed : (M, N, 3) uint8 ndarray
    """
    fn = OPTICS.get(kind)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("simulate_optics expects an RGB uint8 image")
    lut_lin = to_linear(np.arange(256) / 255.0)
    # the transforms act per pixel; evaluate them on the image's distinct colours only
    packed = (image[..., 0].astype(np.uint32) << 16) | (image[..., 1].astype(np.uint32) << 8) | image[..., 2]
    uniq, inv = np.unique(packed.ravel(), return_inverse=True)
    rgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    out = np.clip(np.rint(fn(lut_lin[rgb]) * 255), 0, 255).astype(np.uint8)
    return out[inv].reshape(image.shape)


def vignette(shape: tuple[int, int], *, strength: float = 0.35, centre: tuple[float, float] = (0.5, 0.5),
             tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A smooth illumination fall-off, 1 at the brightest point.

    Parameters
    ----------
    shape : (M, N) tuple
    strength : float
        Relative loss of light in the far corners (0.35 = 35 % darker).
    centre : (y, x) tuple
        Brightest point as fractions of height and width.
    tint : (3,) tuple
        Per-channel scaling of the fall-off (coloured vignetting).

    Returns
    -------
    field : (M, N, 3) float32 ndarray
        Multiply linear light by it.
    """
    h, w = shape
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - centre[0])[:, None]
    x = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - centre[1])[None, :]
    r2 = (x * w / max(h, w)) ** 2 + (y * h / max(h, w)) ** 2
    r2 /= r2.max()
    f = 1 - strength * r2
    return np.stack([1 - (1 - f) * t for t in tint], axis=-1).astype(np.float32)


def partial_annotation(mask: np.ndarray, *, fraction: float = 0.3, block: int | None = None,
                       seed: int = 0) -> np.ndarray:
    """Keep a random ``fraction`` of a full mask, in square patches, as a user's partial marking would.

    Every mineral of the mask keeps at least one patch where it is the main class,
    so that no mineral a user would recognise goes unmarked.

    Parameters
    ----------
    mask : (M, N) uint8 ndarray
        Full mask of codes (255 = unlabelled).
    fraction : float
        Share of the image's area to keep, 0..1.
    block : int, optional
        Patch side in pixels (default: 1/24 of the longer side).
    seed : int

    Returns
    -------
    partial : (M, N) uint8 ndarray
        The kept codes, 255 elsewhere.
    """
    mask = np.asarray(mask, np.uint8)
    if not 0 < fraction <= 1:
        raise ValueError("fraction must lie in (0, 1]")
    h, w = mask.shape
    b = int(block or max(8, max(h, w) // 24))
    gh, gw = -(-h // b), -(-w // b)
    rng = np.random.default_rng(seed)
    pad = np.full((gh * b, gw * b), 255, np.uint8)
    pad[:h, :w] = mask
    tiles = pad.reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh * gw, b * b)
    chosen = np.zeros(gh * gw, bool)
    for c in np.unique(mask):
        if c == 255:
            continue
        share = (tiles == c).mean(axis=1)
        best = np.flatnonzero(share >= 0.8 * share.max())
        chosen[rng.choice(best)] = True
    order = rng.permutation(gh * gw)
    target = fraction * gh * gw
    for i in order:
        if chosen.sum() >= target:
            break
        chosen[i] = True
    keep = np.repeat(np.repeat(chosen.reshape(gh, gw), b, axis=0), b, axis=1)[:h, :w]
    return np.where(keep, mask, np.uint8(255)).astype(np.uint8)
