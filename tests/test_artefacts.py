"""Bad model artefacts (issue 21): checkpoints, exported ONNX scorers and ``.npy`` headers that lie give one
line naming the file and exit 2 in ``detect``, ``evaluate`` and ``export``; NaN or Inf in a model's output
is an error, never a result; every JSON file written is strict JSON (no bare ``NaN``/``Infinity``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pivad.cli import main
from pivad.config import to_dict
from pivad.engine.checkpoint import save_checkpoint
from pivad.models import build_model
from test_bad_input import _one_line
from test_detect import CLIP, FAST, make_checkpoint
from test_detect import tiny_config as detect_config
from test_resume import tiny_config


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A tiny π-VAD checkpoint saved as training saves it (threshold 0.45)."""
    return make_checkpoint(tmp_path_factory.mktemp("good") / "tiny.pt")


def _stream_error(capsys, message: str) -> None:
    """A stream that fails: its ``#`` status lines on stderr, then one error line (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("# ") for line in err[:-1]), err
    assert err[-1].startswith("pivad: error: ") and message in err[-1], err


def _mutated(src: Path, dst: Path, change) -> Path:
    ckpt = torch.load(src, weights_only=True)
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


def _fill(value: float, only: str = ""):
    def change(ckpt: dict) -> None:
        for name, weight in ckpt["model"].items():
            if weight.is_floating_point() and only in name:
                weight.fill_(value)
    return change


def _set(key: str, value):
    return lambda ckpt: ckpt.__setitem__(key, value)


def _widen(ckpt: dict) -> None:
    ckpt["config"]["model"]["hidden_dim"] = 32  # the stored weights are 16 wide


BAD_CHECKPOINTS = {
    "model-string": (_set("model", "hello"), "'model' holds str 'hello', not a state dict"),
    "model-list": (_set("model", [1, 2]), "'model' holds list [1, 2], not a state dict"),
    "model-entry": (lambda c: c["model"].__setitem__("student.embed.weight", "w"), "holds str, not a dense tensor"),
    "threshold-word": (_set("threshold", "high"), "threshold 'high' is not a number"),
    "threshold-list": (_set("threshold", [0.5]), "threshold [0.5] is not a number"),
    "threshold-bool": (_set("threshold", True), "threshold True is not a number"),
    "threshold-nan": (_set("threshold", math.nan), "threshold nan is not a finite number in [0, 1]"),
    "threshold-inf": (_set("threshold", math.inf), "threshold inf is not a finite number in [0, 1]"),
    "threshold-range": (_set("threshold", 2.5), "threshold 2.5 is not a finite number in [0, 1]"),
    "nan-weights": (_fill(math.nan, "embed"), "NaN/Inf value(s)"),
    "inf-weights": (_fill(math.inf), "NaN/Inf value(s)"),
    "wrong-width": (_widen, "weights do not fit the pivad model of its config (size mismatch"),
    "config-string": (_set("config", "x"), "'config' holds str, not a mapping"),
    "config-entry": (lambda c: c["config"]["model"].__setitem__("hidden_dim", "wide"), "hidden_dim"),
    "kind-list": (_set("kind", ["pivad"]), "unknown model kind ['pivad']"),
    "step-string": (_set("step", "three"), "'step' holds str 'three', not a step count"),
    "metrics-list": (_set("metrics", [1]), "'metrics' holds list [1], not a mapping"),
    "config-threshold-nan": (lambda c: (c.pop("threshold"), c["config"]["eval"].__setitem__("threshold", math.nan)),
                             "eval.threshold"),  # no stored threshold: detect would take its config's
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_line_in_detect_evaluate_and_export(good, tmp_path, capsys, case):
    change, message = BAD_CHECKPOINTS[case]
    bad = _mutated(good, tmp_path / f"{case}.pt", change)
    runs = {
        "detect": ["detect", str(CLIP), "--ckpt", str(bad), "--out", str(tmp_path / "det"), *FAST],
        "evaluate": ["evaluate", "--ckpt", str(bad), "--out", str(tmp_path / "eval"), "--no-progress"],
        "export": ["export", "--ckpt", str(bad), "--out", str(tmp_path / "m.onnx"), "--lengths", "3"],
    }
    for verb, argv in runs.items():
        assert main(argv) == 2, verb
        _one_line(capsys, f"{bad}: ", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # nothing written


def test_official_state_dict_with_nan_weights(tmp_path, capsys):
    from pivad.models import URDMU

    official = URDMU(detect_config().model).state_dict()  # our names; the check comes before the official-name mapping
    next(v for v in official.values() if v.is_floating_point()).fill_(math.nan)
    torch.save(official, tmp_path / "official.pth")
    assert main(["detect", str(CLIP), "--ckpt", str(tmp_path / "official.pth"), "--out", str(tmp_path), *FAST]) == 2
    _one_line(capsys, f"{tmp_path / 'official.pth'}: weight ", "NaN/Inf value(s)")


def test_ckpt_or_onnx_that_is_a_folder_or_a_device(tmp_path, capsys):
    folder = tmp_path / "model.pt"
    folder.mkdir()
    device = tmp_path / "zero.onnx"
    device.symlink_to("/dev/zero")
    out = ["--out", str(tmp_path / "out")]
    cases = [(["detect", str(CLIP), "--ckpt", str(folder), *out], f"{folder}: is a folder, not a file"),
             (["evaluate", "--ckpt", str(folder), *out], f"{folder}: is a folder, not a file"),
             (["export", "--ckpt", str(folder), "--out", str(tmp_path / "m.onnx")], f"{folder}: is a folder"),
             (["detect", str(CLIP), "--onnx", str(device), *out], f"{device}: not a regular file: a character device")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        _one_line(capsys, message)


def test_nan_scores_from_finite_weights_are_an_error_and_keep_earlier_outputs(good, tmp_path, capsys):
    """Weights at 3e38 overflow inside the model: every score is NaN. detect (file and stream) and evaluate
    refuse them naming the checkpoint and the input; what an earlier good run wrote stays as it was."""
    huge = _mutated(good, tmp_path / "huge.pt", _fill(3e38, "embed"))
    out = tmp_path / "out"
    assert main(["detect", str(CLIP), "--ckpt", str(good), "--out", str(out), *FAST]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["detect", str(CLIP), "--ckpt", str(huge), "--out", str(out), *FAST]) == 2
    _one_line(capsys, f"{huge}: the model returned NaN/Inf scores for {CLIP}: 3 of 3 snippets")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    csv = tmp_path / "stream.csv"
    assert main(["detect", "--stream", str(CLIP), "--ckpt", str(huge), "--idle-timeout", "0.1", "--csv", str(csv),
                 *FAST]) == 2  # fmt: skip
    _stream_error(capsys, f"{huge}: the model returned NaN/Inf scores for {CLIP}, the window ending at snippet 0")
    assert csv.read_text() == "snippet,time_s,score,anomalous\n"  # no NaN line


def test_evaluate_refuses_nan_scores(tiny_dataset, tmp_path, capsys):
    cfg = tiny_config(tiny_dataset)
    torch.manual_seed(0)
    model = build_model("urdmu", cfg)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"kind": "urdmu", "config": to_dict(cfg), "model": model.state_dict()})
    huge = _mutated(good, tmp_path / "huge.pt", _fill(3e38, "embed"))
    out = tmp_path / "eval"
    assert main(["evaluate", "--ckpt", str(good), "--out", str(out), "--no-progress", "--no-plots"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["evaluate", "--ckpt", str(huge), "--out", str(out), "--no-progress", "--no-plots"]) == 2
    _one_line(capsys, f"{huge}: the model returned NaN/Inf scores for video ")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------------------------- ONNX


def onnx_scorer(path: Path, meta: str | None = '{"threshold": 0.4}', scale: float = 1.0, zero_d: bool = False) -> Path:
    """A hand-made scorer: ``features [b,n,T,1024]`` -> sigmoid(scale * mean over n and D) ``[b,T]`` (0-d:
    the mean over every axis), with ``meta`` as its ``pivad`` metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    axes = numpy_helper.from_array(np.array([0, 1, 2, 3] if zero_d else [1, 3], dtype=np.int64), "axes")
    k = numpy_helper.from_array(np.array(scale, dtype=np.float32), "k")
    nodes = [helper.make_node("ReduceMean", ["features", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "k"], ["z"]), helper.make_node("Sigmoid", ["z"], ["scores"])]
    graph = helper.make_graph(nodes, "scorer", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                               ["b", "n", "T", 1024])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)], [axes, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if meta is not None:
        helper.set_model_props(model, {"pivad": meta})
    onnx.save(model, path)
    return path


BAD_ONNX = {
    "threshold-word": ({"meta": '{"threshold": "abc"}'}, "metadata: threshold 'abc' is not a number"),
    "threshold-list": ({"meta": '{"threshold": [0.4]}'}, "metadata: threshold [0.4] is not a number"),
    "threshold-nan": ({"meta": '{"threshold": NaN}'}, "metadata 'pivad' is not valid JSON (NaN is not a number"),
    "threshold-range": ({"meta": '{"threshold": -3}'}, "metadata: threshold -3 is not a finite number in [0, 1]"),
    "crops-word": ({"meta": '{"num_crops": "ten"}'}, "metadata num_crops 'ten' is not a positive integer"),
    "not-an-object": ({"meta": "[1, 2]"}, "metadata 'pivad' holds list, not a JSON object"),
    "not-json": ({"meta": "{threshold"}, "metadata 'pivad' is not valid JSON"),
    "0-d-output": ({"zero_d": True}, "the model returned scores of shape [] for 1 video of 3 snippets"),
    "nan-output": ({"scale": math.nan}, f"the model returned NaN/Inf scores for {CLIP}: 3 of 3 snippets"),
}


@pytest.mark.parametrize("case", list(BAD_ONNX))
def test_bad_onnx_scorer_is_one_line_naming_it(tmp_path, capsys, case):
    pytest.importorskip("onnxruntime")
    kwargs, message = BAD_ONNX[case]
    model = onnx_scorer(tmp_path / f"{case}.onnx", **kwargs)
    out = tmp_path / "out"
    assert main(["detect", str(CLIP), "--onnx", str(model), "--out", str(out), *FAST]) == 2
    _one_line(capsys, f"{model}: {message}")
    assert not out.exists()
    assert main(["detect", "--stream", str(CLIP), "--onnx", str(model), "--idle-timeout", "0.1", *FAST]) == 2
    _stream_error(capsys, f"{model}: ")


def onnx_i3d(path: Path, width: int = 1024, scale: float = 1.0, crop: int = 32) -> Path:
    """A hand-made I3D stand-in: ``clips [N,3,16,S,S]`` -> (mean over time and space) @ ``W [3, width]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    axes = numpy_helper.from_array(np.array([2, 3, 4], dtype=np.int64), "axes")
    w = numpy_helper.from_array(np.full((3, width), scale, dtype=np.float32), "w")
    nodes = [helper.make_node("ReduceMean", ["clips", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["features"])]
    graph = helper.make_graph(nodes, "i3d", [helper.make_tensor_value_info("clips", TensorProto.FLOAT,
                                                                           ["N", 3, 16, crop, crop])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)], [axes, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("case,kwargs,message", [
    ("width", {"width": 7}, "I3D returned features of shape [2, 7] for 2 clips, expected [2, 1024]"),
    ("nan", {"scale": math.nan}, f"I3D produced NaN/Inf features for {CLIP}"),
])  # fmt: skip
def test_bad_onnx_i3d_is_one_line_naming_it(tmp_path, capsys, case, kwargs, message):
    pytest.importorskip("onnxruntime")
    i3d = onnx_i3d(tmp_path / f"{case}.i3d.onnx", **kwargs)
    scorer = onnx_scorer(tmp_path / "m.onnx")
    assert main(["detect", str(CLIP), "--onnx", str(scorer), "--i3d-onnx", str(i3d), "--out", str(tmp_path / "out"),
                 *FAST]) == 2  # fmt: skip
    _one_line(capsys, f"{i3d}: {message}")
    assert not (tmp_path / "out").exists()


def test_hand_made_scorer_is_accepted(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    assert main(["detect", str(CLIP), "--onnx", str(onnx_scorer(tmp_path / "m.onnx")), "--out", str(out), *FAST]) == 0
    assert json.loads((out / "carphone_40.json").read_text())["threshold"] == 0.4


def test_export_of_a_model_that_returns_nan_keeps_the_earlier_file(good, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "--ckpt", str(good), "--out", str(out), "--lengths", "3"]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    huge = _mutated(good, tmp_path / "huge.pt", _fill(3e38, "embed"))
    assert main(["export", "--ckpt", str(huge), "--out", str(out), "--lengths", "3"]) == 2
    _one_line(capsys, f"{huge}: the model returns NaN/Inf scores on random features")
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["huge.pt", "m.onnx"]


# ------------------------------------------------------------------------------------------- strict JSON


def _strict(text: str):
    def refuse(name: str):
        raise AssertionError(f"bare {name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def test_outputs_are_strict_json(good, tiny_dataset, tmp_path):
    """A checkpoint whose recorded metric is undefined (NaN, e.g. an AUC with one class) gives ``null`` in
    detect's JSON, not a bare ``NaN``; every JSON file detect and evaluate write parses strictly."""
    nan_metric = _mutated(good, tmp_path / "nan_metric.pt", _set("metrics", {"val_video_auc": math.nan}))
    det = tmp_path / "det"
    assert main(["detect", str(CLIP), "--ckpt", str(nan_metric), "--out", str(det), *FAST]) == 0
    cfg = tiny_config(tiny_dataset)
    torch.manual_seed(0)
    ckpt = tmp_path / "urdmu.pt"
    save_checkpoint(ckpt, {"kind": "urdmu", "config": to_dict(cfg), "model": build_model("urdmu", cfg).state_dict(),
                           "metrics": {"val_video_auc": math.nan}})  # fmt: skip
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval"), "--no-progress", "--no-plots"]) == 0
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 2
    for path in files:
        _strict(path.read_text())
    assert _strict((det / "carphone_40.json").read_text())["model"]["metrics"] == {"val_video_auc": None}


# ---------------------------------------------------------------------------------------- .npy headers


def _claim_rows(path: Path, rows: int) -> None:
    """Rewrite ``path``'s header to claim ``rows`` rows, keeping its data."""
    array = np.load(path)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (rows, *array.shape[1:])})
        fh.write(np.ascontiguousarray(array, dtype="<f4").tobytes())


@pytest.fixture
def copied_dataset(tiny_dataset, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    return root


def _test_video_files(root: Path) -> list[Path]:
    """The crop files of the first test video."""
    first = (root / "lists" / "test.list").read_text().split()[0]
    stem = first.rsplit("__", 1)[0]
    return sorted((root / Path(first).parent).glob(f"{Path(stem).name}__*.npy"))


@pytest.mark.parametrize("storage", ["memory", "mmap"])
def test_npy_header_claiming_2_to_36_rows(copied_dataset, tmp_path, capsys, storage):
    files = _test_video_files(copied_dataset)
    for path in files:  # every crop, so that no crop-length check catches it first
        _claim_rows(path, 2**36)
    ckpt = tmp_path / "urdmu.pt"
    cfg = tiny_config(copied_dataset, data={"storage": storage})
    save_checkpoint(ckpt, {"kind": "urdmu", "config": to_dict(cfg), "model": build_model("urdmu", cfg).state_dict()})
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval"), "--no-progress"]) == 2
    _one_line(capsys, f"{files[0]}: cannot read as .npy (file is truncated: its header declares shape "
                      f"[{2**36},1024]")  # fmt: skip


def test_npy_linked_to_dev_zero_says_what_it_is(copied_dataset, tmp_path, capsys):
    target = _test_video_files(copied_dataset)[0]
    target.unlink()
    target.symlink_to("/dev/zero")
    ckpt = tmp_path / "urdmu.pt"
    cfg = tiny_config(copied_dataset)
    save_checkpoint(ckpt, {"kind": "urdmu", "config": to_dict(cfg), "model": build_model("urdmu", cfg).state_dict()})
    assert main(["evaluate", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval"), "--no-progress"]) == 2
    _one_line(capsys, f"{target}: not a regular file: a character device (a link to /dev/zero)")


def test_feature_readers_check_the_header_against_the_file_size(tmp_path):
    from pivad.data.features import load_features, map_features, read_header
    from pivad.errors import DataError

    path = tmp_path / "f.npy"
    np.save(path, np.ones((4, 8), np.float32))
    _claim_rows(path, 2**36)
    for read in (read_header, lambda p: load_features(p, 8), lambda p: load_features(p, 8, mmap=True),
                 lambda p: map_features(p, 8)):
        with pytest.raises(DataError, match=r"header declares shape \[68719476736,8\], 2,199,023,255,552 bytes of "
                                             r"data, but 128 follow"):  # fmt: skip
            read(path)
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="pipe.npy: not a regular file: a FIFO"):
        load_features(fifo, 8)  # refused without opening it (open() would wait for a writer)


def test_modality_file_linked_to_dev_zero_says_what_it_is(tmp_path):
    from pivad.data.modality_store import ModalityStore
    from pivad.errors import DataError

    (tmp_path / "pose").mkdir()
    (tmp_path / "pose" / "v.npy").symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"pose/v.npy: not a regular file: a character device \(a link to /dev/zero\) "
                                        r"\(modality pose of video v\)"):  # fmt: skip
        ModalityStore(tmp_path, [("pose", 4)]).load("v", 3)
