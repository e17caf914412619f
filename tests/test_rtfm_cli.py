"""RTFM behind the backbone interface, end to end on tiny sizes: train (alone, and π-VAD at its hook points),
evaluate (runs and official state dicts), export, detect, info (the demo: tests/test_demo.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from pivad.cli import main
from pivad.config import to_dict
from pivad.engine.checkpoint import load_checkpoint, load_inference_model
from pivad.engine.trainer import train
from test_resume import tiny_config
from test_rtfm import official  # noqa: F401 - the official snapshot fixture (skips when the mirror is absent)

SMALL = {"branch_dim": 8, "fc1_dim": 16, "fc2_dim": 8}
RTFM = {"model": {"backbone": "rtfm"}, "rtfm": SMALL,
        "inductor": {"position": "both", "latent_dim": 8, "cmi_depth": 1, "cmi_heads": 2},
        "train": {"teacher_steps": 2, "warmup_steps": 1, "steps": 2, "eval_every": 2, "selection": "test"}}


@pytest.fixture(scope="module")
def rtfm_run(tmp_path_factory, tiny_dataset):
    run = tmp_path_factory.mktemp("rtfm_run")
    result = train(tiny_config(tiny_dataset, **RTFM), run, progress=False)
    assert not result.interrupted and result.global_step == 5
    return run


def test_train_runs_teacher_and_both_steps_on_rtfm(rtfm_run):
    teacher, best = load_checkpoint(rtfm_run / "teacher.pt"), load_checkpoint(rtfm_run / "best.pt")
    assert teacher["kind"] == "rtfm" and best["kind"] == "pivad"
    assert {k.split(".")[1] for k in best["model"] if k.startswith("inductors.")} == {"mtn", "fc1"}
    log = [json.loads(line) for line in (rtfm_run / "log.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in log} == {"teacher", "first", "second"}
    teach = [r for r in log if r["phase"] == "teacher" and "loss" in r]
    assert teach and all(k in teach[0] for k in ("loss_cls", "loss_rtfm", "loss_smooth", "loss_sparse"))
    second = [r for r in log if r["phase"] == "second" and "loss" in r]
    assert second and all(k in second[0] for k in ("mil/loss_cls", "mil/loss_rtfm", "align", "distill", "pmg"))


def test_train_rtfm_alone_from_the_cli(tiny_dataset, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_config(tiny_dataset))))
    assert main(["train", "-c", str(path), "--model.backbone", "rtfm", "--train.model", "rtfm",
                 *(f"--rtfm.{k}={v}" for k, v in SMALL.items()), "--train.teacher_steps", "2",
                 "--no-progress", "--run-dir", str(tmp_path / "r")]) == 0
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["kind"] == "rtfm" and best["config"]["rtfm"]["fc1_dim"] == 16


def test_evaluate_run_and_teacher_checkpoint(rtfm_run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(rtfm_run), "--no-progress", "--no-plots", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "π-VAD (test-selected)" in out and "RTFM (teacher, test-selected)" in out
    assert main(["evaluate", "--ckpt", str(rtfm_run / "teacher.pt"), "--no-progress", "--no-plots",
                 "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["models"]["model"]["kind"] == "rtfm"


def test_evaluate_an_official_rtfm_state_dict(official, tiny_dataset, tmp_path, capsys):  # noqa: F811
    """An official-format checkpoint (the official random init at 1024-d, saved as its main.py saves) evaluates
    with a config of model.backbone rtfm, and gives the official model's scores."""
    from pivad.models.rtfm import RTFMBackbone

    torch.manual_seed(0)
    ref = official.model.Model(1024, 2).eval()
    pkl = tmp_path / "rtfm_random.pkl"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, pkl)  # DataParallel prefixes load too
    cfg = tiny_config(tiny_dataset, model={"backbone": "rtfm"})
    path = tmp_path / "rtfm_tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    model, _, meta = load_inference_model(pkl, cfg)
    assert meta["kind"] == "rtfm" and meta["source"] == "official" and isinstance(model, RTFMBackbone)
    x = torch.rand(1, 10, 5, 1024, generator=torch.Generator().manual_seed(1))  # one 10-crop video, 5 snippets
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref(x)[6].squeeze(-1)[0], rtol=0, atol=1e-5)
    assert main(["evaluate", "--ckpt", str(pkl), "-c", str(path), "--no-progress", "--no-plots",
                 "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["models"]["model"]
    assert metrics["kind"] == "rtfm" and 0.0 <= metrics["auc"] <= 1.0
    capsys.readouterr()
    small = tmp_path / "small.yaml"  # other widths than the weights: one line naming the file and a key
    small.write_text(yaml.safe_dump(to_dict(tiny_config(tiny_dataset, **RTFM))))
    assert main(["evaluate", "--ckpt", str(pkl), "-c", str(small), "--no-progress", "--no-plots",
                 "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pivad: error:") and "rtfm_random.pkl" in err and "shape" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["best.pt", "teacher.pt"])
def test_onnx_export_equals_torch(rtfm_run, tmp_path, name):
    pytest.importorskip("onnxruntime")
    from pivad.detect.pipeline import OnnxScorer
    from pivad.export import export_checkpoint

    out, check = export_checkpoint(rtfm_run / name, tmp_path / "model.onnx")
    assert check.worst < 1e-4
    model, _, _ = load_inference_model(rtfm_run / name)
    scorer = OnnxScorer(out)
    gen = torch.Generator().manual_seed(1)
    for T, crops in ((1, 1), (7, 2), (30, 1)):  # T is dynamic: the non-local block divides by it
        x = torch.randn(crops, T, 1024, generator=gen)
        with torch.no_grad():
            ref = model(x[None]).numpy()[0]
        assert np.abs(scorer(x.numpy()) - ref).max() < 1e-4, T


def test_detect_scores_a_video_with_an_rtfm_student(rtfm_run, tmp_path):
    from test_detect import CLIP, FAST

    assert main(["detect", str(CLIP), "--ckpt", str(rtfm_run / "best.pt"), "--out", str(tmp_path / "d"), *FAST]) == 0
    info = json.loads((tmp_path / "d" / "carphone_40.json").read_text())
    assert len(info["snippet_scores"]) == 3 and all(0.0 <= s <= 1.0 for s in info["snippet_scores"])


def test_info_counts_rtfm(tmp_path, capsys):
    path = tmp_path / "rtfm.yaml"
    path.write_text(yaml.safe_dump(RTFM))
    assert main(["info", "-c", str(path), "--snippets", "16"]) == 0
    out = capsys.readouterr().out
    assert "student RTFM (without its PIs)" in out and "mtn PI (D=1024)" in out and "fc1 PI (D=16)" in out
    from conftest import ROOT

    assert main(["info", "-c", str(ROOT / "configs" / "rtfm_ucf.yaml"), "--inductor.position", "none",
                 "--snippets", "32"]) == 0
    assert "this config's RTFM: 24,718,849 (equal)" in capsys.readouterr().out


def test_rtfm_config_errors_are_one_line(capsys):
    for args, key in ((["--rtfm.feature_dim", "2048"], "rtfm.feature_dim"),
                      (["--data.batch_abnormal", "32"], "data.batch_abnormal"),
                      (["--rtfm.dilations", "[]"], "rtfm.dilations")):
        assert main(["config", "show", "--model.backbone", "rtfm", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("pivad: error:") and key in err and err.count("\n") == 1, err


def test_resume_mid_step_two_reaches_the_same_weights(rtfm_run, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, **RTFM)
    part = train(cfg, tmp_path / "part", stop_after=4, progress=False)  # inside π-VAD step 2
    assert part.interrupted and load_checkpoint(tmp_path / "part" / "last.pt")["phase"] == "second"
    assert train(cfg, tmp_path / "part", resume=True, progress=False).global_step == 5
    for name in ("last.pt", "best.pt", "teacher.pt"):
        full, resumed = load_checkpoint(rtfm_run / name)["model"], load_checkpoint(tmp_path / "part" / name)["model"]
        assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full), name


def test_bf16_and_micro_batches_train(tiny_dataset, tmp_path):
    """bf16 autocast (the loss in float32) and micro-batches of normal/abnormal pairs run on RTFM."""
    cfg = tiny_config(tiny_dataset, **{**RTFM, "train": {**RTFM["train"], "precision": "bf16", "micro_batch": 2}})
    result = train(cfg, tmp_path / "r", progress=False)
    assert not result.interrupted and result.global_step == 5
    weights = load_checkpoint(tmp_path / "r" / "last.pt")["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.parametrize("name, width", [("rtfm_ucf.yaml", 2048), ("rtfm_xd.yaml", 1024)])
def test_paper_configs_load(name, width, capsys):
    from conftest import ROOT

    assert main(["config", "show", "-c", str(ROOT / "configs" / name)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["backbone"] == "rtfm" and shown["train"]["model"] == "rtfm"
    assert shown["model"]["input_dim"] == shown["rtfm"]["feature_dim"] == width
