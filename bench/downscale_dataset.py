"""Write a half-resolution (or any scale) copy of a LumenStone-layout dataset.

    python bench/downscale_dataset.py --data ../shared/data/lumenstone --out data_half/lumenstone --scale 0.5

Images (area averaging, saved as JPEG) and masks (nearest code, saved as PNG) are resized by the same function
that ``python -m core train --scale`` uses in memory. Training on the copy with ``--scale 1.0`` is then
equivalent to ``--scale 0.5`` on the originals (up to JPEG re-compression), with a quarter of the bytes to move
to a training machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.io import list_dataset, read_image, read_mask, rescale_pair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--quality", type=int, default=88, help="JPEG quality of the images")
    a = ap.parse_args()
    out = Path(a.out)
    if out.resolve() == Path(a.data).resolve():
        sys.exit("--out must differ from --data")
    items = list_dataset(a.data)
    for it in items:
        split = it.image.parent.name
        img = read_image(it.image)
        mask = read_mask(it.mask, shape=img.shape[:2])
        small, small_mask = rescale_pair(img, mask, a.scale)
        (out / "imgs" / split).mkdir(parents=True, exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "imgs" / split / f"{it.stem}.jpg"), np.ascontiguousarray(small[..., ::-1]),
                    [cv2.IMWRITE_JPEG_QUALITY, a.quality])
        cv2.imwrite(str(out / "masks" / split / f"{it.stem}.png"), small_mask)
    print(f"{len(items)} images written to {out} at scale {a.scale}")


if __name__ == "__main__":
    main()
