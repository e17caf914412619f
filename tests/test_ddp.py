"""Data parallelism: two gloo processes train the tiny preset; their weights stay identical."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pivad.data.synth import write_synthetic_dataset
from pivad.engine.ddp import DistInfo, shard_batch
from pivad.data.loader import Batch
from test_pel4vad_cli import PEL
from test_rtfm_cli import RTFM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# each backbone's tiny model sections, as its own CLI tests train it
BACKBONES = {
    "urdmu": {},
    "pel4vad": {k: PEL[k] for k in ("model", "pel4vad")},
    "rtfm": {k: RTFM[k] for k in ("model", "rtfm")},
}


def _worker(rank: int, world: int, port: int, data_dir: str, out: str, backbone: str = "urdmu") -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from pathlib import Path

    from test_resume import tiny_config

    from pivad.engine.ddp import init_distributed, shutdown
    from pivad.engine.trainer import train

    cfg = tiny_config(Path(data_dir), **BACKBONES[backbone],
                      train={"teacher_steps": 3, "warmup_steps": 1, "steps": 2, "eval_every": 2, "device": "cpu"})
    result = train(cfg, Path(out) / "run", progress=False)
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
    shutdown(init_distributed("cpu"))


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_two_gloo_ranks_keep_identical_weights(tmp_path, backbone):
    data_dir = write_synthetic_dataset(tmp_path / "tiny", preset="tiny")
    mp.spawn(_worker, args=(2, _free_port(), str(data_dir), str(tmp_path), backbone), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    run = tmp_path / "run"
    assert {"config.yaml", "last.pt", "best.pt", "teacher.pt", "log.jsonl"} <= {p.name for p in run.iterdir()}
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_shard_batch_takes_every_world_th_crop_of_each_half():
    rgb = torch.arange(8.0).reshape(8, 1, 1)  # crops 0-3 normal, 4-7 abnormal
    batch = Batch(rgb=rgb, labels=torch.tensor([0.0] * 4 + [1.0] * 4), modalities={"m": rgb.clone()})
    x, y, m = shard_batch(batch, DistInfo(rank=1, world_size=2), n_normal=4)
    assert x.flatten().tolist() == [1.0, 3.0, 5.0, 7.0]
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]  # still normal first
    assert torch.equal(m["m"], x)
    x0, _, _ = shard_batch(batch, DistInfo(rank=0, world_size=2), n_normal=4)
    assert sorted(x0.flatten().tolist() + x.flatten().tolist()) == list(range(8))
