"""Colour-calibration benchmark on held-out LumenStone images.

Each held-out image is changed by simulated optics (blue filter, yellow filter,
another camera's colour response and tone curve); ~30 % of its area is marked
from the true mask; the change is corrected with each method. Measured:

- mean CIEDE2000 of the marked minerals from their reference colours, before/after;
- per-pixel CIEDE2000 between corrected(changed) and corrected(original) (how well the change is undone);
- with a model (--model DIR): pixel accuracy on the original, the changed and the corrected images;
- seconds per full-size image (class means + fit + apply; JPEG decoding excluded), CPU and wall.

    nice -n 19 .venv/bin/python bench/calibration.py --model models/default --out bench/results/calibration.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELD_OUT = ["05", "13", "21", "a06", "a14", "a23", "a31", "a39", "a47", "a55"]
DATA = ROOT.parent / "shared" / "data" / "lumenstone"


def reference_from_training(step: int) -> dict:
    """Mean sRGB per class over the training images (held-out ones excluded), as the model config stores it."""
    from core.io import list_dataset, read_image, read_mask

    s, n = {}, {}
    for it in list_dataset(DATA, "train"):
        if it.stem in HELD_OUT:
            continue
        im, m = read_image(it.image)[::step, ::step], read_mask(it.mask)[::step, ::step]
        for c in np.unique(m):
            if c == 255:
                continue
            sel = m == c
            s[int(c)] = s.get(int(c), 0) + im[sel].astype(float).sum(0)
            n[int(c)] = n.get(int(c), 0) + int(sel.sum())
    return {c: s[c] / n[c] for c in s}


def pixel_de(a: np.ndarray, b: np.ndarray) -> float:
    from core.calibration import delta_e2000, linear_to_lab, to_linear

    a = a[::4, ::4].reshape(-1, 3) / 255.0
    b = b[::4, ::4].reshape(-1, 3) / 255.0
    return float(delta_e2000(linear_to_lab(to_linear(a)), linear_to_lab(to_linear(b))).mean())


def accuracy(model, image, gt, *, calibrated: bool = False) -> float:
    """Pixel accuracy of the model's labels; a calibrated image is segmented without the automatic colour
    correction, as the Segment page does."""
    from core.segmentation import predict

    lab = predict(model, image, balance=False if calibrated else None).labels
    keep = gt != 255
    return float((lab[keep] == gt[keep]).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (reference colours from its config; pixel accuracy measured)")
    ap.add_argument("--images", nargs="*", default=HELD_OUT, help="held-out stems to use")
    ap.add_argument("--methods", default="white-balance,ccm-de2000,ccm-de2000-tone,cheung2004,vandermonde")
    ap.add_argument("--step", type=int, default=1, help="subsample images by this step for the quality part")
    ap.add_argument("--timing-images", type=int, default=2, help="full-size images to time")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "calibration.md"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from core.calibration import apply_correction, class_means, fit_correction, mean_delta_e
    from core.calibration.simulate import OPTICS, partial_annotation, simulate_optics
    from core.io import read_image, read_mask

    model = None
    if args.model:
        from core.segmentation import load_model

        model = load_model(args.model, device="cpu")
        reference = model.reference_colors()
        ref_label = f"config of {args.model}"
    else:
        reference = reference_from_training(4)
        ref_label = "mean class colours of the 72 training images (no model given)"
    methods = args.methods.split(",")
    rows: dict[tuple, list] = {}
    per_image: dict[tuple, dict] = {}
    for stem in args.images:
        im = np.ascontiguousarray(read_image(DATA / "imgs" / "train" / f"{stem}.jpg")[::args.step, ::args.step])
        gt = np.ascontiguousarray(read_mask(DATA / "masks" / "train" / f"{stem}.png")[::args.step, ::args.step])
        ann = partial_annotation(gt, fraction=args.fraction, seed=0)
        acc_orig = accuracy(model, im, gt) if model else None
        base = {}
        for optics in ["none"] + OPTICS.names():
            ch = im if optics == "none" else simulate_optics(im, optics)
            acc_ch = accuracy(model, ch, gt) if model and optics != "none" else acc_orig
            for meth in methods:
                try:
                    corr = fit_correction(class_means(ch, ann), reference, method=meth)
                except ValueError as e:
                    print(f"{stem} {optics} {meth}: {e}", file=sys.stderr)
                    continue
                out = apply_correction(ch, corr)
                if optics == "none":
                    base[meth] = out
                de_b, _ = mean_delta_e(ch, ann, reference)
                de_a, _ = mean_delta_e(out, ann, reference)
                acc_c = accuracy(model, out, gt, calibrated=True) if model else None
                rows.setdefault((optics, meth), []).append(
                    (de_b, de_a, pixel_de(out, base[meth]) if meth in base else np.nan, acc_orig, acc_ch, acc_c))
                per_image.setdefault((optics, meth), {})[stem] = (acc_orig, acc_ch, acc_c)
            print(f"{stem} {optics} done", file=sys.stderr)

    # timing on full-size images
    times = []
    for stem in args.images[:args.timing_images]:
        im = read_image(DATA / "imgs" / "train" / f"{stem}.jpg")
        gt = read_mask(DATA / "masks" / "train" / f"{stem}.png")
        ann = partial_annotation(gt, fraction=args.fraction, seed=0)
        ch = simulate_optics(im, "other-camera")
        for meth in methods:
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                corr = fit_correction(class_means(ch, ann), reference, method=meth)
            except ValueError:
                continue
            apply_correction(ch, corr)
            times.append((stem, meth, im.shape, time.perf_counter() - w0, time.process_time() - c0))

    lines = ["# Colour calibration benchmark", "",
             f"Command: `.venv/bin/python bench/calibration.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, shared with other jobs "
             f"(load average {os.getloadavg()[0]:.1f} at the end); Python {platform.python_version()}.", "",
             f"Images: held-out {', '.join(args.images)} (subsampled by {args.step}); "
             f"{int(args.fraction * 100)} % of each image marked from its true mask; reference colours: {ref_label}.",
             "", "| optics | method | n | ΔE00 marked before | ΔE00 marked after | pixel ΔE00 vs corrected original |"
             " acc. original | acc. changed | acc. corrected | corrected / original |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (optics, meth), v in rows.items():
        a = np.array(v, dtype=float)
        m = np.nanmean(a, axis=0) if len(a) else [np.nan] * 6

        def f(x):
            return "–" if not np.isfinite(x) else f"{x:.3f}"

        ratio = m[5] / m[3] if model else np.nan
        lines.append(f"| {optics} | {meth} | {len(a)} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.2f} | {f(m[3])} | "
                     f"{f(m[4])} | {f(m[5])} | {f(ratio)} |")
    if model:
        lines += ["", "## Per image: pixel accuracy original → changed → corrected", "",
                  "| optics | method | " + " | ".join(args.images) + " |", "|---|---|" + "---|" * len(args.images)]
        for (optics, meth), d in per_image.items():
            cells = [(f"{d[s][0]:.3f}→{d[s][1]:.3f}→{d[s][2]:.3f}" if s in d else "–") for s in args.images]
            lines.append(f"| {optics} | {meth} | " + " | ".join(cells) + " |")
    if not model:
        lines += ["", "Pixel accuracy: not measured here (no model given); run again with `--model models/default`."]
    lines += ["", "## Time per full-size image (class means + fit + apply, decoding excluded)", "",
              "| image | method | size | wall s | CPU s |", "|---|---|---|---|---|"]
    for stem, meth, shape, w, c in times:
        lines.append(f"| {stem} | {meth} | {shape[1]}x{shape[0]} | {w:.2f} | {c:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    json.dumps({})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
