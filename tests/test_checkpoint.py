"""Checkpoint I/O: atomic round trip, RNG states, clear errors, loading models for inference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pivad.config import Config, to_dict
from pivad.engine.checkpoint import FORMAT_VERSION, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from pivad.errors import CheckpointError


def test_round_trip_keeps_every_field(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    payload = {"kind": "urdmu", "config": to_dict(Config()), "model": net.state_dict(),
               "optimizer": opt.state_dict(), "phase": "teacher", "step": 7, "global_step": 7,
               "metrics": {"val_video_auc": 0.75}, "threshold": 0.5, "rng": [rng_state()],
               "loader": {"perm": np.arange(4), "pos": np.int64(2)}, "best": {"score": 0.75, "step": 5}}
    path = tmp_path / "a" / "last.pt"
    save_checkpoint(path, payload)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    back = load_checkpoint(path)  # weights_only=True load
    assert back["version"]["format"] == FORMAT_VERSION
    assert back["step"] == 7 and back["phase"] == "teacher" and back["best"]["score"] == 0.75
    assert torch.equal(back["model"]["weight"], net.weight)
    assert back["optimizer"]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert torch.equal(back["loader"]["perm"], torch.arange(4)) and back["loader"]["pos"] == 2


def test_rng_state_restores_all_generators():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_rng_state_survives_a_file(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"kind": "urdmu", "config": {}, "model": {}, "rng": [rng_state()]})
    x = torch.randn(3)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert torch.equal(torch.randn(3), x)


def test_bad_files_raise_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="bare state dict"):
        load_checkpoint(bare)
    old = tmp_path / "old.pt"
    torch.save({"version": {"format": 0}, "kind": "urdmu", "config": {}, "model": {}}, old)
    with pytest.raises(CheckpointError, match="format 0"):
        load_checkpoint(old)
