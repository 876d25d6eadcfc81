"""Annotate page: rough strokes spread by superpixels, uncertain regions, and fine-tuning on the new labels.

Layout (stable element keys, for scripted browser use):

- ``annotate-image`` image picker, ``annotate-mineral`` mineral picker (LumenStone colours),
  ``annotate-brush`` brush size (image pixels), ``annotate-start`` start from the prediction or from scratch,
  ``annotate-method`` propagation method, ``annotate-undo`` / ``annotate-clear`` buttons.
- The drawing canvas sits in the container ``annotate-canvas-box`` (CSS class ``st-key-annotate-canvas-box``);
  the canvas widget key is ``annotate-canvas-<image name>-<n>`` (n grows on undo/clear). It shows the image
  scaled to at most ``CANVAS_MAX_SIDE`` px wide; canvas pixel (x, y) is image pixel (x / s, y / s) with
  s = canvas width / image width.
- The propagated mask, updated after every stroke, is the image in the container ``annotate-result``
  (CSS class ``st-key-annotate-result``); ``annotate-result-stats`` holds its pixel counts as text and
  the share of pixels the strokes changed from the starting mask ("Strokes changed X% of the pixels").
- Fine-tuning runs in a background thread (``annotate-finetune`` starts it, ``annotate-ft-stop`` stops it);
  the job lives in the page's per-image work area under ``ft_job``.
- Without the canvas (it needs a browser), ``annotate-scribble-upload`` takes a scribble mask instead.
"""
from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import streamlit as st

from core import io as cio
from core.minerals import IGNORE, MINERALS, by_code
from ui import state, widgets

CANVAS_MAX_SIDE = 900
_COLOR_TO_CODE = {"#%02x%02x%02x" % m.color: m.code for m in MINERALS}


def _canvas_module():
    """The drawable-canvas component, or None where it cannot run (no browser session)."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception:
        return None
    return st_canvas


def stroke_layer(w: dict, size: tuple[int, int]) -> np.ndarray:
    """The work area's uploaded strokes (``w["upload"]``, full size) reduced to the canvas ``size`` (width, height),
    255 where there is none. A stroke too small to keep a pixel of its own at that size (a point count's call)
    still marks the pixels around the one it falls in. Kept while the strokes and the size stay the same."""
    import cv2

    key = (id(w["upload"]), size)
    if w.get("_stroke_layer_key") != key:
        up = w["upload"]
        out = np.full((size[1], size[0]), IGNORE, np.uint8)
        for code in np.unique(up):
            if code == IGNORE:
                continue
            cover = cv2.resize((up == code).astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
            out[cv2.dilate(cover.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = code  # a dot stays visible
        w["_stroke_layer"], w["_stroke_layer_key"] = out, key
    return w["_stroke_layer"]


def with_strokes(rgb: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """``rgb`` with the strokes of ``layer`` (codes, 255 none) painted in their minerals' colours."""
    from core.minerals import palette

    out = rgb.copy()
    m = layer != IGNORE
    out[m] = palette()[layer[m]]
    return out


def hex_of(code: int) -> str:
    return "#%02x%02x%02x" % by_code(code).color


def canvas_strokes(objects: list[dict], scale: float) -> list[tuple]:
    """Canvas objects -> (code, width, (P, 2) image points) strokes.

    Paths are Fabric.js objects: ``type`` "Path", ``path`` a list of commands (``["M", x, y]``,
    ``["Q", cx, cy, x, y]``, ``["L", x, y]``) in canvas pixels; ``stroke`` the colour, which
    identifies the mineral.
    """
    out = []
    for obj in objects or []:
        if str(obj.get("type", "")).lower() != "path":
            continue
        code = _COLOR_TO_CODE.get(str(obj.get("stroke", "")).lower())
        if code is None:
            continue
        pts = []
        for cmd in obj.get("path") or []:
            nums = [float(v) for v in cmd[1:] if isinstance(v, (int, float))]
            pts.extend(zip(nums[0::2], nums[1::2]))
        if not pts:
            continue
        p = np.asarray(pts, np.float64) / scale
        out.append((code, max(1.0, float(obj.get("strokeWidth", 10)) / scale), p))
    return out


def superpixels_for(w: dict, image: np.ndarray):
    from core.annotation import compute_superpixels

    if w["superpixels"] is None:
        bar = st.progress(0.0, text="Computing superpixels (once per image)…")
        w["superpixels"] = compute_superpixels(image, progress=lambda f, m: bar.progress(min(1.0, f), text=m))
        bar.empty()
    return w["superpixels"]


def run_propagation(w: dict, image: np.ndarray, scribbles: np.ndarray, method: str, prior) -> None:
    from core.annotation import propagate

    key = (hash(scribbles.tobytes()), method, None if prior is None else hash(prior.tobytes()))
    if w["result_key"] == key and w["result"] is not None:
        return
    sp = superpixels_for(w, image)
    w["result"] = propagate(image, scribbles, method=method, superpixels=sp, prior=prior).mask
    w["result_key"] = key


def uncertain_regions(name: str, w: dict, shape, fraction: float, score: str):
    """The most uncertain regions of the current prediction (cached per prediction, fraction and score)."""
    from core.annotation import select_regions, uncertainty_map

    pred = state.bucket("predictions").get(name)
    if pred is None or pred.get("probs") is None:
        return None
    key = (id(pred["probs"]), round(fraction, 3), score)
    if w.get("regions_key") != key:
        umap = uncertainty_map(pred["probs"], shape=shape, score=score)
        w["regions"] = select_regions(umap, fraction=fraction, smooth=4.0)
        w["regions_key"] = key
    return w["regions"]


def small_overlay(image_small: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """Overlay at display size (the mask is reduced by nearest neighbour)."""
    import cv2

    h, w = image_small.shape[:2]
    m = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) if mask.shape != (h, w) else mask
    return cio.overlay(image_small, m, alpha)


def cached_bytes(w: dict, key, make) -> bytes:
    store = w.setdefault("bytes", {})
    if key not in store:
        if len(store) > 8:
            store.clear()
        store[key] = make()
    return store[key]


def outline(rgb: np.ndarray, region: np.ndarray, color=(255, 0, 255)) -> np.ndarray:
    import cv2

    edge = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out = rgb.copy()
    out[edge] = color
    return out


def dataset_zip(name: str, image: np.ndarray, mask: np.ndarray, split: str, pixel_um: float | None = None) -> bytes:
    stem = cio.safe_name(name)
    split = cio.safe_name(split, "train")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"imgs/{split}/{stem}.jpg", cio.encode_jpeg(image, quality=95))
        z.writestr(f"masks/{split}/{stem}.png", cio.encode_png(mask, pixel_um=pixel_um))
    return buf.getvalue()


def model_zip(model) -> bytes:
    from core.segmentation import save_model

    with tempfile.TemporaryDirectory() as d:
        save_model(Path(d), model.net, model.config)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in ("config.json", "weights.pt"):
                z.write(Path(d) / f, f"{model.config['name']}/{f}")
        return buf.getvalue()


class _Stopped(Exception):
    """Raised inside the fine-tuning thread when the user stops it."""


def start_finetune(name: str, model, image: np.ndarray, mask: np.ndarray, iterations: int, lr: float,
                   extra: np.ndarray | None = None, options: dict | None = None) -> dict:
    """Fine-tune and re-segment in a background thread, so the page stays usable meanwhile.

    ``options`` are the Segment page's settings for this image (automatic colour correction, the sample's
    minerals, keeping minerals apart); the re-segmentation uses them too. The returned job dict is updated by the
    thread: ``progress`` (0-1), ``message``, ``done``, and then either ``result`` (tuned model, prediction) or
    ``error`` (text). Setting ``job["stop"]`` stops it.
    """
    import threading

    job = {"name": name, "progress": 0.0, "message": "starting…", "done": False, "result": None, "error": None,
           "stop": threading.Event(), "iterations": iterations, "options": options, "mask": mask, "image": image}
    # the user has just marked the minerals in ``mask``: a list of the sample's minerals must hold them
    settings = state.predict_options(options, mask)

    def report(base: float, span: float, prefix: str):
        def f(frac: float, msg: str) -> None:
            if job["stop"].is_set():
                raise _Stopped()
            job["progress"], job["message"] = base + span * min(1.0, frac), f"{prefix}: {msg}"
        return f

    def work() -> None:
        import torch

        from core.annotation.finetune import finetune
        from core.segmentation import predict

        try:
            torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
            tuned = finetune(model, [image], [mask], iterations=iterations, lr=lr,
                             progress=report(0.0, 0.7, "Fine-tuning"), extras=None if extra is None else [extra])
            pred = predict(tuned, image, extra=extra, progress=report(0.7, 0.3, "Re-segmenting"), **settings)
            job["result"] = (tuned, pred)
        except _Stopped:
            job["stopped"] = True  # asked for, not a failure
        except (ValueError, MemoryError, RuntimeError) as e:
            job["error"] = str(e)
        finally:
            job["done"] = True

    job["thread"] = threading.Thread(target=work, name=f"finetune-{name}", daemon=True)
    job["thread"].start()
    return job


def collect_finetune(w: dict) -> None:
    """Move a finished background job's result into the session (prediction and before/after view)."""
    job = w.get("ft_job")
    if job is None or not job["done"]:
        return
    w["ft_job"] = None
    if job.get("stopped"):
        w["ft_message"] = ("info", "Fine-tuning stopped before the end, as asked; the model is unchanged.")
        return
    if job["error"] is not None:
        w["ft_message"] = ("error", f"Fine-tuning failed: {job['error']}")
        return
    tuned, pred = job["result"]
    tuned.config["name"] = state.unique_model_name(tuned.name)  # a second fine-tune is not taken for the first
    name = job["name"]
    before = state.bucket("predictions").get(name)
    old = before["labels"] if before is not None else None
    # the same record as the Segment page's (colour check, fingerprint of the pixels), so nothing is lost
    state.bucket("predictions")[name] = state.prediction_record(tuned, pred, job["image"], job["options"])
    # the annotation the model was trained on stays as it was: its strokes keep building on the prediction they
    # were drawn on (not the new one), until the user asks for the new one
    w["finetune"] = {"model": tuned, "old": old, "new": pred.labels, "mask": job["mask"]}
    if old is not None:
        w["base"] = old
    w["ft_message"] = None


def finetune_progress(job: dict) -> None:
    """Progress of the background job, refreshed every second; reruns the page when it has finished."""

    @st.fragment(run_every=1.0)
    def _show() -> None:
        if job["done"]:
            st.rerun()
        st.progress(job["progress"], text=job["message"])
        if st.button("Stop fine-tuning", key="annotate-ft-stop"):
            job["stop"].set()

    _show()


def finetune_summary(ft: dict) -> str:
    """How the fine-tuned model's prediction agrees with the annotation it was trained on, against the prediction
    before (the annotation shown now may have changed since; it is not the yardstick)."""
    new, trained = ft["new"], ft["mask"]
    lab = trained != IGNORE
    acc = float((new[lab] == trained[lab]).mean()) if lab.any() else float("nan")
    text = f"Model **{ft['model'].name}**: agreement with the annotation it was trained on {acc:.3f}"
    if ft["old"] is not None and ft["old"].shape == new.shape:
        acc0 = float((ft["old"][lab] == trained[lab]).mean()) if lab.any() else float("nan")
        changed = float((ft["old"] != new).mean())
        text += f" (the prediction before: {acc0:.3f}); {changed * 100:.1f}% of the pixels changed class."
        if acc < acc0:
            text += (" :orange[It agrees *less* than the prediction before: try fewer iterations or a lower "
                     "learning rate, or keep the model you had.]")
    return text


def finetune_section(name: str, image: np.ndarray, mask: np.ndarray, w: dict) -> None:
    st.subheader("Fine-tune the model on these annotations")
    job = w.get("ft_job")  # a finished job was collected at the top of the page
    c1, c2 = st.columns(2)
    iterations = c1.slider("Iterations", 2, 200, 30, 1, key="annotate-ft-iterations")
    lr = c2.select_slider("Learning rate", [1e-5, 3e-5, 1e-4, 3e-4, 1e-3], value=1e-4, key="annotate-ft-lr")
    st.caption("Runs in the background: keep drawing meanwhile; the new prediction replaces the old one when "
               "it is done. The image is segmented again with the settings it had on the Segment page (colour "
               "correction, the sample's minerals, plus any mineral you marked).")
    if job is None and st.button("Fine-tune on these annotations", key="annotate-finetune"):
        model = state.model_or_error()
        if model is None:
            return
        ok, extra = state.xpl_channels_or_error(model, name)
        if not ok:
            return
        before = state.bucket("predictions").get(name) or {}
        job = w["ft_job"] = start_finetune(name, model, image, mask.copy(), iterations, lr, extra,
                                           before.get("options"))
        w["ft_message"] = None
    if job is not None:
        finetune_progress(job)
    if w.get("ft_message"):
        kind, text = w["ft_message"]
        (st.info if kind == "info" else st.error)(text)
    ft = w.get("finetune")
    if ft and ft["new"].shape == image.shape[:2]:
        new = ft["new"]
        st.markdown(finetune_summary(ft))
        cols = st.columns(2)
        if ft["old"] is not None and ft["old"].shape == new.shape:
            cols[0].image(small_overlay(w["small"], ft["old"], 0.55), caption="before fine-tuning")
        cols[1].image(small_overlay(w["small"], new, 0.55), caption="after fine-tuning")
        u1, u2 = st.columns(2)
        in_use = any(r["model"] is ft["model"] for r in state.session_models().values())
        if u1.button("Use it for this session's images" if not in_use else "In use in this session",
                     disabled=in_use, key="annotate-use-model", icon="➡️",
                     help="Chosen in the sidebar for every page of this session, so that **Segment all images** "
                          "on the Segment page applies it to the rest of the series. It stays in this session "
                          "only: download it to keep it."):
            f = ft["model"].config.get("finetune", {})
            state.add_session_model(ft["model"], f"fine-tuned from {f.get('from', '?')} on {name} "
                                                 f"({f.get('iterations', '?')} iterations); not scored on held-out images")
            state.rerun_then_show("annotate-use", [("success", f"Model {ft['model'].name} is now this session's "
                                                              "model (sidebar).")])
        u2.download_button("Download the fine-tuned model (zip)",
                           cached_bytes(w, ("model", id(ft["model"])), lambda: model_zip(ft["model"])),
                           f"{ft['model'].name}.zip", "application/zip", key="annotate-dl-model",
                           help="config.json + weights.pt: open it on the Segment page (Use a model of your own) "
                                "in another session, or unpack it into the server's models/ folder for everyone.", on_click="ignore")
        if state.show_carried("annotate-use"):
            st.page_link("pages/segment.py", label="Go to Segment", icon="🗺️")


def main() -> None:
    from core.annotation import DEFAULT_METHOD, METHODS, synthetic_scribbles

    st.header("Annotate")
    st.caption("Draw rough strokes on each mineral; superpixels spread them into a full mask. "
               "Start from the model's prediction and correct it where it is unsure.")
    name = state.image_picker("Image", key="annotate-image")
    if name is None:
        state.no_image_hint()
        return
    _, image = state.current_image()
    H, W = image.shape[:2]
    w = state.annotate_work(name, image)
    collect_finetune(w)
    pred = state.bucket("predictions").get(name)
    has_pred = pred is not None and pred["labels"].shape == (H, W)
    if not w.get("seeded"):  # the first look at this image here
        w["seeded"] = True
        saved = state.bucket("annotations").get(name)
        if saved is not None and saved.shape == (H, W) and not w["objects"] and w["upload"] is None:
            # an annotation made before (a saved session opened again): new strokes correct it instead of
            # replacing it with what they alone would make
            w["upload"], w["from_saved"] = saved.copy(), True

    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    # the mineral and brush last chosen, also after a visit to another page (which drops the widgets' own state)
    kept = st.session_state.setdefault("annotate-kept", {"mineral": 1, "brush": 16})
    codes_all = [m.code for m in MINERALS]
    code = c1.selectbox("Mineral", codes_all, index=codes_all.index(kept["mineral"]),
                        format_func=widgets.mineral_format, key="annotate-mineral")
    brush = c2.slider("Brush size (image px)", 2, 80, kept["brush"], key="annotate-brush")
    kept.update(mineral=code, brush=brush)
    start = c3.radio("Start from", ["model prediction", "nothing"], index=0 if has_pred else 1,
                     key="annotate-start", horizontal=True)
    method = c4.selectbox("Propagation", METHODS.names(), index=METHODS.names().index(DEFAULT_METHOD),
                          key="annotate-method", help="; ".join(f"{n}: {METHODS.describe(n)}" for n in METHODS))
    widgets.legend([code])
    if start == "model prediction" and not has_pred:
        st.info("No prediction for this image yet: segment it on the Segment page to start from it.")
    prior = pred["labels"] if (start == "model prediction" and has_pred) else None
    base = w.get("base")
    if prior is not None and base is not None and base.shape == (H, W) and base is not pred["labels"]:
        # after fine-tuning, the annotation keeps building on the prediction it was drawn on
        p1, p2 = st.columns([4, 1])
        p1.info("Your strokes still build on the prediction made **before** fine-tuning, so the annotation stays "
                "the one the model was trained on.")
        if p2.button("Build on the new prediction", key="annotate-new-base"):
            w["base"] = None
            st.rerun()
        else:
            prior = base

    from core.annotation import DEFAULT_SCORE, SCORES

    u1, u2, u3, u4 = st.columns([2, 2, 2, 3])
    show_unc = u1.checkbox("Show uncertain regions", value=has_pred, disabled=not has_pred,
                           key="annotate-show-uncertain")
    fraction = u2.slider("Share of the image", 0.02, 0.30, 0.10, 0.01, disabled=not has_pred,
                         key="annotate-fraction")
    score = u3.selectbox("Uncertainty score", SCORES.names(), index=SCORES.names().index(DEFAULT_SCORE),
                         disabled=not has_pred, key="annotate-score",
                         help="; ".join(f"{n}: {SCORES.describe(n)}" for n in SCORES))
    regions = uncertain_regions(name, w, (H, W), fraction, score) if (show_unc and has_pred) else None
    if regions is not None:
        u4.caption(f"Magenta outlines: the {regions.fraction * 100:.0f}% of the image where the model is least "
                   f"sure ({len(regions.boxes)} regions): label those first.")

    b1, b2, b3 = st.columns(3)  # Undo is drawn after the canvas, which reports the strokes drawn so far
    if b2.button("Clear strokes", key="annotate-clear"):
        w["objects"], w["upload"], w["initial"], w["base"], w["from_saved"] = [], None, [], None, False
        w["version"] += 1
    gt = state.ground_truth(name)
    if gt is not None and gt.shape == (H, W) and b3.button("Example strokes from the expert mask",
                                                            key="annotate-example",
                                                            help="one straight stroke per region of this image's "
                                                                 "reference mask, to try the propagation"):
        w["upload"], w["from_saved"] = synthetic_scribbles(gt, width=max(3, brush // 2)), False

    scale = min(1.0, CANVAS_MAX_SIDE / W)
    cw, ch = max(1, round(W * scale)), max(1, round(H * scale))
    scale = cw / W
    if w.get("small_key") != (cw, ch):
        import cv2

        w["small"] = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_AREA)
        w["small_key"] = (cw, ch)
    small_img = w["small"]
    bg = small_overlay(small_img, prior, 0.35) if prior is not None else small_img
    if regions is not None:
        import cv2

        small = cv2.resize(regions.mask.astype(np.uint8), (bg.shape[1], bg.shape[0]), interpolation=cv2.INTER_NEAREST)
        bg = outline(bg, small > 0)
    if w["upload"] is not None:  # strokes not drawn here (an uploaded mask, the point count's calls) are shown too
        bg = with_strokes(bg, stroke_layer(w, (cw, ch)))
    st_canvas = _canvas_module()
    canvas_key = f"annotate-canvas-{name}-{w['version']}"  # one canvas per image: strokes never pass to another
    if canvas_key not in st.session_state and w["objects"]:
        # the canvas was not on the page in the last run (another page or image was open): it starts again with
        # the strokes drawn so far, which it would otherwise report as none
        w["initial"] = list(w["objects"])
    with st.container(key="annotate-canvas-box"):
        if st_canvas is not None:
            from PIL import Image

            res = st_canvas(stroke_width=max(1, round(brush * scale)), stroke_color=hex_of(code),
                            background_image=Image.fromarray(bg), width=cw, height=ch, drawing_mode="freedraw",
                            initial_drawing={"objects": w["initial"]}, update_streamlit=True, key=canvas_key)
            if res is not None and res.json_data is not None:
                w["objects"] = list(res.json_data.get("objects", []))
        else:
            st.image(bg, caption="Drawing needs a browser; upload a scribble mask below instead.")
    if b1.button("Undo last stroke", key="annotate-undo", disabled=not w["objects"]):
        w["objects"] = w["objects"][:-1]
        w["initial"] = list(w["objects"])
        w["version"] += 1
        st.rerun()  # the canvas above still shows the stroke
    up = st.file_uploader("…or upload a scribble mask (8-bit PNG of codes, 255 = no stroke)", type=["png"],
                          key="annotate-scribble-upload")
    # a file is applied once, when it is chosen: Clear strokes and the example strokes then replace it
    if up is None:
        w["upload_id"] = None
    elif up.file_id != w.get("upload_id"):
        m = state.read_upload(up, kind="mask", shape=(H, W))
        if m is not None:  # a bad file keeps its message for as long as it is chosen
            w["upload_id"] = up.file_id
            w["upload"], w["from_saved"] = m, False
            st.rerun()  # the canvas above is drawn with the uploaded strokes

    if w.get("from_saved") and w["upload"] is not None:
        st.info("Starting from this image's saved annotation: new strokes correct it. **Clear strokes** starts "
                "afresh.")
    from core.annotation import strokes_to_mask

    scribbles = strokes_to_mask((H, W), canvas_strokes(w["objects"], scale), base=w["upload"])
    n_scribbled = int((scribbles != IGNORE).sum())
    if n_scribbled == 0:
        st.info("Draw a stroke on a mineral to start.")
        return
    try:
        run_propagation(w, image, scribbles, method, prior)
    except (ValueError, MemoryError) as e:
        st.error(f"Propagation failed: {e}")
        return
    mask = w["result"]
    state.bucket("annotations")[name] = mask
    with st.container(key="annotate-result"):
        st.image(small_overlay(small_img, mask, 0.55),
                 caption=f"Propagated mask ({n_scribbled} px scribbled, {n_scribbled / mask.size * 100:.2f}%)")
    codes, counts = np.unique(mask, return_counts=True)
    changed = float((mask != prior).mean()) if prior is not None else float((mask != IGNORE).mean())
    with st.container(key="annotate-result-stats"):
        st.caption(" · ".join(f"{by_code(int(c)).label} {n / mask.size * 100:.1f}%" for c, n in zip(codes, counts)
                              if c != IGNORE))
        st.caption(f"Strokes changed {changed * 100:.2f}% of the pixels of the "
                   f"{'model prediction' if prior is not None else 'empty mask'}.")
    widgets.legend(codes)
    if gt is not None and gt.shape == mask.shape:
        lab = gt != IGNORE
        st.caption(f"Agreement with the expert mask: pixel accuracy {float((mask[lab] == gt[lab]).mean()):.3f}")

    st.subheader("Save")
    pixel_um = state.pixel_size(name)
    s1, s2, s3 = st.columns(3)
    split = s1.text_input("Dataset split", "train", key="annotate-split")
    rk = w["result_key"]
    s2.download_button("Download image + mask (LumenStone dataset zip)",
                       cached_bytes(w, ("zip", rk, split, pixel_um),
                                    lambda: dataset_zip(name, image, mask, split, pixel_um)),
                       f"{cio.safe_name(name)}_dataset.zip", "application/zip", key="annotate-dl-zip", on_click="ignore")
    s3.download_button("Download mask (PNG of class codes)",
                       cached_bytes(w, ("png", rk, pixel_um), lambda: cio.encode_png(mask, pixel_um=pixel_um)),
                       f"{cio.safe_name(name)}_mask.png", "image/png", key="annotate-dl-mask", on_click="ignore")
    finetune_section(name, image, mask, w)


state.through_app(__file__)
main()
