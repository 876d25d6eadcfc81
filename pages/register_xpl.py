"""Register XPL page: align crossed-polar shots to the plane-polarised image, anisotropy maps."""
from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import streamlit as st

from core import io as cio
from core.registration import (FEATURES, MODELS, SIMULATED_LABEL, anisotropy_maps, colour_angle, prepare, register,
                               simulate_xpl_series, transform_error, warp_to_reference)
from ui import state

MAX_XPL = 12
DISPLAY_SIDE = 1000


def _options() -> dict:
    with st.expander("Alignment options"):
        c1, c2, c3 = st.columns(3)
        features = c1.selectbox("Keypoints", FEATURES.names(), format_func=lambda n: f"{n} — {FEATURES.describe(n)}")
        model = c2.selectbox("Transform", MODELS.names(), format_func=lambda n: f"{n} — {MODELS.describe(n)}")
        refine = c3.checkbox("Refine at full resolution", value=True)
    return {"features": features, "model": model, "refine": refine}


def _align(ppl: np.ndarray, shots: list[np.ndarray], names: list[str], opts: dict, truth: list | None = None) -> dict:
    """Register every shot with a progress bar; returns the record stored for the segment page."""
    bar = st.progress(0.0, text="Keypoints of the PPL image…")
    ref = prepare(ppl, features=opts["features"])
    rows, aligned, ok_names, angles = [], [], [], []
    valid = np.ones(ppl.shape[:2], bool)
    for i, (shot, nm) in enumerate(zip(shots, names)):
        bar.progress((i + 0.5) / (len(shots) + 1), text=f"Aligning {nm} ({i + 1} of {len(shots)})…")
        r = register(ref, shot, model=opts["model"], refine=opts["refine"])
        row = {"XPL image": nm, "aligned": "yes" if r.ok else "no", "stage angle (°)": r.angle_deg,
               "inliers": r.inliers, "matches": r.matches, "control points": r.control_points,
               "residual RMSE (px)": r.rmse_px, "problem": r.message}
        if truth is not None and r.ok:
            row["error vs true transform (px)"] = transform_error(r.A, truth[i], shot.shape[:2])["mean_px"]
        row["A"] = r.A.round(6).tolist() if r.ok else None
        rows.append(row)
        if r.ok:
            warped, cover = warp_to_reference(shot, r.A, ppl.shape[:2], return_valid=True)
            aligned.append(warped)
            ok_names.append(nm)
            angles.append(r.angle_deg)
            valid &= cover
    bar.progress(len(shots) / (len(shots) + 1), text="Anisotropy maps…")
    maps = None
    if len(aligned) >= 2:
        m = anisotropy_maps(aligned, angles=angles, valid=valid)
        hi = max(float(np.percentile(m.range[valid], 99.5)) if valid.any() else 1.0, 1.0)
        maps = {"range": np.clip(m.range / hi * 255, 0, 255).astype(np.uint8),
                "std": np.clip(m.std / hi * 510, 0, 255).astype(np.uint8)}
        if m.angle_max is not None:
            maps["angle of maximum brightness"] = colour_angle(m.angle_max, m.amplitude)
    bar.progress(1.0, text="Done")
    bar.empty()
    return {"token": uuid.uuid4().hex, "aligned": aligned, "names": ok_names, "angles": angles, "rows": rows, "maps": maps,
            "simulated": truth is not None, "options": opts}


@st.cache_data(max_entries=2 * MAX_XPL, show_spinner=False)
def _decode(data: bytes) -> np.ndarray:
    return cio.read_image(data)


def _decode_uploads(files) -> tuple[list, list] | None:
    """Decode uploaded files (errors shown at once); None if any is unusable."""
    images, names, ok = [], [], True
    for f in files:
        try:
            images.append(_decode(f.getvalue()))
            names.append(f.name)
        except ValueError as e:
            st.error(f"{state.plain(f.name)}: {state.plain(str(e).replace('uploaded file: ', ''))}")
            ok = False
        except MemoryError:
            st.error(f"{state.plain(f.name)}: not enough memory to open this image")
            ok = False
    return (images, names) if ok else None


def _upload_flow(opts: dict) -> None:
    name, current = state.current_image()
    use_current = False
    if current is not None:
        use_current = st.checkbox(f"Use the current image **{name}** as the PPL reference", value=True)
    ppl_file = None if use_current else st.file_uploader("PPL (plane-polarised) photograph",
                                                          type=["jpg", "jpeg", "png", "tif", "tiff"], key="xpl-ppl")
    xpl_files = st.file_uploader(f"XPL (crossed-polar) photographs, any stage angle (up to {MAX_XPL})",
                                 type=["jpg", "jpeg", "png", "tif", "tiff"], accept_multiple_files=True, key="xpl-shots")
    ppl = current
    if ppl_file is not None:
        got = _decode_uploads([ppl_file])
        ppl = got[0][0] if got else None
    shots = names = None
    if xpl_files:
        if len(xpl_files) > MAX_XPL:
            st.error(f"Give at most {MAX_XPL} XPL images at a time.")
            return
        got = _decode_uploads(xpl_files)
        if got is None:
            return
        shots, names = got
        if len(set(names)) != len(names):
            st.error("Two XPL images have the same file name; rename one of them.")
            return
    ready = ppl is not None and shots is not None and (use_current or ppl_file is not None)
    if not st.button("Align XPL shots", type="primary", disabled=not ready):
        return
    notes = []
    if not use_current:
        wanted = cio.safe_name(ppl_file.name)
        how = state.placement(wanted, ppl, "upload", ppl_file.getvalue())[1]
        try:
            name = state.add_image(wanted, ppl, origin="upload", pixel_um=cio.read_pixel_size(ppl_file.getvalue()),
                                   source=ppl_file.getvalue())
        except ValueError as e:
            st.error(str(e))
            return
        if how == "renamed":
            notes.append(("info", f"{state.plain(ppl_file.name)} is a different photograph from the {wanted} already "
                                  f"in this session: added as {name} (the image already there keeps its results)."))
    record = _align(ppl, shots, names, opts)
    state.bucket("xpl")[name] = record
    if not use_current:  # a new current image: run again so that the sidebar shows it
        state.rerun_then_show("xpl-align", notes + _failures(record))
    _report_failures(record)


def _simulate_flow(opts: dict) -> None:
    name, image = state.current_image()
    if image is None:
        state.no_image_hint()
        return
    gt = state.ground_truth(name)
    st.warning(f"**{SIMULATED_LABEL}.** Crossed-polar shots are rendered from the current image and its mask with "
               "the catalogue's anisotropy facts; use this to try the step, not as a measurement.")
    if gt is None:
        st.error(f"The image {name} has no mask; a simulated series needs one (load the demo sample).")
        return
    c1, c2, c3 = st.columns(3)
    n = c1.slider("Number of shots", 3, MAX_XPL, 6)
    step = c2.slider("Stage step (°)", 5, 45, 15)
    seed = c3.number_input("Seed", 0, 10_000, 0)
    if not st.button("Simulate and align", type="primary"):
        return
    with st.spinner("Rendering the simulated series…"):
        sim = simulate_xpl_series(image, gt, n_shots=int(n), step_deg=float(step), seed=int(seed))
    names = [f"simulated-xpl-{k + 1:02d}-{a:.0f}deg.png" for k, a in enumerate(sim.angles)]
    record = _align(image, sim.xpl, names, opts, truth=sim.transforms)
    record["raw_shots"] = {nm: cio.display_copy(x, DISPLAY_SIDE) for nm, x in zip(names, sim.xpl)}
    state.bucket("xpl")[name] = record
    _report_failures(record)


def _failures(record: dict) -> list[tuple[str, str]]:
    """An error message for each XPL shot of ``record`` that could not be aligned."""
    return [("error", f"{state.plain(r['XPL image'])} could not be aligned: {r['problem']}. It is left out of the "
                      "aligned stack.")
            for r in record["rows"] if r["aligned"] == "no"]


def _report_failures(record: dict) -> None:
    for kind, text in _failures(record):
        getattr(st, kind)(text)


def _show(name: str, record: dict) -> None:
    ppl = state.pixels(name)
    tag = " (SIMULATED)" if record.get("simulated") else ""
    st.subheader(f"Alignment of {len(record['rows'])} XPL shot(s) to {name}{tag}")
    if record.get("simulated"):
        st.caption(SIMULATED_LABEL)
    import pandas as pd

    table = pd.DataFrame([{k: v for k, v in r.items() if k != "A"} for r in record["rows"]])
    st.dataframe(table, hide_index=True, width="stretch")
    if not record["aligned"]:
        st.error("No XPL shot could be aligned; nothing goes on to segmentation.")
        return
    st.success(f"{len(record['aligned'])} aligned XPL shot(s) are stored with {name} for the Segment page.")
    _overlay(ppl, record)
    _maps(record)
    _downloads(name, record)


def _overlay(ppl: np.ndarray, record: dict) -> None:
    st.markdown("#### Aligned overlay")
    c1, c2 = st.columns([2, 1])
    idx = c1.selectbox("XPL shot", range(len(record["names"])), format_func=lambda i: record["names"][i])
    mode = c2.radio("View", ["Slider", "Blink", "Checkerboard"], horizontal=True)
    a = cio.display_copy(ppl, DISPLAY_SIDE).astype(np.float32)
    b = cio.display_copy(record["aligned"][idx], DISPLAY_SIDE).astype(np.float32)
    if mode == "Slider":
        t = st.slider("PPL ← → XPL", 0.0, 1.0, 0.5, 0.05)
        img = (1 - t) * a + t * b
    elif mode == "Blink":
        show_xpl = st.toggle("Show XPL (switch back and forth to blink)", value=True)
        img = b if show_xpl else a
    else:
        cell = max(8, a.shape[1] // 12)
        yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]]
        chk = ((yy // cell + xx // cell) % 2 == 0)[..., None]
        img = np.where(chk, a, b)
    st.image(np.clip(img, 0, 255).astype(np.uint8), caption=f"PPL and aligned {record['names'][idx]}", width="stretch")
    if record.get("raw_shots"):
        with st.expander("Simulated shot before alignment"):
            st.image(record["raw_shots"][record["names"][idx]], caption=f"{record['names'][idx]} (SIMULATED)",
                     width="stretch")


def _maps(record: dict) -> None:
    st.markdown("#### Anisotropy maps")
    if not record.get("maps"):
        st.info("Anisotropy maps need at least 2 aligned shots.")
        return
    st.caption("Range and standard deviation of the XPL brightness over the shots (isotropic minerals stay dark); "
               "angle of maximum brightness: hue over 0–90° of stage rotation, brightness = modulation amplitude.")
    cols = st.columns(len(record["maps"]))
    for col, (k, v) in zip(cols, record["maps"].items()):
        with col:
            st.image(cio.display_copy(v, DISPLAY_SIDE), caption=k, width="stretch")


def _downloads(name: str, record: dict) -> None:
    st.markdown("#### Downloads")
    stem = cio.safe_name(name)
    c1, c2, c3 = st.columns(3)
    report = {"ppl": name, "simulated": bool(record.get("simulated")),
              "convention": "A maps XPL pixel (x, y, 1), pixel centres at integers, to PPL pixel coordinates",
              "images": {r["XPL image"]: {"A": r["A"], "ok": r["aligned"] == "yes", "inliers": r["inliers"],
                                          "rmse_px": None if not np.isfinite(r["residual RMSE (px)"]) else r["residual RMSE (px)"],
                                          "angle_deg": None if not np.isfinite(r["stage angle (°)"]) else r["stage angle (°)"],
                                          "message": r["problem"]} for r in record["rows"]}}
    c1.download_button("Transforms (JSON)", json.dumps(report, indent=2),
                       file_name=f"{stem}-xpl-transforms{'-SIMULATED' if record.get('simulated') else ''}.json",
                       mime="application/json", on_click="ignore")
    c2.download_button("Aligned XPL stack (ZIP of PNG)", _zip_aligned(record["token"], record),
                       file_name=f"{stem}-xpl-aligned{'-SIMULATED' if record.get('simulated') else ''}.zip",
                       mime="application/zip", on_click="ignore")
    if record.get("maps"):
        c3.download_button("Anisotropy maps (ZIP of PNG)", _zip_maps(record),
                           file_name=f"{stem}-anisotropy{'-SIMULATED' if record.get('simulated') else ''}.zip",
                           mime="application/zip", on_click="ignore")


@st.cache_data(max_entries=4, show_spinner="Packing the aligned images…")
def _zip_aligned(token: str, _record: dict) -> bytes:
    """ZIP of the aligned shots as PNG; cached on the record's unique token."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for nm, im in zip(_record["names"], _record["aligned"]):
            z.writestr(f"{cio.safe_name(nm)}.png", cio.encode_png(im))
    return buf.getvalue()


def _zip_maps(record: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for k, v in record["maps"].items():
            z.writestr(f"anisotropy-{k.replace(' ', '_')}.png", cio.encode_png(v))
    return buf.getvalue()


def main() -> None:
    st.header("Register XPL")
    st.caption("Align crossed-polar (XPL) shots taken at several stage angles to the plane-polarised (PPL) image, "
               "then map anisotropy: anisotropic minerals brighten and darken as the stage turns, isotropic ones stay dark.")
    opts = _options()
    source = st.radio("XPL shots", ["Upload PPL + XPL photographs", "Simulate a series from the current image (SIMULATED)"],
                      horizontal=True)
    try:
        if source.startswith("Upload"):
            _upload_flow(opts)
        else:
            _simulate_flow(opts)
    except ValueError as e:
        st.error(str(e))
        return
    except MemoryError:
        st.error("Not enough memory for these images; try smaller ones.")
        return
    state.show_carried("xpl-align")
    name = state.current_name()
    if name is not None and name in state.bucket("xpl"):
        _show(name, state.bucket("xpl")[name])


state.through_app(__file__)
main()
