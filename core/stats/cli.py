"""Modal mineralogy, grain sizes and associations from class masks.

Example::

    python -m core stats masks/*.png --pixel-size 0.53 --json stats.json --csv stats/ --report report.html
    python -m core stats masks/DH12-41m masks/DH12-57m --samples folders --report compare.html
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("masks", nargs="+", metavar="MASK",
                   help="8-bit PNG masks of LumenStone class codes (255 = unlabelled), or folders of them; the total "
                        "pools them all (images of one sample; give a stitched panorama as one mask so that no grain "
                        "is cut in two)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in µm per pixel (from a stage-micrometer calibration), for every mask; default: "
                        "the pixel size each mask file records (OreLens writes it into the masks of images whose "
                        "pixel size it knows)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the statistics as JSON")
    p.add_argument("--csv", metavar="DIR", default=None, help="write modal, grain, size-class and association tables as CSV")
    p.add_argument("--xlsx", metavar="FILE", default=None, help="write the same tables as an XLSX workbook")
    p.add_argument("--report", metavar="FILE.html", default=None, help="write a self-contained HTML report")
    p.add_argument("--title", default=None, metavar="TEXT", help="the report's title")
    p.add_argument("--notes", default=None, metavar="TEXT",
                   help="text under the report's title (project, sample, operator); a blank line starts a paragraph")
    p.add_argument("--images", nargs="+", metavar="IMAGE", default=None,
                   help="photographs (or folders of them) matching the masks by file stem, shown in the report")
    p.add_argument("--enclosed", type=float, default=90.0, metavar="PCT",
                   help="a grain is enclosed in a class (free in the gangue, or an inclusion in another mineral) "
                        "from this %% of its boundary against it (default 90; 50-100)")
    p.add_argument("--samples", default=None, metavar="FILE.csv|folders|names",
                   help="compare samples: a CSV of two columns, mask (its file name, stem or path as given) and "
                        "sample; 'folders' to take each mask's folder name as its sample; or 'names' for its name "
                        "up to the last '-', '_' or space (DH12-41m-01 -> DH12-41m). Each sample is then pooled on "
                        "its own beside the total, in every output")
    p.add_argument("--border", default="exclude", metavar="POLICY",
                   help="grains cut by the image edge: exclude (default) or keep")
    p.add_argument("--perimeter", default="crofton", metavar="METHOD",
                   help="perimeter estimator: crofton (default) or pixel-edges")
    p.add_argument("--series", default="sqrt2", metavar="SERIES", help="size classes: sqrt2 (default) or 2")
    p.add_argument("--gangue-density", type=float, default=2.7, metavar="G_CM3",
                   help="density of the non-metallic class in g/cm³ for weight %% and element grades (default 2.7; "
                        "quartz 2.65, calcite 2.71)")


def _label(code: str) -> str:
    from ..minerals import by_code

    try:
        return by_code(int(code)).label
    except ValueError:
        return "?"


def _unique_stems(paths) -> list[str]:
    stems, seen = [], {"total": 1}  # "total" names the pooled rows: a mask total.png is reported as total-2
    for p in paths:
        s = Path(p).stem
        if s in seen:
            seen[s] += 1
            s = f"{s}-{seen[s]}"
        else:
            seen[s] = 1
        stems.append(s)
    return stems


def read_samples(spec: str, masks: list, stems: list[str]) -> dict[str, str]:
    """Mask stem -> sample from ``--samples`` (a CSV file, ``folders`` or ``names``); ``ValueError`` naming what is
    wrong."""
    import csv
    import io

    from .pointcount import csv_delimiter
    from .summary import sample_from_name

    if spec == "folders":
        return {stem: Path(p).resolve().parent.name for p, stem in zip(masks, stems)}
    if spec == "names":
        return {stem: sample_from_name(Path(p).stem) for p, stem in zip(masks, stems)}
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--samples {spec}: no such file; give a CSV of mask,sample rows, 'folders' or 'names'")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
        rows = [r for r in csv.reader(io.StringIO(text), delimiter=csv_delimiter(text)) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"--samples {spec}: not a readable CSV file ({e})") from None
    if rows and len(rows[0]) >= 2 and rows[0][1].strip().lower() == "sample":
        rows = rows[1:]  # a header row
    keys = {}  # every name a mask may be given by -> the stems it could mean
    for p, stem in zip(masks, stems):
        for k in {str(p), Path(p).name, Path(p).stem, stem}:
            keys.setdefault(k, set()).add(stem)
    out = {}
    for i, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"--samples {spec}: row {i} is not 'mask,sample': {','.join(row)[:80]}")
        which = keys.get(row[0].strip())
        if not which:
            raise ValueError(f"--samples {spec}: row {i} names {row[0].strip()}, which is not one of the masks")
        if len(which) > 1:
            raise ValueError(f"--samples {spec}: row {i}: {row[0].strip()} names {len(which)} masks "
                             f"({', '.join(sorted(which))}); give its path as on the command line")
        out[next(iter(which))] = row[1].strip()
    return out


def run(args) -> int:
    from .. import io as cio
    from ..minerals import IGNORE
    from .measure import measure
    from .summary import Options, group_samples, half_width_text, summarize, tables

    options = Options(border=args.border, perimeter=args.perimeter, series=args.series,
                      gangue_density=args.gangue_density, enclosed=args.enclosed / 100)
    if args.pixel_size is not None:
        cio.check_pixel_size(args.pixel_size, "--pixel-size")
    masks = cio.expand_folders(args.masks, (".png", ".tif", ".tiff"), what="masks")
    sizes = [args.pixel_size if args.pixel_size is not None else cio.read_pixel_size(p) for p in masks]
    unknown = [Path(p).name for p, s in zip(masks, sizes) if s is None]
    if unknown:  # before anything is measured
        raise ValueError(f"{len(unknown)} mask(s) record no pixel size ({', '.join(unknown[:5])}"
                         f"{', …' if len(unknown) > 5 else ''}); give it with --pixel-size UM")
    stems = _unique_stems(masks)
    samples = None
    if args.samples:  # checked before anything is measured
        samples = read_samples(args.samples, masks, stems)
        group_samples(stems, samples)
    images = {}
    if args.images:
        images = {p.stem: p for p in cio.expand_folders(args.images)}
    results, thumbs = {}, {}
    for path, stem, pixel_um in zip(masks, stems, sizes):
        t0 = time.time()
        mask = cio.read_mask(path)
        if not (mask != IGNORE).any():  # nothing to measure: its area fractions would be 0 / 0
            raise ValueError(f"{path}: the mask holds no labelled pixel (every pixel is 255, unlabelled); leave it "
                             "out, or segment or annotate its image first")
        img = None
        if Path(path).stem in images:  # the photograph of this mask: it must match, report or not
            img = cio.read_image(images[Path(path).stem])
            if img.shape[:2] != mask.shape:
                raise ValueError(f"{images[Path(path).stem]}: image is {img.shape[1]}x{img.shape[0]} px but its "
                                 f"mask is {mask.shape[1]}x{mask.shape[0]} px")
        results[stem] = measure(mask, pixel_size=pixel_um)
        if args.report:
            from .report import thumbnail

            thumbs[stem] = thumbnail(image=img, mask=mask, pixel_um=pixel_um)
        del img
        del mask
        print(f"{stem}: {len(results[stem].grains)} grains at {pixel_um:g} µm/px, {time.time() - t0:.1f} s")
    summary = summarize(results, options=options, samples=samples)
    scopes = [("total", summary["total"])] + [(f"sample {k} ({len(e['images'])} image(s))", e)
                                              for k, e in (summary.get("samples") or {}).items()]
    for name, entry in scopes:
        if len(scopes) > 1:
            print(f"{name}:")
        ci = entry.get("area_fraction_ci95") or {}
        for c, f in sorted(entry["area_fraction"].items(), key=lambda kv: int(kv[0])):
            g = entry["grains"].get(c)
            extra = f", {g['count']} grains, d50 {g['d50_um']:.3g} µm" if g and g["count"] else ""
            pm = f" ± {half_width_text(100 * ci[c])}" if c in ci else ""
            print(f"  {c:>2} {_label(c):<4}: {100 * f:7.3f}{pm} area %, {100 * entry['mass_fraction'][c]:7.3f} wt %{extra}")
        if entry["element_grade"]:
            print(f"  calculated grade (gangue {options.gangue_density:g} g/cm³): " +
                  ", ".join(f"{el} {100 * g:.3g} %" for el, g in entry["element_grade"].items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.json}")
    tabs = None
    if args.csv or args.xlsx or args.report:
        tabs = tables(results, options=options, samples=samples)
    if args.csv:
        from .export import write_csv

        write_csv(tabs, args.csv)
        print(f"wrote {args.csv}/")
    if args.xlsx:
        from .export import xlsx_bytes

        Path(args.xlsx).parent.mkdir(parents=True, exist_ok=True)
        Path(args.xlsx).write_bytes(xlsx_bytes(tabs))
        print(f"wrote {args.xlsx}")
    if args.report:
        from .report import build_report

        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        from .report import DEFAULT_TITLE

        Path(args.report).write_text(build_report(summary, tabs, options=options, thumbnails=thumbs,
                                                  title=args.title or DEFAULT_TITLE, notes=args.notes),
                                     encoding="utf-8")
        print(f"wrote {args.report}")
    return 0
