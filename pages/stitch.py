"""Stitch page: overlapping microscope frames → one panorama at the frames' pixel size."""
from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import streamlit as st

from core import io as cio
from ui import state, widgets

MAX_TILES = 100
MAX_ZIP_BYTES = 3 * 2 ** 30
STAGE_LABELS = {"matching": "Matching overlapping tiles", "adjustment": "Global adjustment",
                "exposure": "Exposure and vignetting", "composition": "Seams and blending"}


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_tiles(files, where=None) -> tuple[list[tuple[str, np.ndarray]], float | None] | None:
    """Decode uploaded images and zip archives into (name, RGB) tiles sorted by name, with the pixel size they
    record (:func:`core.io.common_pixel_size`); None after an error.

    A tile from a zip archive is named by its path inside the archive (``row2/01.jpg``), so that tiles of the same
    file name in different folders stay apart and sort row by row. A name given twice, or the same picture under
    two names, is refused: every tile listed is stitched once. ``where``: the placeholder that shows the progress
    (default: a new one); the caller empties it."""
    tiles, sizes = [], []
    bar = where if where is not None else st.empty()
    expected = len(files)  # files, and a zip counted by its images once it is opened

    def decoded(name: str) -> None:
        bar.progress(min(1.0, len(tiles) / max(expected, 1)),
                     text=f"Reading tile {len(tiles)} of {expected} ({name})…")

    for f in files:
        if f.name.lower().endswith(".zip"):
            member = None
            try:
                with zipfile.ZipFile(io.BytesIO(f.getvalue())) as z:
                    members = [m for m in z.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX")
                               and m.filename.lower().endswith(cio.IMAGE_SUFFIXES)]
                    if not members:
                        st.error(f"{state.plain(f.name)}: the archive holds no images "
                                 f"({', '.join(cio.IMAGE_SUFFIXES)})")
                        return None
                    if len(tiles) + len(members) > MAX_TILES:  # counted before anything is decoded
                        st.error(f"at most {MAX_TILES} tiles can be stitched here, but {state.plain(f.name)} holds "
                                 f"{len(members)}; use the command line for more")
                        return None
                    if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                        st.error(f"{f.name}: the archive unpacks to more than {MAX_ZIP_BYTES // 2 ** 30} GB")
                        return None
                    expected += len(members) - 1
                    for member in members:
                        data = z.read(member)
                        tiles.append((member.filename, cio.read_image(data)))
                        sizes.append(cio.read_pixel_size(data))
                        decoded(member.filename)
            except zipfile.BadZipFile:
                st.error(f"{state.plain(f.name)}: not a readable zip archive")
                return None
            except (RuntimeError, NotImplementedError):  # a password, or a compression zipfile cannot unpack
                what = state.plain(member.filename) if member is not None else "a file in it"
                st.error(f"{state.plain(f.name)}: {what} cannot be unpacked (the archive is "
                         "encrypted or uses an unusual compression); pack the tiles into a plain zip without a "
                         "password")
                return None
            except ValueError as e:
                where = f"{state.plain(f.name)}: " + (f"{state.plain(member.filename)}: " if member is not None else "")
                st.error(where + state.plain(str(e).replace("uploaded file: ", "")))
                return None
            except MemoryError:
                st.error(f"{state.plain(f.name)}: not enough memory to unpack these tiles; stitch them with the "
                         "command line instead")
                return None
        else:
            img = state.read_upload(f)
            if img is None:
                return None
            tiles.append((f.name, img))
            sizes.append(cio.read_pixel_size(f.getvalue()))
            decoded(f.name)
        if len(tiles) > MAX_TILES:
            st.error(f"at most {MAX_TILES} tiles can be stitched here; use the command line for more")
            return None
    tiles.sort(key=lambda t: _natural_key(t[0]))
    problem = repeated_tiles(tiles)
    if problem:
        st.error(problem)
        return None
    return tiles, cio.common_pixel_size(sizes)


def repeated_tiles(tiles: list[tuple[str, np.ndarray]]) -> str | None:
    """Why the tiles cannot be stitched as given (a name twice, or one picture twice), or None."""
    from core.stitching.pipeline import identical_tiles

    names = [n for n, _ in tiles]
    same = identical_tiles([t for _, t in tiles])
    if same is not None:
        a, b = names[same[0]], names[same[1]]
        if a == b:
            return f"{state.plain(a)} is given twice: remove the second copy, so that every tile is stitched once."
        return (f"{state.plain(a)} and {state.plain(b)} are the same picture: remove one of them, so that every "
                "tile is stitched once.")
    twice = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if twice is not None:
        return (f"Two different tiles are called {state.plain(twice)}: rename them, or put the tiles into a zip "
                "with one folder per row (row1/01.jpg, row2/01.jpg, …), so that each has its own name and place "
                "in the order.")
    return None


def demo_tiles() -> list[tuple[str, np.ndarray]]:
    """A 3×3 set cut from the demo sample with known offsets, rotations, vignetting and noise."""
    from core.stitching.synthetic import make_tile_set

    item = cio.list_dataset(state.SAMPLE_DIR, "demo")[0]
    ts = make_tile_set(cio.read_image(item.image), grid=(3, 3), seed=3)
    return [(f"demo_r{k // 3}_c{k % 3}.png", t) for k, t in enumerate(ts.tiles)]


def options_form():
    from core.stitching import BLENDERS, MATCHERS, MODELS, SEAMS

    c1, c2, c3 = st.columns(3)
    grid = c1.text_input("Grid (rows×columns, row-major by file name)", "", placeholder="e.g. 3x3; blank = find overlaps",
                         key="stitch-grid")
    matcher = c2.selectbox("Matcher", MATCHERS.names(), key="stitch-matcher",
                           help="\n".join(f"**{n}**: {MATCHERS.describe(n)}" for n in MATCHERS.names()))
    model = c3.selectbox("Tile transform", MODELS.names(), index=MODELS.names().index("similarity"), key="stitch-model")
    with st.expander("More options"):
        d1, d2 = st.columns(2)
        seam = d1.selectbox("Seams", SEAMS.names(), key="stitch-seam")
        blender = d2.selectbox("Blending", BLENDERS.names(), key="stitch-blender")
        gain = d1.checkbox("Exposure compensation", True, key="stitch-gain")
        vignetting = d2.checkbox("Vignetting compensation (from the overlaps)", True, key="stitch-vig")
        flat = st.file_uploader("Flat-field reference (photo of a blank field, optional)",
                                type=["jpg", "jpeg", "png", "tif", "tiff"], key="stitch-flat")
        weights = ""
        if matcher in ("loftr", "disk_lightglue"):
            weights = st.text_input("Local weight file(s) on the server (disk_lightglue: 'disk.pth,lightglue.pth')",
                                    key="stitch-weights")
    return dict(grid=grid, matcher=matcher, model=model, seam=seam, blender=blender, gain=gain,
                vignetting=vignetting, flat=flat, weights=weights or None)


GRID_HINT = "enter the tiles' rows×columns in the **Grid** field, or leave it blank to find the overlaps"


def run_stitch(tiles, opts) -> dict | None:
    from core.stitching import STAGES, UnmatchedTiles, apply_flat_field, flat_field_gain, parse_grid, stitch

    try:
        grid = parse_grid(opts["grid"])
    except ValueError as e:
        st.error(f"{e}: {GRID_HINT}.")
        return None
    if grid is not None and grid[0] * grid[1] != len(tiles):
        st.error(f"A {grid[0]}x{grid[1]} grid holds {grid[0] * grid[1]} tiles but {len(tiles)} were given: "
                 f"{GRID_HINT}.")
        return None
    images = [t for _, t in tiles]
    if opts["flat"] is not None:
        ref = state.read_upload(opts["flat"])
        if ref is None:
            return None
        try:
            g = flat_field_gain(ref)
        except ValueError as e:
            st.error(f"{state.plain(opts['flat'].name)}: {e}.")
            return None
        images = [apply_flat_field(t, g) for t in images]
    bars = {s: st.progress(0.0, text=STAGE_LABELS[s]) for s in STAGES}

    def progress(stage, frac):
        if stage in bars:
            bars[stage].progress(min(1.0, float(frac)), text=f"{STAGE_LABELS[stage]} — {frac:.0%}")

    try:
        res = stitch(images, grid=grid, matcher=opts["matcher"], model=opts["model"], weights=opts["weights"],
                     gain=opts["gain"], vignetting=opts["vignetting"], seam=opts["seam"], blender=opts["blender"],
                     progress=progress)
    except UnmatchedTiles as e:
        hint = "enter their layout (rows×columns) in the **Grid** field" if grid is None else GRID_HINT
        st.error(f"Stitching failed: {e.explain(hint, [state.plain(n) for n, _ in tiles])}.")
        return None
    except ValueError as e:
        st.error(f"Stitching failed: {e}")
        return None
    except MemoryError:
        st.error("Not enough memory for this panorama; stitch it with the command line instead.")
        return None
    names = [n for n, _ in tiles]
    rec = res.to_json(names)
    rec["rejected_pairs"] = [[int(i), int(j), why] for i, j, why in res.alignment.rejected]
    return {"pano": res.panorama, "json": rec, "names": names, "alignment": res.alignment,
            "timings": res.timings}


def match_graph(result):
    import plotly.graph_objects as go

    al = result["alignment"]
    fig = go.Figure()
    centres = []
    for k, (h, (th, tw)) in enumerate(zip(al.transforms, al.shapes)):
        q = np.array([[0, 0], [tw - 1, 0], [tw - 1, th - 1], [0, th - 1], [0, 0]], float)
        p = q @ h[:2, :2].T + h[:2, 2]
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", line=dict(color="#999", width=1),
                                 hoverinfo="skip", showlegend=False))
        centres.append(np.array([(tw - 1) / 2, (th - 1) / 2]) @ h[:2, :2].T + h[:2, 2])
    res = [al.pair_rmse.get((p.i, p.j), 0.0) for p in al.pairs]
    hi = max(res + [0.1])
    for p, r in zip(al.pairs, res):
        a, b = centres[p.i], centres[p.j]
        t = min(1.0, r / hi)
        fig.add_trace(go.Scatter(x=[a[0], b[0]], y=[a[1], b[1]], mode="lines",
                                 line=dict(color=f"rgb({int(255 * t)},{int(160 * (1 - t)) + 60},80)", width=4),
                                 hovertext=f"tiles {p.i + 1}–{p.j + 1}: {p.n} matches, residual {r:.3f} px",
                                 hoverinfo="text", showlegend=False))
    for i, j, why in al.rejected:
        a, b = centres[i], centres[j]
        fig.add_trace(go.Scatter(x=[a[0], b[0]], y=[a[1], b[1]], mode="lines",
                                 line=dict(color="#d33", width=2, dash="dot"), hovertext=f"tiles {i + 1}–{j + 1}: {why}",
                                 hoverinfo="text", showlegend=False))
    c = np.array(centres)
    fig.add_trace(go.Scatter(x=c[:, 0], y=c[:, 1], mode="markers+text", text=[str(k + 1) for k in range(len(c))],
                             textposition="top center", marker=dict(size=10, color="#1f77b4"),
                             hovertext=result["names"], hoverinfo="text", showlegend=False))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", title="y (px)")
    fig.update_xaxes(title="x (px)")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10),
                      title="Match graph: tiles (numbered), matched pairs coloured by residual, rejected pairs dotted")
    return fig


def show_result(result) -> None:
    rec = result["json"]
    pano = result["pano"]
    w, h = rec["size"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Tiles", len(rec["tiles"]))
    c2.metric("Matched pairs", len(rec["pairs"]))
    c3.metric("Residual RMSE", f"{rec['rmse_px']:.3f} px",
              help="Root-mean-square disagreement of all pairwise matches after the global adjustment")
    c4.metric("Time", f"{rec['seconds']:.1f} s")
    pixel_um = result.get("pixel_um")
    st.caption(f"Panorama {w}×{h} px at the tiles' pixel size"
               + (f" ({pixel_um:g} µm per pixel, as the tiles record)" if pixel_um else "") + f"; model {rec['model']}.")
    if rec["rejected_pairs"]:
        st.warning("Pairs not used: " + "; ".join(f"{i + 1}–{j + 1} ({why})" for i, j, why in rec["rejected_pairs"]))
    st.plotly_chart(match_graph(result), width="stretch")
    widgets.show_image(pano, "Panorama", key="stitch-pano", pixel_um=pixel_um)
    d1, d2, d3, d4 = st.columns(4)
    d1.download_button("Panorama (JPEG)", data=lambda: cio.encode_jpeg(pano, quality=95), file_name="panorama.jpg",
                       mime="image/jpeg", width="stretch", on_click="ignore")
    d2.download_button("Panorama (TIFF)", data=lambda: _tiff_bytes(pano, pixel_um), file_name="panorama.tif",
                       mime="image/tiff", width="stretch", on_click="ignore")
    d3.download_button("Transforms (JSON)", data=json.dumps({**rec, "pixel_size_um": pixel_um}, indent=1),
                       file_name="panorama.json",
                       mime="application/json", width="stretch", on_click="ignore")
    if d4.button("Send to segmentation", icon="➡️", width="stretch"):
        how = state.placement("panorama", pano, "stitch")[1]
        try:
            name = state.add_image("panorama", pano, origin="stitch", pixel_um=pixel_um)
        except ValueError as e:
            st.error(str(e))
        else:  # run again so that the sidebar lists the panorama as the current image
            said = f"“{name}” is now the current image."
            if how == "renamed":
                said = (f"This panorama differs from the “panorama” already in this session, which keeps its work: "
                        f"it is added as “{name}”, now the current image.")
            state.rerun_then_show("stitch-send", [("success", said)])
    if state.show_carried("stitch-send"):
        st.page_link("pages/segment.py", label="Go to Segment", icon="🗺️")


def _tiff_bytes(pano: np.ndarray, pixel_um: float | None = None) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, pano, photometric="rgb", bigtiff=pano.nbytes > 2 ** 31, **cio.tiff_resolution(pixel_um))
    return buf.getvalue()


def main() -> None:
    st.header("Stitch")
    st.caption("Overlapping frames of one polished section become one panorama at the frames' pixel size "
               "(grain sizes stay in the same µm per pixel). Only overlapping tiles are matched, all tile positions "
               "are adjusted together, exposure and vignetting are evened out, seams follow the least visible path.")
    work = state.bucket("stitch")
    files = st.file_uploader("Tiles (images, or one zip of them)", type=["jpg", "jpeg", "png", "tif", "tiff", "bmp", "zip"],
                             accept_multiple_files=True, key="stitch-files")
    sig = tuple((f.name, f.size, getattr(f, "file_id", "")) for f in files or [])
    if st.button("Use demo tiles (3×3 cut from the sample with known offsets)", key="stitch-demo"):
        # the demo tiles take the place of the files in the uploader until those change
        work["tiles"], work["pixel_um"], work["sig"], work["demo"] = demo_tiles(), None, sig, True
        st.session_state["stitch-grid"] = work["demo_grid"] = "3x3"
        work.pop("last", None)
    tiles = None
    reading = st.empty()  # on the page in every run, so that what follows keeps its place
    if files and not (work.get("demo") and work.get("sig") == sig):
        if work.get("sig") == sig and "tiles" in work:
            tiles = work["tiles"]  # decoded on an earlier run of this page
        else:
            read = read_tiles(files, where=reading)
            reading.empty()
            if read is None:
                return
            tiles, work["pixel_um"] = read
            work["tiles"], work["sig"], work["demo"] = tiles, sig, False
            work.pop("last", None)
            if st.session_state.get("stitch-grid") == work.pop("demo_grid", None):
                st.session_state["stitch-grid"] = ""  # the demo's layout is not the uploads'
    elif "tiles" in work:
        tiles = work["tiles"]  # the demo tiles, or tiles uploaded earlier
        if files:
            st.info(f"The demo tiles take the place of the {len(files)} uploaded file(s); to stitch your files "
                    "instead, remove them from the uploader and add them again.")
    if not tiles:
        st.info("Upload two or more overlapping tiles, or use the demo tiles.")
        return
    st.caption(f"{len(tiles)} tiles: " + ", ".join(n for n, _ in tiles[:12]) + (" …" if len(tiles) > 12 else ""))
    opts = options_form()
    if len(tiles) < 2:
        st.error("Stitching needs at least two tiles.")
        return
    if st.button("Stitch", type="primary", icon="🧩", key="stitch-run"):
        result = run_stitch(tiles, opts)
        if result is not None:
            result["pixel_um"] = work.get("pixel_um")
            work["last"] = result
    if "last" in work:
        show_result(work["last"])


state.through_app(__file__)
main()
