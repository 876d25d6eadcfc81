"""Peak memory of ``python -m core segment`` on a large panorama (default 12000 x 8000 px).

The panorama is a mosaic of LumenStone photographs (mirrored so that the seams are continuous), written
as a JPEG to a temporary folder; the segment command runs in a child process whose peak resident memory
(``ru_maxrss``) and wall time are reported, and the output mask is checked for size.

    .venv/bin/python bench/segment_memory.py [--width 12000] [--height 8000] [--model models/default]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lumenstone"


def mosaic(width: int, height: int) -> np.ndarray:
    stems = ["05", "13", "21", "a06", "a14", "a23"]
    tiles = [cv2.imread(str(DATA / "imgs" / "train" / f"{s}.jpg"), cv2.IMREAD_COLOR) for s in stems]
    th, tw = tiles[0].shape[:2]
    out = np.empty((height, width, 3), np.uint8)
    k = 0
    for y in range(0, height, th):
        for x in range(0, width, tw):
            t = tiles[k % len(tiles)]
            k += 1
            t = cv2.resize(t, (tw, th))
            if (x // tw) % 2:
                t = t[:, ::-1]
            if (y // th) % 2:
                t = t[::-1]
            h, w = min(th, height - y), min(tw, width - x)
            out[y:y + h, x:x + w] = t[:h, :w]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=12000)
    ap.add_argument("--height", type=int, default=8000)
    ap.add_argument("--model", default=str(ROOT / "models" / "default"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "panorama.jpg"
        cv2.imwrite(str(src), mosaic(args.width, args.height), [cv2.IMWRITE_JPEG_QUALITY, 92])
        cmd = [sys.executable, "-m", "core", "segment", str(src), "--out", str(Path(d) / "out"),
               "--model", args.model, "--device", "cpu"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        mask = cv2.imread(str(Path(d) / "out" / "panorama.png"), cv2.IMREAD_UNCHANGED)
        ok = mask is not None and mask.shape == (args.height, args.width)
        print(f"{args.width}x{args.height} px: segment exit {proc.returncode}, mask size ok: {ok}, "
              f"wall {wall:.1f} s, peak RSS {peak_mib:.0f} MiB ({peak_mib / 1024:.2f} GiB), "
              f"{os.cpu_count()} CPU cores")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
