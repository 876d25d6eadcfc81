"""Weight percent, calculated element grades and deportment, against values worked out by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core import io as cio
from core.minerals import MINERALS
from core.stats import Options, measure, summarize, tables
from core.stats.chemistry import ATOMIC_WEIGHTS, deportment, element_fractions, grades, mass_fractions


def test_element_fractions_of_ideal_formulas():
    # CuFeS2: 63.546 / (63.546 + 55.845 + 2 × 32.06)
    assert element_fractions(1)["Cu"] == pytest.approx(0.346279, abs=1e-6)
    assert element_fractions(2)["Pb"] == pytest.approx(0.866004, abs=1e-6)  # PbS
    assert element_fractions(8)["Zn"] == pytest.approx(0.670977, abs=1e-6)  # ZnS
    assert element_fractions(7)["Ni"] == pytest.approx(0.342166, abs=1e-6)  # Fe4.5Ni4.5S8
    assert element_fractions(14) == {"Au": 1.0}
    assert element_fractions(0) == {}
    for m in MINERALS:
        if m.code:
            assert m.density and m.composition, m.name
            assert sum(element_fractions(m.code).values()) == pytest.approx(1.0)
            assert all(el in ATOMIC_WEIGHTS for el, _ in m.composition)


# 40 % chalcopyrite, 10 % galena, 50 % gangue (2.7 g/cm³) by area: masses 1.676, 0.758 and 1.35 per unit volume
AREA = {0: 0.5, 1: 0.4, 2: 0.1}


def test_mass_fractions_grades_and_deportment_by_hand():
    w = mass_fractions(AREA, gangue_density=2.7)
    assert w == pytest.approx({0: 1.35 / 3.784, 1: 1.676 / 3.784, 2: 0.758 / 3.784})
    ore = mass_fractions(AREA, background=False)
    assert ore == pytest.approx({1: 1.676 / 2.434, 2: 0.758 / 2.434})
    g = grades(w)
    assert list(g) == ["Cu", "Pb", "Fe", "S"]  # payable metals first; no element the sample lacks
    assert g["Cu"] == pytest.approx(0.153373, abs=1e-6)
    assert g["Pb"] == pytest.approx(0.173475, abs=1e-6)
    assert g["Fe"] == pytest.approx(0.134786, abs=1e-6)
    assert g["S"] == pytest.approx(0.181600, abs=1e-6)
    d = deportment(w)
    assert d["Cu"] == {1: pytest.approx(1.0)}
    assert d["S"] == pytest.approx({1: 0.852193, 2: 0.147807}, abs=1e-6)
    # the gangue density changes the sample's grades but not the ore minerals' shares or the deportment
    w2 = mass_fractions(AREA, gangue_density=3.0)
    assert grades(w2)["Cu"] < g["Cu"]
    d2 = deportment(w2)
    assert set(d2) == set(d) and all(d2[el] == pytest.approx(d[el]) for el in d)
    assert mass_fractions(AREA, gangue_density=3.0, background=False) == pytest.approx(ore)


def test_gangue_density_is_checked():
    for bad in (0, -1, 25, "dense", None):
        with pytest.raises(ValueError, match="gangue density"):
            Options(gangue_density=bad)
    assert Options(gangue_density="2.65").gangue_density == 2.65
    assert Options.from_dict(Options(gangue_density=3.1).as_dict()).gangue_density == 3.1


def _mask() -> np.ndarray:
    m = np.zeros((100, 100), np.uint8)  # 50 % gangue
    m[:40] = 1                           # 40 % chalcopyrite
    m[40:50] = 2                         # 10 % galena
    m[95:, :10] = 255                    # unlabelled pixels count for nothing
    m[95:, 10:20] = 0
    return m


def test_summary_and_tables_carry_the_mass_balance():
    m = _mask()
    res = {"a": measure(m, pixel_size=0.5), "b": measure(m[::-1].copy(), pixel_size=0.5)}
    s = summarize(res, options=Options(gangue_density=2.7))
    area = {int(c): f for c, f in s["total"]["area_fraction"].items()}
    total = s["total"]
    assert {int(c): f for c, f in total["mass_fraction"].items()} == pytest.approx(mass_fractions(area))
    assert total["element_grade"]["Cu"] == pytest.approx(grades(mass_fractions(area))["Cu"])
    assert set(total["element_deportment"]["S"]) == {"1", "2"}
    t = tables(res, options=Options(gangue_density=2.7))
    a = t["assay"].set_index(["image", "element"])
    assert a.loc[("total", "Cu"), "grade"] == pytest.approx(total["element_grade"]["Cu"])
    assert a.loc[("total", "Cu"), "grade_in_ore_minerals"] == pytest.approx(
        (1.676 / 2.434) * element_fractions(1)["Cu"], rel=1e-3)
    d = t["deportment"]
    assert d[(d["image"] == "a") & (d["element"] == "S")]["share"].sum() == pytest.approx(1.0)
    modal = t["modal"]
    assert modal[modal["image"] == "total"]["mass_fraction"].sum() == pytest.approx(1.0)
    bg = modal[(modal["image"] == "total") & (modal["code"] == 0)]
    assert bg["mass_fraction_no_background"].isna().all()


def test_only_gangue_gives_no_grades():
    s = summarize({"x": measure(np.zeros((20, 20), np.uint8), pixel_size=1.0)})
    assert s["total"]["element_grade"] == {} and s["total"]["element_deportment"] == {}
    assert s["total"]["mass_fraction"] == {"0": 1.0}
    t = tables({"x": measure(np.zeros((20, 20), np.uint8), pixel_size=1.0)})
    assert len(t["assay"]) == 0 and len(t["deportment"]) == 0


def test_cli_gangue_density_and_report(tmp_path):
    from core.cli import main

    cio.write_mask(tmp_path / "m.png", _mask())
    out = {}
    for rho in (2.7, 3.3):
        j = tmp_path / f"s{rho}.json"
        rc = main(["stats", str(tmp_path / "m.png"), "--pixel-size", "1", "--gangue-density", str(rho),
                   "--json", str(j), "--report", str(tmp_path / "r.html")])
        assert rc == 0
        out[rho] = json.loads(j.read_text())["total"]
    assert out[3.3]["element_grade"]["Cu"] < out[2.7]["element_grade"]["Cu"]
    assert out[3.3]["mass_fraction_no_background"] == pytest.approx(out[2.7]["mass_fraction_no_background"])
    html = (tmp_path / "r.html").read_text()
    assert "wt % per image" not in html  # one image: no per-image table
    assert "Calculated assay" in html and "wt % of the sample" in html and "gangue density = 3.3 g/cm³" in html
    assert main(["stats", str(tmp_path / "m.png"), "--pixel-size", "1", "--gangue-density", "0"]) == 2


def test_report_gives_wt_percent_per_image():
    from core.stats.report import build_report

    m = _mask()
    res = {"a": measure(m, pixel_size=1.0), "b": measure(np.zeros_like(m), pixel_size=1.0)}
    opts = Options()
    html = build_report(summarize(res, options=opts), tables(res, options=opts), options=opts)
    assert "wt % per image" in html and "Area % per image" in html
