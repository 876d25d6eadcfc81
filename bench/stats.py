"""Timing of the statistics on a 12000×8000 mask (acceptance: ≤ 30 s on 2 CPU cores).

Two masks are measured:

- ``lumenstone``: real LumenStone masks tiled (mirrored so that grains continue
  across the seams) and cropped to 12000×8000, the size of a 5×5 panorama;
- ``dense``: a synthetic worst case with ~200 000 small grains of 9 minerals
  (discs of radius 2-12 px, some touching) on background.

Usage::

    nice -n 19 .venv/bin/python bench/stats.py [--out bench/results/stats.md]

Times the whole analysis (measure + JSON summary + CSV tables) with OpenCV and
NumPy limited to 2 threads, and reports wall time, process CPU time (all
threads; on two otherwise idle cores the wall time cannot exceed it) and the
peak resident memory.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import io as cio  # noqa: E402
from core.stats import Options, measure, summarize, tables  # noqa: E402

H, W = 8000, 12000
DATA = ROOT.parent / "shared" / "data" / "lumenstone" / "masks" / "train"


def lumenstone_mask() -> np.ndarray:
    files = sorted(DATA.glob("*.png"))[::5]
    if not files:
        files = sorted((ROOT / "samples" / "masks" / "demo").glob("*.png"))
    out = np.empty((H, W), np.uint8)
    k = 0
    y = 0
    row = 0
    while y < H:
        x, col, th = 0, 0, None
        while x < W:
            m = cio.read_mask(files[k % len(files)])
            k += 1
            if col % 2:
                m = m[:, ::-1]
            if row % 2:
                m = m[::-1]
            th = m.shape[0] if th is None else min(th, m.shape[0])
            h, w = min(m.shape[0], H - y), min(m.shape[1], W - x)
            out[y:y + h, x:x + w] = m[:h, :w]
            x += w
            col += 1
        y += th
        row += 1
    return out


def dense_mask(seed: int = 0, n: int = 200_000) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((H, W), np.uint8)
    xs, ys = rng.integers(0, W, n), rng.integers(0, H, n)
    rs = rng.integers(2, 13, n)
    cs = rng.choice([1, 2, 3, 5, 6, 7, 8, 9, 11], n)
    for x, y, r, c in zip(xs.tolist(), ys.tolist(), rs.tolist(), cs.tolist()):
        cv2.circle(out, (x, y), r, c, -1)
    return out


def run_once(mask: np.ndarray) -> dict:
    c0, t0 = time.process_time(), time.perf_counter()
    st = measure(mask, pixel_size=0.53)
    c1, t1 = time.process_time(), time.perf_counter()
    summary = summarize({"bench": st}, options=Options())
    t2 = time.perf_counter()
    tabs = tables({"bench": st}, options=Options())
    c3, t3 = time.process_time(), time.perf_counter()
    return {"measure": t1 - t0, "summary": t2 - t1, "tables": t3 - t2, "total": t3 - t0,
            "cpu_measure": c1 - c0, "cpu_total": c3 - c0,
            "grains": len(st.grains), "classes": len(summary["total"]["area_fraction"]), "rows": len(tabs["grains"])}


def main() -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(2)
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, cv2 threads {cv2.getNumThreads()}, "
             f"Python {platform.python_version()}, NumPy {np.__version__}, OpenCV {cv2.__version__}", "",
             f"load average at start: {os.getloadavg()[0]:.1f}", "",
             "| mask | grains | classes | wall: measure s | summary s | tables s | total s | CPU s (all threads): measure | total |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, make in (("lumenstone", lumenstone_mask), ("dense", dense_mask)):
        t = time.perf_counter()
        mask = make()
        print(f"{name}: built {mask.shape[1]}x{mask.shape[0]} in {time.perf_counter() - t:.1f} s", flush=True)
        runs = [run_once(mask) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total"])
        for r in runs:
            print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                  flush=True)
        lines.append(f"| {name} {W}x{H} | {best['grains']} | {best['classes']} | {best['measure']:.2f} | "
                     f"{best['summary']:.2f} | {best['tables']:.2f} | {best['total']:.2f} | {best['cpu_measure']:.2f} | "
                     f"{best['cpu_total']:.2f} |")
        del mask
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"peak resident memory of the process: {peak:.0f} MB"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
