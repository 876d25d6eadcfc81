"""Annotation: scribbles spread by multi-scale superpixels, model uncertainty, fine-tuning on new labels."""
from .propagate import DEFAULT_METHOD, METHODS, Propagation, check_scribbles, propagate
from .scribbles import strokes_to_mask, synthetic_scribbles
from .superpixels import Superpixels, clear_cache, compute_superpixels

__all__ = [
    "METHODS", "DEFAULT_METHOD", "Propagation", "propagate", "check_scribbles",
    "strokes_to_mask", "synthetic_scribbles",
    "Superpixels", "compute_superpixels", "clear_cache",
]
