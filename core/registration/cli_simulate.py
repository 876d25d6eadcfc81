"""Build a SIMULATED crossed-polar (XPL) training set from a LumenStone-layout dataset.

For every image with a mask, renders a rotation series of XPL-like shots from the
plane-polarised photograph and its mask (isotropic minerals stay dark; anisotropic
ones brighten with a 90-degree period, each grain with its own orientation; the
stage turns about an off-centre point, slides, is re-lit, noise is added) and writes

    <out>/imgs/<split>/<stem>.jpg         the photograph (copied)
    <out>/masks/<split>/<stem>.png        its mask (copied)
    <out>/xpl/<split>/<stem>/xpl_NN.jpg   the simulated shots, unaligned
    <out>/SIMULATED.txt                   what the data is and how it was made

which ``python -m core train --data <out> --xpl compact`` trains on. Everything
written is labelled as simulated; no real crossed-polar photograph is involved.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="LumenStone-layout dataset (imgs/, masks/)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new dataset folder to write")
    parser.add_argument("--shots", type=int, default=6, help="XPL shots per image (default 6)")
    parser.add_argument("--step", type=float, default=15.0, help="stage rotation between shots, degrees (default 15)")
    parser.add_argument("--max-shift", type=float, default=40.0, help="largest stage slide, pixels (default 40)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="also shrink the photographs and masks by this factor (default 1: full size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import io as cio
    from .simulate import SIMULATED_LABEL, simulate_xpl_series

    if not 2 <= args.shots <= 36:
        raise ValueError(f"--shots must be between 2 and 36, got {args.shots}")
    if not 0.05 <= args.scale <= 1.0:
        raise ValueError(f"--scale must be between 0.05 and 1, got {args.scale}")
    src, out = Path(args.data), Path(args.out)
    items = cio.list_dataset(src)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError("--out must be a new folder outside --data")
    for k, it in enumerate(tqdm(items, desc="simulate XPL", disable=args.quiet)):
        rel = it.image.parent.relative_to(src / "imgs")
        img = cio.read_image(it.image)
        mask = cio.read_mask(it.mask, shape=img.shape[:2])
        img, mask = cio.rescale_pair(img, mask, args.scale)
        sim = simulate_xpl_series(img, mask, n_shots=args.shots, step_deg=args.step, max_shift=args.max_shift,
                                  seed=args.seed * 100_003 + k)
        (out / "imgs" / rel).mkdir(parents=True, exist_ok=True)
        (out / "masks" / rel).mkdir(parents=True, exist_ok=True)
        shots = out / "xpl" / rel / it.stem
        shots.mkdir(parents=True, exist_ok=True)
        if args.scale == 1.0 and it.image.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copyfile(it.image, out / "imgs" / rel / f"{it.stem}.jpg")
        else:
            (out / "imgs" / rel / f"{it.stem}.jpg").write_bytes(cio.encode_jpeg(img, quality=95))
        (out / "masks" / rel / f"{it.stem}.png").write_bytes(cio.encode_png(mask))
        for j, shot in enumerate(sim.xpl):
            (shots / f"xpl_{j:02d}.jpg").write_bytes(cio.encode_jpeg(shot, quality=95))
    (out / "SIMULATED.txt").write_text(
        f"{SIMULATED_LABEL}\n\nMade by `python -m core simulate-xpl` from {src.name}: "
        + json.dumps({"shots": args.shots, "step_deg": args.step, "max_shift_px": args.max_shift,
                      "scale": args.scale, "seed": args.seed, "images": len(items)}) + "\n")
    print(f"{len(items)} image(s) with {args.shots} simulated XPL shots each written to {out} (SIMULATED data)")
    return 0
