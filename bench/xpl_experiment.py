"""Experiment: does an aligned XPL series help segmentation?  (SIMULATED XPL data)

There is no public crossed-polar data for LumenStone, so every XPL shot here is
SIMULATED by ``core.registration.simulate_xpl_series`` from the PPL image and
its mask (isotropic minerals stay dark; pyrrhotite and the other anisotropic
minerals brighten with a 90-degree period, one orientation per grain; stage
turned about an off-centre point, shifted, re-lit, noisy). Every series is then
aligned with the real pipeline (``register_series``: keypoints, RANSAC,
refinement) and encoded with ``encode_xpl``.

Two models with the same architecture, data, patches, augmentation and number
of iterations are trained from scratch on CPU:

- ``rgb``: the PPL image alone (3 input channels);
- ``rgb+xpl``: PPL + the compact anisotropy encoding (3 + 3 channels: mean,
  range and standard deviation of the XPL luminance over the shots).

They are scored (IoU per class, mean IoU, pixel accuracy; 255 ignored) on
held-out images that neither model saw, with XPL series simulated with other
seeds. The XPL model is saved into ``bench-output/xpl_model`` (a normal model
folder with ``"xpl": {...}`` in its config), never into ``models/``.

    nice -n 19 .venv/bin/python bench/xpl_experiment.py [--iterations 700] [--scale 0.25]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import io as cio  # noqa: E402
from core.minerals import IGNORE, name_of  # noqa: E402
from core.registration import SIMULATED_LABEL, encode_xpl, register_series, simulate_xpl_series  # noqa: E402
from core.segmentation import ClassBalancedSampler, ConfusionMatrix, SegmentationModel, create_model, save_model  # noqa: E402
from core.segmentation.infer import predict  # noqa: E402
from core.segmentation.train import augment_patch  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "lumenstone"
HELD_OUT = {"05", "13", "21", "a06", "a14", "a23", "a31", "a39", "a47", "a55"}
# the LumenStone images that hold an anisotropic mineral (pyrrhotite) are 01-23
TEST = ["05", "13", "21"]


def _load(stem: str, scale: float):
    img = cio.read_image(DATA / "imgs" / "train" / f"{stem}.jpg")
    mask = cio.read_mask(DATA / "masks" / "train" / f"{stem}.png", shape=img.shape[:2])
    return cio.rescale_pair(img, mask, scale)


def _series(img, mask, seed: int, n_shots: int):
    """Simulated series, aligned by the real pipeline; returns the compact encoding (or None on failure)."""
    sim = simulate_xpl_series(img, mask, n_shots=n_shots, step_deg=15.0, max_shift=10.0, seed=seed)
    results, aligned = register_series(img, sim.xpl)
    ok = [a for a in aligned if a is not None]
    if len(ok) < 2:
        return None, results
    return encode_xpl(ok, encoding="compact"), results


def _train(name, images, masks, classes, *, in_channels, iterations, patch, batch, lr, seed, log):
    lut = np.full(256, IGNORE, np.uint8)
    for i, c in enumerate(classes):
        lut[c] = i
    idx_masks = [lut[m] for m in masks]
    pix = np.concatenate([im.reshape(-1, im.shape[2])[::53] for im in images]).astype(np.float64) / 255.0
    mean, std = pix.mean(0), pix.std(0) + 1e-6
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sampler = ClassBalancedSampler(idx_masks, len(classes), patch, rng=rng)
    net = create_model("pspnet", "resnet18", classes=len(classes), in_channels=in_channels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=lr * 0.05)
    crit = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    net.train()
    t0 = time.process_time()
    losses = []
    for it in range(iterations):
        xs, ys = [], []
        for _ in range(batch):
            req = sampler.next()
            img, msk = augment_patch(images[req.image], idx_masks[req.image], req.cy, req.cx, patch, sampler.rng,
                                     rotate=True, scale_jitter=0.15, brightness=0.15, color=0.06)
            sampler.update(msk)
            xs.append(((img / 255.0 - mean) / std).transpose(2, 0, 1))
            ys.append(msk.astype(np.int64))
        x = torch.from_numpy(np.stack(xs).astype(np.float32))
        y = torch.from_numpy(np.stack(ys))
        loss = crit(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (it + 1) % 50 == 0:
            log(f"{name}: iteration {it + 1}/{iterations}, loss {np.mean(losses[-50:]):.3f}, "
                f"CPU {time.process_time() - t0:.0f} s")
    net.eval()
    return net, mean, std, time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=700)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--patch", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--shots", type=int, default=6)
    ap.add_argument("--series-per-image", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench-output" / "xpl_model"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"XPL experiment on {SIMULATED_LABEL}")
    stems = sorted(p.stem for p in (DATA / "imgs" / "train").glob("*.jpg"))
    train_stems = [s for s in stems if not s.startswith("a") and s not in HELD_OUT]
    t0 = time.time()
    rgb_imgs, xpl_imgs, masks, reg_rmse = [], [], [], []
    for k, s in enumerate(train_stems):
        img, mask = _load(s, args.scale)
        for j in range(args.series_per_image):
            extra, res = _series(img, mask, seed=1000 * k + j, n_shots=args.shots)
            reg_rmse += [r.rmse_px for r in res if r.ok]
            if extra is None:
                log(f"{s}: series {j} could not be aligned; skipped")
                continue
            rgb_imgs.append(img)
            xpl_imgs.append(np.concatenate([img, extra], axis=2))
            masks.append(mask)
    log(f"training data: {len(train_stems)} images x {args.series_per_image} simulated series at scale {args.scale} "
        f"({time.time() - t0:.0f} s, median registration residual {np.median(reg_rmse):.2f} px)")
    test = []
    for k, s in enumerate(TEST):
        img, mask = _load(s, args.scale)
        extra, res = _series(img, mask, seed=777 + k, n_shots=args.shots)
        if extra is None:
            raise SystemExit(f"{s}: held-out series could not be aligned")
        test.append((s, img, mask, extra))
    present = sorted(set(np.unique(np.concatenate([np.unique(m) for m in masks])).tolist()) - {IGNORE})
    classes = present
    log(f"classes: {[f'{c} {name_of(c)}' for c in classes]}")

    results = {}
    for name, data, cin in (("rgb", rgb_imgs, 3), ("rgb+xpl", xpl_imgs, 6)):
        net, mean, std, cpu = _train(name, data, masks, classes, in_channels=cin, iterations=args.iterations,
                                     patch=args.patch, batch=args.batch, lr=args.lr, seed=args.seed, log=log)
        config = {"name": "xpl_model" if cin > 3 else "rgb_baseline", "architecture": "pspnet", "encoder": "resnet18",
                  "in_channels": cin, "classes": classes, "scale": 1.0, "tile": 512, "overlap": 128,
                  "normalization": {"mean": mean.round(5).tolist(), "std": std.round(5).tolist(),
                                    "range": "0-1 sRGB (+ XPL encoding channels, 0-255 scaled to 0-1)"}}
        if cin > 3:
            config["xpl"] = {"encoding": "compact", "n_shots": args.shots, "simulated_training_data": True,
                             "note": SIMULATED_LABEL}
        model = SegmentationModel(net=net, config=config, device=torch.device("cpu"))
        cm = ConfusionMatrix()
        for s, img, mask, extra in test:
            pred = predict(model, img, extra=extra if cin > 3 else None)
            cm.update(mask, pred.labels)
        sc = cm.scores().as_dict()
        results[name] = {"cpu_seconds_training": round(cpu, 1), **sc}
        log(f"{name}: mIoU {sc['miou']:.4f}, pixel accuracy {sc['pixel_accuracy']:.4f}, "
            f"IoU {json.dumps({k: round(v, 4) for k, v in sc['iou'].items()})}")
        if cin > 3:
            config["scale"] = args.scale  # full-resolution inputs are resized to the training scale
            config["training"] = {"train_images": train_stems, "test_images": TEST, "iterations": args.iterations,
                                  "patch": args.patch, "batch": args.batch, "simulated_xpl": True}
            config["validation"] = {**sc, "images": TEST, "data": "SIMULATED XPL series"}
            save_model(args.out, net, config)
            log(f"XPL model saved to {args.out}")
    summary = {"label": SIMULATED_LABEL, "scale": args.scale, "iterations": args.iterations, "patch": args.patch,
               "batch": args.batch, "train_images": train_stems, "test_images": TEST, "classes": classes,
               "results": results, "machine": f"{platform.machine()} {platform.processor()}".strip(),
               "torch_threads": 1}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
