"""Pixel size: read from files, written into what OreLens saves, carried through the pages, and scale bars."""
from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image

from core import io as cio
from core.cli import main
from core.scalebar import bar_length_um, draw_scale_bar, format_length

ROOT = pathlib.Path(__file__).resolve().parents[1]
RGB = np.full((60, 80, 3), 128, np.uint8)


def _tiff(**kw) -> bytes:
    b = io.BytesIO()
    tifffile.imwrite(b, RGB, **kw)
    return b.getvalue()


def _pil(fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(RGB).save(b, fmt, **kw)
    return b.getvalue()


# --------------------------------------------------------------------------- reading and writing


@pytest.mark.parametrize("data, expected", [
    (_tiff(**cio.tiff_resolution(0.69)), 0.69),                                       # resolution in cm, as we write
    (_tiff(resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH"), 0.5),       # in inches
    (_tiff(resolution=(1 / 0.345, 1 / 0.345), imagej=True, metadata={"unit": "micron"}), 0.345),  # ImageJ
    (_tiff(resolution=(2.0, 2.0), imagej=True, metadata={"unit": "mm"}), None),        # 500 µm: not believed
    (_tiff(ome=True, metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25}), 0.25),  # OME-XML
    (_tiff(resolution=(1e4 / 0.5, 1e4 / 0.6), resolutionunit="CENTIMETER"), None),     # pixels not square
    (_tiff(), None),                                                                    # no resolution tags
    (_tiff(resolution=(72, 72), resolutionunit="INCH"), None),                          # an editor's default
    (cio.encode_png(RGB, pixel_um=0.069), 0.069),                                       # pHYs, as we write masks
    (cio.encode_png(RGB), None),
    (_pil("JPEG", dpi=(72, 72)), None),
    (_pil("JPEG", dpi=(25400 / 5, 25400 / 5)), 5.0),
    (_pil("BMP"), None),
    (b"", None), (b"not an image", None),
])
def test_read_pixel_size(data, expected):
    got = cio.read_pixel_size(data)
    assert (got is None) if expected is None else abs(got - expected) < 1e-6 * expected, got


def test_written_files_record_the_pixel_size(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    assert cio.read_pixel_size(cio.write_mask(tmp_path / "m.png", mask, pixel_um=0.1379)) == 0.1379
    assert cio.read_pixel_size(cio.write_mask(tmp_path / "n.png", mask)) is None
    for suffix in (".tif", ".png"):
        assert cio.read_pixel_size(cio.write_image(tmp_path / f"i{suffix}", RGB, pixel_um=2.5)) == 2.5
    assert cio.read_pixel_size(cio.write_image(tmp_path / "i.jpg", RGB, pixel_um=2.5)) is None  # JPEG cannot hold it
    # and the pixels are unchanged
    assert np.array_equal(cio.read_mask(tmp_path / "m.png"), mask)
    with pytest.raises(ValueError, match="positive"):
        cio.encode_png(mask, pixel_um=0)


def test_common_pixel_size():
    assert cio.common_pixel_size([0.5, 0.5, 0.502]) == pytest.approx(0.500667, rel=1e-5)
    assert cio.common_pixel_size([0.5, 0.6]) is None
    assert cio.common_pixel_size([0.5, None]) is None
    assert cio.common_pixel_size([]) is None


# --------------------------------------------------------------------------- scale bars


@pytest.mark.parametrize("width, um, expected", [(1698, 0.138, 20.0), (3396, 0.069, 20.0), (1000, 1.0, 200.0),
                                                  (480, 7.0, 500.0), (100, 0.01, 0.2)])
def test_bar_length_is_round_and_near_a_fifth_of_the_width(width, um, expected):
    got = bar_length_um(width, um)
    assert got == expected
    assert 0.4 * 0.2 * width * um < got <= 0.2 * width * um


def test_format_length():
    assert [format_length(v) for v in (500, 2000, 0.05, 20, 0.5)] == ["500 µm", "2 mm", "50 nm", "20 µm", "0.5 µm"]


def test_scale_bar_is_drawn_in_the_lower_right_corner_with_the_right_length():
    img = np.full((400, 1000, 3), 100, np.uint8)
    out = draw_scale_bar(img, 0.5)  # a fifth of 500 µm = 100 µm -> 200 px
    assert out.shape == img.shape and out is not img and (img == 100).all()
    changed = (out != 100).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert xs.min() > 1000 / 2 and ys.min() > 400 / 2  # only the lower right corner
    white_rows = (out == 255).all(axis=2)
    bar_row = np.flatnonzero(white_rows.sum(axis=1) >= 195)  # the bar: rows of about 200 white pixels
    assert bar_row.size >= 2
    assert abs(int(white_rows[bar_row[-1]].sum()) - 201) <= 2
    with pytest.raises(ValueError):
        draw_scale_bar(img, -1)
    with pytest.raises(ValueError):
        draw_scale_bar(img[..., 0], 0.5)


# --------------------------------------------------------------------------- command line


def test_stats_reads_the_pixel_size_each_mask_records(tmp_path, capsys):
    from core.stats import measure, summarize

    rng = np.random.default_rng(0)
    a = np.where(rng.random((64, 64)) < 0.3, 1, 0).astype(np.uint8)
    b = np.where(rng.random((32, 48)) < 0.5, 2, 0).astype(np.uint8)
    cio.write_mask(tmp_path / "a.png", a, pixel_um=0.5)
    cio.write_mask(tmp_path / "b.png", b, pixel_um=2.0)
    cio.write_mask(tmp_path / "c.png", a)
    assert main(["stats", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json", str(tmp_path / "s.json")]) == 0
    got = json.loads((tmp_path / "s.json").read_text())
    ref = summarize({"a": measure(a, pixel_size=0.5), "b": measure(b, pixel_size=2.0)})
    assert got["total"]["area_fraction"] == json.loads(json.dumps(ref))["total"]["area_fraction"]
    assert got["images"]["b"]["pixel_size_um"] == 2.0
    # b's pixels are 16 times larger in area, so galena (2) weighs more than its pixel share
    assert got["total"]["area_fraction"]["2"] > (b == 2).sum() / (a.size + b.size)
    # a mask without a pixel size needs --pixel-size, which then applies to every mask
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "a.png"), str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert "c.png" in err and "a.png" not in err and "--pixel-size" in err
    assert main(["stats", str(tmp_path / "c.png"), "--pixel-size", "0.25", "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["images"]["c"]["pixel_size_um"] == 0.25


@pytest.mark.parametrize("value", ["1e9", "0.00001", "0", "nan"])
def test_a_given_pixel_size_out_of_range_is_refused(tmp_path, capsys, value):
    """The command line takes the pixel sizes the pages' fields take (1e-4 to 1000 µm per pixel)."""
    cio.write_mask(tmp_path / "c.png", np.zeros((20, 30), np.uint8))
    assert main(["stats", str(tmp_path / "c.png"), "--pixel-size", value, "--json", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pixel-size must be" in err and "Traceback" not in err
    assert not (tmp_path / "t.json").exists()
    assert cio.check_pixel_size("1000") == 1000.0 and cio.check_pixel_size(1e-4) == 1e-4
    with pytest.raises(ValueError, match="between 0.0001 and 1000"):
        cio.check_pixel_size(1000.5)


def test_stats_report_thumbnails_carry_a_scale_bar():
    from core.stats.report import thumbnail

    mask = np.zeros((600, 900), np.uint8)
    plain = thumbnail(image=np.full((600, 900, 3), 90, np.uint8), mask=mask)
    barred = thumbnail(image=np.full((600, 900, 3), 90, np.uint8), mask=mask, pixel_um=0.5)
    for k in ("image", "mask"):
        assert barred[k].shape == plain[k].shape
        diff = (barred[k] != plain[k]).any(axis=2)
        assert diff.any() and not diff[: diff.shape[0] // 2].any()


def test_stitch_keeps_the_pixel_size_the_tiles_record(tmp_path):
    from core.stitching.synthetic import make_tile_set

    item = cio.list_dataset(ROOT / "samples", "demo")[0]
    ts = make_tile_set(cio.read_image(item.image)[:700, :900], grid=(1, 2), seed=1)
    paths = [cio.write_image(tmp_path / f"t{k}.png", t, pixel_um=0.345) for k, t in enumerate(ts.tiles)]
    assert main(["stitch", *map(str, paths), "--out", str(tmp_path / "p.tif"), "--grid", "1x2", "--quiet",
                 "--json", str(tmp_path / "p.json")]) == 0
    assert cio.read_pixel_size(tmp_path / "p.tif") == 0.345
    assert json.loads((tmp_path / "p.json").read_text())["pixel_size_um"] == 0.345
    assert main(["stitch", *map(str, paths), "--out", str(tmp_path / "q.png"), "--grid", "1x2", "--quiet",
                 "--pixel-size", "0.7"]) == 0
    assert cio.read_pixel_size(tmp_path / "q.png") == 0.7


# --------------------------------------------------------------------------- the app


def _app(page: str):
    from streamlit.testing.v1 import AppTest

    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    at.button(key="load-demo").click().run()
    assert not at.exception, at.exception
    return at


def test_statistics_measure_each_image_at_its_own_pixel_size():
    from core.io import list_dataset, read_mask
    from core.stats import Options, measure, summarize

    at = _app("pages/statistics.py")
    imgs = at.session_state["images"]
    assert all(r.get("pixel_um") is None for r in imgs.values())  # the demo's pixel size is not known
    imgs["demo-05"]["pixel_um"] = 0.2
    at.run()
    at.selectbox(key="stats-preset").set_value("20×").run()
    assert any("demo-05" in str(d.value.get("image", [])) for d in at.dataframe if "µm per pixel" in d.value.columns)
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    res = at.session_state["statistics"]["result"]
    assert res["pixel_sizes"] == {"demo-05": 0.2, "demo-a14": 3.45 / 20, "demo-a55": 3.45 / 20}
    masks = {f"demo-{it.stem}": read_mask(it.mask) for it in list_dataset(ROOT / "samples", "demo")}
    ref = summarize({n: measure(m, pixel_size=res["pixel_sizes"][n]) for n, m in masks.items()}, options=Options())
    assert res["summary"]["total"]["area_fraction"] == ref["total"]["area_fraction"]
    assert res["summary"]["images"]["demo-05"]["pixel_size_um"] == 0.2
    assert any("demo-05 0.2" in c.value for c in at.caption)
    # a new pixel size for an image marks the results as stale
    at.session_state["images"]["demo-a14"]["pixel_um"] = 0.3
    at.run()
    assert any("changed" in w.value for w in at.warning)


def test_upload_page_sets_pixel_sizes_and_reads_them_from_files():
    at = _app("pages/upload_calibrate.py")
    at.number_input(key="uc-px-all").set_value(0.138).run()
    at.button(key="uc-px-all-set").click().run()
    assert not at.exception, at.exception
    assert {r["pixel_um"] for r in at.session_state["images"].values()} == {0.138}
    assert any("0.138 µm/px set for 3 image(s)" in s.value for s in at.success)
    # the Segment page shows it
    at.switch_page("pages/segment.py").run()
    assert any("at 0.138 µm/px" in m.value for m in at.markdown), [m.value for m in at.markdown]


def test_saved_session_keeps_pixel_sizes_and_refuses_a_damaged_one():
    from ui import archive

    img = np.full((40, 50, 3), 120, np.uint8)
    data = archive.pack({"images": {"a": {"image": img, "gt": None, "origin": "upload", "pixel_um": 0.345},
                                    "b": {"image": img, "gt": None, "origin": "upload"}}, "current": "a"})
    out = archive.unpack(data)
    assert out["images"]["a"]["pixel_um"] == 0.345 and out["images"]["b"]["pixel_um"] is None
    z = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(z.read("manifest.json"))
    manifest["images"][0]["pixel_um"] = -1
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as w:
        for n in z.namelist():
            w.writestr(n, json.dumps(manifest) if n == "manifest.json" else z.read(n))
    with pytest.raises(ValueError, match="saved image a: its pixel size is damaged"):
        archive.unpack(buf.getvalue())
