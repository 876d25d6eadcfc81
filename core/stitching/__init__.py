"""Stitching overlapping microscope frames into one panorama at the frames' pixel size.

Pipeline: optional flat-field and lens correction (:mod:`.correction`), pairwise
registration of overlapping tiles only (:data:`MATCHERS`), global least-squares
adjustment of all tile transforms (:data:`MODELS`), exposure and vignetting
compensation, seams (:data:`SEAMS`) and blending (:data:`BLENDERS`), rendered
band by band so that memory stays bounded.
"""
from .adjust import MODELS, Alignment, UnmatchedTiles, adjust
from .compose import BLENDERS, SEAMS, Photometric, estimate_photometric, render
from .correction import LensModel, apply_flat_field, flat_field_gain, read_lens, undistort
from .matchers import MATCHERS, PairMatch, TileStack, make_matcher
from .phase import phase_correlate
from .pipeline import STAGES, StitchResult, candidate_pairs, parse_grid, register, stitch

__all__ = [
    "MATCHERS", "MODELS", "SEAMS", "BLENDERS", "STAGES",
    "Alignment", "PairMatch", "Photometric", "StitchResult", "TileStack", "LensModel", "UnmatchedTiles",
    "adjust", "apply_flat_field", "candidate_pairs", "estimate_photometric", "flat_field_gain",
    "make_matcher", "parse_grid", "phase_correlate", "read_lens", "register", "render", "stitch", "undistort",
]
