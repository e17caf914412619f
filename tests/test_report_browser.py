"""The HTML reports in a real browser: headless Chromium driven by Selenium (one session for the module).

Needs ``chromium`` and ``chromedriver`` on PATH (Debian: ``apt-get install chromium chromium-driver``;
``PIVAD_CHROMIUM`` / ``PIVAD_CHROMEDRIVER`` point elsewhere) and ``selenium`` (the ``dev`` extra). Without
them the tests skip with the reason, except under CI (``CI`` set), where they fail: CI must run them.
``PIVAD_SCREENSHOTS=DIR`` saves the screenshots of both pages there (``docs/img`` holds the committed ones).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main
from test_detect import CLIP, FAST, make_checkpoint
from test_report import page_data


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not _binary("PIVAD_CHROMIUM", "chromium", "chromium-browser", "google-chrome"):
        return "no Chromium binary (apt-get install chromium, or set PIVAD_CHROMIUM)"
    if not _binary("PIVAD_CHROMEDRIVER", "chromedriver"):
        return "no chromedriver (apt-get install chromium-driver, or set PIVAD_CHROMEDRIVER)"
    return None


def _binary(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("PIVAD_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_binary("PIVAD_CHROMEDRIVER", "chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> list[dict]:
    """Load ``url``; returns the console errors (level SEVERE) seen while loading it."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    wait(driver, "return document.readyState === 'complete' && !!window.pivad")
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver, script: str, timeout: float = 10.0, *args):
    """Poll ``script`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {script}")
        time.sleep(0.05)


def screenshot(driver, name: str, tmp_path: Path) -> None:
    """The whole page, beyond the window's height (Chrome DevTools' captureBeyondViewport)."""
    import base64

    path = tmp_path / name
    width, height = driver.execute_script("return [document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 4000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000  # something was drawn
    if os.environ.get("PIVAD_SCREENSHOTS"):
        target = Path(os.environ["PIVAD_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)


# ------------------------------------------------------------------------------------------ detection


@pytest.fixture(scope="module")
def detect_page(tmp_path_factory) -> Path:
    """A π-VAD detection page of the test clip with one interval, which starts after the first snippet: the
    first random tiny model whose top-scored snippet is not snippet 0, thresholded just below that score."""
    from pivad.detect.pipeline import TorchScorer, detect_video
    from test_detect import fast_encoder

    root = tmp_path_factory.mktemp("detect")
    features = detect_video(CLIP, fast_encoder(), TorchScorer.from_checkpoint(make_checkpoint(root / "0.pt"))).features
    for seed in range(20):
        ckpt = make_checkpoint(root / f"{seed}.pt", seed=seed)
        scores = TorchScorer.from_checkpoint(ckpt)(features)
        top, second = np.sort(scores)[::-1][:2]
        if np.argmax(scores) > 0 and top - second > 1e-5:
            break
    threshold = float((top + second) / 2)  # only the top snippet is above
    out = root / "out"
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--threshold", str(threshold),
                 "--html", *FAST]) == 0  # fmt: skip
    return out / "carphone_40.html"


def test_detection_page_loads_cleanly_with_one_point_per_snippet(browser, detect_page, tmp_path):
    assert open_page(browser, detect_page.as_uri()) == []
    data = page_data(detect_page)
    assert browser.execute_script("return window.pivad.plot.data[0].length") == data["n_snippets"] == 3
    assert browser.execute_script("return window.pivad.plot.data[1]") == pytest.approx(data["scores"])
    assert len(data["intervals"]) == 1
    assert browser.execute_script("return document.querySelectorAll('#intervals tbody tr').length") == 1
    facts = browser.execute_script("return Array.from(document.querySelectorAll('#facts td')).map(t => t.textContent)")
    assert "fps" in facts and "threshold" in facts and any("pivad" in f for f in facts)
    wait(browser, "return document.getElementById('video').readyState >= 2")  # the video decoded its first frame
    screenshot(browser, "detect_page.png", tmp_path)


def test_clicking_an_interval_seeks_the_video_to_its_start(browser, detect_page):
    open_page(browser, detect_page.as_uri())
    start = page_data(detect_page)["intervals"][0]["start_time"]
    wait(browser, "return document.getElementById('video').readyState >= 1")
    browser.find_element("css selector", "#intervals tbody tr").click()
    t = wait(browser, "const v = document.getElementById('video'); return !v.seeking && v.currentTime > 0 && v.currentTime")
    assert t == pytest.approx(start, abs=1e-3)
    left = float(browser.execute_script("return parseFloat(document.getElementById('playhead').style.left)"))
    expected = browser.execute_script("return window.pivad.plot.valToPos(arguments[0], 'x')", start)
    assert left == pytest.approx(expected, abs=0.5)  # the cursor went there too


def test_cursor_moves_while_playing(browser, detect_page):
    open_page(browser, detect_page.as_uri())
    wait(browser, "return document.getElementById('video').readyState >= 2")
    before = float(browser.execute_script("return parseFloat(document.getElementById('playhead').style.left)"))
    browser.execute_script("document.getElementById('video').play()")
    wait(browser, "return document.getElementById('video').currentTime > 0.3")
    after = float(browser.execute_script("return parseFloat(document.getElementById('playhead').style.left)"))
    browser.execute_script("document.getElementById('video').pause()")
    assert after > before + 5  # pixels


def test_timeline_click_and_keys_seek(browser, detect_page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, detect_page.as_uri())
    wait(browser, "return document.getElementById('video').readyState >= 1")
    data = page_data(detect_page)
    over = browser.find_element("css selector", "#timeline .u-over")
    width = over.size["width"]
    x_for = browser.execute_script("return window.pivad.plot.valToPos(0.9, 'x')")  # 0.9 s into the clip
    ActionChains(browser).move_to_element_with_offset(over, x_for - width / 2, 0).click().perform()
    assert wait(browser, "return document.getElementById('video').currentTime") == pytest.approx(0.9, abs=0.02)
    snippet = 16 / data["fps"]
    start = data["intervals"][0]["start_time"]
    assert start > snippet / 2  # the fixture's interval is not at the very start
    body = browser.find_element("css selector", "body")

    def after_key(key, expected: float) -> None:
        body.send_keys(key)
        script = "const t = document.getElementById('video').currentTime; return Math.abs(t - arguments[0]) < 1e-3"
        wait(browser, script, 5.0, expected)

    browser.execute_script("document.getElementById('video').currentTime = 0")
    after_key("n", start)  # next interval
    after_key(Keys.ARROW_RIGHT, start + snippet)  # one snippet on
    after_key("p", start)  # previous interval start
    after_key(Keys.ARROW_LEFT, start - snippet)  # one snippet back
    body.send_keys(" ")
    assert wait(browser, "return !document.getElementById('video').paused")
    body.send_keys(" ")
    assert wait(browser, "return document.getElementById('video').paused")


def test_activation_lines_are_hidden_until_their_legend_entry_is_clicked(browser, detect_page):
    open_page(browser, detect_page.as_uri())
    labels = browser.execute_script("return window.pivad.plot.series.map(s => s.label)")
    assert labels[1:] == ["score", "pose (late PI)", "depth (late PI)"]
    assert browser.execute_script("return window.pivad.plot.series.map(s => s.show)")[1:] == [True, False, False]
    browser.find_elements("css selector", "#timeline .u-legend .u-series")[2].click()
    assert browser.execute_script("return window.pivad.plot.series[2].show") is True


def test_live_page_follows_the_stream(browser):
    from pivad.report.live import live_page_for

    live = live_page_for("camera 0", 25.0, 0.5, "--threshold", {"kind": "pivad", "checkpoint": "b.pt"}, 200, 0)
    try:
        live.add(0, 0.2)
        assert open_page(browser, live.url) == []
        assert browser.execute_script("return window.pivad.plot.data[0].length") == 1
        for s, score in enumerate([0.7, 0.9], start=1):
            live.add(s, score)
        wait(browser, "return window.pivad.plot.data[0].length === 3")
        assert browser.execute_script("return document.querySelectorAll('#intervals tbody tr').length") == 1
        live.finish()
        wait(browser, "return document.getElementById('live-status').textContent === 'stream ended'")
    finally:
        live.close(grace=0)


# ------------------------------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def eval_page(tmp_path_factory, tiny_dataset) -> Path:
    from pivad.engine.trainer import train
    from test_resume import tiny_config

    run = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_dataset, train={"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2,
                                       "selection": "test"})
    train(cfg, run, progress=False)
    assert main(["evaluate", "--run", str(run), "--no-progress", "--no-plots", "--html"]) == 0
    return run / "report.html"


def test_evaluation_page_loads_cleanly(browser, eval_page, tmp_path):
    assert open_page(browser, eval_page.as_uri()) == []
    data = page_data(eval_page)
    rows = browser.execute_script("return document.querySelectorAll('#videos tbody tr').length")
    assert rows == len(data["videos"]) > 0
    assert browser.execute_script("return document.querySelectorAll('#headline tbody tr').length") == 3
    assert browser.execute_script("return window.pivad.roc.series.length") == 1 + 3 + 1  # x, 3 models, chance
    assert browser.execute_script("return !!window.pivad.loss")
    screenshot(browser, "evaluate_page.png", tmp_path)


def test_evaluation_browser_sorts_and_shows_the_right_video(browser, eval_page):
    open_page(browser, eval_page.as_uri())
    videos = page_data(eval_page)["videos"]
    browser.find_element("css selector", 'th[data-sort="fa:best"]').click()  # most false alarms first
    worst = max(videos, key=lambda v: v["fa"]["best"])
    order = browser.execute_script("return Array.from(document.querySelectorAll('#videos tbody tr')).map(r => r.dataset.name)")
    assert order == [v["name"] for v in sorted(videos, key=lambda v: -v["fa"]["best"])] and order[0] == worst["name"]
    browser.find_element("css selector", 'th[data-sort="fa:best"]').click()  # again: reversed
    assert browser.execute_script("return document.querySelector('#videos tbody tr').dataset.name") == order[-1]
    browser.find_element("css selector", f'#videos tbody tr[data-name="{worst["name"]}"]').click()
    assert browser.find_element("css selector", "#video-title").text == worst["name"]
    chart = browser.execute_script("return window.pivad.videoChart.data")
    assert chart[0] == worst["x"] and chart[2] == pytest.approx(worst["curves"]["best"])  # series: urdmu, best, last
    assert browser.execute_script("return window.pivad.videoChart.series.length") == 4


def _ucf_sized(out: Path, n_videos: int = 290, longest: int = 6749, seed: int = 0) -> Path:
    """A results folder shaped like UCF-Crime's test set (290 videos, one of 6,749 snippets, 3 models)."""
    from pivad.engine.evaluate import VideoResult, save_scores

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.gamma(1.5, 160, n_videos).astype(int), 8, longest)
    lengths[0] = longest
    models = {}
    for key in ("urdmu", "best", "last"):
        vids = []
        for i, t in enumerate(lengths):
            gt = np.zeros(16 * t, dtype=np.uint8)
            if i < 140:
                gt[16 * t // 3: 16 * t // 2] = 1
            vids.append(VideoResult(f"v{i:03d}", int(i < 140), "Abuse" if i < 140 else "Normal",
                                    rng.random(t).astype(np.float32), gt))
        save_scores(out / "scores" / f"{key}.npz", vids)
        models[key] = {"kind": "urdmu" if key == "urdmu" else "pivad", "label": "val-selected", "auc": 0.5,
                       "auc_a": 0.5, "ap": 0.1, "ap_a": 0.2, "video_auc": 0.5, "n_videos": n_videos,
                       "classwise": {"Abuse": 0.5}}
    (out / "metrics.json").write_text(json.dumps({"dataset": "ucf-sized", "selection_label": "val-selected",
                                                  "models": models}))
    return out


def test_ucf_sized_evaluation_page_stays_responsive(browser, tmp_path):
    from pivad.report.evaluation import write_evaluation_html

    page = write_evaluation_html(_ucf_sized(tmp_path))
    assert page.stat().st_size < 8_000_000
    start = time.monotonic()
    assert open_page(browser, page.as_uri()) == []
    load = time.monotonic() - start
    assert browser.execute_script("return document.querySelectorAll('#videos tbody tr').length") == 290
    start = time.monotonic()
    browser.find_element("css selector", 'th[data-sort="T"]').click()  # first click: longest first
    browser.find_element("css selector", "#videos tbody tr").click()
    assert browser.find_element("css selector", "#video-title").text == "v000"
    switch = time.monotonic() - start
    assert browser.execute_script("return window.pivad.videoChart.data[0].length") <= 1000  # drawn downsampled
    assert load < 15 and switch < 3, (load, switch)  # generous: a loaded 2-core machine
