"""Stitch page smoke test: demo tiles → panorama, no exception."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_stitch_page_demo_tiles():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/stitch.py")
    at.run()
    assert not at.exception
    next(b for b in at.button if b.key == "stitch-demo").click()
    at.run()
    assert not at.exception
    assert at.text_input(key="stitch-grid").value == "3x3"
    # as if the tiles had recorded their pixel size (uploaded tiles do, through core.io.common_pixel_size)
    at.session_state["stitch"]["pixel_um"] = 0.345
    next(b for b in at.button if b.key == "stitch-run").click()
    at.run()
    assert not at.exception
    assert not at.error
    assert any("0.345 µm per pixel, as the tiles record" in c.value for c in at.caption)
    labels = [m.label for m in at.metric]
    assert "Residual RMSE" in labels
    rmse = float(next(m for m in at.metric if m.label == "Residual RMSE").value.split()[0])
    assert rmse < 0.5
    next(b for b in at.button if b.label == "Send to segmentation").click()
    at.run()
    assert not at.exception
    assert "panorama" in at.session_state["images"]
    assert at.session_state["images"]["panorama"]["origin"] == "stitch"
    assert at.session_state["images"]["panorama"]["pixel_um"] == 0.345
    # the sidebar, drawn before the page, shows the panorama as the current image at once
    assert at.session_state["current"] == "panorama" and at.selectbox(key="sidebar-current").value == "panorama"
    assert [x.value for x in at.success] == ["“panorama” is now the current image."]


def test_stitch_page_bad_grid():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/stitch.py")
    at.run()
    next(b for b in at.button if b.key == "stitch-demo").click()
    at.run()
    at.text_input(key="stitch-grid").set_value("2x2")
    next(b for b in at.button if b.key == "stitch-run").click()
    at.run()
    assert not at.exception
    assert at.error and "grid" in at.error[0].value
