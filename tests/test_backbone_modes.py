"""PEL4VAD and RTFM students in the modes UR-DMU's tests cover elsewhere: stream-mode detection against
offline scoring (tests/test_stream.py for UR-DMU), and bf16 + micro-batch training for PEL4VAD
(tests/test_rtfm_cli.py has RTFM's). DDP per backbone is in tests/test_ddp.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pivad.config import PEL4VADConfig, RTFMConfig, to_dict
from pivad.detect.pipeline import TorchScorer, detect_video
from pivad.detect.stream import StreamScorer, stream_features
from pivad.engine.checkpoint import load_checkpoint, save_checkpoint
from pivad.engine.trainer import train
from pivad.models.factory import build_model
from pivad.video.decode import iter_frames
from test_detect import CLIP, tiny_config as detect_config
from test_pel4vad_cli import PEL
from test_rtfm_cli import RTFM, SMALL
from test_resume import tiny_config
from test_stream import PixelEncoder


def _student_checkpoint(path, backbone: str):
    """A randomly initialised tiny π-VAD on ``backbone``, saved the way training saves it."""
    cfg = detect_config()
    cfg.model.backbone = backbone
    cfg.model.input_dim = 1024
    if backbone == "pel4vad":  # the slide smoothing: a forward moving mean, so a prefix's scores are final
        cfg.pel4vad = PEL4VADConfig(hidden_dim=8, out_dim=8, window=3, causal_steps=3, smooth="slide", kappa=2)
    else:
        cfg.rtfm = RTFMConfig(**SMALL)
    torch.manual_seed(0)
    model = build_model("pivad", cfg)
    save_checkpoint(path, {"kind": "pivad", "config": to_dict(cfg), "model": model.state_dict(), "step": 3,
                           "phase": "second", "threshold": 0.5})
    return path


@pytest.mark.parametrize("backbone", ["pel4vad", "rtfm"])
def test_stream_matches_offline_scoring(tmp_path, backbone):
    scorer = TorchScorer.from_checkpoint(_student_checkpoint(tmp_path / "s.pt", backbone))
    encoder = PixelEncoder()
    offline = detect_video(CLIP, encoder, scorer)
    feats = offline.features  # (1, T, 1024)
    streamer = StreamScorer(encoder, scorer, threshold=0.5, fps=30.0, window=8, lag=0)
    emitted = []
    for frame in iter_frames(CLIP):
        emitted += streamer.push(frame)
    emitted += streamer.finish()
    assert [s.snippet for s in emitted] == list(range(feats.shape[1]))
    # a video shorter than the window: the final window's scores are the offline ones
    np.testing.assert_allclose(streamer.final_scores, offline.snippet_scores, rtol=0, atol=1e-6)
    # lag 0: snippet s is scored from snippets 0..s only
    for s in emitted:
        with torch.no_grad():
            want = scorer.model(torch.from_numpy(np.ascontiguousarray(feats[:, : s.snippet + 1]))[None])[0, -1]
        assert s.score == pytest.approx(float(want), abs=1e-6)
    replayed, _ = stream_features(feats, scorer, window=8, lag=0)
    np.testing.assert_allclose(replayed, [s.score for s in emitted], rtol=0, atol=1e-6)


def test_pel4vad_bf16_and_micro_batches_train(tiny_dataset, tmp_path):
    """bf16 autocast (the loss in float32) and micro-batches train a PEL4VAD teacher and π-VAD student."""
    cfg = tiny_config(tiny_dataset, **{**PEL, "train": {**PEL["train"], "precision": "bf16", "micro_batch": 2}})
    result = train(cfg, tmp_path / "r", progress=False)
    assert not result.interrupted and result.global_step == 5
    for name in ("teacher.pt", "last.pt"):
        weights = load_checkpoint(tmp_path / "r" / name)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), name


@pytest.mark.parametrize("backbone", ["pel4vad", "rtfm"])
def test_activation_checkpointing_ends_at_the_same_weights(tiny_dataset, tmp_path, backbone):
    """Teacher, step 1 and step 2 with and without train.activation_checkpointing (the PIs' blocks and
    the inductor losses are recomputed in backward; dropout draws the same masks)."""
    sections = PEL if backbone == "pel4vad" else RTFM
    runs = {}
    for flag in (False, True):
        cfg = tiny_config(tiny_dataset, **{**sections, "train": {**sections["train"], "activation_checkpointing": flag}})
        train(cfg, tmp_path / str(flag), progress=False)
        runs[flag] = load_checkpoint(tmp_path / str(flag) / "last.pt")["model"]
    assert runs[False].keys() == runs[True].keys()
    for k in runs[False]:
        torch.testing.assert_close(runs[True][k], runs[False][k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("backbone", ["pel4vad", "rtfm"])
def test_evaluate_writes_the_html_page(tiny_dataset, tmp_path, backbone):
    from pivad.cli import main

    sections = PEL if backbone == "pel4vad" else RTFM
    train(tiny_config(tiny_dataset, **sections), tmp_path / "run", progress=False)
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--no-progress", "--html",
                 "--out", str(tmp_path / "e")]) == 0
    page = next((tmp_path / "e").glob("*.html")).read_text()
    assert "π-VAD" in page and ("PEL4VAD" if backbone == "pel4vad" else "RTFM") in page
