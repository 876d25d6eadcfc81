"""Every page renders, empty and with the demo sample loaded, without an exception."""
import os
import pathlib

import pytest
from streamlit.testing.v1 import AppTest

APP = pathlib.Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["pages/upload_calibrate.py", "pages/stitch.py", "pages/register_xpl.py", "pages/segment.py",
         "pages/annotate.py", "pages/statistics.py"]


def _app(autoload="0"):
    os.environ["ORELENS_AUTOLOAD_DEMO"] = autoload
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception
    return at


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_empty(page):
    at = _app()
    at.switch_page(page).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_demo_sample(page):
    at = _app()
    at.button(key="load-demo").click().run()
    assert not at.exception
    assert len(at.session_state["images"]) == 3
    at.switch_page(page).run()
    assert not at.exception, at.exception


def test_core_never_imports_streamlit():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "core"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+streamlit", p.read_text(), re.M)]
    assert offenders == []


def test_new_session_starts_on_the_demo_sample():
    at = _app(autoload="1")
    assert len(at.session_state["images"]) == 3
    at.switch_page("pages/segment.py").run()
    assert not at.exception
    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
