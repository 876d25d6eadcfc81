"""Full-resolution evaluation of a model on its held-out validation images, with the inference
options that the model config can switch on (mirror TTA, class-prior correction).

    python bench/eval_default.py --model models/default --data ../shared/data/lumenstone

The validation stems are read from the model's config (training.val_images), so the figures are
always on images the model did not train on. Prior correction multiplies the softmax by
(dataset share / sampled share) ** tau, undoing the class-balanced sampler's shift of the class prior.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.io import read_image, read_mask  # noqa: E402
from core.segmentation import ConfusionMatrix, load_model  # noqa: E402
from core.segmentation.infer import prepare_input, predict_scaled, upsample_argmax  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/lumenstone"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--taus", default="0,0.5,1")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(a.model, device="cpu")
    cfg = model.config
    cfg.pop("class_prior_correction", None)  # measured here explicitly
    cfg["tta"] = False
    stems = cfg["training"]["val_images"]
    share = cfg["training"].get("pixel_share", {})
    sampled = cfg["training"].get("sampled_pixel_share", {})
    prior = np.array([share.get(str(c), 0) / max(sampled.get(str(c), 0), 1e-9) for c in model.classes])
    taus = [float(t) for t in a.taus.split(",")]
    variants = {(tta, tau): ConfusionMatrix() for tta in (False, True) for tau in taus}
    t_total = 0.0
    for stem in stems:
        img = read_image(Path(a.data) / "imgs" / a.split / f"{stem}.jpg")
        gt = read_mask(Path(a.data) / "masks" / a.split / f"{stem}.png", shape=img.shape[:2])
        arr = prepare_input(model, img)
        for tta in (False, True):
            t = time.perf_counter()
            probs = predict_scaled(model, arr, tta=tta)
            t_total += time.perf_counter() - t if not tta else 0
            for tau in taus:
                adj = probs * (prior ** tau)[:, None, None] if tau else probs
                variants[(tta, tau)].update(gt, upsample_argmax(adj, img.shape[:2], model.classes))
        print(f"{stem} done", flush=True)
    results = {}
    for (tta, tau), cm in variants.items():
        s = cm.scores()
        key = f"tta={int(tta)} tau={tau:g}"
        results[key] = s.as_dict()
        print(f"{key:>16}: mIoU {s.miou:.4f}  PA {s.pixel_accuracy:.4f}  " +
              " ".join(f"{c}:{v:.2f}" for c, v in sorted(s.iou.items())))
    print(f"inference without TTA: {t_total / len(stems):.2f} s per image (working scale {model.scale})")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "images": stems, "results": results}, indent=2))


if __name__ == "__main__":
    main()
