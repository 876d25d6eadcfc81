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


def _served_download(at, label: str, *, starts: bool = False) -> tuple[bytes, str]:
    """The bytes and file name that the download button ``label`` (or the first whose label starts so) of an
    AppTest's last run offers."""
    import gc

    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    url = next(d.proto.url for d in at.get("download_button")
               if (d.proto.label.startswith(label) if starts else d.proto.label == label))
    file_id = url.rsplit("/", 1)[-1].split(".")[0]
    # by exact type: isinstance would ask every object in memory, and some torch objects warn when asked
    for store in (o for o in gc.get_objects() if type(o) is MemoryMediaFileStorage):
        if file_id in store._files_by_id:
            f = store._files_by_id[file_id]
            return f.content, f.filename
    raise AssertionError(f"no file behind {label}")


@pytest.fixture
def served_download():
    """:func:`_served_download`: what a page's download button hands the browser."""
    return _served_download
