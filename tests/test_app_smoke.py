"""Every page renders, empty and with the demo sample loaded, without an exception: its own heading, and what
it says when there is no image yet."""
import os
import pathlib

import pytest
from streamlit.testing.v1 import AppTest

APP = pathlib.Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["pages/upload_calibrate.py", "pages/stitch.py", "pages/register_xpl.py", "pages/segment.py",
         "pages/annotate.py", "pages/statistics.py"]
HEADINGS = {"pages/upload_calibrate.py": "Upload & calibrate", "pages/stitch.py": "Stitch",
            "pages/register_xpl.py": "Register XPL", "pages/segment.py": "Segment", "pages/annotate.py": "Annotate",
            "pages/statistics.py": "Statistics"}
# the pages that work on the session's images say so when there is none
NEEDS_IMAGES = {"pages/upload_calibrate.py", "pages/segment.py", "pages/annotate.py", "pages/statistics.py"}
NO_IMAGE = "No image yet"
DEMO = ["demo-05", "demo-a14", "demo-a55"]


def _app(autoload="0"):
    os.environ["ORELENS_AUTOLOAD_DEMO"] = autoload
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _shown(at) -> tuple[list[str], str, list[str]]:
    """The page's headers, its info texts joined, and its errors."""
    return [h.value for h in at.main.header], " ".join(i.value for i in at.main.info), [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_empty(page):
    at = _app()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    headers, info, errs = _shown(at)
    assert headers[:1] == [HEADINGS[page]] and not errs, (headers, errs)
    assert (NO_IMAGE in info) == (page in NEEDS_IMAGES), info
    assert len(at.session_state["images"]) == 0


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_demo_sample(page):
    at = _app()
    at.button(key="load-demo").click().run()
    assert not at.exception
    images = at.session_state["images"]
    assert sorted(images) == DEMO and all(r["gt"] is not None and r["gt"].shape == r["image"].shape[:2]
                                          for r in images.values())
    at.switch_page(page).run()
    assert not at.exception, at.exception
    headers, info, errs = _shown(at)
    assert headers[:1] == [HEADINGS[page]] and not errs, (headers, errs)
    assert NO_IMAGE not in info, info


def test_core_never_imports_streamlit():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "core"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+streamlit", p.read_text(), re.M)]
    assert offenders == []


def test_new_session_starts_on_the_demo_sample():
    try:
        at = _app(autoload="1")
        assert sorted(at.session_state["images"]) == DEMO
        at.switch_page("pages/segment.py").run()
        assert not at.exception
        headers, info, errs = _shown(at)
        assert headers[:1] == ["Segment"] and not errs and NO_IMAGE not in info, (headers, info, errs)
        assert at.main.button[0].label == "Segment this image"
        # the demo is loaded once per session: removing its images does not bring them back on the next run
        at.session_state["images"].clear()
        at.run()
        assert not at.exception and len(at.session_state["images"]) == 0
    finally:
        os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"


def test_sidebar_states_the_models_held_out_scores(tmp_path):
    """The sidebar caption is read from the chosen model's config, and an unreadable config is said so."""
    import json

    from ui.state import model_summary

    at = _app()
    cfg = json.loads((APP.parent / "models/default/config.json").read_text())
    v = cfg["validation_full_resolution"]
    expected = f"held-out mIoU {v['miou']:.3f}, pixel accuracy {v['pixel_accuracy']:.3f}"
    assert any(expected in c.value for c in at.sidebar.caption)
    (tmp_path / "config.json").write_text("{not json")
    assert model_summary(str(tmp_path)) == "config unreadable (JSONDecodeError)"
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "unet", "encoder": "resnet34",
                                                      "classes": [0, 1], "in_channels": 6}))
    assert model_summary(str(tmp_path)) == "unet / resnet34, 2 classes, 6 input channels (needs XPL)"


def test_the_sidebar_says_how_long_saving_takes_when_it_is_long():
    """The saved session is built only when its button is pressed, with nothing on screen meanwhile: from about
    5 s on, the sidebar says how long to expect (0.25 s per megapixel)."""
    import numpy as np

    try:
        at = _app(autoload="1")
        waits = [c.value for c in at.sidebar.caption if c.value.startswith("Saving builds the file first")]
        assert waits == []  # three demo photographs of 1.9 Mpx: about 1.4 s
        for rec in at.session_state["images"].values():
            rec["image"] = np.zeros((3000, 3000, 3), np.uint8)  # 9 Mpx each
        at.run()
        assert not at.exception, at.exception
        waits = [c.value for c in at.sidebar.caption if c.value.startswith("Saving builds the file first")]
        assert waits == ["Saving builds the file first: roughly 7 s for these 3 image(s) before the download starts."]
    finally:
        os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
