"""ganforge studio end to end: Playwright drives Debian's Chromium (/usr/bin/chromium) through every panel
of a studio started with `python -m ganforge studio` on tiny runs, and checks that the images shown
change when the inputs do. Screenshots are kept under the test's tmp_path."""

import os
import socket
import subprocess
import sys

import pytest
from conftest import make_shapes_folder, skip_or_fail, tiny_config

from ganforge import train
from ganforge.config import TrainConfig

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        skip_or_fail(f"the browser test needs Playwright: pip install 'ganforge[studio]' playwright ({e})")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"the studio needs fastapi and uvicorn: pip install 'ganforge[studio]' ({e})")
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"the browser test needs Debian's Chromium at {CHROMIUM}: apt-get install chromium")
    return sync_playwright


@pytest.fixture(scope="module")
def studio_url(sync_playwright, tmp_path_factory):
    """A studio on a free port, serving a tiny DCGAN run and a tiny StackGAN (Stage-I + Stage-II)."""
    runs = tmp_path_factory.mktemp("runs")
    train(tiny_config(steps=10), runs_dir=runs, progress=False)
    shapes = make_shapes_folder(tmp_path_factory.getbasetemp() / "browser-shapes")
    text = {"model": "stackgan1", "data": f"captions:{shapes}", "image_size": 32, "g_width": 8, "d_width": 8,
            "z_dim": 8, "c_dim": 8, "text_dim": 16, "text_pretrain_steps": 5, "batch_size": 16,
            "log_every": 2, "n_samples": 16, "steps": 4}
    stage1 = train(TrainConfig(**text).validate(), runs_dir=runs, progress=False)
    train(TrainConfig(**(text | {"model": "stackgan2", "stage1": str(stage1), "image_size": None, "steps": 2})
                      ).validate(), runs_dir=runs, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GANFORGE_CACHE": str(tmp_path_factory.getbasetemp() / "cache")}
    server = subprocess.Popen([sys.executable, "-m", "ganforge", "studio", str(runs), "--port", str(port),
                               "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + server.stdout.read() if server.poll() is not None else line
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(10)


def shown(page, element_id: str) -> int:
    """The version of an image: how many times the page has loaded a new picture into it."""
    return int(page.eval_on_selector(f"#{element_id}", "el => Number(el.dataset.version || 0)"))


def wait_new(page, element_id: str, than: int = 0) -> bytes:
    """Wait until the image has loaded a picture newer than version `than`; -> its screenshot."""
    page.wait_for_function("([id, v]) => { const el = document.getElementById(id); "
                           "return Number(el.dataset.version || 0) > v && el.dataset.state === 'ready'; }",
                           arg=[element_id, than], timeout=20_000)
    return page.locator(f"#{element_id}").screenshot()


def click_cell(page, element_id: str, index: int, columns: int = 4) -> None:
    box = page.locator(f"#{element_id}").bounding_box()
    cell = box["width"] / columns
    page.mouse.click(box["x"] + cell * (index % columns + 0.5), box["y"] + cell * (index // columns + 0.5))


def test_click_through_every_panel(sync_playwright, studio_url, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(f"offline? {r.url}") if not r.url.startswith(studio_url) and
                not r.url.startswith("blob:") else None)
        page.goto(studio_url)

        # explore: next / previous seed and the truncation slider change the grid
        first = wait_new(page, "explore-grid")
        page.click("#next-seed")
        assert page.input_value("#seed") == "1"
        second = wait_new(page, "explore-grid", 1)
        assert second != first
        page.click("#prev-seed")
        assert wait_new(page, "explore-grid", 2) == first
        v = shown(page, "explore-grid")
        page.check("#truncate")
        truncated = wait_new(page, "explore-grid", v)
        assert truncated != first
        v = shown(page, "explore-grid")
        page.fill("#truncation", "0.2")
        assert wait_new(page, "explore-grid", v) != truncated
        v = shown(page, "explore-grid")
        page.uncheck("#truncate")
        assert wait_new(page, "explore-grid", v) == first
        click_cell(page, "explore-grid", 0)
        click_cell(page, "explore-grid", 5)
        assert page.locator("#selection img").count() == 2
        assert page.locator("#explore-marks .mark").count() == 2

        # a slider per latent direction moves the two selected samples; back at 0 they are as drawn
        assert page.locator("#sliders input").count() == 10  # sefa's 10 strongest directions
        unmoved = wait_new(page, "moved")
        v = shown(page, "moved")
        page.fill("#sliders input[data-direction='0']", "3")
        moved = wait_new(page, "moved", v)
        assert moved != unmoved
        v = shown(page, "moved")
        page.click("#directions-reset")
        assert wait_new(page, "moved", v) == unmoved
        page.screenshot(path=shots / "explore.png")

        # interpolate: the strip between the two samples, and the frame at t follows the slider
        page.click("#tab-interpolate")
        strip = wait_new(page, "interp-strip")
        frame = wait_new(page, "interp-frame")
        v = shown(page, "interp-frame")
        page.fill("#interp-t", "0.95")
        assert wait_new(page, "interp-frame", v) != frame
        v = shown(page, "interp-strip")
        page.select_option("#interp-method", "slerp")
        assert wait_new(page, "interp-strip", v) != strip
        page.screenshot(path=shots / "interpolate.png")

        # arithmetic: click samples into A, B, C; dragging another into C changes A - B + C
        page.click("#tab-arithmetic")
        wait_new(page, "arith-source")
        for index in (1, 2, 3):
            click_cell(page, "arith-source", index)
        result = wait_new(page, "arith-grid")
        v = shown(page, "arith-grid")
        source = page.locator("#arith-source").bounding_box()
        cell = source["width"] / 4
        page.locator("#arith-source").drag_to(page.locator("#slot-c"),
                                              source_position={"x": cell * 3.5, "y": cell * 2.5})
        assert page.locator("#slot-c .items img").count() == 2
        assert wait_new(page, "arith-grid", v) != result
        page.screenshot(path=shots / "arithmetic.png")

        # text to image: Stage-I and Stage-II side by side, changing with the prompt
        stackgan = page.eval_on_selector("#model", "s => [...s.options].find(o => o.text.includes('stackgan2')).value")
        page.select_option("#model", stackgan)
        page.click("#tab-text")
        page.fill("#prompt", "a red disc")
        page.click("#t2i-go")
        coarse, fine = wait_new(page, "t2i-stage1"), wait_new(page, "t2i-stage2")
        page.fill("#prompt", "a blue square")
        page.click("#t2i-go")
        assert wait_new(page, "t2i-stage1", 1) != coarse
        assert wait_new(page, "t2i-stage2", 1) != fine
        page.screenshot(path=shots / "text.png")

        # an invalid prompt is answered with the server's message
        page.fill("#t2i-seed", "99999999999999999999")
        page.click("#t2i-go")
        assert "int64" in page.text_content("#message")

        # training monitor: the run's curves and latest panel
        page.click("#tab-monitor")
        wait_new(page, "monitor-curves")
        wait_new(page, "monitor-panel")
        page.screenshot(path=shots / "monitor.png")
        browser.close()
    assert not errors, errors
