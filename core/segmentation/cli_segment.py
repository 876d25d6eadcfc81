"""Segment images into 8-bit masks of LumenStone class codes."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photographs (JPEG, PNG, TIFF)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <stem>.png masks")
    p.add_argument("--model", metavar="DIR", default=None, help="model folder (default: models/default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--xpl", nargs="+", metavar="IMAGE", default=None,
                   help="crossed-polar shots of the single IMAGE (aligned to it automatically) for models trained with XPL channels")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.jpg")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write per-image class areas, timing and the colour check")
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
    p.add_argument("--no-assemblage", action="store_true",
                   help="allow any minerals together (by default minerals never seen in one training photograph, "
                        "e.g. pyrite with pyrrhotite for the default model, are not predicted together)")


def run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .. import io as cio
    from .infer import predict
    from .model import load_model
    from .refine import resolve_refine

    out = Path(args.out)
    model = load_model(args.model, device=args.device)
    resolve_refine(model.config, args.refine)  # an unknown method fails before any image is read
    if args.xpl and len(args.images) != 1:
        raise ValueError("--xpl needs exactly one plane-polarised IMAGE")
    minerals = None
    if args.minerals is not None:
        from .assemblage import parse_minerals

        minerals = parse_minerals(args.minerals, model.classes)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": model.name, "images": {}}
    for path in tqdm(args.images, desc="segment", unit="image", disable=len(args.images) < 2):
        t0 = time.time()
        image = cio.read_image(path)
        extra = None
        if args.xpl:
            from ..registration import xpl_extra

            stack = [cio.read_image(x) for x in args.xpl]
            extra, _ = xpl_extra(model.config, image, stack)
        elif model.in_channels > 3:
            raise ValueError(f"model {model.name} was trained with XPL channels: give the crossed-polar shots with --xpl")
        pred = predict(model, image, extra=extra, batch_size=args.batch_size,
                       balance=False if args.no_auto_balance else None, minerals=minerals,
                       assemblage=False if args.no_assemblage else None, refine=args.refine)
        stem = Path(path).stem
        cio.write_mask(out / f"{stem}.png", pred.labels)
        if args.overlay:
            cio.write_image(out / f"{stem}_overlay.jpg", cio.overlay(image, pred.labels, 0.5))
        counts = np.bincount(pred.labels.ravel(), minlength=256)
        report["images"][stem] = {
            "seconds": round(time.time() - t0, 3),
            "size": [image.shape[1], image.shape[0]],
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
        print(f"{stem}: {out / (stem + '.png')} ({report['images'][stem]['seconds']:.1f} s{note})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
