"""HTML reports without a browser: page assembly, downsampling, the page's video, per-video statistics,
the live server, and the --html flags of detect and evaluate (what they write)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main
from pivad.errors import DataError
from pivad.report.downsample import on_grid, peak_downsample
from pivad.report.evaluation import gt_spans, video_stats, write_evaluation_html
from pivad.report.page import render_page, script_json
from test_detect import CLIP, FAST, make_checkpoint


def page_data(path: Path) -> dict:
    """The ``#pivad-data`` JSON of a written page."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="pivad-data">(.*?)</script>', text, re.S)
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_peak_downsample_keeps_every_bucket_maximum():
    v = np.array([0.1, 0.9, 0.2, 0.3, 0.0, 0.8, 0.5])
    starts, peaks = peak_downsample(v, 3)  # buckets of ceil(7/3) = 3: [0:3], [3:6], [6:7]
    assert starts.tolist() == [0, 3, 6] and peaks.tolist() == [0.9, 0.8, 0.5]
    starts, peaks = peak_downsample(v, 7)
    assert starts.tolist() == list(range(7)) and np.array_equal(peaks, v)
    long = np.random.default_rng(0).random(6749)
    starts, peaks = peak_downsample(long, 1000)
    assert len(peaks) <= 1000 and peaks.max() == long.max() and starts[0] == 0
    with pytest.raises(ValueError):
        peak_downsample(v, 0)


def test_on_grid_interpolates_along_x():
    x, y = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])
    assert on_grid(x[::-1], y[::-1], np.array([0.25, 0.75])).tolist() == [0.5, 1.0]


def test_page_is_self_contained_and_data_cannot_close_its_script_tag():
    data = {"name": "</script><script>alert(1)</script>", "x": float("nan"), "t": (1, 2)}
    assert "<" not in script_json(data) and json.loads(script_json(data))["x"] is None
    text = render_page("t", "<p>body</p>", data, ("detect.js",))
    assert text.count("</script>") == text.count("<script")  # the data did not close or open a tag
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched from a network
    assert "uPlot" in text and "<link rel=\"stylesheet\"" not in text


def _write_avi(path: Path, n: int = 20) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            frame = np.full((48, 64, 3), 10 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_page_video_is_the_source_when_it_plays_else_an_h264_copy(tmp_path):
    import av

    from pivad.report.media import page_video, plays_in_browser

    assert plays_in_browser(CLIP)  # H.264 MP4
    avi = _write_avi(tmp_path / "clip.avi")
    assert not plays_in_browser(avi) and not plays_in_browser(tmp_path / "missing.mp4")
    assert page_video(CLIP, tmp_path, "x", 30.0) == (CLIP, "source")
    shown, how = page_video(avi, tmp_path / "out", "clip", 10.0)
    assert how == "re-encoded" and shown.name == "clip.browser.mp4" and plays_in_browser(shown)
    with av.open(str(shown)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and sum(1 for _ in c.decode(video=0)) == 20


def test_video_stats_and_gt_spans_by_hand():
    scores = np.array([0.1, 0.9, 0.3])
    gt = np.array([0] * 16 + [1] * 16 + [0] * 8, dtype=np.uint8)  # 40 frames, the middle snippet abnormal
    auc, fa = video_stats(scores, gt)
    assert auc == 1.0 and fa == pytest.approx((16 * 0.1 + 8 * 0.3) / 16)
    assert video_stats(scores, np.zeros(48, dtype=np.uint8)) == (None, pytest.approx((0.1 + 0.9 + 0.3)))
    assert video_stats(scores, None) == (None, None)
    assert gt_spans(gt) == [[16, 32]] and gt_spans(np.array([1, 1, 0, 1])) == [[0, 2], [3, 4]]
    assert gt_spans(np.zeros(5)) == []


def test_detect_html_writes_page_with_one_point_per_snippet(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--html", *FAST]) == 0
    data = page_data(out / "carphone_40.html")
    saved = json.loads((out / "carphone_40.json").read_text())
    assert data["scores"] == saved["snippet_scores"] and len(data["times"]) == data["n_snippets"] == 3
    assert data["times"][1] == pytest.approx(16 * 1001 / 30000, abs=1e-6)
    assert data["video"]["how"] == "source"
    assert (out / data["video"]["src"]).resolve() == CLIP.resolve()  # relative to the page, the source clip
    assert set(data["activations"]) == {"pose", "depth"}  # π-VAD: the late PI's modalities
    assert all(len(a) == 3 and 0 <= min(a) <= max(a) <= 1 for a in data["activations"].values())
    facts = dict(data["facts"])
    assert facts["threshold"].startswith("0.45 (checkpoint") and facts["snippets"].startswith("3 ")
    assert "carphone_40.html" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_urdmu_page_of_an_avi_plays_an_h264_copy_and_has_no_activation_lines(tmp_path):
    ck = make_checkpoint(tmp_path / "u.pt", kind="urdmu")
    avi = _write_avi(tmp_path / "clip.avi", n=20)
    out = tmp_path / "out"
    assert main(["detect", str(avi), "--ckpt", str(ck), "--out", str(out), "--html", *FAST]) == 0
    data = page_data(out / "clip.html")
    assert data["activations"] == {} and data["n_snippets"] == 2
    assert data["video"] == {"src": "clip.browser.mp4", "how": "re-encoded"} and (out / "clip.browser.mp4").is_file()


def test_live_page_serves_the_scores_so_far(tmp_path):
    from pivad.errors import PivadError
    from pivad.report.live import live_page_for

    live = live_page_for("cam", 25.0, 0.5, "--threshold", {"kind": "pivad", "checkpoint": "b.pt"}, 200, 0)
    try:
        assert live.url.startswith("http://127.0.0.1:")
        for s, score in enumerate([0.2, 0.7, 0.8, 0.1]):
            live.add(s, score)
        data = json.loads(urllib.request.urlopen(live.url + "data.json", timeout=5).read())
        assert data["scores"] == [0.2, 0.7, 0.8, 0.1] and not data["done"] and data["live"]
        assert [(iv["start"], iv["end"]) for iv in data["intervals"]] == [(16, 47)]
        page = urllib.request.urlopen(live.url, timeout=5).read().decode()
        assert 'id="pivad-data"' in page and "live-status" in page
        live.finish()
        assert json.loads(urllib.request.urlopen(live.url + "data.json", timeout=5).read())["done"]
    finally:
        live.close(grace=0)
    with pytest.raises(PivadError, match="--port 99999"):
        live_page_for("cam", 25.0, 0.5, "x", {}, 200, 0, port=99999)


def test_stream_html_announces_its_live_page(ckpt, tmp_path, capsys):
    argv = ["detect", "--stream", str(CLIP), "--ckpt", str(ckpt), "--idle-timeout", "0.1", "--html", *FAST]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert re.search(r"# live page: http://127\.0\.0\.1:\d+/", captured.err)
    assert len(captured.out.strip().splitlines()) == 1 + 3  # header + one line per snippet, as without --html


def test_evaluate_html_shows_metrics_json_and_every_test_video(run_dir, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "e"
    assert main(["evaluate", "--run", str(run_dir), "--no-progress", "--no-plots", "--html", "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    data = page_data(out / "report.html")
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["key"] for m in data["models"]] == list(metrics["models"]) == ["urdmu", "best", "last"]
    for m in data["models"]:
        assert all(m[k] == metrics["models"][m["key"]][k] for k in ("auc", "auc_a", "ap", "ap_a", "video_auc"))
    scores = np.load(out / "scores" / "best.npz")
    names = [str(n) for n in scores["__names__"]]
    assert [v["name"] for v in data["videos"]] == names
    abnormal = next(v for v in data["videos"] if v["label"] == 1)
    gt, s = scores[f"gt/{abnormal['name']}"], np.repeat(scores[f"scores/{abnormal['name']}"], 16)
    assert abnormal["auc"]["best"] == pytest.approx(roc_auc_score(gt, s))
    assert abnormal["curves"]["best"] == [round(float(x), 4) for x in scores[f"scores/{abnormal['name']}"]]
    assert set(data["curves"]["tpr"]) == {"urdmu", "best", "last"} and len(data["curves"]["grid"]) == 201
    assert data["training"]["loss"]["steps"] and "teacher" in data["training"]["loss"]["series"]


def test_evaluation_report_of_a_broken_folder_names_the_file(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="metrics.json: cannot read"):
        write_evaluation_html(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"models": {"best": {"kind": "pivad", "label": "x"}}}))
    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "best.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="best.npz: not a pivad scores file"):
        write_evaluation_html(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_evaluation_report_without_stored_ground_truth_still_lists_every_video(tmp_path):
    """scores/*.npz written before frame ground truth was stored: curves and per-video numbers are left out."""
    from pivad.engine.evaluate import VideoResult, save_scores
    from pivad.report.evaluation import report_data

    save_scores(tmp_path / "scores" / "best.npz", [VideoResult("a", 1, "Abuse", np.array([0.2, 0.9], np.float32)),
                                                    VideoResult("b", 0, "Normal", np.array([0.1], np.float32))])
    (tmp_path / "metrics.json").write_text(json.dumps({"models": {"best": {"kind": "pivad", "label": "last",
                                                                           "auc": 0.7}}}))
    data = report_data(tmp_path)
    assert [v["name"] for v in data["videos"]] == ["a", "b"] and data["videos"][0]["gt"] == []
    assert data["videos"][0]["auc"] == {"best": None} and data["curves"]["tpr"] == {}
    assert data["models"][0]["auc"] == 0.7 and data["training"] is None
