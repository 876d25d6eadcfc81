"""Reusable display widgets, and the tables and archives that several pages offer for download."""
from __future__ import annotations

import io
import zipfile
from typing import Mapping

import numpy as np
import pandas as pd
import streamlit as st

from core import io as cio
from core.minerals import IGNORE, MINERALS, by_code


def content_key(prefix: str, shown) -> str:
    """A widget key from what an editable table shows, so that an edit made in it is never replayed over a value
    set since elsewhere (another button, a reopened session): the table is a new widget whenever its content
    changes."""
    import hashlib

    return prefix + hashlib.blake2b(repr(shown).encode(), digest_size=6).hexdigest()


def area_table(labels: np.ndarray, pixel_um: float | None = None) -> pd.DataFrame:
    """Pixels and area % of every class in a mask of codes (unlabelled pixels count in the total); with the pixel
    size (µm) also the area in mm²."""
    counts = np.bincount(labels.ravel(), minlength=256)
    total = labels.size
    ore = total - counts[0] - counts[IGNORE]
    rows = []
    for c in np.flatnonzero(counts):
        if c == IGNORE:
            continue
        m = by_code(int(c))
        row = {"code": int(c), "mineral": m.name, "pixels": int(counts[c])}
        if pixel_um is not None:
            row["area (mm²)"] = counts[c] * (pixel_um * 1e-3) ** 2
        rows.append({**row, "area %": 100.0 * counts[c] / total,
                     "% of ore minerals": (100.0 * counts[c] / ore) if c != 0 and ore else None})
    return pd.DataFrame(rows)


def masks_zip(masks: Mapping[str, np.ndarray], pixel_sizes: Mapping[str, float | None] | None = None) -> bytes:
    """A zip of ``masks/<name>.png`` (class codes; each records its image's pixel size from ``pixel_sizes`` when
    known) for every mask and ``areas.csv``, one area table for all."""
    buf = io.BytesIO()
    tables = []
    pixel_sizes = pixel_sizes or {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # PNG is compressed already
        for name, labels in masks.items():
            z.writestr(f"masks/{name}.png", cio.encode_png(labels, pixel_um=pixel_sizes.get(name)))
            t = area_table(labels, pixel_sizes.get(name))
            t.insert(0, "image", name)
            tables.append(t)
        if tables:
            z.writestr("areas.csv", pd.concat(tables, ignore_index=True).to_csv(index=False))
    return buf.getvalue()


def with_scale_bar(image: np.ndarray, pixel_um: float | None, full_width: int | None = None) -> np.ndarray:
    """``image`` with a scale bar when the pixel size is known; ``full_width``: the width of the full-size image
    that ``image`` is a reduced copy of."""
    if pixel_um is None or image.ndim != 3:
        return image
    from core.scalebar import draw_scale_bar

    return draw_scale_bar(image, pixel_um, full_width=full_width)


def show_image(image: np.ndarray, caption: str = "", *, max_side: int = 1400, key: str | None = None,
               pixel_um: float | None = None) -> None:
    """Show a downscaled copy, with a full-resolution crop inspector for large images; with a scale bar when the
    pixel size (µm) is given."""
    h, w = image.shape[:2]
    st.image(with_scale_bar(cio.display_copy(image, max_side), pixel_um, w),
             caption=f"{caption} ({w}×{h} px)" if caption else f"{w}×{h} px", width="stretch")
    if max(h, w) > max_side:
        with st.expander("Inspect full-resolution detail"):
            c1, c2, c3 = st.columns(3)
            size = c3.select_slider("Window", [256, 512, 768, 1024], value=512, key=f"{key}-win")
            cx = c1.slider("Centre x", 0, w - 1, w // 2, key=f"{key}-cx")
            cy = c2.slider("Centre y", 0, h - 1, h // 2, key=f"{key}-cy")
            y0 = int(np.clip(cy - size // 2, 0, max(0, h - size)))
            x0 = int(np.clip(cx - size // 2, 0, max(0, w - size)))
            st.image(with_scale_bar(np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size]), pixel_um),
                     caption=f"x {x0}–{x0 + size}, y {y0}–{y0 + size} (1:1)")


def legend(codes) -> None:
    """Legend of mineral names in their LumenStone colours."""
    parts = []
    for c in codes:
        if int(c) == 255:
            continue
        m = by_code(int(c))
        r, g, b = m.color
        parts.append(
            f"<span style='display:inline-block;margin:2px 10px 2px 0'><span style='display:inline-block;width:14px;height:14px;"
            f"background:rgb({r},{g},{b});border:1px solid #888;vertical-align:middle;margin-right:4px'></span>"
            f"{m.name} ({m.label}, {m.code})</span>")
    st.markdown("".join(parts), unsafe_allow_html=True)


def mineral_options() -> list[int]:
    return [m.code for m in MINERALS]


def mineral_format(code: int) -> str:
    m = by_code(code)
    return f"{m.code} · {m.name} ({m.label})"
