"""Calibrating one image or a whole series.

Two modes:

``per-image``
    Every image has its own partial annotation and gets its own correction.
``series``
    The annotated images of a batch shot under the same conditions are pooled
    to fit one correction, which is applied to every image of the batch.

A flat field, when given, is divided out before the colour correction (the
class means are measured on the flattened image).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .flatfield import FlatField
from .methods import Correction, apply_correction, class_means, fit_correction

__all__ = ["MODES", "CalibrationResult", "fit_image", "fit_series", "calibrate_images"]

MODES = ("per-image", "series")

ProgressFn = Callable[[float, str], None] | None


@dataclass
class CalibrationResult:
    """One corrected image.

    Attributes
    ----------
    image : (M, N, 3) ndarray
        The corrected image (same type as the input).
    correction : Correction
        The correction applied (shared by every image in series mode).
    seconds : float
        Time taken for this image (measuring, fitting and applying).
    fitted_here : bool
        Whether this image's own annotation was used for the fit.
    """

    image: np.ndarray
    correction: Correction
    seconds: float
    fitted_here: bool

    def as_dict(self) -> dict:
        d = self.correction.as_dict()
        d["seconds"] = round(self.seconds, 3)
        d["fitted_on_this_image"] = self.fitted_here
        return d


def _flattened(image: np.ndarray, flat: FlatField | None, linearisation: str) -> np.ndarray:
    if flat is None:
        return image
    identity = np.vstack([np.eye(3), np.zeros((1, 3))])
    return apply_correction(image, identity, linearisation=linearisation, gain=flat.gain(image.shape[:2]))


def fit_image(image: np.ndarray, annotation: np.ndarray, reference: Mapping[int, np.ndarray], *,
              method: str = "ccm-de2000", linearisation: str = "srgb",
              flat_field: FlatField | None = None) -> Correction:
    """Fit the correction of one annotated image.

    Parameters
    ----------
    image : (M, N, 3) ndarray
    annotation : (M, N) uint8 ndarray
        LumenStone codes, 255 = unmarked.
    reference : mapping of int to (3,) array
        Reference sRGB colour per code (0-255).
    method : str
        A name in ``METHODS``.
    linearisation : {"srgb", "gamma2.2"}
    flat_field : FlatField, optional

    Returns
    -------
    Correction
    """
    flat = _flattened(image, flat_field, linearisation)
    return fit_correction(class_means(flat, annotation), reference, method=method, linearisation=linearisation)


def fit_series(images: Sequence[np.ndarray], annotations: Mapping[int, np.ndarray],
               reference: Mapping[int, np.ndarray], *, method: str = "ccm-de2000", linearisation: str = "srgb",
               flat_field: FlatField | None = None) -> Correction:
    """Fit one correction from the pooled annotations of a series.

    Parameters
    ----------
    images : sequence of (M, N, 3) ndarray
    annotations : mapping of int to (M, N) uint8 ndarray
        Index into ``images`` -> partial annotation; at least one.
    reference : mapping of int to (3,) array
    method, linearisation, flat_field
        As in :func:`fit_image`.

    Returns
    -------
    Correction
    """
    if not annotations:
        raise ValueError("series calibration needs at least one annotated image")
    pooled = None
    for i, ann in annotations.items():
        cm = class_means(_flattened(images[i], flat_field, linearisation), ann)
        pooled = cm if pooled is None else pooled.merged(cm)
    return fit_correction(pooled, reference, method=method, linearisation=linearisation)


def calibrate_images(images: Sequence[np.ndarray], annotations: Mapping[int, np.ndarray],
                     reference: Mapping[int, np.ndarray], *, mode: str = "per-image", method: str = "ccm-de2000",
                     linearisation: str = "srgb", flat_field: FlatField | None = None,
                     progress: ProgressFn = None) -> list[CalibrationResult]:
    """Colour-correct a batch of images.

    Parameters
    ----------
    images : sequence of (M, N, 3) ndarray
    annotations : mapping of int to (M, N) uint8 ndarray
        Index into ``images`` -> partial annotation. In ``per-image`` mode every
        image needs one; in ``series`` mode at least one.
    reference : mapping of int to (3,) array
        Reference sRGB colour per code (0-255).
    mode : {"per-image", "series"}
    method, linearisation, flat_field
        As in :func:`fit_image`.
    progress : callable(fraction, message), optional

    Returns
    -------
    list of CalibrationResult
        In the order of ``images``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    n = len(images)
    if n == 0:
        raise ValueError("no images to calibrate")
    if mode == "per-image":
        missing = [i for i in range(n) if i not in annotations]
        if missing:
            raise ValueError(f"{len(missing)} of {n} images have no annotation; annotate each image, or use the "
                             "series mode to apply one image's correction to all")
    shared = None
    t_fit = 0.0
    if mode == "series":
        t0 = time.perf_counter()
        shared = fit_series(images, annotations, reference, method=method, linearisation=linearisation,
                            flat_field=flat_field)
        t_fit = (time.perf_counter() - t0) / n
    out = []
    for i, im in enumerate(images):
        if progress:
            progress(i / n, f"image {i + 1} of {n}")
        t0 = time.perf_counter()
        corr = shared if shared is not None else fit_image(im, annotations[i], reference, method=method,
                                                           linearisation=linearisation, flat_field=flat_field)
        gain = flat_field.gain(im.shape[:2]) if flat_field is not None else None
        res = apply_correction(im, corr, gain=gain)
        out.append(CalibrationResult(image=res, correction=corr, seconds=time.perf_counter() - t0 + t_fit,
                                     fitted_here=i in annotations))
    if progress:
        progress(1.0, "done")
    return out
