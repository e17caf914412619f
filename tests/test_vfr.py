"""A variable-frame-rate video (issue 21): detect and extract rgb say in one warning line that times use
the average rate (detect's JSON records it, --strict refuses); a constant-rate video gets no warning."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pivad.cli import main
from pivad.video.decode import probe, timing_note
from test_detect import CLIP, FAST, make_checkpoint


def write_vfr(path: Path, fast: int = 24, slow: int = 24) -> Path:
    """``fast`` frames 33 ms apart, then ``slow`` frames 150 ms apart (MPEG-4 Part 2 in MP4)."""
    av = pytest.importorskip("av")
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
    t = 0
    for i in range(fast + slow):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5 % 256, np.uint8), format="rgb24")
        frame.pts, frame.time_base = t, Fraction(1, 1000)
        t += 33 if i < fast else 150
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def test_timing_note_tells_variable_from_constant_rate(tmp_path):
    vfr = write_vfr(tmp_path / "vfr.mp4")
    note = timing_note(vfr, probe(vfr).fps)
    assert note is not None and "variable frame rate" in note and "33-150 ms" in note
    assert timing_note(CLIP, probe(CLIP).fps) is None


def test_detect_warns_once_and_records_it(tmp_path, capsys):
    vfr = write_vfr(tmp_path / "vfr.mp4")
    ckpt = make_checkpoint(tmp_path / "m.pt")
    args = ["detect", str(vfr), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), *FAST]
    assert main(args) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "variable frame rate" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(f"pivad: warning: {vfr}: variable frame rate")
    assert any("variable frame rate" in w for w in json.loads((tmp_path / "o" / "vfr.json").read_text())["warnings"])
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pivad: error: ") and "variable frame rate" in err and len(err.splitlines()) == 1


def test_detect_on_constant_rate_says_nothing_of_it(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert "frame rate" not in capsys.readouterr().err


def test_extract_rgb_warns(tmp_path, capsys):
    vfr = write_vfr(tmp_path / "vfr.mp4")
    assert main(["extract", "rgb", str(vfr), "--out", str(tmp_path / "f"), "--crops", "1", "--weights", "random:0",
                 "--crop-size", "32", "--resize", "96x72", "--no-progress"]) == 0  # fmt: skip
    assert f"pivad: warning: {vfr}: variable frame rate" in capsys.readouterr().err
