"""Flat-field (vignetting) correction.

The illumination of a microscope field is uneven: the corners receive less
light than the centre. The fall-off is measured either from a photograph of a
blank, evenly reflecting field (a mirror or a polished blank) taken with the
same optics, or estimated from a series of photographs of the same session,
where the sample changes between shots but the illumination does not. The
field is kept at low resolution in linear light and divided out before the
colour correction.

References
----------
.. [1] Piccinini F., Lucarelli E., Gherardi A., Bevilacqua A., "Multi-image based
   method to correct vignetting effect in light microscopy images", Journal of
   Microscopy 248(1), 2012, 6-22. doi:10.1111/j.1365-2818.2012.03645.x
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .methods import _check_image, _linearise_image, apply_correction

__all__ = ["FlatField", "MAX_FALLOFF", "MAX_STRUCTURE", "MIN_SERIES_IMAGES", "apply_flat_field",
           "blank_field_structure", "check_blank_field", "flat_field_from_reference", "flat_field_from_series"]

_WORK_SIDE = 256  # the field is smooth: estimate it on a small copy
# a series needs this many photographs before the per-pixel median cancels the sample; with fewer the estimate is
# the minerals of those photographs (see flat_field_from_series)
MIN_SERIES_IMAGES = 10
# a blank reference: at most this share of its area may depart by more than _STRUCTURE_STEP from a smooth
# illumination. Smooth vignetting with camera noise, JPEG compression and a few dust specks stays under 4 %; every
# LumenStone photograph of a polished section, even one of a single large grain with a few pits, is over 10 %.
MAX_STRUCTURE = 0.06
_STRUCTURE_STEP = 0.05
# the darkest point of a usable field receives at most this much less light than the brightest; beyond it the
# correction would multiply the dark parts by ten or more (noise, and whatever is not illumination)
MAX_FALLOFF = 0.9


@dataclass
class FlatField:
    """Relative illumination of the field of view.

    Attributes
    ----------
    field : (m, n, 3) float32 ndarray
        Low-resolution illumination in linear light, mean 1.
    shape : (M, N) tuple
        Size of the images it applies to.
    source : str
        "reference" or "series".
    """

    field: np.ndarray
    shape: tuple[int, int]
    source: str

    def gain(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Full-resolution gain (M, N, 3) float32: multiply linear light by it."""
        import cv2

        h, w = shape or self.shape
        if (h, w) != tuple(self.shape):
            raise ValueError(f"the flat field was measured on {self.shape[1]}x{self.shape[0]} px images but this "
                             f"image is {w}x{h} px; use a flat-field reference of the same size")
        field = cv2.resize(self.field, (w, h), interpolation=cv2.INTER_LINEAR)
        return (1.0 / np.maximum(field, 1e-3)).astype(np.float32)

    def falloff(self) -> float:
        """Relative light loss of the darkest point, 0..1."""
        lum = self.field.mean(axis=2)
        return float(1 - lum.min() / lum.max())


def blank_field_structure(image: np.ndarray) -> float:
    """The share of an image's area (0..1) that departs by more than 5 % from a smooth illumination.

    The image's brightness, reduced to a small copy and lightly smoothed against pixel noise, is compared with a
    heavily blurred copy of itself (Gaussian, 5 % of the longer side). A blank field's illumination varies
    smoothly, so it follows the blurred copy closely nearly everywhere; the grains, pits and cracks of a sample
    stand out from it over a large part of the image.

    Parameters
    ----------
    image : (M, N, 3) or (M, N) ndarray
        Any type; the measure is relative to the image's mean brightness.
    """
    import cv2

    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(axis=2)
    if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError("the flat-field reference must be a 2-D grey or RGB image without NaN values")
    h, w = a.shape
    s = min(1.0, _WORK_SIDE / max(h, w))
    small = cv2.resize(a, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    mean = float(small.mean())
    if mean <= 0:
        return 0.0
    fine = cv2.GaussianBlur(small, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    coarse = cv2.GaussianBlur(small, (0, 0), 0.05 * max(small.shape), borderType=cv2.BORDER_REFLECT)
    return float(np.mean(np.abs(fine - coarse) > _STRUCTURE_STEP * mean))


def check_blank_field(image: np.ndarray) -> None:
    """Refuse (``ValueError``) a flat-field reference that is plainly not a blank field
    (:func:`blank_field_structure` over ``MAX_STRUCTURE``)."""
    share = blank_field_structure(image)
    if share > MAX_STRUCTURE:
        raise ValueError(
            f"this looks like a photograph of a sample, not of a blank field: {100 * share:.0f} % of it differs by "
            f"more than {100 * _STRUCTURE_STEP:.0f} % from a smooth illumination (a blank field: under "
            f"{100 * MAX_STRUCTURE:.0f} %), and dividing by it would print its grains onto every image. Photograph a "
            "blank mirror or a polished blank with the same optics and lamp setting, slightly out of focus so that "
            "dust and scratches blur away")


def _check_falloff(flat: "FlatField", what: str, advice: str) -> "FlatField":
    """``flat``, unless its darkest point receives more than ``MAX_FALLOFF`` less light than its brightest."""
    loss = flat.falloff()
    if loss > MAX_FALLOFF:
        raise ValueError(f"{what} puts the darkest point of the field at {100 * loss:.0f} % less light than the "
                         f"brightest: more than a flat field can even out (at most {100 * MAX_FALLOFF:.0f} %); "
                         f"{advice}")
    return flat


def _small_linear(image: np.ndarray, linearisation: str) -> np.ndarray:
    import cv2

    image = _check_image(image)
    h, w = image.shape[:2]
    s = min(1.0, _WORK_SIDE / max(h, w))
    lin = _linearise_image(image, linearisation, np.ones(3))
    size = (max(4, round(w * s)), max(4, round(h * s)))
    return cv2.resize(lin, size, interpolation=cv2.INTER_AREA).astype(np.float64)


def flat_field_from_reference(reference: np.ndarray, *, sigma: float = 0.02,
                              linearisation: str = "srgb") -> FlatField:
    """Measure the illumination from a photograph of a blank field.

    Parameters
    ----------
    reference : (M, N, 3) ndarray
        Blank, evenly reflecting field (uint8, uint16 or float in [0, 1]).
    sigma : float
        Gaussian smoothing as a fraction of the longer side (removes dust and texture).
    linearisation : {"srgb", "gamma2.2"}

    Returns
    -------
    FlatField

    Raises
    ------
    ValueError
        If the reference is black, saturated over a large part, or not RGB; if it is plainly a photograph of a
        sample rather than of a blank field (:func:`check_blank_field`); or if its darkest point receives more
        than ``MAX_FALLOFF`` less light than its brightest.
    """
    import cv2

    ref = np.asarray(reference)
    if ref.ndim == 2:
        ref = np.repeat(ref[..., None], 3, axis=2)
    small = _small_linear(ref, linearisation)
    full = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(ref.dtype, 1.0)
    if float(np.mean(ref >= 0.995 * full)) > 0.2:
        raise ValueError("the flat-field reference is saturated over more than 20 % of its area; "
                         "photograph it with a shorter exposure")
    check_blank_field(ref)
    s = sigma * max(small.shape[:2])
    smooth = cv2.GaussianBlur(small, (0, 0), s) if s > 0 else small
    peak = smooth.max(axis=(0, 1))
    if not np.all(peak > 1e-4):
        raise ValueError("the flat-field reference is black in at least one channel; "
                         "photograph an evenly lit blank field")
    smooth = np.maximum(smooth, 0.05 * peak)
    field = smooth / smooth.mean(axis=(0, 1))
    flat = FlatField(field=field.astype(np.float32), shape=tuple(ref.shape[:2]), source="reference")
    return _check_falloff(flat, "the flat-field reference", "check that the reference is a blank field lit over "
                          "its whole area (field diaphragm open, nothing else in view)")


def _poly_basis(h: int, w: int, degree: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    y = (y / max(h - 1, 1)) * 2 - 1
    x = (x / max(w - 1, 1)) * 2 - 1
    terms = [x ** i * y ** j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return np.stack([t.ravel() for t in terms], axis=1)


def flat_field_from_series(images: Sequence[np.ndarray], *, degree: int = 4, linearisation: str = "srgb",
                           min_images: int = MIN_SERIES_IMAGES) -> FlatField:
    """Estimate the illumination from several photographs of one session.

    Each image is reduced to a small copy in linear light and its log is
    normalised per channel; the per-pixel median over the series cancels the
    changing sample, and a 2-D polynomial fitted to it gives a smooth field.

    Parameters
    ----------
    images : sequence of (M, N, 3) ndarray
        Photographs taken with the same optics and illumination (ten or more
        give a good estimate; with fewer, the median keeps the minerals of
        the photographs, which then pass for illumination).
    degree : int
        Degree of the 2-D polynomial (4 models ordinary vignetting).
    linearisation : {"srgb", "gamma2.2"}
    min_images : int
        Fewest photographs accepted (``MIN_SERIES_IMAGES``, 10).

    Returns
    -------
    FlatField

    Raises
    ------
    ValueError
        Fewer than ``min_images`` images, images of different sizes, or an estimate whose darkest point receives
        more than ``MAX_FALLOFF`` less light than its brightest.
    """
    images = list(images)
    if len(images) < min_images:
        raise ValueError(f"estimating the flat field from a series needs at least {min_images} photographs taken "
                         f"with the same optics, but there are {len(images)}: with fewer, the estimate is the "
                         "minerals of those photographs rather than the illumination. Add more photographs of the "
                         "session, or use a blank reference shot instead")
    shape = np.asarray(images[0]).shape[:2]
    logs = []
    for i, im in enumerate(images):
        if np.asarray(im).shape[:2] != shape:
            raise ValueError(f"image {i + 1} of the series is {im.shape[1]}x{im.shape[0]} px but the first is "
                             f"{shape[1]}x{shape[0]} px; a flat field needs images of one size")
        small = _small_linear(im, linearisation)
        lg = np.log(np.maximum(small, 1e-3))
        logs.append(lg - np.median(lg, axis=(0, 1)))
    stack = np.median(np.stack(logs), axis=0)
    h, w = stack.shape[:2]
    basis = _poly_basis(h, w, degree)
    field = np.empty_like(stack)
    for k in range(3):
        v = stack[..., k].ravel()
        keep = np.ones(v.size, bool)
        for _ in range(3):  # trim outliers (inclusions that stay in one place)
            coef, *_ = np.linalg.lstsq(basis[keep], v[keep], rcond=None)
            r = v - basis @ coef
            mad = np.median(np.abs(r[keep])) + 1e-9
            keep = np.abs(r) < 3 * 1.4826 * mad
        field[..., k] = (basis @ coef).reshape(h, w)
    field = np.exp(field)
    field /= field.mean(axis=(0, 1))
    flat = FlatField(field=field.astype(np.float32), shape=tuple(shape), source="series")
    return _check_falloff(flat, f"the estimate from these {len(images)} photographs", "their minerals have not "
                          "averaged out: add more photographs of the session, or use a blank reference shot")


def apply_flat_field(image: np.ndarray, flat: FlatField, *, linearisation: str = "srgb") -> np.ndarray:
    """Divide the illumination out of an image.

    Parameters
    ----------
    image : (M, N, 3) ndarray
    flat : FlatField
    linearisation : {"srgb", "gamma2.2"}

    Returns
    -------
    corrected : (M, N, 3) ndarray
        Same type as ``image``.
    """
    image = _check_image(image)
    identity = np.vstack([np.eye(3), np.zeros((1, 3))])
    return apply_correction(image, identity, linearisation=linearisation, gain=flat.gain(image.shape[:2]))
