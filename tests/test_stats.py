"""Statistics against known answers: masks of discs, rings and squares of known size and layout."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from core import io as cio
from core.stats import (Options, association, boundary_length, class_index, combine, d_values, measure, size_classes,
                        summarize, tables)

PS = 0.5  # µm per pixel


def lattice_disc(r: int) -> int:
    """Number of pixel centres within distance r of a pixel centre (Gauss circle count), computed analytically."""
    return sum(2 * math.isqrt(r * r - dy * dy) + 1 for dy in range(-r, r + 1))


def draw_disc(mask, cy, cx, r, code, r_in=None):
    yy, xx = np.ogrid[:mask.shape[0], :mask.shape[1]]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    sel = d2 <= r * r
    if r_in is not None:
        sel &= d2 > r_in * r_in
    assert not (mask[sel] != 0).any(), "test layout overlaps"
    mask[sel] = code


@pytest.fixture(scope="module")
def layout():
    """A 600x900 mask with known grains; returns (mask, truth)."""
    m = np.zeros((600, 900), np.uint8)
    truth = {"pixels": {}, "count": {}, "ecd": {}}

    def add(code, pixels, ecd=None, grains=1):
        truth["pixels"][code] = truth["pixels"].get(code, 0) + pixels
        truth["count"][code] = truth["count"].get(code, 0) + grains
        if ecd is not None:
            truth["ecd"].setdefault(code, []).append(ecd)

    # pyrite (6): five discs apart, r = 10..30 px
    for i, r in enumerate((10, 15, 20, 25, 30)):
        draw_disc(m, 80, 60 + 120 * i, r, 6)
        add(6, lattice_disc(r), 2 * r * PS)
    # chalcopyrite (1) disc touching a sphalerite (8) disc: two grains of two minerals
    draw_disc(m, 220, 100, 20, 1)
    draw_disc(m, 220, 141, 20, 8)
    add(1, lattice_disc(20), 40 * PS)
    add(8, lattice_disc(20), 40 * PS)
    # two pyrite discs touching each other: one grain of pyrite
    draw_disc(m, 220, 250, 20, 6)
    draw_disc(m, 220, 291, 20, 6)
    add(6, 2 * lattice_disc(20), 2 * math.sqrt(2 * 400) * PS)
    # magnetite (3) ring R=40, r=25 filled with a pentlandite (7) disc r=25
    draw_disc(m, 250, 500, 40, 3, r_in=25)
    draw_disc(m, 250, 500, 25, 7)
    add(3, lattice_disc(40) - lattice_disc(25), 2 * math.sqrt(40 ** 2 - 25 ** 2) * PS)
    add(7, lattice_disc(25), 50 * PS)
    # magnetite ring R=30, r=15 around a background hole
    draw_disc(m, 250, 700, 30, 3, r_in=15)
    add(3, lattice_disc(30) - lattice_disc(15), 2 * math.sqrt(30 ** 2 - 15 ** 2) * PS)
    # bornite (4): two 10x10 squares touching diagonally at one corner: one grain under 8-connectivity
    m[400:410, 100:110] = 4
    m[410:420, 110:120] = 4
    add(4, 200, 2 * math.sqrt(200 / math.pi) * PS)
    # galena (2) squares apart
    m[400:420, 300:320] = 2
    m[400:416, 400:416] = 2
    add(2, 400, 2 * math.sqrt(400 / math.pi) * PS)
    add(2, 256, 2 * math.sqrt(256 / math.pi) * PS)
    # cut by the border: a chalcopyrite half disc at the top edge and a pyrite square in the bottom-right corner
    draw_disc(m, 0, 850, 20, 1)
    add(1, sum(2 * math.isqrt(400 - dy * dy) + 1 for dy in range(0, 21)), None)
    m[590:, 880:] = 6
    add(6, 200, None)
    # unlabelled patch (not a class, excluded from fractions)
    m[500:520, 600:640] = 255
    truth["pixels"][0] = m.size - sum(truth["pixels"].values()) - 800
    truth["border"] = {1: 1, 6: 1}
    return m, truth


@pytest.fixture(scope="module")
def measured(layout):
    return measure(layout[0], pixel_size=PS)


def test_area_fractions_exact(layout, measured):
    m, truth = layout
    s = summarize({"a": measured})
    labelled = sum(truth["pixels"].values())
    minerals = labelled - truth["pixels"][0]
    af = s["images"]["a"]["area_fraction"]
    afn = s["images"]["a"]["area_fraction_no_background"]
    assert set(af) == {str(c) for c in truth["pixels"]}
    for c, n in truth["pixels"].items():
        assert abs(af[str(c)] - n / labelled) < 1e-6
        assert s["images"]["a"]["pixels"][str(c)] == n
        assert s["images"]["a"]["area_um2"][str(c)] == pytest.approx(n * PS * PS, rel=1e-12)
        if c:
            assert abs(afn[str(c)] - n / minerals) < 1e-6
    assert s["images"]["a"]["pixels"]["255"] == 800
    assert abs(sum(af.values()) - 1) < 1e-12


def test_grain_counts_areas_and_ecd(layout, measured):
    m, truth = layout
    g = measured.grains
    for code, n in truth["count"].items():
        assert int((g.code == code).sum()) == n, code
    # areas are exact pixel counts, not contour areas: a 20x20 square is 400 px
    assert sorted(g.pixels[g.code == 2].tolist()) == [256, 400]
    assert sorted(g.pixels[g.code == 4].tolist()) == [200]
    s = summarize({"a": measured}, options=Options(border="exclude"))
    for code, ecds in truth["ecd"].items():
        got = s["total"]["grains"][str(code)]["ecd_um_mean"]
        assert got == pytest.approx(np.mean(ecds), rel=0.02), code
        assert s["total"]["grains"][str(code)]["count"] == len(ecds)
    # every grain's ECD equals 2 sqrt(A/pi) with A = pixels * ps^2
    assert np.allclose(g.ecd_um, 2 * np.sqrt(g.pixels * PS * PS / np.pi))


def test_border_flag_and_exclusion(layout, measured):
    g = measured.grains
    flagged = {int(c): int(n) for c, n in zip(*np.unique(g.code[g.border], return_counts=True))}
    assert flagged == layout[1]["border"]
    keep = summarize({"a": measured}, options=Options(border="keep"))["total"]["grains"]
    excl = summarize({"a": measured}, options=Options(border="exclude"))["total"]["grains"]
    assert keep["1"]["count"] == excl["1"]["count"] + 1
    assert keep["6"]["count"] == excl["6"]["count"] + 1
    assert keep["3"]["count"] == excl["3"]["count"] == 2


def test_perimeter_and_shape_of_discs(measured):
    g = measured.grains
    sel = (g.code == 6) & ~g.border & (g.bbox[:, 2] == g.bbox[:, 3])  # the five separate pyrite discs
    assert sel.sum() == 5
    r = np.sqrt(g.pixels[sel] / np.pi)
    per = g.perimeter_um("crofton")[sel]
    # crossings through pixel centres see a digital disc of radius r as 2r + 1 px wide: +1/(2r) at most
    assert np.allclose(per, 2 * np.pi * r * PS, rtol=0.04)
    assert np.all(per >= 2 * np.pi * r * PS) and np.allclose(per, 2 * np.pi * (r + 0.5) * PS, rtol=0.02)
    # the pixel outline is 4/pi too long on discs
    assert np.allclose(g.perimeter_um("pixel-edges")[sel] / per, 4 / np.pi, rtol=0.06)
    major, minor = g.axes_um()
    assert np.allclose(major[sel] / minor[sel], 1, atol=0.02)
    assert np.allclose(major[sel], 2 * r * PS, rtol=0.02)
    circ = 4 * np.pi * g.area_um2[sel] / per ** 2
    assert np.all(np.abs(circ - 1) < 0.07) and np.all(np.diff(circ[np.argsort(r)]) > 0)  # closer to 1 as discs grow


def test_association_ring_and_inclusion(measured):
    s = summarize({"a": measured})
    assoc = s["total"]["association"]
    # pentlandite is entirely enclosed by magnetite: all its boundary is locked against magnetite
    assert assoc["7"]["3"] == 1.0 and assoc["7"]["0"] == 0.0
    lengths = s["images"]["a"]["boundary_um"]
    assert lengths["7"]["3"] == pytest.approx(2 * np.pi * 25.5 * PS, rel=0.03)
    assert lengths["3"]["7"] == lengths["7"]["3"]
    # galena only touches background: fully free
    assert assoc["2"]["0"] == 1.0
    # chalcopyrite touches sphalerite a little, the rest is free
    assert 0 < assoc["1"]["8"] < 0.1 and assoc["1"]["0"] == pytest.approx(1 - assoc["1"]["8"])
    for row in assoc.values():
        assert sum(row.values()) == pytest.approx(1.0)


def test_association_straight_layouts():
    # three vertical strips: ccp | py | mag, 100 rows
    m = np.zeros((100, 90), np.uint8)
    m[:, :30], m[:, 30:60], m[:, 60:] = 1, 6, 3
    st = measure(m, pixel_size=2.0)
    edges = st.shared_length_um(method="pixel-edges")
    assert edges[1, 6] == 200.0 and edges[6, 3] == 200.0 and edges[1, 3] == 0.0
    crof = st.shared_length_um(method="crofton")
    # the Crofton estimate of a straight axis-parallel line is pi(1+sqrt2)/8 = 0.948 of its length
    assert crof[1, 6] == pytest.approx(200 * np.pi * (1 + np.sqrt(2)) / 8, rel=0.01)
    assoc = summarize({"s": st})["total"]["association"]
    assert assoc["6"] == {"1": 0.5, "3": 0.5}
    assert assoc["1"] == {"3": 0.0, "6": 1.0}

    # a 20x20 magnetite square inside a 40x40 pyrite square on background
    m = np.zeros((100, 100), np.uint8)
    m[30:70, 30:70] = 6
    m[40:60, 40:60] = 3
    st = measure(m, pixel_size=1.0)
    e = st.shared_length_um(method="pixel-edges")
    assert (e[3, 6], e[6, 0]) == (80.0, 160.0)
    _, frac = association(st, method="pixel-edges")
    assert frac[6][3] == pytest.approx(1 / 3, abs=1e-12) and frac[3][6] == 1.0
    _, frac = association(st, method="crofton")
    assert frac[6][3] == pytest.approx(1 / 3, rel=0.03)

    # a 45-degree boundary: Crofton and pixel edges bracket the true length
    yy, xx = np.mgrid[:100, :100]
    m = np.where(xx > yy, 1, 6).astype(np.uint8)
    st = measure(m, pixel_size=1.0)
    true = 99 * np.sqrt(2)
    assert st.shared_length_um(method="crofton")[1, 6] == pytest.approx(true * np.pi * (1 + np.sqrt(2)) / 8, rel=0.02)
    assert st.shared_length_um(method="pixel-edges")[1, 6] == pytest.approx(true * np.sqrt(2), rel=0.02)


def test_image_edge_is_not_a_contact():
    m = np.full((50, 50), 6, np.uint8)
    m[20:30, 20:30] = 1
    st = measure(m)
    lengths = summarize({"x": st})["images"]["x"]["boundary_um"]
    assert "edge" in lengths["6"] and "edge" not in lengths["1"]
    assoc = summarize({"x": st})["total"]["association"]
    assert assoc["6"] == {"1": 1.0}
    # the whole-image grain is cut by the border
    assert st.grains.border[st.grains.code == 6].all()
    # a mask of one pixel per row still measures
    st = measure(np.array([[1], [0], [1]], np.uint8))
    assert len(st.grains) == 2 and st.grains.border.all()


def test_size_classes_and_d_values():
    ecd = np.array([1.0, 1.2, 1.5, 2.0, 3.0, 5.6])
    assert class_index(ecd).tolist() == [0, 0, 1, 2, 3, 4]
    assert class_index(np.array([1.0, 2.0, 3.9, 4.0]), series="2").tolist() == [0, 1, 1, 2]
    area = np.pi * (ecd / 2) ** 2
    cls = size_classes(ecd, area)
    assert [c["count"] for c in cls] == [2, 1, 1, 1, 1]
    assert cls[0]["lower_um"] == 1.0 and cls[2]["lower_um"] == 2.0 and cls[-1]["upper_um"] == pytest.approx(4 * np.sqrt(2))
    assert cls[-1]["cum_number_pct"] == 100.0 and cls[-1]["cum_area_pct"] == pytest.approx(100.0)
    assert cls[0]["cum_number_pct"] == pytest.approx(100 * 2 / 6)
    assert sum(c["area_um2"] for c in cls) == pytest.approx(area.sum())
    # d-values by number on 1..100: the smallest value with p % at or below it
    e = np.arange(1, 101, dtype=float)
    assert d_values(e, np.ones(100)) == [10.0, 50.0, 90.0]
    # by area: one big grain holds most of the area
    assert d_values(np.array([1.0, 1.0, 10.0]), np.array([1.0, 1.0, 98.0])) == [10.0, 10.0, 10.0]
    assert d_values(np.array([]), np.array([])) == [None, None, None]


def test_aggregation_pools_counts_and_areas(layout, measured):
    m = layout[0]
    other = measure(m[:, ::-1].copy(), pixel_size=PS)
    s = summarize({"a": measured, "b": other})
    for c in s["total"]["grains"]:
        assert s["total"]["grains"][c]["count"] == 2 * s["images"]["a"]["grains"][c]["count"]
    assert s["total"]["area_fraction"] == pytest.approx(s["images"]["a"]["area_fraction"], abs=1e-12)
    # different pixel sizes pool by µm²
    small = np.zeros((10, 10), np.uint8)
    small[:5] = 6
    big = np.zeros((10, 10), np.uint8)
    s = summarize({"p": measure(small, pixel_size=2.0), "q": measure(big, pixel_size=1.0)})
    assert s["total"]["area_fraction"]["6"] == pytest.approx(200 / 500)
    c = combine([measured, other])
    assert c.grains.image.tolist().count(1) == len(other.grains)
    assert c.pixels.sum() == 2 * m.size


def test_matches_independent_labelling_on_real_mask(demo_mask):
    from skimage.measure import label, regionprops

    st = measure(demo_mask, pixel_size=1.0)
    assert np.array_equal(st.pixels, np.bincount(demo_mask.ravel(), minlength=256))
    for code in np.unique(demo_mask):
        if code in (0, 255):
            continue
        lab = label(demo_mask == code, connectivity=2)
        props = regionprops(lab)
        ours = st.grains.pixels[st.grains.code == code]
        assert sorted(ours.tolist()) == sorted(p.area for p in props)
    # per-grain crossings add up to the class-pair crossings
    total = st.grains.crossings.sum(axis=1)
    p = st.pairs_um
    minerals = list(range(1, 15))
    pair_total = p[:, minerals, :].sum(axis=(1, 2)) + p[:, :, minerals].sum(axis=(1, 2))
    assert np.array_equal(total, pair_total)
    assert boundary_length(np.ones(4), method="crofton") == pytest.approx(np.pi / 8 * (2 + np.sqrt(2)))


def test_errors():
    with pytest.raises(ValueError, match="2-D"):
        measure(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="positive"):
        measure(np.zeros((4, 4), np.uint8), pixel_size=0)
    with pytest.raises(ValueError, match="positive"):
        measure(np.zeros((4, 4), np.uint8), pixel_size=float("nan"))
    with pytest.raises(ValueError, match="unknown class codes"):
        measure(np.full((4, 4), 42, np.uint8))
    with pytest.raises(ValueError, match="valid names"):
        Options(border="trim")
    with pytest.raises(ValueError, match="valid names"):
        Options(perimeter="contour")
    with pytest.raises(ValueError, match="at least one"):
        summarize({})


def test_tables_and_exports(layout, measured, tmp_path):
    from core.stats.export import csv_zip, write_csv, xlsx_bytes

    t = tables({"a": measured})
    assert set(t) == {"modal", "grain_summary", "size_classes", "association", "grains", "assay", "deportment",
                      "occurrence", "liberation", "locking"}
    assert len(t["grains"]) == len(measured.grains)
    assert t["grains"]["area_px"].sum() == sum(v for c, v in layout[1]["pixels"].items() if c)
    # the modal table holds the layout's known pixel counts and their shares of the labelled pixels
    truth = layout[1]["pixels"]
    modal = t["modal"][t["modal"]["image"] == "a"].set_index("code")
    assert modal["pixels"].to_dict() == truth
    assert modal["fraction"].to_dict() == pytest.approx({c: n / sum(truth.values()) for c, n in truth.items()})
    assert sorted(t["grains"][t["grains"]["code"] == 2]["area_px"].tolist()) == [256, 400]
    paths = write_csv(t, tmp_path / "csv")
    assert {p.name for p in paths} == {f"{k}.csv" for k in t}
    import io
    import zipfile

    import openpyxl

    z = zipfile.ZipFile(io.BytesIO(csv_zip(t)))
    assert set(z.namelist()) == {f"{k}.csv" for k in t}
    # the files hold the tables themselves: read back, the same rows and values
    for name in ("modal", "grains"):
        for back in (pd.read_csv(tmp_path / "csv" / f"{name}.csv"), pd.read_csv(io.BytesIO(z.read(f"{name}.csv")))):
            assert list(back.columns) == list(t[name].columns) and len(back) == len(t[name])
            assert back["code"].tolist() == t[name]["code"].tolist()
    back = pd.read_csv(tmp_path / "csv" / "grains.csv")
    assert back["area_px"].tolist() == t["grains"]["area_px"].tolist()
    assert np.allclose(back["ecd_um"], t["grains"]["ecd_um"], rtol=1e-9)
    xb = xlsx_bytes(t)
    assert set(openpyxl.load_workbook(io.BytesIO(xb)).sheetnames) == set(t)
    sheet = pd.read_excel(io.BytesIO(xb), sheet_name="modal")
    assert sheet["pixels"].tolist() == t["modal"]["pixels"].tolist()
    assert np.allclose(sheet["fraction"], t["modal"]["fraction"], rtol=1e-12)


def test_cli_json_schema(layout, tmp_path):
    from core.cli import main

    m = layout[0]
    cio.write_mask(tmp_path / "one.png", m)
    cio.write_mask(tmp_path / "two.png", m[::-1])
    out = tmp_path / "s.json"
    rc = main(["stats", str(tmp_path / "one.png"), str(tmp_path / "two.png"), "--pixel-size", str(PS),
               "--json", str(out), "--csv", str(tmp_path / "csv"), "--report", str(tmp_path / "r.html")])
    assert rc == 0
    s = json.loads(out.read_text())
    assert set(s) == {"images", "total"}
    assert set(s["images"]) == {"one", "two"}
    assert set(s["total"]) == {"area_fraction", "mass_fraction", "mass_fraction_no_background", "element_grade",
                               "element_deportment", "grains", "association", "occurrence", "liberation",
                               "area_fraction_se", "area_fraction_ci95"}  # two images: their spread
    assert set(s["total"]["area_fraction_ci95"]) == set(s["total"]["area_fraction"])
    for entry in [s["total"], *s["images"].values()]:
        assert all(isinstance(k, str) and k.isdigit() for k in entry["area_fraction"])
        for code, g in entry["grains"].items():
            assert code.isdigit() and code != "0"
            assert {"count", "ecd_um_mean", "ecd_um_median", "d10_um", "d50_um", "d90_um", "size_classes"} <= set(g)
            assert isinstance(g["count"], int) and isinstance(g["size_classes"], list)
        for a, row in entry["association"].items():
            assert a.isdigit() and all(b.isdigit() for b in row)
    for g in s["total"]["grains"].values():
        assert set(g) == {"count", "ecd_um_mean", "ecd_um_median", "d10_um", "d50_um", "d90_um", "size_classes"}
    truth = layout[1]
    labelled = sum(truth["pixels"].values())
    assert abs(s["total"]["area_fraction"]["3"] - truth["pixels"][3] / labelled) < 1e-6
    assert (tmp_path / "csv" / "grains.csv").exists() and (tmp_path / "r.html").exists()
    # a folder stands for its masks: the same statistics as naming them
    (tmp_path / "folder").mkdir()
    for n in ("one", "two"):
        (tmp_path / "folder" / f"{n}.png").write_bytes((tmp_path / f"{n}.png").read_bytes())
    (tmp_path / "folder" / "notes.txt").write_text("not a mask")
    assert main(["stats", str(tmp_path / "folder"), "--pixel-size", str(PS), "--json", str(tmp_path / "f.json")]) == 0
    assert json.loads((tmp_path / "f.json").read_text()) == s
    (tmp_path / "nothing").mkdir()
    assert main(["stats", str(tmp_path / "nothing"), "--pixel-size", "1"]) == 2
    # user errors: one line, status 2
    assert main(["stats", str(tmp_path / "one.png"), "--pixel-size", "-1"]) == 2
    assert main(["stats", str(tmp_path / "missing.png"), "--pixel-size", "1"]) == 2
    assert main(["stats", str(tmp_path / "one.png"), "--pixel-size", "1", "--border", "nope"]) == 2


def test_cli_refuses_a_mask_without_labelled_pixels(layout, tmp_path, capsys):
    """As the page does: an all-unlabelled mask has no area fractions (0 / 0), and pooled with others it would
    silently drop the total's 95 % intervals; nothing is written."""
    from core.cli import main

    cio.write_mask(tmp_path / "one.png", layout[0])
    cio.write_mask(tmp_path / "blank.png", np.full((30, 40), 255, np.uint8))
    for masks in (["blank.png"], ["one.png", "blank.png"]):
        capsys.readouterr()
        rc = main(["stats", *[str(tmp_path / m) for m in masks], "--pixel-size", "1",
                   "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "r.html")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "blank.png: the mask holds no labelled pixel" in err
        assert "Traceback" not in err
        assert not (tmp_path / "s.json").exists() and not (tmp_path / "r.html").exists()


def test_masks_without_minerals_still_report():
    from core.stats.report import build_report

    for fill in (0, 255):
        st = measure(np.full((30, 40), fill, np.uint8), pixel_size=1.0)
        s = summarize({"e": st})
        assert s["total"]["grains"] == {} and s["total"]["association"] == {}
        assert s["total"]["area_fraction"] == ({"0": 1.0} if fill == 0 else {})
        t = tables({"e": st})
        assert len(t["grains"]) == 0 and list(t["modal"].columns)[:3] == ["image", "code", "label"]
        assert "<html" in build_report(s, t, options=Options())


def test_between_image_precision_of_the_pooled_modal_mineralogy():
    """Three fields of equal area with 10, 20 and 30 % chalcopyrite: pooled 20 %, standard error
    sqrt(A²(0.1² + 0 + 0.1²) / (2 · 3 · A²)) = 0.0577, 95 % half-width t(0.975, 2) = 4.303 times that."""
    from core.stats import tables
    from core.stats.summary import between_images

    masks = []
    for share in (10, 20, 30):
        m = np.zeros((10, 100), np.uint8)
        m[:, :share] = 1
        masks.append(measure(m, pixel_size=0.5))
    got = between_images(masks)
    se = (0.02 / 6) ** 0.5
    assert got[1]["se"] == pytest.approx(se, rel=1e-9)
    assert got[1]["ci95"] == pytest.approx(4.302652729 * se, rel=1e-6)
    assert got[0]["se"] == pytest.approx(se, rel=1e-9)  # the background's share varies as much
    s = summarize({"a": masks[0], "b": masks[1], "c": masks[2]})
    assert s["total"]["area_fraction"]["1"] == pytest.approx(0.2)
    assert s["total"]["area_fraction_ci95"]["1"] == pytest.approx(got[1]["ci95"])
    t = tables({"a": masks[0], "b": masks[1], "c": masks[2]})["modal"]
    row = t[(t["image"] == "total") & (t["code"] == 1)].iloc[0]
    assert row["fraction_se"] == pytest.approx(se) and t[t["image"] != "total"]["fraction_se"].isna().all()
    # identical fields: no spread; one field: nothing to estimate
    same = between_images([masks[1], masks[1]])
    assert same[1]["se"] == pytest.approx(0.0, abs=1e-12)
    assert between_images([masks[0]]) == {} and "area_fraction_se" not in summarize({"a": masks[0]})["total"]
    # fields of different sizes weigh by their labelled area (a ratio of sums, not a mean of ratios)
    big = np.zeros((40, 100), np.uint8)
    big[:, :10] = 1
    pooled = summarize({"small": masks[2], "big": measure(big, pixel_size=0.5)})["total"]["area_fraction"]["1"]
    assert pooled == pytest.approx((300 + 400) / (1000 + 4000))


def _fields(*shares, rows: int = 10):
    """Masks of equal area with the given percent of chalcopyrite (left) and a 2×2 pyrite grain inside."""
    out = []
    for share in shares:
        m = np.zeros((rows, 100), np.uint8)
        m[:, :share] = 1
        m[4:6, 80:82] = 6
        out.append(measure(m, pixel_size=0.5))
    return out


def test_samples_are_pooled_each_on_their_own():
    """Sample A: three fields with 10, 20 and 30 % chalcopyrite (20 % ± 4.303 · 0.0577, as the total of the test
    above); sample B: one field with 50 % (no interval). The total is the same as without samples."""
    from core.stats import group_samples, sample_comparison, tables
    from core.stats.report import build_report

    a1, a2, a3, b1 = _fields(10, 20, 30, 50)
    results = {"a1": a1, "a2": a2, "a3": a3, "b1": b1}
    samples = {"a1": "A", "a2": " A", "a3": "A ", "b1": "B"}
    s = summarize(results, samples=samples)
    assert s["total"] == summarize(results)["total"] and s["images"] == summarize(results)["images"]
    assert list(s["samples"]) == ["A", "B"]
    a, b = s["samples"]["A"], s["samples"]["B"]
    assert a["images"] == ["a1", "a2", "a3"] and b["images"] == ["b1"]
    se = (0.02 / 6) ** 0.5
    assert a["area_fraction"]["1"] == pytest.approx(0.2) and a["area_fraction"]["6"] == pytest.approx(0.004)
    assert a["area_fraction_se"]["1"] == pytest.approx(se, rel=1e-9)
    assert a["area_fraction_ci95"]["1"] == pytest.approx(4.302652729 * se, rel=1e-6)
    assert a["area_fraction_ci95"]["6"] == pytest.approx(0.0, abs=1e-12)  # the same grain in every field
    assert b["area_fraction"]["1"] == pytest.approx(0.5) and "area_fraction_ci95" not in b
    assert a["grains"]["6"]["count"] == 3 and b["grains"]["6"]["count"] == 1
    assert a == {"images": ["a1", "a2", "a3"], **summarize({"a1": a1, "a2": a2, "a3": a3})["total"]}
    t = tables(results, samples=samples)
    assert t["samples"].to_dict("records") == [{"image": "a1", "sample": "A"}, {"image": "a2", "sample": "A"},
                                               {"image": "a3", "sample": "A"}, {"image": "b1", "sample": "B"}]
    sm = t["sample_modal"]
    assert list(sm.columns)[:3] == ["sample", "code", "label"] and set(sm["sample"]) == {"A", "B"}
    row = sm[(sm["sample"] == "A") & (sm["code"] == 1)].iloc[0]
    assert row["fraction"] == pytest.approx(0.2) and row["fraction_se"] == pytest.approx(se)
    assert sm[sm["sample"] == "B"]["fraction_se"].isna().all()
    for k in ("assay", "deportment", "grain_summary", "size_classes", "association", "occurrence", "liberation",
              "locking"):
        assert set(t[f"sample_{k}"]["sample"]) == {"A", "B"}, k
    assert list(t)[:10] == ["modal", "assay", "deportment", "grain_summary", "size_classes", "association",
                            "occurrence", "liberation", "locking", "grains"]
    assert tables(results)["modal"].equals(t["modal"])  # the images' tables do not change
    cmp = sample_comparison(t, s)
    assert list(cmp["area"].index) == ["A", "B"]
    assert cmp["area"].loc["A", "ccp"] == pytest.approx(20.0) and cmp["area"].loc["B", "ccp"] == pytest.approx(50.0)
    assert cmp["area_text"].loc["A", "ccp"] == f"20 ± {100 * 4.302652729 * se:.2g}" == "20 ± 25"
    assert cmp["area_text"].loc["B", "ccp"] == "50" and list(cmp["area_text"]["images"]) == [3, 1]
    assert cmp["assay"].loc["B", "Cu"] > cmp["assay"].loc["A", "Cu"] > 0
    # every field's chalcopyrite touches its edge; the 2×2 pyrite grain inside is a particle of pyrite alone
    assert list(cmp["liberated"].columns) == ["py"] and (cmp["liberated"]["py"] == 100).all()
    html = build_report(s, t, options=Options())
    assert "Samples compared (2)" in html and "A: a1, a2, a3; B: b1" in html and "20 ± 25" in html
    assert "Samples compared" not in build_report(summarize(results), tables(results), options=Options())
    # every image needs a sample, and only the images analysed have one
    with pytest.raises(ValueError, match="no sample given for b1"):
        group_samples(list(results), {"a1": "A", "a2": "A", "a3": "A"})
    with pytest.raises(ValueError, match="c9, which is not among the images"):
        group_samples(list(results), {**samples, "c9": "C"})
    with pytest.raises(ValueError, match="a2: its sample name is empty"):
        summarize(results, samples={**samples, "a2": "  "})
    with pytest.raises(ValueError, match="at most 80"):
        tables(results, samples={**samples, "b1": "x" * 81})


def test_sample_from_name():
    from core.stats.summary import sample_from_name

    assert [sample_from_name(n) for n in ("DH12-41m-01", "DH12_41m_02", "core 7 a", "single", "x-", "-x")] == \
        ["DH12-41m", "DH12_41m", "core 7", "single", "x", "-x"]
    assert sample_from_name("a" * 90 + "-1") == "a" * 80


def test_cli_compares_samples(tmp_path):
    from core.cli import main

    m = np.zeros((10, 100), np.uint8)
    for folder, shares in (("DH1", (10, 20, 30)), ("DH2", (50, 40))):
        (tmp_path / folder).mkdir()
        for i, share in enumerate(shares):
            m[:] = 0
            m[:, :share] = 1
            cio.write_mask(tmp_path / folder / f"{i:02d}.png", m, pixel_um=0.5)
    args = ["stats", str(tmp_path / "DH1"), str(tmp_path / "DH2")]
    assert main(args + ["--samples", "folders", "--json", str(tmp_path / "f.json"),
                        "--xlsx", str(tmp_path / "s.xlsx")]) == 0
    s = json.loads((tmp_path / "f.json").read_text())
    assert list(s["samples"]) == ["DH1", "DH2"]
    assert s["samples"]["DH1"]["images"] == ["00", "01", "02"] and s["samples"]["DH2"]["images"] == ["00-2", "01-2"]
    assert s["samples"]["DH1"]["area_fraction"]["1"] == pytest.approx(0.2)
    assert s["samples"]["DH2"]["area_fraction"]["1"] == pytest.approx(0.45)
    import openpyxl

    assert {"samples", "sample_modal"} <= set(openpyxl.load_workbook(tmp_path / "s.xlsx").sheetnames)
    # a CSV, naming masks by path where their names repeat, with a header row
    csv = tmp_path / "samples.csv"
    csv.write_text("mask,sample\n" + "".join(f"{tmp_path / 'DH1' / f'0{i}.png'},upper\n" for i in range(3))
                   + f"01-2,lower\n{tmp_path / 'DH2' / '00.png'},lower\n")
    assert main(args + ["--samples", str(csv), "--json", str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert {k: v["images"] for k, v in c["samples"].items()} == {"upper": ["00", "01", "02"],
                                                                 "lower": ["00-2", "01-2"]}
    assert c["samples"]["upper"]["area_fraction"] == s["samples"]["DH1"]["area_fraction"]
    # the same list saved by a spreadsheet that separates with semicolons
    csv.write_text(csv.read_text().replace(",", ";"))
    assert main(args + ["--samples", str(csv), "--json", str(tmp_path / "c2.json")]) == 0
    assert json.loads((tmp_path / "c2.json").read_text()) == c
    # mistakes are named before anything is measured: status 2
    csv.write_text("00,upper\n")
    assert main(args + ["--samples", str(csv)]) == 2  # "00" names two masks
    csv.write_text(f"{tmp_path / 'DH1' / '00.png'},upper\n")
    assert main(args + ["--samples", str(csv)]) == 2  # four masks without a sample
    assert main(args + ["--samples", str(tmp_path / "none.csv")]) == 2
    # samples named after the masks: 00 … 02 have no separator, so each is a sample of its own
    named = tmp_path / "named"
    named.mkdir()
    for n in ("DH1-a-01", "DH1-a-02", "DH1-b-01"):
        cio.write_mask(named / f"{n}.png", m, pixel_um=0.5)
    assert main(["stats", str(named), "--samples", "names", "--json", str(tmp_path / "n.json")]) == 0
    n = json.loads((tmp_path / "n.json").read_text())
    assert {k: v["images"] for k, v in n["samples"].items()} == {"DH1-a": ["DH1-a-01", "DH1-a-02"],
                                                                 "DH1-b": ["DH1-b-01"]}


def test_how_grains_occur():
    """Sphalerite (8) with two chalcopyrite (1) inclusions; one chalcopyrite grain in the gangue; one across the
    sphalerite's edge (half in each); one with three of its four sides against sphalerite."""
    from core.stats import occurrence

    m = np.zeros((300, 400), np.uint8)
    m[50:250, 50:250] = 8
    m[80:100, 80:100] = 1      # inclusion, 400 px
    m[120:130, 120:130] = 1    # inclusion, 100 px
    m[100:120, 300:320] = 1    # in the gangue, 400 px
    m[200:220, 240:260] = 1    # across the edge: half its boundary on each side, 400 px
    m[50:70, 150:170] = 1      # top side against the gangue, three sides against sphalerite, 400 px
    st = measure(m, pixel_size=0.5)
    g = st.grains
    # each grain's contacts add up to its Crofton perimeter; the image edge is a slot of its own
    assert np.allclose(g.contacts.sum(1) * 0.5, g.perimeter_um("crofton"), rtol=1e-5)
    share = {int(round(a)): r for a, r in zip(g.area_um2 / 0.25, g.contacts / g.contacts.sum(1, keepdims=True))}
    assert share[100][8] == pytest.approx(1.0)
    occ = occurrence(g, 1, options=Options())
    by_host = {h["host"]: h for h in occ["hosts"]}
    assert occ["grains"] == 5 and occ["unclassified"] == 0
    assert by_host[8]["grains"] == 2 and by_host[8]["share"] == pytest.approx(500 / 1700)
    assert by_host[0]["grains"] == 1 and by_host[0]["share"] == pytest.approx(400 / 1700)
    assert by_host[None]["grains"] == 2 and by_host[None]["share"] == pytest.approx(800 / 1700)
    assert by_host[8]["d50_um"] == pytest.approx(2 * np.sqrt(400 * 0.25 / np.pi))
    assert [h["host"] for h in occ["hosts"]] == [None, 8, 0]  # largest share first
    # the three-sides grain is enclosed from 70 %, not from 80 %
    assert {h["host"]: h["grains"] for h in occurrence(g, 1, options=Options(enclosed=0.7))["hosts"]} == \
        {8: 3, 0: 1, None: 1}
    assert {h["host"]: h["grains"] for h in occurrence(g, 1, options=Options(enclosed=0.8))["hosts"]} == \
        {8: 2, 0: 1, None: 2}
    # the host: about a fifth of its boundary is against its chalcopyrite (inclusions 120, the cut grain 40, the
    # three-sides grain 60, of about 1000 px), so it lies between several classes at 90 % and in the gangue at 75 %
    assert [(h["host"], h["grains"]) for h in occurrence(g, 8, options=Options())["hosts"]] == [(None, 1)]
    assert [(h["host"], h["grains"]) for h in occurrence(g, 8, options=Options(enclosed=0.75))["hosts"]] == [(0, 1)]
    # the image edge is no contact: a grain cut by it, kept, counts by its other sides
    cut = np.zeros((50, 50), np.uint8)
    cut[:, :20] = 8
    cut[0:10, 0:10] = 1
    k = measure(cut)
    assert occurrence(k.grains, 1, options=Options())["grains"] == 0  # cut by the edge: left out by default
    kept = occurrence(k.grains, 1, options=Options(border="keep"))
    assert kept["hosts"] == [{"host": 8, "grains": 1, "area_um2": 100.0, "share": 1.0,
                              "d50_um": pytest.approx(2 * np.sqrt(100 / np.pi))}]
    # pooled, selected and tabled like every other grain measurement
    both = combine([st, k])
    assert both.grains.contacts.shape == (len(both.grains), 17)
    t = tables({"a": st})["occurrence"]
    row = t[(t["image"] == "total") & (t["code"] == 1) & (t["host_code"] == 8)].iloc[0]
    assert row["occurs"] == "enclosed in sphalerite" and row["grains"] == 2
    assert set(t[t["code"] == 1]["occurs"]) == {"enclosed in sphalerite", "free in the gangue",
                                                 "between several classes"}
    gt = tables({"a": st})["grains"]
    inc = gt[(gt["code"] == 1) & (gt["area_px"] == 100)].iloc[0]
    assert inc["host_code"] == 8 and inc["occurs"] == "enclosed in sphalerite" and inc["boundary_share_gangue"] == 0
    free = gt[(gt["code"] == 1) & (gt["bbox_x"] == 300)].iloc[0]
    assert free["occurs"] == "free in the gangue" and free["boundary_share_gangue"] == pytest.approx(1.0)
    half = gt[(gt["code"] == 1) & (gt["bbox_x"] == 240)].iloc[0]
    assert pd.isna(half["host_code"]) and half["occurs"] == "between several classes"
    assert half["boundary_share_gangue"] == pytest.approx(0.5, abs=0.03)
    assert len(tables({"e": measure(np.zeros((5, 5), np.uint8))})["grains"]) == 0
    j = summarize({"a": st})["total"]["occurrence"]["1"]
    assert [(h["host"], h["grains"]) for h in j["hosts"]] == [(None, 2), ("8", 2), ("0", 1)]
    for bad in (0.4, 1.01, "x"):
        with pytest.raises(ValueError, match="enclosed"):
            Options(enclosed=bad)
    assert Options.from_dict(Options(enclosed=0.75).as_dict()).enclosed == 0.75
    assert Options.from_dict({"border": "exclude", "perimeter": "crofton", "size_series": "sqrt2"}).enclosed == 0.9


def test_liberation_by_particle():
    """Three particles in the mounting medium: 400 px chalcopyrite + 200 px pyrite (ccp 66.7 % of it), 100 px of
    chalcopyrite alone (100 %), and 100 ccp + 50 py + 75 sphalerite (44.4 %); a fourth, pure ccp, cut by the edge."""
    from core.stats import liberation, tables
    from core.stats.summary import liberation_rows

    m = np.zeros((100, 100), np.uint8)
    m[10:30, 10:30] = 1
    m[10:30, 30:40] = 6
    m[50:60, 50:60] = 1
    m[70:80, 10:20] = 1
    m[70:80, 20:25] = 6
    m[80:85, 10:25] = 8
    m[90:100, 90:100] = 1  # at the edge
    m[40:45, 70:75] = 255  # unlabelled: no particle
    st = measure(m, pixel_size=0.5)
    p = st.particles
    assert len(p) == 4 and p.border.sum() == 1
    assert sorted(p.composition[:, 1].tolist()) == [100, 100, 100, 400] and p.composition[:, 0].sum() == 0
    lib = liberation(p, 1, options=Options())
    assert lib["particles"] == 3
    share = {k["lower_pct"]: k["share"] for k in lib["classes"] if k["upper_pct"] > k["lower_pct"]}
    assert share[60] == pytest.approx(4 / 6) and share[40] == pytest.approx(1 / 6)
    assert lib["classes"][-1] == {"lower_pct": 100, "upper_pct": 100, "share": pytest.approx(1 / 6)}
    assert sum(k["share"] for k in lib["classes"]) == pytest.approx(1.0)
    assert lib["at_least"] == {50: pytest.approx(5 / 6), 80: pytest.approx(1 / 6), 90: pytest.approx(1 / 6),
                               100: pytest.approx(1 / 6)}
    assert lib["locking"] == {"free": pytest.approx(1 / 6), "binary": {6: pytest.approx(4 / 6)},
                              "multiple": pytest.approx(1 / 6)}
    # the particle at the edge counts when kept: 200 of 700 px of ccp are then in pure particles
    kept = liberation(p, 1, options=Options(border="keep"))
    assert kept["particles"] == 4 and kept["at_least"][100] == pytest.approx(200 / 700)
    # pyrite: 200 of its 250 px with chalcopyrite only, 50 with two others
    py = liberation(p, 6, options=Options())
    assert py["locking"] == {"free": 0.0, "binary": {1: pytest.approx(0.8)}, "multiple": pytest.approx(0.2)}
    assert lib["counted"] == pytest.approx(600 / 700) and kept["counted"] == 1.0
    assert liberation(p, 3, options=Options()) == {"particles": 0, "counted": 0.0, "classes": [], "at_least": {},
                                                    "locking": {"free": 0.0, "binary": {}, "multiple": 0.0}}
    # pooled images keep their particles apart; tables and the summary row agree with the engine
    both = combine([st, st])
    assert len(both.particles) == 8 and both.particles.image.tolist() == [0] * 4 + [1] * 4
    t = tables({"a": st})
    rows = liberation_rows(t["liberation"], t["locking"], "image", "total")
    ccp = rows[rows["mineral"] == "ccp"].iloc[0]
    assert ccp["particles"] == 3 and ccp["≥ 50 %"] == pytest.approx(83.33) and ccp["100 %"] == pytest.approx(16.67)
    assert ccp["% of it counted"] == pytest.approx(85.71)
    assert ccp["locked with"] == "py" and ccp["% locked with it only"] == pytest.approx(66.67)
    assert ccp["% with two or more others"] == pytest.approx(16.67)
    j = summarize({"a": st})["total"]["liberation"]["1"]
    assert j["at_least"]["90"] == pytest.approx(1 / 6) and j["locking"]["binary"] == {"6": pytest.approx(4 / 6)}


def test_report_title_and_notes(tmp_path):
    from core.cli import main
    from core.stats.report import build_report

    st = measure(np.zeros((20, 20), np.uint8))
    s, t = summarize({"e": st}), tables({"e": st})
    html = build_report(s, t, options=Options(), title="DH-12 <41 m>",
                        notes="Project Kola\nOperator: A. B.\n\nObjective 20×, <b>PPL</b>")
    assert "<title>DH-12 &lt;41 m&gt;</title>" in html and "<h1>DH-12 &lt;41 m&gt;</h1>" in html
    assert "<p>Project Kola<br>Operator: A. B.</p><p>Objective 20×, &lt;b&gt;PPL&lt;/b&gt;</p>" in html
    assert "<h1>OreLens statistics report</h1>" in build_report(s, t, options=Options(), title="")
    cio.write_mask(tmp_path / "m.png", np.zeros((20, 20), np.uint8))
    assert main(["stats", str(tmp_path / "m.png"), "--pixel-size", "1", "--report", str(tmp_path / "r.html"),
                 "--title", "Sample 7", "--notes", "drill core"]) == 0
    r = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h1>Sample 7</h1>" in r and "<p>drill core</p>" in r


@pytest.mark.parametrize("shape, pixel_um, full_width, length_um", [
    ((400, 500, 3), 1.0, None, 100.0),      # a fifth of 500 µm: 100 µm = 100 px
    ((400, 1000, 3), 0.5, None, 100.0),     # 100 µm = 200 px
    ((360, 480, 3), 0.069, 3396, 20.0),     # a report thumbnail of a 3396 px photograph: 20 µm = 41 px
])
def test_scale_bar_is_as_long_as_the_length_it_reads(shape, pixel_um, full_width, length_um):
    from core.scalebar import bar_length_um, draw_scale_bar

    img = np.zeros(shape, np.uint8)
    px = pixel_um * (full_width / shape[1] if full_width else 1.0)  # µm per pixel of the drawn copy
    assert bar_length_um(shape[1], px) == length_um
    out = draw_scale_bar(img, pixel_um, full_width=full_width)
    white = (out == 255).all(axis=2)
    widest = int(white.sum(axis=1).max())  # the bar's rows (the label is narrower)
    assert widest == round(length_um / px)


def test_size_chart_names_the_size_classes_chosen(layout):
    from core.stats.figures import size_figure

    st = measure(layout[0], pixel_size=PS)
    for series, words in (("sqrt2", "(√2 classes)"), ("2", "(doubling classes)")):
        summary = summarize({"one": st}, options=Options(series=series))
        cls = summary["total"]["grains"]["1"]["size_classes"]
        assert cls[0]["upper_um"] / cls[0]["lower_um"] == pytest.approx(2 ** 0.5 if series == "sqrt2" else 2)
        for scope in ("total", "one"):
            title = size_figure(summary, scope=scope).layout.xaxis.title.text
            assert title == "equivalent circle diameter, µm " + words


def test_a_mask_called_total_is_not_mixed_with_the_pooled_rows(tmp_path):
    """"total" names the rows of all masks pooled: a mask total.png is reported as total-2, and the pooled rows
    stay one per mineral."""
    import pandas as pd

    from core.cli import main

    m = np.zeros((10, 100), np.uint8)
    for name, share in (("total", 10), ("one", 30)):
        m[:] = 0
        m[:, :share] = 1
        cio.write_mask(tmp_path / f"{name}.png", m, pixel_um=0.5)
    assert main(["stats", str(tmp_path / "total.png"), str(tmp_path / "one.png"), "--json", str(tmp_path / "s.json"),
                 "--csv", str(tmp_path / "csv")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert list(s["images"]) == ["total-2", "one"]
    assert s["images"]["total-2"]["area_fraction"]["1"] == pytest.approx(0.1)
    assert s["total"]["area_fraction"]["1"] == pytest.approx(0.2)
    modal = pd.read_csv(next((tmp_path / "csv").glob("*modal*.csv")))
    pooled = modal[modal["image"] == "total"]
    assert len(pooled) == 2 and pooled.set_index("code")["fraction"][1] == pytest.approx(0.2)
