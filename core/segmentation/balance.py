"""Automatic white balance for photographs whose colours are far from the training images'.

After a first pass, the predicted minerals' mean colours are compared with the model's reference colours
(area-weighted CIEDE2000, as the Segment page's colour check). Above the threshold (the colour check's warning
level) the image is white-balanced from its own confidently predicted pixels, i.e. the marks of colour
calibration are replaced by the model's surest answers, and segmented again. Below it nothing changes, so
photographs taken like the training set are segmented exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..calibration.methods import DRIFT_WARNING
from ..minerals import IGNORE

__all__ = ["ColourBalance", "DEFAULT_BALANCE", "auto_balance", "balance_settings"]

DEFAULT_BALANCE = {"threshold": DRIFT_WARNING, "min_confidence": 0.8}


@dataclass
class ColourBalance:
    """What the automatic white balance found and did.

    Attributes
    ----------
    drift : float
        Area-weighted CIEDE2000 between the first pass's mineral colours and the reference colours.
    threshold : float
        Drift above which the image is balanced.
    applied : bool
        Whether the returned prediction comes from the balanced image.
    gains : (3,) ndarray or None
        Linear-light R, G, B gains of the balance, when fitted.
    drift_after : float
        The same measure after balancing (nan when not applied).
    note : str
        Why nothing was done, or empty.
    """

    drift: float
    threshold: float
    applied: bool = False
    gains: np.ndarray | None = None
    drift_after: float = float("nan")
    note: str = ""

    def as_dict(self) -> dict:
        return {"drift": round(self.drift, 3) if np.isfinite(self.drift) else None, "threshold": self.threshold,
                "applied": self.applied,
                "gains": None if self.gains is None else [round(float(g), 4) for g in self.gains],
                "drift_after": None if not np.isfinite(self.drift_after) else round(self.drift_after, 3),
                "note": self.note}


def balance_settings(config: dict) -> dict | None:
    """The automatic white-balance settings of a model config (``"auto_white_balance"``), or None when off."""
    b = config.get("auto_white_balance")
    if not b or not config.get("reference_colors"):
        return None
    s = {**DEFAULT_BALANCE, **(b if isinstance(b, dict) else {})}
    if not 0 < float(s["min_confidence"]) < 1 or float(s["threshold"]) < 0:
        raise ValueError(f"auto_white_balance needs 0 < min_confidence < 1 and threshold >= 0, got {b}")
    return {"threshold": float(s["threshold"]), "min_confidence": float(s["min_confidence"])}


def _labels(probs: np.ndarray, classes: list[int]) -> np.ndarray:
    return np.asarray(classes, np.uint8)[np.argmax(probs, axis=0)]


def auto_balance(arr: np.ndarray, probs: np.ndarray, classes: list[int], reference: dict[int, np.ndarray],
                 run: Callable[[np.ndarray], np.ndarray], *, threshold: float = DRIFT_WARNING,
                 min_confidence: float = 0.8) -> tuple[np.ndarray, np.ndarray, ColourBalance]:
    """Check the colours of a first pass and, when they are off, balance the image and run again.

    Parameters
    ----------
    arr : (h, w, C) uint8 ndarray
        The network's input at the working scale (RGB first).
    probs : (K, h, w) float32 ndarray
        The first pass's probabilities.
    classes : list of int
        Class code of each probability channel.
    reference : dict of int to (3,) array
        The model's reference colours (sRGB 0-255).
    run : callable
        Maps an input like ``arr`` to probabilities like ``probs`` (the second pass).

    Returns
    -------
    probs, arr, ColourBalance
        The probabilities and input to use (the balanced ones when applied), and the report.
    """
    from ..calibration.methods import apply_correction, class_means, colour_drift, fit_correction

    rgb = np.ascontiguousarray(arr[..., :3])
    labels = _labels(probs, classes)
    drift, _ = colour_drift(rgb, labels, reference)
    report = ColourBalance(drift=float(drift), threshold=float(threshold))
    if not np.isfinite(drift) or drift <= threshold:
        return probs, arr, report
    sure = np.where(probs.max(axis=0) > min_confidence, labels, np.uint8(IGNORE)).astype(np.uint8)
    try:
        corr = fit_correction(class_means(rgb, sure), reference, method="white-balance")
    except ValueError as e:
        report.note = f"not balanced: {e}"
        return probs, arr, report
    balanced = arr.copy()
    balanced[..., :3] = apply_correction(rgb, corr)
    probs2 = run(balanced)
    report.applied = True
    report.gains = np.diag(corr.matrix[:3]).copy()
    report.drift_after = float(colour_drift(balanced[..., :3], _labels(probs2, classes), reference)[0])
    return probs2, balanced, report
