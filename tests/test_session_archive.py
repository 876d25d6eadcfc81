"""Saving a session's work to one file and opening it again: lossless, and damaged files are refused whole."""
from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ui.archive import FORMAT, describe, pack, unpack

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _session(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    gt = np.zeros((40, 50), np.uint8)
    gt[:, 25:] = 6
    gt[0, :] = 255
    ann = np.full((30, 20), 255, np.uint8)
    ann[5:9, 5:9] = 1
    probs = rng.random((3, 20, 25)).astype(np.float16)
    pred = {"labels": (gt == 6).astype(np.uint8) * 6, "probs": probs, "classes": [0, 1, 6], "scale": 0.5,
            "model": "default", "drift": np.float64(3.25), "colour": {"drift": np.float32(3.25), "applied": False},
            "minerals": "base-metal", "minerals_close": False,
            "options": {"balance": True, "minerals": None, "assemblage": True, "refine": None}, "input": "abc123"}
    xpl = {"token": "t0", "aligned": [rng.integers(0, 256, a.shape, dtype=np.uint8) for _ in range(2)],
           "names": ["x-00deg.png", "x-30deg.png"], "angles": [np.float64(0.5), 30.25],
           "rows": [{"XPL image": "x-00deg.png", "aligned": "yes", "inliers": np.int64(40), "problem": None,
                     "A": [[1.0, 0.0, 0.5], [0.0, 1.0, -0.25]]}],
           "maps": {"range": rng.integers(0, 256, (40, 50), dtype=np.uint8)}, "simulated": True,
           "options": {"model": "similarity", "refine": True}}
    return {"images": {"first": {"image": a, "gt": gt, "origin": "demo"},
                       "second one": {"image": b, "gt": None, "origin": "upload"}},
            "calibrated": {"second one": 255 - b}, "predictions": {"first": pred},
            "annotations": {"second one": ann}, "xpl": {"first": xpl}, "current": "second one"}


def test_round_trip_is_lossless():
    s = _session()
    back = unpack(pack(s))
    assert list(back["images"]) == ["first", "second one"] and back["current"] == "second one"
    for n, rec in s["images"].items():
        assert np.array_equal(back["images"][n]["image"], rec["image"])
        assert back["images"][n]["origin"] == rec["origin"]
    assert np.array_equal(back["images"]["first"]["gt"], s["images"]["first"]["gt"])
    assert back["images"]["second one"]["gt"] is None
    assert np.array_equal(back["calibrated"]["second one"], s["calibrated"]["second one"])
    assert np.array_equal(back["annotations"]["second one"], s["annotations"]["second one"])
    assert set(back["calibrated"]) == {"second one"} and set(back["predictions"]) == {"first"}
    p, q = s["predictions"]["first"], back["predictions"]["first"]
    assert np.array_equal(q["labels"], p["labels"]) and q["labels"].dtype == np.uint8
    assert q["probs"].dtype == np.float16 and np.array_equal(q["probs"], p["probs"])
    assert q["classes"] == [0, 1, 6] and q["drift"] == 3.25 and q["colour"] == {"drift": 3.25, "applied": False}
    assert q["options"] == p["options"] and q["input"] == "abc123" and q["model"] == "default"
    x, y = s["xpl"]["first"], back["xpl"]["first"]
    assert set(back["xpl"]) == {"first"} and y["token"] != x["token"]  # a fresh key for the page's caches
    assert len(y["aligned"]) == 2 and all(np.array_equal(u, v) for u, v in zip(x["aligned"], y["aligned"]))
    assert np.array_equal(y["maps"]["range"], x["maps"]["range"])
    assert y["names"] == x["names"] and y["angles"] == [0.5, 30.25] and y["simulated"] is True
    assert y["rows"] == [{"XPL image": "x-00deg.png", "aligned": "yes", "inliers": 40, "problem": None,
                          "A": [[1.0, 0.0, 0.5], [0.0, 1.0, -0.25]]}] and y["options"] == x["options"]


def _rewrite(data: bytes, change) -> bytes:
    """The archive ``data`` with its members passed through ``change(name, bytes) -> bytes | None`` (None drops)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n in src.namelist():
            b = change(n, src.read(n))
            if b is not None:
                z.writestr(n, b)
    return out.getvalue()


def _manifest(edit):
    def change(n, b):
        if n != "manifest.json":
            return b
        m = json.loads(b)
        edit(m)
        return json.dumps(m).encode()
    return change


def test_damaged_or_foreign_files_are_refused_with_a_reason():
    good = pack(_session())
    assert describe(good).endswith(": 2 image(s), 1 colour-corrected, 1 segmented, 1 annotated, "
                                   "1 with aligned XPL shots")
    with pytest.raises(ValueError, match="not a zip"):
        describe(b"PK but no")
    cases = [
        (b"not a zip at all", "not a zip"),
        (_rewrite(good, lambda n, b: None if n == "manifest.json" else b), "no manifest"),
        (_rewrite(good, lambda n, b: b"{broken" if n == "manifest.json" else b), "damaged"),
        (_rewrite(good, _manifest(lambda m: m.update(format="something-else"))), "another format"),
        (_rewrite(good, _manifest(lambda m: m.update(version=99))), "newer OreLens"),
        (_rewrite(good, lambda n, b: None if n == "gt/0.png" else b), "saved image first: the archive lacks gt/0.png"),
        (_rewrite(good, lambda n, b: b[:100] if n == "images/1.png" else b), "saved image second one"),
        (_rewrite(good, lambda n, b: b"junk" if n == "predictions/0.npz" else b), "segmentation is damaged"),
        (_rewrite(good, _manifest(lambda m: m["images"].append(dict(m["images"][0])))), "lists first twice"),
    ]
    # a segmentation that does not fit its photograph
    s = _session()
    s["predictions"]["first"]["labels"] = np.zeros((10, 10), np.uint8)
    cases.append((pack(s), "does not fit the photograph"))
    s = _session()
    s["predictions"]["first"]["classes"] = [0, 1]
    cases.append((pack(s), "probabilities do not fit"))
    s = _session()
    s["xpl"]["first"]["aligned"][1] = s["xpl"]["first"]["aligned"][1][:10]
    cases.append((pack(s), "aligned XPL shots do not fit"))
    cases.append((_rewrite(good, lambda n, b: None if n == "xpl/0/1.npz" else b), "lacks xpl/0/1.npz"))
    for data, reason in cases:
        with pytest.raises(ValueError, match=reason):
            unpack(data)
    with pytest.raises(ValueError, match="at most 1"):
        unpack(good, max_images=1)
    assert json.loads(zipfile.ZipFile(io.BytesIO(good)).read("manifest.json"))["format"] == FORMAT


def _upload_page():
    os.environ["ORELENS_AUTOLOAD_DEMO"] = "1"
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
    finally:
        os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
    assert not at.exception, at.exception
    return at


def test_a_saved_session_opens_in_a_new_one_with_its_work(monkeypatch):
    at = _upload_page()
    names = list(at.session_state["images"])
    assert len(names) == 3
    assert any(d.label == "Save this session's work" for d in at.get("download_button"))
    ann = np.full(at.session_state["images"][names[1]]["image"].shape[:2], 255, np.uint8)
    ann[10:20, 10:20] = 6
    at.session_state["annotations"][names[1]] = ann
    from ui.state import digest

    first = at.session_state["images"][names[0]]
    at.session_state["predictions"][names[0]] = {
        "labels": first["gt"].copy(), "probs": None, "classes": [0, 1, 2, 3, 4, 5, 6, 7, 8, 11], "scale": 0.5,
        "model": "default", "drift": 3.0, "colour": {"drift": 3.0, "applied": False}, "minerals": "",
        "minerals_close": False, "options": {"balance": True, "minerals": None, "assemblage": True, "refine": None},
        "input": digest(first["image"])}
    count = {"points": np.array([[1, 2], [30, 40]], np.int32), "calls": np.array([5, -1], np.int16), "pos": 1}
    at.session_state["pointcounts"][names[0]] = count
    at.session_state["current"] = names[1]
    snapshot = {k: at.session_state[k] for k in ("images", "calibrated", "predictions", "annotations", "xpl",
                                                 "pointcounts", "current")}
    data = pack(snapshot)

    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    fresh.run()  # demo autoload off: an empty session, as after a reload with ORELENS_AUTOLOAD_DEMO=0
    assert not fresh.session_state["images"]
    assert not any(d.label == "Save this session's work" for d in fresh.get("download_button"))
    # a file that is not a session is named at once, and cannot be opened
    fresh.file_uploader(key="uc-open-session").set_value([("broken.zip", data[: len(data) // 2], "application/zip")]).run()
    assert [e.value.replace("\\", "") for e in fresh.error] == [
        "broken.zip: not a saved OreLens session (not a zip file)."]
    assert fresh.button(key="uc-open-session-run").disabled
    # one whose manifest reads but whose contents are damaged: refused when opened, the session left as it was
    damaged = _rewrite(data, lambda n, b: None if n == "annotations/1.png" else b)
    fresh.file_uploader(key="uc-open-session").set_value([("damaged.zip", damaged, "application/zip")]).run()
    assert not fresh.error and any(c.value.startswith("Saved ") and "3 image(s), 1 segmented, 1 annotated" in c.value
                                   for c in fresh.caption), [c.value for c in fresh.caption]
    fresh.button(key="uc-open-session-run").click().run()
    assert not fresh.exception, fresh.exception
    assert any("lacks annotations/1.png" in e.value and "Nothing in this session was changed" in e.value
               for e in fresh.error), [e.value for e in fresh.error]
    assert not fresh.session_state["images"]
    fresh.file_uploader(key="uc-open-session").set_value([("orelens-session.zip", data, "application/zip")]).run()
    fresh.button(key="uc-open-session-run").click().run()
    assert not fresh.exception, fresh.exception
    assert list(fresh.session_state["images"]) == names
    assert fresh.session_state["current"] == names[1]
    assert np.array_equal(fresh.session_state["annotations"][names[1]], ann)
    for n in names:
        assert np.array_equal(fresh.session_state["images"][n]["image"], snapshot["images"][n]["image"])
        assert np.array_equal(fresh.session_state["images"][n]["gt"], snapshot["images"][n]["gt"])
    assert any(s.value.startswith("Opened the session saved") and "3 image(s), 1 segmentation(s), 1 annotation(s), "
               "1 point count(s)" in s.value
               for s in fresh.success), [s.value for s in fresh.success]
    back = fresh.session_state["pointcounts"][names[0]]
    assert np.array_equal(back["points"], count["points"]) and back["calls"].tolist() == [5, -1] and back["pos"] == 1
    # the reopened segmentation is shown as current (made from these very pixels) on the Segment page
    fresh.session_state["current"] = names[0]
    fresh.switch_page("pages/segment.py").run()
    assert not fresh.exception, fresh.exception
    assert not [w.value for w in fresh.warning if "made before" in w.value]
    assert any("Error map" in h.value for h in fresh.subheader)
    fresh.switch_page("pages/upload_calibrate.py").run()
    fresh.file_uploader(key="uc-open-session").set_value([("orelens-session.zip", data, "application/zip")]).run()
    # opened again: the same images are replaced, not added twice
    fresh.session_state["annotations"].pop(names[1])
    fresh.button(key="uc-open-session-run").click().run()
    assert list(fresh.session_state["images"]) == names
    assert np.array_equal(fresh.session_state["annotations"][names[1]], ann)
    # more images than a session may hold: refused, nothing changed
    monkeypatch.setattr("ui.state.MAX_IMAGES_PER_SESSION", 2)
    fresh.button(key="uc-open-session-run").click().run()
    assert any("at most 2" in e.value and "Nothing in this session was changed" in e.value for e in fresh.error)
    assert list(fresh.session_state["images"]) == names


def _tiny_session_model(name: str = "lab"):
    import torch

    from core.segmentation import SegmentationModel, create_model
    from core.segmentation.model import fuse_batchnorm

    torch.manual_seed(1)
    net = create_model("unet", "resnet18", classes=3, in_channels=3).eval()
    cfg = {"name": name, "architecture": "unet", "encoder": "resnet18", "in_channels": 3, "classes": [0, 1, 5],
           "scale": 1.0, "tile": 64, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    return SegmentationModel(net=net, config=cfg, device=torch.device("cpu"), fused=fuse_batchnorm(net, 3))


def test_the_session_models_are_saved_and_come_back_in_use(monkeypatch):
    import torch

    from core.segmentation.model import model_from_parts, model_parts
    from ui.state import restore

    model = _tiny_session_model()
    s = _session()
    s["session_models"] = {"session:lab": {"model": model, "note": "fine-tuned from default on first"}}
    s["model_dir"] = "session:lab"
    data = pack(s)
    assert describe(data).endswith("1 with aligned XPL shots, 1 model(s) of the session")
    out = unpack(data)
    assert out["model_in_use"] == "session:lab"
    back = out["session_models"]["session:lab"]
    assert back["note"] == "fine-tuned from default on first" and back["model"].name == "lab"
    # the network of its own download (fp16 weights), output for output
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model_from_parts(*model_parts(model), device="cpu").fused(x)
        assert torch.allclose(back["model"].fused(x), ref, atol=1e-5)
        assert torch.allclose(back["model"].fused(x), model.fused(x), atol=5e-2)
    # a session without own models saves none and selects none
    assert unpack(pack(_session()))["session_models"] == {} and unpack(pack(_session()))["model_in_use"] is None
    # damaged weights are refused whole, with the model's name
    bad = _rewrite(data, lambda n, b: b"junk" if n == "models/0/weights.pt" else b)
    with pytest.raises(ValueError, match="saved model lab: .*weights"):
        unpack(bad)
    # restore: the saved model joins the session's (at most three, the oldest going) and is chosen again
    state = {"images": {}, "calibrated": {}, "predictions": {}, "annotations": {}, "xpl": {}, "annotate_work": {},
             "current": None, "model_dir": "models/default",
             "session_models": {f"session:old{i}": {"model": None, "note": ""} for i in range(3)}}
    import streamlit as st

    fake = dict(state)
    monkeypatch.setattr(st, "session_state", fake)  # restore() reads and writes st.session_state only
    restore(out)
    monkeypatch.undo()
    assert list(fake["session_models"]) == ["session:old1", "session:old2", "session:lab"]
    assert fake["model_dir"] == "session:lab"


def test_the_images_samples_are_saved():
    s = _session()
    s["images"]["first"]["sample"] = "DH-12 41–42 m"
    back = unpack(pack(s))
    assert back["images"]["first"]["sample"] == "DH-12 41–42 m" and "sample" not in back["images"]["second one"]
    for bad in ("", "x" * 81, 12):
        def edit(m, bad=bad):
            m["images"][0]["sample"] = bad
        with pytest.raises(ValueError, match="its sample name is damaged"):
            unpack(_rewrite(pack(s), _manifest(edit)))


def test_the_point_counts_are_saved():
    s = _session()
    points = np.array([[5, 5], [5, 30], [20, 49], [39, 0]], np.int32)
    s["pointcounts"] = {"first": {"points": points, "calls": np.array([6, 255, -1, 0], np.int16), "pos": 2}}
    data = pack(s)
    assert describe(data).endswith("1 with aligned XPL shots, 1 with a point count")
    back = unpack(data)["pointcounts"]
    assert set(back) == {"first"} and back["first"]["pos"] == 2
    assert np.array_equal(back["first"]["points"], points) and back["first"]["points"].dtype == np.int32
    assert back["first"]["calls"].tolist() == [6, 255, -1, 0] and back["first"]["calls"].dtype == np.int16
    assert unpack(pack(_session()))["pointcounts"] == {}
    edits = [lambda c: c.update(calls=[6, 255, -1]), lambda c: c.update(pos=4), lambda c: c.update(calls=[6, 42, -1, 0]),
             lambda c: c["points"].__setitem__(2, [40, 0]), lambda c: c.pop("points"), lambda c: c.update(points="x")]
    for change in edits:
        def edit(m, change=change):
            change(m["images"][0]["pointcount"])
        with pytest.raises(ValueError, match="saved image first: its point count is damaged"):
            unpack(_rewrite(data, _manifest(edit)))


def test_a_results_overview_is_made_again_not_read():
    s = _session()
    s["predictions"]["first"]["overview"] = {"unsure": 0.5, "minerals": [[6, 50.0]]}
    data = pack(s)
    assert "overview" not in unpack(data)["predictions"]["first"]

    def edit(m):
        m["images"][0]["prediction"]["overview"] = "damaged"
    assert "overview" not in unpack(_rewrite(data, _manifest(edit)))["predictions"]["first"]


def test_the_file_fingerprint_of_an_image_is_saved():
    s = _session()
    s["images"]["first"]["source"] = "0123456789abcdef"
    back = unpack(pack(s))
    assert back["images"]["first"]["source"] == "0123456789abcdef" and "source" not in back["images"]["second one"]

    def edit(m):
        m["images"][0]["source"] = "not a digest"
    with pytest.raises(ValueError, match="its file fingerprint is damaged"):
        unpack(_rewrite(pack(s), _manifest(edit)))


def _flip_in_member(data: bytes, member: str, at: int = 200) -> bytes:
    """``data`` with one byte of ``member``'s stored bytes changed (as a bad disk or a cut download does)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    b = bytearray(data)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    b[start + min(at, info.compress_size - 1)] ^= 0xFF
    return bytes(b)


def test_an_archive_damaged_on_disk_is_refused_with_a_reason():
    good = pack(_session())
    # a changed byte fails the member's checksum: refused as damaged, never an internal error
    with pytest.raises(ValueError, match="saved image second one: images/1.png in the archive is damaged"):
        unpack(_flip_in_member(good, "images/1.png"))
    with pytest.raises(ValueError, match="manifest.json in the archive is damaged"):
        describe(_flip_in_member(good, "manifest.json", at=5))
    with pytest.raises(ValueError, match="saved image first: predictions/0.npz in the archive is damaged"):
        unpack(_flip_in_member(good, "predictions/0.npz"))
    # members emptied: the arrays cannot be read
    with pytest.raises(ValueError, match="saved image first: its segmentation is damaged"):
        unpack(_rewrite(good, lambda n, b: b"" if n == "predictions/0.npz" else b))
    with pytest.raises(ValueError, match="saved image first: xpl/0/0.npz is damaged"):
        unpack(_rewrite(good, lambda n, b: b"" if n == "xpl/0/0.npz" else b))


def test_a_damaged_manifest_field_is_refused_or_ignored_not_an_internal_error():
    good = pack(_session())
    with pytest.raises(ValueError, match="manifest.json is damaged"):
        unpack(_rewrite(good, _manifest(lambda m: m.update(version="1"))))
    with pytest.raises(ValueError, match="an image without a name"):
        unpack(_rewrite(good, _manifest(lambda m: m["images"][0].update(name=["first"]))))
    # the current image is only a preference: a damaged one falls back to the first image
    back = unpack(_rewrite(good, _manifest(lambda m: m.update(current=["second one"]))))
    assert back["current"] == "first" and list(back["images"]) == ["first", "second one"]
