"""Segmentation: model factory, class-balanced training, tiled inference, metrics."""
from .infer import Prediction, predict
from .metrics import ConfusionMatrix, Scores, confusion
from .model import (ARCHITECTURES, DEFAULT_MODEL_DIR, SegmentationModel, create_model, load_model,
                    load_model_archive, resolve_device, save_model)
from .sampler import ClassBalancedSampler

__all__ = [
    "ARCHITECTURES", "DEFAULT_MODEL_DIR", "SegmentationModel", "create_model", "load_model", "load_model_archive", "save_model",
    "resolve_device", "Prediction", "predict", "ConfusionMatrix", "Scores", "confusion", "ClassBalancedSampler",
]
