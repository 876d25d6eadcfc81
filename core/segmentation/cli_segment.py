"""Segment images into 8-bit masks of LumenStone class codes."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..cli import add_pixel_size, add_white_level, make_folder


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="photographs (JPEG, PNG, TIFF, BMP), or folders of them (every image file in the folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <stem>.png masks")
    p.add_argument("--model", metavar="DIR", default=None, help="model folder (default: models/default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--xpl", nargs="+", metavar="IMAGE", default=None,
                   help="crossed-polar shots of the single IMAGE (aligned to it automatically) for models trained with XPL channels")
    p.add_argument("--overlay", action="store_true",
                   help="also write <stem>_overlay.jpg (with a scale bar when the pixel size is known)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="tiles per forward pass (default 4)")
    add_white_level(p)
    add_pixel_size(p, "masks, for the statistics")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write per-image class areas, timing, the colour check and the unsure share (where the "
                        "two likeliest minerals are less than 0.5 apart; the images most worth checking have most)")
    p.add_argument("--no-auto-balance", action="store_true",
                   help="never correct colours automatically (by default a strong colour cast is corrected before "
                        "segmenting, and an image whose mineral colours are far from the training images' is "
                        "balanced from its surest pixels and segmented again); use it for images already "
                        "colour-calibrated from marks")
    p.add_argument("--minerals", metavar="LIST", default=None,
                   help="the minerals the sample can hold, as labels or codes (e.g. 'po,pn,ccp,mag'); no other "
                        "mineral is predicted. Non-metallic (0) is always kept")
    p.add_argument("--refine", default=None, metavar="METHOD",
                   help="edge refinement: crf (sharper outlines), guided (faster), none; default: the model's "
                        "config")
    p.add_argument("--no-pixel-expert", action="store_true",
                   help="leave out the second opinion per pixel (the model's pixel expert, where it has one)")
    p.add_argument("--no-assemblage", action="store_true",
                   help="allow any minerals together (by default minerals never seen in one training photograph, "
                        "e.g. pyrite with pyrrhotite for the default model, are not predicted together)")


def expand_images(items: list[str]) -> list[Path]:
    """The image files named by ``items``: files as given, folders by their image files (sorted by name).

    Raises ValueError for a folder without images and for two images whose masks would share a name.
    """
    from ..io import expand_folders

    paths = expand_folders(items)
    seen: dict[str, Path] = {}  # stem -> the one file of that name (a file given twice is taken once)
    for p in paths:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise ValueError(f"{seen[p.stem]} and {p} would both be written as {p.stem}.png; rename one of them")
        seen.setdefault(p.stem, p)
    return list(seen.values())


def run(args) -> int:
    import sys

    import numpy as np
    from tqdm import tqdm

    from .. import io as cio
    from ..annotation.uncertainty import unsure_share
    from .infer import predict
    from .model import load_model
    from .refine import resolve_refine

    out = Path(args.out)
    paths = expand_images(args.images)
    if args.pixel_size is not None:
        cio.check_pixel_size(args.pixel_size, "--pixel-size")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1 tile per forward pass, not {args.batch_size}")
    model = load_model(args.model, device=args.device)
    resolve_refine(model.config, args.refine)  # an unknown method fails before any image is read
    if args.xpl and len(paths) != 1:
        raise ValueError("--xpl needs exactly one plane-polarised IMAGE")
    if model.in_channels > 3 and not args.xpl:
        raise ValueError(f"model {model.name} was trained with XPL channels: give the crossed-polar shots with --xpl")
    minerals = None
    if args.minerals is not None:
        from .assemblage import parse_minerals

        minerals = parse_minerals(args.minerals, model.classes)
    make_folder(out, "--out")
    if args.json:
        make_folder(Path(args.json).parent, "--json")  # before the images, not after them
    report = {"model": model.name, "images": {}, "failed": {}}
    for path in tqdm(paths, desc="segment", unit="image", disable=len(paths) < 2):
        t0 = time.time()
        stem = path.stem
        try:
            image = cio.read_image(path, max_value=args.white_level)
            extra = None
            if args.xpl:
                from ..registration import xpl_extra

                stack = [cio.read_image(x) for x in args.xpl]
                extra, _ = xpl_extra(model.config, image, stack)
            pred = predict(model, image, extra=extra, batch_size=args.batch_size,
                           balance=False if args.no_auto_balance else None, minerals=minerals,
                           assemblage=False if args.no_assemblage else None, refine=args.refine,
                           pixel_expert=False if args.no_pixel_expert else None)
        except (ValueError, MemoryError) as e:
            if len(paths) == 1:
                raise
            # one bad photograph does not stop a batch: the others are still segmented
            why = str(e) if isinstance(e, ValueError) else f"{path.name}: not enough memory to segment it"
            report["failed"][stem] = why
            tqdm.write(f"skipped: {why}", file=sys.stderr)
            continue
        pixel_um = args.pixel_size if args.pixel_size is not None else cio.read_pixel_size(path)
        cio.write_mask(out / f"{stem}.png", pred.labels, pixel_um=pixel_um)
        if args.overlay:
            ov = cio.overlay(image, pred.labels, 0.5)
            if pixel_um is not None:
                from ..scalebar import draw_scale_bar

                ov = draw_scale_bar(ov, pixel_um)
            cio.write_image(out / f"{stem}_overlay.jpg", ov)
        counts = np.bincount(pred.labels.ravel(), minlength=256)
        unsure = unsure_share(pred.probs)
        report["images"][stem] = {
            "unsure": unsure,
            "seconds": round(time.time() - t0, 3),
            "size": [image.shape[1], image.shape[0]],
            "pixel_size_um": pixel_um,
            "area_fraction": {str(c): float(counts[c] / pred.labels.size) for c in np.flatnonzero(counts)},
            "colour": pred.colour.as_dict() if pred.colour is not None else None,
            "minerals": pred.assemblage.as_dict() if pred.assemblage is not None else None,
        }
        note = ""
        if pred.colour is not None and pred.colour.cast is not None:
            note += "; strong colour cast corrected first (gains " + " ".join(f"{g:.2f}" for g in pred.colour.cast) + ")"
        if pred.colour is not None and pred.colour.applied:
            note += (f"; colours off by dE00 {pred.colour.drift:.1f}, white-balanced automatically (gains "
                    + " ".join(f"{g:.2f}" for g in pred.colour.gains) + ")")
        elif pred.colour is not None and pred.colour.note:
            note += f"; colours off by dE00 {pred.colour.drift:.1f}, {pred.colour.note}"
        if pred.assemblage is not None and pred.assemblage.describe():
            note += "; " + pred.assemblage.describe()
        print(f"{stem}: {out / (stem + '.png')} ({report['images'][stem]['seconds']:.1f} s; "
              f"{100 * unsure:.1f} % unsure{note})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if report["failed"]:
        raise ValueError(f"{len(report['failed'])} of {len(paths)} images could not be segmented (named above); "
                         f"the masks of the other {len(report['images'])} are in {out}")
    return 0
