import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def demo_items():
    from core.io import list_dataset

    return list_dataset(SAMPLES, "demo")


@pytest.fixture(scope="session")
def demo_image(demo_items):
    from core.io import read_image

    return read_image(demo_items[0].image)


@pytest.fixture(scope="session")
def demo_mask(demo_items):
    from core.io import read_mask

    return read_mask(demo_items[0].mask)


def _navigation_only_pages_manager():
    """AppTest resets the legacy "pages/ folder" flag before every run, and the
    flag then turns on because this app has a pages/ folder (the mandated
    layout), so reruns would execute a page file without app.py. Under
    ``streamlit run`` st.navigation clears the flag; do the same here."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__
    if getattr(original, "_orelens_patched", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    __init__._orelens_patched = True
    PagesManager.__init__ = __init__


_navigation_only_pages_manager()
