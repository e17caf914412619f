import pytest

from pivad.config import Config, load_config, overrides_to_dict, save_config
from pivad.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lr: 0.001\ndata:\n  name: ucf_crime\n")
    cfg = load_config(cfg_file, ["--train.lr", "3e-4", "--data.num_crops=5", "--loss.use_pmg", "false"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.name == "ucf_crime"
    assert cfg.data.num_crops == 5
    assert cfg.loss.use_pmg is False
    assert cfg.train.steps == Config().train.steps


def test_unknown_key_named(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lrr: 0.001\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'train.lrr'"):
        load_config(cfg_file)
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        load_config(None, ["--bogus.x", "1"])


def test_wrong_type_named():
    with pytest.raises(ConfigError, match="'train.steps': expected an integer"):
        load_config(None, ["--train.steps", "many"])
    with pytest.raises(ConfigError, match="'loss.use_pmg': expected true/false"):
        load_config(None, ["--loss.use_pmg", "1"])


def test_modalities_list_and_roundtrip(tmp_path):
    cfg = load_config(None, {"data": {"modalities": [{"name": "audio", "dim": 128}]}})
    assert cfg.data.modalities[0].name == "audio" and cfg.data.modalities[0].dim == 128
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="missing value"):
        overrides_to_dict(["--train.lr"])
    with pytest.raises(ConfigError, match="expected --section.key"):
        overrides_to_dict(["--lr", "1"])


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from pivad.io import atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind
