"""pivad export: ONNX scorer equal to PyTorch for several T from one file; detect --onnx equal to --ckpt; I3D ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.detect.pipeline import OnnxScorer, default_threshold
from pivad.engine.checkpoint import load_inference_model
from pivad.export import export_checkpoint, i3d_path_for
from test_detect import CLIP, FAST, make_checkpoint

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("kind", ["pivad", "urdmu"])
def test_onnx_scores_equal_torch_for_several_lengths(tmp_path, kind):
    ckpt = make_checkpoint(tmp_path / f"{kind}.pt", kind=kind, threshold=0.37)
    out, check = export_checkpoint(ckpt, tmp_path / "model.onnx")
    assert check.lengths == (1, 17, 100) and check.worst < 1e-4
    model, _, _ = load_inference_model(ckpt)
    scorer = OnnxScorer(out)  # one file, any T, any number of crops
    gen = torch.Generator().manual_seed(1)
    for T, crops in ((1, 1), (17, 1), (100, 1), (300, 2)):  # 300 > 256: PyTorch uses the banded kernel there
        x = torch.randn(crops, T, 1024, generator=gen)
        with torch.no_grad():
            ref = model(x[None]).numpy()[0]
        got = scorer(x.numpy())
        assert got.shape == (T,) and np.abs(got - ref).max() < 1e-4, T
    assert scorer.meta["kind"] == kind and default_threshold(scorer) == (0.37, "onnx metadata")


def _detect_scores(tmp_path, name: str, args: list[str]) -> np.ndarray:
    assert main(["detect", str(CLIP), *args, "--out", str(tmp_path / name), *FAST]) == 0, name
    info = json.loads((tmp_path / name / "carphone_40.json").read_text())
    assert info["threshold"] == 0.45  # the checkpoint's, carried through the ONNX metadata
    return np.array(info["snippet_scores"])


def test_export_cli_and_detect_with_onnx_match_ckpt(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--format", "onnx", "--out", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "max abs diff: T=1:" in out and "T=17:" in out and "T=100:" in out
    with_ckpt = _detect_scores(tmp_path, "ckpt", ["--ckpt", str(ckpt)])
    with_onnx = _detect_scores(tmp_path, "onnx", ["--onnx", str(onnx_path)])
    assert len(with_ckpt) == 3 and np.abs(with_onnx - with_ckpt).max() < 1e-5
    from pivad.detect.pipeline import OnnxScorer

    assert OnnxScorer(onnx_path).meta["features"]["source"] == "i3d"  # detect --onnx can warn as --ckpt does


@pytest.mark.slow
def test_export_with_i3d_and_detect_on_onnx_only(tmp_path, capsys):
    """--with-i3d writes MODEL.i3d.onnx; detect with both ONNX files matches detect with the checkpoint."""
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(onnx_path), "--with-i3d", "--i3d-weights", "random:0",
                 "--crop-size", "32", "--lengths", "5"]) == 0  # fmt: skip
    assert "on 2 clips" in capsys.readouterr().out and i3d_path_for(onnx_path).is_file()
    with_ckpt = _detect_scores(tmp_path, "ckpt", ["--ckpt", str(ckpt)])
    onnx_only = _detect_scores(tmp_path, "onnx", ["--onnx", str(onnx_path), "--i3d-onnx", str(i3d_path_for(onnx_path))])
    assert np.abs(onnx_only - with_ckpt).max() < 1e-4  # I3D in onnxruntime: ~1e-5 feature error


def test_export_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    assert main(["export", "--ckpt", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pivad: error: ") and "bad.pt: not a readable checkpoint" in err and "\n" not in err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    assert main(["detect", str(CLIP), "--onnx", str(junk), "--out", str(tmp_path)]) == 2
    assert "junk.onnx: not a loadable ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
