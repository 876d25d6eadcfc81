"""Registration of crossed-polar (XPL) shots to the plane-polarised (PPL) image, and anisotropy.

- :func:`register` / :func:`register_series`: structure-image keypoints,
  RANSAC similarity or affine fit, full-resolution refinement; failures are
  reported (``Registration.ok``), never silently warped.
- :func:`warp_to_reference`: resample a shot into the PPL frame.
- :func:`anisotropy_maps`: range, standard deviation and angle of maximum
  brightness of an aligned series; :func:`encode_xpl`: extra network channels;
  :func:`xpl_extra`: align + encode for a model trained with XPL (``segment --xpl``).
- :func:`simulate_xpl_series`: *simulated* XPL series from a PPL image and its
  mask (for training and benchmarks; always labelled as simulated).
"""
from .align import (FEATURES, MODELS, Prepared, Registration, prepare, register, register_series,
                    structure_image, transform_error, warp_to_reference)
from .anisotropy import ENCODINGS, AnisotropyMaps, anisotropy_maps, colour_angle, encode_xpl
from .pipeline import align_and_encode, extra_from_aligned, xpl_extra, xpl_spec
from .simulate import SIMULATED_LABEL, SimulatedSeries, simulate_xpl_series, stage_transform

__all__ = [
    "FEATURES", "MODELS", "Prepared", "Registration", "prepare", "register", "register_series",
    "structure_image", "transform_error", "warp_to_reference",
    "ENCODINGS", "AnisotropyMaps", "anisotropy_maps", "colour_angle", "encode_xpl",
    "xpl_spec", "xpl_extra", "extra_from_aligned", "align_and_encode",
    "SIMULATED_LABEL", "SimulatedSeries", "simulate_xpl_series", "stage_transform",
]
