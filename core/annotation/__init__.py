"""Annotation: scribbles spread by multi-scale superpixels, model uncertainty, fine-tuning on new labels."""
from .propagate import DEFAULT_METHOD, METHODS, Propagation, check_scribbles, propagate
from .scribbles import strokes_to_mask, synthetic_scribbles
from .superpixels import Superpixels, clear_cache, compute_superpixels
from .uncertainty import DEFAULT_SCORE, SCORES, Regions, select_regions, to_uint8, uncertainty_map


# fine-tuning (needs torch) lives in core.annotation.finetune.finetune
__all__ = [
    "METHODS", "DEFAULT_METHOD", "Propagation", "propagate", "check_scribbles",
    "strokes_to_mask", "synthetic_scribbles",
    "Superpixels", "compute_superpixels", "clear_cache",
    "SCORES", "DEFAULT_SCORE", "Regions", "select_regions", "uncertainty_map", "to_uint8",
]
