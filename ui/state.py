"""Per-session work and per-server resources.

Session state holds only the current user's work; the model is cached once
per server. Pages exchange work only through the functions here:

- ``images``: name -> ``{"image": uint8 RGB, "gt": mask or None, "origin": str, "pixel_um": µm per pixel or None}``
  and ``"sample"``, the sample the Statistics page puts it in, once one is set
- ``calibrated``: name -> colour-corrected uint8 RGB
- ``predictions``: name -> ``{"labels", "probs", "classes", "scale", "model", "options"}``; ``options`` are the
  Segment page's settings for the image (``{"balance", "minerals", "assemblage", "refine"}``, see :func:`predict_options`)
- ``annotations``: name -> mask of codes (255 = unlabelled)
- ``xpl``: name -> ``{"aligned": list of uint8 RGB, "names": [...]}``
- ``annotate_work``: name -> the Annotate page's strokes and intermediate results
- ``pointcounts``: name -> the Segment page's point count, ``{"points": (k, 2) int32 rows and columns, "calls":
  (k,) int16 class codes (255 cannot tell, -1 not called), "pos": the point shown}``
- ``stitch``: the Stitch page's last result (panorama, transforms, downloads)
- ``statistics``: the Statistics page's last result (``"result"``: summary, tables, downloads)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from core import io as cio
from core.minerals import IGNORE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "samples"
MODELS_DIR = ROOT / "models"
MAX_IMAGES_PER_SESSION = 24

_APP_RAN = False  # app.py has declared its pages in this server process


def app_started() -> None:
    """Called by app.py each run, before it declares its pages."""
    global _APP_RAN
    _APP_RAN = True


def through_app(page_file: str) -> None:
    """Open a page through app.py when Streamlit ran it on its own.

    Until app.py has declared its pages in a freshly started server, Streamlit answers a page's own address
    (``/segment``: a bookmark, or a tab the browser restores after the server restarted) by running that page
    script alone, the old way of a ``pages/`` folder: no sidebar, no demo, no model. Such a page hands over to
    app.py, which opens it.
    """
    if _APP_RAN:
        return
    st.session_state["_open_page"] = Path(page_file).resolve().relative_to(ROOT).as_posix()
    st.switch_page("app.py")


def open_requested_page() -> None:
    """In app.py after its pages are declared: open the page that :func:`through_app` handed over, if any."""
    page = st.session_state.pop("_open_page", None)
    if page:
        st.switch_page(page)


_KEYS = ("images", "calibrated", "predictions", "annotations", "xpl", "annotate_work", "pointcounts", "stitch",
         "statistics")


def _init() -> None:
    for k in _KEYS:
        if k not in st.session_state:
            st.session_state[k] = {}
    st.session_state.setdefault("current", None)
    st.session_state.setdefault("model_dir", str(MODELS_DIR / "default"))
    st.session_state.setdefault("device", "auto")


def bucket(key: str) -> dict:
    _init()
    return st.session_state[key]


def predict_options(options: dict | None, marked: np.ndarray | None = None) -> dict:
    """``core.segmentation.predict`` keywords from a prediction's ``options`` (None: the model config's defaults).

    ``options["balance"]`` / ``["assemblage"]`` switch the automatic colour correction / the assemblage step off
    when False; ``["refine"]`` names the edge refinement (None: the model's); ``["minerals"]`` is the sample's
    list of class codes (None: the model decides). With ``marked`` (a mask of codes the user has just annotated),
    that list is widened by every mineral the mask shows.
    """
    opts = options or {}
    minerals = opts.get("minerals")
    if minerals and marked is not None:
        minerals = sorted(set(int(c) for c in minerals) | {int(c) for c in np.unique(marked) if c != IGNORE})
    return {"balance": None if opts.get("balance", True) else False, "minerals": minerals or None,
            "assemblage": None if opts.get("assemblage", True) else False, "refine": opts.get("refine")}


def prediction_record(model, pred, image: np.ndarray, options: dict | None) -> dict:
    """What the session keeps of ``core.segmentation.predict``'s result for ``image`` (the ``predictions``
    bucket): labels, probabilities, the model's name, the colour check (measured now when the prediction ran
    without one), the minerals chosen, the page's settings and a fingerprint of the pixels it was made from."""
    colour = pred.colour.as_dict() if pred.colour is not None else None
    if colour is None:
        from core.calibration import colour_drift

        drift, _ = colour_drift(image, pred.labels, model.reference_colors())
        colour = {"drift": drift, "applied": False}
    return {"labels": pred.labels, "probs": pred.probs, "classes": pred.classes, "scale": pred.scale,
            "model": model.name, "drift": colour["drift"], "colour": colour,
            "minerals": pred.assemblage.describe() if pred.assemblage is not None else "",
            "minerals_close": bool(pred.assemblage is not None and pred.assemblage.close), "options": options,
            "input": digest(image)}


def digest(image: np.ndarray) -> str:
    """A short fingerprint of an image's pixels (every 8th row and column; a few milliseconds), to tell whether a
    result was made from the image as it is now."""
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(image[::8, ::8]).tobytes() + str(image.shape).encode(),
                           digest_size=8).hexdigest()


def made_from_other_pixels(pred: dict, image: np.ndarray) -> bool:
    """Whether a segmentation was made from pixels other than ``image`` (e.g. before a colour correction)."""
    return pred.get("input") is not None and pred["input"] != digest(image)


def already_holds(name: str, image: np.ndarray, origin: str) -> bool:
    """Whether the session holds ``image`` under ``name`` already, pixel for pixel, from the same source."""
    _init()
    have = st.session_state["images"].get(name)
    return have is not None and have.get("origin") == origin and np.array_equal(have["image"], image)


def _file_tag(source: bytes | None) -> str | None:
    """The short fingerprint of a file's bytes that an image record keeps as ``"source"``."""
    import hashlib

    return None if source is None else hashlib.blake2b(source, digest_size=8).hexdigest()


RESERVED_NAMES = frozenset({"total"})  # the statistics' pooled rows go by this name in every table and download


def placement(name: str, image: np.ndarray, origin: str = "upload", source: bytes | None = None) -> tuple[str, str]:
    """Where :func:`add_image` puts ``image`` offered under ``name``: ``(the name it gets, how)``.

    ``how`` is ``"kept"`` when the session holds this very image (pixel for pixel, from the same source) under
    ``name`` or a name made from it (``name-2``, ...): it keeps its work; ``"replaced"`` when that name holds an
    earlier reading of the same file (``source``: the file's bytes), read again with other settings such as the
    bit depth; ``"new"`` when ``name`` is free; ``"renamed"`` when ``name`` holds a different photograph (or one
    from elsewhere), which stays with its work while this one gets the first free name ``name-2``, ``name-3``, ...;
    ``"reserved"`` when ``name`` is one the statistics give their pooled rows (:data:`RESERVED_NAMES`), so the
    image gets ``name-2``.
    """
    _init()
    imgs = st.session_state["images"]
    tag = _file_tag(source)
    place, k = name, 2
    if name in RESERVED_NAMES:
        place = f"{name}-{k}"
        k += 1
    while place in imgs:
        if already_holds(place, image, origin):
            return place, "kept"
        have = imgs[place]
        if tag is not None and have.get("origin") == origin and have.get("source") == tag:
            return place, "replaced"
        place = f"{name}-{k}"
        k += 1
    return place, "new" if place == name else "reserved" if name in RESERVED_NAMES else "renamed"


def add_image(name: str, image: np.ndarray, gt: np.ndarray | None = None, *, origin: str = "upload",
              make_current: bool = True, pixel_um: float | None = None, source: bytes | None = None) -> str:
    """Store an image for this session; returns the (unique) name used (see :func:`placement`).

    An image the session already holds unchanged (the demo loaded again, a file added twice) is kept as it is,
    with everything done to it (colour correction, segmentation, annotation). A different photograph offered
    under a name the session uses already is added under a new name (``name-2``, ...): nothing done to the
    other is lost. ``source``: the bytes of the file the image was read from; the same file read again (with
    another bit depth) replaces its earlier reading. ``pixel_um``: its pixel size in µm, when known (from the
    file, or given by the user).
    """
    _init()
    imgs = st.session_state["images"]
    name, how = placement(name, image, origin, source)
    if how == "kept":
        if gt is not None:
            imgs[name]["gt"] = gt
        if pixel_um is not None:
            set_pixel_size(name, pixel_um)
        if make_current:
            st.session_state["current"] = name
        return name
    if how != "replaced" and len(imgs) >= MAX_IMAGES_PER_SESSION:
        raise ValueError(f"this session already holds {MAX_IMAGES_PER_SESSION} images; remove some first (Upload & calibrate: Images in this session)")
    imgs[name] = {"image": image, "gt": gt, "origin": origin,
                  "pixel_um": None if pixel_um is None else cio.check_pixel_size(pixel_um)}
    if source is not None:
        imgs[name]["source"] = _file_tag(source)
    for key in ("calibrated", "predictions", "annotations", "xpl", "pointcounts", "annotate_work"):
        st.session_state[key].pop(name, None)
    if make_current:
        st.session_state["current"] = name
    return name


def annotate_work(name: str, image: np.ndarray) -> dict:
    """The Annotate page's state for the image ``name`` (strokes, an uploaded scribble mask, superpixels, the last
    propagation), made afresh when the image is not the one it was made for. When the image has other pixels of
    the same size (colour-corrected since), the strokes stay and what was computed from the old pixels (the
    picture drawn on, superpixels, propagation, uncertain regions, downloads) is computed again."""
    _init()
    work = st.session_state["annotate_work"]
    w = work.get(name)
    pixels_now = digest(image)
    if w is None or w.get("shape") != image.shape:
        w = {"shape": image.shape, "objects": [], "version": 0, "upload": None, "result": None,
             "result_key": None, "superpixels": None, "finetune": None, "initial": [], "pixels": pixels_now}
        work[name] = w
    elif w.get("pixels") != pixels_now:
        for k in ("small", "small_key", "regions", "regions_key", "bytes"):
            w.pop(k, None)
        w.update(superpixels=None, result=None, result_key=None, pixels=pixels_now)
    return w


def snapshot() -> dict:
    """What a saved session holds (:func:`ui.archive.pack`): the images and the work done on them."""
    _init()
    return {**{k: st.session_state[k] for k in ("images", "calibrated", "predictions", "annotations", "xpl",
                                               "pointcounts", "current", "model_dir")},
            "session_models": session_models()}


def restore(saved: dict) -> list[str]:
    """Put a saved session (:func:`ui.archive.unpack`) into this one; returns the names restored.

    Images of the same name are replaced, with their work, by the saved ones; the others stay. Nothing changes
    when the saved images would not fit into the session (``ValueError``).
    """
    _init()
    imgs = st.session_state["images"]
    new = [n for n in saved["images"] if n not in imgs]
    if len(imgs) + len(new) > MAX_IMAGES_PER_SESSION:
        raise ValueError(f"the saved session's {len(new)} new image(s) would take this session past "
                         f"{MAX_IMAGES_PER_SESSION} images; remove some first (Images in this session)")
    for name, rec in saved["images"].items():
        imgs[name] = rec
        for key in ("calibrated", "predictions", "annotations", "xpl", "pointcounts", "annotate_work"):
            st.session_state[key].pop(name, None)
            if key in saved and name in saved[key]:
                st.session_state[key][name] = saved[key][name]
    if saved.get("current") in imgs:
        st.session_state["current"] = saved["current"]
    for key, rec in (saved.get("session_models") or {}).items():
        session_models().pop(key, None)  # the saved one replaces one of the same name, as images do
        _keep_session_model(key, rec)
    if saved.get("model_in_use") in session_models():
        st.session_state["model_dir"] = saved["model_in_use"]
    return list(saved["images"])


def remove_image(name: str) -> None:
    _init()
    for key in _KEYS:
        st.session_state[key].pop(name, None)
    if st.session_state["current"] == name:
        st.session_state["current"] = next(iter(st.session_state["images"]), None)


def pixel_size(name: str | None) -> float | None:
    """The pixel size (µm per pixel) of the session's image ``name``, None when it is not known."""
    rec = bucket("images").get(name) if name is not None else None
    return rec.get("pixel_um") if rec else None


def set_sample(name: str, value: str | None) -> None:
    """Put the session's image ``name`` into the sample ``value`` (None or blank: none); ``ValueError`` for a name
    too long (:func:`core.stats.summary.check_sample_name`)."""
    from core.stats.summary import check_sample_name

    rec = bucket("images")[name]
    if value and value.strip():
        rec["sample"] = check_sample_name(value)
    else:
        rec.pop("sample", None)


def set_pixel_size(name: str, value: float | None) -> None:
    """Record the pixel size of the session's image ``name`` (None: not known); ``ValueError`` for a bad value."""
    bucket("images")[name]["pixel_um"] = None if value is None else cio.check_pixel_size(value)


def current_name() -> str | None:
    _init()
    cur = st.session_state["current"]
    return cur if cur in st.session_state["images"] else None


def pixels(name: str, *, calibrated: bool = True) -> np.ndarray:
    """The pixels the pages work from for image ``name``: its colour-corrected version when there is one."""
    _init()
    if calibrated and name in st.session_state["calibrated"]:
        return st.session_state["calibrated"][name]
    return st.session_state["images"][name]["image"]


def current_image(*, calibrated: bool = True) -> tuple[str | None, np.ndarray | None]:
    """Name and pixels of the current image (the calibrated version when there is one)."""
    name = current_name()
    if name is None:
        return None, None
    return name, pixels(name, calibrated=calibrated)


def ground_truth(name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    return bucket("images").get(name, {}).get("gt")


def result_overview(pred: dict) -> dict:
    """How sure the model was of a result and what it found (``unsure``: share of the image where its two likeliest
    minerals are less than 0.5 apart; ``minerals``: [(code, area %)] of the ore minerals, largest first), computed
    once and kept with the result."""
    got = pred.get("overview")
    if got is None:
        from core.annotation.uncertainty import unsure_share

        from core.stats.pointcount import class_area

        counts = class_area(pred["labels"])
        total = max(1, int(counts.sum() - counts[IGNORE]))
        minerals = sorted(((int(c), 100.0 * counts[c] / total) for c in np.flatnonzero(counts) if c not in (0, IGNORE)),
                          key=lambda x: -x[1])
        got = pred["overview"] = {"unsure": unsure_share(pred["probs"]) if pred.get("probs") is not None else None,
                                  "minerals": minerals}
    return got


def count_check(name: str, mask: np.ndarray) -> dict | None:
    """The image ``name``'s point count (Segment page) checked against ``mask``
    (:func:`core.stats.pointcount.check`); None when it has no call yet, or was laid on another image of this name."""
    count = bucket("pointcounts").get(name)
    if count is None or not (count["calls"] >= 0).any():
        return None
    from core.stats.pointcount import check

    try:
        return check(count["points"], count["calls"], mask)
    except ValueError:  # points outside the mask
        return None


def result_notes(name: str, pred: dict) -> list[str]:
    """What to look at in the segmentation ``pred`` of the image ``name``: colours corrected automatically or unlike
    the training images, a close call between the ores, a result made before the last colour correction."""
    from core.calibration import DRIFT_WARNING

    colour = pred.get("colour") or {}
    notes = []
    if colour.get("applied") or colour.get("cast"):
        notes.append("colours corrected automatically")
    elif pred.get("drift") is not None and np.isfinite(pred["drift"]) and pred["drift"] > DRIFT_WARNING:
        notes.append("colours unlike the training images")
    if pred.get("minerals_close"):
        notes.append("close call between the ores")
    chosen = [int(c) for c in ((pred.get("options") or {}).get("minerals") or []) if int(c) != 0]
    if chosen:  # nothing else could be found: worth a look when the list was meant for another image
        from core.minerals import by_code

        notes.append("minerals restricted by hand to " + ", ".join(by_code(c).label for c in chosen))
    if name in bucket("images") and made_from_other_pixels(pred, pixels(name)):
        notes.append("made before the last colour correction")
    return notes


def best_mask(name: str) -> tuple[np.ndarray | None, str]:
    """The mask to analyse: the user's annotation, else the model's prediction."""
    if name in bucket("annotations"):
        m = bucket("annotations")[name]
        if (m != 255).any():
            return m, "annotation"
    if name in bucket("predictions"):
        pred = bucket("predictions")[name]
        stale = made_from_other_pixels(pred, pixels(name))
        return pred["labels"], "segmentation (made before the last colour correction)" if stale else "segmentation"
    return None, ""


def load_demo() -> list[str]:
    """Put the bundled demo sample into this session, each image in the sample of its ore
    (``samples/demo_samples.csv``) unless the user has named another."""
    names = []
    ores = _demo_samples()
    for item in cio.list_dataset(SAMPLE_DIR, "demo"):
        img = _demo_image(str(item.image))
        gt = _demo_mask(str(item.mask))
        name = add_image(f"demo-{item.stem}", img, gt, origin="demo", make_current=not names)
        if item.stem in ores:
            bucket("images")[name].setdefault("sample", ores[item.stem])
        names.append(name)
    return names


@st.cache_data(show_spinner=False)
def _demo_samples() -> dict[str, str]:
    import csv

    path = SAMPLE_DIR / "demo_samples.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["mask"]: r["sample"] for r in csv.DictReader(f)}


@st.cache_data(show_spinner=False)
def _demo_image(path: str) -> np.ndarray:
    return cio.read_image(path)


@st.cache_data(show_spinner=False)
def _demo_mask(path: str) -> np.ndarray:
    return cio.read_mask(path)


def plain(name: str) -> str:
    """A file name safe to show inside Markdown (no links, no formatting)."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>~$" else c for c in str(name))


def read_upload(file, *, kind: str = "image", shape=None, say=None, max_value: int | None = None):
    """Decode an uploaded file; tells why (``say``, default ``st.error``) and returns None when it is unusable.

    ``max_value``: the white level of 16-bit photographs (:func:`core.io.read_image`)."""
    say = say or st.error
    try:
        if kind == "mask":
            return cio.read_mask(file.getvalue(), shape=shape)
        return cio.read_image(file.getvalue(), max_value=max_value)
    except ValueError as e:
        say(f"{plain(file.name)}: {plain(str(e).replace('uploaded file: ', ''))}")
        return None
    except MemoryError:
        say(f"{plain(file.name)}: not enough memory to open this image")
        return None


def rerun_then_show(where: str, messages: list[tuple[str, str]]) -> None:
    """Run the app again at once, so that every part of it drawn before the change (the sidebar's image list and
    current image) shows it, and show ``messages`` (``(kind, text)``, kind ``"success"``, ``"error"``, ...) where
    :func:`show_carried` is called with the same ``where``.

    The messages stay while the user stays on the page, until the next action that carries messages replaces
    them: a page may run again by itself right after (a drawing canvas reports its size when it first appears),
    and a message shown for one run only would vanish before it is read.
    """
    carry(where, messages)
    st.rerun()


def carry(where: str, messages: list[tuple[str, str]]) -> None:
    """Leave ``messages`` for :func:`show_carried` (``where``) without a rerun, replacing any carried before."""
    st.session_state["_carried"] = {"where": where, "messages": list(messages), "page": st.session_state.get("_page")}


def show_carried(where: str) -> bool:
    """Show the messages :func:`rerun_then_show` left for ``where``; whether there were any."""
    carried = st.session_state.get("_carried")
    if not carried or carried["where"] != where:
        return False
    for kind, text in carried["messages"]:
        getattr(st, kind)(text)
    return True


def on_page(page: str) -> None:
    """Called by app.py each run with the page about to run: carried messages of another page are dropped."""
    carried = st.session_state.get("_carried")
    if carried and carried["page"] != page:
        del st.session_state["_carried"]
    st.session_state["_page"] = page


@st.cache_resource(show_spinner="Loading the segmentation model…")
def get_model(model_dir: str, device: str = "auto"):
    from core.segmentation import load_model

    return load_model(model_dir, device=device)


SESSION_MODEL = "session:"  # prefix of the sidebar's choices that are models of this session, not folders
MAX_SESSION_MODELS = 3


def session_models() -> dict:
    """This session's own models (fine-tuned on Annotate, or uploaded on Segment): key -> ``{"model", "note"}``.
    Other sessions never see them; they go with the session."""
    return st.session_state.setdefault("session_models", {})


def unique_model_name(name: str) -> str:
    """``name``, or ``name-2``, ``name-3`` … when a model of this session or a result already goes by it (results
    are matched to their model by name, so two models must not share one)."""
    _init()
    taken = {r["model"].name for r in session_models().values()}
    taken |= {p.get("model") for p in bucket("predictions").values()}
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


def add_session_model(model, note: str) -> str:
    """Keep ``model`` for this session and choose it in the sidebar; returns its key. Beyond
    :data:`MAX_SESSION_MODELS` the oldest one goes (each holds some tens of MB of weights)."""
    _init()
    models = session_models()
    base = key = f"{SESSION_MODEL}{model.name}"
    k = 2
    while key in models:
        key = f"{base}-{k}"
        k += 1
    _keep_session_model(key, {"model": model, "note": note})
    st.session_state["model_dir"] = key
    return key


def _keep_session_model(key: str, rec: dict) -> None:
    """Put ``rec`` under ``key`` among the session's models, the oldest going beyond :data:`MAX_SESSION_MODELS`."""
    models = session_models()
    while len(models) >= MAX_SESSION_MODELS:
        models.pop(next(iter(models)))
    models[key] = rec


def model_label(choice: str) -> str:
    """The sidebar's name for a model folder or a session model."""
    if choice.startswith(SESSION_MODEL):
        return f"{choice[len(SESSION_MODEL):]} (this session)"
    return choice.rsplit("/", 1)[-1]


def model_or_error():
    """The session's model, or None after showing why it cannot be loaded."""
    _init()
    choice = st.session_state["model_dir"]
    if choice.startswith(SESSION_MODEL):
        rec = session_models().get(choice)
        if rec is None:
            st.error(f"Model {model_label(choice)} is no longer in this session; choose another in the sidebar.")
            return None
        return rec["model"]
    try:
        return get_model(choice, st.session_state["device"])
    except ValueError as e:
        st.error(f"Model could not be loaded: {e}")
        return None


def xpl_channels_or_error(model, name: str, say=None):
    """The extra input channels a model needs for an image, from the Register XPL page's aligned series.

    Returns ``(True, None)`` for an RGB model, ``(True, extra)`` when the series is there and fits, and
    ``(False, None)`` after telling why it cannot be made (``say``, default ``st.error``).
    """
    if model.in_channels <= 3:
        return True, None
    from core.registration import extra_from_aligned

    say = say or st.error
    xpl = bucket("xpl").get(name)
    if not xpl or not xpl.get("aligned"):
        say(f"Model {model.name} needs aligned XPL images for this image: align them on the "
                 "Register XPL page first, or choose an RGB model in the sidebar.")
        return False, None
    try:
        return True, extra_from_aligned(model.config, xpl["aligned"])
    except ValueError as e:
        say(f"XPL channels do not fit model {model.name}: {e}")
        return False, None


def model_summary(model_dir: str) -> str:
    """One line on a model folder (or a session model) for the sidebar: architecture, classes, held-out scores
    (read from its config)."""
    import json

    from core.segmentation.model import describe_network

    try:
        if model_dir.startswith(SESSION_MODEL):
            rec = session_models().get(model_dir)
            if rec is None:
                return "no longer in this session"
            cfg = rec["model"].config
            return f"{describe_network(cfg)}, {len(cfg['classes'])} classes · {rec['note']}"
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        text = f"{describe_network(cfg)}, {len(cfg['classes'])} classes"
        if cfg.get("in_channels", 3) > 3:
            text += f", {cfg['in_channels']} input channels (needs XPL)"
        v = cfg.get("validation_full_resolution") or cfg.get("validation")
        if v:
            where = "full resolution" if "validation_full_resolution" in cfg else "working scale"
            text += (f" · held-out mIoU {v['miou']:.3f}, pixel accuracy {v['pixel_accuracy']:.3f} "
                     f"({v.get('n_images', '?')} images, {where})")
        return text
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"config unreadable ({type(e).__name__})"


def available_models() -> list[str]:
    return sorted(str(p.parent) for p in MODELS_DIR.glob("*/config.json"))


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return f"CPU ({torch.get_num_threads()} threads)"


def image_picker(label: str = "Image", key: str | None = None) -> str | None:
    """Select box over this session's images that shows and sets the current image.

    Every picker (the sidebar's and a page's) shows the session's current image, also when it was changed by
    something else since the picker was last drawn (an upload, the demo, another picker): the box's own state is
    set from it before the box is drawn, and a choice in the box sets it.
    """
    _init()
    names = list(st.session_state["images"])
    if not names:
        return None
    cur = current_name() or names[0]
    st.session_state["current"] = cur
    key = key or f"image-picker:{label}"
    st.session_state[key] = cur

    def chosen() -> None:
        st.session_state["current"] = st.session_state[key]

    st.selectbox(label, names, key=key, on_change=chosen)
    return st.session_state["current"]


def no_image_hint() -> None:
    st.info("No image yet: use **Load demo sample** in the sidebar, or upload images on the Upload & calibrate page.")
