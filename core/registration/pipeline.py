"""From XPL photographs to the extra input channels of a model trained with XPL.

The segmentation engine takes ``extra`` channels next to the RGB image
(``predict(model, image, extra=...)``); a model trained with XPL records in its
config how they were built::

    "xpl": {"encoding": "compact" | "raw", "n_shots": 6, ...}

:func:`xpl_extra` aligns the shots to the PPL image and builds those channels,
refusing (``ValueError``) when a shot cannot be aligned or the model does not
take XPL input.
"""
from __future__ import annotations

import numpy as np

from .align import ProgressFn, register_series
from .anisotropy import encode_xpl

__all__ = ["xpl_spec", "xpl_extra", "extra_from_aligned", "align_and_encode"]


def xpl_spec(config: dict) -> dict | None:
    """The ``"xpl"`` section of a model config (None for an RGB-only model).

    A model with more than 3 input channels and no ``"xpl"`` section is taken
    to use the ``"raw"`` layout with ``(in_channels - 3) / 3`` shots.
    """
    cin = int(config.get("in_channels", 3))
    if cin <= 3:
        return None
    spec = dict(config.get("xpl") or {})
    if not spec:
        if (cin - 3) % 3:
            raise ValueError(f"the model takes {cin} input channels, which is not RGB plus XPL images")
        spec = {"encoding": "raw", "n_shots": (cin - 3) // 3}
    spec.setdefault("encoding", "compact")
    return spec


def extra_from_aligned(config: dict, aligned: list) -> np.ndarray:
    """Extra channels from shots already in the PPL frame (e.g. the Register XPL page's stack).

    Parameters
    ----------
    config : dict
        The model's config.
    aligned : list of (M, N, 3) uint8 ndarray

    Returns
    -------
    extra : (M, N, C) uint8 ndarray
    """
    spec = xpl_spec(config)
    if spec is None:
        raise ValueError("this model was trained on RGB images only; it takes no XPL images")
    return encode_xpl(aligned, encoding=spec["encoding"], n_shots=spec.get("n_shots"))


def align_and_encode(ppl: np.ndarray, xpl: list, *, encoding: str, n_shots: int | None = None,
                     names: list[str] | None = None, features: str = "sift", model: str = "similarity",
                     progress: ProgressFn = None) -> tuple[np.ndarray, list]:
    """Align XPL shots to the PPL image and encode them; the one path for training and inference.

    Raises ``ValueError`` naming every shot that cannot be aligned (``names``, default "shot 1", "shot 2", ...).
    Returns the extra channels and the registrations.
    """
    results, aligned = register_series(ppl, xpl, features=features, model=model, progress=progress)
    names = names or [f"shot {i + 1}" for i in range(len(xpl))]
    bad = [f"{n} ({r.message})" for n, r in zip(names, results) if not r.ok]
    if bad:
        raise ValueError("could not align " + "; ".join(bad))
    return encode_xpl(aligned, encoding=encoding, n_shots=n_shots), results


def xpl_extra(config: dict, ppl: np.ndarray, xpl: list, *, features: str = "sift", model: str = "similarity",
              progress: ProgressFn = None) -> tuple[np.ndarray, list]:
    """Align XPL shots to the PPL image and encode them for a model.

    Parameters
    ----------
    config : dict
        The model's config (``SegmentationModel.config``).
    ppl : (M, N, 3) uint8 ndarray
    xpl : list of (M', N', 3) uint8 ndarray
    features, model : str
        Registration options (see :func:`register`).
    progress : callable(fraction, message), optional

    Returns
    -------
    extra : (M, N, C) uint8 ndarray
        Pass as ``predict(model, ppl, extra=extra)``.
    results : list of Registration

    Raises
    ------
    ValueError
        RGB-only model, wrong number of shots, or a shot that cannot be aligned.
    """
    spec = xpl_spec(config)
    if spec is None:
        raise ValueError("this model was trained on RGB images only; it takes no XPL images (drop --xpl)")
    if spec["encoding"] == "raw" and spec.get("n_shots") and len(xpl) != spec["n_shots"]:
        raise ValueError(f"this model was trained with {spec['n_shots']} XPL images, got {len(xpl)}")
    return align_and_encode(ppl, xpl, encoding=spec["encoding"], n_shots=spec.get("n_shots"), features=features,
                            model=model, progress=progress)
