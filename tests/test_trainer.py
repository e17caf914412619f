"""The training loop: phases, files of a run, teacher loading (own and official), selection labels."""

from __future__ import annotations

import json

import pytest
import torch

from pivad.config import Config
from pivad.engine.checkpoint import load_checkpoint, load_model
from pivad.engine.trainer import plan_phases, train
from pivad.errors import CheckpointError, ConfigError
from test_resume import tiny_config


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_dataset):
    run_dir = tmp_path_factory.mktemp("urdmu")
    cfg = tiny_config(tiny_dataset, train={"model": "urdmu", "teacher_steps": 4, "eval_every": 2})
    result = train(cfg, run_dir, progress=False)
    return run_dir, result


def test_plan_phases():
    cfg = Config()
    cfg.train.teacher_steps, cfg.train.warmup_steps, cfg.train.steps = 5, 2, 7
    assert plan_phases(cfg) == [("teacher", 5), ("first", 2), ("second", 7)]
    cfg.train.teacher_ckpt = "t.pt"
    assert plan_phases(cfg) == [("first", 2), ("second", 7)]
    cfg.train.model = "urdmu"
    assert plan_phases(cfg) == [("teacher", 5)]
    cfg.train.model = "mil"
    with pytest.raises(ConfigError, match="train.model"):
        plan_phases(cfg)
    cfg.train.model, cfg.train.selection = "pivad", "best"
    with pytest.raises(ConfigError, match="train.selection"):
        plan_phases(cfg)


def test_urdmu_run_writes_checkpoints_and_log(teacher_run):
    run_dir, result = teacher_run
    assert not result.interrupted and result.global_step == 4
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "last.pt", "best.pt", "log.jsonl"} <= names and "teacher.pt" not in names
    last = load_checkpoint(run_dir / "last.pt")
    assert (last["kind"], last["phase"], last["step"]) == ("urdmu", "teacher", 4)
    assert last["optimizer"]["state"] and last["loader"]["step"] == 4
    best = load_checkpoint(run_dir / "best.pt")
    assert best["optimizer"] is None and best["step"] in (2, 4)
    assert best["metrics"]["selection_score"] == result.best["score"]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert [r["global_step"] for r in losses] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and "triplet" in str(r) for r in losses)
    assert [r["global_step"] for r in records if "selection_score" in r] == [2, 4]


def test_pivad_from_own_teacher_checkpoint(tmp_path, tiny_dataset, teacher_run):
    run_dir, _ = teacher_run
    cfg = tiny_config(tiny_dataset, train={"teacher_ckpt": str(run_dir / "best.pt"), "warmup_steps": 1, "steps": 2,
                                       "eval_every": 2})
    result = train(cfg, tmp_path / "pv", progress=False)
    assert result.global_step == 3 and not (tmp_path / "pv" / "teacher.pt").exists()
    model, _, meta = load_model(tmp_path / "pv" / "last.pt")
    assert meta["kind"] == "pivad" and meta["phase"] == "second"
    teacher, _, _ = load_model(run_dir / "best.pt")
    for k, v in teacher.state_dict().items():  # the frozen teacher is exactly the loaded one
        assert torch.equal(model.teacher.state_dict()[k], v), k


def test_pivad_from_official_teacher_state_dict(tmp_path, tiny_dataset):
    from pivad.models import URDMU
    from pivad.models.urdmu import pivad_to_official

    cfg = tiny_config(tiny_dataset, train={"warmup_steps": 1, "steps": 1, "eval_every": 1})
    official = pivad_to_official(URDMU(cfg.model).state_dict())
    torch.save(official, tmp_path / "official.pth")
    cfg.train.teacher_ckpt = str(tmp_path / "official.pth")
    train(cfg, tmp_path / "run", progress=False)
    model, _, _ = load_model(tmp_path / "run" / "last.pt")
    own = URDMU.from_official_state_dict(official, cfg.model).state_dict()
    assert all(torch.equal(model.teacher.state_dict()[k], v) for k, v in own.items())


def test_teacher_with_other_widths_is_refused(tmp_path, tiny_dataset, teacher_run):
    run_dir, _ = teacher_run
    cfg = tiny_config(tiny_dataset, model={"hidden_dim": 24}, train={"teacher_ckpt": str(run_dir / "best.pt")})
    with pytest.raises(ConfigError, match="teacher widths"):
        train(cfg, tmp_path / "bad", progress=False)
    cfg = tiny_config(tiny_dataset, train={"teacher_ckpt": str(tmp_path / "nope.pt")})
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint"):
        train(cfg, tmp_path / "bad2", progress=False)


def test_student_init_teacher_copies_the_teacher(tmp_path, tiny_dataset, teacher_run):
    run_dir, _ = teacher_run
    cfg = tiny_config(tiny_dataset, train={"teacher_ckpt": str(run_dir / "best.pt"), "warmup_steps": 1, "steps": 1,
                                           "eval_every": 2, "student_init": "teacher", "lr": 0.0,
                                           "weight_decay": 0.0})
    result = train(cfg, tmp_path / "pv", progress=False)
    teacher, _, _ = load_model(run_dir / "best.pt")
    student = result.model.student.state_dict()
    for k, v in teacher.state_dict().items():  # lr 0: the student is still the copy it started from
        assert torch.equal(student[k], v), k
    cfg.train.student_init = "other"
    with pytest.raises(ConfigError, match="student_init"):
        plan_phases(cfg)


def test_pmg_standardize_sets_training_statistics(tmp_path, tiny_dataset, teacher_run):
    run_dir, _ = teacher_run
    cfg = tiny_config(tiny_dataset, train={"teacher_ckpt": str(run_dir / "best.pt"), "warmup_steps": 1, "steps": 1,
                                           "eval_every": 2}, inductor={"pmg_standardize": True})
    result = train(cfg, tmp_path / "pv", progress=False)
    for pi in result.model.inductors.values():
        for m in cfg.data.modalities:
            std = getattr(pi, f"std_{m.name}")
            assert std.shape == (m.dim,) and not torch.all(std == 1)  # set from the data, not the init
    reloaded, _, _ = load_model(tmp_path / "pv" / "last.pt")  # the statistics travel in the checkpoint
    a, b = reloaded.state_dict(), result.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "std_" in k or "mean_" in k)


def test_pmg_lr_and_inductor_lr_make_their_own_adam_groups(tmp_path, tiny_dataset):
    from pivad.engine.trainer import Trainer
    from pivad.models.factory import build_model

    cfg = tiny_config(tiny_dataset, train={"inductor_lr": 1e-3, "pmg_lr": 5e-3})
    model = build_model("pivad", cfg)
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = cfg
    groups = trainer._optimizer(model).param_groups
    pmg = {id(p) for pi in model.inductors.values() for p in pi.pmg.parameters()}
    pis = {id(p) for p in model.inductors.parameters()} - pmg
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[5e-3] == pmg and by_lr[1e-3] == pis
    assert len(by_lr[cfg.train.lr]) == len([p for p in model.parameters() if p.requires_grad]) - len(pmg | pis)
    cfg.train.pmg_lr = 0.0  # PMG follows the PIs' rate: one PI group as before
    assert [g["lr"] for g in trainer._optimizer(model).param_groups] == [cfg.train.lr, 1e-3]
    cfg.train.inductor_lr = 0.0
    assert len(trainer._optimizer(model).param_groups) == 1


def test_student_clean_trains_the_student_without_noise(tmp_path, tiny_dataset):
    """``train.student_clean``: the π-VAD phases' student draws no noise and no dropout; the teacher did."""
    from pivad.engine.trainer import Trainer
    from test_resume import tiny_config

    cfg = tiny_config(tiny_dataset, train={"student_clean": True})
    result = Trainer(cfg, tmp_path / "run", progress=False).run()
    student = result.model.student
    assert student.sample is False
    assert all(m.dropout == 0.0 for m in student.modules() if hasattr(m, "dropout") and isinstance(m.dropout, float))
    teacher = Trainer(cfg, tmp_path / "run", progress=False)._new_model("urdmu")
    assert teacher.sample is True
