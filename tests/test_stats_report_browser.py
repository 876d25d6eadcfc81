"""The HTML statistics report opens in headless Chromium, offline, with every chart rendered."""
from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = pathlib.Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    from core.io import list_dataset, read_image, read_mask
    from core.stats import Options, measure, summarize, tables
    from core.stats.report import build_report, thumbnail

    items = list_dataset(ROOT / "samples", "demo")
    results, thumbs = {}, {}
    for it in items:
        mask = read_mask(it.mask)
        results[it.stem] = measure(mask, pixel_size=0.345)
        thumbs[it.stem] = thumbnail(image=read_image(it.image), mask=mask)
    opts = Options()
    samples = {k: "copper-nickel" if k == "05" else "base metal" for k in results}  # two samples compared
    html = build_report(summarize(results, options=opts, samples=samples),
                        tables(results, options=opts, samples=samples), options=opts,
                        thumbnails=thumbs, sources={k: "expert mask" for k in results})
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_report_is_self_contained(report_file):
    html = report_file.read_text(encoding="utf-8")
    assert "<script src" not in html and "<link" not in html  # plotly.js inline, no external files
    body = html.split("</head>", 1)[1]  # plotly.js itself, inline in the head, holds data URIs of its own
    assert body.count('src="data:image/png;base64,') == 3 and body.count('src="data:image/jpeg;base64,') == 3
    for words in ("Modal mineralogy", "Grains", "Associations", "Method", "crofton", "d10/d50/d90", "0.345 µm/px",
                  "How the minerals occur", "Liberation", "Samples compared (2)",
                  "copper-nickel: 05; base metal: a14, a55"):
        assert words in html


def test_report_renders_in_headless_chromium(report_file):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    def drive():  # in its own thread: an earlier test may have left an asyncio loop on this one
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                external, problems = [], []
                page.on("request", lambda r: external.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(report_file.as_uri())
                # modal (with and without background), size by area and by number, associations, occurrence,
                # liberation and the samples compared
                page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 8",
                                       timeout=60_000)
                assert page.locator(".js-plotly-plot").count() == 8
                # bars, curve points and heat-map cells are drawn, not just empty axes
                assert page.locator(".js-plotly-plot .barlayer .point").count() > 10
                assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 2
                assert page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").count() >= 1
                assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
                page.screenshot(path=str(ARTIFACTS / "stats-report.png"), full_page=True)
                assert not external, f"the report fetched {external[:3]}"
                assert not problems, problems
            finally:
                browser.close()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        ex.submit(drive).result()
    assert (ARTIFACTS / "stats-report.png").stat().st_size > 10_000
