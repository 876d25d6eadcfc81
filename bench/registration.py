"""Benchmark: XPL registration accuracy and speed on simulated held-out series.

For each held-out LumenStone image (never used to train the default model) a
SIMULATED series is rendered with ``core.registration.simulate_xpl_series``:
the PPL photograph plus 6 XPL-like shots, stage turned in 15-degree steps
about an off-centre point, shifted up to 40 px, re-lit per mineral (residual
brightness, anisotropy tints, 90-degree-period brightening of anisotropic
grains with one orientation per grain), Gaussian noise, saved as JPEG. Each
series is then aligned exactly as ``python -m core register`` does (read the 7
files, keypoints, RANSAC, refinement, warp), timed, and the estimated
transforms are compared with the true ones over every pixel of the XPL image.

    nice -n 19 .venv/bin/python bench/registration.py [--images 05 13 ...] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import io as cio  # noqa: E402
from core.registration import prepare, register, simulate_xpl_series, transform_error, warp_to_reference  # noqa: E402

HELD_OUT = ["05", "13", "21", "a06", "a14", "a23", "a31", "a39", "a47", "a55"]
DATA = ROOT.parent / "shared" / "data" / "lumenstone"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", default=HELD_OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features", default="sift")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, stem in enumerate(args.images):
            img = cio.read_image(DATA / "imgs" / "train" / f"{stem}.jpg")
            mask = cio.read_mask(DATA / "masks" / "train" / f"{stem}.png", shape=img.shape[:2])
            s = simulate_xpl_series(img, mask, n_shots=6, step_deg=15.0, seed=100 + k)
            d = Path(tmp) / stem
            d.mkdir()
            cio.write_image(d / "ppl.jpg", s.ppl, quality=92)
            paths = []
            for i, x in enumerate(s.xpl):
                cio.write_image(d / f"xpl{i}.jpg", x, quality=92)
                paths.append(d / f"xpl{i}.jpg")
            t0, c0 = time.perf_counter(), time.process_time()
            ppl = cio.read_image(d / "ppl.jpg")
            ref = prepare(ppl, features=args.features)
            results = []
            for p in paths:
                x = cio.read_image(p)
                r = register(ref, x)
                if r.ok:
                    warp_to_reference(x, r.A, ppl.shape[:2])
                results.append(r)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            errs = [transform_error(r.A, A, s.xpl[i].shape)["mean_px"] if r.ok else float("inf")
                    for i, (r, A) in enumerate(zip(results, s.transforms))]
            row = {"image": stem, "size": f"{img.shape[1]}x{img.shape[0]}",
                   "mean_err_px": float(np.mean(errs)), "worst_shot_err_px": float(np.max(errs)),
                   "rmse_px": [round(r.rmse_px, 3) for r in results], "inliers": [r.inliers for r in results],
                   "all_ok": all(r.ok for r in results), "seconds": seconds, "cpu_seconds": cpu}
            rows.append(row)
            print(json.dumps(row), flush=True)
    worst = max(r["mean_err_px"] for r in rows)
    print(f"series: {len(rows)}; worst series mean error {worst:.3f} px; "
          f"mean error over series {np.mean([r['mean_err_px'] for r in rows]):.3f} px; "
          f"time per series median {np.median([r['seconds'] for r in rows]):.1f} s, max {max(r['seconds'] for r in rows):.1f} s "
          f"(CPU time median {np.median([r['cpu_seconds'] for r in rows]):.1f} s); "
          f"machine {platform.machine()} {platform.processor() or ''}, cv2 threads {args.threads}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
