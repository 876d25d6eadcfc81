"""AppTest of the Annotate page: example strokes from the expert mask propagate into a stored mask."""
from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest


def _open_page():
    at = AppTest.from_file("../app.py", default_timeout=240)
    at.run()
    at.button[0].click().run()  # Load demo sample (first sidebar button)
    at.switch_page("pages/annotate.py").run()
    return at


def _tiny_model(folder, in_channels: int = 3):
    """An untrained small model (any answer will do: the page's plumbing is under test); more than 3 input
    channels makes it a PPL + compact-XPL model."""
    import torch

    from core.segmentation import create_model, save_model

    torch.manual_seed(0)
    net = create_model("unet", "resnet18", classes=5, in_channels=in_channels)
    config = {"architecture": "unet", "encoder": "resnet18", "in_channels": in_channels,
              "classes": [0, 1, 5, 6, 7], "scale": 0.25, "tile": 256,
              "normalization": {"mean": [0.5] * in_channels, "std": [0.25] * in_channels}}
    if in_channels > 3:
        config["xpl"] = {"encoding": "compact"}
    save_model(folder, net, config)


def _page_with_strokes(model_dir, iterations: int):
    """The Annotate page with example strokes, a chosen model folder and a fine-tuning length."""
    at = _open_page()
    at.session_state["model_dir"] = str(model_dir)
    at.button(key="annotate-example").click().run()
    at.slider(key="annotate-ft-iterations").set_value(iterations).run()
    return at


def test_annotate_page_propagates_example_strokes():
    at = _open_page()
    assert not at.exception
    assert at.selectbox(key="annotate-mineral").value == 1
    at.button(key="annotate-example").click().run()
    assert not at.exception, at.exception
    ann = at.session_state["annotations"]
    name = at.session_state["current"]
    gt = at.session_state["images"][name]["gt"]
    mask = ann[name]
    assert mask.shape == gt.shape
    lab = gt != 255
    assert (mask[lab] == gt[lab]).mean() > 0.8
    assert any(b.key == "annotate-dl-zip" for b in at.get("download_button"))
    at.button(key="annotate-clear").click().run()
    assert not at.exception


def test_annotate_page_finetune(tmp_path):
    _tiny_model(tmp_path / "tiny")
    at = _page_with_strokes(tmp_path / "missing", 2)
    at.button(key="annotate-finetune").click().run()
    assert not at.exception
    assert any("Model could not be loaded" in e.value for e in at.error)
    at.session_state["model_dir"] = str(tmp_path / "tiny")
    at.button(key="annotate-finetune").click().run()
    assert not at.exception, at.exception
    name = at.session_state["current"]
    # the job runs in the background: the page answers at once and shows its progress
    job = at.session_state["annotate_work"][name]["ft_job"]
    assert job is not None
    assert at.session_state["predictions"].get(name, {}).get("model") != "tiny-finetuned"
    job["thread"].join(timeout=240)
    assert job["done"] and job["error"] is None, job["error"]
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["annotate_work"][name]["ft_job"] is None
    assert at.session_state["predictions"][name]["model"] == "tiny-finetuned"
    assert any(b.key == "annotate-dl-model" for b in at.get("download_button"))
    # the tuned model segments the rest of the series: chosen for the session, not for other sessions
    at.button(key="annotate-use-model").click().run()
    assert not at.exception, at.exception
    assert at.session_state["model_dir"] == "session:tiny-finetuned"
    assert at.button(key="annotate-use-model").disabled
    assert at.sidebar.selectbox[1].value == "session:tiny-finetuned"
    assert any("not scored on held-out images" in c.value for c in at.sidebar.caption)
    at.switch_page("pages/segment.py").run()
    assert not at.exception, at.exception
    # the images segmented with the model before count as without a result of this one
    for n in at.session_state["images"]:
        if n != name:
            at.session_state["predictions"][n] = {**at.session_state["predictions"][name], "model": "tiny"}
    at.run()
    assert at.button(key="segment-all").label == "Segment all images without a current result of tiny-finetuned (2)"
    at.button(key="segment-all").click().run()
    assert not at.exception, at.exception
    preds = at.session_state["predictions"]
    assert len(preds) == 3 and all(p["model"] == "tiny-finetuned" for p in preds.values())
    other = AppTest.from_file("../app.py", default_timeout=240)
    other.run()
    assert not other.session_state["model_dir"].startswith("session:")
    assert not any(str(o).startswith("session:") for o in other.sidebar.selectbox[-1].options)


def test_annotate_page_finetune_resegments_with_the_segment_page_settings(tmp_path):
    import json

    _tiny_model(tmp_path / "tiny")
    cfg_path = tmp_path / "tiny" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # colour checks on, so that switching them off on the Segment page has something to switch off
    cfg["reference_colors"] = {"0": [60, 60, 60], "1": [190, 170, 70], "5": [170, 150, 120], "6": [200, 195, 160],
                               "7": [185, 175, 135]}
    cfg["auto_white_balance"] = {}
    cfg_path.write_text(json.dumps(cfg))
    at = _page_with_strokes(tmp_path / "tiny", 2)
    name = at.session_state["current"]
    marked = {int(c) for c in np.unique(at.session_state["annotations"][name]) if c != 255}
    at.switch_page("pages/segment.py").run()
    at.checkbox(key="segment-balance").uncheck().run()
    at.multiselect(key="segment-minerals").set_value([6]).run()
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    assert at.session_state["predictions"][name]["options"] == {"balance": False, "minerals": [0, 6],
                                                               "assemblage": True, "refine": None}
    at.switch_page("pages/annotate.py").run()
    at.button(key="annotate-finetune").click().run()
    job = at.session_state["annotate_work"][name]["ft_job"]
    job["thread"].join(timeout=240)
    assert job["done"] and job["error"] is None, job["error"]
    tuned, pred = job["result"]
    # the user's minerals, widened by the ones just marked; no automatic colour correction
    assert pred.assemblage.mode == "user"
    assert set(pred.assemblage.kept) == ({0, 6} | marked) & set(tuned.classes)
    assert pred.colour is None
    assert set(np.unique(pred.labels)) <= set(pred.assemblage.kept)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["predictions"][name]["options"]["minerals"] == [0, 6]


def test_annotate_page_finetune_can_be_stopped(tmp_path):
    _tiny_model(tmp_path / "tiny")
    at = _page_with_strokes(tmp_path / "tiny", 200)
    at.button(key="annotate-finetune").click().run()
    name = at.session_state["current"]
    job = at.session_state["annotate_work"][name]["ft_job"]
    job["stop"].set()
    job["thread"].join(timeout=120)
    assert job["done"]
    at.run()
    assert not at.exception, at.exception
    assert any(i.value == "Fine-tuning stopped before the end, as asked; the model is unchanged." for i in at.info)
    assert not any("stopped" in e.value for e in at.error)  # asked for: not shown as a failure
    assert at.session_state["predictions"].get(name, {}).get("model") != "tiny-finetuned"


def test_annotate_page_outlines_uncertain_regions_with_each_score():
    at = AppTest.from_file("../app.py", default_timeout=300)
    at.run()
    at.button[0].click().run()  # Load demo sample
    at.switch_page("pages/segment.py").run()
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    at.switch_page("pages/annotate.py").run()
    assert not at.exception, at.exception
    name = at.session_state["current"]
    shown = {}
    for score in ("margin", "region-entropy"):
        at.selectbox(key="annotate-score").set_value(score).run()
        assert not at.exception, at.exception
        assert any("Magenta outlines" in c.value for c in at.caption)
        regions = at.session_state["annotate_work"][name]["regions"]
        assert abs(regions.fraction - 0.10) < 0.01
        shown[score] = regions.mask
    assert (shown["margin"] != shown["region-entropy"]).any()


def test_annotate_page_finetunes_a_model_with_xpl_channels(tmp_path):
    """A PPL + XPL model is fine-tuned with the aligned series of the Register XPL page (SIMULATED shots)."""
    from core.registration import simulate_xpl_series, warp_to_reference

    _tiny_model(tmp_path / "xplm", in_channels=6)
    at = _page_with_strokes(tmp_path / "xplm", 2)
    name = at.session_state["current"]
    at.button(key="annotate-finetune").click().run()
    assert not at.exception, at.exception
    assert any("needs aligned XPL images" in e.value for e in at.error)
    assert at.session_state["annotate_work"][name].get("ft_job") is None
    # the Register XPL page leaves the series, already in the PPL frame, in the session
    img = at.session_state["images"][name]["image"]
    gt = at.session_state["images"][name]["gt"]
    sim = simulate_xpl_series(img, gt, n_shots=3, max_shift=10.0, seed=1)
    aligned = [warp_to_reference(x, A, img.shape[:2]) for x, A in zip(sim.xpl, sim.transforms)]
    at.session_state["xpl"][name] = {"aligned": aligned}
    at.button(key="annotate-finetune").click().run()
    assert not at.exception, at.exception
    job = at.session_state["annotate_work"][name]["ft_job"]
    job["thread"].join(timeout=240)
    assert job["done"] and job["error"] is None, job["error"]
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["predictions"][name]["model"] == "xplm-finetuned"


def test_annotate_page_finetune_keeps_the_annotation_it_was_trained_on(tmp_path):
    _tiny_model(tmp_path / "tiny")
    at = _open_page()
    at.session_state["model_dir"] = str(tmp_path / "tiny")
    at.switch_page("pages/segment.py").run()
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    at.switch_page("pages/annotate.py").run()
    assert at.radio(key="annotate-start").value == "model prediction"
    at.button(key="annotate-example").click().run()
    at.slider(key="annotate-ft-iterations").set_value(2).run()
    name = at.session_state["current"]
    trained = at.session_state["annotations"][name].copy()
    before_rec = at.session_state["predictions"][name]
    old = before_rec["labels"]
    at.button(key="annotate-finetune").click().run()
    job = at.session_state["annotate_work"][name]["ft_job"]
    job["thread"].join(timeout=240)
    assert job["done"] and job["error"] is None, job["error"]
    at.run()
    assert not at.exception, at.exception
    rec = at.session_state["predictions"][name]
    new = rec["labels"]
    assert new is not old
    # the fine-tuned result keeps the record the Segment page makes: colour check and the pixels' fingerprint
    assert rec["drift"] is not None and "colour" in rec and rec["input"] == before_rec["input"]
    # the strokes still build on the prediction they were drawn on: the annotation is the one trained on
    assert np.array_equal(at.session_state["annotations"][name], trained)
    assert any("before** fine-tuning" in i.value for i in at.info)
    # the agreement is measured against that annotation, for the new prediction and the old one
    lab = trained != 255
    text = next(m.value for m in at.markdown if "agreement with the annotation it was trained on" in m.value)
    assert f"trained on {(new[lab] == trained[lab]).mean():.3f}" in text
    assert f"the prediction before: {(old[lab] == trained[lab]).mean():.3f}" in text
    at.button(key="annotate-new-base").click().run()
    assert not at.exception, at.exception
    assert at.session_state["annotate_work"][name].get("base") is None
    assert not any("before** fine-tuning" in i.value for i in at.info)
    assert at.session_state["predictions"][name]["model"] == "tiny-finetuned"
    # a second fine-tune of the same model gets a name of its own: results are matched to models by name
    at.button(key="annotate-finetune").click().run()
    job = at.session_state["annotate_work"][name]["ft_job"]
    job["thread"].join(timeout=240)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["predictions"][name]["model"] == "tiny-finetuned-2"


def _drawn(at, key: str, objects: list[dict]) -> None:
    """What the browser's drawing canvas ``key`` reports after the user drew ``objects`` (Fabric.js paths)."""
    at.session_state[key] = {"drawing": {"raw": {"objects": objects}, "data": None}, "backgroundFit": None}


_STROKE = {"type": "path", "stroke": "#%02x%02x%02x" % (255, 0, 0), "strokeWidth": 12,
           "path": [["M", 100, 100], ["L", 200, 120]]}


def test_strokes_stay_with_their_image_and_survive_a_visit_to_another_page():
    from core.minerals import by_code

    assert "#%02x%02x%02x" % by_code(1).color == _STROKE["stroke"]  # a chalcopyrite stroke
    at = _open_page()
    first, second = list(at.session_state["images"])[:2]
    assert at.session_state["current"] == first
    _drawn(at, f"annotate-canvas-{first}-0", [_STROKE])
    at.run()
    assert not at.exception, at.exception
    mask = at.session_state["annotations"][first]
    assert (mask == 1).any()
    drawn = at.session_state["annotate_work"][first]["objects"]
    assert len(drawn) == 1
    # another page, and back: the canvas comes back with the stroke, and the annotation is still there
    at.switch_page("pages/segment.py").run()
    at.switch_page("pages/annotate.py").run()
    assert not at.exception, at.exception
    assert at.session_state["annotate_work"][first]["objects"] == drawn
    assert not any("Draw a stroke" in i.value for i in at.info)
    assert any(b.key == "annotate-dl-mask" for b in at.get("download_button"))
    assert np.array_equal(at.session_state["annotations"][first], mask)
    # another image: its canvas starts empty, the first image's stroke does not pass to it
    at.selectbox(key="annotate-image").set_value(second).run()
    assert not at.exception, at.exception
    assert at.session_state["annotate_work"][second]["objects"] == []
    assert second not in at.session_state["annotations"]
    assert any("Draw a stroke" in i.value for i in at.info)
    at.selectbox(key="annotate-image").set_value(first).run()
    assert at.session_state["annotate_work"][first]["objects"] == drawn


def _scribbles_png(shape, code: int) -> bytes:
    """A scribble mask (255 = no stroke) with one horizontal stroke of ``code``."""
    import io

    from PIL import Image

    m = np.full(shape, 255, np.uint8)
    m[shape[0] // 2, : shape[1] // 2] = code
    buf = io.BytesIO()
    Image.fromarray(m).save(buf, format="PNG")
    return buf.getvalue()


def test_annotate_page_redraws_an_image_colour_corrected_since_and_keeps_its_strokes():
    """Annotate works on the colour-corrected version as soon as there is one: the picture drawn on, the
    superpixels and the propagated mask are those of the new pixels, and the strokes stay."""
    import cv2

    at = _open_page()
    name = at.session_state["current"]
    image = at.session_state["images"][name]["image"]
    at.file_uploader(key="annotate-scribble-upload").set_value(
        [("strokes.png", _scribbles_png(image.shape[:2], 6), "image/png")]).run()
    assert not at.exception, at.exception
    w = at.session_state["annotate_work"][name]
    small, first = w["small"], w["superpixels"].key
    assert np.array_equal(small, cv2.resize(image, small.shape[1::-1], interpolation=cv2.INTER_AREA))
    assert (at.session_state["annotations"][name] == 6).any()
    # corrected on Upload & calibrate meanwhile (here: a quarter as bright, as a strong correction may make it)
    darker = (image // 4).astype(np.uint8)
    at.session_state["calibrated"][name] = darker
    at.run()
    assert not at.exception, at.exception
    w = at.session_state["annotate_work"][name]
    assert np.array_equal(w["small"], cv2.resize(darker, small.shape[1::-1], interpolation=cv2.INTER_AREA))
    assert w["upload"] is not None and (w["upload"] == 6).any()  # the strokes are still there
    from core.annotation import compute_superpixels

    assert w["superpixels"].key == compute_superpixels(darker).key != first
    assert (at.session_state["annotations"][name] == 6).any()


def test_a_saved_annotation_is_built_on_not_replaced():
    """Opened again from a saved session, an image's annotation is on the Annotate page to be corrected: it is
    shown and kept, a new stroke changes it only where it is drawn, and Clear strokes starts afresh."""
    at = _open_page()
    name = at.session_state["current"]
    H, W = at.session_state["images"][name]["image"].shape[:2]
    saved = np.full((H, W), 0, np.uint8)
    saved[: H // 2] = 6                                      # pyrite above, non-metallic below
    at.session_state["annotations"][name] = saved.copy()     # as opening a saved session leaves it
    at.session_state["annotate_work"].pop(name, None)
    at.run()
    assert not at.exception, at.exception
    assert any("saved annotation" in i.value for i in at.info)
    assert not any("Draw a stroke" in i.value for i in at.info)
    assert np.array_equal(at.session_state["annotations"][name], saved)
    # a chalcopyrite stroke in the lower half changes the annotation there, and leaves the rest as saved
    w = at.session_state["annotate_work"][name]
    scale = w["small"].shape[1] / W
    y = int(0.75 * H * scale)
    _drawn(at, f"annotate-canvas-{name}-{w['version']}",
           [{**_STROKE, "path": [["M", 10, y], ["L", 60, y]], "strokeWidth": 6}])
    at.run()
    assert not at.exception, at.exception
    now = at.session_state["annotations"][name]
    assert (now[H // 2:] == 1).any() and np.array_equal(now[: H // 2], saved[: H // 2])
    at.button(key="annotate-clear").click().run()
    assert any("Draw a stroke" in i.value for i in at.info)
    at.run()
    assert not any("saved annotation" in i.value for i in at.info)  # offered once, not again after Clear


def test_the_mineral_and_brush_chosen_stay_after_a_visit_to_another_page():
    at = _open_page()
    at.selectbox(key="annotate-mineral").set_value(6).run()
    at.slider(key="annotate-brush").set_value(30).run()
    at.switch_page("pages/segment.py").run()
    at.switch_page("pages/annotate.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="annotate-mineral").value == 6 and at.slider(key="annotate-brush").value == 30
