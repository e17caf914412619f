"""Seeded fuzzing of the config loader (issue 21): mutated and random YAML files, random override lists,
random values in every field and in a checkpoint's config. Every outcome is a valid Config (its values
pass the check again and survive a save and a reload) or one ConfigError of one line (naming the file
where there is one); never another exception."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest

from pivad.config import Config, check_config, config_yaml, from_dict, load_config, to_dict
from pivad.errors import ConfigError, PivadError
from test_fuzz_readers import mutate

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "src" / "pivad" / "configs" / name for name in ("demo.yaml", "ucf_crime.yaml")]
CASES = 150

FIELDS = [(section.name, f.name, f.type) for section in dataclasses.fields(Config)
          for f in dataclasses.fields(section.default_factory)]
WORDS = ["", " ", "nan", ".nan", ".inf", "-.inf", "-1", "0", "1", "2", "7.0", "1e23", "1e-4", "1e309", "-0",
         "0x10", "0o7", "1_000", "true", "no", "null", "~", "[]", "{}", "[a, 1]", "{name: a, dim: 3}", "[", "{",
         "'", '"', ":", "- a", "&a 1", "*a", "!!binary aGk=", "!!python/object:os.system", "2021-02-30",
         "2021-02-03", "12:30:00", "a/b", "..", "regex:(", "regex:^N", "cuda:0", "mps", "\0", "\t", "é", "\x85",
         "a\nb: 1", "9" * 50, "-" + "9" * 30, "both", "none", "per_video", "bf16", "mmap", "float16"]


def _value(rng: random.Random, depth: int = 0):
    """A random Python value of the kinds YAML can produce (and a few it cannot)."""
    kind = rng.randrange(11 if depth < 2 else 8)
    if kind == 0:
        return rng.choice([0, 1, -1, 2, 3, 8, 64, 4096, 4097, 65536, 65537, 2**31, 2**32 - 1, 2**32, 2**63, 10**23,
                           -10**23, 10**400])
    if kind == 1:
        return rng.choice([0.0, -0.0, 0.5, 1.0, -1.0, 0.999, 1e-300, 1e300, math.nan, math.inf, -math.inf, 7.0])
    if kind == 2:
        return rng.uniform(-2, 2) * 10 ** rng.randint(-5, 8)
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5, 6, 7):
        return rng.choice(WORDS)
    if kind == 8:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == 9:
        return {rng.choice(["name", "dim", "x", 1, None]): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return {"name": rng.choice(["pose", "", "a/b", "depth"]), "dim": _value(rng, depth + 1)}


def _accepted(cfg: Config, tmp_path: Path) -> None:
    """What the loader returns is a valid Config that a save and a reload give back unchanged."""
    assert isinstance(cfg, Config)
    check_config(cfg)
    path = tmp_path / "roundtrip.yaml"
    path.write_text(config_yaml(cfg))  # what save_config and config show write
    assert load_config(path) == cfg


def _refused(exc: PivadError, path: Path | None = None) -> None:
    msg = str(exc)
    assert isinstance(exc, ConfigError) and msg and "\n" not in msg and "\r" not in msg, repr(msg)
    if path is not None:
        assert msg.startswith(f"{path}: "), msg


def _outcome(load, tmp_path: Path, path: Path | None = None) -> bool:
    """True if ``load()`` gave a valid Config, False if a clean ConfigError; anything else fails the test."""
    try:
        cfg = load()
    except ConfigError as exc:
        _refused(exc, path)
        return False
    _accepted(cfg, tmp_path)
    return True


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_mutated_config_files(tmp_path, config):
    original = config.read_bytes()
    rng = random.Random(f"config-{config.name}")
    path = tmp_path / "mutated.yaml"
    outcomes = []
    for _ in range(CASES // 2):
        path.write_bytes(mutate(original, rng))
        outcomes.append(_outcome(lambda: load_config(path), tmp_path, path))
    assert 0 < sum(outcomes) < len(outcomes)  # the mutations reach both outcomes


def test_random_bytes_and_lines_as_config_files(tmp_path):
    rng = random.Random("config-bytes")
    path = tmp_path / "random.yaml"
    keys = [f"{s}:\n  {k}: " for s, k, _ in FIELDS] + ["data:\n  modalities:\n    - ", "train: ", "? "]
    for case in range(CASES):
        if case % 2:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
        else:
            path.write_text("".join(rng.choice(keys) + rng.choice(WORDS) + "\n" for _ in range(rng.randint(1, 4))),
                            encoding="utf-8", errors="surrogateescape")
        _outcome(lambda: load_config(path), tmp_path, path)


def test_random_override_lists(tmp_path):
    rng = random.Random("config-overrides")
    keys = [f"{s}.{k}" for s, k, _ in FIELDS] + ["train", "train.", ".lr", "train.lr.x", "nope.x", "data.modalities.0",
                                                 "a.b.c", "model.hidden_dim.y", ""]
    outcomes = []
    for _ in range(CASES):
        tokens: list[str] = []
        for _ in range(rng.randint(1, 4)):
            key, word = rng.choice(keys), rng.choice(WORDS)
            form = rng.randrange(4)
            tokens += [f"--{key}", word] if form < 2 else [f"--{key}={word}"] if form == 2 else [rng.choice([key, word])]
        outcomes.append(_outcome(lambda: load_config(None, tokens), tmp_path))
    assert 0 < sum(outcomes) < CASES


def test_random_values_in_every_field(tmp_path):
    rng = random.Random("config-values")
    accepted = {f"{s}.{k}": 0 for s, k, _ in FIELDS}
    for _ in range(3):
        for section, key, _ in FIELDS:
            values = {section: {key: _value(rng)}}
            if rng.random() < 0.3:  # and a second field at once
                other_section, other_key, _ = rng.choice(FIELDS)
                values.setdefault(other_section, {})[other_key] = _value(rng)
            accepted[f"{section}.{key}"] += _outcome(lambda: from_dict(values), tmp_path)
    assert sum(accepted.values()) > 0


def test_random_configs_inside_checkpoints(tmp_path):
    from pivad.engine.checkpoint import checkpoint_config

    rng = random.Random("config-checkpoints")
    path = tmp_path / "ckpt.pt"
    for _ in range(CASES):
        config = to_dict(Config())
        for _ in range(rng.randint(1, 3)):
            section, key, _ = rng.choice(FIELDS)
            config[section][key] = _value(rng)
        if rng.random() < 0.1:
            config = _value(rng)
        try:
            cfg = checkpoint_config({"config": config}, path)
        except PivadError as exc:
            msg = str(exc)
            assert msg.startswith(f"{path}: ") and "\n" not in msg, repr(msg)
            continue
        _accepted(cfg, tmp_path)
