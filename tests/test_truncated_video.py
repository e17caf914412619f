"""A video cut short (index first, then half its bytes gone) decodes quietly to fewer frames than its
header announces: extract fails that video, detect warns (and with --strict fails) instead of exit 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pivad.cli import main
from pivad.video.decode import frames_short

av = pytest.importorskip("av")

CLIP = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"  # 40 frames


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> Path:
    """carphone_40 remuxed with ``movflags=faststart`` (the header keeps all 40 frames), cut at half its bytes."""
    folder = tmp_path_factory.mktemp("cut")
    whole = folder / "whole.mp4"
    with av.open(str(CLIP)) as src, av.open(str(whole), "w", options={"movflags": "faststart"}) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = whole.read_bytes()
    path = folder / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_frames_short_rule() -> None:
    assert frames_short("v.mp4", 40, 40) is None and frames_short("v.mp4", 38, 40) is None  # normal slack
    assert frames_short("v.mp4", 10, 40) == "v.mp4: decoded 10 of the 40 frames its header announces (file truncated or damaged?)"
    assert frames_short("v.mp4", 5, 0) is None  # no count in the header: nothing to compare


def test_extract_fails_the_truncated_video_and_goes_on(cut, tmp_path, capsys) -> None:
    out = tmp_path / "feats"
    code = main(["extract", "rgb", str(cut), str(CLIP), "--out", str(out), "--crops", "1", "--weights", "random:0",
                 "--crop-size", "112", "--no-progress"])
    assert code == 1  # one video failed, the other was extracted
    err = capsys.readouterr().err
    assert f"pivad: failed: {cut}: decoded 10 of the 40 frames" in err  # not "skipped"
    assert sorted(p.name for p in out.glob("*.npy")) == ["carphone_40__0.npy"]
    assert not (out / "cut__0.npy").exists()


def test_detect_warns_in_stderr_and_json_and_strict_fails(cut, tmp_path, capsys) -> None:
    from test_detect import FAST, make_checkpoint

    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    assert main(["detect", str(cut), "--ckpt", str(ckpt), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "pivad: warning: " in err and "decoded 10 of the 40 frames" in err
    report = json.loads((out / "cut.json").read_text())
    assert report["video"]["n_frames"] == 10 and "decoded 10 of the 40" in report["warnings"][0]
    strict = tmp_path / "strict"
    assert main(["detect", str(cut), "--ckpt", str(ckpt), "--out", str(strict), "--strict", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pivad: error: {cut}: decoded 10 of the 40") and len(err.strip().splitlines()) == 1
    assert not strict.exists()  # nothing written
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(out), "--strict", *FAST]) == 0
    assert json.loads((out / "carphone_40.json").read_text())["warnings"] == []


def test_detect_warns_when_the_model_was_trained_on_synthetic_features(tiny_dataset, tmp_path, capsys) -> None:
    """A checkpoint saved from a config whose data is the synthetic generator's records it; detect says so."""
    from test_detect import FAST, make_checkpoint, tiny_config

    from pivad.config import to_dict
    from pivad.engine.checkpoint import load_checkpoint, save_checkpoint

    real = make_checkpoint(tmp_path / "real.pt")
    assert load_checkpoint(real)["features"]["source"] == "i3d"
    ckpt = load_checkpoint(real)
    cfg = tiny_config()
    cfg.data.root = str(tiny_dataset)
    payload = {k: ckpt[k] for k in ("kind", "model", "step", "phase", "threshold")}
    save_checkpoint(tmp_path / "synth.pt", {**payload, "config": to_dict(cfg)})
    assert load_checkpoint(tmp_path / "synth.pt")["features"]["source"].startswith("synthetic")
    out = tmp_path / "out"
    assert main(["detect", str(CLIP), "--ckpt", str(tmp_path / "synth.pt"), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "pivad: warning: " in err and "trained on synthetic" in err and err.count("trained on synthetic") == 1
    assert "trained on synthetic" in json.loads((out / "carphone_40.json").read_text())["warnings"][0]
    assert main(["detect", str(CLIP), "--ckpt", str(tmp_path / "synth.pt"), "--out", str(tmp_path / "s"),
                 "--strict", *FAST]) == 2
    assert "trained on synthetic" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main(["detect", str(CLIP), "--ckpt", str(real), "--out", str(out), "--crops", "5", *FAST]) == 0
    assert "trained on 1-crop features, detect computes 5" in capsys.readouterr().err


def test_older_checkpoint_without_the_record_is_inferred_from_its_data(tiny_dataset, tmp_path) -> None:
    import torch

    from test_detect import tiny_config

    from pivad.config import to_dict
    from pivad.engine.checkpoint import load_model, save_checkpoint
    from pivad.models import build_model

    cfg = tiny_config()
    cfg.data.root = str(tiny_dataset)
    save_checkpoint(tmp_path / "old.pt", {"kind": "urdmu", "config": to_dict(cfg), "features": None,
                                          "model": build_model("urdmu", cfg).state_dict()})
    old = torch.load(tmp_path / "old.pt", weights_only=True)
    del old["features"]  # as written before the record existed
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt")[2]["features"]["source"].startswith("synthetic")


def test_detect_warns_when_the_features_came_from_other_i3d_weights(tmp_path, capsys) -> None:
    """extract rgb leaves features.json; a checkpoint trained on those features records the I3D weights."""
    from test_detect import FAST, make_checkpoint, tiny_config

    from pivad.config import to_dict
    from pivad.engine.checkpoint import load_checkpoint, save_checkpoint
    from pivad.engine.provenance import training_features

    feats = tmp_path / "feats"
    assert main(["extract", "rgb", str(CLIP), "--out", str(feats), "--crops", "1", "--weights", "random:0",
                 "--crop-size", "112", "--no-progress"]) == 0
    assert json.loads((feats / "features.json").read_text())["i3d"] == "random:0"
    cfg = tiny_config()
    cfg.data.train_list = str(feats / "rgb.list")
    assert training_features(to_dict(cfg))["i3d"] == "random:0"
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "a.pt"))
    save_checkpoint(tmp_path / "b.pt", {**{k: ckpt[k] for k in ("kind", "model", "threshold")},
                                        "config": to_dict(cfg)})
    capsys.readouterr()
    fast = [a if a != "random:0" else "random:1" for a in FAST]
    assert main(["detect", str(CLIP), "--ckpt", str(tmp_path / "b.pt"), "--out", str(tmp_path / "o"), *fast]) == 0
    assert "trained on features of I3D random:0, detect computes them with random:1" in capsys.readouterr().err
    assert main(["detect", str(CLIP), "--ckpt", str(tmp_path / "b.pt"), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert "I3D" not in capsys.readouterr().err
