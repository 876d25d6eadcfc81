"""Edge-aware refinement of class probabilities: a colour guided filter, or a locally connected CRF.

PSPNet predicts at 1/8 of its input, so at working scale 0.5 its probabilities change over about 16 px of the
photograph and grain outlines come out rounded. The guided filter (He, Sun & Tang, "Guided Image Filtering",
2013; the fast variant of He & Sun, 2015) fits, in every window, each class's probability as a linear function
of the photograph's colour and averages the fits: probability edges move onto colour edges, while flat regions
keep the network's answer. The filter is linear and keeps the per-pixel sum of the probabilities at 1.

Memory is bounded: the image is processed in strips of rows with a margin, and each class channel is filtered
on its own, so a panorama needs a few hundred MB on top of its probability map, whatever its size.

The second method, ``"crf"``, is the mean-field inference of a conditional random field with Gaussian edge
potentials (Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
NeurIPS 2011) restricted to a window around each pixel, as in the convolutional CRF of Teichmann & Cipolla
(2019): each pixel's label is pulled towards the labels of nearby pixels of similar colour (the appearance
kernel), a few times over. Unlike the linear guided filter it can decide a pixel by the colour of the grain it
touches, so thin rims and flames keep their width.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["DEFAULT_REFINE", "REFINE_METHODS", "crf_refine", "guided_refine", "refine", "refine_settings", "resolve_refine"]

#: The settings of each refinement method, with their defaults.
REFINE_METHODS = {
    "guided": {"radius": 8, "eps": 1e-3, "subsample": 4},
    "crf": {"iterations": 3, "radius": 8, "step": 4, "spatial_sigma": 8.0, "colour_sigma": 10.0, "weight": 3.0},
}
#: What a newly trained model's config asks for.
DEFAULT_REFINE = {"method": "crf", **REFINE_METHODS["crf"]}


def _check_method(method, *, none: bool = False) -> None:
    if method not in REFINE_METHODS:
        valid = ", ".join([*REFINE_METHODS, "none"] if none else REFINE_METHODS)
        raise ValueError(f"unknown refinement method {method!r}; valid methods: {valid}")


def refine_settings(config: dict, *, force: bool = False) -> dict | None:
    """The refinement settings of a model config (``"refine"``), or None when it is off; with ``force``, a config
    without them gets the defaults. A config without ``"method"`` means the guided filter (the first method)."""
    r = config.get("refine") or (dict(DEFAULT_REFINE) if force else None)
    if r is None:
        return None
    method = r.get("method", "guided")
    _check_method(method)
    defaults = REFINE_METHODS[method]
    unknown = sorted(set(r) - set(defaults) - {"method"})
    if unknown:
        raise ValueError(f"refinement method {method!r} has no settings {unknown}; its settings: {', '.join(defaults)}")
    s = {k: type(v)(r.get(k, v)) for k, v in defaults.items()}
    if method == "guided" and (s["radius"] < 1 or s["eps"] <= 0 or s["subsample"] < 1):
        raise ValueError(f"refine settings need radius >= 1, eps > 0 and subsample >= 1, got {r}")
    if method == "crf" and (s["iterations"] < 1 or s["radius"] < 1 or s["step"] < 1 or s["spatial_sigma"] <= 0
                            or s["colour_sigma"] <= 0 or s["weight"] < 0):
        raise ValueError("crf settings need iterations, radius and step >= 1, positive sigmas and a non-negative "
                         f"weight, got {r}")
    return {"method": method, **s}


def resolve_refine(config: dict, choice: bool | str | None) -> dict | None:
    """The settings for a caller's ``refine`` choice: None = the config's, False = off, True = the config's or the
    default method's, a method name = that method (with the config's settings when the config uses it)."""
    if choice is False or choice == "none":
        return None
    if choice is None or choice is True:
        return refine_settings(config, force=bool(choice))
    _check_method(choice, none=True)
    own = config.get("refine") or {}
    return refine_settings({"refine": own if own.get("method", "guided") == choice else {"method": choice}})


def refine(probs: np.ndarray, guide: np.ndarray, settings: dict, *, device=None, progress=None) -> np.ndarray:
    """Refine ``probs`` (K, h, w) float32 in place with the method and settings of :func:`refine_settings`;
    ``device`` (a torch device) is where the CRF computes (the guided filter always runs on the CPU);
    ``progress(fraction)`` is called after each block of rows."""
    s = dict(settings)
    method = s.pop("method", "guided")
    _check_method(method)
    if method == "crf":
        return crf_refine(probs, guide, device=device, progress=progress, **s)
    return guided_refine(probs, guide, progress=progress, **s)


def _check_inputs(probs: np.ndarray, guide: np.ndarray) -> None:
    if probs.ndim != 3 or probs.dtype != np.float32:
        raise ValueError(f"probs must be a (K, h, w) float32 array, got {probs.shape} {probs.dtype}")
    h, w = probs.shape[1:]
    if guide.shape[:2] != (h, w) or guide.ndim != 3 or guide.shape[2] < 3:
        raise ValueError(f"the guide must be an (h, w, 3+) image of the probabilities' size {w}x{h}, got {guide.shape}")


def _in_strips(probs: np.ndarray, channels, strip: int, margin: int, block, progress=None) -> None:
    """Overwrite ``probs[channels]`` strip by strip with ``block(a0, a1)``, the refined rows a0:a1 (each strip
    with ``margin`` rows either side). ``strip`` must be at least ``margin``: a strip's block then reads
    unrefined rows of the strip before it only, which is written once the next block has been computed.
    ``progress(fraction of the rows done)`` after each block."""
    h = probs.shape[1]
    pending = None
    for y0 in range(0, h, strip):
        y1 = min(h, y0 + strip)
        a0, a1 = max(0, y0 - margin), min(h, y1 + margin)
        q = block(a0, a1)
        if pending is not None:
            probs[channels, pending[0] : pending[1]] = pending[2]
        pending = (y0, y1, q[:, y0 - a0 : y1 - a0])
        if progress is not None:
            progress(y1 / h)
    if pending is not None:
        probs[channels, pending[0] : pending[1]] = pending[2]


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def _filter_block(probs: np.ndarray, guide: np.ndarray, radius: int, eps: float, sub: int) -> np.ndarray:
    """Guided-filter every channel of ``probs`` (K, h, w) float32 with ``guide`` (h, w, 3) float32 in [0, 1]."""
    h, w = guide.shape[:2]
    hs, ws = max(1, h // sub), max(1, w // sub)

    def down(x):
        return cv2.resize(x, (ws, hs), interpolation=cv2.INTER_AREA) if sub > 1 else x

    def up(x):
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) if sub > 1 else x

    r = max(1, radius // sub)
    g = down(guide)
    gc = [np.ascontiguousarray(g[..., i]) for i in range(3)]
    mg = [_box(c, r) for c in gc]
    var = {}
    for i in range(3):
        for j in range(i, 3):
            var[i, j] = _box(gc[i] * gc[j], r) - mg[i] * mg[j]
    a11, a12, a13 = var[0, 0] + eps, var[0, 1], var[0, 2]
    a22, a23, a33 = var[1, 1] + eps, var[1, 2], var[2, 2] + eps
    # inverse of the symmetric 3x3 covariance (+ eps I) by cofactors, per pixel
    c11, c12, c13 = a22 * a33 - a23 * a23, a13 * a23 - a12 * a33, a12 * a23 - a13 * a22
    c22, c23, c33 = a11 * a33 - a13 * a13, a13 * a12 - a11 * a23, a11 * a22 - a12 * a12
    det = a11 * c11 + a12 * c12 + a13 * c13
    inv = [[c11 / det, c12 / det, c13 / det], [c12 / det, c22 / det, c23 / det], [c13 / det, c23 / det, c33 / det]]
    del var, a11, a12, a13, a22, a23, a33, c11, c12, c13, c22, c23, c33, det
    full = [np.ascontiguousarray(guide[..., i]) for i in range(3)]
    out = np.empty((probs.shape[0], h, w), np.float32)
    for k in range(probs.shape[0]):
        p = down(np.ascontiguousarray(probs[k], dtype=np.float32))
        mp = _box(p, r)
        cov = [_box(gc[i] * p, r) - mg[i] * mp for i in range(3)]
        a = [inv[i][0] * cov[0] + inv[i][1] * cov[1] + inv[i][2] * cov[2] for i in range(3)]
        b = mp - a[0] * mg[0] - a[1] * mg[1] - a[2] * mg[2]
        q = up(_box(b, r))
        for i in range(3):
            q += up(_box(a[i], r)) * full[i]
        out[k] = q
    return out


def guided_refine(probs: np.ndarray, guide: np.ndarray, *, radius: int = 8, eps: float = 1e-3, subsample: int = 4,
                  strip: int = 1024, progress=None) -> np.ndarray:
    """Refine class probabilities in place so that their edges follow the photograph's colour edges.

    Parameters
    ----------
    probs : (K, h, w) float32 ndarray
        Softmax probabilities at the working scale; overwritten.
    guide : (h, w, C) uint8 ndarray
        The network's input at the same scale; its first three channels (RGB) guide the filter.
    radius : int
        Window radius in working-scale pixels (8 = the network's output stride).
    eps : float
        Regularisation: colour variance (in [0, 1]^2 units) below which a window counts as flat.
    subsample : int
        The filter's coefficients are computed at 1/subsample of the working scale (the fast guided filter).
    strip : int
        Rows per block; bounds the memory for large panoramas.
    progress : callable, optional
        ``progress(fraction of the rows done)``, after each block.

    Returns
    -------
    probs : the same array, clipped to [0, 1] and renormalised to sum to 1 per pixel.
    """
    _check_inputs(probs, guide)
    sub = max(1, int(subsample))
    margin = 2 * int(radius) + 4 * sub
    margin += (-margin) % sub
    strip = max(int(strip), margin) + (-max(int(strip), margin)) % sub
    _in_strips(probs, slice(None), strip, margin,
               lambda a0, a1: _filter_block(probs[:, a0:a1], guide[a0:a1, :, :3].astype(np.float32) * np.float32(1 / 255),
                                            int(radius), float(eps), sub), progress)
    np.clip(probs, 0.0, 1.0, out=probs)
    total = probs.sum(axis=0)
    np.maximum(total, np.float32(1e-6), out=total)
    probs /= total[None]
    return probs


def _crf_block(probs: np.ndarray, guide: np.ndarray, *, iterations: int, radius: int, step: int,
               spatial_sigma: float, colour_sigma: float, weight: float, device=None) -> np.ndarray:
    """Mean-field iterations on one block: ``probs`` (K, h, w) float32, ``guide`` (h, w, 3) uint8 -> (K, h, w)."""
    F = torch.nn.functional
    K, h, w = probs.shape
    r = radius
    with torch.inference_mode():
        # classes first: each shifted view is K planes of whole rows, and the softmax runs along rows
        P = torch.from_numpy(np.ascontiguousarray(probs)).to(device)
        unary = torch.log(P.clamp_min(1e-4))
        img = torch.from_numpy(np.ascontiguousarray(guide[..., :3].transpose(2, 0, 1))).to(device).float()
        img_p = F.pad(img[None], (r, r, r, r), mode="replicate")[0]
        offsets = [(dy, dx) for dy in range(-r, r + 1, step) for dx in range(-r, r + 1, step) if dy or dx]
        kernels = []
        for dy, dx in offsets:
            diff = img - img_p[:, r + dy : r + dy + h, r + dx : r + dx + w]
            d2 = (diff * diff).sum(0)
            kernels.append(torch.exp(d2.mul_(-0.5 / colour_sigma**2).add_(-0.5 * (dy * dy + dx * dx) / spatial_sigma**2))
                           .mul_(weight))
        Q = P
        msg = torch.empty_like(P)
        for _ in range(iterations):
            Qp = F.pad(Q[None], (r, r, r, r), mode="replicate")[0]
            # Potts compatibility: a label gains what its similar neighbours give it
            msg.copy_(unary)
            for (dy, dx), k in zip(offsets, kernels):
                msg.addcmul_(k, Qp[:, r + dy : r + dy + h, r + dx : r + dx + w])
            Q = torch.softmax(msg, dim=0)
        return Q.cpu().numpy()


def crf_refine(probs: np.ndarray, guide: np.ndarray, *, iterations: int = 3, radius: int = 8, step: int = 4,
               spatial_sigma: float = 8.0, colour_sigma: float = 10.0, weight: float = 3.0,
               strip: int | None = None, device=None, progress=None) -> np.ndarray:
    """Refine class probabilities in place by mean-field inference of a locally connected CRF.

    Parameters
    ----------
    probs : (K, h, w) float32 ndarray
        Softmax probabilities at the working scale; overwritten. Channels that are zero everywhere (minerals
        ruled out) stay zero.
    guide : (h, w, C) uint8 ndarray
        The network's input at the same scale; its first three channels (RGB) define colour similarity.
    iterations : int
        Mean-field updates.
    radius, step : int
        Pixels within ``radius`` (working scale), every ``step``-th in each direction, are connected.
    spatial_sigma, colour_sigma : float
        Widths of the appearance kernel in pixels and in 8-bit colour units.
    weight : float
        Weight of the appearance kernel against the network's log-probabilities.
    strip : int, optional
        Rows per block (each with a margin of ``iterations * radius`` rows, so the result is the same as over the
        whole image); bounds the memory for large panoramas. Default: about a million pixels per block.
    device : torch.device or str, optional
        Where to compute (default: the CPU); the result is a NumPy array either way.
    progress : callable, optional
        ``progress(fraction of the rows done)``, after each block.

    Returns
    -------
    probs : the same array, refined (sums to 1 per pixel over the channels that were not zero).

    References
    ----------
    .. [1] P. Krähenbühl and V. Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
           Potentials", NeurIPS 2011. arXiv:1210.5644
    .. [2] M. T. T. Teichmann and R. Cipolla, "Convolutional CRFs for Semantic Segmentation", BMVC 2019.
           arXiv:1805.04777
    """
    _check_inputs(probs, guide)
    w = probs.shape[2]
    active = np.flatnonzero(probs.reshape(probs.shape[0], -1).max(axis=1) > 0)
    if active.size < 2:
        return probs
    kw = dict(iterations=int(iterations), radius=int(radius), step=int(step), spatial_sigma=float(spatial_sigma),
              colour_sigma=float(colour_sigma), weight=float(weight), device=device)
    margin = int(iterations) * int(radius)
    strip = max(int(strip) if strip else (1 << 20) // max(1, w), margin)
    _in_strips(probs, active, strip, margin, lambda a0, a1: _crf_block(probs[active, a0:a1], guide[a0:a1], **kw),
               progress)
    return probs
