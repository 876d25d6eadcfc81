"""Class shares of pixels drawn by the class-balanced sampler against the dataset's.

    python bench/sampler_stats.py --data ../shared/data/lumenstone --patches 1000 --patch 256
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.io import list_dataset, read_mask  # noqa: E402
from core.minerals import by_code  # noqa: E402
from core.segmentation.sampler import ClassBalancedSampler  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lumenstone")
    ap.add_argument("--patches", type=int, default=1000)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--scale", type=float, default=1.0, help="resolution of the masks (1 = as shipped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    t0 = time.time()
    masks = []
    for it in list_dataset(a.data):
        m = read_mask(it.mask)
        if a.scale != 1:
            m = cv2.resize(m, None, fx=a.scale, fy=a.scale, interpolation=cv2.INTER_NEAREST)
        masks.append(m)
    codes = sorted(set(np.unique(np.concatenate([np.unique(m) for m in masks])).tolist()) - {255})
    lut = np.full(256, 255, np.uint8)
    lut[codes] = np.arange(len(codes))
    idx = [lut[m] for m in masks]
    s = ClassBalancedSampler(idx, len(codes), a.patch, rng=np.random.default_rng(a.seed))
    h = a.patch // 2
    for _ in range(a.patches):
        r = s.next()
        m = idx[r.image]
        y0 = int(np.clip(r.cy - h, 0, m.shape[0] - a.patch))
        x0 = int(np.clip(r.cx - h, 0, m.shape[1] - a.patch))
        s.update(m[y0:y0 + a.patch, x0:x0 + a.patch])
    sampled, dataset = s.shares()
    rows = {str(c): {"mineral": by_code(c).name, "dataset": float(dataset[i]), "sampled": float(sampled[i])}
            for i, c in enumerate(codes)}
    print(f"{'code':>4} {'mineral':<28} {'dataset %':>10} {'sampled %':>10}")
    for c, r in rows.items():
        print(f"{c:>4} {r['mineral']:<28} {100 * r['dataset']:10.2f} {100 * r['sampled']:10.2f}")
    print(f"{a.patches} patches of {a.patch} px from {len(masks)} masks in {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
