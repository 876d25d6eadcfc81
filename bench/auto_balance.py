"""Automatic white balance under simulated changes of optics, on the model's held-out images.

    python bench/auto_balance.py --model models/default --out bench/results/auto_balance.md

Each held-out photograph is segmented as it is and through simulated optics (the blue and yellow filters and
the other camera of ``core.calibration.simulate``, and exposures x1.4 and x0.7 in linear light), with the
automatic white balance off and on, as ``segment`` runs them (``predict_balanced``: the colour check looks at
the first tiling and the pass it keeps runs both; refinement on in both, the mineral assemblage step off so that
the table shows the colour checks alone). Scores are at full resolution against the expert
masks; the table gives mIoU / pixel accuracy per condition, and how many images the colour checks corrected
(cast correction before the first pass, or balance after it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.calibration.methods import from_linear, to_linear  # noqa: E402
from core.calibration.simulate import simulate_optics  # noqa: E402
from core.io import read_image, read_mask  # noqa: E402
from core.segmentation import ConfusionMatrix, load_model  # noqa: E402
from core.segmentation.balance import balance_settings  # noqa: E402
from core.segmentation.infer import predict_balanced, prepare_input, upsample_argmax  # noqa: E402


def exposure(image: np.ndarray, gain: float) -> np.ndarray:
    lin = to_linear(image / 255.0) * gain
    return (from_linear(np.clip(lin, 0, 1)) * 255 + 0.5).astype(np.uint8)


CONDITIONS = {
    "as photographed": lambda im: im,
    "blue filter": lambda im: simulate_optics(im, "blue-filter"),
    "yellow filter": lambda im: simulate_optics(im, "yellow-filter"),
    "other camera": lambda im: simulate_optics(im, "other-camera"),
    "exposure x1.4": lambda im: exposure(im, 1.4),
    "exposure x0.7": lambda im: exposure(im, 0.7),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/lumenstone"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the table as Markdown")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    settings = balance_settings(model.config, force=True)
    if settings is None:
        ap.error("the model has no reference colours")
    stems = model.config["training"]["val_images"]
    cms = {(c, v): ConfusionMatrix() for c in CONDITIONS for v in ("off", "on")}
    balanced = {c: 0 for c in CONDITIONS}
    t0 = time.time()
    for stem in stems:
        original = read_image(Path(a.data) / "imgs" / a.split / f"{stem}.jpg")
        gt = read_mask(Path(a.data) / "masks" / a.split / f"{stem}.png", shape=original.shape[:2])
        valid = gt != 255
        for cond, change in CONDITIONS.items():
            arr = prepare_input(model, change(original))
            off = predict_balanced(model, arr, balance=False, assemblage=False)[0]
            on, _, rep, _ = predict_balanced(model, arr, balance=True, assemblage=False)
            balanced[cond] += rep.applied or rep.cast is not None
            line = [f"{stem:>4} {cond:<16} dE00 {rep.drift:4.1f}" + (" cast" if rep.cast is not None else "")
                    + (" balanced" if rep.applied else "")]
            for v, probs in (("off", off), ("on", on)):
                labels = upsample_argmax(probs, gt.shape, model.classes)
                cms[cond, v].update(gt, labels)
                line.append(f"{v} {float((labels[valid] == gt[valid]).mean()):.3f}")
            print("  ".join(line), flush=True)
    rows = ["| condition | corrected images | off: mIoU / PA | on: mIoU / PA |", "|---|---|---|---|"]
    for cond in CONDITIONS:
        s_off, s_on = cms[cond, "off"].scores(), cms[cond, "on"].scores()
        rows.append(f"| {cond} | {balanced[cond]} of {len(stems)} | {s_off.miou:.3f} / {s_off.pixel_accuracy:.3f} | "
                    f"{s_on.miou:.3f} / {s_on.pixel_accuracy:.3f} |")
    table = "\n".join(rows)
    print(table)
    print(f"{time.time() - t0:.0f} s")
    if a.out:
        Path(a.out).write_text(
            "# Automatic white balance under simulated optics\n\n"
            f"`python bench/auto_balance.py --model {a.model}`; model `{model.name}`, its {len(stems)} held-out images "
            f"({' '.join(stems)}), full resolution, as `segment` runs them (the colour check on the first tiling, the "
            "kept pass with all of the config's tilings and its refinement) but with the mineral assemblage step off. "
            "Cast check: bright chromaticity beyond "
            f"{settings['max_z']:g} standard deviations of the training photographs'"
            + ("" if settings["chromaticity"] else " (no statistics in this model: skipped)")
            + f". Balance threshold: colour check ΔE00 > {settings['threshold']:g}; fit from pixels with "
            f"probability > {settings['min_confidence']:g}.\n\n"
            + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
