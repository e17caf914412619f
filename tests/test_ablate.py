"""Ablation grids: the paper's cells, generic --set grids, the table, skipping finished cells."""

from __future__ import annotations

import math

import pytest

from pivad.cli import main
from pivad.config import Config, save_config
from pivad.data.synth import write_synthetic_dataset
from pivad.engine.ablate import grid_cells, mean_std, parse_set, set_cells, summarise
from pivad.errors import ConfigError
from test_resume import tiny_config


def test_paper_grids():
    cfg = Config()
    _, cells = grid_cells(cfg, "modalities", None)
    names = [n for n, _ in cells]
    assert names[:5] == ["pose", "depth", "text", "panoptic", "flow"]  # Table 6: each alone
    assert names[5:] == ["pose+depth", "pose+depth+text", "pose+depth+text+panoptic",
                         "pose+depth+text+panoptic+flow"]
    assert [m["name"] for m in dict(cells)["pose+depth"]["data"]["modalities"]] == ["pose", "depth"]
    _, cells = grid_cells(cfg, "losses", None)
    assert dict(cells)["align+distill"]["loss"] == {"use_pmg": False, "use_align": True, "use_distill": True}
    assert len(cells) == 5
    assert [n for n, _ in grid_cells(cfg, "position", None)[1]] == ["early", "late", "both"]
    assert [n for n, _ in grid_cells(cfg, "real", None)[1]] == ["pseudo", "real"]
    with pytest.raises(ConfigError, match="unknown grid"):
        grid_cells(cfg, "depth", None)


def test_set_grids():
    assert parse_set("inductor.tau=0.05,0.1") == ("inductor.tau", [0.05, 0.1])
    cells = set_cells(["inductor.tau=0.05,0.1", "loss.use_pmg=true,false"])
    assert len(cells) == 4
    assert cells[1] == ("tau=0.05,use_pmg=False", {"inductor": {"tau": 0.05}, "loss": {"use_pmg": False}})
    with pytest.raises(ConfigError, match="expected section.key=v1,v2"):
        parse_set("tau=1")


def test_mean_std_and_table():
    m, s = mean_std([1.0, 2.0, 3.0])
    assert (m, s) == (2.0, 1.0)
    assert math.isnan(mean_std([None, float("nan")])[0])
    rep = lambda a: {"models": {"best": {"auc": a, "auc_a": a, "ap": a, "ap_a": a}}}  # noqa: E731
    table = summarise({"early": [rep(0.8), rep(0.9)]}, "position", "test", [0, 1])
    assert "| early | 85.00 ± 7.07 |" in table["markdown"] and "test-selected" in table["markdown"]
    assert table["csv"].splitlines()[1].startswith("early,test-selected,2,85.0000,7.0711")


def test_ablate_verb_runs_cells_once(tmp_path, capsys):
    data_dir = write_synthetic_dataset(tmp_path / "data", preset="tiny")
    cfg = tiny_config(data_dir, train={"teacher_steps": 1, "warmup_steps": 1, "steps": 1, "eval_every": 1})
    save_config(cfg, tmp_path / "tiny.yaml")
    args = ["ablate", "-c", str(tmp_path / "tiny.yaml"), "--set", "inductor.position=early,late", "--seeds", "0",
            "--out", str(tmp_path / "grid"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| position=early |" in out and "| UR-DMU (teacher) |" in out
    assert (tmp_path / "grid" / "table.csv").read_text().count("\n") == 4  # header + teacher + 2 cells
    metrics = tmp_path / "grid" / "position=late" / "seed0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert main(args) == 0  # everything finished: nothing retrained
    assert metrics.stat().st_mtime_ns == stamp
    assert main(["ablate", "-c", str(tmp_path / "tiny.yaml"), "--seeds", "a"]) == 2
    assert "--seeds 'a'" in capsys.readouterr().err
