"""Statistics page: session masks and uploaded masks give the same numbers as the engine, with downloads."""
from __future__ import annotations

import io
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _page():
    os.environ["ORELENS_AUTOLOAD_DEMO"] = "0"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/statistics.py").run()
    assert not at.exception, at.exception
    at.button(key="load-demo").click().run()
    assert not at.exception, at.exception
    return at


def _downloads(at) -> dict:
    return {d.label: d for d in at.get("download_button")}


def test_session_expert_masks_end_to_end():
    from core.io import list_dataset, read_mask
    from core.stats import Options, measure, summarize

    at = _page()
    assert any("stage-micrometer" in i.value for i in at.info)
    at.selectbox(key="stats-preset").set_value("20×").run()
    assert abs(at.number_input(key="stats-ps-20×").value - 3.45 / 20) < 1e-9
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    assert not len(at.error), [e.value for e in at.error]
    res = at.session_state["statistics"]["result"]
    assert set(res["summary"]["images"]) == {"demo-05", "demo-a14", "demo-a55"}
    # same numbers as the engine on the expert masks
    masks = {f"demo-{it.stem}": read_mask(it.mask) for it in list_dataset(ROOT / "samples", "demo")}
    ref = summarize({n: measure(m, pixel_size=3.45 / 20) for n, m in masks.items()}, options=Options(),
                    samples={"demo-05": "copper-nickel ore", "demo-a14": "base-metal ore",
                             "demo-a55": "base-metal ore"})  # the demo's two ores (samples/demo_samples.csv)
    assert res["summary"]["total"]["area_fraction"] == ref["total"]["area_fraction"]
    assert {c: g["count"] for c, g in res["summary"]["total"]["grains"].items()} == \
        {c: g["count"] for c, g in ref["total"]["grains"].items()}
    # the pooled area % with its 95 % interval from the spread of the three images
    total = next(d.value for d in at.dataframe if "± area % (95 %)" in d.value.columns)
    for code, ci in ref["total"]["area_fraction_ci95"].items():
        shown = total[total["code"] == int(code)]["± area % (95 %)"].iloc[0]
        assert shown == pytest.approx(100 * ci)
    assert any("95 % interval" in c.value for c in at.caption)
    labels = _downloads(at)
    assert {"Report (HTML)", "Tables (CSV, zip)", "Tables (XLSX)", "Statistics (JSON)"} <= set(labels)
    assert json.loads(res["json"]) == json.loads(json.dumps(ref))
    # the report and exports the page builds on request
    from core.stats.export import csv_zip
    from core.stats.report import build_report

    assert "grains.csv" in zipfile.ZipFile(io.BytesIO(csv_zip(res["tables"]))).namelist()
    html = build_report(res["summary"], res["tables"], options=Options(), thumbnails=res["thumbs"])
    assert "± area % (95 %)" in html and "2 degrees of freedom" in html
    assert "<html" in html and "Plotly" in html and "data:image/png;base64," in html and "<script src" not in html
    # the views switch without recomputing
    at.selectbox(key="stats-scope-grains").set_value("demo-a14").run()
    assert at.selectbox(key="stats-scope-lib").value == "demo-a14"  # one scope for every tab
    at.radio(key="stats-weight").set_value("number").run()
    at.toggle(key="stats-bg").set_value(False).run()
    assert not at.exception, at.exception
    # the calculated assay: the engine's grades, shown in percent; a new gangue density is a changed setting
    assay = [d.value for d in at.dataframe if "wt % of the sample" in d.value.columns]
    assert len(assay) == 1
    shown = {r["element"]: r["wt % of the sample"] for r in assay[0].to_dict("records")}
    assert shown and all(abs(v - 100 * ref["total"]["element_grade"][el]) < 1e-9 for el, v in shown.items())
    per = [e for e in at.expander if e.label == "Grades per image"]
    assert len(per) == 1
    cu = ref["images"]["demo-a14"]["element_grade"]["Cu"]
    shown = [d.value for d in at.dataframe if "Cu" in d.value.columns and "demo-a14" in d.value.index]
    assert len(shown) == 1 and abs(shown[0].loc["demo-a14", "Cu"] - round(100 * cu, 4)) < 1e-9
    at.number_input(key="stats-gangue").set_value(3.0).run()
    assert any("changed" in w.value for w in at.warning)
    at.button(key="stats-run").click().run()
    cu = at.session_state["statistics"]["result"]["summary"]["total"]["element_grade"]["Cu"]
    assert cu < ref["total"]["element_grade"]["Cu"]
    # a changed setting marks the results as stale
    at.selectbox(key="stats-border").set_value("keep").run()
    assert any("changed" in w.value for w in at.warning)


def test_uploaded_masks_pair_with_images_and_bad_ones_are_refused():
    from core.io import encode_png, list_dataset, read_mask

    at = _page()
    item = list_dataset(ROOT / "samples", "demo")[1]
    good = read_mask(item.mask)
    at.file_uploader(key="stats-uploads").set_value([(f"{item.stem}.png", encode_png(good), "image/png")]).run()
    assert not at.exception, at.exception
    assert not len(at.error), [e.value for e in at.error]
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    res = at.session_state["statistics"]["result"]
    assert list(res["summary"]["images"]) == [f"demo-{item.stem}"]
    assert res["thumbs"][f"demo-{item.stem}"]["image"] is not None
    counts = np.bincount(good.ravel(), minlength=256)
    lab = counts[:15].sum()
    af = res["summary"]["total"]["area_fraction"]
    assert all(abs(af[str(c)] - counts[c] / lab) < 1e-12 for c in range(15) if counts[c])

    # a mask of the wrong size for its image, and one with unknown codes: st.error, no traceback
    bad = good.copy()
    bad[:10, :10] = 77
    at.file_uploader(key="stats-uploads").set_value([(f"{item.stem}.png", encode_png(good[:100, :100]), "image/png")]).run()
    assert not at.exception and len(at.error) == 1 and "match" in at.error[0].value
    at.file_uploader(key="stats-uploads").set_value([("x.png", encode_png(bad), "image/png")]).run()
    assert not at.exception and len(at.error) == 1 and "unknown class codes" in at.error[0].value
    # masks on their own: no size check
    at.checkbox(key="stats-standalone").check().run()
    small = np.zeros((60, 80), np.uint8)
    small[10:30, 10:30] = 6
    at.file_uploader(key="stats-uploads").set_value([("small.png", encode_png(small), "image/png")]).run()
    assert not len(at.error), [e.value for e in at.error]
    at.button(key="stats-run").click().run()
    res = at.session_state["statistics"]["result"]
    assert res["summary"]["total"]["area_fraction"]["6"] == 400 / 4800


def test_samples_are_compared():
    """The demo comes in the samples of its two ores; one is renamed: the page pools each as the engine does,
    shows them side by side, keeps the names with the images, and says when they changed."""
    from core.io import list_dataset, read_mask
    from core.stats import Options, measure, summarize

    at = _page()
    at.selectbox(key="stats-preset").set_value("20×").run()
    assert any(c.value == "2 samples: copper-nickel ore (1 image); base-metal ore (2 images)" for c in at.caption)
    at.multiselect(key="stats-sample-pick").set_value(["demo-05"]).run()
    at.text_input(key="stats-sample-name").set_value("copper-nickel").run()
    at.button(key="stats-sample-set").click().run()
    assert not at.exception, at.exception
    assert any("1 image(s) put in sample copper-nickel" in s.value for s in at.success)
    assert any(c.value == "2 samples: copper-nickel (1 image); base-metal ore (2 images)" for c in at.caption)
    images = at.session_state["images"]
    assert images["demo-05"]["sample"] == "copper-nickel" and images["demo-a14"]["sample"] == "base-metal ore"
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    res = at.session_state["statistics"]["result"]
    samples = {"demo-05": "copper-nickel", "demo-a14": "base-metal ore", "demo-a55": "base-metal ore"}
    assert res["samples"] == samples
    masks = {f"demo-{it.stem}": read_mask(it.mask) for it in list_dataset(ROOT / "samples", "demo")}
    ref = summarize({n: measure(m, pixel_size=3.45 / 20) for n, m in masks.items()}, options=Options(),
                    samples=samples)
    assert json.loads(res["json"]) == json.loads(json.dumps(ref))
    assert list(ref["samples"]) == ["copper-nickel", "base-metal ore"]
    assert "Samples compared" in [t.label for t in at.tabs]
    side = next(d.value for d in at.dataframe if "images" in d.value.columns and "ccp" in d.value.columns)
    assert list(side.index) == ["copper-nickel", "base-metal ore"] and list(side["images"]) == [1, 2]
    ccp = 100 * ref["samples"]["base-metal ore"]["area_fraction"]["1"]
    half = 100 * ref["samples"]["base-metal ore"]["area_fraction_ci95"]["1"]
    assert side.loc["base-metal ore", "ccp"] == f"{ccp:.3g} ± {half:.0f}" and half > 10  # two images: t = 12.7
    # one mineral's grain sizes, sample by sample
    at.selectbox(key="stats-sample-mineral").set_value(1).run()
    at.radio(key="stats-sample-weight").set_value("number").run()
    assert not at.exception, at.exception
    from core.stats.figures import sample_size_figure

    fig = sample_size_figure(ref, 1, weight="number")
    assert [t.name.split(" (")[0] for t in fig.data] == ["copper-nickel", "base-metal ore"]
    assert fig.data[1].y[-1] == pytest.approx(100.0)
    # a sample as the scope of the grain sizes and associations
    at.selectbox(key="stats-scope-assoc").set_value("sample: base-metal ore").run()
    assert at.selectbox(key="stats-scope-grains").value == "sample: base-metal ore"
    assert not at.exception, at.exception
    from core.stats.report import build_report

    html = build_report(res["summary"], res["tables"], options=Options(), thumbnails=res["thumbs"])
    assert "Samples compared (2)" in html
    # another grouping marks the results stale
    at.multiselect(key="stats-sample-pick").set_value(["demo-a55"]).run()
    at.text_input(key="stats-sample-name").set_value("copper-nickel").run()
    at.button(key="stats-sample-set").click().run()
    assert any("changed since these results" in w.value for w in at.warning)
    # how the grains occur, with the share of boundary that encloses a grain set under Method options
    assert any(m.value == "#### How the minerals occur" for m in at.markdown)
    at.number_input(key="stats-enclosed").set_value(60).run()
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    res = at.session_state["statistics"]["result"]
    assert res["options"]["enclosed_share"] == 0.6
    ref = summarize({n: measure(m, pixel_size=3.45 / 20) for n, m in masks.items()},
                    options=Options(enclosed=0.6), samples=res["samples"])
    assert json.loads(res["json"])["total"]["occurrence"] == json.loads(json.dumps(ref["total"]["occurrence"]))
    shown = next(d.value for d in at.dataframe if "occurs" in d.value.columns)
    py = ref["samples"]["base-metal ore"]["occurrence"]["6"]["hosts"][0]  # the scope chosen above
    row = shown[shown["mineral"] == "py"].iloc[0]
    assert row["grains"] == py["grains"] and row["% of its area"] == pytest.approx(round(100 * py["share"], 2))
    # liberation of the scope's particles
    assert "Liberation" in [t.label for t in at.tabs]
    lib = next(d.value for d in at.dataframe if "≥ 90 %" in d.value.columns)
    want = ref["samples"]["base-metal ore"]["liberation"]["1"]["at_least"]["90"]
    assert lib[lib["mineral"] == "ccp"].iloc[0]["≥ 90 %"] == pytest.approx(100 * want, abs=0.006)
    # samples named after the images: demo-05, demo-a14 and demo-a55 are all of sample "demo"
    at.button(key="stats-sample-names").click().run()
    assert not at.exception, at.exception
    assert {n: r["sample"] for n, r in at.session_state["images"].items()} == {
        "demo-05": "demo", "demo-a14": "demo", "demo-a55": "demo"}
    assert not any(" samples: " in c.value[:12] for c in at.caption)  # one sample: nothing to compare
    at.button(key="stats-run").click().run()  # the scope chosen was a sample that is no more
    assert not at.exception, at.exception
    assert "samples" not in at.session_state["statistics"]["result"]["summary"]
    assert at.selectbox(key="stats-scope-lib").value == "total"


def test_point_counts_go_into_the_report():
    from core.stats.pointcount import check, grid_points

    at = _page()
    gt = at.session_state["images"]["demo-05"]["gt"]
    points = grid_points(gt.shape, 30)
    calls = gt[points[:, 0], points[:, 1]].astype(np.int16)
    calls[:3] = 1  # three points called chalcopyrite whatever the mask says
    at.session_state["pointcounts"]["demo-05"] = {"points": points, "calls": calls, "pos": 0}
    others = {}
    for n in ("demo-a14", "demo-a55"):  # the demo's base-metal ore: two counted fields of one sample
        g = at.session_state["images"][n]["gt"]
        p = grid_points(g.shape, 20)
        others[n] = {"points": p, "calls": g[p[:, 0], p[:, 1]].astype(np.int16), "pos": 0}
        at.session_state["pointcounts"][n] = others[n]
    at.selectbox(key="stats-preset").set_value("20×").run()
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    res = at.session_state["statistics"]["result"]
    assert set(res["checks"]) == {"demo-05", "demo-a14", "demo-a55"}
    assert res["checks"]["demo-05"] == check(points, calls, gt)  # against the mask analysed: the expert mask
    assert any("The report includes the point counts of 3 images" in c.value for c in at.caption)
    from core.stats.pointcount import agreement_sentence, pool_checks

    pooled = pool_checks(res["checks"][n] for n in ("demo-a14", "demo-a55"))
    assert pooled["called"] == sum(int((o["calls"] != 255).sum()) for o in others.values())
    shown = [m.value for m in at.markdown]
    for title, chk in (("sample base-metal ore (2 images)", pooled),
                       ("all 3 images", pool_checks(res["checks"].values()))):
        line = f"**Pooled: {title}**: " + agreement_sentence(chk, what="the mask analysed")
        assert any(v.replace("\\", "") == line for v in shown), (line, shown)
    assert any(m.value.startswith("**demo") and "The mask analysed agrees with the count at" in m.value
               for m in at.markdown)
    shown = next(d.value for d in at.dataframe if "area % (count)" in d.value.columns)
    assert list(shown["points"]) == [m["points"] for m in res["checks"]["demo-05"]["minerals"]]
    from core.stats import Options
    from core.stats.report import build_report

    html = build_report(res["summary"], res["tables"], options=Options.from_dict(res["options"]), checks=res["checks"])
    assert "Checked by point counting (3 image(s))" in html and "<h3>demo-05</h3>" in html
    assert "<h3>Pooled: sample base-metal ore (2 images)</h3>" in html and "<h3>Pooled: all 3 images</h3>" in html
    # and the exports: one row per mineral of every count and pool
    from core.stats.export import csv_zip, export_tables
    from core.stats.pointcount import checks_table

    tabs = export_tables(res["tables"], checks=res["checks"], samples=res["samples"], quality=res["quality"])
    assert set(tabs) - set(res["tables"]) == {"pointcount"}  # no segmentation analysed here: expert masks only
    pc = tabs["pointcount"]
    assert list(pc["image"].unique()) == ["demo-05", "demo-a14", "demo-a55", "pooled: sample base-metal ore (2 images)",
                                         "pooled: all 3 images"]
    assert list(pc[pc["image"] == "demo-05"]["points"]) == [m["points"] for m in res["checks"]["demo-05"]["minerals"]]
    assert pc[pc["image"] == "pooled: all 3 images"]["agreement"].iloc[0] == pytest.approx(
        pool_checks(res["checks"].values())["agreement"])
    assert checks_table(res["checks"]).equals(pc[~pc["image"].str.startswith("pooled: sample")].reset_index(drop=True))
    assert "pointcount.csv" in zipfile.ZipFile(io.BytesIO(csv_zip(tabs))).namelist()


def test_the_segmentations_analysed_are_listed_with_how_sure_the_model_was():
    from core.annotation.uncertainty import unsure_share
    from core.stats import Options
    from core.stats.report import build_report
    from ui.state import digest

    at = _page()
    rec = at.session_state["images"]["demo-a14"]
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(60, 80)).transpose(2, 0, 1).astype(np.float16)
    at.session_state["predictions"]["demo-a14"] = {
        "labels": rec["gt"].copy(), "probs": probs, "classes": [0, 1, 6, 8], "scale": 0.05, "model": "default",
        "drift": 7.5, "colour": {"drift": 7.5, "applied": False}, "minerals": "", "minerals_close": True,
        "options": {}, "input": digest(rec["image"])}
    at.selectbox(key="stats-preset").set_value("20×").run()
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    res = at.session_state["statistics"]["result"]
    assert set(res["quality"]) == {"demo-a14"}  # the other two are analysed from their expert masks
    q = res["quality"]["demo-a14"]
    assert q["model"] == "default" and q["unsure"] == pytest.approx(unsure_share(probs)) and q["drift"] == 7.5
    assert q["notes"] == ["colours unlike the training images", "close call between the ores"]
    shown = next(d.value for d in at.dataframe if "unsure %" in d.value.columns)
    assert list(shown["image"]) == ["demo-a14"] and shown["unsure %"][0] == pytest.approx(100 * q["unsure"])
    html = build_report(res["summary"], res["tables"], options=Options.from_dict(res["options"]),
                        quality=res["quality"])
    assert "<h2>The segmentations analysed</h2>" in html and "close call between the ores" in html
    from core.stats.export import export_tables

    seg = export_tables(res["tables"], quality=res["quality"])["segmentations"]
    assert seg.to_dict("records") == [{"image": "demo-a14", "model": "default", "unsure %": 100 * q["unsure"],
                                       "ΔE00": 7.5, "to look at": "colours unlike the training images; close call "
                                                                  "between the ores"}]


def test_a_mask_changed_under_the_same_name_marks_the_results_stale():
    at = _page()
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    assert not any("changed" in w.value for w in at.warning)
    # the same image's mask, made again (here: annotated) after the figures were computed
    gt = at.session_state["images"]["demo-a14"]["gt"]
    redone = gt.copy()
    redone[:200, :200] = 6
    at.session_state["annotations"]["demo-a14"] = redone
    at.run()
    warn = [w.value for w in at.warning if "changed since" in w.value]
    assert len(warn) == 1 and "The mask of demo-a14 changed" in warn[0], warn
    at.button(key="stats-run").click().run()
    assert not any("changed since" in w.value for w in at.warning)
    # an unchanged copy of a mask is not a change
    at.session_state["annotations"]["demo-a14"] = redone.copy()
    at.run()
    assert not any("changed since" in w.value for w in at.warning)


def test_a_mask_without_any_labelled_pixel_is_refused():
    from core.io import encode_png

    at = _page()
    at.checkbox(key="stats-standalone").check().run()
    blank = np.full((60, 80), 255, np.uint8)
    at.file_uploader(key="stats-uploads").set_value([("blank.png", encode_png(blank), "image/png")]).run()
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    assert any("no labelled pixel" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["statistics"].get("result") is None


def test_an_uploaded_mask_called_total_is_not_mixed_with_the_pooled_rows():
    """"total" names the rows of all masks pooled: an uploaded total.png is analysed as total-2."""
    from core.io import encode_png

    at = _page()
    at.checkbox(key="stats-standalone").check().run()
    m = np.zeros((20, 50), np.uint8)
    m[:, :10] = 1
    two = np.zeros((20, 50), np.uint8)
    two[:, :20] = 1
    at.file_uploader(key="stats-uploads").set_value([("total.png", encode_png(m), "image/png"),
                                                    ("two.png", encode_png(two), "image/png")]).run()
    at.button(key="stats-run").click().run()
    assert not at.exception, at.exception
    summary = at.session_state["statistics"]["result"]["summary"]
    assert list(summary["images"]) == ["total-2", "two"]
    assert summary["images"]["total-2"]["area_fraction"]["1"] == pytest.approx(0.2)
    assert summary["total"]["area_fraction"]["1"] == pytest.approx(0.3)
