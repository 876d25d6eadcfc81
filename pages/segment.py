"""Segment page: run the model on the current image, show and download the result."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core import io as cio
from core.minerals import IGNORE, by_code
from ui import state, widgets


def run_model(model, name: str, image: np.ndarray, balance: bool = True, minerals: list[int] | None = None,
              assemblage: bool = True, refine: str | None = None, say=None, which: str = "", where=None) -> dict | None:
    """Segment one image with the page's settings; None after telling why it failed (``say``, default
    ``st.error``). ``which`` (e.g. "demo-05, 2 of 5") goes into the progress bar's text; ``where`` (a placeholder,
    default the page) is where the bar is drawn."""
    say = say or st.error
    ok, extra = state.xpl_channels_or_error(model, name, say=say)
    if not ok:
        return None
    # the settings go with the result, so that a re-segmentation elsewhere (Annotate, after fine-tuning) uses them
    options = {"balance": bool(balance), "minerals": list(minerals) if minerals else None,
               "assemblage": bool(assemblage), "refine": refine}
    head = f"Segmenting {which}" if which else "Segmenting"
    bar = (where or st).progress(0.0, text=f"{head}…")
    try:
        pred = cio_predict(model, image, extra, lambda f, msg: bar.progress(f, text=f"{head}: {msg}"), options)
    except (ValueError, MemoryError) as e:
        bar.empty()
        say(f"Segmentation failed: {e or 'not enough memory for this image'}")
        return None
    bar.empty()
    return state.prediction_record(model, pred, image, options)


def colour_check(res: dict, calibrated: bool) -> None:
    """Say whether the image's mineral colours match the training images' (a hint to calibrate first)."""
    from core.calibration import DRIFT_WARNING

    d = res.get("drift", float("nan"))
    if d is None or not np.isfinite(d):
        return
    colour = res.get("colour") or {}
    if colour.get("applied") or colour.get("cast"):
        steps = []
        if colour.get("cast"):
            c = colour["cast"]
            steps.append(f"its bright minerals' tint was far from the training photographs', so it was first "
                         f"given linear gains R ×{c[0]:.2f}, G ×{c[1]:.2f}, B ×{c[2]:.2f}")
        if colour.get("applied"):
            g = colour.get("gains") or [float("nan")] * 3
            after = colour.get("drift_after")
            steps.append(f"the minerals' colours differed from the model's training images by ΔE00 {d:.1f} "
                         f"(area-weighted; photographs taken like the training set give about 3–5), so it was "
                         f"white-balanced from its surest pixels (R ×{g[0]:.2f}, G ×{g[1]:.2f}, B ×{g[2]:.2f}) and "
                         f"segmented again" + (f" (ΔE00 {after:.1f} afterwards)" if after is not None else ""))
        else:
            steps.append(f"afterwards its minerals' colours were ΔE00 {d:.1f} from the training colours")
        st.info("Colour check: " + "; ".join(steps) + ". This result comes from the corrected image. "
                "Calibrating from marks on the Upload & calibrate page is more reliable than these automatic "
                "corrections.", icon="🎨")
        return
    if d > DRIFT_WARNING:
        note = f" ({colour['note']})" if colour.get("note") else ""
        st.warning(f"Colour check: the minerals' colours differ from the model's training images by ΔE00 {d:.1f} "
                   f"(area-weighted; photographs taken like the training set give about 3–5){note}. The result may "
                   + ("suffer even after calibration: check the marks and the method on the Upload & calibrate page."
                      if calibrated else "improve after colour calibration: mark a few minerals on the "
                      "Upload & calibrate page, then segment again."), icon="🎨")
    else:
        st.caption(f"Colour check: ΔE00 {d:.1f} from the model's training colours (area-weighted; "
                   f"up to {DRIFT_WARNING:g} is normal).")


def results_overview(preds: dict, names: list[str]) -> None:
    """One row per segmented image: what the model found, how sure it was and what to look at, least sure first."""
    from core.calibration import DRIFT_WARNING

    rows = []
    for n in names:
        p = preds[n]
        ov = state.result_overview(p)
        chk = state.count_check(n, p["labels"]) or {}
        agree = None
        if chk.get("agreement") is not None:
            agree = f"{100 * chk['agreement']:.1f} % of {chk['called'] - chk['mask_unlabelled']} points"
        rows.append({"image": n, "unsure %": None if ov["unsure"] is None else 100.0 * ov["unsure"],
                     "ore minerals (area %)": ", ".join(f"{by_code(c).label} {v:.1f}" for c, v in ov["minerals"][:4]),
                     "ΔE00": p.get("drift"), "point count agrees at": agree, "model": p.get("model"),
                     "to look at": "; ".join(state.result_notes(n, p))})
    rows.sort(key=lambda r: -(r["unsure %"] or 0.0))
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"unsure %": st.column_config.ProgressColumn(
                     format="%.1f %%", min_value=0, max_value=max(1.0, max(r["unsure %"] or 0 for r in rows))),
                                "ΔE00": st.column_config.NumberColumn(format="%.1f")})
    st.caption("Unsure %: the share of the photograph where the model's two likeliest minerals are less than 0.5 "
               "apart in probability; the images at the top are the ones to check first (point counting below, or "
               "Annotate). ΔE00: how far the minerals' colours are from the training images' (up to "
               f"{DRIFT_WARNING:g} is normal). Point count: where you have counted the image, the share of your "
               "calls the segmentation agrees with.")
    import pandas as pd

    st.download_button("Download this table (CSV)", pd.DataFrame(rows).to_csv(index=False).encode(),
                       "orelens-results.csv", "text/csv", key="segment-dl-overview", on_click="ignore")


def cio_predict(model, image, extra, progress, options: dict | None = None):
    from core.segmentation import predict

    return predict(model, image, extra=extra, progress=progress, **state.predict_options(options))


REFINE_LABELS = {
    "crf": "CRF: outlines follow the grains' colours (sharpest)",
    "guided": "guided filter (faster, softer outlines)",
    "none": "none: the network's own outlines",
}


def refine_choice(model) -> str | None:
    """The Segment page's edge refinement: None for the model's own setting, else a method name or "none"."""
    r = model.config.get("refine")
    own = r.get("method", "guided") if r else "none"
    names = list(REFINE_LABELS)
    pick = st.selectbox("Edge refinement", names, index=names.index(own) if own in names else 0,
                        format_func=lambda m: REFINE_LABELS[m] + (" — this model's setting" if m == own else ""),
                        key="segment-refine",
                        help="PSPNet outlines grains at 1/16 of the photograph's resolution; refinement moves "
                             "the outlines onto the photograph's colour edges. The CRF adds about 1 s per "
                             "photograph on a CPU.")
    return None if pick == own else pick


def mineral_choice(model) -> tuple[list[int] | None, bool]:
    """The Segment page's choice of minerals: the user's list (None: the model decides) and whether minerals
    never seen together in training are kept apart."""
    from core.segmentation.assemblage import parse_minerals

    with st.expander("Minerals in this sample"):
        options = [c for c in model.classes if c != 0]
        chosen = st.multiselect(
            "Only these minerals can occur (leave empty to let the model decide)", options,
            format_func=lambda c: f"{by_code(c).name} ({by_code(c).label})", key="segment-minerals",
            help="If you know the ore type, name its minerals: no other mineral will be predicted. "
                 "Non-metallic minerals are always included.")
        has = "assemblage" in model.config
        apart = st.checkbox("Keep apart minerals never seen in one training photograph", value=True,
                            key="segment-assemblage", disabled=bool(chosen) or not has,
                            help="The model's training photographs show which minerals occur together (for the "
                                 "default model: pyrrhotite, pentlandite and magnetite never with pyrite, "
                                 "galena, sphalerite, bornite or tennantite). The set of minerals that "
                                 "takes most of the photograph is kept; the others are not predicted."
                                 + ("" if has else " This model's config has no assemblage record."))
    return (parse_minerals(chosen, model.classes) if chosen else None), apart


def error_map(gt: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    rgb = np.zeros((*gt.shape, 3), np.uint8)
    lab = gt != IGNORE
    ok = (gt == labels) & lab
    rgb[ok] = (40, 170, 60)
    rgb[lab & ~ok] = (220, 40, 40)
    rgb[~lab] = (200, 200, 200)
    return rgb, float(ok.sum() / max(lab.sum(), 1))


def compare_with_expert(name: str, gt: np.ndarray, labels: np.ndarray):
    """Error map, pixel accuracy and IoU scores of ``labels`` against ``gt``, kept for the current image while both
    stay the same arrays: moving the opacity slider reruns the page, and a full-size comparison takes about 0.5 s."""
    from core.segmentation import ConfusionMatrix

    hit = st.session_state.get("_segment_vs_expert")
    if hit is None or hit[0] != name or hit[1] is not labels or hit[2] is not gt:
        emap, acc = error_map(gt, labels)
        cm = ConfusionMatrix()
        cm.update(gt, labels)
        hit = st.session_state["_segment_vs_expert"] = (name, labels, gt, emap, acc, cm.scores())
    return hit[3:]


def settings_text(options: dict, model) -> str:
    """The Segment page's settings of a result, in words."""
    r = model.config.get("refine")
    own = r.get("method", "guided") if r else "none"
    parts = ["edge refinement: " + (options.get("refine") or own),
             "automatic colour correction " + ("on" if options.get("balance") else "off")]
    if options.get("minerals"):
        parts.append("minerals: " + ", ".join(by_code(int(c)).label for c in options["minerals"] if int(c) != 0))
    elif not options.get("assemblage", True):
        parts.append("any minerals together")
    return "; ".join(parts)


def expert_mask_upload(name: str, shape: tuple[int, int]) -> None:
    """An expert mask for the current image (a lab's own reference), for the error map and the IoU table."""
    has = state.ground_truth(name) is not None
    with st.expander("Replace the expert mask of this image" if has else
                     "Compare with an expert mask of this image (error map, IoU per mineral)"):
        f = st.file_uploader("Expert mask: 8-bit PNG or TIFF of LumenStone class codes (255 = unlabelled), the "
                             "image's size", type=["png", "tif", "tiff"], key=f"segment-gt-upload-{name}")
        if f is None:
            return
        if st.session_state.get("_segment_gt_file") == (name, f.file_id):
            st.caption(f"{f.name} is this image's expert mask.")
            return
        mask = state.read_upload(f, kind="mask", shape=shape)
        if mask is None:
            return
        if not (mask != IGNORE).any():
            st.error(f"{f.name}: the mask holds no labelled pixel (every pixel is 255, unlabelled).")
            return
        state.bucket("images")[name]["gt"] = mask
        st.session_state["_segment_gt_file"] = (name, f.file_id)
        st.rerun()


def own_model_section() -> None:
    """Open a model archive (config.json + weights.pt) as a model of this session."""
    with st.expander("Use a model of your own"):
        f = st.file_uploader("Model archive (zip of config.json + weights.pt, as Annotate's “Download the "
                             "fine-tuned model” or a zipped model folder of `python -m core train`)", type=["zip"],
                             key="segment-model-file")
        st.caption("The model is used in this session only (it is chosen in the sidebar) and goes with it. Nothing "
                   "in the archive is run: its config is read as JSON and its weights as tensors only.")
        if f is not None and st.button("Use this model", key="segment-model-open"):
            from core.segmentation import load_model_archive

            try:
                with st.spinner("Loading the model…"):
                    model = load_model_archive(f.getvalue(), device=st.session_state.get("device", "auto"),
                                               name=cio.safe_name(f.name.rsplit(".", 1)[0], "uploaded"))
            except ValueError as e:
                st.error(f"{state.plain(f.name)}: {e}")
            except MemoryError:
                st.error(f"{state.plain(f.name)}: not enough memory to load this model")
            else:
                state.add_session_model(model, f"opened from {cio.safe_name(f.name)}")
                state.rerun_then_show("segment-model", [("success", f"Model {model.name} is now this session's "
                                                                   "model (sidebar).")])
        state.show_carried("segment-model")


def main() -> None:
    st.header("Segment")
    st.caption("Every pixel labelled with its mineral by the CNN; LumenStone class codes and colours.")
    name = state.image_picker("Image", key="segment-image")
    if name is None:
        state.no_image_hint()
        return
    _, image = state.current_image()
    calibrated = name in state.bucket("calibrated")
    model = state.model_or_error()
    own_model_section()
    if model is None:
        return
    c1, c2 = st.columns([3, 2])
    pixel_um = state.pixel_size(name)
    c1.write(f"**{name}** — {image.shape[1]}×{image.shape[0]} px"
             + (f" at {pixel_um:g} µm/px" if pixel_um else " (pixel size unknown)")
             + (" · colour-corrected" if calibrated else ""))
    from core.segmentation.model import describe_network

    c2.write(f"Model **{model.name}** ({describe_network(model.config)}, "
             f"working scale {model.scale:g})")
    preds = state.bucket("predictions")
    balance = st.checkbox("Automatic colour correction when the colours are off", value=True, key="segment-balance",
                          disabled="auto_white_balance" not in model.config,
                          help="A strong colour cast (the bright minerals' tint far from the training "
                               "photographs') is corrected before segmenting; if the predicted minerals' colours "
                               "then differ clearly from the training images' (ΔE00 above 6), the image is "
                               "white-balanced from the model's surest pixels and segmented again. Photographs "
                               "taken like the training set are not changed, and images colour-calibrated from "
                               "marks on the Upload & calibrate page never are: marks beat the automatic guess.")
    if calibrated and balance:
        st.caption("This image is colour-calibrated from marks, so it is segmented as calibrated, without "
                   "automatic colour correction.")
    minerals, apart = mineral_choice(model)
    refine = refine_choice(model)
    b1, b2 = st.columns(2)
    # the buttons' progress bar: a placeholder on the page in every run, so that what comes below keeps its place
    # (an expander opened there after a segmentation stays open when the page runs again)
    busy = st.empty()
    if b1.button("Segment this image", type="primary", key="segment-run"):
        res = run_model(model, name, image, balance and not calibrated, minerals, apart, refine, where=busy)
        if res is not None:
            preds[name] = res
    # images without a current result of this model: after a change of model (one fine-tuned on Annotate, say) or
    # a colour correction of the series, the whole series can be segmented again in one go
    others = [n for n in state.bucket("images") if n not in preds or preds[n].get("model") != model.name
              or state.made_from_other_pixels(preds[n], state.pixels(n))]
    if minerals and len(state.bucket("images")) > 1 and others:
        b2.caption("Segment all applies the minerals chosen above to every image.")
    if len(state.bucket("images")) > 1 and b2.button(f"Segment all images without a current result of {model.name} "
                                                      f"({len(others)})", key="segment-all", disabled=not others):
        errors, done = [], 0
        for i, n in enumerate(others, 1):
            img = state.pixels(n)
            res = run_model(model, n, img, balance and n not in state.bucket("calibrated"), minerals, apart, refine,
                            say=lambda text, n=n: errors.append(f"{n}: {text}"), which=f"{n}, {i} of {len(others)}",
                            where=busy)
            if res is not None:
                preds[n] = res
                done += 1
        # run again so that the button counts what is left
        which = ("" if not minerals else " Only these minerals were allowed in every one of them: "
                 + ", ".join(by_code(c).name for c in minerals if c != 0)
                 + " (Minerals in this sample); the results table marks them.")
        state.rerun_then_show("segment-all", [("success" if done == len(others) and not minerals else "warning",
                                               f"Segmented {done} of {len(others)} image(s).{which}")]
                              + [("error", e) for e in errors])
    state.show_carried("segment-all")
    done = {n: p["labels"] for n, p in preds.items()
            if n in state.bucket("images") and p["labels"].shape == state.bucket("images")[n]["image"].shape[:2]}
    if len(done) > 1:
        with st.expander(f"Results of this session ({len(done)} images): which to check first"):
            results_overview(preds, list(done))
        sizes = {n: state.pixel_size(n) for n in done}  # taken now: the download is built after this run
        st.download_button(f"Download all {len(done)} masks (ZIP: masks/*.png of class codes + one area table)",
                           lambda: widgets.masks_zip(done, sizes), "orelens-masks.zip", "application/zip",
                           key="segment-dl-all", on_click="ignore")
    from ui import pointcount

    if name not in preds:
        widgets.show_image(image, name, key="segment-input", pixel_um=pixel_um)
        st.info("Press **Segment this image** to run the model.")
        pointcount.section(name, image, model.classes)
        return
    res = preds[name]
    labels = res["labels"]
    if labels.shape != image.shape[:2]:
        st.warning("The image changed since it was segmented; segment it again.")
        return
    if state.made_from_other_pixels(res, image):
        st.warning("This result was made before the image's colours were last corrected (Upload & calibrate); "
                   "press **Segment this image** to segment the corrected image.")
    now = {"balance": bool(balance and not calibrated), "minerals": list(minerals) if minerals else None,
           "assemblage": bool(apart), "refine": refine}
    made = res.get("options")
    if made is not None and res.get("model") == model.name and made != now:
        st.info("This result was made with other settings than the ones above ("
                + settings_text(made, model) + "); press **Segment this image** to apply the new ones.")
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key="segment-alpha")
    ov = cio.overlay(image, labels, alpha)
    widgets.show_image(ov, f"{name}: segmentation ({res['model']})", key="segment-overlay", pixel_um=pixel_um)
    widgets.legend(np.unique(labels))
    colour_check(res, calibrated)
    if res.get("minerals"):
        (st.warning if res.get("minerals_close") else st.caption)("Minerals: " + res["minerals"] + ".")
    table = widgets.area_table(labels, pixel_um)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"area %": st.column_config.NumberColumn(format="%.2f"),
                                "% of ore minerals": st.column_config.NumberColumn(format="%.2f"),
                                "area (mm²)": st.column_config.NumberColumn(format="%.4g")})
    gt = state.ground_truth(name)
    if gt is not None and gt.shape == labels.shape:
        emap, acc, sc = compare_with_expert(name, gt, labels)
        st.subheader("Error map against the expert mask")
        st.caption(f"Green: correct, red: wrong, grey: unlabelled. Pixel accuracy {acc:.3f}.")
        widgets.show_image(emap, "error map", key="segment-error")
        with st.expander(f"IoU per mineral against the expert mask (mean {sc.miou:.3f})"):
            st.dataframe([{"code": c, "mineral": by_code(c).name, "IoU": round(v, 4)} for c, v in sorted(sc.iou.items())],
                         hide_index=True, width="stretch")
            st.caption("Intersection over union of each class present in the expert mask; the mean is over those "
                       "classes, as `python -m core evaluate` computes it.")
    expert_mask_upload(name, labels.shape)
    d1, d2, d3 = st.columns(3)
    # encoded when asked for, not on every change of the opacity slider
    d1.download_button("Download mask (PNG of class codes)", lambda: cio.encode_png(labels, pixel_um=pixel_um),
                       f"{name}_mask.png", "image/png", key="segment-dl-mask",
                       help="8-bit PNG of LumenStone class codes" + (f"; it records the pixel size ({pixel_um:g} µm), "
                                                                     "which `python -m core stats` reads"
                                                                     if pixel_um else ""), on_click="ignore")
    d2.download_button("Download overlay (JPEG)", lambda: cio.encode_jpeg(widgets.with_scale_bar(ov, pixel_um)),
                       f"{name}_overlay.jpg", "image/jpeg", key="segment-dl-overlay",
                       help="The photograph with the mineral colours at the chosen opacity"
                            + (", and a scale bar" if pixel_um else ""), on_click="ignore")
    d3.download_button("Download area table (CSV)", table.to_csv(index=False).encode(), f"{name}_areas.csv",
                       "text/csv", key="segment-dl-csv", on_click="ignore")
    pointcount.section(name, image, res.get("classes") or model.classes)


state.through_app(__file__)
main()
