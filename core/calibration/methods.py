"""Colour correction from partial annotation.

The user marks a few regions of known minerals; the mean colour of each marked
mineral is matched to that mineral's reference colour (the mean sRGB colour of
the class in the model's training images). Colours are linearised (sRGB curve
or gamma 2.2), a 4x3 affine colour-correction matrix ``A`` is fitted so that
``[r, g, b, 1] @ A`` maps the image's linear class means onto the reference
ones, and the whole image is transformed by it.

Methods (``METHODS`` registry):

``ccm-de2000``
    4x3 affine matrix fitted in CIELAB minimising the squared CIEDE2000
    differences, started from the white-balance solution and regularised
    towards it, so that two or three marked minerals already give a stable
    answer (after Korshunov et al. 2025).
``ccm-de2000-tone``
    The same with a per-channel tone exponent fitted as well (3 more unknowns),
    for cameras whose tone curve differs from the reference one.
``white-balance``
    Per-channel gains only (least squares through the origin in linear RGB).
``cheung2004``, ``finlayson2015``, ``vandermonde``
    colour-science's least-squares corrections (3x3, 3x3 root-polynomial of
    degree 1, affine 4x3); they need at least 3, 3 and 4 marked minerals.

References
----------
.. [1] Korshunov D. et al., "From visual diagnostics to deep learning: automatic
   mineral identification in polished section images", Mining Science and
   Technology (Russia) 10(3), 2025, 232-244. doi:10.17073/2500-0632-2025-05-416
.. [2] Cheung V., Westland S., Connah D., Ripamonti C., "A comparative study of
   the characterisation of colour cameras by means of neural networks and
   polynomial transforms", Coloration Technology 120(1), 2004, 19-25.
   doi:10.1111/j.1478-4408.2004.tb00201.x
.. [3] Finlayson G. D., Mackiewicz M., Hurlbert A., "Color correction using
   root-polynomial regression", IEEE Transactions on Image Processing 24(5),
   2015, 1460-1470. doi:10.1109/TIP.2015.2405336
.. [4] Sharma G., Wu W., Dalal E. N., "The CIEDE2000 color-difference formula:
   implementation notes, supplementary test data, and mathematical
   observations", Color Research & Application 30(1), 2005, 21-30.
   doi:10.1002/col.20070
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..minerals import IGNORE, name_of
from ..registry import Registry

__all__ = [
    "DEFAULT_METHOD",
    "LINEARISATIONS",
    "METHODS",
    "MIN_PIXELS",
    "ClassMeans",
    "Correction",
    "to_float",
    "to_linear",
    "from_linear",
    "linear_to_lab",
    "delta_e2000",
    "class_means",
    "fit_correction",
    "apply_correction",
    "mean_delta_e",
]

#: fewest unsaturated marked pixels a mineral needs to count
MIN_PIXELS = 100
#: share of a mineral's marked pixels that may be saturated before it is dropped
MAX_SATURATED = 0.5

LINEARISATIONS = ("srgb", "gamma2.2")

# linear sRGB (D65) -> XYZ, IEC 61966-2-1
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = _RGB_TO_XYZ.sum(axis=1)


# --------------------------------------------------------------------------- transfer curves


def _check_linearisation(linearisation: str) -> str:
    key = str(linearisation).strip().lower()
    if key not in LINEARISATIONS:
        raise ValueError(f"unknown linearisation {linearisation!r}; use one of {', '.join(LINEARISATIONS)}")
    return key


def to_linear(values: np.ndarray, *, linearisation: str = "srgb") -> np.ndarray:
    """Encoded values in [0, 1] -> linear light.

    Parameters
    ----------
    values : (...) ndarray
        Gamma-encoded values in [0, 1].
    linearisation : {"srgb", "gamma2.2"}

    Returns
    -------
    linear : (...) float64 ndarray
    """
    v = np.asarray(values, dtype=np.float64)
    if _check_linearisation(linearisation) == "gamma2.2":
        return np.sign(v) * np.abs(v) ** 2.2
    a = np.abs(v)
    return np.sign(v) * np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4)


def from_linear(values: np.ndarray, *, linearisation: str = "srgb") -> np.ndarray:
    """Linear light -> encoded values (inverse of :func:`to_linear`).

    Parameters
    ----------
    values : (...) ndarray
    linearisation : {"srgb", "gamma2.2"}

    Returns
    -------
    encoded : (...) float64 ndarray
    """
    v = np.asarray(values, dtype=np.float64)
    a = np.abs(v)
    if _check_linearisation(linearisation) == "gamma2.2":
        return np.sign(v) * a ** (1 / 2.2)
    return np.sign(v) * np.where(a <= 0.0031308, a * 12.92, 1.055 * a ** (1 / 2.4) - 0.055)


def to_float(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Image as float32 in [0, 1] and the full-scale value of its type.

    Parameters
    ----------
    image : (M, N, 3) ndarray
        uint8, uint16 or float in [0, 1].

    Returns
    -------
    image : (M, N, 3) float32 ndarray
    full_scale : float
        255, 65535 or 1.
    """
    image = _check_image(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255), 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535), 65535.0
    return image.astype(np.float32, copy=False), 1.0


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (M, N, 3), got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and image.dtype.kind != "f":
        raise ValueError(f"unsupported pixel type {image.dtype}; use 8-bit, 16-bit or float images")
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise ValueError("the image contains NaN or infinite values")
        if image.min() < 0 or image.max() > 1:
            raise ValueError("float images must hold values in [0, 1]")
    return image


# --------------------------------------------------------------------------- CIELAB / CIEDE2000


def linear_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Linear sRGB (D65) -> CIELAB.

    Parameters
    ----------
    rgb : (..., 3) ndarray
        Linear RGB, 1 = diffuse white.

    Returns
    -------
    lab : (..., 3) float64 ndarray
    """
    xyz = np.asarray(rgb, dtype=np.float64) @ _RGB_TO_XYZ.T / _WHITE_D65
    d = 6 / 29
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference [4]_.

    Parameters
    ----------
    lab1, lab2 : (..., 3) ndarray
        CIELAB colours.

    Returns
    -------
    de : (...) float64 ndarray
    """
    lab1 = np.asarray(lab1, np.float64)
    lab2 = np.asarray(lab2, np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    C1 = np.hypot(a1, b1)
    C2 = np.hypot(a2, b2)
    Cm7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - np.sqrt(Cm7 / (Cm7 + 25.0 ** 7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(C1p * C2p == 0, 0.0, dh)
    dHp = 2 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh / 2))
    Lpm = (L1 + L2) / 2
    Cpm = (C1p + C2p) / 2
    hs = h1p + h2p
    hpm = np.where(np.abs(h1p - h2p) > 180, np.where(hs < 360, hs + 360, hs - 360), hs) / 2
    hpm = np.where(C1p * C2p == 0, hs, hpm)
    T = (1 - 0.17 * np.cos(np.radians(hpm - 30)) + 0.24 * np.cos(np.radians(2 * hpm))
         + 0.32 * np.cos(np.radians(3 * hpm + 6)) - 0.20 * np.cos(np.radians(4 * hpm - 63)))
    dtheta = 30 * np.exp(-(((hpm - 275) / 25) ** 2))
    Cpm7 = Cpm ** 7
    RC = 2 * np.sqrt(Cpm7 / (Cpm7 + 25.0 ** 7))
    SL = 1 + 0.015 * (Lpm - 50) ** 2 / np.sqrt(20 + (Lpm - 50) ** 2)
    SC = 1 + 0.045 * Cpm
    SH = 1 + 0.015 * Cpm * T
    RT = -np.sin(np.radians(2 * dtheta)) * RC
    return np.sqrt((dLp / SL) ** 2 + (dCp / SC) ** 2 + (dHp / SH) ** 2 + RT * (dCp / SC) * (dHp / SH))


# --------------------------------------------------------------------------- class means


@dataclass
class ClassMeans:
    """Mean encoded colour of each marked mineral.

    Attributes
    ----------
    codes : (K,) int ndarray
        LumenStone codes kept for the fit.
    means : (K, 3) float64 ndarray
        Mean encoded RGB in [0, 1] of the unsaturated marked pixels.
    counts : (K,) int ndarray
        Unsaturated marked pixels per code.
    notes : list of str
        Minerals left out and why.
    """

    codes: np.ndarray
    means: np.ndarray
    counts: np.ndarray
    notes: list[str] = field(default_factory=list)

    def merged(self, other: "ClassMeans") -> "ClassMeans":
        """Pool the pixels of two measurements (series calibration from several images)."""
        tot: dict[int, np.ndarray] = {}
        cnt: dict[int, int] = {}
        for cm in (self, other):
            for c, m, n in zip(cm.codes.tolist(), cm.means, cm.counts.tolist()):
                tot[c] = tot.get(c, 0) + m * n
                cnt[c] = cnt.get(c, 0) + n
        codes = np.array(sorted(tot), dtype=int)
        return ClassMeans(codes=codes, means=np.array([tot[c] / cnt[c] for c in codes]).reshape(-1, 3),
                          counts=np.array([cnt[c] for c in codes], dtype=int), notes=self.notes + other.notes)


def class_means(image: np.ndarray, annotation: np.ndarray, *, min_pixels: int = MIN_PIXELS,
                max_saturated: float = MAX_SATURATED) -> ClassMeans:
    """Mean colour of every mineral marked in a partial annotation.

    Parameters
    ----------
    image : (M, N, 3) ndarray
        uint8, uint16 or float RGB in [0, 1].
    annotation : (M, N) uint8 ndarray
        LumenStone codes, 255 = unmarked.
    min_pixels : int
        Minerals with fewer unsaturated marked pixels are left out.
    max_saturated : float
        Minerals whose marked pixels are saturated beyond this share are left out.

    Returns
    -------
    ClassMeans

    Raises
    ------
    ValueError
        If the annotation does not match the image or marks nothing.
    """
    image = _check_image(image)
    ann = np.asarray(annotation)
    if ann.ndim != 2 or ann.shape != image.shape[:2]:
        raise ValueError(f"the annotation is {ann.shape[1::-1] if ann.ndim == 2 else ann.shape} but the image is "
                         f"{image.shape[1]}x{image.shape[0]} px; the annotation must match its image")
    ann = ann.astype(np.uint8, copy=False).ravel()
    if not (ann != IGNORE).any():
        raise ValueError("the annotation marks no pixels; mark at least one mineral (two to four for the "
                         "other methods)")
    if image.dtype == np.uint8:
        sat_level = 254
    elif image.dtype == np.uint16:
        sat_level = 65535 - 65535 // 256
    else:
        sat_level = 254 / 255
    flat = image.reshape(-1, 3)
    saturated = (flat >= sat_level).any(axis=1)
    total = np.bincount(ann, minlength=256)
    good = np.where(saturated, np.uint8(IGNORE), ann)
    counts = np.bincount(good, minlength=256)
    sums = np.stack([np.bincount(good, weights=flat[:, k], minlength=256) for k in range(3)], axis=1)
    scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
    codes, means, ns, notes = [], [], [], []
    for c in np.flatnonzero(total[:IGNORE]):
        name = name_of(int(c)) if c < 15 else f"code {c}"
        if total[c] - counts[c] > max_saturated * total[c]:
            notes.append(f"{name}: {100 * (1 - counts[c] / total[c]):.0f} % of its marked pixels are saturated; "
                         "left out (reduce the exposure)")
            continue
        if counts[c] < min_pixels:
            notes.append(f"{name}: only {int(counts[c])} usable marked pixels (at least {min_pixels} needed); left out")
            continue
        codes.append(int(c))
        means.append(sums[c] / counts[c] / scale)
        ns.append(int(counts[c]))
    return ClassMeans(codes=np.array(codes, dtype=int), means=np.array(means, dtype=np.float64).reshape(-1, 3),
                      counts=np.array(ns, dtype=int), notes=notes)


# --------------------------------------------------------------------------- fitting


@dataclass
class Correction:
    """A fitted colour correction.

    Attributes
    ----------
    matrix : (4, 3) float64 ndarray
        Affine matrix in linear RGB: ``linear_out = [r, g, b, 1] @ matrix``.
    method : str
    linearisation : str
    codes : (K,) int ndarray
        Minerals used for the fit.
    source : (K, 3) float64 ndarray
        Their mean encoded colours in the image, [0, 1].
    target : (K, 3) float64 ndarray
        Their reference colours, [0, 1].
    de_before, de_after : (K,) float64 ndarray
        CIEDE2000 between reference and image class means, before and after.
    notes : list of str
    gamma : (3,) float64 ndarray
        Per-channel exponent applied to linear light before the matrix (ones for
        purely affine methods).
    """

    matrix: np.ndarray
    method: str
    linearisation: str
    codes: np.ndarray
    source: np.ndarray
    target: np.ndarray
    de_before: np.ndarray
    de_after: np.ndarray
    notes: list[str] = field(default_factory=list)
    gamma: np.ndarray = field(default_factory=lambda: np.ones(3))

    def predict_means(self) -> np.ndarray:
        """(K, 3) encoded class means after correction (clipped to [0, 1])."""
        lin = np.maximum(to_linear(self.source, linearisation=self.linearisation), 0) ** self.gamma
        out = np.clip(np.c_[lin, np.ones(len(lin))] @ self.matrix, 0, 1)
        return from_linear(out, linearisation=self.linearisation)

    def as_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "method": self.method,
            "linearisation": self.linearisation,
            "matrix": np.round(self.matrix, 6).tolist(),
            "gamma": np.round(self.gamma, 4).tolist(),
            "minerals": [name_of(int(c)) for c in self.codes],
            "codes": [int(c) for c in self.codes],
            "delta_e_before": round(float(np.mean(self.de_before)), 3) if len(self.codes) else None,
            "delta_e_after": round(float(np.mean(self.de_after)), 3) if len(self.codes) else None,
            "delta_e_per_mineral": {name_of(int(c)): [round(float(b), 3), round(float(a), 3)]
                                    for c, b, a in zip(self.codes, self.de_before, self.de_after)},
            "notes": list(self.notes),
        }


# the method that keeps the default model's accuracy best on held-out images (bench/results/calibration.md)
DEFAULT_METHOD = "white-balance"

# name -> (fit function(src_lin (K,3), ref_lin (K,3), weights (K,)) -> (4,3), minimum classes)
METHODS: Registry = Registry("calibration method")
_MIN_CLASSES: dict[str, int] = {}


def min_classes(method: str) -> int:
    """The fewest marked minerals (each with a reference colour) the calibration ``method`` fits from."""
    return _MIN_CLASSES[METHODS.get_key(method)]


def _register(name: str, min_classes: int, doc: str):
    def deco(fn):
        METHODS.add(name, fn, doc=doc)
        _MIN_CLASSES[name] = min_classes
        return fn

    return deco


def _wb_gains(src: np.ndarray, ref: np.ndarray, w: np.ndarray) -> np.ndarray:
    num = (w[:, None] * src * ref).sum(0)
    den = (w[:, None] * src * src).sum(0)
    return np.where(den > 1e-12, num / np.maximum(den, 1e-12), 1.0)


def _diag(g: np.ndarray) -> np.ndarray:
    m = np.zeros((4, 3))
    m[:3] = np.diag(g)
    return m


@_register("white-balance", 1, "per-channel gains (least squares in linear RGB); 1 mineral suffices")
def _fit_white_balance(src: np.ndarray, ref: np.ndarray, w: np.ndarray) -> np.ndarray:
    return _diag(_wb_gains(src, ref, w))


@_register("ccm-de2000", 2, "4x3 affine matrix minimising squared CIEDE2000 in CIELAB, from a white-balance start "
           "(Korshunov et al. 2025)")
def _fit_ccm_de2000(src: np.ndarray, ref: np.ndarray, w: np.ndarray, *, reg: float = 5.0) -> np.ndarray:
    from scipy.optimize import least_squares

    m0 = _diag(_wb_gains(src, ref, w))
    lab_ref = linear_to_lab(ref)
    aug = np.c_[src, np.ones(len(src))]
    sw = np.sqrt(w / w.sum() * len(w))
    # Regularising towards the white balance keeps the 12 unknowns determined with
    # only 2-4 marked minerals: a change of 0.1 in one entry costs as much as 0.1*reg units of CIEDE2000.
    scale = np.array([1.0] * 9 + [4.0] * 3)  # offsets are rarely needed: penalise them more

    def residuals(p):
        m = m0 + p.reshape(4, 3)
        out = np.maximum(aug @ m, 0)
        de = delta_e2000(lab_ref, linear_to_lab(out))
        return np.concatenate([sw * de, reg * scale * p])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = least_squares(residuals, np.zeros(12), method="trf", x_scale=0.05, max_nfev=400)
    return m0 + res.x.reshape(4, 3)


def _colour_affine(apply: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Read the 4x3 affine matrix of a degree-1 colour-science correction off basis colours."""
    basis = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = np.asarray(apply(basis), np.float64)
    m = np.empty((4, 3))
    m[:3] = out[1:] - out[0]
    m[3] = out[0]
    return m


def _colour_science():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import colour.characterisation as cc
    return cc


@_register("ccm-de2000-tone", 3, "ccm-de2000 plus a per-channel tone exponent, for cameras with another tone curve; "
           "needs 3 minerals of different brightness")
def _fit_ccm_de2000_tone(src: np.ndarray, ref: np.ndarray, w: np.ndarray, *, reg: float = 5.0,
                         reg_gamma: float = 10.0):
    from scipy.optimize import least_squares

    lab_ref = linear_to_lab(ref)
    sw = np.sqrt(w / w.sum() * len(w))
    scale = np.array([1.0] * 9 + [4.0] * 3)
    src = np.maximum(src, 1e-6)

    def residuals(p):
        gamma = np.exp(p[12:])
        lin = src ** gamma
        m = _diag(_wb_gains(lin, ref, w)) + p[:12].reshape(4, 3)
        out = np.maximum(np.c_[lin, np.ones(len(lin))] @ m, 0)
        de = delta_e2000(lab_ref, linear_to_lab(out))
        return np.concatenate([sw * de, reg * scale * p[:12], reg_gamma * p[12:]])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = least_squares(residuals, np.zeros(15), method="trf", x_scale=0.05, max_nfev=600)
    gamma = np.exp(res.x[12:])
    return _diag(_wb_gains(src ** gamma, ref, w)) + res.x[:12].reshape(4, 3), gamma


@_register("tone-balance", 2, "per-channel gains and tone exponents and one saturation term, minimising squared "
           "CIEDE2000; only 7 unknowns, so it stays stable with 2-5 marked minerals and undoes colour filters, "
           "another camera's tone curve and its channel cross-talk")
def _fit_tone_balance(src: np.ndarray, ref: np.ndarray, w: np.ndarray, *, reg_gamma: float = 10.0,
                      reg_sat: float = 10.0):
    """``out = gains * ((src ** gamma) @ S(k).T)`` with ``S(k) = (1 + k) I - k J / 3`` (k > 0 adds saturation).

    The gains are solved in closed form (white balance) for every trial exponent and saturation, so the search
    has only 4 unknowns; the penalties keep exponents near 1 and saturation near 0 unless the marked minerals
    clearly ask for them.
    """
    from scipy.optimize import least_squares

    src = np.maximum(src, 1e-6)
    lab_ref = linear_to_lab(ref)
    sw = np.sqrt(w / w.sum() * len(w))
    J = np.full((3, 3), 1.0 / 3.0)

    def parts(p):
        gamma = np.exp(p[:3])
        S = (1.0 + p[3]) * np.eye(3) - p[3] * J
        y = (src ** gamma) @ S.T
        return gamma, S, y, _wb_gains(np.maximum(y, 1e-9), ref, w)

    def residuals(p):
        _, _, y, g = parts(p)
        de = delta_e2000(lab_ref, linear_to_lab(np.maximum(y * g, 0)))
        return np.concatenate([sw * de, reg_gamma * p[:3], [reg_sat * p[3]]])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = least_squares(residuals, np.zeros(4), method="trf", x_scale=0.05, max_nfev=400)
    gamma, S, _, g = parts(res.x)
    m = np.zeros((4, 3))
    m[:3] = S.T @ np.diag(g)
    return m, gamma


@_register("cheung2004", 3, "colour-science Cheung 2004, 3 terms (3x3 least squares); needs 3 minerals")
def _fit_cheung(src: np.ndarray, ref: np.ndarray, w: np.ndarray) -> np.ndarray:
    cc = _colour_science()
    M = cc.matrix_colour_correction_Cheung2004(src, ref, terms=3)
    return _colour_affine(lambda x: cc.apply_matrix_colour_correction_Cheung2004(x, M, terms=3))


@_register("finlayson2015", 3, "colour-science Finlayson 2015 root-polynomial, degree 1; needs 3 minerals")
def _fit_finlayson(src: np.ndarray, ref: np.ndarray, w: np.ndarray) -> np.ndarray:
    cc = _colour_science()
    M = cc.matrix_colour_correction_Finlayson2015(src, ref, degree=1)
    return _colour_affine(lambda x: cc.apply_matrix_colour_correction_Finlayson2015(x, M, degree=1))


@_register("vandermonde", 4, "colour-science Vandermonde polynomial, degree 1 (affine 4x3); needs 4 minerals")
def _fit_vandermonde(src: np.ndarray, ref: np.ndarray, w: np.ndarray) -> np.ndarray:
    cc = _colour_science()
    M = cc.matrix_colour_correction_Vandermonde(src, ref, degree=1)
    return _colour_affine(lambda x: cc.apply_matrix_colour_correction_Vandermonde(x, M, degree=1))


def _reference_array(reference: Mapping[int, np.ndarray], codes: np.ndarray) -> np.ndarray:
    ref = np.array([np.asarray(reference[int(c)], np.float64).reshape(3) for c in codes]).reshape(-1, 3)
    if ref.size and ref.max() > 1.0 + 1e-9:  # 0-255 as stored in model configs
        ref = ref / 255.0
    return np.clip(ref, 0, 1)


def fit_correction(measured: ClassMeans, reference: Mapping[int, np.ndarray], *, method: str = "ccm-de2000",
                   linearisation: str = "srgb") -> Correction:
    """Fit a colour correction from class means.

    Parameters
    ----------
    measured : ClassMeans
        From :func:`class_means` on the image to correct.
    reference : mapping of int to (3,) array
        Reference sRGB colour per code, 0-255 (as in a model's config) or 0-1.
    method : str
        A name in :data:`METHODS`.
    linearisation : {"srgb", "gamma2.2"}

    Returns
    -------
    Correction

    Raises
    ------
    ValueError
        Unknown method, or too few marked minerals with a reference colour.
    """
    fit = METHODS.get(method)
    key = METHODS.get_key(method)
    lin_mode = _check_linearisation(linearisation)
    notes = list(measured.notes)
    keep = [i for i, c in enumerate(measured.codes) if int(c) in reference]
    dropped = [int(c) for c in measured.codes if int(c) not in reference]
    if dropped:
        notes.append("no reference colour in the model for " + ", ".join(name_of(c) for c in dropped)
                     + "; left out")
    need = _MIN_CLASSES[key]
    if len(keep) < need:
        have = ", ".join(name_of(int(measured.codes[i])) for i in keep) or "none"
        extra = f" ({'; '.join(notes)})" if notes else ""
        fewest = min(_MIN_CLASSES, key=_MIN_CLASSES.get)
        other = f" or choose {fewest!r}" if _MIN_CLASSES[fewest] < need and len(keep) >= _MIN_CLASSES[fewest] else ""
        raise ValueError(f"method {key!r} needs at least {need} marked mineral(s) with a reference colour but the "
                         f"annotation gives {len(keep)} ({have}){extra}; mark more minerals{other}")
    codes = measured.codes[keep]
    src = measured.means[keep]
    w = np.ones(len(keep))
    target = _reference_array(reference, codes)
    src_lin = to_linear(src, linearisation=lin_mode)
    ref_lin = to_linear(target, linearisation=lin_mode)
    if (src_lin.max(axis=0) < 1e-4).any():
        raise ValueError("a colour channel is black in every marked mineral; the image cannot be colour-corrected")
    fitted = fit(src_lin, ref_lin, w)
    matrix, gamma = fitted if isinstance(fitted, tuple) else (fitted, np.ones(3))
    matrix, gamma = np.asarray(matrix, np.float64), np.asarray(gamma, np.float64)
    if not (np.isfinite(matrix).all() and np.isfinite(gamma).all()):
        raise ValueError(f"method {key!r} gave no usable matrix for these minerals; try 'ccm-de2000'")
    lab_ref = linear_to_lab(ref_lin)
    de_before = delta_e2000(lab_ref, linear_to_lab(src_lin))
    corr = Correction(matrix=matrix, method=key, linearisation=lin_mode, codes=codes, source=src, target=target,
                      de_before=de_before, de_after=np.zeros(len(codes)), notes=notes, gamma=gamma)
    corr.de_after = delta_e2000(lab_ref, linear_to_lab(to_linear(corr.predict_means(), linearisation=lin_mode)))
    return corr


# --------------------------------------------------------------------------- applying

_LUT_CACHE: dict[tuple[str, int], np.ndarray] = {}


def _decode_lut(linearisation: str, levels: int, gamma: np.ndarray) -> np.ndarray:
    """(levels, 3) float32: encoded level -> linear light ** gamma, per channel."""
    key = ("dec-" + linearisation, levels)
    if key not in _LUT_CACHE:
        _LUT_CACHE[key] = to_linear(np.arange(levels) / (levels - 1), linearisation=linearisation)
    base = _LUT_CACHE[key]
    return np.stack([base ** g for g in gamma], axis=1).astype(np.float32)


def _encode_lut(linearisation: str, out_max: int) -> np.ndarray:
    key = ("enc-" + linearisation, out_max)
    if key not in _LUT_CACHE:
        v = from_linear(np.arange(65536) / 65535.0, linearisation=linearisation) * out_max + 0.5
        _LUT_CACHE[key] = np.clip(v, 0, out_max).astype(np.uint8 if out_max == 255 else np.uint16)
    return _LUT_CACHE[key]


def _linearise_image(image: np.ndarray, linearisation: str, gamma: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        import cv2

        return cv2.LUT(image, np.ascontiguousarray(_decode_lut(linearisation, 256, gamma).reshape(256, 1, 3)))
    if image.dtype == np.uint16:
        lut = _decode_lut(linearisation, 65536, gamma)
        return np.stack([lut[image[..., k], k] for k in range(3)], axis=-1)
    return (np.maximum(to_linear(image, linearisation=linearisation), 0) ** gamma).astype(np.float32)


def apply_correction(image: np.ndarray, correction: Correction | np.ndarray, *, linearisation: str | None = None,
                     gain: np.ndarray | None = None, out_dtype: str | None = None) -> np.ndarray:
    """Colour-correct an image.

    Parameters
    ----------
    image : (M, N, 3) ndarray
        uint8, uint16 or float RGB in [0, 1].
    correction : Correction or (4, 3) ndarray
        A fitted correction, or a bare matrix acting on linear RGB.
    linearisation : {"srgb", "gamma2.2"}, optional
        Needed with a bare matrix (default "srgb"); taken from ``correction`` otherwise.
    gain : (M, N, 3) or (M, N, 1) float32 ndarray, optional
        Flat-field gain in linear light, applied before the colour correction.
    out_dtype : {"uint8", "uint16", "float32"}, optional
        Default: the input's type (float input gives float32).

    Returns
    -------
    corrected : (M, N, 3) ndarray
    """
    import cv2

    image = _check_image(image)
    if isinstance(correction, Correction):
        matrix, lin, gamma = correction.matrix, correction.linearisation, np.asarray(correction.gamma, np.float64)
    else:
        matrix, lin = np.asarray(correction, np.float64), _check_linearisation(linearisation or "srgb")
        gamma = np.ones(3)
    if matrix.shape != (4, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"a colour-correction matrix must be a finite 4x3 array, got shape {matrix.shape}")
    if out_dtype is None:
        out_dtype = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16"}.get(image.dtype, "float32")
    if out_dtype not in ("uint8", "uint16", "float32"):
        raise ValueError(f"out_dtype must be 'uint8', 'uint16' or 'float32', not {out_dtype!r}")
    lin_img = _linearise_image(image, lin, gamma)
    if gain is not None:
        gain = np.asarray(gain, np.float32)
        if gain.shape[:2] != image.shape[:2]:
            raise ValueError(f"the flat-field gain is {gain.shape[1]}x{gain.shape[0]} px but the image is "
                             f"{image.shape[1]}x{image.shape[0]} px")
        if gain.ndim == 2 or gain.shape[2] == 1:
            gain = cv2.merge([gain.reshape(gain.shape[:2])] * 3)
        lin_img = cv2.multiply(lin_img, gain)
    # cv2.transform: dst = M[:, :3] @ src + M[:, 3], vectorised and multi-threaded
    out = cv2.transform(lin_img, np.ascontiguousarray(matrix.T, dtype=np.float32))
    if out_dtype == "float32":
        return from_linear(np.clip(out, 0, 1), linearisation=lin).astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(65535.0)
    index = (out + np.float32(0.5)).astype(np.uint16)
    return _encode_lut(lin, 255 if out_dtype == "uint8" else 65535)[index]


def mean_delta_e(image: np.ndarray, annotation: np.ndarray, reference: Mapping[int, np.ndarray], *,
                 codes=None) -> tuple[float, dict[int, float]]:
    """Mean CIEDE2000 between the marked minerals' mean colours and their reference colours.

    Parameters
    ----------
    image : (M, N, 3) ndarray
    annotation : (M, N) uint8 ndarray
    reference : mapping of int to (3,) array
    codes : iterable of int, optional
        Restrict to these codes.

    Returns
    -------
    mean : float
    per_code : dict of int to float
    """
    cm = class_means(image, annotation, min_pixels=1, max_saturated=1.0)
    per = {}
    for c, m in zip(cm.codes.tolist(), cm.means):
        if c not in reference or (codes is not None and c not in codes):
            continue
        t = _reference_array(reference, np.array([c]))[0]
        per[c] = float(delta_e2000(linear_to_lab(to_linear(t)), linear_to_lab(to_linear(m))))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


# Area-weighted ΔE00 above which an image's colours are unlike the training images'. On the ten held-out
# LumenStone photographs, with the default model's own labels, images taken like the training set give 2.7–4.9;
# simulated blue and yellow filters give 6.9–9.5, and the one held-out photograph that white balance improves
# most (a06, pixel accuracy 0.77 → 0.89) gives 8.0.
DRIFT_WARNING = 6.0


def colour_drift(image: np.ndarray, labels: np.ndarray, reference: Mapping[int, np.ndarray]) -> tuple[float, dict[int, float]]:
    """How far an image's mineral colours are from the reference colours, weighted by area.

    Parameters
    ----------
    image : (M, N, 3) ndarray
    labels : (M, N) uint8 ndarray
        LumenStone codes (e.g. a model's prediction), 255 = unlabelled.
    reference : mapping of int to (3,) array
        Reference colours (a model's ``reference_colors()``).

    Returns
    -------
    drift : float
        Area-weighted mean CIEDE2000 over the labelled minerals that have a reference colour (nan if none).
    per_code : dict of int to float
    """
    labels = np.asarray(labels, np.uint8)
    if not (labels != IGNORE).any():
        return float("nan"), {}
    _, per = mean_delta_e(image, labels, reference)
    if not per:
        return float("nan"), per
    counts = np.bincount(labels.ravel(), minlength=256)
    w = np.array([counts[c] for c in per], np.float64)
    return float(np.dot(w, list(per.values())) / w.sum()), per
