"""How well a point count measures a segmentation: the expert masks of the held-out photographs play the
microscopist, and the count's figures are compared with the exact ones from every pixel.

    python -m core segment <the held-out photographs> --out runs/heldout_masks
    python bench/pointcount.py --pred runs/heldout_masks [--points 300] [--seeds 1,2,3,4,5] [--md FILE]

For each photograph and grid (one per seed): the agreement the count gives, its 95 % interval, and whether the
interval holds the pixel accuracy measured over every labelled pixel; and for each mineral, whether the count's
interval holds the expert mask's area % (its own truth) and the segmentation's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.io import read_mask  # noqa: E402
from core.stats.pointcount import check, grid_points  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred", required=True, help="folder of the segmentation masks (<stem>.png)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/lumenstone"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--model", default=str(ROOT / "models/default"), help="whose held-out stems to use")
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--md", default=None, help="also write the table as Markdown")
    a = ap.parse_args()
    import json

    stems = json.loads((Path(a.model) / "config.json").read_text())["training"]["val_images"]
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    lines = [f"Grid of about {a.points} points, seeds {a.seeds}; the expert mask is the microscopist (its "
             "unlabelled pixels: cannot tell).", "",
             "| photograph | pixel accuracy (every pixel) | agreement of the count (seed 1) | 95 % interval | "
             "intervals holding the pixel accuracy |", "|---|---|---|---|---|"]
    held = n_grids = min_in = seg_in = n_min = 0
    for stem in stems:
        gt = read_mask(Path(a.data) / "masks" / a.split / f"{stem}.png")
        pred = read_mask(Path(a.pred) / f"{stem}.png", shape=gt.shape)
        valid = gt != 255
        pa = float((pred[valid] == gt[valid]).mean())
        first, covered = None, 0
        for seed in seeds:
            pts = grid_points(gt.shape, a.points, seed=seed)
            calls = gt[pts[:, 0], pts[:, 1]].astype(np.int16)
            r = check(pts, calls, pred)
            covered += r["agreement_low"] <= pa <= r["agreement_high"]
            own = {m["code"]: m for m in check(pts, calls, gt)["minerals"]}
            for m in r["minerals"]:
                if m["points"]:
                    n_min += 1
                    min_in += bool(own[m["code"]]["inside"])
                    seg_in += bool(m["inside"])
            first = first or r
        held += covered
        n_grids += len(seeds)
        lines.append(f"| {stem} | {pa:.3f} | {first['agreement']:.3f} ({first['called']} points) | "
                     f"{first['agreement_low']:.3f}–{first['agreement_high']:.3f} | {covered} of {len(seeds)} |")
    lines += ["", f"Intervals holding the pixel accuracy: {held} of {n_grids}. Minerals counted (photograph × grid, "
              f"with at least one point): {n_min}; the count's interval holds the expert mask's area % for {min_in} "
              f"and the segmentation's for {seg_in}."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.md:
        Path(a.md).write_text(text)


if __name__ == "__main__":
    main()
