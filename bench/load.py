"""Several users at once: N concurrent headless-browser sessions against one local OreLens server.

Each session opens the app in its own browser context (its own Streamlit
session), brings in a different image, segments it and computes its
statistics. The script reports per step the number of successes and the
median / p95 latency, checks that no session ever shows another session's
image name, and reports the server's peak resident memory.

Images: each session loads the demo sample (whose expert masks let the
Statistics step run even before a model exists) and then uploads its own,
uniquely named 1600x1200 crop of a held-out LumenStone image (13, 21, a06,
a14, ...: not used to train the default model) on the Upload & calibrate page;
that image is the one it segments. The isolation check looks for the other
sessions' upload names in everything a session shows, and for an image count
other than its own four. Without an upload widget a session picks demo image
``i mod 3`` instead.

Usage::

    nice -n 19 .venv/bin/python bench/load.py --sessions 4
    nice -n 19 .venv/bin/python bench/load.py --sessions 4 --url http://127.0.0.1:8501   # an already running server

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import io as cio  # noqa: E402

__all__ = ["SessionResult", "run_load", "main"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
HELD_OUT = ["13", "21", "a06", "a14", "a23", "a31", "a39", "a47", "a55", "05"]
DATA = ROOT.parent / "shared" / "data" / "lumenstone" / "imgs" / "train"
STEPS = ("open", "image", "segment", "statistics")


@dataclass
class SessionResult:
    """What one simulated user saw."""

    index: int
    image_name: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # step -> "ok" | "skipped: why" | "failed: why"
    foreign_names_seen: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- server and memory


class Server:
    """``streamlit run app.py`` on a free port, with its resident memory sampled every 0.2 s."""

    def __init__(self, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        streamlit = Path(sys.executable).with_name("streamlit")
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(streamlit), "run", "app.py", "--server.port", str(self.port), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def wait_healthy(self, timeout: float = 120) -> None:
        t_end = time.time() + timeout
        while time.time() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2):
                    self._thread.start()
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("streamlit did not become healthy")

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = rss_mib(self.proc.pid)
            if rss:
                self.samples.append(rss)
            time.sleep(0.2)

    def peak_mib(self) -> float:
        hwm = status_field_mib(self.proc.pid, "VmHWM")
        return max([hwm or 0.0, *self.samples])

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def status_field_mib(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    return status_field_mib(pid, "VmRSS")


# --------------------------------------------------------------------------- browser helpers


async def settle(page, timeout: float = 600) -> None:
    """Wait until the session's script has stopped running (and stayed stopped briefly)."""
    await page.wait_for_timeout(400)
    t_end = time.time() + timeout
    quiet = None
    while time.time() < t_end:
        st = await page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        if st in (None, "notRunning", "initial"):
            quiet = quiet or time.time()
            if time.time() - quiet > 0.6:
                return
        else:
            quiet = None
        await page.wait_for_timeout(250)
    raise TimeoutError(f"the app was still running after {timeout:.0f} s")


async def go(page, title: str) -> None:
    await page.locator('[data-testid="stSidebarNavLink"]', has_text=title).first.click()
    await page.locator('[data-testid="stMain"] h1, [data-testid="stMain"] h2', has_text=title).first.wait_for(timeout=120_000)
    await settle(page)


async def main_text(page) -> str:
    return await page.locator('[data-testid="stMain"]').inner_text()


async def exception_text(page) -> str | None:
    exc = page.locator('[data-testid="stException"]')
    return (await exc.first.inner_text())[:300] if await exc.count() else None


async def error_texts(page) -> list[str]:
    return [t.strip() for t in await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()]


async def click_button(page, pattern: str) -> bool:
    loc = page.locator('[data-testid="stMain"] button').filter(has_text=re.compile(pattern, re.I))
    for i in range(await loc.count()):
        b = loc.nth(i)
        if await b.is_visible() and await b.is_enabled():
            await b.click()
            return True
    return False


async def visible_image_names(page) -> str:
    """All text the session shows, plus the options of the sidebar's image picker."""
    text = await page.locator('[data-testid="stApp"]').inner_text()
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    if await picker.count():
        await picker.click()
        opts = page.locator('[role="option"]')
        try:
            await opts.first.wait_for(timeout=5000)
            text += "\n" + "\n".join(await opts.all_inner_texts())
        except Exception:
            pass
        await page.keyboard.press("Escape")
    return text


# --------------------------------------------------------------------------- one user


def session_images(n: int, tmp: Path) -> list[Path]:
    """``n`` uniquely named 1600x1200 crops of held-out images (demo crops when the data set is absent)."""
    out = []
    sources = [DATA / f"{s}.jpg" for s in HELD_OUT if (DATA / f"{s}.jpg").exists()]
    if not sources:
        sources = sorted((ROOT / "samples" / "imgs" / "demo").glob("*.jpg"))
    for i in range(n):
        src = sources[i % len(sources)]
        img = cio.read_image(src)
        h, w = img.shape[:2]
        ch, cw = min(1200, h), min(1600, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        p = tmp / f"user{i}-{src.stem}.jpg"
        cio.write_image(p, np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw]), quality=92)
        out.append(p)
    return out


async def one_session(browser, url: str, i: int, image: Path, results: list[SessionResult], timeout: float,
                      shots: Path | None) -> None:
    r = results[i]
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = await ctx.new_page()
    page.set_default_timeout(timeout * 1000)

    async def step(name, coro):
        t0 = time.perf_counter()
        try:
            outcome = await coro
        except Exception as e:  # a failed step is a result of the benchmark, not a crash of it
            outcome = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        r.seconds[name] = time.perf_counter() - t0
        r.status[name] = outcome or "ok"
        exc = await exception_text(page)
        if exc and r.status[name] == "ok":
            r.status[name] = f"failed: exception box: {exc}"
        if shots:
            await page.screenshot(path=str(shots / f"user{i}-{name}.png"))
        return r.status[name] == "ok"

    async def open_app():
        await page.goto(url)
        await page.get_by_role("button", name="Load demo sample").wait_for()
        await settle(page)

    async def bring_image():
        # the demo sample first (its expert masks give the Statistics step something to measure even
        # before a model exists), then this user's own, uniquely named image, which becomes current
        await page.get_by_role("button", name="Load demo sample").click()
        await settle(page)
        await go(page, "Upload & calibrate")
        inputs = page.locator('[data-testid="stMain"] input[type="file"]')
        if await inputs.count():
            await inputs.first.set_input_files(str(image))
            add = page.locator('[data-testid="stMain"] button').filter(
                has_text=re.compile(r"add to (this )?session|\bimport\b", re.I))
            try:  # the upload travels over HTTP first; the button appears after the rerun it triggers
                await add.first.wait_for(timeout=timeout * 1000)
                await settle(page)
                await add.first.click()
            except Exception:
                pass  # pages that take the upload at once
            await settle(page)
            r.image_name = cio.safe_name(image.name)
            errs = await error_texts(page)
            if errs:
                return f"failed: {errs[0][:200]}"
            if r.image_name not in await main_text(page):
                return f"failed: uploaded {image.name} but the page does not confirm it"
            return None
        # no upload widget: pick demo image i mod 3
        picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
        await picker.click()
        opts = page.locator('[role="option"]')
        await opts.first.wait_for()
        k = i % await opts.count()
        r.image_name = (await opts.nth(k).inner_text()).strip()
        await opts.nth(k).click()
        await settle(page)
        return None

    async def segment():
        await go(page, "Segment")
        errs = await error_texts(page)
        if any("Model could not be loaded" in e for e in errs):
            return "skipped: no segmentation model in models/ yet"
        if "not built yet" in await main_text(page):
            return "skipped: the Segment page is still a placeholder"
        if not await click_button(page, r"^\s*segment this image"):
            return "failed: no 'Segment this image' button"
        await settle(page, timeout)
        errs = await error_texts(page)
        if errs:
            return f"failed: {errs[0][:200]}"
        await page.locator('[data-testid="stDownloadButton"]').first.wait_for(timeout=timeout * 1000)
        return None

    async def stats():
        await go(page, "Statistics")
        if "not built yet" in await main_text(page):
            return "skipped: the Statistics page is still a placeholder"
        if not await click_button(page, r"comput|analy|measure|run"):
            warn = await page.locator('[data-testid="stAlertContentWarning"]').all_inner_texts()
            return f"skipped: nothing to analyse ({(warn or ['no enabled Compute button'])[0][:120]})"
        await settle(page, timeout)
        errs = await error_texts(page)
        if errs:
            return f"failed: {errs[0][:200]}"
        rep = page.locator('[data-testid="stDownloadButton"]')
        await rep.first.wait_for(timeout=timeout * 1000)
        return None

    try:
        if await step("open", open_app()):
            if await step("image", bring_image()):
                await step("segment", segment())
                await step("statistics", stats())
        r._page = page  # kept open for the isolation check
        r._ctx = ctx
    except Exception:
        await ctx.close()
        raise


async def run_load(n: int, url: str, *, timeout: float = 600, shots: Path | None = None) -> list[SessionResult]:
    """Run ``n`` concurrent sessions; returns one :class:`SessionResult` per session."""
    from playwright.async_api import async_playwright

    results = [SessionResult(i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="orelens-load-") as tmp:
        images = session_images(n, Path(tmp))
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            await asyncio.gather(*(one_session(browser, url, i, images[i], results, timeout, shots) for i in range(n)))
            # isolation: no session may show a name that belongs only to another session
            own = {r.index: r.image_name for r in results}
            uploaded = all(n_.startswith("user") for n_ in own.values() if n_)
            for r in results:
                page = getattr(r, "_page", None)
                r.foreign_names_seen = []
                if page is None:
                    continue
                text = await visible_image_names(page)
                for j, name in own.items():
                    if j == r.index or not name or name == r.image_name:
                        continue
                    if uploaded and name in text:
                        r.foreign_names_seen.append(name)
                m = re.search(r"(\d+) image\(s\) in this session", text)
                # the demo sample (+ this user's own upload when it went through), never anyone else's
                expect = 4 if uploaded and r.status.get("image") == "ok" else 3
                if m and int(m.group(1)) != expect:
                    r.foreign_names_seen.append(f"{m.group(1)} images in the session instead of {expect}")
                await r._ctx.close()
            await browser.close()
    return results


# --------------------------------------------------------------------------- report


def summarise(results: list[SessionResult]) -> list[dict]:
    rows = []
    for s in STEPS:
        st = [r.status.get(s, "not reached") for r in results]
        ok = [r.seconds[s] for r in results if r.status.get(s) == "ok"]
        rows.append({
            "step": s, "ok": sum(x == "ok" for x in st), "n": len(results),
            "median_s": statistics.median(ok) if ok else None,
            "p95_s": float(np.percentile(ok, 95)) if ok else None,
            "notes": sorted({x for x in st if x != "ok"}),
        })
    return rows


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))) / 2**20
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def markdown(results, rows, peak, baseline, wall, cmd, model_present) -> str:
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [
        "# Several users at once (`bench/load.py`)", "",
        f"Command: `{cmd}`  ", f"Machine: {machine()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Default model present: {'yes' if model_present else 'no'}  ",
        f"Wall time for all sessions: {wall:.1f} s", "",
        "| step | succeeded | median s | p95 s | notes |", "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['step']} | {r['ok']}/{r['n']} | {fmt(r['median_s'])} | {fmt(r['p95_s'])} | "
                     f"{'; '.join(r['notes']) or ''} |")
    leaks = [(r.index, r.foreign_names_seen) for r in results if r.foreign_names_seen]
    lines += ["", f"Isolation: {'no session showed another session’s image' if not leaks else 'LEAK: ' + str(leaks)}  ",
              f"Server memory: {baseline:.0f} MiB resident when idle, peak {peak:.0f} MiB during the run", "",
              "| session | image | " + " | ".join(STEPS) + " |", "|---|---|" + "---|" * len(STEPS)]
    for r in results:
        cells = [(f"{r.seconds[s]:.1f} s" if r.status.get(s) == "ok" else (r.status.get(s, "–").split(":")[0]))
                 for s in STEPS]
        lines.append(f"| {r.index} | {r.image_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4, help="concurrent browser sessions (default 4)")
    ap.add_argument("--url", default=None, help="an already running server (default: start one)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per step")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.md"), help="markdown report")
    ap.add_argument("--screenshots", default=None, metavar="DIR", help="save a screenshot after every step")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} not found; install Debian's chromium package", file=sys.stderr)
        return 2
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below: stop the server
    server = None
    if args.url is None:
        log = Path(tempfile.gettempdir()) / "orelens-load-server.log"
        server = Server(log)
        server.wait_healthy()
        url = server.url
    else:
        url = args.url
    try:
        baseline = rss_mib(server.proc.pid) if server else 0.0
        t0 = time.perf_counter()
        results = asyncio.run(run_load(args.sessions, url, timeout=args.timeout, shots=shots))
        wall = time.perf_counter() - t0
        peak = server.peak_mib() if server else float("nan")
    finally:
        if server:
            server.stop()
    rows = summarise(results)
    cmd = "nice -n 19 .venv/bin/python bench/load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = markdown(results, rows, peak, baseline or 0.0, wall, cmd.strip(),
                  (ROOT / "models" / "default" / "config.json").exists())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    print(md)
    failed = any(r["ok"] < r["n"] and any(n.startswith("failed") or n == "not reached" for n in r["notes"]) for r in rows)
    leaked = any(r.foreign_names_seen for r in results)
    return 1 if failed or leaked else 0


if __name__ == "__main__":
    raise SystemExit(main())
