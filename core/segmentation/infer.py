"""Sliding-window inference with smooth blending of softmax probabilities.

The image is resized to the model's working scale, cut into overlapping tiles
that are run in batches, and each tile's softmax is added with a weight that
ramps down towards the tile edges, so seams vanish. Probabilities stay at the
working scale (float16); labels are produced at full resolution strip by strip,
so a 12000x8000 panorama needs well under 4 GB.

Two steps follow the network when the model's config asks for them: the probabilities' edges are moved onto
the photograph's colour edges (``"refine"``, :mod:`.refine`), and a photograph whose mineral colours are far
from the training images' is white-balanced from its surest pixels and segmented again
(``"auto_white_balance"``, :mod:`.balance`). Last, minerals never seen together in one training photograph are
not predicted together, or only the minerals a user names are (``"assemblage"``, :mod:`.assemblage`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby
from typing import Callable, Iterable, Optional

import cv2
import numpy as np
import torch

from .assemblage import Assemblage, assemblage_settings, choose_minerals, restrict, user_minerals
from .balance import ColourBalance, _labels, auto_balance, balance_settings
from .halfprec import assign, to_float16
from .model import SegmentationModel
from .refine import refine as refine_probs, resolve_refine

__all__ = ["Prediction", "predict", "prepare_input"]

ProgressFn = Optional[Callable[[float, str], None]]


@dataclass
class Prediction:
    """Result of :func:`predict`.

    Attributes
    ----------
    labels : (M, N) uint8 ndarray
        LumenStone codes at the input's full resolution.
    probs : (K, m, n) float16 ndarray
        Softmax probabilities at the working scale, channel k for ``classes[k]``.
    classes : list of int
        Class code of each probability channel.
    scale : float
        Working scale (``m ~ M * scale``).
    colour : ColourBalance or None
        The colour check and automatic white balance, for models that use it.
    assemblage : Assemblage or None
        The minerals kept (by the training assemblages or the user's choice), for models that use it.
    """

    labels: np.ndarray
    probs: np.ndarray
    classes: list[int]
    scale: float
    colour: ColourBalance | None = None
    assemblage: Assemblage | None = None


def _ramp(n: int, overlap: int) -> np.ndarray:
    if overlap <= 0:
        return np.ones(n, np.float32)
    i = np.arange(n, dtype=np.float32)
    r = np.minimum(np.minimum((i + 0.5) / overlap, (n - i - 0.5) / overlap), 1.0)
    return np.maximum(r, 1e-3).astype(np.float32)


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    s = list(range(0, length - tile, step))
    s.append(length - tile)
    return s


def prepare_input(model: SegmentationModel, image: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """Resize to the working scale; returns (m, n, C) uint8 (RGB + extra channels)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (M, N, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    arr = image
    if extra is not None:
        if extra.shape[:2] != image.shape[:2]:
            raise ValueError("extra channels must match the image size")
        arr = np.concatenate([image, extra.reshape(*extra.shape[:2], -1).astype(np.uint8)], axis=2)
    if arr.shape[2] != model.in_channels:
        raise ValueError(
            f"model {model.name} expects {model.in_channels} input channels, got {arr.shape[2]}"
            + (" (give the aligned XPL images)" if model.in_channels > 3 else "")
        )
    s = model.scale
    if s != 1.0:
        h, w = arr.shape[:2]
        size = (max(1, round(w * s)), max(1, round(h * s)))
        if arr.shape[2] <= 4:
            arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
        else:
            arr = np.concatenate(
                [cv2.resize(np.ascontiguousarray(arr[..., i : i + 3]), size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
                 for i in range(0, arr.shape[2], 3)], axis=2)
    return np.ascontiguousarray(arr)


def _normalise(batch: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(batch).float().div_(255.0)
    x = (x - torch.from_numpy(mean)) / torch.from_numpy(std)
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def norm_stats(model: SegmentationModel) -> tuple[np.ndarray, np.ndarray]:
    n = model.config["normalization"]
    mean = np.asarray(n["mean"], np.float32)
    std = np.asarray(n["std"], np.float32)
    c = model.in_channels
    if mean.size != c:
        mean = np.resize(mean, c)
        std = np.resize(std, c)
    return mean, std


def tile_sizes(model: SegmentationModel, tile: int | Iterable[int] | None = None) -> list[int]:
    """The tile sizes of a prediction: ``tile`` or the config's ``"tile"`` (one size or a list of sizes)."""
    spec = tile if tile is not None else model.config.get("tile", 512)
    sizes = [int(spec)] if isinstance(spec, (int, float, str)) else [int(t) for t in spec]
    if not sizes or min(sizes) < 32:
        raise ValueError(f"tile sizes must be at least 32 px, got {spec!r}")
    return sizes


class _Blend:
    """A running weighted sum of tile softmaxes over one image at the working scale.

    Tiles are added in stages (:meth:`add`) and :meth:`probs` blends the ones added so far, so that a look at
    part of the tiles can decide whether the rest is worth running (the colour check of :func:`predict_balanced`
    looks at :meth:`check_jobs` first). Added in any order, all the tiles give the same blend as one pass.
    """

    def __init__(self, model: SegmentationModel, arr: np.ndarray, *, tile: int | Iterable[int] | None = None,
                 overlap: int | None = None, batch_size: int = 4, tta: bool | None = None):
        self.model = model
        self.tta = bool(model.config.get("tta", False)) if tta is None else tta
        self.batch_size = max(1, int(batch_size))
        sizes = tile_sizes(model, tile)
        overlap = overlap if overlap is not None else model.config.get("overlap")
        h, w = arr.shape[:2]
        self.h, self.w = h, w
        mult = 32
        shapes = [(min(t, int(math.ceil(h / mult) * mult)), min(t, int(math.ceil(w / mult) * mult))) for t in sizes]
        pad_h, pad_w = max(0, max(th for th, _ in shapes) - h), max(0, max(tw for _, tw in shapes) - w)
        if pad_h or pad_w:
            arr = cv2.copyMakeBorder(arr, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
            if arr.ndim == 2:
                arr = arr[..., None]
        self.arr = arr
        H, W = arr.shape[:2]
        # (tile height, tile width, overlap, y, x) of every tile of every tiling; sizes that an image smaller than
        # them clips to the same tile give one tiling, not the same one twice
        self.jobs: list[tuple[int, int, int, int, int]] = []
        self._tiling: list[int] = []  # which tiling each job belongs to
        seen: set[tuple[int, int, int]] = set()
        for t, (th, tw) in zip(sizes, shapes):
            ov = int(overlap) if overlap is not None else t // 8
            if (th, tw, ov) in seen:
                continue
            seen.add((th, tw, ov))
            ys, xs = _starts(H, th, max(1, th - ov)), _starts(W, tw, max(1, tw - ov))
            self.jobs += [(th, tw, ov, y, x) for y in ys for x in xs]
            self._tiling += [len(seen) - 1] * (len(ys) * len(xs))
        self.pending = list(range(len(self.jobs)))
        self.acc = np.zeros((len(model.classes), H, W), np.float32)
        self.wsum = np.zeros((H, W), np.float32)

    def check_jobs(self) -> list[int]:
        """The tiles of a first look: the first tiling, which covers the whole photograph once.

        (A look at part of the photograph is cheaper, but a white balance fitted from it follows what that part
        holds: on a06 of the held-out LumenStone images, a chessboard of the tiles gave pixel accuracy 0.907 or
        0.908 and a quarter of them 0.806, against 0.913 from the whole first tiling.)
        """
        return [k for k in self.pending if self._tiling[k] == 0]

    @torch.inference_mode()
    def add(self, which: Iterable[int] | None = None, progress: ProgressFn = None) -> None:
        """Run the tiles ``which`` (indices into :attr:`jobs`; default: all not yet run) into the sum."""
        which = set(self.pending if which is None else which) & set(self.pending)
        todo = [k for k in self.pending if k in which]
        self.pending = [k for k in self.pending if k not in which]
        model, total = self.model, len(self.jobs)
        done = total - len(self.pending) - len(todo)
        mean, std = norm_stats(model)
        dev = model.device
        use_amp = dev.type == "cuda"
        net = model.inference_net
        arr, acc, wsum = self.arr, self.acc, self.wsum
        with model.lock:
            for (th, tw, ov), group in groupby(todo, key=lambda k: self.jobs[k][:3]):
                group = [self.jobs[k][3:] for k in group]
                weight = np.outer(_ramp(th, min(ov, th // 2)), _ramp(tw, min(ov, tw // 2)))
                for b in range(0, len(group), self.batch_size):
                    chunk = group[b : b + self.batch_size]
                    tiles = np.stack([arr[y : y + th, x : x + tw] for y, x in chunk])
                    x_t = _normalise(tiles, mean, std).to(dev)
                    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                        # softmax over channels is several times faster on a contiguous tensor than on channels-last
                        logits = net(x_t)
                        probs_t = torch.softmax(logits.float().contiguous(), dim=1)
                        if self.tta:
                            flipped = net(torch.flip(x_t, dims=[3]))
                            probs_t = 0.5 * (probs_t + torch.flip(torch.softmax(flipped.float().contiguous(), dim=1),
                                                                  dims=[3]))
                    probs = probs_t.cpu().numpy()
                    for (y, x), p in zip(chunk, probs):
                        acc[:, y : y + th, x : x + tw] += p * weight
                        wsum[y : y + th, x : x + tw] += weight
                    done += len(chunk)
                    if progress:
                        progress(min(1.0, done / total), f"tile {done}/{total}")

    def covered(self) -> np.ndarray:
        """(h, w) bool: the pixels that some tile added so far covers."""
        return self.wsum[: self.h, : self.w] > 0

    def probs(self, *, copy: bool = True, dtype=np.float32) -> np.ndarray:
        """The blended softmax (K, h, w) of the tiles added so far (zero where none covers).

        ``copy=True`` makes a new map of ``dtype``, strip by strip, so a panorama needs no float32 temporary;
        ``copy=False`` normalises the sum in place (float32), so no second map is made at all, and the blend then
        takes no more tiles.
        """
        prior = self.model.config.get("class_prior_correction")
        prior = None if not prior else np.asarray(prior, np.float32)[:, None, None]
        if not copy:
            if self.pending:
                raise RuntimeError("normalising in place needs every tile added")
            acc, self.acc = self.acc, None
            acc /= self.wsum[None]
            if prior is not None:
                # undo the shift of the class prior caused by class-balanced sampling during training
                acc *= prior
                acc /= acc.sum(0, keepdims=True)
            return acc[:, : self.h, : self.w]
        out = np.empty((self.acc.shape[0], self.h, self.w), dtype)
        for y in range(0, self.h, 256):
            y1 = min(self.h, y + 256)
            band = self.acc[:, y:y1, : self.w] / np.maximum(self.wsum[y:y1, : self.w], np.float32(1e-12))
            if prior is not None:
                band *= prior
                band /= np.maximum(band.sum(0, keepdims=True), np.float32(1e-12))
            assign(out[:, y:y1], band)
        return out


def predict_scaled(
    model: SegmentationModel,
    arr: np.ndarray,
    *,
    tile: int | Iterable[int] | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    progress: ProgressFn = None,
    tta: bool | None = None,
    refine: bool | str | None = None,
) -> np.ndarray:
    """Blended softmax (K, m, n) float32 of an image already at the working scale.

    ``tile`` (default: the config's ``"tile"``) is one tile size or several: with several, the image is tiled
    once per size and every tile of every tiling is blended into the same sum, so the probabilities average
    the tilings without a second probability map. Tile borders then fall in different places, and no pixel's
    prediction rests on one window's context (PSPNet pools its whole input, so it does depend on it). With
    ``tta`` (default: the config's ``"tta"``), each tile's softmax is averaged with that of its mirror image.
    ``refine`` chooses the edge refinement (:func:`.refine.resolve_refine`: None = the config's, False = none,
    True = the config's or the default, or a method name of :data:`.refine.REFINE_METHODS`).
    """
    blend = _Blend(model, arr, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta)
    blend.add(progress=progress)
    acc = blend.probs(copy=False)
    settings = resolve_refine(model.config, refine)
    if settings:
        acc = refine_probs(np.ascontiguousarray(acc), arr, settings, device=model.device)
    return acc


def upsample_argmax(probs: np.ndarray, out_shape: tuple[int, int], classes: list[int], *, strip: int = 512) -> np.ndarray:
    """Full-resolution labels from working-scale probabilities, in strips of rows."""
    K, h, w = probs.shape
    H, W = out_shape
    lut = np.asarray(classes, np.uint8)
    if (h, w) == (H, W):
        return lut[np.argmax(probs, axis=0)]
    # a class with no probability anywhere (ruled out by the mineral assemblage) cannot win a pixel: skip it
    active = [k for k in range(K) if probs[k].max() > 0] or list(range(K))
    channels = {k: np.ascontiguousarray(probs[k], dtype=np.float32) for k in active}
    out = np.empty((H, W), np.uint8)
    sy, sx = h / H, w / W
    xs = ((np.arange(W) + 0.5) * sx - 0.5).astype(np.float32)
    for y0 in range(0, H, strip):
        y1 = min(H, y0 + strip)
        ys = ((np.arange(y0, y1) + 0.5) * sy - 0.5).astype(np.float32)
        map_x = np.broadcast_to(xs[None, :], (y1 - y0, W)).astype(np.float32)
        map_y = np.broadcast_to(ys[:, None], (y1 - y0, W)).astype(np.float32)
        best = np.full((y1 - y0, W), -1.0, np.float32)
        idx = np.zeros((y1 - y0, W), np.uint8)
        for k in active:
            pk = cv2.remap(channels[k], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            better = pk > best
            best[better] = pk[better]
            idx[better] = k
        out[y0:y1] = lut[idx]
    return out


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is torch's report of a failed allocation (``torch.OutOfMemoryError`` on CUDA, a
    ``RuntimeError`` from the CPU allocator)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or "can't allocate memory" in str(e) or "out of memory" in str(e)


def predict(
    model: SegmentationModel,
    image: np.ndarray,
    *,
    extra: np.ndarray | None = None,
    tile: int | Iterable[int] | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    progress: ProgressFn = None,
    tta: bool | None = None,
    balance: bool | None = None,
    minerals: Iterable[int] | None = None,
    assemblage: bool | None = None,
    refine: bool | str | None = None,
    pixel_expert: bool | None = None,
) -> Prediction:
    """Segment one image.

    Parameters
    ----------
    model : SegmentationModel
    image : (M, N, 3) uint8 ndarray
        RGB photograph (plane-polarised).
    extra : (M, N, C) uint8 ndarray, optional
        Additional aligned channels (XPL images) for models trained with them.
    tile, overlap : int, optional
        Tile side and overlap at the working scale (defaults from the config).
    batch_size : int
        Tiles per forward pass.
    progress : callable(fraction, message), optional
    balance : bool, optional
        Automatic white balance when the colours are off (default: the config's ``"auto_white_balance"``).
    minerals : iterable of int, optional
        Class codes the sample can hold; the others are never predicted.
    assemblage : bool, optional
        Without ``minerals``: keep only minerals seen together in training (default: whether the config has an
        ``"assemblage"`` entry).
    refine : bool or str, optional
        Edge refinement: None = the config's, False = none, or a method name (``"crf"``, ``"guided"``).
    pixel_expert : bool, optional
        Fuse the pixel expert's probabilities (:mod:`.pixel`): None = when the model has one, False = never.

    Returns
    -------
    Prediction
    """
    arr = prepare_input(model, image, extra)
    try:
        probs, _, colour, kept = predict_balanced(model, arr, tile=tile, overlap=overlap, batch_size=batch_size,
                                                  progress=progress, tta=tta, balance=balance, minerals=minerals,
                                                  assemblage=assemblage, refine=refine,
                                                  pixel_expert=pixel_expert)
    except RuntimeError as e:  # torch reports a failed allocation (CPU or GPU) as a RuntimeError
        if not is_out_of_memory(e):
            raise
        raise MemoryError(f"not enough memory to segment a {image.shape[1]}x{image.shape[0]} px image on "
                          f"{model.device.type.upper()}; try a smaller batch size or a smaller image") from None
    labels = upsample_argmax(probs, image.shape[:2], model.classes)
    return Prediction(labels=labels, probs=to_float16(probs), classes=model.classes, scale=model.scale,
                      colour=colour, assemblage=kept)


def _colours_normal(model: SegmentationModel, p: np.ndarray, x: np.ndarray, colour: ColourBalance | None) -> bool:
    """Whether the kept pass's mineral colours are within the colour check's normal range (ΔE00 up to its
    threshold): from the colour report when there is one, else measured now; True for a model without
    reference colours."""
    from ..calibration.methods import DRIFT_WARNING, colour_drift

    if colour is not None:
        d = colour.drift_after if colour.applied else colour.drift
        return bool(np.isfinite(d) and d <= colour.threshold)
    refs = model.reference_colors()
    if not refs:
        return True
    d = colour_drift(np.ascontiguousarray(x[: p.shape[1], : p.shape[2], :3]), _labels(p, model.classes), refs)[0]
    return bool(np.isfinite(d) and d <= DRIFT_WARNING)


def predict_balanced(model: SegmentationModel, arr: np.ndarray, *, balance: bool | None = None,
                     minerals: Iterable[int] | None = None, assemblage: bool | None = None,
                     progress: ProgressFn = None, pixel_expert: bool | None = None, **kw
                     ) -> tuple[np.ndarray, np.ndarray, ColourBalance | None, Assemblage | None]:
    """:func:`predict_scaled` with the colour checks of :func:`.balance.auto_balance` (a strong cast is corrected
    before the pass, and when the predicted minerals' colours are off the image is balanced and run again) and
    the mineral assemblage of :mod:`.assemblage` applied to every pass. The kept pass then gets the pixel
    expert's opinion (:mod:`.pixel`; ``pixel_expert``: None = when the model has one, False = never, True = the
    model must have one) and the edge refinement.

    ``minerals`` (class codes) restricts the prediction to the minerals a user names; otherwise, with
    ``assemblage`` (default: whether the config has an ``"assemblage"`` entry), minerals never seen together in
    training are not predicted together.

    Returns the probabilities, the input they came from (corrected or not), the colour report (None when the
    model has no reference colours or the balance is off) and the assemblage report (None when neither applies).
    """
    exclusive = assemblage_settings(model.config) if minerals is None and assemblage is not False else None
    keep = None if minerals is None else sorted(set(int(c) for c in minerals) & set(model.classes))
    if keep is not None and not keep:
        raise ValueError("none of the chosen minerals is one this model knows")
    chosen: list[Assemblage | None] = [None]
    # the edge refinement comes after the minerals are chosen, so that ruled-out minerals do not pull on outlines,
    # and only on the pass that is kept (the colour check of a first pass does not need sharp outlines)
    refining = resolve_refine(model.config, kw.pop("refine", None))

    def finish(p: np.ndarray) -> np.ndarray:
        if keep is not None:
            chosen[0] = user_minerals(p, model.classes, keep)
        elif exclusive:
            chosen[0] = choose_minerals(p, model.classes, exclusive)
        else:
            return p
        return restrict(p, model.classes, chosen[0].kept, inplace=True)

    expert = model.pixel_expert if pixel_expert is not False else None
    if pixel_expert and expert is None:
        raise ValueError(f"model {model.name} has no pixel expert; train one with python -m core train-pixel")

    def refined(p: np.ndarray, x: np.ndarray, colour: ColourBalance | None = None) -> np.ndarray:
        # the second opinion per pixel, on the minerals kept, before the outlines are refined; it judges by colour,
        # so it speaks only where the colours are like the training photographs' (the colour check passes)
        if expert is not None and _colours_normal(model, p, x, colour):
            if progress:
                progress(1.0, "second opinion per pixel")
            p = expert.fuse_into(np.ascontiguousarray(p, dtype=np.float32),
                                 np.ascontiguousarray(x[: p.shape[1], : p.shape[2], :3]))
        if not refining:
            return p
        what = f"refining the outlines ({refining['method']})"
        if progress:
            progress(1.0, what)
        return refine_probs(np.ascontiguousarray(p, dtype=np.float32), x[: p.shape[1], : p.shape[2]], refining,
                            device=model.device,
                            progress=(lambda f: progress(1.0, f"{what}, {100 * f:.0f} %")) if progress else None)

    settings = balance_settings(model.config, force=bool(balance)) if balance is not False else None
    if not settings:
        return refined(finish(predict_scaled(model, arr, progress=progress, refine=False, **kw)), arr), arr, None, chosen[0]
    # The colour check looks at the first tiling only. When the colours pass, the other tilings complete the same
    # sum, so nothing is run twice; when they do not, only that first look is repeated work.
    current: dict = {}

    def step_fn():
        note = "colours corrected, again: " if current.get("passes", 0) > 1 else ""
        return (lambda f, msg: progress(f, note + msg)) if progress else None

    def run(x: np.ndarray) -> np.ndarray:
        current["passes"] = current.get("passes", 0) + 1
        current.pop("blend", None)  # a first look that was not kept goes before the next one is made
        blend = current["blend"] = _Blend(model, x, **kw)
        blend.add(blend.check_jobs(), progress=step_fn())
        # half precision: the check needs only labels, the top probability and the probability mass; the first
        # tiling covers every pixel, so no pixel is left out of it
        return finish(blend.probs(copy=True, dtype=np.float16))

    def complete(x: np.ndarray) -> np.ndarray:
        blend = current.pop("blend")
        blend.add(progress=step_fn())
        return finish(blend.probs(copy=False))

    probs, used, colour = auto_balance(arr, model.classes, model.reference_colors(), run, complete=complete,
                                       **settings)
    return refined(probs, used, colour), used, colour, chosen[0]
