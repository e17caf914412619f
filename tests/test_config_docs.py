"""docs/config.md is generated from the dataclasses and current; `pivad config show` prints the resolved config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from pivad.cli import main
from pivad.config import Config
from pivad.config_docs import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_current():
    assert DOC.read_text() == render(), "docs/config.md is stale: python -m pivad.config_docs > docs/config.md"


def test_every_key_is_listed_with_a_meaning():
    text = render()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory):
            row = next(ln for ln in text.splitlines() if ln.startswith(f"| `{section.name}.{f.name}` |"))
            assert row.rstrip(" |").split("|")[-1].strip(), f"{section.name}.{f.name} has no meaning"


def test_config_show_resolves_file_and_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 7\n")
    assert main(["config", "show", "-c", str(cfg), "--train.lr", "3e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["steps"] == 7 and shown["train"]["lr"] == 3e-4 and shown["data"]["num_crops"] == 10
    assert main(["config", "show", "--train.nope", "1"]) == 2
    assert "unknown config key 'train.nope'" in capsys.readouterr().err
