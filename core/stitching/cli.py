"""Stitch overlapping tiles into one panorama at the tiles' pixel size.

Example::

    python -m core stitch tile_*.jpg --grid 5x5 --out pano.tif --json pano.json

Tiles are given in row-major order when ``--grid`` is used; without it every
pair is tried and the overlapping ones are found automatically. ``--json``
writes ``{"tiles": {name: {"H": 3x3}}, "rmse_px", "seconds", "size": [W, H]}``,
where ``H`` maps a tile pixel (x, y, 1), pixel centres at integers, to
panorama pixels; a tile is named by its file name, or by as much of its path
as tells it from another of the same file name (``row2/01.jpg``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import add_pixel_size, add_white_level

__all__ = ["configure", "run"]

_OUT_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")


def configure(parser: argparse.ArgumentParser) -> None:
    from .adjust import MODELS
    from .compose import BLENDERS, SEAMS
    from .matchers import MATCHERS

    parser.add_argument("tiles", nargs="+", metavar="TILE", help="tile images (row-major order with --grid)")
    parser.add_argument("--out", required=True, metavar="PANO", help="output panorama (.tif for large ones, .jpg, .png)")
    parser.add_argument("--json", metavar="FILE", help="write tile transforms, residual and timing as JSON")
    parser.add_argument("--grid", metavar="ROWSxCOLS", help="tile layout, row-major (only neighbours are matched)")
    parser.add_argument("--matcher", default="phase", metavar="NAME", help=f"pairwise matcher: {', '.join(MATCHERS.names())} (default phase)")
    parser.add_argument("--weights", metavar="FILE", help="local weight file(s) for loftr / disk_lightglue")
    parser.add_argument("--model", default="similarity", metavar="NAME", help=f"tile transform: {', '.join(MODELS.names())} (default similarity)")
    parser.add_argument("--no-refine", action="store_true", help="use feature matches as they are (no sub-pixel block refinement)")
    parser.add_argument("--flat-field", metavar="IMAGE", help="photograph of a blank field; tiles are divided by its illumination")
    parser.add_argument("--lens", metavar="FILE", help="JSON lens calibration (camera_matrix, dist_coeffs) to undistort tiles")
    parser.add_argument("--seam", default="graphcut", metavar="NAME", help=f"seam finder: {', '.join(SEAMS.names())} (default graphcut)")
    parser.add_argument("--blender", default="multiband", metavar="NAME", help=f"blender: {', '.join(BLENDERS.names())} (default multiband)")
    parser.add_argument("--no-gain", action="store_true", help="no exposure compensation")
    parser.add_argument("--no-vignetting", action="store_true", help="no vignetting compensation")
    parser.add_argument("--preview", metavar="FILE", help="also write a downscaled JPEG preview")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    add_white_level(parser, "tiles")
    add_pixel_size(parser, "panorama (.tif or .png)", default="the pixel size every tile records, if they agree")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np

    from .. import io as cio
    from .adjust import MODELS, UnmatchedTiles
    from .compose import BLENDERS, SEAMS
    from .correction import apply_flat_field, flat_field_gain, read_lens, undistort
    from .matchers import MATCHERS
    from .pipeline import identical_tiles, parse_grid, stitch, tile_names

    t0 = time.perf_counter()
    out = Path(args.out)
    if out.suffix.lower() not in _OUT_SUFFIXES:
        raise ValueError(f"{out}: unsupported output type; use .tif, .jpg or .png")
    grid = parse_grid(args.grid)
    MATCHERS.get(args.matcher)
    MODELS.get(args.model)
    SEAMS.get(args.seam)
    BLENDERS.get(args.blender)
    if len(args.tiles) < 2:
        raise ValueError("give at least two tiles")
    if grid is not None and grid[0] * grid[1] != len(args.tiles):
        raise ValueError(f"a {args.grid} grid holds {grid[0] * grid[1]} tiles but {len(args.tiles)} were given")
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    gain = None
    if args.flat_field:
        blank = cio.read_image(args.flat_field, dtype="float32", max_value=args.white_level) * 255.0
        try:
            gain = flat_field_gain(blank)
        except ValueError as e:
            raise ValueError(f"{args.flat_field}: {e}") from None
    lens = read_lens(args.lens) if args.lens else None
    tiles = []
    if args.pixel_size is not None:
        pixel_um = cio.check_pixel_size(args.pixel_size, "--pixel-size")
    else:
        pixel_um = cio.common_pixel_size(cio.read_pixel_size(p) for p in args.tiles)
    for p in args.tiles:
        t = cio.read_image(p, max_value=args.white_level)
        if lens is not None:
            t = undistort(t, lens)
        if gain is not None:
            t = apply_flat_field(t, gain)
        tiles.append(t)
    same = identical_tiles(tiles)
    if same is not None:
        a, b = args.tiles[same[0]], args.tiles[same[1]]
        raise ValueError(f"{a} is given twice; give every tile once" if a == b else
                         f"{a} and {b} are the same picture; give every tile once")
    say(f"read {len(tiles)} tiles in {time.perf_counter() - t0:.1f} s")

    last = {}

    def progress(stage, frac):
        if last.get(stage) is None or frac >= 1.0:
            say(f"{stage}: {'done' if frac >= 1.0 else 'started'}")
            last[stage] = frac

    def allocate(size):
        w, h = size
        if out.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            out.parent.mkdir(parents=True, exist_ok=True)
            return tifffile.memmap(str(out), shape=(h, w, 3), dtype=np.uint8, photometric="rgb",
                                   bigtiff=w * h * 3 > 2 ** 31, **cio.tiff_resolution(pixel_um))
        if out.suffix.lower() in (".jpg", ".jpeg") and max(w, h) > 65500:
            raise ValueError(f"a {w}x{h} panorama is too large for JPEG; write .tif instead")
        return None

    try:
        res = stitch(tiles, grid=grid, matcher=args.matcher, model=args.model, refine=not args.no_refine,
                     weights=args.weights, gain=not args.no_gain, vignetting=not args.no_vignetting,
                     seam=args.seam, blender=args.blender, out=allocate, progress=progress)
    except UnmatchedTiles as e:  # named by file, as the user gave them
        raise ValueError(e.explain("give the right --grid", tile_names(args.tiles))) from None
    pano = res.panorama
    if isinstance(pano, np.memmap):
        pano.flush()
    else:
        cio.write_image(out, pano, pixel_um=pixel_um)
    if args.preview:
        cio.write_image(args.preview, cio.display_copy(np.asarray(pano), 2000), quality=90)
    seconds = time.perf_counter() - t0
    if args.json:
        rec = res.to_json(tile_names(args.tiles))
        rec["seconds"] = round(seconds, 3)
        rec["rejected_pairs"] = [[int(i), int(j), why] for i, j, why in res.alignment.rejected]
        rec["pixel_size_um"] = pixel_um
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rec, indent=1))
    w, h = res.alignment.size
    say(f"{out}: {w}x{h} px from {len(tiles)} tiles, {len(res.alignment.pairs)} pairs, "
        f"residual {res.rmse_px:.3f} px, {seconds:.1f} s" + (f", {pixel_um:g} µm/px" if pixel_um else ""))
    return 0
