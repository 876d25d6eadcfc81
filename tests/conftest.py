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
