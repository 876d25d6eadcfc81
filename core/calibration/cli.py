"""Colour-correct images from a partial annotation of known minerals (and divide out the flat field).

Examples
--------
One image, its own partial mask::

    python -m core calibrate photo.jpg --annotation photo_marks.png --out corrected/

A session: one annotated image fixes the correction for all, flat field from a blank shot::

    python -m core calibrate session/*.jpg --annotation marks/ --series --flat-field blank.jpg \\
        --out corrected/ --json calibration.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import add_white_level

__all__ = ["configure", "run", "read_reference"]

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "models" / "default"


def configure(parser: argparse.ArgumentParser) -> None:
    from .flatfield import MIN_SERIES_IMAGES
    from .methods import DEFAULT_METHOD, LINEARISATIONS, METHODS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples", 1)[1].replace("--------\n", "", 1)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photographs to correct (JPEG, PNG, TIFF)")
    parser.add_argument("--annotation", required=True, metavar="PATH",
                        help="a partial mask (LumenStone codes, 255 = unmarked) or a folder of masks named like "
                             "the images (<stem>.png)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the corrected images (same names)")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), metavar="MODEL_DIR",
                        help="model folder whose config holds the reference colours (default: models/default); "
                             "a JSON file {code: [r, g, b]} also works")
    parser.add_argument("--method", default=DEFAULT_METHOD, metavar="NAME",
                        help="calibration method: " + ", ".join(METHODS.names()) + f" (default: {DEFAULT_METHOD})")
    parser.add_argument("--series", action="store_true",
                        help="fit one correction on the annotated image(s) and apply it to every image")
    parser.add_argument("--flat-field", metavar="IMAGE",
                        help="blank/mirror reference shot for flat-field correction, or 'auto' to estimate the "
                             f"flat field from the given images (at least {MIN_SERIES_IMAGES} of one size)")
    parser.add_argument("--linearisation", default="srgb", choices=LINEARISATIONS,
                        help="transfer curve used to linearise colours (default: srgb)")
    parser.add_argument("--json", metavar="FILE", help="write the matrices, CIEDE2000 before/after and timings")
    add_white_level(parser)


def read_reference(path: str | Path) -> dict:
    """Reference colours (code -> sRGB 0-255) from a model folder or a JSON file.

    Raises
    ------
    ValueError
        Missing folder or file, or no reference colours in it.
    """
    import numpy as np

    p = Path(path)
    cfg = p / "config.json" if p.is_dir() else p
    if not p.exists():
        hint = " (no default model is installed yet; train one or give --reference MODEL_DIR)" \
            if p.resolve() == DEFAULT_REFERENCE.resolve() else ""
        raise ValueError(f"{p}: reference model folder not found{hint}")
    if not cfg.is_file():
        raise ValueError(f"{p}: not a model folder (no config.json)")
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg}: not valid JSON ({e})") from None
    ref = data.get("reference_colors", data) if isinstance(data, dict) else None
    try:
        out = {int(k): np.asarray(v, np.float64).reshape(3) for k, v in (ref or {}).items()}
    except (TypeError, ValueError):
        out = {}
    if not out:
        raise ValueError(f"{cfg}: holds no reference colours (expected 'reference_colors': {{code: [r, g, b]}})")
    return out


def _is_8bit(arr) -> bool:
    import numpy as np

    sample = arr.reshape(-1, 3)[:: max(1, arr.size // 3 // 200_000)] * 255.0
    return bool(np.allclose(sample, np.round(sample), atol=2e-3))


def _read(path: Path, white_level: int | None = None):
    import numpy as np

    from core import io as cio

    arr = cio.read_image(path, dtype="float32", max_value=white_level)
    if path.suffix.lower() in (".jpg", ".jpeg", ".bmp") or _is_8bit(arr):
        return np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)
    return np.clip(np.rint(arr * 65535), 0, 65535).astype(np.uint16)


def _masks(ann: Path, images: list[Path], shapes: list[tuple], series: bool) -> dict[int, "object"]:
    from core import io as cio

    if ann.is_dir():
        found = {}
        for i, p in enumerate(images):
            m = ann / (p.stem + ".png")
            if m.exists():
                found[i] = cio.read_mask(m, shape=shapes[i])
        if not found:
            raise ValueError(f"{ann}: no mask named like any of the images (<stem>.png)")
        if not series and len(found) < len(images):
            missing = [images[i].name for i in range(len(images)) if i not in found]
            raise ValueError(f"{ann}: no mask for {', '.join(missing[:5])}; give every image a mask "
                             "or use --series")
        return found
    if not ann.exists():
        raise ValueError(f"{ann}: annotation not found")
    if len(images) > 1 and not series:
        raise ValueError("one annotation mask was given for several images; add --series to apply its correction "
                         "to all of them, or give a folder of masks named like the images")
    idx = next((i for i, p in enumerate(images) if p.stem == ann.stem), 0)
    return {idx: cio.read_mask(ann, shape=shapes[idx])}


def run(args: argparse.Namespace) -> int:
    import time

    from core import io as cio

    from .flatfield import flat_field_from_reference, flat_field_from_series
    from .methods import METHODS
    from .series import calibrate_images

    METHODS.get(args.method)
    reference = read_reference(args.reference)
    paths = [Path(p) for p in args.images]
    seen = set()
    for p in paths:
        if p.name in seen:
            raise ValueError(f"two input images are called {p.name}; their outputs would overwrite each other")
        seen.add(p.name)
    out_dir = Path(args.out)
    if any(p.resolve().parent == out_dir.resolve() for p in paths):
        raise ValueError(f"{out_dir}: the output folder holds the input images; choose another --out folder")
    t_read = time.perf_counter()
    images = [_read(p, args.white_level) for p in paths]
    t_read = (time.perf_counter() - t_read) / len(paths)
    masks = _masks(Path(args.annotation), paths, [im.shape[:2] for im in images], args.series)

    flat = None
    if args.flat_field:
        if args.flat_field.lower() == "auto":
            flat = flat_field_from_series(images, linearisation=args.linearisation)
        else:
            blank = _read(Path(args.flat_field), args.white_level)
            try:
                flat = flat_field_from_reference(blank, linearisation=args.linearisation)
            except ValueError as e:
                raise ValueError(f"{args.flat_field}: {e}") from None
        print(f"flat field ({flat.source}): corners {100 * flat.falloff():.0f} % darker than the brightest point",
              file=sys.stderr)

    def progress(frac, msg):
        print(f"[{100 * frac:3.0f} %] {msg}", file=sys.stderr)

    results = calibrate_images(images, masks, reference, mode="series" if args.series else "per-image",
                               method=args.method, linearisation=args.linearisation, flat_field=flat,
                               progress=progress)
    report = {"method": METHODS.get_key(args.method), "mode": "series" if args.series else "per-image",
              "reference": str(args.reference), "linearisation": args.linearisation,
              "flat_field": None if flat is None else {"source": flat.source, "falloff": round(flat.falloff(), 4)},
              "images": {}}
    for p, res in zip(paths, results):
        dst = out_dir / p.name
        if res.image.dtype != "uint8" and p.suffix.lower() not in (".tif", ".tiff", ".png"):
            dst = dst.with_suffix(".tif")
        t0 = time.perf_counter()
        cio.write_image(dst, res.image, pixel_um=cio.read_pixel_size(p))  # the photograph's own, kept
        d = res.as_dict()
        d["output"] = str(dst)
        d["seconds_with_io"] = round(res.seconds + t_read + time.perf_counter() - t0, 3)
        report["images"][p.name] = d
        before, after = d["delta_e_before"], d["delta_e_after"]
        print(f"{p.name}: mean CIEDE2000 of marked minerals {before} -> {after}, {res.seconds:.2f} s -> {dst}")
        for note in res.correction.notes if res.fitted_here else []:
            print(f"  note: {note}", file=sys.stderr)
    if args.json:
        jp = Path(args.json)
        jp.parent.mkdir(parents=True, exist_ok=True)
        jp.write_text(json.dumps(report, indent=2))
    return 0
