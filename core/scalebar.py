"""Scale bars burnt into images (overlays, report thumbnails) whose pixel size is known.

A bar of a round length (1, 2 or 5 × 10ⁿ µm) close to a fifth of the image's width, white with a dark outline
so that it reads on bright sulphides and dark gangue alike, its length written above it. The label's font is a
subset of DejaVu Sans Bold shipped in ``core/assets/`` (licence beside it), so the µ sign renders on any machine.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["bar_length_um", "format_length", "draw_scale_bar"]

_FONT = Path(__file__).resolve().parent / "assets" / "scalebar-DejaVuSans-Bold.ttf"


def bar_length_um(width_px: int, pixel_um: float, fraction: float = 0.2) -> float:
    """The round length (1, 2 or 5 × 10ⁿ µm) closest below ``fraction`` of an image ``width_px`` pixels wide."""
    if not (pixel_um > 0 and math.isfinite(pixel_um)):
        raise ValueError(f"the pixel size must be a positive number of µm, not {pixel_um}")
    if width_px < 1:
        raise ValueError("the image has no width")
    target = width_px * fraction * pixel_um
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10 ** k <= target * (1 + 1e-9):
            return float(m * 10 ** k)
    return float(10 ** k)


def format_length(um: float) -> str:
    """``um`` µm as a short label: "500 µm", "2 mm", "0.5 µm"."""
    if um >= 1000:
        v, unit = um / 1000, "mm"
    elif um < 0.1:
        v, unit = um * 1000, "nm"
    else:
        v, unit = um, "µm"
    text = f"{v:.3g}"
    return f"{text} {unit}"


@lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(_FONT), size)
    except OSError:  # no FreeType in this Pillow: its bitmap font (no µ sign, so the label says "um")
        return None


def draw_scale_bar(image: np.ndarray, pixel_um: float, *, fraction: float = 0.2,
                   full_width: int | None = None) -> np.ndarray:
    """A copy of ``image`` (uint8 RGB) with a scale bar in its lower right corner.

    Parameters
    ----------
    image : (M, N, 3) uint8 ndarray
    pixel_um : float
        Size of one pixel in µm: of ``image``, or of the full-size image that ``image`` is a reduced copy of.
    fraction : float
        The bar is the round length closest below this share of the image's width.
    full_width : int, optional
        Width of that full-size image, when ``image`` is a reduced copy (a display copy, a thumbnail).
    """
    from PIL import Image, ImageDraw, ImageFont

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"a scale bar goes on a uint8 RGB image, not {img.dtype} of shape {img.shape}")
    h, w = img.shape[:2]
    if full_width is not None:
        pixel_um = pixel_um * full_width / w
    length = bar_length_um(w, pixel_um, fraction)
    bar_px = max(1, int(round(length / pixel_um)))
    side = min(h, w)
    thick = max(2, round(side / 120))
    margin = max(4, round(side / 40))
    size = max(10, round(side / 28))
    font = _font(size)
    label = format_length(length)
    if font is None:
        font, label = ImageFont.load_default(), label.replace("µ", "u")
    pil = Image.fromarray(img.copy())
    draw = ImageDraw.Draw(pil)
    x1, y1 = w - margin, h - margin
    x0, y0 = x1 - bar_px + 1, y1 - thick  # PIL fills both end columns: x0..x1 is bar_px pixels
    outline = max(1, thick // 3)
    draw.rectangle([x0 - outline, y0 - outline, x1 + outline, y1 + outline], fill=(20, 20, 20))
    draw.rectangle([x0, y0, x1, y1], fill=(255, 255, 255))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    tx = min((x0 + x1) / 2 - (right - left) / 2, w - 2 - (right - left)) - left  # a label wider than the bar stays in
    ty = y0 - outline - max(2, thick) - bottom
    draw.text((tx, ty), label, font=font, fill=(255, 255, 255), stroke_width=max(1, size // 8),
              stroke_fill=(20, 20, 20))
    return np.asarray(pil)
