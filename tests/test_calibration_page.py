"""The Upload & calibrate page: before/after and the CIEDE2000 table render under AppTest."""
import pathlib

from streamlit.testing.v1 import AppTest

APP = pathlib.Path(__file__).resolve().parents[1] / "app.py"


def test_page_calibrates_demo_image_and_series():
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/upload_calibrate.py").run()
    assert not at.exception
    at.radio(key="uc-marksrc").set_value("Part of this image's ground-truth mask").run()
    at.radio(key="uc-refsrc").set_value("session").run()
    at.button(key="uc-run").click().run()
    assert not at.exception, at.exception
    assert not at.error
    name = at.session_state["current"]
    assert name in at.session_state["calibrated"]
    table = at.dataframe[0].value
    assert "CIEDE2000 after" in table.columns and table["mineral"].iloc[-1] == "mean"
    at.button(key="uc-series").click().run()
    assert not at.exception
    assert len(at.session_state["calibrated"]) == 3
