"""Point counting: lay a grid of points over a photograph, and check a mask against a count.

    python -m core pointcount grid IMAGE --points 300 --out points.csv [--seed S] [--margin PX] [--mask MASK]
    python -m core pointcount check points.csv... --mask MASK... [--json FILE]

``grid`` writes the points (x, y in pixels of the photograph) with empty calls, ready to be filled in with
what the microscope shows at each point (a class code, a label such as ccp, a name, or "cannot tell"); the
Segment page's count downloads the same file. ``check`` prints the count's area % with 95 % intervals and, against
the mask (a segmentation, say), the agreement, Cohen's kappa and each mineral's recall and precision; several
counts (the fields of one sample, each with its mask) are also pooled into one.
"""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True, parser_class=type(parser))
    g = sub.add_parser("grid", help="write a grid of points over a photograph as CSV")
    g.add_argument("image", metavar="IMAGE", help="the photograph (or a mask) whose size the grid covers")
    g.add_argument("--points", type=int, default=300, metavar="N", help="about how many points (default 300)")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="start the grid at a random place within its first cell (default: at the cell's centre)")
    g.add_argument("--margin", type=int, default=0, metavar="PX", help="keep the points this far from the edges")
    g.add_argument("--mask", default=None, metavar="MASK.png",
                   help="also write this mask's class at each point (mask_code, mask columns)")
    g.add_argument("--out", required=True, metavar="POINTS.csv", help="the CSV to write")
    c = sub.add_parser("check", help="area %% of a count with intervals, and a mask's agreement with it")
    c.add_argument("points", metavar="POINTS.csv", nargs="+",
                   help="x, y and call_code or call per point; several counts (fields of one sample) are also "
                        "pooled into one")
    c.add_argument("--mask", default=None, metavar="MASK.png", nargs="+",
                   help="the mask to check each count against, in the same order (8-bit PNG of class codes, e.g. "
                        "from segment)")
    c.add_argument("--json", default=None, metavar="FILE",
                   help='also write the figures as JSON: {"counts": {file: figures}, "pooled": figures or null}')


def _size(path: str) -> tuple[int, int]:
    from .. import io as cio

    return cio.read_image(path).shape[:2]


def _pct(v) -> str:
    return "" if v is None else f"{v:.2f}"


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from .. import io as cio
    from .pointcount import check, grid_points, points_csv, pool_checks, read_points_csv

    if args.action == "grid":
        labels = cio.read_mask(args.mask) if args.mask else None
        shape = labels.shape if labels is not None else _size(args.image)
        if labels is not None and _size(args.image) != labels.shape:
            raise ValueError(f"{args.mask} is not the size of {args.image}")
        pts = grid_points(shape, args.points, seed=args.seed, margin=args.margin)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(points_csv(pts, [-1] * len(pts), labels))
        sys.stdout.write(f"{out}: {len(pts)} points over {shape[1]}×{shape[0]} px\n")
        return 0
    masks = args.mask or []
    if masks and len(masks) != len(args.points):
        raise ValueError(f"{len(args.points)} point lists but {len(masks)} masks: give one mask per list, in order")
    if args.json:
        from ..cli import make_folder

        make_folder(Path(args.json).parent, "--json")
    results = {}
    for i, path in enumerate(args.points):
        labels = cio.read_mask(masks[i]) if masks else None
        pts, calls = read_points_csv(Path(path).read_bytes(), labels.shape if labels is not None else None)
        results[path] = check(pts, calls, labels)
    pooled = pool_checks(results.values()) if len(results) > 1 else None
    for title, res in list(results.items()) + ([(f"pooled ({len(results)} counts)", pooled)] if pooled else []):
        _print(title, res, bool(masks))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": results, "pooled": pooled}, indent=1))
    return 0


def _print(title: str, res: dict, with_mask: bool) -> None:
    import sys

    w = sys.stdout.write
    w(f"{title}: {res['points']} points, {res['called']} counted, {res['cannot_tell']} cannot tell, "
      f"{res['not_called']} not called\n")
    head = f"{'mineral':<28}{'points':>7}{'area %':>9}{'95 % interval':>17}"
    if with_mask:
        head += f"{'mask %':>9}{'inside':>8}{'recall':>8}{'precision':>11}"
    w(head + "\n")
    for r in res["minerals"]:
        line = f"{r['mineral']:<28}{r['points']:>7}{_pct(r['percent']):>9}"
        line += f"{(_pct(r['low']) + '–' + _pct(r['high'])) if r['low'] is not None else '':>17}"
        if with_mask:
            inside = "" if r["inside"] is None else ("yes" if r["inside"] else "no")
            line += f"{_pct(r['mask_percent']):>9}{inside:>8}{_ratio(r['recall']):>8}{_ratio(r['precision']):>11}"
        w(line + "\n")
    if not res["called"]:
        w("no point is called yet: fill in the call_code or call column\n")
    elif with_mask:
        if res["agreement"] is None:
            w("agreement: no counted point lies on a labelled pixel of the mask\n")
        else:
            kappa = "" if res["kappa"] is None else f", Cohen's kappa {res['kappa']:.3f}"
            w(f"agreement: {res['agreement'] * 100:.1f} % of the counted points (95 % interval "
              f"{res['agreement_low'] * 100:.1f}–{res['agreement_high'] * 100:.1f} %){kappa}\n")


def _ratio(v) -> str:
    return "" if v is None else f"{v:.3f}"
