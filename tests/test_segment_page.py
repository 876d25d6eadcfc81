"""Segment page end to end under AppTest, and the segment / evaluate commands."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.segmentation import create_model, save_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("models") / "tiny"
    torch.manual_seed(0)
    net = create_model("pspnet", classes=4).eval()
    save_model(d, net, {"architecture": "pspnet", "encoder": "resnet18", "in_channels": 3, "classes": [0, 1, 5, 6],
                        "scale": 0.25, "tile": 256, "overlap": 64,
                        "normalization": {"mean": [0.4] * 3, "std": [0.2] * 3},
                        "reference_colors": {"0": [47, 45, 42], "1": [188, 171, 126], "5": [175, 158, 141],
                                             "6": [179, 165, 145]}})
    return d


def _variant(tiny_model, tmp_path_factory, name, **config):
    """A copy of the tiny model with ``config`` entries added."""
    import shutil

    d = tmp_path_factory.mktemp("models") / name
    shutil.copytree(tiny_model, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **config}))
    return d


def _segment_page(model_dir):
    """The app on the Segment page with the demo sample loaded and ``model_dir`` as the model."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["model_dir"] = str(model_dir)
    at.run()
    return at.switch_page("pages/segment.py").run()


@pytest.fixture
def demo_autoload():
    """New sessions start with the demo sample loaded, as the app does by default; an empty start again after."""
    os.environ["ORELENS_AUTOLOAD_DEMO"] = "1"
    yield
    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"


def test_segment_page_runs_model_and_offers_downloads(tiny_model, demo_autoload):
    at = _segment_page(tiny_model)
    assert not at.exception
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    name = at.session_state["current"]
    pred = at.session_state["predictions"][name]
    img = at.session_state["images"][name]["image"]
    assert pred["labels"].shape == img.shape[:2]
    assert set(np.unique(pred["labels"])) <= {0, 1, 5, 6}
    assert any("Error map" in s.value for s in at.subheader)  # the demo image has an expert mask
    assert len(at.dataframe) == 2  # the area table and the IoU per mineral against the expert mask
    from core.segmentation import ConfusionMatrix

    cm = ConfusionMatrix()
    cm.update(at.session_state["images"][name]["gt"], pred["labels"])
    ref = cm.scores()
    assert [e.label for e in at.expander if e.label.startswith("IoU per mineral")] == [
        f"IoU per mineral against the expert mask (mean {ref.miou:.3f})"]
    shown = at.dataframe[1].value
    assert dict(zip(shown["code"], shown["IoU"])) == {c: round(v, 4) for c, v in ref.iou.items()}
    from core.calibration import colour_drift
    from core.segmentation import load_model

    drift, _ = colour_drift(img, pred["labels"], load_model(tiny_model, device="cpu").reference_colors())
    assert pred["drift"] == pytest.approx(drift)
    shown = [x.value for x in list(at.warning) + list(at.caption) if "Colour check" in x.value]
    assert len(shown) == 1 and f"ΔE00 {drift:.1f}" in shown[0]


def test_segment_all_takes_the_images_colour_corrected_since_they_were_segmented(tiny_model, demo_autoload):
    """A series calibrated after it was segmented can be segmented again in one go: its results were made from
    the pixels before the correction."""
    from ui.state import made_from_other_pixels

    at = _segment_page(tiny_model)
    names = list(at.session_state["images"])
    at.button(key="segment-all").click().run()
    assert not at.exception, at.exception
    assert set(at.session_state["predictions"]) == set(names)
    assert at.button(key="segment-all").label.endswith("(0)") and at.button(key="segment-all").disabled
    before = {n: at.session_state["predictions"][n]["input"] for n in names}
    fixed = names[1]
    at.session_state["calibrated"][fixed] = (at.session_state["images"][fixed]["image"] // 2).astype(np.uint8)
    at.run()
    assert at.button(key="segment-all").label.endswith("(1)") and not at.button(key="segment-all").disabled
    at.button(key="segment-all").click().run()
    assert not at.exception, at.exception
    preds = at.session_state["predictions"]
    assert preds[fixed]["input"] != before[fixed]
    assert not made_from_other_pixels(preds[fixed], at.session_state["calibrated"][fixed])
    assert all(preds[n]["input"] == before[n] for n in names if n != fixed)  # the others are left as they were
    assert at.button(key="segment-all").label.endswith("(0)")


def test_segment_all_counts_what_is_left_and_names_the_images_that_failed(tiny_model, demo_autoload):
    at = _segment_page(tiny_model)
    names = list(at.session_state["images"])
    at.button(key="segment-run").click().run()
    assert at.button(key="segment-all").label.endswith(f"({len(names) - 1})")
    # one image that cannot be segmented (pixels no reader would have given the page)
    at.session_state["images"][names[-1]]["image"] = np.zeros((40, 40, 3), np.float32)
    at.button(key="segment-all").click().run()
    assert not at.exception, at.exception
    assert set(at.session_state["predictions"]) == set(names[:-1])
    assert at.button(key="segment-all").label.endswith("(1)")  # drawn after the run, not before it
    assert [w.value for w in at.warning if w.value.startswith("Segmented")] == [
        f"Segmented {len(names) - 2} of {len(names) - 1} image(s)."]
    assert any(e.value.startswith(f"{names[-1]}: Segmentation failed") for e in at.error), [e.value for e in at.error]
    # the results side by side, the least sure first
    from core.annotation.uncertainty import unsure_share

    preds = at.session_state["predictions"]
    table = next(d.value for d in at.dataframe if "unsure %" in d.value.columns)
    assert set(table["image"]) == set(names[:-1])
    want = sorted(((100 * unsure_share(preds[n]["probs"]), n) for n in names[:-1]), reverse=True)
    assert list(table["unsure %"]) == pytest.approx([u for u, _ in want])
    assert any(d.key == "segment-dl-overview" for d in at.get("download_button"))
    assert table["point count agrees at"].isna().all()  # nothing counted yet
    from core.stats.pointcount import grid_points

    first = names[0]
    pts = grid_points(preds[first]["labels"].shape, 10)
    calls = preds[first]["labels"][pts[:, 0], pts[:, 1]].astype(np.int16)
    calls[:2] = -1  # two points not called
    at.session_state["pointcounts"][first] = {"points": pts, "calls": calls, "pos": 0}
    at.run()
    table = next(d.value for d in at.dataframe if "unsure %" in d.value.columns)
    assert table.set_index("image")["point count agrees at"][first] == f"100.0 % of {len(pts) - 2} points"
    assert [preds[n]["overview"]["unsure"] for n in names[:-1]] == pytest.approx(
        [unsure_share(preds[n]["probs"]) for n in names[:-1]])  # kept with each result
    # every result in one download
    dl = [d.label for d in at.get("download_button") if d.label.startswith("Download all")]
    assert len(dl) == 1 and dl[0].startswith(f"Download all {len(names) - 1} masks"), dl
    at.run()  # the messages stay while the user stays on the page (it may run again by itself)
    assert [w.value for w in at.warning if w.value.startswith("Segmented")]
    at.switch_page("pages/statistics.py").run()
    at.switch_page("pages/segment.py").run()  # and are gone once the user has been elsewhere
    assert not [w for w in at.warning if w.value.startswith("Segmented")]


def test_a_result_made_before_a_colour_correction_says_so(tiny_model, demo_autoload):
    at = _segment_page(tiny_model)
    at.button(key="segment-run").click().run()
    stale = [w for w in at.warning if "before the image's colours were last corrected" in w.value]
    assert not stale
    name = at.session_state["current"]
    img = at.session_state["images"][name]["image"]
    at.session_state["calibrated"][name] = (img * 0.9).astype(np.uint8)   # corrected after segmenting
    at.run()
    assert [w for w in at.warning if "before the image's colours were last corrected" in w.value]
    at.switch_page("pages/statistics.py").run()            # the Statistics page's list of masks says so too
    listed = {r["image"]: r["mask"] for r in at.dataframe[0].value.to_dict("records")}
    assert listed[name] == "segmentation (made before the last colour correction)"
    at.switch_page("pages/segment.py").run()
    at.button(key="segment-run").click().run()
    assert not [w for w in at.warning if "before the image's colours were last corrected" in w.value]


@pytest.fixture(scope="module")
def balancing_model(tiny_model, tmp_path_factory):
    """The tiny model told to white-balance every image from all its pixels."""
    return _variant(tiny_model, tmp_path_factory, "balancing",
                    auto_white_balance={"threshold": 0.0, "min_confidence": 0.01})


def test_segment_page_reports_the_automatic_white_balance(balancing_model, demo_autoload):
    at = _segment_page(balancing_model)
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    pred = at.session_state["predictions"][at.session_state["current"]]
    assert pred["colour"]["applied"] and len(pred["colour"]["gains"]) == 3
    assert any("white-balanced from its surest pixels" in x.value for x in at.info)
    # switched off on the page: the network sees the photograph as it is
    at.checkbox(key="segment-balance").uncheck().run()
    at.button(key="segment-run").click().run()
    pred = at.session_state["predictions"][at.session_state["current"]]
    assert not pred["colour"]["applied"]
    assert not any("white-balanced" in x.value for x in at.info)
    # an image calibrated from marks is never corrected automatically, even with the box ticked
    at.checkbox(key="segment-balance").check().run()
    name = at.session_state["current"]
    at.session_state["calibrated"][name] = at.session_state["images"][name]["image"].copy()
    at.run()
    assert any("calibrated from marks" in c.value for c in at.caption)
    at.button(key="segment-run").click().run()
    pred = at.session_state["predictions"][name]
    assert not pred["colour"]["applied"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_segment_and_evaluate_commands(tiny_model, tmp_path, demo_items):
    images = [str(it.image) for it in demo_items[:2]]
    r = _cli("segment", *images, "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--device", "cpu",
             "--json", str(tmp_path / "seg.json"), "--pixel-size", "0.069", "--overlay")
    assert r.returncode == 0, r.stderr
    from core.io import overlay, read_image, read_mask, read_pixel_size

    for it in demo_items[:2]:
        m = read_mask(tmp_path / "out" / f"{it.stem}.png")
        img = read_image(it.image)
        assert m.shape == img.shape[:2]
        # the mask records the pixel size, for `stats`; the overlay has a scale bar in its lower right corner
        assert read_pixel_size(tmp_path / "out" / f"{it.stem}.png") == 0.069
        ov = read_image(tmp_path / "out" / f"{it.stem}_overlay.jpg").astype(int)
        diff = np.abs(ov - overlay(img, m, 0.5)).max(axis=2) > 60
        h, w = m.shape
        assert diff[int(h * 0.9):, int(w * 0.6):].sum() > 1000 and diff[: h // 2].sum() < 50
    seg = json.loads((tmp_path / "seg.json").read_text())
    assert {v["pixel_size_um"] for v in seg["images"].values()} == {0.069}
    assert all(0.0 <= v["unsure"] <= 1.0 for v in seg["images"].values()) and "% unsure" in r.stdout
    assert set(json.loads((tmp_path / "seg.json").read_text())["images"]) == {it.stem for it in demo_items[:2]}
    assert all(v["colour"] is None for v in json.loads((tmp_path / "seg.json").read_text())["images"].values())
    r = _cli("evaluate", "--images", str(ROOT / "samples/imgs/demo"), "--masks", str(ROOT / "samples/masks/demo"),
             "--model", str(tiny_model), "--json", str(tmp_path / "ev.json"))
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["n_images"] == 3 and 0 <= ev["miou"] <= 1 and 0 <= ev["pixel_accuracy"] <= 1
    assert set(ev["iou"]) >= {"0"}
    # the demo masks hold minerals the tiny model (0, 1, 5, 6) does not know: said, and scored apart
    unknown = sorted(int(c) for c in ev["iou"] if int(c) not in (0, 1, 5, 6))
    assert unknown and ev["not_in_model"] == unknown and all(ev["iou"][str(c)] == 0 for c in unknown)
    own = [v for c, v in ev["iou"].items() if int(c) in (0, 1, 5, 6)]
    assert ev["miou_model_classes"] == pytest.approx(sum(own) / len(own))
    assert "was not trained to recognise" in r.stdout


def test_segment_command_takes_folders_and_keeps_going_past_a_bad_photograph(tiny_model, tmp_path, demo_items):
    import shutil

    folder = tmp_path / "section"
    folder.mkdir()
    for it in demo_items[:2]:
        shutil.copy(it.image, folder / it.image.name)
    (folder / "broken.jpg").write_bytes(b"not a photograph")
    (folder / "notes.txt").write_text("field notes")      # not an image: not taken
    r = _cli("segment", str(folder), "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--device", "cpu",
             "--json", str(tmp_path / "seg.json"))
    assert r.returncode == 2
    assert "skipped: broken.jpg: not a readable image" in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        f"error: 1 of 3 images could not be segmented (named above); the masks of the other 2 are in {tmp_path / 'out'}")
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == sorted(f"{it.stem}.png" for it in demo_items[:2])
    rep = json.loads((tmp_path / "seg.json").read_text())
    assert set(rep["images"]) == {it.stem for it in demo_items[:2]} and set(rep["failed"]) == {"broken"}
    # two photographs whose masks would overwrite each other are refused before any work
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(demo_items[0].image, other / demo_items[0].image.name)
    r = _cli("segment", str(folder / demo_items[0].image.name), str(other), "--out", str(tmp_path / "o2"),
             "--model", str(tiny_model), "--device", "cpu")
    assert r.returncode == 2 and f"would both be written as {demo_items[0].stem}.png" in r.stderr
    assert not (tmp_path / "o2").exists()
    (tmp_path / "empty").mkdir()
    r = _cli("segment", str(tmp_path / "empty"), "--out", str(tmp_path / "o3"), "--model", str(tiny_model))
    assert r.returncode == 2 and "the folder holds no images" in r.stderr


def test_segment_command_reads_12_bit_camera_data_with_its_white_level(tiny_model, tmp_path, demo_items):
    import tifffile

    from core.io import encode_png, read_image, read_mask

    rgb = read_image(demo_items[0].image)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "eight.png").write_bytes(encode_png(rgb))
    tifffile.imwrite(tmp_path / "in" / "twelve.tif", np.rint(rgb * (4095 / 255)).astype(np.uint16))
    r = _cli("segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
             "--device", "cpu", "--white-level", "4095")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(read_mask(tmp_path / "out" / "twelve.png"), read_mask(tmp_path / "out" / "eight.png"))


def test_segment_command_balances_unless_told_not_to(balancing_model, tmp_path, demo_items):
    image = str(demo_items[0].image)
    for flag, applied in (([], True), (["--no-auto-balance"], None)):
        r = _cli("segment", image, "--out", str(tmp_path / "o"), "--model", str(balancing_model), "--device", "cpu",
                 "--json", str(tmp_path / "s.json"), *flag)
        assert r.returncode == 0, r.stderr
        colour = json.loads((tmp_path / "s.json").read_text())["images"][demo_items[0].stem]["colour"]
        if applied:
            assert colour["applied"] and "white-balanced automatically" in r.stdout
        else:
            assert colour is None and "white-balanced" not in r.stdout


def test_cli_errors_are_one_sentence(tmp_path):
    r = _cli("segment", str(tmp_path / "missing.jpg"), "--out", str(tmp_path), "--model", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a model folder" in r.stderr
    r = _cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--arch", "resnett")
    assert r.returncode == 2 and "valid names" in r.stderr
    r = _cli("--help")
    for cmd in ("segment", "evaluate", "train", "calibrate", "stitch", "register", "annotate", "uncertainty", "stats"):
        assert cmd in r.stdout


@pytest.fixture(scope="module")
def assemblage_model(tiny_model, tmp_path_factory):
    """The tiny model with a training record saying pyrrhotite (5) and pyrite (6) never share a photograph."""
    return _variant(tiny_model, tmp_path_factory, "assemblage",
                    assemblage={"exclusive": [[5, 6]], "min_share": 1e-4, "n_images": 2})


def test_segment_command_keeps_minerals_apart_or_as_named(assemblage_model, tmp_path, demo_items):
    from core.io import read_mask

    image = str(demo_items[0].image)
    runs = {"auto": [], "named": ["--minerals", "po"], "free": ["--no-assemblage"]}
    found = {}
    for key, flag in runs.items():
        r = _cli("segment", image, "--out", str(tmp_path / key), "--model", str(assemblage_model), "--device", "cpu",
                 "--json", str(tmp_path / f"{key}.json"), *flag)
        assert r.returncode == 0, r.stderr
        codes = set(np.unique(read_mask(tmp_path / key / f"{demo_items[0].stem}.png")).tolist())
        found[key] = (codes, json.loads((tmp_path / f"{key}.json").read_text())["images"][demo_items[0].stem])
    codes, rep = found["auto"]
    assert rep["minerals"]["mode"] == "auto" and len(rep["minerals"]["removed"]) == 1
    assert not {5, 6} <= codes and not codes & set(rep["minerals"]["removed"])
    codes, rep = found["named"]
    assert codes <= {0, 5} and rep["minerals"] == {"mode": "user", "kept": [0, 5], "removed": [1, 6],
                                                   "removed_share": rep["minerals"]["removed_share"]}
    assert found["free"][1]["minerals"] is None
    r = _cli("segment", image, "--out", str(tmp_path / "x"), "--model", str(assemblage_model), "--minerals", "gl")
    assert r.returncode == 2 and "does not know galena" in r.stderr and "Traceback" not in r.stderr
    r = _cli("segment", image, "--out", str(tmp_path / "x"), "--model", str(assemblage_model), "--refine", "sharp")
    assert r.returncode == 2 and "valid methods: guided, crf, none" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_segment_page_segments_with_the_users_minerals(assemblage_model, demo_autoload):
    at = _segment_page(assemblage_model)
    assert not at.checkbox(key="segment-assemblage").disabled
    at.multiselect(key="segment-minerals").set_value([6]).run()
    assert at.checkbox(key="segment-assemblage").disabled
    assert at.selectbox(key="segment-refine").value == "none"  # the tiny model's config has no refinement
    at.selectbox(key="segment-refine").set_value("crf").run()
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    pred = at.session_state["predictions"][at.session_state["current"]]
    assert pred["options"]["refine"] == "crf"
    assert set(np.unique(pred["labels"])) <= {0, 6}
    assert pred["probs"].shape[0] == 4 and float(pred["probs"][[1, 2]].max()) == 0
    # the same restriction goes to every image of Segment all: the page says so, and so does each result
    assert any("applies the minerals chosen above" in c.value for c in at.caption)
    at.button(key="segment-all").click().run()
    assert not at.exception, at.exception
    warn = [w.value for w in at.warning if "Segmented 2 of 2" in w.value]
    assert warn and "Only these minerals were allowed" in warn[0] and "pyrite" in warn[0], warn
    table = next(d.value for d in at.dataframe if "to look at" in d.value.columns)
    assert len(table) == 3 and all("minerals restricted by hand to py" in t for t in table["to look at"])


def test_masks_zip_holds_every_mask_and_one_area_table():
    import io
    import zipfile

    import pandas as pd

    from core.io import read_mask
    from ui.widgets import masks_zip

    a = np.zeros((10, 10), np.uint8)
    a[:, :4] = 1
    b = np.full((9, 9), 6, np.uint8)
    b[0, :9] = 255
    z = zipfile.ZipFile(io.BytesIO(masks_zip({"a": a, "b": b})))
    assert sorted(z.namelist()) == ["areas.csv", "masks/a.png", "masks/b.png"]
    assert np.array_equal(read_mask(z.read("masks/a.png")), a)
    assert np.array_equal(read_mask(z.read("masks/b.png")), b)
    t = pd.read_csv(io.BytesIO(z.read("areas.csv")))
    assert t[["image", "code", "pixels"]].values.tolist() == [["a", 0, 60], ["a", 1, 40], ["b", 6, 72]]
    assert t.loc[1, "area %"] == pytest.approx(40.0) and t.loc[2, "area %"] == pytest.approx(7200 / 81)


def test_a_model_archive_opened_on_the_page_segments_this_session_only(tiny_model, demo_autoload):
    import io
    import zipfile

    at = _segment_page(tiny_model)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in ("config.json", "weights.pt"):
            z.write(tiny_model / f, f"lab-model/{f}")
    up = next(u for u in at.file_uploader if "Model archive" in u.label)
    up.set_value(("lab.zip", buf.getvalue(), "application/zip")).run()
    at.button(key="segment-model-open").click().run()
    assert not at.exception, at.exception
    assert at.session_state["model_dir"] == "session:lab-model"
    assert any("lab-model is now this session's model" in s.value for s in at.success)
    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    assert at.session_state["predictions"][at.session_state["current"]]["model"] == "lab-model"
    # a file that is not a model: said, and the session's model stays
    up = next(u for u in at.file_uploader if "Model archive" in u.label)
    up.set_value(("notes.zip", b"hello", "application/zip")).run()
    at.button(key="segment-model-open").click().run()
    assert any(e.value.startswith("notes") and "not a model archive (not a zip file)" in e.value for e in at.error)
    assert at.session_state["model_dir"] == "session:lab-model"


def test_point_count_checks_the_segmentation(tiny_model, demo_autoload):
    from core.stats.pointcount import CANNOT_TELL, NOT_CALLED, check, grid_points, points_csv, wilson_interval

    at = _segment_page(tiny_model)
    at.button(key="segment-run").click().run()
    name = at.session_state["current"]
    labels = at.session_state["predictions"][name]["labels"]
    at.number_input(key="pc-n").set_value(20).run()
    at.checkbox(key="pc-random").uncheck().run()
    at.button(key="pc-start").click().run()
    assert not at.exception, at.exception
    rec = at.session_state["pointcounts"][name]
    points = grid_points(labels.shape, 20)
    assert np.array_equal(rec["points"], points) and rec["pos"] == 0
    assert (rec["calls"] == NOT_CALLED).all()
    # the first three points called as the model has them, the fourth as another class, the fifth cannot tell
    model_at = [int(labels[r, c]) for r, c in points[:5]]
    other = next(c for c in (0, 1, 5, 6) if c != model_at[3])
    for code in model_at[:3] + [other]:
        at.button(key=f"pc-call-{code}").click().run()
    at.button(key="pc-cannot").click().run()
    assert not at.exception, at.exception
    rec = at.session_state["pointcounts"][name]
    assert rec["calls"][:5].tolist() == model_at[:3] + [other, CANNOT_TELL] and rec["pos"] == 5
    assert (rec["calls"][5:] == NOT_CALLED).all()
    lo, hi = wilson_interval(3, 4)
    assert any(f"The segmentation agrees with the count at **75.0 %** of the 4 counted points (95 % interval "
               f"{lo * 100:.1f}–{hi * 100:.1f} %)" in m.value for m in at.markdown)
    # the demo image has an expert mask: the calls are compared with it too (a practical's answer sheet)
    from core.stats.pointcount import agreement_sentence

    gt = at.session_state["images"][name]["gt"]
    expert = agreement_sentence(check(points, rec["calls"], gt), what="the expert mask", bold="**")
    assert expert.startswith("The expert mask agrees") and any(m.value == expert for m in at.markdown)
    table = at.dataframe[-1].value
    ref = check(points, rec["calls"], labels)
    assert list(table["mineral"]) == [m["mineral"] for m in ref["minerals"]]
    assert list(table["points"]) == [m["points"] for m in ref["minerals"]] and sum(table["points"]) == 4
    assert list(table["area % (segmentation)"]) == pytest.approx([m["mask_percent"] for m in ref["minerals"]])
    assert {d.label for d in at.get("download_button")} >= {"Download the count (CSV of points and calls)",
                                                            "Download the figures (CSV)"}
    # back to the fourth point and change its call: it now agrees; the count moves on to point 6
    at.button(key="pc-back").click().run()
    at.button(key="pc-back").click().run()
    assert at.session_state["pointcounts"][name]["pos"] == 3
    at.button(key=f"pc-call-{model_at[3]}").click().run()
    rec = at.session_state["pointcounts"][name]
    assert rec["calls"][3] == model_at[3] and rec["pos"] == 5
    assert any("agrees with the count at **100.0 %** of the 4 counted points" in m.value for m in at.markdown)
    # the calls become strokes on Annotate, and the superpixels spread them over the grains
    at.button(key="pc-to-annotate").click().run()
    assert any("4 calls are strokes on the Annotate page now" in x.value for x in at.success)
    strokes = at.session_state["annotate_work"][name]["upload"]
    assert [int(strokes[r, c]) for r, c in points[:5]] == model_at[:4] + [255]
    at.switch_page("pages/annotate.py").run()
    assert not at.exception, at.exception
    mask = at.session_state["annotations"][name]
    assert [int(mask[r, c]) for r, c in points[:4]] == model_at[:4]
    at.switch_page("pages/segment.py").run()
    # a new grid replaces a count only once the user says so
    assert at.button(key="pc-start").disabled
    at.checkbox(key="pc-replace").check().run()
    at.number_input(key="pc-n").set_value(12).run()
    at.button(key="pc-start").click().run()
    assert len(at.session_state["pointcounts"][name]["calls"]) == len(grid_points(labels.shape, 12))
    # a count downloaded before goes on where it was left
    csv = points_csv(rec["points"], rec["calls"], labels)
    at.file_uploader(key="pc-file").set_value([("count.csv", csv.encode(), "text/csv")]).run()
    at.button(key="pc-open").click().run()
    again = at.session_state["pointcounts"][name]
    assert np.array_equal(again["points"], rec["points"]) and np.array_equal(again["calls"], rec["calls"])
    assert again["pos"] == 5
    at.file_uploader(key="pc-file").set_value([("bad.csv", b"x,y,call\n1,1,unobtainium\n", "text/csv")]).run()
    assert not any(b.key == "pc-open" for b in at.button)  # named at once, and nothing to open
    assert any(e.value.startswith("bad") and "csv: line 2: 'unobtainium' is not a mineral" in e.value
               for e in at.error), [e.value for e in at.error]
    assert np.array_equal(at.session_state["pointcounts"][name]["calls"], rec["calls"])  # the count is kept


def test_point_count_before_segmenting(tiny_model, demo_autoload):
    """A count needs no segmentation; once there is one, the same calls check it."""
    from core.stats.pointcount import check

    at = _segment_page(tiny_model)
    name = at.session_state["current"]
    assert name not in at.session_state["predictions"]
    assert any(h.value == "Point counting" for h in at.subheader)
    at.number_input(key="pc-n").set_value(10).run()
    at.button(key="pc-start").click().run()
    for code in (0, 1, 5):
        at.button(key=f"pc-call-{code}").click().run()
    assert not at.exception, at.exception
    assert any("3 points counted, 0 cannot tell" in c.value for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table.columns) == ["mineral", "points", "area % (count)", "95 % interval"]
    assert list(table["points"]) == [1, 1, 1]
    at.button(key="segment-run").click().run()
    rec = at.session_state["pointcounts"][name]
    assert rec["calls"][:3].tolist() == [0, 1, 5]  # the count survives the segmentation
    assert any(h.value == "Check by point counting" for h in at.subheader)
    ref = check(rec["points"], rec["calls"], at.session_state["predictions"][name]["labels"])
    assert any(f"at **{ref['agreement'] * 100:.1f} %** of the 3 counted points" in m.value for m in at.markdown)


def test_an_expert_mask_uploaded_for_an_own_photograph_gives_the_error_map(tiny_model, demo_autoload):
    from core.io import encode_png

    at = _segment_page(tiny_model)
    name = at.session_state["current"]
    gt = at.session_state["images"][name]["gt"]
    at.session_state["images"][name]["gt"] = None      # a photograph of the lab's own, without a mask
    at.button(key="segment-run").click().run()
    assert not any("Error map" in s.value for s in at.subheader)
    key = f"segment-gt-upload-{name}"
    at.file_uploader(key=key).set_value([("ref.png", encode_png(gt[:50, :50]), "image/png")]).run()
    assert not at.exception and any("match" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["images"][name]["gt"] is None
    at.file_uploader(key=key).set_value([("ref.png", encode_png(np.full_like(gt, 255)), "image/png")]).run()
    assert any("no labelled pixel" in e.value for e in at.error)
    at.file_uploader(key=key).set_value([("ref.png", encode_png(gt), "image/png")]).run()
    assert not at.exception, at.exception
    assert np.array_equal(at.session_state["images"][name]["gt"], gt)
    assert any("Error map" in s.value for s in at.subheader)
    labels = at.session_state["predictions"][name]["labels"]
    lab = gt != 255
    acc = float((labels[lab] == gt[lab]).mean())
    assert any(f"Pixel accuracy {acc:.3f}" in c.value for c in at.caption)


def test_a_result_says_when_the_settings_changed_since(tiny_model, demo_autoload):
    at = _segment_page(tiny_model)
    at.button(key="segment-run").click().run()
    assert not any("other settings" in i.value for i in at.info)
    at.selectbox(key="segment-refine").set_value("crf").run()
    shown = [i.value for i in at.info if "other settings" in i.value]
    assert len(shown) == 1 and "edge refinement: none" in shown[0], shown
    at.button(key="segment-run").click().run()
    assert not any("other settings" in i.value for i in at.info)


def test_what_follows_the_buttons_keeps_its_place_after_a_segmentation(tiny_model, demo_autoload):
    """The progress bar leaves no element of its own behind: were the page's elements after the buttons to move
    by one in the next run, the browser would close an expander opened there (the expert mask's, whose error
    message then cannot be seen)."""
    at = _segment_page(tiny_model)

    def places():
        return [i for i, e in at.main.children.items() if getattr(e, "type", "") == "expander"]

    at.button(key="segment-run").click().run()
    assert not at.exception, at.exception
    after_click = places()
    assert "Replace the expert mask of this image" in [e.label for e in at.expander]
    at.run()
    assert places() == after_click
