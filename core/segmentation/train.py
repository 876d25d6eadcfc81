"""Training on LumenStone-layout datasets.

Cross-entropy (255 ignored), class-balanced patches, rotation / flip / scale /
brightness / colour augmentation, Adam with reduce-on-plateau on the
validation mIoU, validation on whole held-out images, best checkpoint kept,
resumable, CPU or CUDA (mixed precision on CUDA). An exponential moving
average of the weights (and batch-norm statistics) is what is validated and
saved; it smooths the step-to-step noise of a short schedule.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..io import DatasetItem, list_dataset, read_image, read_mask, rescale_pair
from ..minerals import IGNORE
from .assemblage import assemblage_from_masks
from .balance import DEFAULT_BALANCE, chromaticity_statistics
from .head import HeadedNet
from .infer import predict_scaled
from .refine import DEFAULT_REFINE
from .metrics import ConfusionMatrix
from .model import SegmentationModel, create_model, load_model, resolve_device, save_model
from .sampler import ClassBalancedSampler

__all__ = ["TrainConfig", "train", "load_split", "LoadedImage", "augment_patch", "PatchStream", "set_train_mode"]


@dataclass
class TrainConfig:
    arch: str = "pspnet"
    encoder: str = "resnet18"
    scale: float = 0.5
    patch: int = 256
    batch_size: int = 16
    iterations: int = 3000
    val_every: int = 200
    lr: float = 1e-3
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    workers: int = 1
    seed: int = 0
    device: str = "auto"
    max_minutes: float = 0.0  # 0 = no limit
    val_fraction: float = 0.12
    tile: int = 512
    rotate: bool = True
    scale_jitter: float = 0.15
    brightness: float = 0.15
    color: float = 0.06
    classes: list[int] | None = None
    ema_decay: float = 0.999  # exponential moving average of the weights (0 = off)
    xpl: str | None = None  # XPL encoding ("compact" or "raw") to train with crossed-polar channels; None = RGB
    # keep the batch-normalisation statistics of the starting weights (fine-tuning with small batches, whose
    # statistics are too noisy to replace those of a model trained with large ones)
    freeze_bn: bool = False


@dataclass
class LoadedImage:
    stem: str
    image: np.ndarray  # (m, n, C) uint8 at the working scale
    mask: np.ndarray  # (m, n) uint8 codes at the working scale


def xpl_folder(item: DatasetItem) -> Path:
    """Where a dataset image's crossed-polar shots live: ``<dataset>/xpl/<split>/<stem>/``."""
    parts = item.image.parts
    k = len(parts) - 1 - parts[::-1].index("imgs") if "imgs" in parts else len(parts) - 2
    return Path(*parts[:k], "xpl", *parts[k + 1:-1], item.stem)


def _xpl_channels(item: DatasetItem, img: np.ndarray, encoding: str) -> np.ndarray:
    """Align an image's XPL shots to it and encode them (as ``segment --xpl`` does at inference)."""
    from ..io import IMAGE_SUFFIXES
    from ..registration import align_and_encode

    folder = xpl_folder(item)
    shots = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if len(shots) < 2:
        raise ValueError(f"{item.image.name}: training with XPL channels needs at least 2 crossed-polar shots in "
                         f"{folder} (found {len(shots)})")
    try:
        extra, _ = align_and_encode(img, [read_image(f) for f in shots], encoding=encoding,
                                    names=[f.name for f in shots])
    except ValueError as e:
        raise ValueError(f"{item.image.name}: {e}") from None
    return extra


def _load(item: DatasetItem, scale: float, xpl: str | None = None) -> LoadedImage:
    img = read_image(item.image)
    mask = read_mask(item.mask, shape=img.shape[:2])
    if xpl:
        img = np.concatenate([img, _xpl_channels(item, img, xpl)], axis=2)
    img, mask = rescale_pair(img, mask, scale)
    return LoadedImage(item.stem, img, mask)


def load_split(data: str | Path, val: str | Path | None, val_fraction: float, scale: float,
               progress: Callable[[str], None] | None = None, xpl: str | None = None):
    """Training and validation images at the working scale.

    Without ``val``, ``val_fraction`` of the images, evenly spaced in name order, are held out.
    With ``xpl`` (an encoding name) every image gets its aligned, encoded XPL series as extra channels.
    """
    items = list_dataset(data)
    if val is not None:
        val_items = list_dataset(val)
        train_items = items
    else:
        if len(items) < 2:
            raise ValueError("need at least 2 images to hold one out for validation, or give --val")
        n_val = min(len(items) - 1, max(1, round(len(items) * val_fraction)))
        pick = {int((j + 0.5) * len(items) / n_val) for j in range(n_val)}
        val_items = [it for i, it in enumerate(items) if i in pick]
        train_items = [it for i, it in enumerate(items) if i not in pick]
    out = []
    for group in (train_items, val_items):
        loaded = []
        for it in group:
            loaded.append(_load(it, scale, xpl))
            if progress:
                progress(f"loaded {it.stem}")
        out.append(loaded)
    return out[0], out[1]


def augment_patch(image, mask, cy, cx, patch, rng, *, rotate=True, scale_jitter=0.15, brightness=0.15, color=0.06):
    """Cut one augmented patch centred at (cy, cx) in a single warp."""
    angle = float(rng.uniform(0, 360)) if rotate else 0.0
    s = float(np.exp(rng.uniform(-scale_jitter, scale_jitter))) if scale_jitter else 1.0
    M = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, s)
    M[0, 2] += patch / 2 - cx
    M[1, 2] += patch / 2 - cy
    chans = image.shape[2]
    if chans <= 4:
        img = cv2.warpAffine(image, M, (patch, patch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        img = img.reshape(patch, patch, chans)
    else:
        img = np.concatenate([cv2.warpAffine(np.ascontiguousarray(image[..., i:i + 3]), M, (patch, patch),
                                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101).reshape(patch, patch, -1)
                              for i in range(0, chans, 3)], axis=2)
    msk = cv2.warpAffine(mask, M, (patch, patch), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
    if rng.random() < 0.5:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if rng.random() < 0.5:
        img, msk = img[::-1], msk[::-1]
    img = img.astype(np.float32)
    gain = 1.0 + rng.uniform(-brightness, brightness)
    ch = 1.0 + rng.uniform(-color, color, size=3)
    img[..., :3] *= gain * ch
    return np.clip(img, 0, 255), np.ascontiguousarray(msk)


class PatchStream(IterableDataset):
    """Endless stream of class-balanced, augmented patches.

    Every worker seeds its own generator from PyTorch's per-worker seed, so
    workers never repeat each other's random streams.
    """

    def __init__(self, images, index_masks, n_classes, cfg: TrainConfig, mean, std, seed: int):
        self.images = images
        self.masks = index_masks
        self.n_classes = n_classes
        self.cfg = cfg
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.seed = seed
        self.sampler: ClassBalancedSampler | None = None

    def _make_sampler(self):
        info = get_worker_info()
        seed = info.seed if info is not None else self.seed
        rng = np.random.default_rng(seed % (2**63))
        return ClassBalancedSampler(self.masks, self.n_classes, self.cfg.patch, rng=rng)

    def __iter__(self):
        sampler = self._make_sampler()
        self.sampler = sampler
        cfg = self.cfg
        while True:
            req = sampler.next()
            img, msk = augment_patch(self.images[req.image], self.masks[req.image], req.cy, req.cx, cfg.patch,
                                     sampler.rng, rotate=cfg.rotate, scale_jitter=cfg.scale_jitter,
                                     brightness=cfg.brightness, color=cfg.color)
            sampler.update(msk)
            x = (img / 255.0 - self.mean) / self.std
            yield torch.from_numpy(x.transpose(2, 0, 1).copy()), torch.from_numpy(msk.astype(np.int64))


def _index_lut(classes: list[int]) -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for i, c in enumerate(classes):
        lut[c] = i
    return lut


def _validate(model: SegmentationModel, val: list[LoadedImage], refine: bool | str | None = None) -> dict:
    """Scores of ``model`` on whole validation images at the working scale (``refine`` as in ``predict_scaled``)."""
    cm = ConfusionMatrix()
    modes = [(m, m.training) for m in model.net.modules()]
    model.net.eval()
    lut = np.asarray(model.classes, np.uint8)
    for v in val:
        probs = predict_scaled(model, v.image, refine=refine)
        cm.update(v.mask, lut[np.argmax(probs, 0)])
    for m, training in modes:  # back as it was (frozen batch normalisation stays frozen)
        m.train(training)
    return cm.scores().as_dict()


def set_train_mode(net: torch.nn.Module, freeze_bn: bool) -> None:
    """``net`` in training mode; with ``freeze_bn`` its batch normalisation keeps using (and keeping) its statistics."""
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def train(
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    *,
    val: str | Path | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Train a model and write the best checkpoint to ``out`` (a model folder).

    ``init`` names a model folder whose weights the new model starts from (same architecture, encoder and input
    channels; its classes are kept unless ``cfg.classes`` names them); ``resume`` continues ``out``'s own
    checkpoint and takes precedence.

    Returns the final config written to ``out/config.json``.
    """
    from tqdm import tqdm

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the starting model is checked before the images are loaded, and before seeding (building it draws numbers)
    init_model = load_model(init, device="cpu") if init is not None else None
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    train_set, val_set = load_split(data, val, cfg.val_fraction, cfg.scale, xpl=cfg.xpl)
    channels = {t.image.shape[2] for t in train_set + val_set}
    if len(channels) != 1:
        raise ValueError(f"the images give different numbers of input channels {sorted(channels)}: with "
                         "--xpl raw every image needs the same number of XPL shots")
    in_channels = channels.pop()
    if not val_set:
        raise ValueError("no validation images: give --val or a dataset with at least 2 images")
    log(f"train images: {len(train_set)}, validation images: {len(val_set)} ({', '.join(v.stem for v in val_set)})")

    present = sorted(set(np.unique(np.concatenate([np.unique(t.mask) for t in train_set])).tolist()) - {IGNORE})
    if cfg.classes:
        classes = sorted(cfg.classes)
    elif init_model is not None:
        # a lab's own images need not show every mineral the starting model knows: keep its classes
        classes = sorted(init_model.classes)
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise ValueError(f"cannot start from {init}: the masks hold class codes {unknown} that it does not know "
                             f"(it knows {classes}); start without --init")
    else:
        classes = present
    lut = _index_lut(classes)
    index_masks = [lut[t.mask] for t in train_set]
    images = [t.image for t in train_set]

    # normalisation and per-class reference colours from the training images
    pix = np.concatenate([im.reshape(-1, in_channels)[::97] for im in images]).astype(np.float64) / 255.0
    mean, std = pix.mean(0), pix.std(0) + 1e-6
    ref = {}
    counts = {}
    for im, m in zip(images, [t.mask for t in train_set]):
        for c in np.unique(m):
            if c == IGNORE:
                continue
            sel = m == c
            ref.setdefault(int(c), np.zeros(3))
            ref[int(c)] += im[..., :3][sel].astype(np.float64).sum(0)
            counts[int(c)] = counts.get(int(c), 0) + int(sel.sum())
    reference_colors = {str(c): (ref[c] / counts[c]).round(2).tolist() for c in sorted(ref)}
    pixel_share = {str(c): counts[c] / sum(counts.values()) for c in sorted(counts)}

    net = create_model(cfg.arch, cfg.encoder, classes=len(classes), in_channels=in_channels)
    if init_model is not None and not (resume and (out / "checkpoint.pt").exists()):
        _load_init(net, init_model, init, cfg, in_channels, classes, log)
    net = net.to(device).to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    config = {
        "name": out.name,
        "architecture": cfg.arch,
        "encoder": cfg.encoder,
        "in_channels": in_channels,
        "classes": classes,
        "scale": cfg.scale,
        "tile": cfg.tile,
        "overlap": cfg.tile // 8,
        "normalization": {"mean": mean.round(5).tolist(), "std": std.round(5).tolist(),
                          "range": "0-1 sRGB" + (" + XPL encoding channels, 0-255 scaled to 0-1" if cfg.xpl else "")},
        "reference_colors": reference_colors,
        "bright_chromaticity": chromaticity_statistics(np.ascontiguousarray(im[..., :3]) for im in images),
        "refine": dict(DEFAULT_REFINE),
        "auto_white_balance": dict(DEFAULT_BALANCE),
        "assemblage": assemblage_from_masks((t.mask for t in train_set), classes),
        "training": {
            "data": str(Path(data).name),
            "train_images": [t.stem for t in train_set],
            "val_images": [v.stem for v in val_set],
            "pixel_share": pixel_share,
            "config": asdict(cfg),
        },
    }
    if cfg.xpl:
        config["xpl"] = {"encoding": cfg.xpl}
        if cfg.xpl == "raw":
            config["xpl"]["n_shots"] = (in_channels - 3) // 3
    start_it, best = 0, -1.0
    history: list[dict] = []
    ckpt_path = out / "checkpoint.pt"
    ema = None
    if cfg.ema_decay > 0:
        ema = copy.deepcopy(net)
        for p in ema.parameters():
            p.requires_grad_(False)
    ema_steps = 0
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        first = next(iter(ck["net"].values()))
        if first.ndim == 4 and first.shape[1] != in_channels:
            raise ValueError(f"{ckpt_path} was trained with {first.shape[1]} input channels, these images give "
                             f"{in_channels}; start a new model folder or match --xpl")
        net.load_state_dict(ck["net"])
        if ema is not None:
            ema.load_state_dict(ck.get("ema", ck["net"]))
            ema_steps = int(ck.get("ema_steps", 0))
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start_it, best = int(ck["iteration"]), float(ck["best"])
        history = json.loads(ck.get("history", "[]"))
        log(f"resumed at iteration {start_it}, best mIoU {best:.4f}")

    stream = PatchStream(images, index_masks, len(classes), cfg, mean, std, seed=cfg.seed + start_it)
    loader = DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers,
                        persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    model = SegmentationModel(net=ema if ema is not None else net, config=config, device=device)
    # state_dict() tensors share storage with the modules: pair them once for the per-step update
    ema_pairs = list(zip(ema.state_dict().values(), net.state_dict().values())) if ema is not None else []
    crit = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    set_train_mode(net, cfg.freeze_bn)
    it = start_it
    running = []
    bar = tqdm(total=cfg.iterations, initial=start_it, disable=not progress, desc="train", dynamic_ncols=True)
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    batch_counts = np.zeros(256, np.int64)
    for x, y in loader:
        if it >= cfg.iterations or time.time() > deadline:
            break
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        batch_counts += np.bincount(y.cpu().numpy().ravel().clip(0, 255), minlength=256)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = crit(net(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if ema is not None:
            ema_steps += 1
            _ema_update(ema_pairs, min(cfg.ema_decay, (1 + ema_steps) / (10 + ema_steps)))
        running.append(loss.item())
        it += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if it % cfg.val_every == 0 or it >= cfg.iterations or time.time() > deadline:
            best = _checkpoint(model, net, ema_steps, val_set, sched, opt, it, best, history, running,
                               batch_counts, classes, t0, out, ckpt_path, log)
    if not history or history[-1]["iteration"] != it:
        best = _checkpoint(model, net, ema_steps, val_set, sched, opt, it, best, history, running,
                           batch_counts, classes, t0, out, ckpt_path, log)
    bar.close()
    return json.loads((out / "config.json").read_text())


def _load_init(net: torch.nn.Module, src: SegmentationModel, init: str | Path, cfg: TrainConfig, in_channels: int,
               classes: list[int], log: Callable[[str], None]) -> None:
    """Copy the weights of ``src`` (the model folder ``init``) into ``net``, refusing a model of another shape."""
    mine = {"architecture": cfg.arch, "encoder": cfg.encoder, "input channels": in_channels, "classes": classes}
    theirs = {"architecture": src.config["architecture"], "encoder": src.config["encoder"],
              "input channels": src.in_channels, "classes": src.classes}
    diff = [f"{k} {theirs[k]} (this run: {mine[k]})" for k in mine if mine[k] != theirs[k]]
    if diff:
        raise ValueError(f"cannot start from {init}: its " + "; ".join(diff))
    if isinstance(src.net, HeadedNet):
        # training changes the network under the head, which would no longer fit it: start from the network alone
        net.load_state_dict(src.net.base.state_dict())
        log(f"starting from the weights of {init} (its edge head is left out)")
    else:
        net.load_state_dict(src.net.state_dict())
        log(f"starting from the weights of {init}")


@torch.no_grad()
def _ema_update(pairs: list[tuple[torch.Tensor, torch.Tensor]], decay: float) -> None:
    """Move each averaged tensor towards its trained counterpart (integer buffers are copied)."""
    for e, p in pairs:
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        else:
            e.copy_(p)


def _checkpoint(model, net, ema_steps, val_set, sched, opt, it, best, history, running, batch_counts, classes,
                t0, out, ckpt_path, log):
    """Validate ``model`` (the averaged weights when on), keep it if best, save the resumable state."""
    # checkpoints are compared with the guided filter, which takes a fraction of a second per image where the
    # CRF of the shipped config takes seconds on a CPU; the history stays comparable with earlier runs
    scores = _validate(model, val_set, refine="guided")
    sched.step(scores["miou"])
    labelled = batch_counts[: len(classes)].astype(np.float64)
    sampled_share = {str(c): float(labelled[i] / max(labelled.sum(), 1)) for i, c in enumerate(classes)}
    entry = {"iteration": it, "loss": float(np.mean(running[-50:])) if running else None,
             "val_miou": scores["miou"], "val_pixel_accuracy": scores["pixel_accuracy"],
             "lr": opt.param_groups[0]["lr"], "minutes": (time.time() - t0) / 60}
    history.append(entry)
    log(json.dumps(entry))
    cfg = model.config
    cfg["training"]["history"] = history
    cfg["training"]["sampled_pixel_share"] = sampled_share
    if scores["miou"] > best:
        best = scores["miou"]
        cfg["validation"] = {**scores, "iteration": it, "scale": "working scale", "images": cfg["training"]["val_images"]}
        save_model(out, model.net, cfg)
        log(f"new best mIoU {best:.4f} at iteration {it}")
    else:
        (out / "config.json").write_text(json.dumps({**json.loads((out / "config.json").read_text()),
                                                       "training": cfg["training"]}, indent=2))
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "iteration": it, "best": best, "history": json.dumps(history)}
    if model.net is not net:
        state.update(ema=model.net.state_dict(), ema_steps=ema_steps)
    torch.save(state, ckpt_path)
    return best
