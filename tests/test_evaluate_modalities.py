"""Evaluating a model that reads no modality needs no modality folder (issue 21): the README's
``pivad evaluate --ckpt ucf_trans_2022.pkl -c configs/ucf_crime.yaml`` for a user with the I3D features
only. Faked with a tiny official-format UR-DMU state dict and the tiny dataset without its modalities."""

from __future__ import annotations

import json

import torch

from pivad.cli import main
from pivad.config import save_config
from pivad.models.urdmu import URDMU, pivad_to_official
from test_resume import tiny_config


def test_official_urdmu_evaluates_without_modality_folders(tiny_dataset, tmp_path, capsys):
    cfg = tiny_config(tiny_dataset, data={"modality_root": str(tmp_path / "no_modalities")})
    assert cfg.data.modalities  # the config names modalities whose folder does not exist
    torch.manual_seed(0)
    model = URDMU(cfg.model.__class__(**{**cfg.model.__dict__, "input_dim": cfg.data.feature_dim, "heads": 4,
                                                  "dim_head": 4}))  # the official head count
    ckpt = tmp_path / "official.pth"
    torch.save(pivad_to_official(model.state_dict()), ckpt)
    config = tmp_path / "cfg.yaml"
    save_config(cfg, config)
    out = tmp_path / "eval"
    assert main(["evaluate", "--ckpt", str(ckpt), "-c", str(config), "--out", str(out), "--no-plots",
                 "--no-progress"]) == 0, capsys.readouterr().err  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())["models"]["model"]
    assert metrics["kind"] == "urdmu" and 0.0 <= metrics["auc"] <= 1.0
