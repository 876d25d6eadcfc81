"""Sub-pixel phase correlation.

References
----------
C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method",
Proc. IEEE Int. Conf. Cybernetics and Society, 1975.

M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
registration algorithms", Optics Letters 33(2), 156-158, 2008.
doi:10.1364/OL.33.000156
"""
from __future__ import annotations

import numpy as np

__all__ = ["cross_power", "phase_correlate", "refine_peak", "highpass", "fft2", "ifft2_real"]


def highpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image - gaussian(image, sigma)`` as float32 (removes vignetting and exposure offsets)."""
    import cv2

    img = image.astype(np.float32, copy=False)
    return img - cv2.GaussianBlur(img, (0, 0), sigma)


def _cmatmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Complex64 matrix product through OpenCV (avoids BLAS thread contention on busy machines)."""
    import cv2

    a2 = np.ascontiguousarray(a, np.complex64).view(np.float32).reshape(a.shape[0], a.shape[1], 2)
    b2 = np.ascontiguousarray(b, np.complex64).view(np.float32).reshape(b.shape[0], b.shape[1], 2)
    out = cv2.gemm(a2, b2, 1.0, None, 0.0)
    return np.ascontiguousarray(out).view(np.complex64)[..., 0]


def fft2(a: np.ndarray) -> np.ndarray:
    """2-D FFT of a real array as complex64 (OpenCV's DFT)."""
    import cv2

    out = cv2.dft(np.ascontiguousarray(a, np.float32), flags=cv2.DFT_COMPLEX_OUTPUT)
    return out.view(np.complex64)[..., 0]


def ifft2_real(r: np.ndarray) -> np.ndarray:
    """Real part of the inverse 2-D FFT of a complex64 array (OpenCV's DFT)."""
    import cv2

    r2 = np.ascontiguousarray(r, np.complex64).view(np.float32).reshape(r.shape[0], r.shape[1], 2)
    return cv2.idft(r2, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)


def cross_power(fa: np.ndarray, fb: np.ndarray, *, lowpass: float | None = 0.15) -> np.ndarray:
    """Normalised cross-power spectrum ``Fb conj(Fa) / |.|`` with an optional Gaussian low-pass.

    Parameters
    ----------
    fa, fb : (M, N) complex ndarray
        2-D Fourier transforms of the same size.
    lowpass : float or None
        Standard deviation in cycles/px of a Gaussian weight that damps noise
        amplified by whitening; symmetric, so it does not bias the peak.

    Returns
    -------
    r : (M, N) complex ndarray
    """
    r = fb * np.conj(fa)
    mag = np.abs(r)
    r /= mag + np.float32(1e-12) * mag.max()
    if lowpass:
        r *= _lowpass(r.shape, float(lowpass))
    return r


_LP_CACHE: dict = {}


def _hann(shape):
    key = ("hann", shape)
    if key not in _LP_CACHE:
        _LP_CACHE[key] = np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)
    return _LP_CACHE[key]


def _lowpass(shape, sigma):
    key = (shape, sigma)
    if key not in _LP_CACHE:
        if len(_LP_CACHE) > 32:
            _LP_CACHE.clear()
        fy = np.fft.fftfreq(shape[0])[:, None]
        fx = np.fft.fftfreq(shape[1])[None, :]
        _LP_CACHE[key] = np.exp(-(fx * fx + fy * fy) / (2 * sigma * sigma)).astype(np.float32)
    return _LP_CACHE[key]


def refine_peak(r: np.ndarray, peak: tuple[float, float], *, upsample: int = 10, radius: float = 1.0) -> tuple[float, float, float]:
    """Locate a correlation peak to ``1/upsample`` px by a matrix-multiply DFT.

    Parameters
    ----------
    r : (M, N) complex ndarray
        Cross-power spectrum.
    peak : (dy, dx)
        Integer-precision peak (signed shift).

    Returns
    -------
    dy, dx, height : float
        Refined shift and the (normalised) correlation height there.
    """
    m, n = r.shape
    steps = np.arange(-radius, radius + 1e-9, 1.0 / upsample)
    ys = peak[0] + steps
    xs = peak[1] + steps
    fy = np.fft.fftfreq(m)
    fx = np.fft.fftfreq(n)
    ey = np.exp(2j * np.pi * np.outer(ys, fy)).astype(np.complex64)
    ex = np.exp(2j * np.pi * np.outer(fx, xs)).astype(np.complex64)
    cc = _cmatmul(_cmatmul(ey, r.astype(np.complex64)), ex).real.astype(np.float64)
    k = np.unravel_index(int(np.argmax(cc)), cc.shape)
    dy, dx = ys[k[0]], xs[k[1]]
    # a parabola through the upsampled maximum and its neighbours removes the grid step
    if 0 < k[0] < cc.shape[0] - 1:
        a, b, c = cc[k[0] - 1, k[1]], cc[k[0], k[1]], cc[k[0] + 1, k[1]]
        den = a - 2 * b + c
        if den < 0:
            dy += 0.5 * (a - c) / den / upsample
    if 0 < k[1] < cc.shape[1] - 1:
        a, b, c = cc[k[0], k[1] - 1], cc[k[0], k[1]], cc[k[0], k[1] + 1]
        den = a - 2 * b + c
        if den < 0:
            dx += 0.5 * (a - c) / den / upsample
    norm = np.abs(r).sum()
    return float(dy), float(dx), float(cc[k] / max(norm, 1e-12))


def phase_correlate(a: np.ndarray, b: np.ndarray, *, window: bool = True, upsample: int = 20,
                    lowpass: float | None = 0.15) -> tuple[float, float, float]:
    """Sub-pixel translation between two equal-size patches.

    Parameters
    ----------
    a, b : (M, N) float ndarray
        Patches; ``b(x) ≈ a(x + d)``.
    window : bool
        Apply a Hann window (for patches cut from inside an image).

    Returns
    -------
    dx, dy : float
        The shift ``d`` with ``b(x) ≈ a(x + d)``: content at ``x`` in ``b`` lies at
        ``x + d`` in ``a``.
    quality : float
        Normalised peak height in [0, 1]; about 1 for identical content, near 0 for noise.
    """
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    a = a - a.mean()
    b = b - b.mean()
    if window:
        w = _hann(a.shape)
        a = a * w
        b = b * w
    r = cross_power(fft2(a), fft2(b), lowpass=lowpass)
    corr = ifft2_real(r)
    k = np.unravel_index(int(np.argmax(corr)), corr.shape)
    m, n = corr.shape
    py = k[0] - m if k[0] > m // 2 else k[0]
    px = k[1] - n if k[1] > n // 2 else k[1]
    # a parabola through the integer peak narrows the search of the upsampled DFT to ±0.3 px
    c0 = corr[k]
    cym, cyp = corr[(k[0] - 1) % m, k[1]], corr[(k[0] + 1) % m, k[1]]
    cxm, cxp = corr[k[0], (k[1] - 1) % n], corr[k[0], (k[1] + 1) % n]
    den_y, den_x = cym - 2 * c0 + cyp, cxm - 2 * c0 + cxp
    oy = min(0.5, max(-0.5, 0.5 * float(cym - cyp) / float(den_y))) if den_y < 0 else 0.0
    ox = min(0.5, max(-0.5, 0.5 * float(cxm - cxp) / float(den_x))) if den_x < 0 else 0.0
    dy, dx, q = refine_peak(r, (py + oy, px + ox), upsample=upsample, radius=0.3)
    # the peak of ifft(Fb conj(Fa)) sits at -d when b(x) = a(x + d)
    return -dx, -dy, q
