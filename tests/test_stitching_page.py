"""Stitch page smoke test: demo tiles → panorama, no exception."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _stitch_page():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/stitch.py")
    at.run()
    assert not at.exception
    return at


def test_stitch_page_demo_tiles():
    at = _stitch_page()
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


def _grid_tiles(rows=2, cols=2, seed=5):
    from core.io import list_dataset, read_image
    from core.stitching.synthetic import make_tile_set

    item = list_dataset(Path(APP).parent / "samples", "demo")[0]
    return make_tile_set(read_image(item.image)[::2, ::2], grid=(rows, cols), seed=seed).tiles


def _zip(members: dict) -> bytes:
    import io
    import zipfile

    from core.io import encode_png

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, tile in members.items():
            z.writestr(name, encode_png(tile))
    return buf.getvalue()


def test_a_second_panorama_is_added_under_a_new_name_and_the_same_one_is_kept():
    import numpy as np

    at = _stitch_page()
    next(b for b in at.button if b.key == "stitch-demo").click()
    at.run()
    next(b for b in at.button if b.key == "stitch-run").click()
    at.run()
    assert not at.exception and not at.error
    first = at.session_state["stitch"]["last"]["pano"]
    next(b for b in at.button if b.label == "Send to segmentation").click()
    at.run()
    at.session_state["annotations"]["panorama"] = np.zeros(first.shape[:2], np.uint8)  # work done on it
    # another panorama (here: the same one mirrored) sent next
    at.session_state["stitch"]["last"]["pano"] = np.ascontiguousarray(first[:, ::-1])
    next(b for b in at.button if b.label == "Send to segmentation").click()
    at.run()
    assert not at.exception
    images = at.session_state["images"]
    assert np.array_equal(images["panorama"]["image"], first) and "panorama" in at.session_state["annotations"]
    assert np.array_equal(images["panorama-2"]["image"], first[:, ::-1])
    assert at.session_state["current"] == "panorama-2"
    assert [x.value for x in at.success] == [
        "This panorama differs from the “panorama” already in this session, which keeps its work: it is added as "
        "“panorama-2”, now the current image."]
    # the identical panorama again: kept, no third copy
    next(b for b in at.button if b.label == "Send to segmentation").click()
    at.run()
    assert sorted(n for n in at.session_state["images"] if n.startswith("panorama")) == ["panorama", "panorama-2"]
    assert [x.value for x in at.success] == ["“panorama-2” is now the current image."]


def test_tiles_of_the_same_name_in_different_folders_of_a_zip_all_stitch_in_row_order():
    tiles = _grid_tiles()
    at = _stitch_page()
    # stored out of order, as an archiver may
    members = {"row2/02.png": tiles[3], "row1/02.png": tiles[1], "row2/01.png": tiles[2], "row1/01.png": tiles[0]}
    at.file_uploader(key="stitch-files").set_value([("tiles.zip", _zip(members), "application/zip")]).run()
    assert not at.exception and not at.error
    assert "4 tiles: row1/01.png, row1/02.png, row2/01.png, row2/02.png" in [c.value for c in at.caption]
    at.text_input(key="stitch-grid").set_value("2x2").run()
    next(b for b in at.button if b.key == "stitch-run").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    rec = at.session_state["stitch"]["last"]["json"]
    assert list(rec["tiles"]) == ["row1/01.png", "row1/02.png", "row2/01.png", "row2/02.png"]
    assert next(m for m in at.metric if m.label == "Tiles").value == "4"


def test_a_tile_given_twice_is_refused_with_its_name():
    from core.io import encode_png

    tiles = _grid_tiles()
    at = _stitch_page()
    at.file_uploader(key="stitch-files").set_value(
        [(f"{k:02d}.png", encode_png(t), "image/png") for k, t in enumerate(tiles)]
        + [("01.png", encode_png(tiles[1]), "image/png")]).run()
    assert not at.exception
    assert [e.value.replace("\\", "") for e in at.error] == [
        "01.png is given twice: remove the second copy, so that every tile is stitched once."]
    assert "stitch-run" not in [b.key for b in at.button]
    # the same picture under another name
    at.file_uploader(key="stitch-files").set_value(
        [(f"{k:02d}.png", encode_png(t), "image/png") for k, t in enumerate(tiles)]
        + [("copy.png", encode_png(tiles[2]), "image/png")]).run()
    assert [e.value.replace("\\", "") for e in at.error] == [
        "02.png and copy.png are the same picture: remove one of them, so that every tile is stitched once."]
    # two different tiles of one name (from two folders, uploaded as files)
    members = _zip({"a/01.png": tiles[0], "b/01.png": tiles[1]})
    at.file_uploader(key="stitch-files").set_value(
        [("01.png", encode_png(tiles[0]), "image/png"), ("01.png", encode_png(tiles[1]), "image/png")]).run()
    err = [e.value.replace("\\", "") for e in at.error]
    assert len(err) == 1 and err[0].startswith("Two different tiles are called 01.png: rename them"), err
    at.file_uploader(key="stitch-files").set_value([("two.zip", members, "application/zip")]).run()
    assert not at.error and "2 tiles: a/01.png, b/01.png" in [c.value for c in at.caption]


def test_demo_tiles_replace_the_uploads_and_set_a_grid_that_fits_them():
    from core.io import encode_png

    tiles = _grid_tiles(1, 3)
    at = _stitch_page()
    at.file_uploader(key="stitch-files").set_value(
        [(f"{k:02d}.png", encode_png(t), "image/png") for k, t in enumerate(tiles)]).run()
    assert "3 tiles: 00.png, 01.png, 02.png" in [c.value for c in at.caption]
    next(b for b in at.button if b.key == "stitch-demo").click()
    at.run()
    assert not at.exception
    assert any(c.value.startswith("9 tiles: demo_r0_c0.png") for c in at.caption)
    assert at.text_input(key="stitch-grid").value == "3x3"
    assert any("demo tiles take the place of the 3 uploaded file(s)" in i.value for i in at.info)
    next(b for b in at.button if b.key == "stitch-run").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.session_state["stitch"]["last"]["json"]["tiles"]) == 9
    # other uploads take over again, without the demo's grid
    at.file_uploader(key="stitch-files").set_value(
        [(f"t{k}.png", encode_png(t), "image/png") for k, t in enumerate(tiles)]).run()
    assert "3 tiles: t0.png, t1.png, t2.png" in [c.value for c in at.caption]
    assert at.text_input(key="stitch-grid").value == ""
    assert "last" not in at.session_state["stitch"]


def _stitch_two_that_do_not_overlap(first: str, second: str):
    """The page after stitching two uploaded tiles, named ``first`` and ``second``, cut from different demo
    photographs (so they cannot be matched)."""
    from core.io import encode_png, list_dataset, read_image

    items = list_dataset(Path(APP).parent / "samples", "demo")
    a = read_image(items[0].image)[:400, :400]
    b = read_image(items[1].image)[-400:, -400:][::-1]
    at = _stitch_page()
    at.file_uploader(key="stitch-files").set_value([(first, encode_png(a), "image/png"),
                                                    (second, encode_png(b), "image/png")]).run()
    next(x for x in at.button if x.key == "stitch-run").click()
    at.run()
    return at


def test_failure_messages_name_the_grid_field_not_the_command_line_flag():
    at = _stitch_two_that_do_not_overlap("a.png", "b.png")
    assert not at.exception
    err = [e.value for e in at.error]
    assert len(err) == 1 and "could not be matched" in err[0], err
    assert "--grid" not in err[0] and "**Grid** field" in err[0]
    at.text_input(key="stitch-grid").set_value("2x2").run()
    next(x for x in at.button if x.key == "stitch-run").click()
    at.run()
    err = [e.value for e in at.error]
    assert err == ["A 2x2 grid holds 4 tiles but 2 were given: enter the tiles' rows×columns in the **Grid** field, "
                   "or leave it blank to find the overlaps."]


def _encrypted(zip_bytes: bytes) -> bytes:
    """The archive with every member flagged as encrypted (as a password-protected zip is)."""
    d = bytearray(zip_bytes)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = d.find(sig)
        while i >= 0:
            d[i + at] |= 1
            i = d.find(sig, i + 4)
    return bytes(d)


def test_unusable_zip_archives_are_refused_with_a_reason_and_no_traceback():
    import io
    import zipfile

    import numpy as np

    from core.io import encode_png

    tiles = _grid_tiles(1, 2)
    at = _stitch_page()

    def errors(name, data):
        at.file_uploader(key="stitch-files").set_value([(name, data, "application/zip")]).run()
        assert not at.exception, at.exception
        assert "stitch-run" not in [b.key for b in at.button]
        return [e.value.replace("\\", "") for e in at.error]

    # a password-protected archive
    assert errors("locked.zip", _encrypted(_zip({"01.png": tiles[0], "02.png": tiles[1]}))) == [
        "locked.zip: 01.png cannot be unpacked (the archive is encrypted or uses an unusual compression); pack the "
        "tiles into a plain zip without a password"]
    # an archive without a single image
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "tiles of section 12")
    err = errors("notes.zip", buf.getvalue())
    assert len(err) == 1 and err[0].startswith("notes.zip: the archive holds no images (.jpg"), err
    # a member that is not a picture is named, without the decoder's own placeholder name
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("row1/01.png", encode_png(tiles[0]))
        z.writestr("row1/02.jpg", "not a picture")
    assert errors("junk.zip", buf.getvalue()) == [
        "junk.zip: row1/02.jpg: not a readable image; use JPEG, PNG or TIFF"]
    # more tiles than the page stitches: refused from the archive's listing
    small = np.full((16, 16, 3), 90, np.uint8)
    many = _zip({f"{k:03d}.png": small + k for k in range(101)})
    assert errors("many.zip", many) == [
        "at most 100 tiles can be stitched here, but many.zip holds 101; use the command line for more"]


def test_unmatched_tiles_are_named_and_the_transforms_record_the_pixel_size(served_download):
    import json

    at = _stitch_two_that_do_not_overlap("left.png", "right.png")
    err = [e.value.replace("\\", "") for e in at.error]
    assert len(err) == 1 and err[0].startswith("Stitching failed: tile 2 (right.png) could not be matched to the "
                                               "rest;"), err
    # a panorama of tiles that record their pixel size: the transforms say it too
    next(x for x in at.button if x.key == "stitch-demo").click()
    at.run()
    at.session_state["stitch"]["pixel_um"] = 0.25
    next(x for x in at.button if x.key == "stitch-run").click()
    at.run()
    assert not at.exception and not at.error
    data, name = served_download(at, "Transforms (JSON)")
    rec = json.loads(data)
    assert name == "panorama.json" and rec["pixel_size_um"] == 0.25 and len(rec["tiles"]) == 9


def test_reading_the_tiles_shows_its_progress_tile_by_tile(monkeypatch):
    """Decoding a hundred full-size tiles takes seconds: the page says which tile it is reading, of how many,
    and clears the bar when done."""
    from streamlit.delta_generator import DeltaGenerator

    from core.io import encode_png

    shown, original = [], DeltaGenerator.progress

    def progress(self, value, text=None):
        shown.append((round(float(value), 3), text))
        return original(self, value, text=text)

    monkeypatch.setattr(DeltaGenerator, "progress", progress)
    tiles = _grid_tiles()
    at = _stitch_page()
    at.file_uploader(key="stitch-files").set_value([
        ("rows.zip", _zip({"row1/01.png": tiles[0], "row1/02.png": tiles[1], "row2/01.png": tiles[2]}),
         "application/zip"),
        ("last.png", encode_png(tiles[3]), "image/png")]).run()
    assert not at.exception and not at.error
    assert [x for x in shown if x[1] and x[1].startswith("Reading tile")] == [
        (0.25, "Reading tile 1 of 4 (row1/01.png)…"), (0.5, "Reading tile 2 of 4 (row1/02.png)…"),
        (0.75, "Reading tile 3 of 4 (row2/01.png)…"), (1.0, "Reading tile 4 of 4 (last.png)…")]
    assert "4 tiles: last.png, row1/01.png, row1/02.png, row2/01.png" in [c.value for c in at.caption]
    assert not [e for e in at.get("progress")]  # cleared once the tiles are read
