"""Propagate scribbles into a full mask of LumenStone codes with multi-scale superpixels."""
from __future__ import annotations

import argparse

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    from .propagate import DEFAULT_METHOD, METHODS

    parser.add_argument("image", metavar="IMAGE", help="the photograph (JPEG, PNG or TIFF)")
    parser.add_argument("--scribbles", required=True, metavar="MASK",
                        help="8-bit PNG of LumenStone codes where strokes were drawn, 255 elsewhere")
    parser.add_argument("--out", required=True, metavar="MASK", help="output PNG: a full mask of codes")
    parser.add_argument("--method", default=DEFAULT_METHOD, metavar="NAME",
                        help=f"propagation method: {', '.join(METHODS.names())} (default {DEFAULT_METHOD})")
    from ..cli import add_white_level

    add_white_level(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from .. import io as cio
    from .propagate import METHODS, propagate

    from pathlib import Path

    from ..cli import make_folder

    METHODS.get(args.method)
    make_folder(Path(args.out).parent, "--out")
    t0 = time.time()
    image = cio.read_image(args.image, max_value=args.white_level)
    scribbles = cio.read_mask(args.scribbles, shape=image.shape[:2])
    result = propagate(image, scribbles, method=args.method)
    cio.write_mask(args.out, result.mask, pixel_um=cio.read_pixel_size(args.image))  # for `stats`
    sys.stdout.write(f"{args.out}: {image.shape[1]}x{image.shape[0]} px, classes {result.classes}, "
                     f"{(scribbles != 255).mean() * 100:.2f}% scribbled, {time.time() - t0:.1f} s\n")
    return 0
