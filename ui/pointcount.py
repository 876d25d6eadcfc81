"""The Segment page's point count: the microscopist calls the mineral at each point of a grid, and the
segmentation is checked against the calls (:mod:`core.stats.pointcount`)."""
from __future__ import annotations

import cv2
import numpy as np
import streamlit as st

from core import io as cio
from core.minerals import by_code
from core.stats.pointcount import (CANNOT_TELL, MAX_POINTS, NOT_CALLED, agreement_sentence, call_name,
                                   calls_as_scribbles, check, check_table, grid_points, next_uncalled, point_view,
                                   points_csv, read_points_csv)
from ui import state

FIELDS = {"small (65 px)": 32, "medium (129 px)": 64, "large (257 px)": 128}  # the field's half side, in pixels
VIEW_PX = 390  # about how wide the enlarged field is shown
KEYS = "1234567890"  # keyboard shortcuts of the first ten minerals' buttons


def _counts() -> dict:
    return state.bucket("pointcounts")


def _call(name: str, code: int) -> None:
    """Record ``code`` at the point shown and move on to the next point not yet called."""
    rec = _counts().get(name)
    if rec is None:
        return
    i = rec["pos"]
    rec["calls"][i] = code
    nxt = next_uncalled(rec["calls"], i)
    rec["pos"] = i if nxt is None else nxt


def _move(name: str, step: int) -> None:
    rec = _counts().get(name)
    if rec is not None:
        rec["pos"] = int((rec["pos"] + step) % len(rec["calls"]))


def _next_uncalled(name: str) -> None:
    rec = _counts().get(name)
    if rec is not None:
        nxt = next_uncalled(rec["calls"], rec["pos"])
        if nxt is not None:
            rec["pos"] = nxt


MARKS = {"not called": (255, 215, 0), "agrees": (40, 200, 70), "differs": (235, 40, 40), "called": (40, 140, 255),
         "cannot tell": (255, 255, 255)}


def _mark(call: int, model: int | None) -> tuple[int, int, int]:
    if call == NOT_CALLED:
        return MARKS["not called"]
    if call == CANNOT_TELL:
        return MARKS["cannot tell"]
    if model is None:
        return MARKS["called"]
    return MARKS["agrees"] if call == model else MARKS["differs"]


def _overview(rec: dict, image: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """A small copy of the photograph with every point of the count ``rec`` coloured by :data:`MARKS`, the current
    one ringed. The small copy is kept with the count while the image is the same array (a panorama takes a
    moment to reduce, and every call redraws this)."""
    points, calls, pos = rec["points"], rec["calls"], rec["pos"]
    if rec.get("_small_of") != (id(image), image.shape):
        rec["_small"], rec["_small_of"] = cio.display_copy(image, 420), (id(image), image.shape)
    small = rec["_small"]
    f = small.shape[1] / image.shape[1]
    out = np.ascontiguousarray(small.copy())
    for (r, c), k in zip(points.tolist(), calls.tolist()):
        cv2.circle(out, (int(c * f), int(r * f)), 3, (0, 0, 0), -1)
        cv2.circle(out, (int(c * f), int(r * f)), 2, _mark(k, None if labels is None else int(labels[r, c])), -1)
    r, c = points[pos]
    cv2.circle(out, (int(c * f), int(r * f)), 7, (0, 255, 255), 2)
    return out


def _start(name: str, shape: tuple[int, int], n: int, random_start: bool) -> None:
    seed = int(np.random.default_rng().integers(0, 2 ** 31)) if random_start else None
    points = grid_points(shape, n, seed=seed)
    _counts()[name] = {"points": points, "calls": np.full(len(points), NOT_CALLED, np.int16), "pos": 0}


def _labels(name: str, image: np.ndarray) -> np.ndarray | None:
    """The image's segmentation, when it has one of its size."""
    pred = state.bucket("predictions").get(name)
    return pred["labels"] if pred is not None and pred["labels"].shape == image.shape[:2] else None


def section(name: str, image: np.ndarray, classes: list[int]) -> None:
    """The whole point-count section of the Segment page for the image ``name`` (checked against its
    segmentation once it has one); ``classes``: the minerals to call."""
    st.subheader("Point counting" if _labels(name, image) is None else "Check by point counting")
    st.caption("The microscopist's own modal analysis, and a check of the model on your own photograph. At each "
               "point of a regular grid, say which mineral lies under the cross-hair; the model's call is not shown "
               "until you have made yours, so that it cannot sway you. The count gives each mineral's area % with "
               "a 95 % interval and, once the image is segmented, how often the segmentation agrees with you. The "
               "interval assumes the points lie further apart than the grains are large.")
    rec = _counts().get(name)
    if rec is not None and ((rec["points"][:, 0] >= image.shape[0]).any() or (rec["points"][:, 1] >= image.shape[1]).any()):
        _counts().pop(name)  # made for another image of this name
        rec = None
    # open at first once there is a segmentation to check; before it, the Segment button comes first
    with st.expander("Start a new count" if rec is not None else "Start a count",
                     expanded=rec is None and _labels(name, image) is not None):
        c1, c2 = st.columns(2)
        n = c1.number_input("Points (about)", 10, MAX_POINTS, 300, 50, key="pc-n",
                            help="300–500 points give a modal analysis to about ±2–5 area % for the main minerals.")
        random_start = c2.checkbox("Random start of the grid", value=True, key="pc-random",
                                   help="The grid starts at a random place within its first cell, so that every "
                                        "pixel has the same chance of being counted.")
        called = 0 if rec is None else int((rec["calls"] != NOT_CALLED).sum())
        sure = True
        if called:
            sure = st.checkbox(f"Replace the current count ({called} points called)", key="pc-replace")
        if st.button("Lay the grid and start", key="pc-start", disabled=not sure):
            try:
                _start(name, image.shape[:2], int(n), random_start)
            except ValueError as e:
                st.error(str(e))
            else:
                st.rerun()
        f = st.file_uploader("Or continue a count from its CSV (the download below)", type=["csv"], key="pc-file")
        opened = None
        if f is not None:  # read at once, so that a wrong file is named before anything is replaced
            try:
                opened = read_points_csv(f.getvalue(), image.shape[:2])
            except ValueError as e:
                st.error(f"{state.plain(f.name)}: {e}")
            else:
                st.caption(f"{len(opened[0])} points, {int((opened[1] != NOT_CALLED).sum())} of them called.")
        if opened is not None and st.button("Open this count", key="pc-open", disabled=not sure):
            points, calls = opened
            nxt = next_uncalled(calls, len(calls) - 1)
            _counts()[name] = {"points": points, "calls": calls, "pos": 0 if nxt is None else nxt}
            st.rerun()
    if rec is None:
        return
    counter(name, classes)


@st.fragment
def counter(name: str, classes: list[int]) -> None:
    """The point shown, the buttons to call it, and the figures so far (a fragment: a call reruns only this)."""
    rec = _counts().get(name)
    if rec is None or name not in state.bucket("images"):
        return
    image = state.pixels(name)
    labels = _labels(name, image)
    points, calls, i = rec["points"], rec["calls"], rec["pos"]
    done = int((calls != NOT_CALLED).sum())
    left, right = st.columns([3, 2])
    with right:
        field = st.radio("Field around the point", list(FIELDS), index=1, horizontal=True, key="pc-field")
        half = FIELDS[field]
        st.image(_overview(rec, image, labels),
                 caption="Where the point lies (ringed). Points: yellow not called; "
                         + ("green where the segmentation agrees with your call, red where it differs"
                            if labels is not None else "blue called") + "; white cannot tell")
    with left:
        zoom = max(1, VIEW_PX // (2 * half + 1))
        r, c = points[i]
        st.image(point_view(image, points[i], half=half, zoom=zoom),
                 caption=f"Point {i + 1} of {len(points)} at x {c}, y {r} ({zoom}× enlarged)")
    st.progress(done / len(points), text=f"{done} of {len(points)} points called")
    gt = state.ground_truth(name)
    gt = gt if gt is not None and gt.shape == image.shape[:2] else None
    if calls[i] != NOT_CALLED:
        said = [f"Point {i + 1}: you called **{call_name(calls[i])}**"]
        for what, mask in (("the segmentation", labels), ("the expert mask", gt)):
            if mask is not None:
                k = int(mask[r, c])
                said.append(f"{what} says **{by_code(k).name if k != 255 else 'unlabelled'}**"
                            + ("" if calls[i] == CANNOT_TELL or k == 255 else
                               (" (agrees)" if k == calls[i] else " (differs)")))
        st.caption("; ".join(said) + ". Press another mineral to change the call.")
    codes = [int(k) for k in classes]
    cols = st.columns(5)
    for j, code in enumerate(codes):
        m = by_code(code)
        cols[j % 5].button(f"{m.name.split(' /')[0].capitalize()} ({m.label})", key=f"pc-call-{code}",
                           on_click=_call, args=(name, code), width="stretch",
                           shortcut=KEYS[j] if j < len(KEYS) else None,
                           type="primary" if calls[i] == code else "secondary")
    b1, b2, b3 = st.columns(3)
    b1.button("Cannot tell (a pit, a crack, a boundary)", key="pc-cannot", on_click=_call, args=(name, CANNOT_TELL),
              shortcut="X", width="stretch", type="primary" if calls[i] == CANNOT_TELL else "secondary")
    b2.button("◀ Previous point", key="pc-back", on_click=_move, args=(name, -1), shortcut="B", width="stretch")
    b3.button("Next point not called ▶", key="pc-next", on_click=_next_uncalled, args=(name,), shortcut="N",
              width="stretch", disabled=done == len(points))
    st.caption("Keys: 1–0 the minerals in the order shown, X cannot tell, B previous, N next not called.")
    res = check(points, calls, labels)
    if labels is not None:
        st.markdown(agreement_sentence(res, bold="**"))
    else:
        st.caption(f"{res['called']} points counted, {res['cannot_tell']} cannot tell. Segment the image to see "
                   "how the model agrees with your calls.")
    if gt is not None and res["called"]:
        # an image with an expert mask (the demo, a practical's photographs): how the count itself compares
        st.markdown(agreement_sentence(check(points, calls, gt), what="the expert mask", bold="**"))
    if res["minerals"]:
        st.dataframe(check_table(res), hide_index=True, width="stretch",
                     column_config={"area % (count)": st.column_config.NumberColumn(format="%.2f"),
                                    "area % (segmentation)": st.column_config.NumberColumn(format="%.2f"),
                                    "found (recall)": st.column_config.NumberColumn(format="%.3f"),
                                    "right (precision)": st.column_config.NumberColumn(format="%.3f")})
        st.caption("Area % (count): the share of the counted points (cannot-tell points left out). Area % "
                   "(segmentation): over every pixel of the photograph. Found: of your points of a mineral, the "
                   "share the model also calls it (recall); right: of the counted points the model calls it, the "
                   "share where you agree (precision).")
    d1, d2, d3 = st.columns(3)
    minerals_called = int(((calls != NOT_CALLED) & (calls != CANNOT_TELL)).sum())
    if d3.button("Use the calls as strokes on Annotate", key="pc-to-annotate", disabled=not minerals_called,
                 help="Each called point becomes a small stroke of its mineral on the Annotate page, where the "
                      "superpixels spread it over its grain: the points where the model was wrong correct its "
                      "prediction, and the corrected mask can fine-tune the model."):
        w = state.annotate_work(name, image)
        w["upload"] = calls_as_scribbles(image.shape[:2], points, calls, base=w["upload"])
        st.success(f"{minerals_called} calls are strokes on the Annotate page now (with any strokes uploaded "
                   "there before); open it to see them spread over their grains.")
    d1.download_button("Download the count (CSV of points and calls)", points_csv(points, calls, labels).encode(),
                       f"{name}_pointcount.csv", "text/csv", key="pc-dl-points",
                       help="x, y, your call and the segmentation's at every point; open it again above to go on "
                            "counting, or check another mask against it with `python -m core pointcount check`", on_click="ignore")
    if res["minerals"]:
        d2.download_button("Download the figures (CSV)", check_table(res).to_csv(index=False).encode(),
                           f"{name}_pointcount_figures.csv", "text/csv", key="pc-dl-figures", on_click="ignore")
