"""Upload & calibrate: bring photographs in, colour-correct them from a few marked minerals."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import streamlit as st

from core import io as cio
from core.calibration import DEFAULT_METHOD, METHODS, apply_correction, class_means, fit_correction, mean_delta_e
from core.calibration.flatfield import MIN_SERIES_IMAGES, flat_field_from_reference, flat_field_from_series
from core.calibration.marks import hex_color, strokes_to_mask
from core.calibration.simulate import partial_annotation
from core.minerals import IGNORE, MINERALS, name_of
from core.stats.summary import MAX_SAMPLE_NAME
from ui import state, widgets

UPLOAD_TYPES = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"]
CANVAS_WIDTH = 760
# white level of 16-bit files: 0 = as the file declares (MaxSampleValue), else the full 16-bit range
WHITE_LEVELS = {0: "as the file says (16-bit unless it declares its range)", 4095: "12-bit camera data (0–4095)",
                16383: "14-bit camera data (0–16383)", 1023: "10-bit camera data (0–1023)"}
DARK = 16  # an added photograph whose brightest value is at most this (of 255) gets a warning
PIXEL_FROM_FILE, PIXEL_GIVEN = "as each file records", "enter it (µm per pixel)"


def pixel_size_choice(where) -> tuple[bool, float | None]:
    """(whether to use the pixel size each file records, the size the user entered or None) for the files added
    next."""
    a, b = where.columns([1, 1])
    how = a.selectbox("Pixel size", [PIXEL_FROM_FILE, PIXEL_GIVEN], key="uc-px-how",
                      help="Grain sizes in µm and scale bars need each photograph's pixel size: the camera's pixel "
                           "pitch divided by the objective's magnification (and the camera adapter's), best "
                           "measured on a stage micrometer. Many microscope programs record it in the file (TIFF "
                           "resolution, ImageJ or OME calibration); a photograph without one is added with an "
                           "unknown pixel size, which can be set later under **Images in this session**.")
    if how == PIXEL_FROM_FILE:
        return True, None
    value = b.number_input("µm per pixel", min_value=1e-4, max_value=1000.0, value=0.5, step=None, format="%.4f",
                           key="uc-px-value")
    return False, float(value)


def upload_section() -> None:
    """Upload one or many images, or load the demo sample."""
    c1, c2 = st.columns([3, 1])
    files = c1.file_uploader("Photographs (JPEG, PNG, TIFF; 8 or 16 bit, or floating-point TIFF)", type=UPLOAD_TYPES,
                             accept_multiple_files=True, key="uc-files")
    white = c1.selectbox("16-bit files hold", list(WHITE_LEVELS), format_func=WHITE_LEVELS.get, key="uc-white",
                         help="Cameras with 10, 12 or 14 bits per channel often save their values unscaled in a "
                              "16-bit file, which then reads 16 times too dark (12-bit) unless the file declares its "
                              "range. Choose the camera's bit depth here for the files added next; 8-bit and "
                              "floating-point files are not affected.")
    from_file, given = pixel_size_choice(c1)
    sample = c1.text_input("Sample (optional)", max_chars=MAX_SAMPLE_NAME, key="uc-sample",
                           placeholder="e.g. DH-12 41.0–42.5 m",
                           help="The sample the files added next belong to (a section, a drill-core interval, an "
                                "ore type). Statistics compares samples; it can be changed later under **Images in "
                                "this session** or on Statistics.").strip()
    if files and c1.button("Add to this session", icon="➕", key="uc-add"):
        added, errors, kept, dark, recorded, unknown, renamed, reread, reserved = [], [], [], [], [], [], [], [], []
        # a panorama takes tens of seconds to decode: say which file is being read
        bar = c1.progress(0.0, text="Reading…")
        for i, f in enumerate(files):
            bar.progress(i / len(files), text=f"Reading {state.plain(f.name)} ({i + 1} of {len(files)})…")
            img = state.read_upload(f, say=errors.append, max_value=white or None)
            if img is None:
                continue
            peak = int(img.max(initial=0))
            if peak <= DARK:
                dark.append(f"{state.plain(f.name)} (brightest value {peak} of 255)")
            pixel_um = cio.read_pixel_size(f.getvalue()) if from_file else given
            wanted = cio.safe_name(f.name)
            place, how = state.placement(wanted, img, "upload", f.getvalue())
            if from_file:
                (recorded if pixel_um is not None else unknown).append(
                    place + (f" ({pixel_um:g} µm/px)" if pixel_um is not None else ""))
            if how == "kept":
                if place not in added:  # added before, not a second copy of a file added just now: it keeps its work
                    kept.append(place)
                if pixel_um is not None:
                    state.set_pixel_size(place, pixel_um)
                if sample:
                    state.set_sample(place, sample)
                continue
            try:
                added.append(state.add_image(wanted, img, origin="upload", make_current=not added,
                                             pixel_um=pixel_um, source=f.getvalue()))
            except ValueError as e:
                errors.append(str(e))
                break
            if how == "renamed":
                renamed.append(f"{state.plain(f.name)} is a different photograph from the {wanted} already in "
                               f"this session: added as {added[-1]}")
            elif how == "reserved":
                reserved.append(f"{state.plain(f.name)} is added as {added[-1]}: “{wanted}” names the rows of all "
                                "images pooled in the statistics")
            elif how == "replaced":
                reread.append(added[-1])
            if sample:
                state.set_sample(added[-1], sample)
        bar.empty()
        messages = [("error", e) for e in errors]
        if dark:
            messages.append(("warning", "Almost black: " + ", ".join(dark) + ". If these are 10-, 12- or 14-bit "
                             "camera data in 16-bit files, choose the bit depth under **16-bit files hold** and add "
                             "them again; otherwise they are underexposed."))
        if kept:
            messages.append(("info", f"Already in this session, kept with their results: {', '.join(kept)}"))
        if renamed:
            messages.append(("info", "; ".join(renamed) + " (the image already there keeps its results)."))
        if reserved:
            messages.append(("info", "; ".join(reserved) + "."))
        if reread:
            messages.append(("info", "Read again from the same file with the settings chosen now, replacing the "
                             "earlier reading and what was done to it: " + ", ".join(reread) + "."))
        if recorded:
            messages.append(("info", "Pixel size recorded in the file: " + ", ".join(recorded) + "."))
        if unknown:
            messages.append(("info", "No pixel size recorded in " + ", ".join(unknown) + ": set it under **Images in "
                             "this session** (or choose **Pixel size: enter it** and add them again) before "
                             "reporting grain sizes in µm."))
        if added:  # the sidebar, drawn before this, shows the new images and the current one after a rerun
            state.rerun_then_show("uc-upload", [("success", f"Added {len(added)} image(s): {', '.join(added)}"),
                                                *messages])
        state.carry("uc-upload", messages)  # shown below, and kept while the user stays on the page
    if c2.button("Use the demo sample", icon="🧪", key="uc-demo"):
        try:
            names = state.load_demo()
        except ValueError as e:
            st.error(str(e))
        else:
            state.rerun_then_show("uc-upload", [("success", f"Loaded {len(names)} demo images")])
    state.show_carried("uc-upload")


def session_images_section() -> None:
    """The session's images with what has been done to each, and removing the ones no longer needed."""
    imgs = state.bucket("images")
    if not imgs:
        return
    # its label counts the images, so after a removal it is drawn anew (closed): open it while it holds the message
    said = (st.session_state.get("_carried") or {}).get("where") == "uc-images"
    with st.expander(f"Images in this session ({len(imgs)} of at most {state.MAX_IMAGES_PER_SESSION})",
                     expanded=said):
        rows = []
        for n, v in imgs.items():
            h, w = v["image"].shape[:2]
            done = [label for key, label in (("calibrated", "colour-corrected"), ("predictions", "segmented"),
                                             ("annotations", "annotated"), ("xpl", "XPL aligned"))
                    if n in state.bucket(key)]
            rows.append({"image": n, "size (px)": f"{w}×{h}", "µm per pixel": v.get("pixel_um"),
                         "sample": v.get("sample") or "",
                         "from": v.get("origin", ""), "expert mask": "yes" if v.get("gt") is not None else "",
                         "work on it": ", ".join(done)})
        table = pd.DataFrame(rows)
        key = widgets.content_key("uc-images-", rows)
        edited = st.data_editor(table, hide_index=True, width="stretch", key=key, disabled=[
            c for c in table if c not in ("µm per pixel", "sample")], column_config={
                "µm per pixel": st.column_config.NumberColumn(
                    min_value=1e-4, max_value=1000.0, format="%.4g",
                    help="Pixel size: double-click to set or correct it (empty: unknown). Grain sizes in µm, the "
                         "Statistics page and scale bars use it."),
                "sample": st.column_config.TextColumn(
                    max_chars=MAX_SAMPLE_NAME, help="The sample the image belongs to (empty: none); Statistics "
                                                    "compares samples.")})
        for n, v, smp in zip(edited["image"], edited["µm per pixel"], edited["sample"]):
            v = None if v is None or pd.isna(v) else float(v)
            if n in imgs and v != imgs[n].get("pixel_um"):
                state.set_pixel_size(n, v)
            smp = "" if smp is None or pd.isna(smp) else str(smp).strip()
            if n in imgs and smp != (imgs[n].get("sample") or ""):
                state.set_sample(n, smp)
        with st.container(horizontal=True, vertical_alignment="bottom"):
            every = st.number_input("Pixel size of every image (µm per pixel)", min_value=1e-4, max_value=1000.0,
                                    value=None, step=None, format="%.4f", key="uc-px-all",
                                    placeholder="e.g. 0.069 for a 50× objective")
            if st.button("Set for all", disabled=every is None, key="uc-px-all-set"):
                for n in imgs:
                    state.set_pixel_size(n, every)
                state.rerun_then_show("uc-images", [("success", f"Pixel size {every:g} µm/px set for "
                                                                f"{len(imgs)} image(s).")])
        gone = st.multiselect("Remove from this session", list(imgs), key="uc-remove-pick",
                              help="Removes the image and everything made from it in this session (colour "
                                   "correction, segmentation, annotation, XPL alignment). Download what you "
                                   "want to keep first.")
        if st.button(f"Remove {len(gone)} image(s)" if gone else "Remove", disabled=not gone, key="uc-remove"):
            for n in gone:
                state.remove_image(n)
            del st.session_state["uc-remove-pick"]
            state.rerun_then_show("uc-images", [("success", f"Removed {len(gone)} image(s): {', '.join(gone)}")])
        state.show_carried("uc-images")


def saved_work_section() -> None:
    """Open a session saved with the sidebar's **Save this session's work**."""
    with st.expander("Open saved work (a session saved from the sidebar)"):
        f = st.file_uploader("Saved session (orelens-session.zip)", type=["zip"], key="uc-open-session")
        st.caption("Brings back the photographs, expert masks, colour corrections, segmentations, annotations, "
                   "aligned XPL series, point counts and the session's own models of a saved session. Images of "
                   "the same name in this session are replaced by the saved ones; the others stay.")
        from ui import archive

        ok, data = False, None
        if f is not None:
            data = f.getvalue()  # one copy of what may be a few hundred MB, for the description and the opening
            try:
                st.caption(archive.describe(data) + ".")
                ok = True
            except ValueError as e:
                st.error(f"{state.plain(f.name)}: {e}.")
        if st.button("Open", disabled=not ok, key="uc-open-session-run"):
            try:
                with st.spinner("Opening the saved session…"):
                    saved = archive.unpack(data, max_images=state.MAX_IMAGES_PER_SESSION,
                                           device=st.session_state.get("device", "auto"))
                    names = state.restore(saved)
            except ValueError as e:
                st.error(f"{state.plain(f.name)}: {e}. Nothing in this session was changed.")
            except MemoryError:
                st.error(f"{state.plain(f.name)}: not enough memory to open this session. Nothing in this session "
                         "was changed.")
            else:
                done = [f"{len(names)} image(s)"] + [f"{len(saved[k])} {label}" for k, label in (
                    ("calibrated", "colour correction(s)"), ("predictions", "segmentation(s)"),
                    ("annotations", "annotation(s)"), ("xpl", "aligned XPL series"),
                    ("pointcounts", "point count(s)"), ("session_models", "model(s) of the session")) if saved[k]]
                state.rerun_then_show("uc-open", [("success", f"Opened the session saved {saved['saved'] or ''}: "
                                                  + ", ".join(done) + ".")])


def reference_colours() -> tuple[dict | None, str]:
    """Reference colour per code, chosen by the user; None (after a message) when there is none."""
    options = []
    if state.available_models():
        options.append("model")
    if any(v.get("gt") is not None for v in state.bucket("images").values()):
        options.append("session")
    if not options:
        st.error("No reference colours: install a model in models/ (its config holds the mean colour of each "
                 "mineral in its training images), or load images with full masks such as the demo sample.")
        return None, ""
    labels = {"model": "The segmentation model's training images",
              "session": "Fully annotated images of this session (ground-truth masks)"}
    src = st.radio("Reference colours", options, format_func=labels.get, horizontal=True, key="uc-refsrc")
    if src == "model":
        model = state.model_or_error()
        if model is None:
            return None, ""
        ref = model.reference_colors()
        if not ref:
            st.error(f"Model {model.name} has no reference colours in its config; retrain it or choose another.")
            return None, ""
        return ref, f"model {model.name}"
    return session_reference(), "annotated images of this session"


def session_reference() -> dict:
    """Mean sRGB colour (0-255) of every class in the session's images that carry full masks."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for item in state.bucket("images").values():
        gt = item.get("gt")
        if gt is None:
            continue
        cm = class_means(item["image"], gt, min_pixels=1, max_saturated=1.0)
        for c, m, n in zip(cm.codes.tolist(), cm.means, cm.counts.tolist()):
            sums[c] = sums.get(c, 0) + m * 255.0 * n
            counts[c] = counts.get(c, 0) + n
    return {c: sums[c] / counts[c] for c in sums}


def canvas_marks(name: str, image: np.ndarray) -> np.ndarray | None:
    """Marks painted on the image with the drawable canvas (only under ``streamlit run``)."""
    try:
        from streamlit_drawable_canvas import st_canvas
        from PIL import Image
    except Exception:  # the component cannot load outside a running server
        st.info("Drawing needs the app running under `streamlit run`; upload a partial mask instead.")
        return None
    c1, c2 = st.columns([2, 1])
    code = c1.selectbox("Mineral to paint", [m.code for m in MINERALS], format_func=widgets.mineral_format,
                        key="uc-paint-code")
    width = c2.slider("Brush", 4, 60, 20, key="uc-brush")
    widgets.legend([code])
    h, w = image.shape[:2]
    cw = min(CANVAS_WIDTH, w)
    ch = max(1, round(h * cw / w))
    bg = Image.fromarray(cio.display_copy(image, max(cw, ch)))
    try:
        result = st_canvas(stroke_width=width, stroke_color=hex_color(code), background_image=bg,
                           height=ch, width=cw, drawing_mode="freedraw", return_image_data=True,
                           key=f"uc-canvas-{name}")
        rgba = result.image_data
    except Exception as e:
        st.error(f"The drawing canvas failed ({type(e).__name__}); upload a partial mask instead.")
        return None
    if rgba is None:
        return None
    return strokes_to_mask(np.asarray(rgba, np.uint8), (h, w))


def marks_section(name: str, image: np.ndarray) -> np.ndarray | None:
    """The user's partial annotation of the image, from one of the available sources."""
    gt = state.ground_truth(name)
    sources = ["Paint on the image", "Upload a partial mask"]
    if gt is not None:
        sources.append("Part of this image's ground-truth mask")
    src = st.radio("Mark known minerals", sources, horizontal=True, key="uc-marksrc")
    if src == "Paint on the image":
        marks = canvas_marks(name, image)
    elif src == "Upload a partial mask":
        f = st.file_uploader("Partial mask: 8-bit PNG of LumenStone codes (255 = unmarked) or painted in "
                             "LumenStone colours, same size as the image", type=["png", "tif", "tiff"],
                             key="uc-maskfile")
        marks = state.read_upload(f, kind="mask", shape=image.shape[:2]) if f is not None else None
    else:
        share = st.slider("Share of the image to mark", 0.05, 0.6, 0.3, 0.05, key="uc-share")
        marks = partial_annotation(gt, fraction=share, seed=0)
    if marks is not None and (marks != IGNORE).any():
        codes, counts = np.unique(marks[marks != IGNORE], return_counts=True)
        st.caption("Marked: " + ", ".join(f"{name_of(int(c))} ({100 * n / marks.size:.1f} %)"
                                          for c, n in zip(codes, counts)))
        return marks
    st.caption("Nothing marked yet.")
    return None


def flat_field_section(image: np.ndarray):
    """Optional flat field; None when not used or unusable (after a message)."""
    with st.expander("Flat-field (vignetting) correction"):
        choice = st.radio("Flat field", ["None", "Blank reference shot", "Estimate from this session's images"],
                          key="uc-ffsrc")
        try:
            if choice == "Blank reference shot":
                f = st.file_uploader("Photograph of a blank mirror or polished blank, same optics and size",
                                     type=UPLOAD_TYPES, key="uc-fffile")
                ref = state.read_upload(f) if f is not None else None
                if ref is None:
                    return None
                if ref.shape[:2] != image.shape[:2]:
                    st.error("The blank reference shot must have the size of the images.")
                    return None
                try:
                    flat = flat_field_from_reference(ref)
                except ValueError as e:
                    st.error(f"{state.plain(f.name)}: {e}.")
                    return None
            elif choice == "Estimate from this session's images":
                same = [v["image"] for v in state.bucket("images").values() if v["image"].shape == image.shape]
                if len(same) < MIN_SERIES_IMAGES:
                    h, w = image.shape[:2]
                    st.error(f"Estimating the flat field needs at least {MIN_SERIES_IMAGES} photographs of this "
                             f"image's size ({w}×{h} px) taken with the same optics, but this session has "
                             f"{len(same)}: from fewer, the estimate is the minerals of those photographs rather "
                             "than the illumination. Add more photographs of the session, or use a blank "
                             "reference shot.")
                    return None
                flat = flat_field_from_series(same)
            else:
                return None
        except ValueError as e:
            st.error(str(e))
            return None
        st.caption(f"Flat field ({flat.source}): the darkest point receives {100 * flat.falloff():.0f} % "
                   "less light than the brightest.")
        return flat


def minerals_needed(method: str) -> int:
    """The fewest marked minerals (each with a reference colour) the calibration ``method`` fits from."""
    from core.calibration.methods import min_classes

    return min_classes(method)


def calibrate(names: list[str], marks: np.ndarray, marked: str, reference: dict, method: str, flat):
    """Fit on the marked image and correct ``names``; store results for the next pages."""
    images = state.bucket("images")
    src = images[marked]["image"]
    gain = flat.gain(src.shape[:2]) if flat is not None else None
    identity = np.vstack([np.eye(3), np.zeros((1, 3))])
    base = src if gain is None else apply_correction(src, identity, gain=gain)
    corr = fit_correction(class_means(base, marks), reference, method=method)
    bar = st.progress(0.0, text="Correcting…")
    done = []
    for i, n in enumerate(names):
        img = images[n]["image"]
        g = None
        if flat is not None:
            if img.shape[:2] != tuple(flat.shape):
                st.warning(f"{n}: a different size from the flat field; corrected without it.")
            else:
                g = gain
        state.bucket("calibrated")[n] = apply_correction(img, corr, gain=g)
        done.append(n)
        bar.progress((i + 1) / len(names), text=f"Corrected {n}")
    bar.empty()
    return corr, done


CORRECTIONS = "uc-corrections"  # image name -> the correction that made its corrected version (this page's own)


def remember_correction(correction: dict, fitted_on: str, applied_to: list[str], reference: str, flat) -> None:
    """Keep the fitted correction with every image it was applied to, so that it stays shown (and can be
    downloaded) after the page runs again."""
    cal = state.bucket("calibrated")
    kept = st.session_state.setdefault(CORRECTIONS, {})
    for n in applied_to:
        kept[n] = {"correction": correction, "fitted_on": fitted_on, "applied_to": list(applied_to),
                   "reference": reference, "flat_field": None if flat is None else flat.source,
                   "pixels": state.digest(cal[n])}


def correction_of(name: str) -> dict | None:
    """The correction that made the image's corrected version, None when it is not known (the version was made
    otherwise, e.g. opened from a saved session, or the image was replaced since)."""
    rec = st.session_state.get(CORRECTIONS, {}).get(name)
    cal = state.bucket("calibrated").get(name)
    if rec is None or cal is None or rec["pixels"] != state.digest(cal):
        return None
    return rec


def results_section(name: str, marks: np.ndarray | None, reference: dict | None, last: dict | None) -> None:
    """Before and after side by side, the ΔE table and downloads."""
    cal = state.bucket("calibrated")
    if name not in cal:
        return
    before = state.bucket("images")[name]["image"]
    after = cal[name]
    st.subheader("Before and after")
    c1, c2 = st.columns(2)
    with c1:
        widgets.show_image(before, "before", key="uc-before", pixel_um=state.pixel_size(name))
    with c2:
        widgets.show_image(after, "after", key="uc-after", pixel_um=state.pixel_size(name))
    corr = (last or {}).get("correction")
    if corr:
        st.caption(f"Method {corr['method']}, fitted on {last['fitted_on']}, applied to "
                   f"{len(last['applied_to'])} image(s).")
        for note in corr.get("notes", []):
            st.warning(note)
    if marks is not None and reference:
        b_mean, b = mean_delta_e(before, marks, reference)
        a_mean, a = mean_delta_e(after, marks, reference)
        rows = [{"mineral": name_of(c), "marked px": int((marks == c).sum()),
                 "CIEDE2000 before": round(b[c], 2), "CIEDE2000 after": round(a.get(c, float("nan")), 2)}
                for c in b]
        rows.append({"mineral": "mean", "marked px": int((marks != IGNORE).sum()),
                     "CIEDE2000 before": round(b_mean, 2), "CIEDE2000 after": round(a_mean, 2)})
        st.markdown("**Colour difference of the marked minerals from their reference colours**")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    if corr:
        st.markdown("**Colour-correction matrix** (linear RGB: `[r, g, b, 1] @ M`)")
        st.dataframe(pd.DataFrame(corr["matrix"], columns=["R", "G", "B"], index=["r", "g", "b", "1"]))
    d1, d2, d3 = st.columns(3)
    pixel_um = state.pixel_size(name)
    d1.download_button("Download this corrected image (PNG)", data=lambda: cio.encode_png(after, pixel_um=pixel_um),
                       file_name=f"{cio.safe_name(name)}_calibrated.png", mime="image/png", key="uc-dl-one", on_click="ignore")
    names = list(cal)
    sizes = {n: state.pixel_size(n) for n in names}
    # the bucket is taken now: the download is built later, outside this session's script run
    d2.download_button(f"Download all {len(names)} corrected images (ZIP)", data=lambda: _zip(names, cal, sizes),
                       file_name="calibrated.zip", mime="application/zip", key="uc-dl-all", on_click="ignore")
    if corr:
        record = {"image": name, "fitted_on": last["fitted_on"], "applied_to": last["applied_to"],
                  "reference_colours": last["reference"], "flat_field": last["flat_field"], **corr,
                  "convention": "linear RGB: [r, g, b, 1] @ matrix"}
        d3.download_button("Download the correction (JSON)", data=json.dumps(record, indent=2),
                           file_name=f"{cio.safe_name(name)}_correction.json", mime="application/json",
                           key="uc-dl-corr", on_click="ignore")


def _zip(names: list[str], cal: dict, sizes: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for n in names:
            if n in cal:
                z.writestr(f"{cio.safe_name(n)}.png", cio.encode_png(cal[n], pixel_um=sizes.get(n)))
    return buf.getvalue()


def main() -> None:
    st.header("Upload & calibrate")
    st.caption("Bring photographs in, then correct their colours to match the microscope the model was trained "
               "on: mark a few regions of minerals you recognise, and the image's colours are mapped so that "
               "those minerals get their reference colours.")
    upload_section()
    state.show_carried("uc-open")  # a saved session just opened (above the listing, whose expanders it changes)
    listing = st.container()  # filled after the rest of the page, so that it shows this run's work too
    calibration_section()
    with listing:
        session_images_section()
        saved_work_section()


def calibration_section() -> None:
    if not state.bucket("images"):
        state.no_image_hint()
        return
    name = state.image_picker("Image to calibrate", key="uc-image")
    image = state.bucket("images")[name]["image"]
    st.divider()
    reference, ref_label = reference_colours()
    marks = marks_section(name, image)
    c1, c2 = st.columns([2, 1])
    names = METHODS.names()
    method = c1.selectbox("Method", names, index=names.index(DEFAULT_METHOD),
                          format_func=lambda m: f"{m} — {METHODS.describe(m)}", key="uc-method")
    flat = flat_field_section(image)
    need = minerals_needed(method)
    n_marked = 0 if marks is None else int(np.count_nonzero(np.unique(marks) != IGNORE))
    ready = reference is not None and marks is not None and n_marked >= need
    b1, b2 = st.columns(2)
    one = b1.button("Calibrate this image", type="primary", disabled=not ready, key="uc-run")
    series = b2.button(f"Apply to the series ({len(state.bucket('images'))} images)", disabled=not ready,
                       key="uc-series", help="Use this image's marks to correct every image of the session "
                                             "(images shot under the same conditions).")
    if not ready and reference is not None:
        hint = f"Mark at least {need} mineral{'s' if need > 1 else ''} to calibrate with {method}"
        if n_marked:
            hint += f" ({n_marked} marked so far)"
        fewest = min(METHODS.names(), key=minerals_needed)
        if minerals_needed(fewest) < need:
            hint += f", or choose the method {fewest}, which needs {minerals_needed(fewest)}"
        st.info(hint + ".")
    if one or series:
        names = list(state.bucket("images")) if series else [name]
        try:
            corr, done = calibrate(names, marks, name, reference, method, flat)
            remember_correction(corr.as_dict(), name, done, ref_label, flat)
            st.success(f"Corrected {len(names)} image(s) with reference colours from {ref_label}; the next pages "
                       "use the corrected versions.")
        except ValueError as e:
            st.error(str(e))
    results_section(name, marks, reference, correction_of(name))
    if name not in state.bucket("calibrated"):
        widgets.show_image(image, name, key="uc-current", pixel_um=state.pixel_size(name))


state.through_app(__file__)
main()
