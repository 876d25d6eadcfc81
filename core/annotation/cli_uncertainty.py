"""Map where the segmentation model is unsure (8-bit PNG, 0 = certain, 255 = most uncertain)."""
from __future__ import annotations

import argparse

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    from .uncertainty import DEFAULT_SCORE, SCORES

    parser.add_argument("image", metavar="IMAGE", help="the photograph (JPEG, PNG or TIFF)")
    parser.add_argument("--out", required=True, metavar="MAP.png", help="output 8-bit PNG uncertainty map")
    parser.add_argument("--fraction", type=float, default=0.10, metavar="F",
                        help="share of the image to mark as most worth labelling (default 0.10); the regions are "
                             "written next to MAP.png as <stem>_regions.png (255 = selected)")
    parser.add_argument("--model", default=None, metavar="DIR", help="model folder (default models/default)")
    parser.add_argument("--score", default=DEFAULT_SCORE, metavar="NAME",
                        help=f"uncertainty score: {', '.join(SCORES.names())} (default {DEFAULT_SCORE})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    from ..cli import add_white_level

    add_white_level(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from .. import io as cio
    from ..cli import make_folder
    from .uncertainty import SCORES, select_regions, to_uint8, uncertainty_map

    SCORES.get(args.score)
    if not 0.0 < args.fraction <= 1.0:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
    out = Path(args.out)
    make_folder(out.parent, "--out")
    import torch

    from ..segmentation import DEFAULT_MODEL_DIR, load_model, predict

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    if not (model_dir / "config.json").exists():
        raise ValueError(f"{model_dir}: no model there (needs config.json and weights.pt); give --model DIR")
    model = load_model(model_dir, device=args.device)
    image = cio.read_image(args.image, max_value=args.white_level)
    pred = predict(model, image)
    umap = uncertainty_map(pred.probs, shape=image.shape[:2], score=args.score)
    out.write_bytes(cio.encode_png(to_uint8(umap)))
    regions = select_regions(umap, fraction=args.fraction)
    reg_path = out.with_name(out.stem + "_regions.png")
    reg_path.write_bytes(cio.encode_png(regions.mask.astype(np.uint8) * 255))
    sys.stdout.write(f"{out}: mean uncertainty {float(umap.mean()):.3f}; {reg_path}: {len(regions.boxes)} regions "
                     f"covering {regions.fraction * 100:.1f}% of the image\n")
    return 0
