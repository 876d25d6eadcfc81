"""Names that never overwrite other work (session images, stitched tiles), and flat fields that refuse nonsense
(too few photographs for an estimate, a sample photographed as the blank)."""
from __future__ import annotations

import glob
import pathlib
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.calibration import from_linear, to_linear
from core.calibration.flatfield import (MAX_STRUCTURE, MIN_SERIES_IMAGES, blank_field_structure,
                                        flat_field_from_reference, flat_field_from_series)
from core.calibration.simulate import vignette

ROOT = pathlib.Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
LUMENSTONE = sorted(glob.glob("/work/shared/data/lumenstone/imgs/train/*.jpg"))


def _blank(shape=(600, 800), *, strength=0.4, noise=4.0, dust=8, level=0.6, seed=0, jpeg=True) -> np.ndarray:
    """A photograph of a blank field: smooth vignetting, camera noise, a few dust specks, JPEG compression."""
    import cv2

    rng = np.random.default_rng(seed)
    img = from_linear(level * vignette(shape, strength=strength, centre=(0.45, 0.55), tint=(1.0, 0.9, 1.1))) * 255
    img = img + rng.normal(0, noise, img.shape)
    for _ in range(dust):
        y, x = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        cv2.circle(img, (x, y), int(rng.integers(2, 8)), (img[y, x] * 0.5).tolist(), -1)
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if jpeg:
        img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_UNCHANGED)
    return img


def _samples() -> list[np.ndarray]:
    """Photographs of polished sections: the demo sample, and LumenStone's training photographs where present."""
    from core.io import list_dataset, read_image

    paths = [it.image for it in list_dataset(ROOT / "samples", "demo")] + LUMENSTONE[::8]
    return [read_image(p) for p in paths]


# --------------------------------------------------------------------------- flat field from a blank reference


@pytest.mark.parametrize("kw", [dict(), dict(shape=(480, 640), noise=8, level=0.1), dict(strength=0.8, noise=6),
                                dict(shape=(1200, 1600), dust=40, noise=5, seed=3), dict(jpeg=False, dust=0)])
def test_a_blank_field_with_noise_and_dust_is_accepted(kw):
    blank = _blank(**kw)
    assert blank_field_structure(blank) < MAX_STRUCTURE / 1.5
    flat = flat_field_from_reference(blank)
    assert 0.2 < flat.falloff() < 0.9
    from core.stitching import flat_field_gain

    assert flat_field_gain(blank).shape[:2] == blank.shape[:2]


def test_a_photograph_of_a_sample_is_refused_as_blank_reference():
    from core.stitching import flat_field_gain

    photos = _samples()
    assert len(photos) >= 3
    for photo in photos:
        assert blank_field_structure(photo) > 1.5 * MAX_STRUCTURE
        with pytest.raises(ValueError, match="this looks like a photograph of a sample, not of a blank field"):
            flat_field_from_reference(photo)
        with pytest.raises(ValueError, match="not of a blank field"):
            flat_field_gain(photo.astype(np.float32))


@pytest.mark.skipif(not LUMENSTONE, reason="LumenStone photographs not available")
def test_every_lumenstone_photograph_is_refused_as_blank_reference():
    from core.io import read_image

    shares = [blank_field_structure(read_image(p)) for p in LUMENSTONE]
    assert min(shares) > 1.5 * MAX_STRUCTURE, (LUMENSTONE[int(np.argmin(shares))], min(shares))


def test_an_implausible_falloff_is_refused():
    blank = _blank(strength=0.99, noise=0, dust=0, jpeg=False, level=0.8)
    with pytest.raises(ValueError, match=r"the flat-field reference puts the darkest point of the field at 9\d % less "
                                         r"light than the brightest: more than a flat field can even out \(at most "
                                         r"90 %\)"):
        flat_field_from_reference(blank)


# --------------------------------------------------------------------------- flat field from a series


def _series(n: int, seed: int = 0) -> list[np.ndarray]:
    from core.io import list_dataset, read_image

    rng = np.random.default_rng(seed)
    src = [read_image(it.image)[::4, ::4] for it in list_dataset(ROOT / "samples", "demo")]
    field = vignette((200, 260), strength=0.35)
    out = []
    for k in range(n):
        im = src[k % len(src)]
        y, x = int(rng.integers(0, im.shape[0] - 200)), int(rng.integers(0, im.shape[1] - 260))
        crop = im[y:y + 200, x:x + 260]
        crop = crop[::-1] if k % 2 else crop
        out.append(np.clip(from_linear(to_linear(crop / 255.0) * field) * 255 + 0.5, 0, 255).astype(np.uint8))
    return out


def test_a_series_needs_ten_photographs():
    assert MIN_SERIES_IMAGES == 10
    with pytest.raises(ValueError, match="needs at least 10 photographs taken with the same optics, but there are 3"):
        flat_field_from_series(_series(3))
    flat = flat_field_from_series(_series(MIN_SERIES_IMAGES))
    assert flat.source == "series" and flat.falloff() < 0.9


def _write(path, arr):
    from core.io import write_image

    write_image(path, arr)
    return str(path)


def test_the_calibrate_command_refuses_a_short_series_and_a_sample_as_blank(tmp_path, capsys):
    from core.cli import main

    shots = _series(3)
    paths = [_write(tmp_path / f"s{k}.png", im) for k, im in enumerate(shots)]
    marks = np.full(shots[0].shape[:2], 255, np.uint8)
    marks[:50, :50] = 1
    _write(tmp_path / "s0_marks.png", marks)
    common = ["calibrate", *paths, "--annotation", str(tmp_path / "s0_marks.png"), "--series",
              "--out", str(tmp_path / "out")]
    assert main(common + ["--flat-field", "auto"]) == 2
    err = capsys.readouterr().err
    assert "needs at least 10 photographs" in err and "there are 3" in err
    photo = _write(tmp_path / "photo.png", shots[1])
    assert main(common + ["--flat-field", photo]) == 2
    err = capsys.readouterr().err
    assert f"{photo}: this looks like a photograph of a sample, not of a blank field" in err


def test_the_stitch_command_refuses_a_sample_as_blank(tmp_path, capsys, demo_image):
    from core.cli import main
    from core.stitching.synthetic import make_tile_set

    ts = make_tile_set(demo_image[::2, ::2], grid=(1, 2), seed=1)
    paths = [_write(tmp_path / f"t{k}.png", t) for k, t in enumerate(ts.tiles)]
    photo = _write(tmp_path / "photo.png", demo_image)
    assert main(["stitch", *paths, "--flat-field", photo, "--out", str(tmp_path / "p.png"), "--quiet"]) == 2
    assert "this looks like a photograph of a sample" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Upload & calibrate page


def _png(arr) -> bytes:
    from core.io import encode_png

    return encode_png(arr)


def _calibrate_page():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/upload_calibrate.py").run()
    assert not at.exception, at.exception
    return at


def test_the_page_refuses_an_estimate_from_three_photographs():
    at = _calibrate_page()
    n = len(at.session_state["images"])
    at.radio(key="uc-ffsrc").set_value("Estimate from this session's images").run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        f"Estimating the flat field needs at least 10 photographs of this image's size (1600×1200 px) taken with "
        f"the same optics, but this session has {n}: from fewer, the estimate is the minerals of those photographs "
        "rather than the illumination. Add more photographs of the session, or use a blank reference shot."]
    assert not [c for c in at.caption if c.value.startswith("Flat field")]


def test_the_page_refuses_a_sample_as_blank_reference_and_takes_a_blank():
    at = _calibrate_page()
    name = at.session_state["current"]
    photo = at.session_state["images"][name]["image"]
    at.radio(key="uc-ffsrc").set_value("Blank reference shot").run()
    at.file_uploader(key="uc-fffile").set_value(("blank.png", _png(photo[::-1]), "image/png")).run()
    assert not at.exception, at.exception
    err = [e.value.replace("\\", "") for e in at.error]
    assert len(err) == 1 and err[0].startswith("blank.png: this looks like a photograph of a sample, not of a "
                                               "blank field"), err
    assert not [c for c in at.caption if c.value.startswith("Flat field")]
    at.file_uploader(key="uc-fffile").set_value(("blank.png", _png(_blank(photo.shape[:2])), "image/png")).run()
    assert not at.error, [e.value for e in at.error]
    said = [c.value for c in at.caption if c.value.startswith("Flat field")]
    assert len(said) == 1 and re.fullmatch(r"Flat field \(reference\): the darkest point receives 3\d % less light "
                                           r"than the brightest\.", said[0]), said  # the blank's 40 % vignetting


# --------------------------------------------------------------------------- the Register XPL page's PPL upload


def test_a_ppl_upload_of_a_used_name_is_added_under_a_new_name():
    from core.io import list_dataset, read_image

    items = list_dataset(ROOT / "samples", "demo")
    first, second = read_image(items[0].image)[::2, ::2], read_image(items[1].image)[::2, ::2]
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/register_xpl.py").run()
    at.session_state["images"] = {"plane": {"image": first, "gt": None, "origin": "upload"}}
    at.session_state["annotations"] = {"plane": np.zeros(first.shape[:2], np.uint8)}
    at.session_state["current"] = "plane"
    at.run()
    next(c for c in at.checkbox if c.label.startswith("Use the current image")).uncheck().run()
    at.file_uploader(key="xpl-ppl").set_value(("plane.png", _png(second), "image/png")).run()
    at.file_uploader(key="xpl-shots").set_value([("x1.png", _png(second[::-1]), "image/png")]).run()
    [b for b in at.button if b.label == "Align XPL shots"][0].click().run()
    assert not at.exception, at.exception
    images = at.session_state["images"]
    assert np.array_equal(images["plane"]["image"], first) and "plane" in at.session_state["annotations"]
    assert np.array_equal(images["plane-2"]["image"], second)
    assert at.session_state["current"] == "plane-2" and "plane-2" in at.session_state["xpl"]
    assert "plane" not in at.session_state["xpl"]
    assert [i.value.replace("\\", "") for i in at.info if "different photograph" in i.value] == [
        "plane.png is a different photograph from the plane already in this session: added as plane-2 (the image "
        "already there keeps its results)."]


# --------------------------------------------------------------------------- names of tiles in the engine


def test_tile_names_keep_as_much_of_the_path_as_tells_them_apart():
    from core.stitching.pipeline import tile_names

    assert tile_names(["a/t1.png", "a/t2.png"]) == ["t1.png", "t2.png"]
    assert tile_names(["s/row1/01.jpg", "s/row1/02.jpg", "s/row2/01.jpg", "s/row2/02.jpg"]) == [
        "row1/01.jpg", "row1/02.jpg", "row2/01.jpg", "row2/02.jpg"]


def test_the_stitch_command_keeps_every_tile_of_the_same_name_and_refuses_one_given_twice(tmp_path, capsys,
                                                                                          demo_image):
    import json

    from core.cli import main
    from core.stitching.synthetic import make_tile_set

    ts = make_tile_set(demo_image[::2, ::2], grid=(2, 2), seed=2)
    paths = []
    for k, t in enumerate(ts.tiles):
        (tmp_path / f"row{k // 2 + 1}").mkdir(exist_ok=True)
        paths.append(_write(tmp_path / f"row{k // 2 + 1}" / f"0{k % 2 + 1}.png", t))
    js = tmp_path / "p.json"
    assert main(["stitch", *paths, "--grid", "2x2", "--out", str(tmp_path / "p.png"), "--json", str(js),
                 "--quiet"]) == 0
    assert list(json.loads(js.read_text())["tiles"]) == ["row1/01.png", "row1/02.png", "row2/01.png", "row2/02.png"]
    assert main(["stitch", paths[0], paths[1], paths[0], "--out", str(tmp_path / "q.png"), "--quiet"]) == 2
    assert f"{paths[0]} is given twice" in capsys.readouterr().err


def test_the_engine_refuses_a_tile_twice_and_names_for_fewer_tiles(demo_image):
    from core.stitching import UnmatchedTiles, register, stitch
    from core.stitching.synthetic import make_tile_set

    ts = make_tile_set(demo_image[::2, ::2], grid=(1, 2), seed=3)
    with pytest.raises(ValueError, match="tiles 1 and 3 are the same picture"):
        register([ts.tiles[0], ts.tiles[1], ts.tiles[0].copy()])
    res = stitch(ts.tiles)
    with pytest.raises(ValueError, match="two tiles are called 01.png"):
        res.to_json(["01.png", "01.png"])
    assert list(res.to_json(["a/01.png", "b/01.png"])["tiles"]) == ["a/01.png", "b/01.png"]
    # the command line names its flag; pages name their own field
    e = UnmatchedTiles([2, 3])
    assert str(e) == ("tiles 2, 3 could not be matched to the rest; check that every tile overlaps a neighbour "
                      "(or give the right --grid)")
    assert e.explain("correct the Grid field").endswith("(or correct the Grid field)")
    import pickle

    assert str(pickle.loads(pickle.dumps(e))) == str(e)
