"""A second opinion per pixel: a small classifier on filter-bank features, fused with the network.

PSPNet decides from context (its pyramid pools over the whole tile) and predicts at 1/8 of its input; what it
sees of a single pixel's colour and fine texture is smoothed away. The pixel expert is the opposite kind of
classifier, as in the random-forest tools of interactive segmentation (ilastik): every pixel is described by
its colour and its neighbourhood at a few scales (Gaussian-smoothed RGB, gradient magnitude, Laplacian,
Hessian eigenvalues, local contrast, CIELAB; :func:`features`, 33 numbers at the working scale), and a small
multilayer perceptron maps those to class probabilities. On its own it is a weak segmenter. Its errors, though,
are unlike the network's, and the product of the two (:func:`fuse`: ``log p = log p_net + w · log p_pixel``,
renormalised, with ``w = 1`` as for independent experts) is better than the network alone on the held-out
photographs (``bench/RESULTS.md``).

The expert is trained from the same LumenStone-layout folder as the network (:func:`fit`, ``python -m core
train-pixel``), with a class-balanced sample of labelled pixels, and lives in the model's ``config.json``
(``"pixel_expert"``: its weights are a few tens of kB, written as base64 of float32), so that every copy of a
model (fine-tuned, zipped, saved with a session) keeps it.
"""
from __future__ import annotations

import base64
from typing import Callable, Mapping

import numpy as np

FEATURES_VERSION = 1
N_FEATURES = 33
SMOOTHING = (1.0, 2.0, 4.0, 8.0)   # Gaussian σ (working-scale pixels) of the smoothed colours
TEXTURE = (1.0, 2.0, 4.0)          # σ of the gradient, Laplacian, Hessian and local contrast of the luminance
MARGIN = 48                        # rows a strip needs above and below for its features to equal the whole image's
DEFAULT_HIDDEN = 64
DEFAULT_SUBSAMPLE = 2             # the expert works at half the working scale: a quarter of the pixels


def features(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (h, w, :data:`N_FEATURES`) float32 features (see the module's description)."""
    import cv2

    rgb = np.ascontiguousarray(rgb[..., :3])
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError("the pixel expert needs an 8-bit RGB image")
    x = rgb.astype(np.float32) / 255.0
    g = x @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.empty(rgb.shape[:2] + (N_FEATURES,), np.float32)
    k = 0

    def put(a):
        nonlocal k
        out[..., k] = a
        k += 1

    for c in range(3):
        put(x[..., c])
    for s in SMOOTHING:
        b = cv2.GaussianBlur(x, (0, 0), s)
        for c in range(3):
            put(b[..., c])
    for s in TEXTURE:
        gb = cv2.GaussianBlur(g, (0, 0), s)
        gx, gy = cv2.Sobel(gb, cv2.CV_32F, 1, 0), cv2.Sobel(gb, cv2.CV_32F, 0, 1)
        put(np.sqrt(gx * gx + gy * gy))
        xx, yy, xy = (cv2.Sobel(gb, cv2.CV_32F, 2, 0), cv2.Sobel(gb, cv2.CV_32F, 0, 2),
                      cv2.Sobel(gb, cv2.CV_32F, 1, 1))
        put(xx + yy)
        d = np.sqrt((xx - yy) ** 2 + 4 * xy * xy)
        put((xx + yy + d) / 2)
        put((xx + yy - d) / 2)
        m2, m1 = cv2.GaussianBlur(g * g, (0, 0), 2 * s), cv2.GaussianBlur(g, (0, 0), 2 * s)
        put(np.sqrt(np.maximum(m2 - m1 * m1, 0)))
    lab = cv2.cvtColor(cv2.GaussianBlur(x, (0, 0), 1.0), cv2.COLOR_RGB2LAB)
    put(lab[..., 0] / 100)
    put(lab[..., 1] / 128)
    put(lab[..., 2] / 128)
    assert k == N_FEATURES
    return out


def _mlp(hidden: int, classes: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(N_FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, classes))


class PixelExpert:
    """The trained classifier: features -> probabilities over ``classes`` (class codes, the network's order)."""

    def __init__(self, net, mean: np.ndarray, std: np.ndarray, classes: list[int], *, weight: float = 1.0,
                 subsample: int = 1, info: Mapping | None = None):
        self.net = net.eval()
        self.mean = np.array(mean, np.float32)
        self.std = np.array(std, np.float32)
        self.classes = [int(c) for c in classes]
        self.weight = float(weight)
        self.subsample = int(subsample)  # the expert works at 1/subsample of the working scale
        if self.subsample not in (1, 2, 3, 4):
            raise ValueError(f"the pixel expert's subsample must be 1 to 4, got {subsample}")
        self.info = dict(info or {})

    # -- storage in the model config -------------------------------------------------------------------------
    def to_config(self) -> dict:
        import torch

        parts = [self.mean, self.std] + [p.detach().cpu().numpy().astype(np.float32).ravel()
                                         for p in self.net.state_dict().values()]
        blob = np.concatenate(parts).astype("<f4").tobytes()
        return {"features": FEATURES_VERSION, "hidden": int(self.net[0].out_features), "classes": self.classes,
                "weight": self.weight, "subsample": self.subsample, "params": base64.b64encode(blob).decode("ascii"),
                "torch": torch.__version__.split("+")[0], **self.info}

    @classmethod
    def from_config(cls, entry: Mapping, classes: list[int]) -> "PixelExpert":
        """The expert of a model config's ``"pixel_expert"`` entry; ``ValueError`` when it does not fit."""
        import torch

        if int(entry.get("features", -1)) != FEATURES_VERSION:
            raise ValueError(f"the pixel expert was made for feature set {entry.get('features')}, this version "
                             f"computes set {FEATURES_VERSION}; train it again (python -m core train-pixel)")
        if [int(c) for c in entry.get("classes", [])] != [int(c) for c in classes]:
            raise ValueError("the pixel expert's classes are not the network's; train it again for this model")
        hidden = int(entry.get("hidden", DEFAULT_HIDDEN))
        net = _mlp(hidden, len(classes))
        try:
            flat = np.frombuffer(base64.b64decode(entry["params"], validate=True), "<f4")
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"the pixel expert's parameters cannot be read ({e})") from None
        sizes = [N_FEATURES, N_FEATURES] + [p.numel() for p in net.state_dict().values()]
        if flat.size != sum(sizes) or not np.isfinite(flat).all():
            raise ValueError("the pixel expert's parameters are damaged (wrong count or not finite numbers)")
        chunks = np.split(flat, np.cumsum(sizes)[:-1])
        state = {k: torch.from_numpy(c.copy()).reshape(v.shape)
                 for (k, v), c in zip(net.state_dict().items(), chunks[2:])}
        net.load_state_dict(state)
        info = {k: v for k, v in entry.items() if k not in ("features", "hidden", "classes", "weight", "params",
                                                              "torch", "subsample")}
        return cls(net, chunks[0], chunks[1], classes, weight=float(entry.get("weight", 1.0)),
                   subsample=int(entry.get("subsample", 1)), info=info)

    # -- inference ----------------------------------------------------------------------------------------------
    def _native(self, rgb: np.ndarray, *, strip: int | None = None) -> np.ndarray:
        """(h, w, 3) uint8 -> (K, h, w) float32 probabilities at the image's own resolution, in strips of rows
        (exactly the whole image's; by default about half a million pixels per strip, so that the features and
        the perceptron's layers of a panorama stay within a few hundred MB)."""
        import torch

        h, w = rgb.shape[:2]
        strip = strip or max(8, (1 << 19) // max(1, w))
        out = np.empty((len(self.classes), h, w), np.float32)
        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        for y0 in range(0, h, strip):
            y1 = min(h, y0 + strip)
            a, b = max(0, y0 - MARGIN), min(h, y1 + MARGIN)
            f = features(rgb[a:b])[y0 - a: y0 - a + (y1 - y0)]
            with torch.inference_mode():
                p = torch.softmax(self.net((torch.from_numpy(f.reshape(-1, N_FEATURES)) - mean) / std), 1)
            out[:, y0:y1] = p.numpy().T.reshape(len(self.classes), y1 - y0, w)
        return out

    def predict(self, rgb: np.ndarray, *, strip: int | None = None) -> np.ndarray:
        """(h, w, 3) uint8 working-scale image -> (K, h, w) float32 probabilities (computed at 1/``subsample``
        of it and enlarged bilinearly)."""
        h, w = rgb.shape[:2]
        if self.subsample == 1:
            return self._native(rgb, strip=strip)
        return _enlarge(self._native(reduce(rgb, self.subsample), strip=strip), self.subsample, 0, h, w)

    def fuse_into(self, probs: np.ndarray, rgb: np.ndarray, *, strip: int = 512) -> np.ndarray:
        """:func:`fuse` this expert's opinion of ``rgb`` into ``probs`` (K, h, w) in place, strip by strip, so
        that a panorama needs no second full-size probability map."""
        K, h, w = probs.shape
        if rgb.shape[:2] != (h, w) or K != len(self.classes):
            raise ValueError(f"the pixel expert got probabilities {probs.shape} for an image {rgb.shape[:2]}")
        f = self.subsample
        small = self._native(reduce(rgb, f)) if f > 1 else None
        strip -= strip % (2 * f)
        for y0 in range(0, h, strip):
            y1 = min(h, y0 + strip)
            if small is None:
                a, b = max(0, y0 - MARGIN), min(h, y1 + MARGIN)
                q = self._native(rgb[a:b])[:, y0 - a: y1 - a]
            else:  # enlarge only this strip's rows (two rows of margin: as the whole map enlarged)
                s0 = max(0, y0 // f - 2)
                s1 = min(small.shape[1], -(-y1 // f) + 2)
                q = _enlarge(small[:, s0:s1], f, y0 - f * s0, y1 - y0, w)
            fuse(probs[:, y0:y1], q, self.weight)
        return probs


def reduce(rgb: np.ndarray, factor: int) -> np.ndarray:
    """``rgb`` reduced by an integer ``factor``: the mean of each ``factor`` × ``factor`` block (the last rows and
    columns repeated to fill the blocks), so that a reduced pixel covers exactly its block."""
    if factor == 1:
        return rgb
    h, w = rgb.shape[:2]
    H, W = -(-h // factor) * factor, -(-w // factor) * factor
    a = np.pad(rgb, ((0, H - h), (0, W - w), (0, 0)), mode="edge").astype(np.uint32)
    a = a.reshape(H // factor, factor, W // factor, factor, -1).sum((1, 3))
    return ((a + factor * factor // 2) // (factor * factor)).astype(np.uint8)


def _enlarge(small: np.ndarray, factor: int, row: int, rows: int, cols: int) -> np.ndarray:
    """Rows ``row`` … ``row + rows`` and the first ``cols`` columns of ``small`` (K, hs, ws) enlarged ``factor``
    times bilinearly (pixel centres aligned, as the reduction by blocks defines them)."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        up = F.interpolate(torch.from_numpy(np.ascontiguousarray(small))[None], scale_factor=factor,
                           mode="bilinear", align_corners=False, recompute_scale_factor=False)[0]
    return up[:, row: row + rows, :cols].numpy()


def fuse(probs: np.ndarray, expert: np.ndarray, weight: float = 1.0, *, floor: float = 1e-6) -> np.ndarray:
    """``probs ∝ probs · expert ** weight`` in place, per pixel; channels that are zero stay zero.

    ``floor`` bounds the expert's say: a probability it puts below it counts as ``floor``, so that one expert
    alone cannot rule a class out.
    """
    if probs.shape != expert.shape:
        raise ValueError(f"probabilities {probs.shape} and the pixel expert's {expert.shape} differ in shape")
    if weight == 0:
        return probs
    for y0 in range(0, probs.shape[1], 256):  # in strips: no second full-size copy for a panorama
        p = probs[:, y0:y0 + 256]
        q = np.maximum(expert[:, y0:y0 + 256], floor) ** np.float32(weight)
        p *= q
        s = p.sum(0, keepdims=True)
        np.divide(p, s, out=p, where=s > 0)
    return probs


def fit(images: list[np.ndarray], masks: list[np.ndarray], classes: list[int], *, per_class: int = 4000,
        hidden: int = DEFAULT_HIDDEN, epochs: int = 6, batch: int = 1024, lr: float = 3e-3, seed: int = 0,
        progress: Callable[[float, str], None] | None = None) -> PixelExpert:
    """Train a pixel expert on working-scale photographs and their masks (255 = unlabelled).

    From every photograph, up to ``per_class`` pixels of each class it holds are drawn at random; the loss weighs
    the classes equally (as the network's sampler does), Adam with a one-cycle schedule over ``epochs``.
    """
    import torch

    if len(images) != len(masks) or not images:
        raise ValueError("give one mask per photograph, and at least one photograph")
    index = {int(c): i for i, c in enumerate(classes)}
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for n, (img, m) in enumerate(zip(images, masks)):
        if img.shape[:2] != m.shape:
            raise ValueError(f"photograph {n + 1} is {img.shape[1]}x{img.shape[0]} px but its mask "
                             f"{m.shape[1]}x{m.shape[0]} px")
        f = features(img)
        for c in np.unique(m):
            if int(c) not in index:
                continue
            yy, xx = np.nonzero(m == c)
            k = rng.choice(len(yy), min(len(yy), per_class), replace=False)
            xs.append(f[yy[k], xx[k]])
            ys.append(np.full(len(k), index[int(c)], np.int64))
        if progress:
            progress(0.3 * (n + 1) / len(images), f"features of photograph {n + 1} of {len(images)}")
    X = torch.from_numpy(np.concatenate(xs))
    Y = torch.from_numpy(np.concatenate(ys))
    mean, std = X.mean(0), X.std(0) + 1e-6
    X = (X - mean) / std
    counts = torch.bincount(Y, minlength=len(classes)).float()
    weights = torch.where(counts > 0, counts.sum() / counts.clamp(min=1) / int((counts > 0).sum()), 0.0)
    torch.manual_seed(seed)
    net = _mlp(hidden, len(classes))
    opt = torch.optim.Adam(net.parameters(), lr / 3, weight_decay=1e-5)
    per_epoch = max(1, len(X) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    g = torch.Generator().manual_seed(seed)
    loss_sum = float("nan")
    for ep in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        loss_sum = 0.0
        for b in range(per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            loss = loss_fn(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
        if progress:
            progress(0.3 + 0.7 * (ep + 1) / epochs, f"epoch {ep + 1} of {epochs}, loss {loss_sum / per_epoch:.3f}")
    info = {"trained_on": len(images), "pixels": int(len(X)), "epochs": epochs, "final_loss": round(loss_sum / per_epoch, 4)}
    return PixelExpert(net, mean.numpy(), std.numpy(), classes, info=info)


def reduce_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A mask reduced as :func:`reduce` reduces its photograph: a block's class where the whole block has it, else
    255 (a block across a boundary teaches nothing certain)."""
    if factor == 1:
        return mask
    h, w = mask.shape
    H, W = -(-h // factor) * factor, -(-w // factor) * factor
    m = np.pad(mask, ((0, H - h), (0, W - w)), constant_values=255).reshape(H // factor, factor, W // factor, factor)
    lo, hi = m.min((1, 3)), m.max((1, 3))
    return np.where(lo == hi, lo, 255).astype(np.uint8)


def expert_of(config: Mapping) -> PixelExpert | None:
    """The pixel expert of a model config, or None when it has none."""
    entry = config.get("pixel_expert")
    return None if not entry else PixelExpert.from_config(entry, list(config["classes"]))
