"""Config values are checked where they are declared (issue 21): a YAML file, a ``--section.key value``
override and the config inside a checkpoint all meet the same check, and every verb that reads one
refuses a bad value in one line naming the file (if any) and the key, exit 2."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from pivad.cli import main
from pivad.config import (Config, MAX_SEGMENTS, MAX_WIDTH, ModalityConfig, check_config, from_dict, load_config,
                          to_dict)
from pivad.engine.checkpoint import FORMAT_VERSION
from pivad.errors import CheckpointError, ConfigError

from test_bad_input import _one_line

CLIP = Path(__file__).parent / "data" / "videos" / "carphone_40.mp4"

# (section, key, YAML text of the value, what the message says)
BAD_VALUES = [
    ("train", "lr", ".nan", "must be a finite number, got nan"),
    ("train", "lr", "-1", "must be >= 0, got -1.0"),
    ("train", "lr", ".inf", "must be a finite number, got inf"),
    ("train", "weight_decay", "-1e-5", "must be >= 0"),
    ("data", "num_segments", "1000000000", f"must be <= {MAX_SEGMENTS}, got 1000000000"),
    ("data", "batch_normal", "0", "must be >= 1, got 0"),
    ("train", "seed", "100000000000000000000000", "must be <= 4294967295"),
    ("train", "seed", "-1", "must be >= 0, got -1"),
    ("model", "dropout", "7.0", "must be < 1, got 7.0"),
    ("model", "hidden_dim", "10000000", f"must be <= {MAX_WIDTH}, got 10000000"),
    ("model", "hidden_dim", "-4", "must be >= 1, got -4"),
    ("inductor", "tau", "0", "must be > 0, got 0.0"),
    ("inductor", "position", "middle", "'middle' is not a placement or hook point of urdmu (known: early, late, both, none)"),
    ("data", "storage", "disk", "expected one of memory, mmap, got 'disk'"),
    ("train", "precision", "fp16", "expected one of fp32, bf16, got 'fp16'"),
    ("data", "val_fraction", "1.0", "must be < 1, got 1.0"),
    ("train", "micro_batch", "3", "must be even, got 3"),
    ("train", "eval_every", "0", "must be >= 1, got 0"),
    ("train", "steps", "-5", "must be >= 0, got -5"),
    ("eval", "threshold", "1.5", "must be <= 1, got 1.5"),
    ("train", "device", "gpu", "expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("data", "name", "../up", "expected a plain folder name"),
    ("data", "label_rule", "'regex:('", "invalid regular expression"),
    ("data", "num_crops", "-3", "must be >= 0, got -3"),
]


@pytest.mark.parametrize("section,key,text,problem", BAD_VALUES, ids=[f"{s}.{k}={t}" for s, k, t, _ in BAD_VALUES])
def test_config_show_and_train_refuse_the_same_values(tmp_path, capsys, section, key, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(f"{section}:\n  {key}: {text}\n")
    expected = f"{path}: config key '{section}.{key}': {problem}"
    assert main(["config", "show", "-c", str(path)]) == 2
    shown = _one_line(capsys, expected)
    assert main(["train", "-c", str(path), "--train.out_dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert _one_line(capsys) == shown
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,problem", [
    (["--train.seed", "1e23"], "config key 'train.seed': expected an integer, got 1e+23"),
    (["--train.seed", "100000000000000000000000"], "config key 'train.seed': must be <= 4294967295"),
    (["--train.lr", ".nan"], "config key 'train.lr': must be a finite number, got nan"),
    (["--train.lr=-1"], "config key 'train.lr': must be >= 0, got -1.0"),
    (["--model.dropout", "7.0"], "config key 'model.dropout': must be < 1"),
    (["--train.lr", "1" + "0" * 400], "config key 'train.lr': number out of range"),
    (["--data.modalities", "[{name: a}]"], "config key 'data.modalities[0].dim': missing"),
    (["--data.modalities", "[{name: a, dim: 0}]"], "config key 'data.modalities[0].dim': must be >= 1, got 0"),
    (["--data.modalities", "[{name: a/b, dim: 3}]"], "config key 'data.modalities[0].name': expected a plain"),
    (["--data.modalities", "[{name: a, dim: 2}, {name: a, dim: 3}]"], "modality 'a' is listed twice"),
    (["--inductor.cmi_heads", "7"], "config key 'inductor.cmi_heads': the width 512 of urdmu's hook point 'early' is not divisible by 7 heads"),
    (["--train.lr", "1", "--train.lr.x", "2"], "'--train.lr.x': 'lr' is a value, not a section"),
])
def test_overrides_are_checked(capsys, override, problem):
    assert main(["config", "show", *override]) == 2
    _one_line(capsys, problem)


def test_good_values_at_the_bounds_pass():
    cfg = load_config(None, ["--train.seed", "0", "--data.num_crops", "0", "--model.dropout", "0.0",
                             "--data.num_segments", str(MAX_SEGMENTS), "--train.micro_batch", "4",
                             "--train.device", "cuda:1", "--train.steps", "0", "--data.label_rule", "regex:^N",
                             "--inductor.cmi_heads", "3", "--train.model", "urdmu"])  # heads: no PI in a UR-DMU run
    assert cfg.data.num_segments == MAX_SEGMENTS and cfg.train.micro_batch == 4
    assert check_config(Config()) == Config()


def test_every_numeric_field_declares_its_range():
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory):
            if f.type in ("int", "float"):
                assert "check" in f.metadata, f"{section.name}.{f.name} has no allowed range"
    assert "check" in dataclasses.fields(ModalityConfig)[1].metadata


def test_a_value_set_after_loading_is_checked_by_the_trainer():
    from pivad.engine.trainer import plan_phases

    cfg = Config()
    cfg.train.lr = math.nan
    with pytest.raises(ConfigError, match="config key 'train.lr': must be a finite number"):
        plan_phases(cfg)
    cfg = Config()
    cfg.train.model = "mil"
    with pytest.raises(ConfigError, match="config key 'train.model'"):
        plan_phases(cfg)


def _checkpoint(path: Path, **changes) -> Path:
    """A pivad checkpoint (no weights needed: its config is refused first) with ``section.key`` values changed."""
    values = to_dict(Config())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        values[section][key] = value
    torch.save({"version": {"format": FORMAT_VERSION, "pivad": "test"}, "kind": "urdmu", "config": values,
                "model": {}}, path)
    return path


@pytest.mark.parametrize("width", [10_000_000, -4])
def test_a_checkpoint_config_out_of_range_is_one_line_naming_the_file(tmp_path, capsys, width):
    ckpt = _checkpoint(tmp_path / "ckpt.pt", model__hidden_dim=width)
    problem = f"{ckpt}: config key 'model.hidden_dim': must be"
    assert main(["evaluate", "--ckpt", str(ckpt), "--no-progress"]) == 2
    _one_line(capsys, problem)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 2
    _one_line(capsys, problem)
    assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    _one_line(capsys, problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # nothing written


def test_a_checkpoint_config_of_the_wrong_shape_names_the_file(tmp_path, capsys):
    from pivad.engine.checkpoint import load_model

    bad = _checkpoint(tmp_path / "a.pt", train__lr=float("nan"), model__depth="two")
    with pytest.raises(CheckpointError, match=rf"{bad}: config key .model.depth.: expected an integer"):
        load_model(bad)
    torch.save({"version": {"format": FORMAT_VERSION}, "kind": "urdmu", "config": ["not", "a", "mapping"],
                "model": {}}, tmp_path / "b.pt")
    assert main(["evaluate", "--ckpt", str(tmp_path / "b.pt"), "--no-progress"]) == 2
    _one_line(capsys, f"{tmp_path / 'b.pt'}: 'config' holds list, not a mapping")


def test_from_dict_names_nested_keys_and_unknown_ones():
    with pytest.raises(ConfigError, match=r"^config key 'data.modalities\[1\].dim': must be <= 65536"):
        from_dict({"data": {"modalities": [{"name": "a", "dim": 3}, {"name": "b", "dim": 10**9}]}})
    with pytest.raises(ConfigError, match=r"^unknown config key 'data.modalities\[0\].width'"):
        from_dict({"data": {"modalities": [{"name": "a", "dim": 3, "width": 1}]}})
    with pytest.raises(ConfigError, match=r"^unknown config key 'a\\nb'"):  # a newline in a key stays escaped
        from_dict({"a\nb": 1})


def test_yaml_reads_exponents_without_a_dot_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\n  weight_decay: 1E-5\n")
    cfg = load_config(path)
    assert cfg.train.lr == 3e-4 and cfg.train.weight_decay == 1e-5


# ------------------------------------------------------------------------------------------- config files


def _pivad(*args: str, timeout: float = 60):
    """``pivad`` in a subprocess (a config read that blocks must fail the test, not hang it)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([sys.executable, "-m", "pivad.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  name: caf\u00e9\n".encode("latin-1"))
    assert main(["config", "show", "-c", str(path)]) == 2
    _one_line(capsys, f"{path}: not UTF-8 text (byte 0xe9 on line 2)")
    assert main(["train", "-c", str(path)]) == 2
    _one_line(capsys, f"{path}: not UTF-8 text")
    path.write_bytes(b"\xef\xbb\xbfdata:\n  name: cafe\n")  # a UTF-8 byte order mark is fine
    assert load_config(path).data.name == "cafe"


def test_a_config_that_is_not_a_regular_file_is_refused_without_reading(tmp_path, capsys):
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    done = _pivad("config", "show", "-c", str(fifo))  # read, it would wait for a writer for ever
    assert done.returncode == 2 and done.stderr == f"pivad: error: {fifo}: cannot read config file (not a regular file)\n"
    link = tmp_path / "link.yaml"
    link.symlink_to("/dev/zero")
    done = _pivad("train", "-c", str(link))  # read, it would fill the memory
    assert done.returncode == 2 and done.stderr == f"pivad: error: {link}: cannot read config file (not a regular file)\n"
    assert main(["config", "show", "-c", str(tmp_path)]) == 2
    _one_line(capsys, f"{tmp_path}: cannot read config file (a folder)")


def test_a_huge_config_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.write(b"# comment\n" * 1000)
        f.truncate(4 << 30)  # 4 GiB, sparse
    assert main(["config", "show", "-c", str(path)]) == 2
    _one_line(capsys, f"{path}: not a config file (larger than 1024 KiB)")


@pytest.mark.parametrize("text,problem", [
    ("train:\n  seed: 2021-02-30\n", "not valid YAML (day is out of range for month)"),
    ("? [a, b]\n: 1\n", "not valid YAML (found unhashable key"),
    ("train: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
    ("data:\n  name: 2021-02-03\n", "config key 'data.name': expected a string, got datetime.date(2021, 2, 3)"),
])
def test_yaml_oddities_are_one_line(tmp_path, capsys, text, problem):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    assert main(["config", "show", "-c", str(path)]) == 2
    _one_line(capsys, f"{path}: {problem}")


def test_a_string_that_looks_like_a_number_survives_save_and_show(tmp_path, capsys):
    from pivad.config import save_config

    cfg = load_config(None, {"data": {"annotation": "1e-4", "name": "2E5"}})
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert main(["config", "show", "--data.annotation", "'1e-4'"]) == 0
    (tmp_path / "shown.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "shown.yaml").data.annotation == "1e-4"


def test_ablation_values_are_checked_before_the_first_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 1\n")
    out = tmp_path / "grid"
    assert main(["ablate", "-c", str(cfg), "--set", "inductor.tau=0.1,-1", "--out", str(out)]) == 2
    _one_line(capsys, "ablation cell tau=-1: config key 'inductor.tau': must be > 0, got -1.0")
    assert main(["ablate", "-c", str(cfg), "--set", "inductor.tau=0.1", "--seeds", "0,-3", "--out", str(out)]) == 2
    _one_line(capsys, "ablation cell seed -3: config key 'train.seed': must be >= 0, got -3")
    assert not out.exists()
