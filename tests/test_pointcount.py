"""Point counting: the grid, the binomial intervals, the check of a mask against calls, the CSV and the CLI."""
import json
import math

import numpy as np
import pytest

from core.cli import main as cli
from core.io import write_mask
from core.stats.pointcount import (CANNOT_TELL, NOT_CALLED, calls_as_scribbles, check, grid_points, next_uncalled,
                                   parse_call, point_view, points_csv, read_points_csv, wilson_interval)


def test_grid_is_square_centred_and_a_stage_traverse():
    p = grid_points((100, 200), 50)
    assert p.shape == (50, 2)
    assert sorted(set(p[:, 0].tolist())) == [10, 30, 50, 70, 90]
    assert sorted(set(p[:, 1].tolist())) == list(range(10, 200, 20))
    # along the first row, back along the second
    assert p[:10, 1].tolist() == list(range(10, 200, 20))
    assert p[10:20, 1].tolist() == list(range(190, 0, -20))
    assert len({tuple(x) for x in p.tolist()}) == 50


def test_grid_with_seed_and_margin_stays_in_its_cells():
    p = grid_points((100, 200), 50, seed=7)
    assert p.shape == (50, 2)
    rows, cols = sorted(set(p[:, 0].tolist())), sorted(set(p[:, 1].tolist()))
    assert [r // 20 for r in rows] == [0, 1, 2, 3, 4] and [c // 20 for c in cols] == list(range(10))
    assert np.array_equal(p, grid_points((100, 200), 50, seed=7))  # the same seed, the same grid
    assert not np.array_equal(p, grid_points((100, 200), 50))
    q = grid_points((120, 220), 50, margin=10)
    assert q[:, 0].min() >= 10 and q[:, 0].max() < 110 and q[:, 1].min() >= 10 and q[:, 1].max() < 210


@pytest.mark.parametrize("args, match", [(((100, 100), 0), "between 1"), (((100, 100), 10 ** 6), "between 1"),
                                         (((3, 3), 10), "do not fit"), (((10, 10), 5, None, 5), "leaves nothing")])
def test_grid_refuses_what_cannot_be_laid(args, match):
    shape, n, *rest = args
    kw = {"seed": rest[0], "margin": rest[1]} if rest else {}
    with pytest.raises(ValueError, match=match):
        grid_points(shape, n, **kw)


def test_wilson_interval_hand_values():
    z2 = 1.959963984540054 ** 2
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and hi == pytest.approx(z2 / (10 + z2))
    lo, hi = wilson_interval(5, 10)
    half = 1.959963984540054 / (1 + z2 / 10) * math.sqrt(0.025 + z2 / 400)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_check_against_a_mask_hand_counted():
    # 10 points: the mask has chalcopyrite (1) on the left half, pyrite (6) on the right, one unlabelled pixel
    labels = np.zeros((10, 10), np.uint8)
    labels[:, :5], labels[:, 5:] = 1, 6
    labels[9, 9] = 255
    points = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [0, 6], [0, 7], [0, 8], [5, 5], [9, 9], [9, 0]])
    # the microscopist: five ccp (one of them on the mask's pyrite), three py (one on the mask's unlabelled pixel:
    # counted, but out of the agreement), one cannot tell, one not called
    calls = [1, 1, 1, 1, 6, 6, 1, CANNOT_TELL, 6, NOT_CALLED]
    r = check(points, calls, labels)
    assert (r["points"], r["called"], r["cannot_tell"], r["not_called"]) == (10, 8, 1, 1)
    assert r["mask_unlabelled"] == 1
    rows = {m["code"]: m for m in r["minerals"]}
    assert (rows[1]["points"], rows[6]["points"]) == (5, 3)
    assert rows[1]["percent"] == pytest.approx(62.5) and rows[6]["percent"] == pytest.approx(37.5)
    lo, hi = wilson_interval(5, 8)
    assert (rows[1]["low"], rows[1]["high"]) == pytest.approx((100 * lo, 100 * hi))
    # area % of the mask's 99 labelled pixels: 50 ccp, 49 py; both inside the wide intervals of 8 points
    assert rows[1]["mask_percent"] == pytest.approx(5000 / 99) and rows[1]["inside"] is True
    assert rows[6]["mask_percent"] == pytest.approx(4900 / 99) and rows[6]["inside"] is True
    # the 7 points on labelled pixels: calls 1 1 1 1 6 6 1, mask 1 1 1 1 6 6 6
    assert r["agreement"] == pytest.approx(6 / 7)
    assert (r["agreement_low"], r["agreement_high"]) == pytest.approx(wilson_interval(6, 7))
    pe = (5 * 4 + 2 * 3) / 49
    assert r["kappa"] == pytest.approx((6 / 7 - pe) / (1 - pe))
    assert (rows[1]["mask_points"], rows[1]["agree"], rows[1]["recall"], rows[1]["precision"]) == (4, 4, 0.8, 1.0)
    assert (rows[6]["mask_points"], rows[6]["agree"], rows[6]["recall"], rows[6]["precision"]) == (3, 2, 1.0, 2 / 3)
    assert r["confusion"] == [{"call": 1, "mask": 1, "points": 4}, {"call": 1, "mask": 6, "points": 1},
                              {"call": 6, "mask": 6, "points": 2}]


def test_check_flags_a_mask_outside_the_interval_and_needs_no_mask():
    labels = np.zeros((20, 20), np.uint8)
    labels[:, :2] = 1  # 10 % chalcopyrite
    points = grid_points(labels.shape, 100)
    calls = np.where(points[:, 1] < 10, 1, 0)  # the count says 50 %
    rows = {m["code"]: m for m in check(points, calls, labels)["minerals"]}
    assert rows[1]["percent"] == pytest.approx(50.0) and rows[1]["inside"] is False
    alone = check(points, calls)
    assert "agreement" not in alone and "mask_percent" not in alone["minerals"][0]
    assert check(points, [NOT_CALLED] * 100)["minerals"] == []
    with pytest.raises(ValueError, match="unknown class codes"):
        check(points, [99] * 100)
    with pytest.raises(ValueError, match="100 points but 3 calls"):
        check(points, [1, 1, 1])
    with pytest.raises(ValueError, match="outside"):
        check([[25, 0]], [1], labels)


def test_csv_round_trip_and_readable_calls():
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 2
    points = grid_points(labels.shape, 12)
    calls = np.array([1, 0, 2, CANNOT_TELL, NOT_CALLED, 2, 0, 0, 1, 2, 2, 0][:len(points)])
    text = points_csv(points, calls, labels)
    head, first = text.splitlines()[:2]
    assert head == "point,x,y,call_code,call,mask_code,mask"
    assert first == f"1,{points[0, 1]},{points[0, 0]},1,chalcopyrite,0,non-metallic / background"
    p2, c2 = read_points_csv(text.encode(), labels.shape)
    assert np.array_equal(p2, points) and np.array_equal(c2, calls)
    # hand-written lists: labels, names, "cannot tell", blanks; x/y in any column order
    p3, c3 = read_points_csv("y,x,call\n1,2,ccp\n3,4,Galena\n5,6,cannot tell\n7,8,\n")
    assert p3.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]] and c3.tolist() == [1, 2, CANNOT_TELL, NOT_CALLED]
    assert parse_call(" 11 ") == 11 and parse_call("pn") == 7


def test_a_count_saved_by_a_spreadsheet_with_semicolons_or_tabs_reads_the_same():
    """Spreadsheets in locales with a decimal comma save CSV with semicolons: the count filled in there is the
    same count."""
    labels = np.zeros((30, 40), np.uint8)
    labels[:, 20:] = 2
    points = grid_points(labels.shape, 12)
    calls = np.array([1, 0, 2, CANNOT_TELL, NOT_CALLED, 2, 0, 0, 1, 2, 2, 0][:len(points)])
    text = points_csv(points, calls, labels)
    for sep in (";", "\t"):
        other = "\ufeff" + text.replace(",", sep).replace("\n", "\r\n")  # as a spreadsheet writes it
        p, c = read_points_csv(other.encode("utf-8"), labels.shape)
        assert np.array_equal(p, points) and np.array_equal(c, calls)
    p, c = read_points_csv("x;y;call\n2;1;ccp\n4;3;Galena\n6;5;\n")
    assert p.tolist() == [[1, 2], [3, 4], [5, 6]] and c.tolist() == [1, 2, NOT_CALLED]


@pytest.mark.parametrize("text, match", [
    ("a,b\n1,2\n", "columns x and y"), ("x,y,call\n", "no points"), ("x,y,call\n1,two,ccp\n", "line 2: x and y"),
    ("x,y,call\n1,1,ccp\n50,1,py\n", "line 3: the point \\(50, 1\\) lies outside"),
    ("x,y,call\n1,1,unobtainium\n", "line 2: 'unobtainium' is not a mineral"),
    ("x,y,call_code\n1,1,42\n", "line 2: '42' is not a class code")])
def test_csv_errors_name_the_line(text, match):
    with pytest.raises(ValueError, match=match):
        read_points_csv(text, (30, 40))
    with pytest.raises(ValueError, match="not a text"):
        read_points_csv(b"\xff\xd8\xff\xe0binary")


def test_next_uncalled_wraps_round():
    calls = [1, NOT_CALLED, 2, NOT_CALLED]
    assert next_uncalled(calls, 1) == 3 and next_uncalled(calls, 3) == 1
    assert next_uncalled([1, 2], 0) is None


def test_point_view_keeps_the_pixel_under_the_cross_hair():
    img = np.zeros((50, 60, 3), np.uint8)
    img[20, 30] = (200, 10, 10)
    v = point_view(img, (20, 30), half=10, zoom=3)
    assert v.shape == (63, 63, 3)
    assert (v[30:33, 30:33] == (200, 10, 10)).all()  # the point's own pixel, enlarged, is untouched
    assert (v == (0, 255, 255)).all(axis=2).any()  # the cross-hair is drawn
    edge = point_view(img, (0, 0), half=10, zoom=1)
    assert (edge[0, 0] == 128).all() and (edge[15, 15] == 0).all()  # grey beyond the image, the image inside


def test_cli_grid_then_check(tmp_path, capsys):
    labels = np.zeros((100, 200), np.uint8)
    labels[:, 100:] = 1
    write_mask(tmp_path / "m.png", labels)
    assert cli(["pointcount", "grid", str(tmp_path / "m.png"), "--points", "50", "--mask", str(tmp_path / "m.png"),
                "--out", str(tmp_path / "p.csv")]) == 0
    assert "50 points over 200×100 px" in capsys.readouterr().out
    lines = (tmp_path / "p.csv").read_text().splitlines()
    # the microscopist agrees with the mask everywhere but at the first point, which is cannot tell
    filled = [lines[0]] + [",".join([*ln.split(",")[:3], ("255" if i == 1 else ln.split(",")[5]), "",
                                     *ln.split(",")[5:]]) for i, ln in enumerate(lines[1:], 1)]
    (tmp_path / "c.csv").write_text("\n".join(filled) + "\n")
    assert cli(["pointcount", "check", str(tmp_path / "c.csv"), "--mask", str(tmp_path / "m.png"),
                "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "50 points, 49 counted, 1 cannot tell, 0 not called" in out
    assert "agreement: 100.0 %" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["pooled"] is None and list(r["counts"]) == [str(tmp_path / "c.csv")]
    r = r["counts"][str(tmp_path / "c.csv")]
    assert r["agreement"] == 1.0 and r["kappa"] == pytest.approx(1.0)
    assert {m["code"]: m["points"] for m in r["minerals"]} == {0: 24, 1: 25}
    # two fields of one sample: each, and pooled
    assert cli(["pointcount", "check", str(tmp_path / "c.csv"), str(tmp_path / "p.csv"), "--mask",
                str(tmp_path / "m.png"), str(tmp_path / "m.png"), "--json", str(tmp_path / "two.json")]) == 0
    out = capsys.readouterr().out
    assert "pooled (2 counts): 100 points, 49 counted, 1 cannot tell, 50 not called" in out
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["pooled"]["agreement"] == 1.0 and len(two["counts"]) == 2
    assert cli(["pointcount", "check", str(tmp_path / "c.csv"), str(tmp_path / "p.csv"), "--mask",
                str(tmp_path / "m.png")]) == 2
    assert "2 point lists but 1 masks" in capsys.readouterr().err
    assert cli(["pointcount", "check", str(tmp_path / "c.csv"), "--mask", str(tmp_path / "nope.png")]) == 2
    assert "no such file" in capsys.readouterr().err.lower()


def test_cli_check_writes_its_json_into_a_new_folder(tmp_path, capsys):
    """``--json`` makes its folder, as every other command's does."""
    (tmp_path / "c.csv").write_text("x,y,call_code\n10,10,0\n20,20,1\n")
    out = tmp_path / "results" / "count" / "r.json"
    assert cli(["pointcount", "check", str(tmp_path / "c.csv"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["pooled"] is None and r["counts"][str(tmp_path / "c.csv")]["called"] == 2


def test_report_section_of_a_point_count():
    from core.stats import Options, measure, summarize, tables
    from core.stats.report import build_report

    labels = np.zeros((20, 20), np.uint8)
    labels[:, 10:] = 1
    points = grid_points(labels.shape, 4)  # (5, 5) (5, 15) (15, 15) (15, 5)
    res = check(points, [0, 6, 1, CANNOT_TELL], labels)
    m = {"a&b": measure(labels, pixel_size=1.0)}
    html = build_report(summarize(m), tables(m), options=Options(), checks={"a&b": res})
    assert "Checked by point counting (1 image(s))" in html and "<h3>a&amp;b</h3>" in html
    assert ("The mask analysed agrees with the count at 66.7 % of the 3 counted points" in html
            and "(4 points laid, 1 cannot tell, 0 not called.)" in html)
    assert "area % (mask)" in html and "found (recall)" in html
    assert "Checked by point counting" not in build_report(summarize(m), tables(m), options=Options())


def test_calls_as_scribbles_draw_a_disc_per_called_mineral():
    points = np.array([[10, 10], [10, 30], [30, 10], [30, 30]])
    m = calls_as_scribbles((40, 40), points, [1, CANNOT_TELL, NOT_CALLED, 6], radius=2)
    assert m[10, 10] == 1 and m[30, 30] == 6 and m[10, 30] == 255 and m[30, 10] == 255
    assert (m == 1).sum() == 13 and (m == 6).sum() == 13  # a disc of radius 2: 13 pixels
    base = np.full((40, 40), 255, np.uint8)
    base[0, :] = 8
    both = calls_as_scribbles((40, 40), points, [1, 1, 1, 1], base=base)
    assert (both[0] == 8).all() and (both[points[:, 0], points[:, 1]] == 1).all() and (base[10, 10] == 255)
    with pytest.raises(ValueError, match="not 40×40"):
        calls_as_scribbles((40, 40), points, [1] * 4, base=base[:20])


def test_agreement_sentence_counts_only_the_points_on_labelled_pixels():
    from core.stats.pointcount import agreement_sentence

    labels = np.zeros((10, 10), np.uint8)
    labels[5:] = 255
    points = np.array([[1, 1], [2, 2], [7, 7]])
    res = check(points, [0, 1, 0], labels)
    lo, hi = wilson_interval(1, 2)
    assert agreement_sentence(res, what="the expert mask") == (
        f"The expert mask agrees with the count at 50.0 % of the 2 counted points (95 % interval {100 * lo:.1f}–"
        f"{100 * hi:.1f} %; 1 on its unlabelled pixels left out), Cohen's kappa 0.00.")
    assert agreement_sentence(check(points, [-1, -1, -1], labels)) == "No point is called yet."
    assert "None of the 1 counted points" in agreement_sentence(check(points, [-1, -1, 0], labels))


def test_pooled_counts_equal_one_count_over_the_fields_side_by_side():
    from core.stats.pointcount import pool_checks

    rng = np.random.default_rng(3)
    a = rng.choice([0, 1, 6], size=(30, 40)).astype(np.uint8)
    b = rng.choice([0, 2, 6, 255], size=(30, 50)).astype(np.uint8)
    pa, pb = grid_points(a.shape, 40, seed=1), grid_points(b.shape, 60, seed=2)
    ca = np.where(rng.random(len(pa)) < 0.8, a[pa[:, 0], pa[:, 1]], 1).astype(int)
    cb = np.where(rng.random(len(pb)) < 0.7, b[pb[:, 0], pb[:, 1]], 6).astype(int)
    cb[:3] = [CANNOT_TELL, NOT_CALLED, 8]
    pooled = pool_checks([check(pa, ca, a), check(pb, cb, b)])
    # the same fields side by side in one mask, counted as one
    whole = check(np.vstack([pa, pb + [0, 40]]), np.concatenate([ca, cb]), np.hstack([a, b]))
    assert pooled == whole  # the same sums, so the same figures exactly
    every = np.concatenate([ca, cb])
    assert pooled["called"] == int(((every != NOT_CALLED) & (every != CANNOT_TELL)).sum()) == 80
    assert pooled["kappa"] is not None and pooled["mask_area"] == {"0": int((a == 0).sum() + (b == 0).sum()),
                                                                    "1": int((a == 1).sum()), "2": int((b == 2).sum()),
                                                                    "6": int((a == 6).sum() + (b == 6).sum())}
    alone = pool_checks([check(pa, ca), check(pb, cb)])  # without masks: the count's figures only
    assert "agreement" not in alone and alone == check(np.vstack([pa, pb + [0, 40]]), np.concatenate([ca, cb]))
    with pytest.raises(ValueError, match="no point count"):
        pool_checks([])


def test_pooled_checks_per_sample_and_over_all():
    from core.stats.pointcount import pool_checks, pooled_checks

    labels = np.zeros((20, 20), np.uint8)
    labels[:, 10:] = 1
    pts = grid_points(labels.shape, 16)
    truth = labels[pts[:, 0], pts[:, 1]]
    checks = {n: check(pts, np.where(np.arange(16) < k, 6, truth), labels) for n, k in (("a", 0), ("b", 4), ("c", 8))}
    got = pooled_checks(checks, {"a": "S1", "b": "S1", "c": "S2"})
    assert list(got) == ["sample S1 (2 images)", "all 3 images"]
    assert got["sample S1 (2 images)"] == pool_checks([checks["a"], checks["b"]])
    assert got["all 3 images"]["agreement"] == pytest.approx((16 + 12 + 8) / 48)
    assert list(pooled_checks(checks)) == ["all 3 images"]
    assert pooled_checks({"a": checks["a"]}) == {}
    # one sample holding every counted image: its pool is the pool of all, given once
    assert list(pooled_checks(checks, {"a": "S", "b": "S", "c": "S"})) == ["all 3 images"]
