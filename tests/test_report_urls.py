"""URLs the report pages build from file names are URL-encoded (issue 21): a video named with ``%``, ``#``,
``?``, a space or non-ASCII letters still loads in the detection page."""

from __future__ import annotations

import re
import shutil
from html import unescape
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from pivad.cli import main
from test_detect import FAST, make_checkpoint
from test_report_browser import browser, open_page, wait  # noqa: F401 - the browser fixture

CLIP = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"
NAME = "100% sure #2 what? é:x.mp4"


@pytest.fixture(scope="module")
def odd_page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("urls")
    video = root / "videos" / NAME
    video.parent.mkdir()
    shutil.copyfile(CLIP, video)
    out = root / "out"
    assert main(["detect", str(video), "--ckpt", str(make_checkpoint(root / "m.pt")), "--out", str(out), "--html",
                 *FAST]) == 0  # fmt: skip
    return out / f"{video.stem}.html"


def test_video_src_is_url_encoded(odd_page):
    src = unescape(re.search(r'<video [^>]*src="([^"]*)"', odd_page.read_text()).group(1))
    assert not re.search(r"[#? ]|%(?![0-9A-F]{2})|[^\x00-\x7f]|:", src), src  # nothing a URL would read
    target = (odd_page.parent / unquote(src)).resolve()
    assert target.is_file() and target.name in (NAME, f"{Path(NAME).stem}.browser.mp4")
    assert src.endswith(quote(target.name))


def test_video_with_odd_name_loads_in_the_browser(browser, odd_page):  # noqa: F811 - the fixture
    assert open_page(browser, odd_page.as_uri()) == []
    duration = wait(browser, "const v = document.getElementById('video'); "
                             "return v.readyState >= 1 && Number.isFinite(v.duration) && v.duration", 15.0)
    assert duration == pytest.approx(40 / 30, abs=0.1)  # the clip: 40 frames at 30 fps
