"""Colour calibration: colour correction from partial annotation, and flat-field correction."""
from .methods import (DEFAULT_METHOD, DRIFT_WARNING, LINEARISATIONS, METHODS, ClassMeans, Correction, apply_correction,
                      class_means, colour_drift, delta_e2000, fit_correction, from_linear, linear_to_lab, mean_delta_e,
                      to_float, to_linear)

__all__ = [
    "DEFAULT_METHOD", "DRIFT_WARNING", "LINEARISATIONS", "METHODS", "ClassMeans", "Correction", "apply_correction",
    "class_means", "colour_drift", "delta_e2000", "fit_correction", "from_linear", "linear_to_lab", "mean_delta_e",
    "to_float", "to_linear",
]
