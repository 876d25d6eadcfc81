"""Annotation benchmark: scribble propagation accuracy and speed, uncertainty error capture.

    nice -n 19 .venv/bin/python bench/annotation.py propagation [--stems 05,13,...] [--methods multiscale,...]
    nice -n 19 .venv/bin/python bench/annotation.py uncertainty --model models/default [--stems ...]

Strokes are built from the expert masks: one rough straight stroke through the interior of every region of
at least 500 px (``core.annotation.synthetic_scribbles``), about 1 % of the pixels.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "lumenstone"
HELD_OUT = ["05", "13", "21", "a06", "a14", "a23", "a31", "a39", "a47", "a55"]


def load(stem):
    from core.io import read_image, read_mask

    return (read_image(DATA / "imgs" / "train" / f"{stem}.jpg"), read_mask(DATA / "masks" / "train" / f"{stem}.png"))


def bench_propagation(args):
    from core.annotation import compute_superpixels, propagate, strokes_to_mask, synthetic_scribbles

    methods = args.methods.split(",")
    acc = {m: [] for m in methods}
    t_first, t_inc, c_first, c_inc = [], [], [], []
    print(f"| image | scribbled % | {' | '.join(methods)} | first: wall / CPU (s) | further stroke: wall / CPU (s) |")
    print("|---|---|" + "---|" * len(methods) + "---|---|")
    for stem in args.stems.split(","):
        img, gt = load(stem)
        scr = synthetic_scribbles(gt)
        lab = gt != 255
        t0, c0 = time.perf_counter(), time.process_time()
        sp = compute_superpixels(img, cache=False)
        first = propagate(img, scr, method=methods[0], superpixels=sp)
        t_first.append(time.perf_counter() - t0)
        c_first.append(time.process_time() - c0)
        # a further stroke: one more line on the page, with the cached superpixels
        ys, xs = np.nonzero(scr != 255)
        k = len(ys) // 2
        extra = strokes_to_mask(gt.shape, [(int(scr[ys[k], xs[k]]), 16, [(xs[k] - 60, ys[k]), (xs[k] + 60, ys[k])])],
                                base=scr)
        t0, c0 = time.perf_counter(), time.process_time()
        propagate(img, extra, method=methods[0], superpixels=sp)
        t_inc.append(time.perf_counter() - t0)
        c_inc.append(time.process_time() - c0)
        row = []
        for m in methods:
            r = first if m == methods[0] else propagate(img, scr, method=m, superpixels=sp)
            a = float((r.mask[lab] == gt[lab]).mean())
            acc[m].append(a)
            row.append(f"{a:.4f}")
        print(f"| {stem} | {(scr != 255).mean() * 100:.2f} | {' | '.join(row)} | {t_first[-1]:.1f} / {c_first[-1]:.1f} | "
              f"{t_inc[-1]:.2f} / {c_inc[-1]:.2f} |",
              flush=True)
    print(f"| **mean** | | {' | '.join(f'**{np.mean(acc[m]):.4f}**' for m in methods)} | "
          f"{np.mean(t_first):.1f} / {np.mean(c_first):.1f} (max CPU {np.max(c_first):.1f}) | "
          f"{np.mean(t_inc):.2f} / {np.mean(c_inc):.2f} (max CPU {np.max(c_inc):.2f}) |")


def bench_uncertainty(args):
    import cv2
    import torch

    from core.annotation import SCORES, select_regions, uncertainty_map
    from core.segmentation import load_model, predict

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    model.config["tta"] = args.tta
    scores = SCORES.names()
    smooths = [float(v) for v in args.smooth.split(",")]
    print(f"model {args.model} ({model.name}), fraction {args.fraction}, mirror TTA {'on' if args.tta else 'off'}")
    print("| image | pixel acc | " + " | ".join(f"{s} σ={g:g}" for s in scores for g in smooths) + " |")
    print("|---|---|" + "---|" * (len(scores) * len(smooths)))
    cap = {(s, g): [] for s in scores for g in smooths}
    errs_tot = {(s, g): 0 for s in scores for g in smooths}
    n_err = 0
    pooled_u = {k: [] for k in cap}  # every 2nd pixel of every image, for one threshold over all images
    pooled_w = []
    for stem in args.stems.split(","):
        img, gt = load(stem)
        pred = predict(model, img)
        lab = gt != 255
        wrong = lab & (pred.labels != gt)
        n_err += int(wrong.sum())
        pooled_w.append(wrong[::2, ::2][lab[::2, ::2]])
        row = []
        for s in scores:
            umap = uncertainty_map(pred.probs, shape=gt.shape, score=s)
            for g in smooths:
                u = cv2.GaussianBlur(umap, (0, 0), g) if g > 0 else umap
                pooled_u[(s, g)].append(u[::2, ::2][lab[::2, ::2]])
                sel = select_regions(umap, fraction=args.fraction, smooth=g).mask
                c = float((wrong & sel).sum() / max(wrong.sum(), 1))
                cap[(s, g)].append(c)
                errs_tot[(s, g)] += int((wrong & sel).sum())
                row.append(f"{c:.3f}")
        print(f"| {stem} | {(pred.labels[lab] == gt[lab]).mean():.4f} | {' | '.join(row)} |", flush=True)
    print("| **mean per image** | | " + " | ".join(f"**{np.mean(cap[k]):.3f}**" for k in cap) + " |")
    print("| **pooled errors** | | " + " | ".join(f"{errs_tot[k] / max(n_err, 1):.3f}" for k in cap) + " |")
    w = np.concatenate(pooled_w)
    glob = []
    for k in cap:
        u = np.concatenate(pooled_u[k])
        top = u >= np.quantile(u, 1.0 - args.fraction)
        glob.append(float((w & top).sum() / max(w.sum(), 1)))
    print("| **one threshold over all images** | | " + " | ".join(f"{g:.3f}" for g in glob) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("propagation")
    a.add_argument("--stems", default=",".join(HELD_OUT))
    a.add_argument("--methods", default="multiscale,fine,slic,felzenszwalb,geodesic,multiscale-unguarded,nearest")
    b = sub.add_parser("uncertainty")
    b.add_argument("--model", required=True)
    b.add_argument("--stems", default=",".join(HELD_OUT))
    b.add_argument("--fraction", type=float, default=0.10)
    b.add_argument("--device", default="cpu")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--tta", action="store_true", help="average the probabilities over mirror images")
    b.add_argument("--smooth", default="0,4", help="Gaussian smoothing widths (px) to compare, comma-separated")
    args = p.parse_args()
    (bench_propagation if args.what == "propagation" else bench_uncertainty)(args)


if __name__ == "__main__":
    main()
