"""Real-browser tests: ``streamlit run app.py`` driven by headless Chromium.

Debian's ``chromium`` (``/usr/bin/chromium``) is driven through the Playwright
Python package; the browser bundled with Playwright is never used or
downloaded. Screenshots go to ``test-artifacts/browser/`` (kept by CI as
artifacts, ignored by git).

Every page is built: the whole-workflow steps exercise each one for real and it
must work (a page that says its step "is not built yet" fails).
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGES = ["Upload & calibrate", "Stitch", "Register XPL", "Segment", "Annotate", "Statistics"]
PLACEHOLDER = re.compile(r"is not built yet", re.I)
# one engine step on 2 CPU cores (segmentation or propagation on a demo image); raise it on a busy machine
STEP_TIMEOUT_MS = int(float(os.environ.get("ORELENS_BROWSER_STEP_TIMEOUT", "300")) * 1000)


# --------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium missing): apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    return CHROMIUM


@contextlib.contextmanager
def _streamlit(log_name: str = "streamlit.log", **env_extra: str):
    """URL of a fresh ``streamlit run app.py`` on a free port (``env_extra`` added to its environment), stopped on
    exit."""
    port = _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    streamlit = Path(sys.executable).with_name("streamlit")
    cmd = [str(streamlit) if streamlit.exists() else sys.executable, *([] if streamlit.exists() else ["-m", "streamlit"]),
           "run", "app.py", "--server.port", str(port), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--client.showErrorDetails", "full"]
    log = open(ARTIFACTS / log_name, "w")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **env_extra}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {proc.returncode}; see {ARTIFACTS / log_name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("streamlit did not report healthy within 90 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def server(chromium):
    """URL of a fresh ``streamlit run app.py`` on a free port; stopped at the end of the session."""
    with _streamlit() as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _new_session(browser, server):
    """A fresh browser context (cookies, session) with the app loaded."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    page.get_by_role("button", name="Load demo sample").wait_for(timeout=90_000)
    settle(page)
    return ctx, page


# --------------------------------------------------------------------------- helpers


def settle(page, timeout: int = STEP_TIMEOUT_MS) -> None:
    """Wait until the app's script has finished running (and stayed finished briefly)."""
    page.wait_for_timeout(400)
    deadline = time.time() + timeout / 1000
    quiet_since = None
    while time.time() < deadline:
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        if state in ("notRunning", "initial") or state is None:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 0.6:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(200)
    raise AssertionError(f"the app was still running after {timeout / 1000:.0f} s")


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(p), full_page=True)
    return p


def assert_no_exception(page, where: str) -> None:
    exc = page.locator('[data-testid="stException"]')
    if exc.count():
        shot(page, f"exception-{re.sub(r'[^a-z0-9]+', '-', where.lower())}")
        raise AssertionError(f"{where}: exception box shown: {exc.first.inner_text()[:800]}")


def errors(page) -> list[str]:
    return [t.strip() for t in page.locator('[data-testid="stAlertContentError"]').all_inner_texts()]


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def go(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).first.click()
    page.locator('[data-testid="stMain"] h1, [data-testid="stMain"] h2', has_text=title).first.wait_for(timeout=60_000)
    settle(page)
    assert_no_exception(page, title)


def placeholder(page) -> bool:
    return bool(PLACEHOLDER.search(main_text(page)))


def button(page, pattern: str):
    """The first enabled main-area button whose label matches ``pattern`` (regex, case-insensitive), or None."""
    loc = page.locator('[data-testid="stMain"] button').filter(has_text=re.compile(pattern, re.I))
    for i in range(loc.count()):
        b = loc.nth(i)
        if b.is_visible() and b.is_enabled():
            return b
    return None


def load_demo(page) -> None:
    page.get_by_role("button", name="Load demo sample").click()
    settle(page)
    page.locator('[data-testid="stSidebar"]').get_by_text(re.compile(r"\d+ image\(s\) in this session")).wait_for()
    assert_no_exception(page, "load demo sample")


# --------------------------------------------------------------------------- test 1: every page renders


def test_a_page_address_opened_first_on_a_fresh_server_gets_the_whole_app(browser):
    """A bookmark (or a tab restored after a restart) on a page's own address, before anyone opened the app's
    root: the page must come with the app's sidebar, model and demo, not as a bare script."""
    with _streamlit("streamlit-deep-link.log", ORELENS_AUTOLOAD_DEMO="1") as url:  # as a user starts it
        ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(90_000)
        try:
            page.goto(f"{url}/statistics")
            page.get_by_role("button", name="Load demo sample").wait_for()
            settle(page)
            main = page.locator('[data-testid="stMain"]')
            assert main.get_by_role("heading", name="Statistics").count() == 1
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Upload & calibrate" in nav and "upload calibrate" not in nav, nav
            assert page.get_by_text("3 image(s) in this session").count() == 1  # the demo was loaded
            assert page.url.rstrip("/").endswith("/statistics")
            shot(page, "deep-link-statistics")
        finally:
            ctx.close()


def test_saved_session_downloads_from_the_sidebar_and_opens_in_a_new_session(browser, server, tmp_path):
    ctx, page = _new_session(browser, server)
    try:
        page.get_by_role("button", name="Load demo sample").click()
        settle(page)
        save = page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Save this session's work")
        assert save.count() == 1, save.count()
        with page.expect_download(timeout=120_000) as dl:
            save.click()
        path = tmp_path / (dl.value.suggested_filename or "session.zip")
        dl.value.save_as(str(path))
        assert path.name == "orelens-session.zip"
        from ui.archive import unpack

        saved = unpack(path.read_bytes())
        assert sorted(saved["images"]) == ["demo-05", "demo-a14", "demo-a55"]
        assert all(r["gt"] is not None for r in saved["images"].values())
    finally:
        ctx.close()
    # a new session (as after a reload) opens the file on Upload & calibrate
    ctx, page = _new_session(browser, server)
    try:
        go(page, "Upload & calibrate")
        page.locator('[data-testid="stMain"] [data-testid="stExpander"]', has_text="Open saved work").first.click()
        page.locator('[data-testid="stMain"] input[type="file"]').nth(1).set_input_files(str(path))
        settle(page)
        button(page, r"^Open$").click()
        settle(page)
        assert_no_exception(page, "open saved work")
        page.get_by_text("Opened the session saved").first.wait_for(timeout=60_000)
        assert page.get_by_text("3 image(s) in this session").count() == 1
    finally:
        ctx.close()


def test_upload_messages_stay_readable_after_the_page_settles(browser, server, tmp_path):
    """Adding photographs reruns the app; the Upload page then runs once more by itself (its drawing canvas
    reports its size). The message naming what was added and which file failed must survive that."""
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    ctx, page = _new_session(browser, server)
    try:
        go(page, "Upload & calibrate")
        page.locator('[data-testid="stMain"] input[type="file"]').first.set_input_files(
            [str(ROOT / "samples/imgs/demo/05.jpg"), str(bad)])
        settle(page)
        page.get_by_role("button", name="Add to this session").click()
        settle(page)
        page.wait_for_timeout(3000)
        settle(page)
        assert page.get_by_text(re.compile(r"Added 1 image\(s\)")).count() == 1
        assert any("broken" in e for e in errors(page)), errors(page)
    finally:
        ctx.close()


def test_all_pages_render_after_loading_demo(browser, server):
    ctx, page = _new_session(browser, server)
    try:
        load_demo(page)
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "3 image(s) in this session" in sidebar
        links = page.locator('[data-testid="stSidebarNavLink"]')
        assert links.count() == len(PAGES), links.all_inner_texts()
        for i, title in enumerate(PAGES):
            go(page, title)
            assert_no_exception(page, title)
            shot(page, f"page-{i + 1}-{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}")
    finally:
        ctx.close()


# --------------------------------------------------------------------------- test 2: the whole workflow


@pytest.fixture(scope="module")
def workflow(browser, server):
    """One browser session shared by the workflow steps below (they run in file order)."""
    ctx, page = _new_session(browser, server)
    state = {"page": page, "done": set()}
    yield state
    ctx.close()


def _assert_built(page, step: str) -> None:
    if placeholder(page):
        shot(page, f"workflow-{step}-placeholder")
        raise AssertionError(f"the {step} page says it is not built yet")


def _run_step(page, label_pattern: str, step: str) -> None:
    b = button(page, label_pattern)
    assert b is not None, f"{step}: no enabled button matching /{label_pattern}/ on the page"
    b.click()
    settle(page)
    assert_no_exception(page, step)


def test_workflow_1_load_sample(workflow):
    page = workflow["page"]
    load_demo(page)
    assert "3 image(s) in this session" in page.locator('[data-testid="stSidebar"]').inner_text()
    shot(page, "workflow-1-sample")
    workflow["done"].add("sample")


def test_workflow_2_calibrate(workflow):
    page = workflow["page"]
    go(page, "Upload & calibrate")
    _assert_built(page, "calibrate")
    # The demo images come with expert masks: part of one serves as the user's partial annotation.
    opt = page.locator('[data-testid="stMain"] [data-testid="stRadio"] label').filter(
        has_text=re.compile(r"part of .*(ground.truth|expert)", re.I))
    assert opt.count() == 1, "calibrate: no choice of part of the demo image's expert mask"
    opt.first.click()
    settle(page)
    _run_step(page, r"^\s*calibrate|colour.correct|color.correct", "calibrate")
    assert not errors(page), f"calibrate: {errors(page)}"
    page.locator('[data-testid="stMain"] [data-testid="stDownloadButton"]').filter(
        has_text=re.compile(r"correct", re.I)).first.wait_for(timeout=STEP_TIMEOUT_MS)
    shot(page, "workflow-2-calibrate")
    # the zip of every corrected image holds them (it is built after the script run, from the session's images)
    zip_button = page.locator('[data-testid="stMain"]').get_by_role(
        "button", name=re.compile(r"Download all \d+ corrected images")).first
    promised = int(re.search(r"Download all (\d+) corrected images", zip_button.inner_text()).group(1))
    with page.expect_download(timeout=120_000) as dl:
        zip_button.click()
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(pathlib_read(dl.value))).namelist()
    assert len(names) == promised >= 1 and all(n.endswith(".png") for n in names), (promised, names)
    workflow["done"].add("calibrate")


def pathlib_read(download) -> bytes:
    """The bytes of a finished Playwright download."""
    return Path(download.path()).read_bytes()


def test_workflow_3_segment(workflow):
    page = workflow["page"]
    go(page, "Segment")
    _assert_built(page, "segment")
    errs = errors(page)
    if errs:  # the shipped model (models/default) must load
        shot(page, "workflow-3-segment-error")
    assert not errs, f"segment: {errs}"
    _run_step(page, r"^\s*segment this image", "segment")
    assert not errors(page), f"segment: {errors(page)}"
    page.locator('[data-testid="stDownloadButton"]').first.wait_for(timeout=STEP_TIMEOUT_MS)
    shot(page, "workflow-3-segment")
    workflow["done"].add("segment")


def test_workflow_3b_point_count_by_keys(workflow):
    """The point count answers its keys in a real browser: 1 calls the first mineral, X cannot tell, B goes back."""
    if "segment" not in workflow["done"]:
        pytest.skip("needs the segmentation of step 3")
    page = workflow["page"]
    main = page.locator('[data-testid="stMain"]')
    main.get_by_role("button", name="Lay the grid and start").click()
    settle(page)
    main.get_by_text(re.compile(r"0 of \d+ points called")).first.wait_for(timeout=STEP_TIMEOUT_MS)
    page.evaluate("document.activeElement && document.activeElement.blur()")  # the keys go to the page, not an input
    for key in ("1", "X"):
        page.keyboard.press(key)
        settle(page)
    main.get_by_text(re.compile(r"2 of \d+ points called")).first.wait_for(timeout=STEP_TIMEOUT_MS)
    page.keyboard.press("B")
    settle(page)
    text = main.inner_text()
    assert "Point 2: you called cannot tell" in text, text[-3000:]
    assert re.search(r"agrees with the count at [\d.]+ % of the 1 counted points", text), text[-3000:]
    assert_no_exception(page, "point count")
    shot(page, "workflow-3b-point-count")


def _draw_stroke(page, fx: float = 0.3, fy: float = 0.4) -> None:
    """Drag the mouse across the drawing canvas (in the page or in a component frame), from (fx, fy) of its box."""
    candidates = [page.locator("canvas.upper-canvas"), page.locator('[data-testid="stMain"] canvas')]
    for fr in page.frames[1:]:
        candidates += [fr.locator("canvas.upper-canvas"), fr.locator("canvas")]
    for loc in candidates:
        for i in range(loc.count() - 1, -1, -1):
            c = loc.nth(i)
            box = c.bounding_box()
            if not box or box["width"] < 50 or box["height"] < 50:
                continue
            c.scroll_into_view_if_needed()
            box = c.bounding_box()
            x0, y0 = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
            page.mouse.move(x0, y0)
            page.mouse.down()
            for k in range(1, 21):
                page.mouse.move(x0 + k * box["width"] * 0.012, y0 + k * box["height"] * 0.006)
            page.mouse.up()
            return
    raise AssertionError("annotate: no drawing canvas found on the page")


def _result_stats(page, previous: str | None = None) -> str:
    """Text of the propagated mask's statistics; waits until it differs from ``previous``."""
    loc = page.locator(".st-key-annotate-result-stats")
    loc.first.wait_for(timeout=STEP_TIMEOUT_MS)
    deadline = time.time() + STEP_TIMEOUT_MS / 1000
    text = loc.first.inner_text()
    while previous is not None and text == previous and time.time() < deadline:
        page.wait_for_timeout(300)
        text = loc.first.inner_text()
    return text


def _changed_share(text: str) -> float:
    m = re.search(r"Strokes changed ([\d.]+)% of the pixels", text)
    assert m, f"annotate: no changed-pixel share in the mask statistics: {text!r}"
    return float(m.group(1))


def test_workflow_4_annotate_a_stroke(workflow):
    """Strokes drawn with the mouse change the propagated mask, and each further stroke changes it again."""
    page = workflow["page"]
    go(page, "Annotate")
    _assert_built(page, "annotate")
    page.wait_for_timeout(1500)  # the canvas component mounts after the script run
    # a mineral the default model never predicts, so that the stroke must change the starting mask
    page.locator(".st-key-annotate-mineral").click()
    page.keyboard.type("covellite")
    page.keyboard.press("Enter")
    settle(page)
    chosen = page.locator(".st-key-annotate-mineral").inner_html()  # the chosen value is not in inner_text
    assert "covellite" in chosen, "annotate: could not choose covellite in the mineral box"
    assert page.locator(".st-key-annotate-result-stats").count() == 0, "a mask was shown before any stroke"
    page.wait_for_timeout(1000)
    _draw_stroke(page, 0.25, 0.35)
    settle(page)
    assert_no_exception(page, "annotate")
    assert not errors(page), f"annotate: {errors(page)}"
    first = _result_stats(page)
    assert "cv" in first, f"annotate: the stroke's mineral is not in the mask: {first!r}"
    share1 = _changed_share(first)
    assert share1 > 0, first
    src1 = page.locator(".st-key-annotate-result img").first.get_attribute("src")
    _draw_stroke(page, 0.6, 0.65)
    settle(page)
    assert_no_exception(page, "annotate")
    second = _result_stats(page, previous=first)
    share2 = _changed_share(second)
    assert share2 > share1, (first, second)
    assert page.locator(".st-key-annotate-result img").first.get_attribute("src") != src1
    # the propagated mask can be downloaded
    page.locator('[data-testid="stMain"] [data-testid="stDownloadButton"]').filter(
        has_text=re.compile(r"mask", re.I)).first.wait_for(timeout=STEP_TIMEOUT_MS)
    shot(page, "workflow-4-annotate")
    workflow["done"].add("annotate")


def test_workflow_5_statistics_and_report(workflow, tmp_path):
    page = workflow["page"]
    go(page, "Statistics")
    _assert_built(page, "statistics")
    # the demo's expert masks are there to measure even without the steps above
    _run_step(page, r"^\s*compute statistics", "statistics")
    assert_no_exception(page, "statistics")
    assert not errors(page), f"statistics: {errors(page)}"
    report = page.locator('[data-testid="stDownloadButton"]').filter(has_text=re.compile(r"report", re.I))
    report.first.wait_for(timeout=STEP_TIMEOUT_MS)
    shot(page, "workflow-5-statistics")
    with page.expect_download(timeout=60_000) as dl:
        report.first.locator("button").first.click() if report.first.locator("button").count() else report.first.click()
    d = dl.value
    out = ARTIFACTS / (d.suggested_filename or "report")
    d.save_as(str(out))
    data = out.read_bytes()
    assert len(data) > 200, f"the downloaded report {out.name} is only {len(data)} bytes"
    assert out.suffix.lower() == ".html", out.name
    text = data.decode("utf-8", "replace").lower()
    assert "<html" in text and ("%" in text or "fraction" in text)
    settle(page)
    # two downloads clicked one right after the other both arrive: a download does not rerun the page, which
    # would withdraw the other button's file before its click is served
    got = []
    page.on("download", lambda d: got.append(d))
    for label in ("Statistics (JSON)", "Tables (CSV, zip)", "Tables (XLSX)"):
        page.locator('[data-testid="stDownloadButton"]').filter(has_text=label).first.locator("button").first.click()
    for _ in range(120):
        if len(got) == 3:
            break
        page.wait_for_timeout(500)
    assert sorted(Path(d.suggested_filename).suffix for d in got) == [".json", ".xlsx", ".zip"], \
        [d.suggested_filename for d in got]
    assert all(Path(d.path()).stat().st_size > 20 for d in got)
    assert_no_exception(page, "download report")
    workflow["done"].add("statistics")
