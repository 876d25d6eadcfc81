"""Full-resolution evaluation of a model on its held-out validation images, with and without the
inference steps that the model config can switch on.

    python bench/eval_default.py --model models/default --data ../shared/data/lumenstone

Variants (``--variants``, comma-separated):

- ``plain``: the network's blended probabilities only (no refinement, no colour balance);
- ``refine``: plus the guided-filter edge refinement;
- ``no-assemblage``: refinement and automatic white balance, without the mineral assemblage step;
- ``no-pixel-expert``: what ``segment`` does, without the pixel expert's second opinion;
- ``shipped``: what ``python -m core segment`` does with this model's config (refinement, automatic
  white balance and the mineral assemblage step where the config has them);
- ``shipped-tta``: the same with mirror test-time augmentation.

With ``--boundary PX`` each variant also reports which share of its wrong pixels lies within PX pixels of a
class boundary of the expert mask, and the IoU per class if those pixels were right (what sharper outlines
alone could gain).

The validation stems are read from the model's config (training.val_images), so the figures are
always on images the model did not train on.
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
from core.segmentation.infer import predict_balanced, prepare_input, upsample_argmax  # noqa: E402

VARIANTS = {
    "plain": dict(refine=False, balance=False, tta=False, assemblage=False, pixel_expert=False),
    "refine": dict(refine=True, balance=False, tta=False, assemblage=False, pixel_expert=False),
    "no-assemblage": dict(refine=None, balance=None, tta=None, assemblage=False),
    "no-pixel-expert": dict(refine=None, balance=None, tta=None, pixel_expert=False),
    "shipped": dict(refine=None, balance=None, tta=None),
    "shipped-tta": dict(refine=None, balance=None, tta=True),
}


def boundary_band(mask: np.ndarray, px: int) -> np.ndarray:
    """Pixels within ``px`` of a change of class in ``mask`` (ignored pixels count as a class)."""
    import cv2

    edge = np.zeros(mask.shape, bool)
    dy, dx = mask[:-1] != mask[1:], mask[:, :-1] != mask[:, 1:]
    edge[:-1] |= dy
    edge[1:] |= dy
    edge[:, :-1] |= dx
    edge[:, 1:] |= dx
    return cv2.dilate(edge.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/lumenstone"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--variants", default="plain,refine,shipped")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--boundary", type=int, default=0, metavar="PX",
                    help="also split the errors by distance to the expert mask's class boundaries")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    stems = model.config["training"]["val_images"]
    cms = {v: ConfusionMatrix() for v in names}
    inner = {v: ConfusionMatrix() for v in names}  # as if every pixel near a class boundary were right
    per_image: dict[str, dict] = {v: {} for v in names}
    seconds = {v: 0.0 for v in names}
    for stem in stems:
        img = read_image(Path(a.data) / "imgs" / a.split / f"{stem}.jpg")
        gt = read_mask(Path(a.data) / "masks" / a.split / f"{stem}.png", shape=img.shape[:2])
        valid = gt != 255
        band = boundary_band(gt, a.boundary) if a.boundary > 0 else None
        line = [stem]
        for v in names:
            t = time.perf_counter()
            probs, _, colour, kept = predict_balanced(model, prepare_input(model, img), **VARIANTS[v])
            labels = upsample_argmax(probs, img.shape[:2], model.classes)
            seconds[v] += time.perf_counter() - t
            cms[v].update(gt, labels)
            if band is not None:
                inner[v].update(gt, np.where(band, gt, labels))  # near a boundary: counted as right
            pa = float((labels[valid] == gt[valid]).mean())
            per_image[v][stem] = {"pixel_accuracy": pa, "colour": colour.as_dict() if colour else None,
                                  "assemblage": kept.as_dict() if kept else None}
            line.append(f"{v} {pa:.3f}" + (" (balanced)" if colour is not None and colour.applied else "")
                        + (f" (left out {kept.removed})" if kept is not None and kept.changed else ""))
        print("  ".join(line), flush=True)
    results = {}
    for v, cm in cms.items():
        s = cm.scores()
        results[v] = {**s.as_dict(), "seconds_per_image": seconds[v] / len(stems), "per_image": per_image[v]}
        print(f"{v:>12}: mIoU {s.miou:.4f}  PA {s.pixel_accuracy:.4f}  " +
              " ".join(f"{c}:{x:.2f}" for c, x in sorted(s.iou.items())) +
              f"  ({seconds[v] / len(stems):.2f} s per image)")
        if a.boundary > 0:
            f = inner[v].scores()
            share = (f.pixel_accuracy - s.pixel_accuracy) / max(1e-12, 1 - s.pixel_accuracy)
            results[v]["boundary"] = {"px": a.boundary, "error_share_near_boundary": share,
                                      "if_right_near_boundary": f.as_dict()}
            print(f"{'':>12}  {share:.1%} of the wrong pixels lie within {a.boundary} px of a class boundary; "
                  f"were they right: mIoU {f.miou:.4f}  PA {f.pixel_accuracy:.4f}  " +
                  " ".join(f"{c}:{x:.2f}" for c, x in sorted(f.iou.items())))
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "images": stems, "results": results}, indent=2))


if __name__ == "__main__":
    main()
