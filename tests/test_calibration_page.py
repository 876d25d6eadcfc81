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
    table = next(d.value for d in at.dataframe if "CIEDE2000 after" in d.value.columns)
    assert table["mineral"].iloc[-1] == "mean"
    listed = next(d.value for d in at.dataframe if "work on it" in d.value.columns)  # the session's images
    assert listed.set_index("image").loc[name, "work on it"] == "colour-corrected"
    at.button(key="uc-series").click().run()
    assert not at.exception
    assert len(at.session_state["calibrated"]) == 3


def _png(arr) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_added_uploads_become_current_everywhere_and_bad_files_are_named():
    """An upload makes its first image current on the page and in the sidebar at once (the sidebar is drawn
    before the page), a bad file among good ones is named in an error, and a picker follows the current image
    however it was changed."""
    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/upload_calibrate.py").run()
    demo = list(at.session_state["images"])
    assert at.selectbox(key="sidebar-current").value == demo[0]
    photo = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    at.file_uploader(key="uc-files").set_value([("thin-section.png", _png(photo), "image/png"),
                                                ("broken.png", b"not a picture", "image/png")])
    at.run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    assert at.session_state["current"] == "thin-section"
    assert at.selectbox(key="sidebar-current").value == "thin-section"
    assert at.selectbox(key="uc-image").value == "thin-section"
    assert f"{len(demo) + 1} image(s) in this session" in [c.value for c in at.sidebar.caption]
    assert [s.value for s in at.success] == ["Added 1 image(s): thin-section"]
    assert any(e.value.replace("\\", "").startswith("broken.png:") and "not a readable image" in e.value for e in at.error), \
        [e.value for e in at.error]
    # pressing Add again with the same file keeps the image and its results
    at.session_state["predictions"]["thin-section"] = {"labels": np.zeros((64, 80), np.uint8)}
    at.file_uploader(key="uc-files").set_value([("thin-section.png", _png(photo), "image/png")])
    at.run()
    at.button(key="uc-add").click().run()
    assert "thin-section" in at.session_state["predictions"] and len(at.session_state["images"]) == len(demo) + 1
    assert [i.value for i in at.info if i.value.startswith("Already")] == [
        "Already in this session, kept with their results: thin-section"]
    # a choice in the sidebar moves the page's picker too; the upload's message stays while the user is on the
    # page (it may run again by itself, e.g. when a drawing canvas appears) and is gone after a visit elsewhere
    at.selectbox(key="sidebar-current").select(demo[1]).run()
    assert at.session_state["current"] == demo[1] and at.selectbox(key="uc-image").value == demo[1]
    assert [i.value for i in at.info if i.value.startswith("Already")]
    at.switch_page("pages/segment.py").run()
    at.switch_page("pages/upload_calibrate.py").run()
    assert not [i.value for i in at.info if i.value.startswith("Already")] and not at.success
    # a change from elsewhere (another page's work) is shown by both pickers on the next run
    at.session_state["current"] = demo[2]
    at.run()
    assert at.selectbox(key="sidebar-current").value == demo[2] and at.selectbox(key="uc-image").value == demo[2]


def test_images_can_be_removed_with_their_work_and_every_page_still_runs():
    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/statistics.py").run()       # pages that keep a choice of images in their widgets
    at.switch_page("pages/upload_calibrate.py").run()
    names = list(at.session_state["images"])
    gone = names[0]
    at.session_state["predictions"][gone] = {"labels": np.zeros((4, 4), np.uint8)}
    at.session_state["annotations"][gone] = np.zeros((4, 4), np.uint8)
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="uc-remove").disabled
    at.multiselect(key="uc-remove-pick").select(gone).run()
    at.button(key="uc-remove").click().run()
    assert not at.exception, at.exception
    assert list(at.session_state["images"]) == names[1:]
    assert gone not in at.session_state["predictions"] and gone not in at.session_state["annotations"]
    assert at.session_state["current"] == names[1] and at.selectbox(key="sidebar-current").value == names[1]
    assert [s.value for s in at.success] == [f"Removed 1 image(s): {gone}"]
    # the list's label now counts one image fewer, so it is drawn anew: it opens to show that message
    listing = next(e for e in at.expander if e.label.startswith("Images in this session"))
    assert listing.label == f"Images in this session ({len(names) - 1} of at most 24)" and listing.proto.expanded
    assert at.multiselect(key="uc-remove-pick").value == []
    for page in ("segment", "annotate", "statistics", "register_xpl", "stitch", "upload_calibrate"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)


def test_loading_the_demo_again_keeps_the_work_done_on_it():
    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.button(key="load-demo").click().run()
    names = list(at.session_state["images"])
    at.session_state["annotations"][names[1]] = np.zeros((4, 4), np.uint8)
    at.session_state["current"] = names[2]
    at.button(key="load-demo").click().run()
    assert not at.exception, at.exception
    assert list(at.session_state["images"]) == names and names[1] in at.session_state["annotations"]
    assert at.session_state["current"] == names[0]  # the demo's first image, as on the first load


def test_twelve_bit_photographs_are_flagged_and_read_with_the_chosen_bit_depth():
    import io
    import os

    import numpy as np
    import tifffile

    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4096, (64, 80, 3)).astype(np.uint16)  # a 12-bit camera's values, right-aligned
    raw[0, 0] = 4095
    buf = io.BytesIO()
    tifffile.imwrite(buf, raw)
    at.file_uploader(key="uc-files").set_value([("cam12.tif", buf.getvalue(), "image/tiff")]).run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    assert at.session_state["images"]["cam12"]["image"].max() == 16
    warn = [w.value for w in at.warning if w.value.startswith("Almost black")]
    assert len(warn) == 1 and "brightest value 16 of 255" in warn[0] and "16-bit files hold" in warn[0]
    at.selectbox(key="uc-white").set_value(4095).run()
    at.button(key="uc-add").click().run()
    img = at.session_state["images"]["cam12"]["image"]
    assert img.max() == 255 and np.array_equal(img, np.rint(raw * (255 / 4095)).astype(np.uint8))
    assert not [w for w in at.warning if w.value.startswith("Almost black")]
    assert list(at.session_state["images"]) == ["cam12"]  # replaced, not added twice


def test_files_are_added_into_a_sample_and_it_can_be_changed():
    """The sample named for the files added next is theirs (and the demo's stay); the session's table shows it,
    and Statistics compares the samples."""
    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/upload_calibrate.py").run()
    photo = np.random.default_rng(2).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    at.text_input(key="uc-sample").set_value("  DH-12 41–42 m ").run()
    at.file_uploader(key="uc-files").set_value([("core-01.png", _png(photo), "image/png"),
                                                ("core-02.png", _png(photo[::-1]), "image/png")])
    at.run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    images = at.session_state["images"]
    assert images["core-01"]["sample"] == images["core-02"]["sample"] == "DH-12 41–42 m"
    assert images["demo-05"]["sample"] == "copper-nickel ore"
    listed = next(d.value for d in at.dataframe if "work on it" in d.value.columns).set_index("image")
    assert listed.loc["core-02", "sample"] == "DH-12 41–42 m" and listed.loc["demo-a14", "sample"] == "base-metal ore"
    # no sample named: none is set
    at.text_input(key="uc-sample").set_value("").run()
    at.file_uploader(key="uc-files").set_value([("loose.png", _png(photo[:, ::-1]), "image/png")])
    at.run()
    at.button(key="uc-add").click().run()
    assert "sample" not in at.session_state["images"]["loose"]


def _jpeg(arr) -> bytes:
    from core.io import encode_jpeg

    return encode_jpeg(arr, quality=95)


def test_a_different_photograph_of_a_used_name_is_added_under_a_new_name_keeping_the_work():
    """a05.jpg added, calibrated, then another photograph also called a05.jpg: both stay, each with its work."""
    import numpy as np

    rng = np.random.default_rng(7)
    first = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    other = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("pages/upload_calibrate.py").run()
    at.file_uploader(key="uc-files").set_value([("a05.jpg", _jpeg(first), "image/jpeg")]).run()
    at.button(key="uc-add").click().run()
    kept = at.session_state["images"]["a05"]["image"]
    at.session_state["calibrated"]["a05"] = kept[::-1].copy()
    at.session_state["annotations"]["a05"] = np.zeros(kept.shape[:2], np.uint8)
    at.file_uploader(key="uc-files").set_value([("a05.jpg", _jpeg(other), "image/jpeg")]).run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    images = at.session_state["images"]
    assert np.array_equal(images["a05"]["image"], kept)
    assert "a05" in at.session_state["calibrated"] and "a05" in at.session_state["annotations"]
    assert "a05-2" in images and not np.array_equal(images["a05-2"]["image"], kept)
    assert at.session_state["current"] == "a05-2"
    assert [s.value for s in at.success] == ["Added 1 image(s): a05-2"]
    assert [i.value.replace("\\", "") for i in at.info if "different photograph" in i.value] == [
        "a05.jpg is a different photograph from the a05 already in this session: added as a05-2 (the image "
        "already there keeps its results)."]
    assert not [i for i in at.info if i.value.startswith("Already")]
    # the second photograph added again is found under its new name
    at.button(key="uc-add").click().run()
    assert [i.value for i in at.info if i.value.startswith("Already")] == [
        "Already in this session, kept with their results: a05-2"]
    assert sorted(n for n in at.session_state["images"] if n.startswith("a05")) == ["a05", "a05-2"]


def test_two_photographs_of_one_name_added_together_are_both_added():
    import numpy as np

    rng = np.random.default_rng(8)
    one, two = (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(2))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("pages/upload_calibrate.py").run()
    at.file_uploader(key="uc-files").set_value([("b07.jpg", _jpeg(one), "image/jpeg"),
                                                ("b07.jpg", _jpeg(two), "image/jpeg")]).run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Added 2 image(s): b07, b07-2"]
    assert not [i for i in at.info if i.value.startswith("Already")]
    assert any("b07.jpg is a different photograph from the b07 already in this session: added as b07-2"
               in i.value.replace("\\", "") for i in at.info)
    # the same file twice in one go: added once, and not reported as found in the session
    at.file_uploader(key="uc-files").set_value([("c09.jpg", _jpeg(one[::-1]), "image/jpeg"),
                                                ("c09.jpg", _jpeg(one[::-1]), "image/jpeg")]).run()
    at.button(key="uc-add").click().run()
    assert [s.value for s in at.success] == ["Added 1 image(s): c09"]
    assert not [i for i in at.info if i.value.startswith("Already")]
    assert "c09-2" not in at.session_state["images"]


def test_the_marking_hint_follows_the_methods_minimum():
    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/upload_calibrate.py").run()
    at.radio(key="uc-refsrc").set_value("session").run()
    assert at.selectbox(key="uc-method").value == "white-balance"
    hints = [i.value for i in at.info if i.value.startswith("Mark")]
    assert hints == ["Mark at least 1 mineral to calibrate with white-balance."]
    at.selectbox(key="uc-method").set_value("ccm-de2000").run()
    assert [i.value for i in at.info if i.value.startswith("Mark")] == [
        "Mark at least 2 minerals to calibrate with ccm-de2000, or choose the method white-balance, which needs 1."]
    # one mineral marked: enough for white-balance, not for ccm-de2000
    name = at.session_state["current"]
    gt = at.session_state["images"][name]["gt"]
    codes, counts = np.unique(gt[gt != 255], return_counts=True)
    one = np.where(gt == codes[np.argmax(counts)], gt, np.uint8(255)).astype(np.uint8)
    at.radio(key="uc-marksrc").set_value("Upload a partial mask").run()
    at.file_uploader(key="uc-maskfile").set_value(("marks.png", _png(one), "image/png")).run()
    assert not at.exception, at.exception
    assert [i.value for i in at.info if i.value.startswith("Mark")] == [
        "Mark at least 2 minerals to calibrate with ccm-de2000 (1 marked so far), or choose the method "
        "white-balance, which needs 1."]
    assert at.button(key="uc-run").disabled
    at.selectbox(key="uc-method").set_value("white-balance").run()
    assert not [i for i in at.info if i.value.startswith("Mark")] and not at.button(key="uc-run").disabled
    at.button(key="uc-run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert name in at.session_state["calibrated"]


def test_the_correction_stays_shown_after_the_page_runs_again_and_can_be_downloaded(served_download):
    import json

    import numpy as np

    at = AppTest.from_file(str(APP), default_timeout=300)
    at.run()
    at.button(key="load-demo").click().run()
    at.switch_page("pages/upload_calibrate.py").run()
    at.radio(key="uc-marksrc").set_value("Part of this image's ground-truth mask").run()
    at.radio(key="uc-refsrc").set_value("session").run()
    at.button(key="uc-series").click().run()
    assert not at.exception and not at.error
    first = at.session_state["current"]

    def matrix_shown():
        return [d.value for d in at.dataframe if list(d.value.columns) == ["R", "G", "B"]]

    shown = matrix_shown()
    assert len(shown) == 1
    at.slider(key="uc-share").set_value(0.2).run()  # any other change runs the page again
    assert not at.exception
    again = matrix_shown()
    assert len(again) == 1 and np.allclose(again[0].values, shown[0].values)
    assert any(c.value.startswith("Method white-balance, fitted on ") and "applied to 3 image(s)" in c.value
               for c in at.caption)
    data, name = served_download(at, "Download the correction (JSON)")
    rec = json.loads(data)
    assert name == f"{first}_correction.json"
    assert rec["image"] == first and rec["fitted_on"] == first and len(rec["applied_to"]) == 3
    assert rec["method"] == "white-balance" and np.allclose(rec["matrix"], shown[0].values, atol=1e-6)
    # another image of the series shows the correction it was made with
    other = next(n for n in at.session_state["images"] if n != first)
    at.selectbox(key="uc-image").set_value(other).run()
    assert not at.exception
    assert len(matrix_shown()) == 1
    assert json.loads(served_download(at, "Download the correction (JSON)")[0])["image"] == other
    # a corrected version that this correction did not make (here: replaced) shows none
    at.session_state["calibrated"][other] = at.session_state["images"][other]["image"].copy()
    at.run()
    assert not matrix_shown() and "uc-dl-corr" not in [d.key for d in at.get("download_button")]


def test_a_photograph_called_total_is_added_under_another_name():
    """"total" names the rows of all images pooled in the statistics, so total.jpg is added as total-2."""
    import numpy as np

    img = np.random.default_rng(9).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("pages/upload_calibrate.py").run()
    at.file_uploader(key="uc-files").set_value([("total.jpg", _jpeg(img), "image/jpeg")]).run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    assert "total" not in at.session_state["images"] and "total-2" in at.session_state["images"]
    assert [s.value for s in at.success] == ["Added 1 image(s): total-2"]
    assert any(i.value.replace("\\", "") == "total.jpg is added as total-2: “total” names the rows of all images "
               "pooled in the statistics." for i in at.info)
    at.button(key="uc-add").click().run()  # the same file again is found under its new name
    assert [i.value for i in at.info if i.value.startswith("Already")] == [
        "Already in this session, kept with their results: total-2"]


def test_a_photograph_read_again_starts_afresh_on_annotate():
    """The same file added again with another bit depth replaces the earlier reading and what was done to it, the
    Annotate page's strokes too: they do not come back as an annotation of the new reading."""
    import io
    import os

    import numpy as np
    import tifffile

    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    raw = np.random.default_rng(4).integers(0, 4096, (64, 80, 3)).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, raw)
    at.file_uploader(key="uc-files").set_value([("cam12.tif", buf.getvalue(), "image/tiff")]).run()
    at.button(key="uc-add").click().run()
    at.switch_page("pages/annotate.py").run()
    strokes = np.full((64, 80), 255, np.uint8)
    strokes[30, :40] = 6
    at.file_uploader(key="annotate-scribble-upload").set_value([("strokes.png", _png(strokes), "image/png")]).run()
    assert not at.exception, at.exception
    assert (at.session_state["annotations"]["cam12"] == 6).any()
    at.switch_page("pages/upload_calibrate.py").run()
    at.selectbox(key="uc-white").set_value(4095).run()
    at.file_uploader(key="uc-files").set_value([("cam12.tif", buf.getvalue(), "image/tiff")]).run()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    assert list(at.session_state["images"]) == ["cam12"] and at.session_state["images"]["cam12"]["image"].max() > 16
    assert "cam12" not in at.session_state["annotations"] and "cam12" not in at.session_state["annotate_work"]
    at.switch_page("pages/annotate.py").run()
    assert not at.exception, at.exception
    assert "cam12" not in at.session_state["annotations"]
    assert any("Draw a stroke" in i.value for i in at.info)


def test_adding_files_says_which_one_is_being_read(monkeypatch):
    """Decoding a panorama takes tens of seconds: a progress bar names each file while it is read, and is gone
    when the files are in."""
    import numpy as np
    from streamlit.delta_generator import DeltaGenerator

    said = []
    progress = DeltaGenerator.progress

    def recording(self, value, text=None):
        said.append(text)
        return progress(self, value, text=text)

    monkeypatch.setattr(DeltaGenerator, "progress", recording)
    monkeypatch.setenv("ORELENS_AUTOLOAD_DEMO", "0")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("pages/upload_calibrate.py").run()
    photo = np.random.default_rng(2).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    at.file_uploader(key="uc-files").set_value([("pano-a.png", _png(photo), "image/png"),
                                                ("pano-b.png", _png(photo[::-1]), "image/png")])
    at.run()
    said.clear()
    at.button(key="uc-add").click().run()
    assert not at.exception, at.exception
    reading = [t.replace("\\", "") for t in said if t and t.startswith("Reading ")]
    assert reading == ["Reading pano-a.png (1 of 2)…", "Reading pano-b.png (2 of 2)…"], said
    assert list(at.session_state["images"]) == ["pano-a", "pano-b"]
    assert not at.get("progress")
