"""Align crossed-polar (XPL) shots to the plane-polarised (PPL) image.

Writes every aligned XPL image into ``--out`` under its own file name, and
with ``--json`` the transforms: ``{"images": {"<XPL file name>": {"A": 2x3,
"inliers": .., "rmse_px": .., ...}}}`` where ``A`` maps an XPL pixel
``(x, y, 1)`` (pixel centres at integer coordinates) to PPL pixel
coordinates. A shot that cannot be aligned is reported (exit status 1) and
not written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    from .align import FEATURES, MODELS  # light: OpenCV only

    parser.add_argument("ppl", metavar="PPL", help="plane-polarised reference image")
    parser.add_argument("xpl", nargs="+", metavar="XPL", help="crossed-polar images (any stage angle)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the aligned XPL images (same file names)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write transforms, inliers and residuals to this JSON file")
    parser.add_argument("--maps", default=None, metavar="DIR",
                        help="also write anisotropy maps (range, std, angle of maximum brightness) into this folder")
    parser.add_argument("--features", default="sift", metavar="NAME",
                        help=f"keypoint detector: {', '.join(FEATURES.names())} (default sift)")
    parser.add_argument("--model", default="similarity", metavar="NAME",
                        help=f"transform model: {', '.join(MODELS.names())} (default similarity)")
    parser.add_argument("--no-refine", action="store_true", help="skip the full-resolution refinement")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from .. import io as cio
    from .align import FEATURES, MODELS, prepare, register, warp_to_reference
    from .anisotropy import anisotropy_maps, colour_angle

    FEATURES.get(args.features)
    MODELS.get(args.model)
    ppl_path = Path(args.ppl)
    xpl_paths = [Path(p) for p in args.xpl]
    names = [p.name for p in xpl_paths]
    if len(set(names)) != len(names):
        raise ValueError("two XPL images have the same file name; the aligned copies would overwrite each other")
    out = Path(args.out)
    inputs = {p.resolve() for p in [ppl_path, *xpl_paths] if p.exists()}
    if any((out / n).resolve() in inputs for n in names):
        raise ValueError(f"--out {out} would overwrite the input images; choose another folder")
    ppl = cio.read_image(ppl_path)
    for path in xpl_paths:  # every shot readable before anything is aligned or written (decoded again below)
        cio.read_image(path)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"ppl": ppl_path.name, "convention": "A maps XPL pixel (x, y, 1), pixel centres at integers, "
                    "to PPL pixel coordinates", "features": args.features, "model": args.model, "images": {}}
    ref = prepare(ppl, features=args.features)
    failed = 0
    aligned, angles, valid = [], [], np.ones(ppl.shape[:2], bool)
    for path in tqdm(xpl_paths, desc="register", disable=args.quiet, file=sys.stderr):
        xpl = cio.read_image(path)
        r = register(ref, xpl, model=args.model, refine=not args.no_refine)
        entry = r.as_dict()
        if not r.ok:
            failed += 1
            entry["A"] = None
            sys.stderr.write(f"{path.name}: not aligned: {r.message}\n")
        else:
            warped, cover = warp_to_reference(xpl, r.A, ppl.shape[:2], return_valid=True)
            cio.write_image(out / path.name, warped)
            aligned.append(warped)
            angles.append(r.angle_deg)
            valid &= cover
        report["images"][path.name] = entry
    if args.maps and len(aligned) >= 2:
        maps_dir = Path(args.maps)
        maps_dir.mkdir(parents=True, exist_ok=True)
        m = anisotropy_maps(aligned, angles=angles, valid=valid)
        hi = max(float(np.percentile(m.range[valid], 99.5)) if valid.any() else 1.0, 1.0)
        cio.write_image(maps_dir / "anisotropy_range.png", np.clip(m.range / hi * 255, 0, 255).astype(np.uint8))
        cio.write_image(maps_dir / "anisotropy_std.png", np.clip(m.std / hi * 510, 0, 255).astype(np.uint8))
        if m.angle_max is not None:
            cio.write_image(maps_dir / "anisotropy_angle.png", colour_angle(m.angle_max, m.amplitude))
        f16 = {k: v.astype(np.float16) for k, v in (("range", m.range), ("std", m.std), ("mean", m.mean),
                                                   ("angle_max", m.angle_max), ("amplitude", m.amplitude))
               if v is not None}
        np.savez_compressed(maps_dir / "anisotropy.npz", valid=m.valid, **f16)
        report["maps"] = str(maps_dir)
    elif args.maps:
        sys.stderr.write("anisotropy maps need at least 2 aligned XPL images; none written\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    for name, e in report["images"].items():
        if e["ok"]:
            print(f"{name}: angle {e['angle_deg']:.2f} deg, {e['inliers']} inliers, rmse {e['rmse_px']:.3f} px")
    if failed:
        sys.stderr.write(f"{failed} of {len(xpl_paths)} XPL images could not be aligned\n")
        return 1
    return 0
