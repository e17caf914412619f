"""No file pivad reads can run code: a gadget payload in every format each loader accepts.

The gadget is a pickle whose ``__reduce__`` calls ``os.system("touch MARKER")``; each test asserts
the marker was never created and the error is one line naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from pivad.errors import CheckpointError, PivadError


class Gadget:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write(path: Path, fmt: str, marker: Path) -> Path:
    payload = {"model": {"w": Gadget(marker)}, "state_dict": Gadget(marker)}
    if fmt == "zip":
        torch.save(payload, path)
    elif fmt == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # a plain pickle, as the DeepMind I3D file and old checkpoints are
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    return path


FORMATS = ["zip", "legacy", "pickle"]


def _refused(load, path: Path, marker: Path) -> str:
    with pytest.raises(PivadError) as info:
        load(path)
    msg = str(info.value)
    assert not marker.exists(), "the payload ran"
    assert str(path).split("/")[-1] in msg and "\n" not in msg
    return msg


def test_the_gadget_runs_when_unpickled_unrestricted(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with open(_write(tmp_path / "g.pkl", "pickle", marker), "rb") as fh:
        pickle.load(fh)  # the control: this is what a careless loader would do
    assert marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_pivad_checkpoint_loader(tmp_path: Path, fmt: str) -> None:
    from pivad.engine.checkpoint import load_checkpoint, load_model

    marker = tmp_path / "ran"
    path = _write(tmp_path / "best.pt", fmt, marker)
    msg = _refused(load_checkpoint, path, marker)
    assert "refused" in msg and "weights_only" not in msg
    _refused(load_model, path, marker)


@pytest.mark.parametrize("fmt", FORMATS)
def test_i3d_weights_loader(tmp_path: Path, fmt: str) -> None:
    from pivad.video.i3d_weights import load_i3d_state_dict

    marker = tmp_path / "ran"
    _refused(load_i3d_state_dict, _write(tmp_path / "i3d.pt", fmt, marker), marker)


@pytest.mark.parametrize("fmt", FORMATS)
def test_vifi_clip_loader(tmp_path: Path, fmt: str) -> None:
    from pivad.extract.backbones.text import load_checkpoint_state

    marker = tmp_path / "ran"
    path = _write(tmp_path / "vifi.pth", fmt, marker)
    try:
        load_checkpoint_state(path)  # the gadget becomes an inert placeholder: no state dict found
    except PivadError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("fmt", FORMATS)
def test_raft_weights_loader(tmp_path: Path, fmt: str) -> None:
    """RAFT weights are read with the same weights-only loader before torchvision sees them."""
    from pivad.safe_load import load_weights

    marker = tmp_path / "ran"
    _refused(lambda p: load_weights(p, "raft_small checkpoint"), _write(tmp_path / "raft.pth", fmt, marker), marker)


def test_yaml_config_tags_do_not_construct_objects(tmp_path: Path) -> None:
    from pivad.config import load_config

    marker = tmp_path / "ran"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"train: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    _refused(load_config, cfg, marker)


def test_json_readers_take_data_only(tmp_path: Path) -> None:
    from pivad.extract.manifest import MANIFEST, read_manifest

    marker = tmp_path / "ran"
    (tmp_path / MANIFEST).write_bytes(pickle.dumps(Gadget(marker)))
    _refused(read_manifest, tmp_path, marker)


def test_onnx_metadata_is_json_data(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from pivad.detect.pipeline import ONNX_META_KEY, OnnxScorer

    marker = tmp_path / "ran"
    node = helper.make_node("ReduceMean", ["features"], ["scores"], axes=[0, 2], keepdims=0)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, None, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {ONNX_META_KEY: pickle.dumps(Gadget(marker)).decode("latin-1")})
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="m.onnx: metadata 'pivad' is not valid JSON"):
        OnnxScorer(tmp_path / "m.onnx")  # refused, as any metadata that is not JSON; nothing unpickled
    assert not marker.exists()
    helper.set_model_props(model, {ONNX_META_KEY: json.dumps({"py/reduce": [{"py/function": "os.system"}]})})
    onnx.save(model, tmp_path / "m.onnx")
    assert isinstance(OnnxScorer(tmp_path / "m.onnx").meta, dict) and not marker.exists()


@pytest.mark.parametrize("content", [b"", random.Random(0).randbytes(64), b"PK\x03\x04" + b"\0" * 40],
                         ids=["empty", "random", "zip-header"])
def test_broken_checkpoints_get_one_line(tmp_path: Path, content: bytes) -> None:
    from pivad.engine.checkpoint import load_checkpoint

    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(PivadError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not a readable checkpoint: ") and "\n" not in msg
    assert "weights_only" not in msg and not msg.endswith(("(", ","))
    assert "refused" not in msg  # damaged bytes are not reported as a code-carrying file


def test_truncated_checkpoint_says_so(tmp_path: Path) -> None:
    from pivad.engine.checkpoint import load_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PivadError, match=r"cut.pt: not a readable checkpoint: truncated"):
        load_checkpoint(cut)


def test_weights_that_do_not_fit_name_the_file_in_one_line(tmp_path: Path) -> None:
    from test_detect import make_checkpoint

    from pivad.engine.checkpoint import load_checkpoint, load_model, save_checkpoint

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "a.pt"))
    ckpt["config"]["model"]["hidden_dim"] = 32  # the weights are 16 wide
    save_checkpoint(tmp_path / "b.pt", {k: ckpt[k] for k in ("kind", "config", "model")})
    with pytest.raises(PivadError) as info:
        load_model(tmp_path / "b.pt")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'b.pt'}: weights do not fit") and "size mismatch" in msg and "\n" not in msg


@pytest.mark.parametrize("content", [random.Random(1).randbytes(256), b"PK\x03\x04" + b"\0" * 40])
def test_bad_i3d_weights_are_one_line(tmp_path: Path, content: bytes, capsys) -> None:
    from pivad.cli import main

    path = tmp_path / "random.pt"
    path.write_bytes(content)
    clip = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"
    assert main(["extract", "rgb", str(clip), "--out", str(tmp_path / "f"), "--weights", str(path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pivad: error: {path}: not a readable I3D checkpoint") and len(err.splitlines()) == 1
