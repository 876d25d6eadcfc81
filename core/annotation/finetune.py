"""Short fine-tuning of a segmentation model on new annotations.

A copy of the model is trained for a few iterations on class-balanced,
augmented patches cut from the annotated images (the same sampler and
augmentation as full training); pixels coded 255 are ignored, so partial
annotations are fine. Batch-normalisation statistics stay frozen, which keeps
small batches from disturbing them. The given model is left untouched and
nothing is written to disk.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..io import rescale_pair
from ..minerals import IGNORE
from ..segmentation.assemblage import widen_assemblage
from ..segmentation.model import SegmentationModel, fuse_batchnorm
from ..segmentation.train import PatchStream, TrainConfig, set_train_mode

__all__ = ["finetune"]

ProgressFn = Optional[Callable[[float, str], None]]


def finetune(
    model: SegmentationModel,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    iterations: int = 30,
    batch_size: int = 4,
    patch: int = 256,
    lr: float = 1e-4,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: ProgressFn = None,
    extras: Sequence[np.ndarray] | None = None,
) -> SegmentationModel:
    """Fine-tune a copy of ``model`` on annotated images.

    Parameters
    ----------
    model : SegmentationModel
        The starting model (not modified).
    images : sequence of (M, N, 3) uint8 ndarray
        Full-resolution RGB images.
    masks : sequence of (M, N) uint8 ndarray
        LumenStone codes, 255 = not annotated. Codes the model does not know
        are ignored.
    iterations : int
        Optimiser steps.
    batch_size : int
        Patches per step.
    patch : int
        Patch side at the model's working scale.
    lr : float
        Adam learning rate.
    seed : int
    max_seconds : float, optional
        Stop early after this long.
    progress : callable(fraction, message), optional
    extras : sequence of (M, N, C) uint8 ndarray, optional
        Extra input channels per image (the encoded, aligned XPL series of
        :func:`core.registration.extra_from_aligned`), for models trained with
        them; ``3 + C`` must equal the model's input channels.

    Returns
    -------
    SegmentationModel
        A new model on the same device, with ``config["finetune"]`` recording
        the run.
    """
    if len(images) == 0 or len(images) != len(masks):
        raise ValueError("give one mask per image, and at least one image")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if extras is None and model.in_channels != 3:
        raise ValueError("this model expects extra XPL channels: give the aligned XPL series of every image")
    if extras is not None and len(extras) != len(images):
        raise ValueError("give one set of XPL channels per image")
    classes = model.classes
    lut = np.full(256, IGNORE, np.uint8)
    for i, c in enumerate(classes):
        lut[c] = i
    s = model.scale
    work_imgs, work_masks = [], []
    for k, (img, msk) in enumerate(zip(images, masks)):
        img = np.asarray(img)
        msk = np.asarray(msk, np.uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected (M, N, 3) uint8 RGB images, got {img.shape} {img.dtype}")
        if msk.shape != img.shape[:2]:
            raise ValueError(f"a mask is {msk.shape} but its image is {img.shape[:2]}; they must match")
        if extras is not None:
            ex = np.asarray(extras[k])
            if ex.ndim == 2:
                ex = ex[..., None]
            if ex.shape[:2] != img.shape[:2] or ex.dtype != np.uint8:
                raise ValueError(f"XPL channels {ex.shape} {ex.dtype} do not match the image {img.shape[:2]}")
            img = np.concatenate([img, ex], axis=2)
        if img.shape[2] != model.in_channels:
            raise ValueError(f"the model takes {model.in_channels} input channels, these images give {img.shape[2]}")
        img, msk = rescale_pair(img, msk, s)
        idx = lut[msk]
        if (idx != IGNORE).any():
            work_imgs.append(img)
            work_masks.append(idx)
    if not work_imgs:
        raise ValueError("the annotations hold no pixel of a mineral this model knows; label some pixels first")
    patch = int(min(patch, *[min(m.shape) for m in work_masks]))
    patch = max(32, patch - patch % 32)
    cfg = TrainConfig(patch=patch, batch_size=batch_size, iterations=iterations, lr=lr, workers=0, seed=seed)
    norm = model.config["normalization"]
    stream = PatchStream(work_imgs, work_masks, len(classes), cfg, norm["mean"], norm["std"], seed=seed)

    net = copy.deepcopy(model.net).to(model.device)
    set_train_mode(net, freeze_bn=True)  # a few patches per step are too few for batch-norm statistics
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    crit = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    torch.manual_seed(seed)
    it_stream = iter(stream)
    losses: list[float] = []
    t0 = time.time()
    done = 0
    for it in range(iterations):
        xs, ys = zip(*(next(it_stream) for _ in range(batch_size)))
        x = torch.stack(xs).float().to(model.device)
        y = torch.stack(ys).to(model.device)
        if not (y != IGNORE).any():
            continue
        loss = crit(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
        done = it + 1
        if progress:
            progress(done / iterations, f"iteration {done}/{iterations}, loss {np.mean(losses[-5:]):.3f}")
        if max_seconds is not None and time.time() - t0 > max_seconds:
            break
    net.eval()
    config = copy.deepcopy(model.config)
    config["name"] = f"{model.name}-finetuned"
    if "assemblage" in config:
        # the user's labels may show minerals together that the training photographs never did
        config["assemblage"] = widen_assemblage(config["assemblage"], masks, classes)
    # the parent's held-out scores do not describe the new weights: kept as the parent's, not as this model's
    parent_scores = {k: config.pop(k) for k in ("validation", "validation_full_resolution") if k in config}
    config["finetune"] = {"from": model.name, "iterations": done, "batch_size": batch_size, "patch": patch,
                          "lr": lr, "images": len(work_imgs), "loss_first": losses[0] if losses else None,
                          "loss_last": float(np.mean(losses[-5:])) if losses else None,
                          "seconds": round(time.time() - t0, 1), "parent_validation": parent_scores}
    return SegmentationModel(net=net, config=config, device=model.device,
                             fused=fuse_batchnorm(net, int(config["in_channels"])))
