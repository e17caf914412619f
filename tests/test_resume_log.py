"""A run stopped between two log lines and resumed writes the same training log as an uninterrupted
run (the per-step losses of the open log window travel in the checkpoint), so its report's training
curves are the same too (``pivad fit --resume``)."""

from __future__ import annotations

import json

from pivad.engine.trainer import train
from test_resume import tiny_config

NUMBERS = ("global_step", "phase", "step")


def _loss_lines(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k in NUMBERS or k.startswith("loss")} for r in rows if "loss" in r]


def test_stop_inside_a_log_window_then_resume_logs_the_same(tmp_path, tiny_dataset) -> None:
    cfg = tiny_config(tiny_dataset, train={"log_every": 3, "eval_every": 2})
    full = train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", stop_after=5, progress=False)  # steps 4, 5 of the window 4..6
    assert part.interrupted and not full.interrupted
    train(cfg, tmp_path / "part", resume=True, progress=False)
    assert _loss_lines(tmp_path / "part") == _loss_lines(tmp_path / "full")
