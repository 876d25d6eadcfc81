"""Does the share of a photograph where the model is unsure tell which photographs it got most wrong?

    python bench/unsure_share.py [--model models/default] [--md FILE]

For each held-out photograph: the share of it where the shipped ``segment`` is unsure (``unsure_share``: the two
likeliest minerals less than 0.5 apart), its error rate against the expert mask, and the error rates inside and
outside the unsure pixels; then the rank correlation between unsure share and error rate over the photographs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import cv2
    import torch
    from scipy.stats import spearmanr

    from core.annotation.uncertainty import DEFAULT_SCORE, SCORES, UNSURE, unsure_share
    from core.io import read_image, read_mask
    from core.segmentation import load_model, predict

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/lumenstone"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--md", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(a.model, device="cpu")
    lines = ["| photograph | unsure % | error % | error % where unsure | error % elsewhere | share of the errors "
             "where unsure |", "|---|---|---|---|---|---|"]
    shares, errors = [], []
    for stem in model.config["training"]["val_images"]:
        img = read_image(Path(a.data) / "imgs" / a.split / f"{stem}.jpg")
        gt = read_mask(Path(a.data) / "masks" / a.split / f"{stem}.png", shape=img.shape[:2])
        pred = predict(model, img)
        u = unsure_share(pred.probs)
        score = SCORES.get(DEFAULT_SCORE)(pred.probs.astype(np.float32))
        unsure = cv2.resize(score, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR) > UNSURE
        valid = gt != 255
        wrong = (pred.labels != gt) & valid
        err = wrong.sum() / valid.sum()
        shares.append(u)
        errors.append(err)
        lines.append(f"| {stem} | {100 * u:.1f} | {100 * err:.1f} | "
                     f"{100 * (wrong & unsure).sum() / max(1, (unsure & valid).sum()):.0f} | "
                     f"{100 * (wrong & ~unsure).sum() / max(1, (~unsure & valid).sum()):.1f} | "
                     f"{100 * (wrong & unsure).sum() / max(1, wrong.sum()):.0f} |")
        print(lines[-1], flush=True)
    rho = spearmanr(shares, errors)
    lines += ["", f"Spearman's rank correlation between unsure % and error % over the {len(shares)} photographs: "
              f"{rho.statistic:.2f} (p = {rho.pvalue:.3f})."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.md:
        Path(a.md).write_text(text)


if __name__ == "__main__":
    main()
