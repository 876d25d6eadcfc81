"""Register XPL page: simulated series and uploaded shots align end to end, bad shots are reported."""
from __future__ import annotations

import pathlib

import numpy as np
from streamlit.testing.v1 import AppTest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _page():
    from core.io import list_dataset, read_image, read_mask

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/register_xpl.py").run()
    assert not at.exception, at.exception
    # the demo sample, as the sidebar's loader stores it (ui.state layout)
    item = list_dataset(ROOT / "samples", "demo")[0]
    img = read_image(item.image)
    at.session_state["images"] = {"demo-05": {"image": img, "gt": read_mask(item.mask, shape=img.shape[:2]),
                                              "origin": "demo"}}
    at.session_state["current"] = "demo-05"
    at.run()
    assert not at.exception, at.exception
    return at


def _png(arr: np.ndarray) -> bytes:
    from core.io import encode_png

    return encode_png(arr)


def test_simulated_series_aligns_and_goes_to_segment_page():
    at = _page()
    at.radio[0].set_value("Simulate a series from the current image (SIMULATED)").run()
    assert any("SIMULATED" in w.value for w in at.warning)
    at.slider[0].set_value(3).run()  # three shots keeps the test short
    [b for b in at.button if b.label == "Simulate and align"][0].click().run()
    assert not at.exception, at.exception
    assert not len(at.error), [e.value for e in at.error]
    name = at.session_state["current"]
    rec = at.session_state["xpl"][name]
    assert len(rec["aligned"]) == 3 and len(rec["names"]) == 3 and rec["simulated"]
    img = at.session_state["images"][name]["image"]
    assert all(a.shape == img.shape and a.dtype == np.uint8 for a in rec["aligned"])
    errs = [r["error vs true transform (px)"] for r in rec["rows"]]
    assert max(errs) < 0.5
    assert set(rec["maps"]) == {"range", "std", "angle of maximum brightness"}
    assert len(at.dataframe) == 1
    labels = [d.label for d in at.get("download_button")]
    assert any("JSON" in lab for lab in labels) and any("stack" in lab for lab in labels)
    # the overlay views work
    at.radio[1].set_value("Blink").run()
    assert not at.exception
    at.radio[1].set_value("Checkerboard").run()
    assert not at.exception
    # a saved session brings the aligned series back, and the page shows it as before
    from ui.archive import pack, unpack

    saved = unpack(pack({k: at.session_state[k] for k in ("images", "calibrated", "predictions", "annotations",
                                                          "xpl", "current")}))
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    fresh.run()
    fresh.switch_page("pages/register_xpl.py").run()
    for key in ("images", "xpl"):  # what ui.state.restore puts into an empty session
        fresh.session_state[key] = saved[key]
    fresh.session_state["current"] = saved["current"]
    fresh.run()
    assert not fresh.exception, fresh.exception
    back = fresh.session_state["xpl"][name]
    assert all(np.array_equal(u, v) for u, v in zip(back["aligned"], rec["aligned"])) and back["rows"] == rec["rows"]
    assert len(fresh.dataframe) == 1 and any("stack" in d.label for d in fresh.get("download_button"))


def test_uploaded_unrelated_shot_is_reported():
    from core.io import list_dataset, read_image

    items = list_dataset(ROOT / "samples", "demo")
    other = read_image(items[1].image)
    at = _page()
    up = at.file_uploader[0]
    up.set_value([("unrelated.png", _png(other[::2, ::2]), "image/png")]).run()
    [b for b in at.button if b.label == "Align XPL shots"][0].click().run()
    assert not at.exception, at.exception
    assert any("could not be aligned" in e.value for e in at.error)
    name = at.session_state["current"]
    assert at.session_state["xpl"][name]["aligned"] == []


def test_uploaded_ppl_becomes_current_in_the_sidebar_and_failures_stay_shown():
    from core.io import list_dataset, read_image

    items = list_dataset(ROOT / "samples", "demo")
    ppl, other = read_image(items[0].image)[::2, ::2], read_image(items[1].image)[::2, ::2]
    at = _page()
    next(c for c in at.checkbox if c.label.startswith("Use the current image")).uncheck().run()  # a PPL of its own
    at.file_uploader(key="xpl-ppl").set_value(("plane.png", _png(ppl), "image/png")).run()
    at.file_uploader(key="xpl-shots").set_value([("unrelated.png", _png(other), "image/png")]).run()
    [b for b in at.button if b.label == "Align XPL shots"][0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["current"] == "plane" and at.selectbox(key="sidebar-current").value == "plane"
    assert "plane" in at.session_state["xpl"]
    assert [e.value for e in at.error if "could not be aligned" in e.value] == [
        "unrelated\\.png could not be aligned: " + at.session_state["xpl"]["plane"]["rows"][0]["problem"]
        + ". It is left out of the aligned stack."]


def test_every_download_of_a_simulated_series_is_named_simulated(served_download):
    at = _page()
    at.radio[0].set_value("Simulate a series from the current image (SIMULATED)").run()
    at.slider[0].set_value(3).run()
    [b for b in at.button if b.label == "Simulate and align"][0].click().run()
    assert not at.exception and not at.error
    assert served_download(at, "Transforms", starts=True)[1] == "demo-05-xpl-transforms-SIMULATED.json"
    assert served_download(at, "Aligned XPL stack", starts=True)[1] == "demo-05-xpl-aligned-SIMULATED.zip"
    assert served_download(at, "Anisotropy maps", starts=True)[1] == "demo-05-anisotropy-SIMULATED.zip"


def test_a_file_name_is_shown_as_written_not_as_markdown():
    from ui.state import plain

    at = _page()
    name = "[shot](http://x)_**1**.png"
    at.file_uploader(key="xpl-shots").set_value([(name, b"not an image", "image/png")]).run()
    buttons = [b for b in at.button if b.label == "Align XPL shots"]
    if buttons:
        buttons[0].click().run()
    assert not at.exception, at.exception
    shown = [e.value for e in at.error]
    assert any(v.startswith(plain(name) + ": ") for v in shown), shown
