"""Seeded random mutations of a real tiny checkpoint and of an exported scorer's metadata through the
readers ``detect``, ``evaluate`` and ``export`` use: every outcome is a model that loads and keeps what it
promises (a finite threshold in [0, 1], a strict-JSON description, scores of the right shape) or a clean
one-line PivadError naming the file, never any other exception."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pivad.detect.pipeline import OnnxScorer, TorchScorer, checked_scores, default_threshold, onnx_metadata
from pivad.errors import PivadError
from pivad.io import json_safe
from test_artefacts import onnx_scorer
from test_detect import make_checkpoint
from test_fuzz_readers import mutate

CASES = 80
VALUES = ["x", "", "pivad", [1, 2], [], {}, {"a": 1}, None, True, False, -4, 0, 1, 3, 0.5, 2.5, -0.0, math.nan,
          math.inf, -math.inf, (1, "a"), b"\x00\xff"]  # fmt: skip
TOP = ["version", "kind", "config", "model", "threshold", "step", "phase", "global_step", "metrics", "features"]


def _value(rng: random.Random):
    pick = rng.randrange(len(VALUES) + 3)
    if pick == len(VALUES):
        return torch.full((rng.randint(0, 3), 2), rng.choice([0.0, math.nan]))  # a stray tensor
    if pick == len(VALUES) + 1:
        return {"nested": rng.choice(VALUES)}
    if pick == len(VALUES) + 2:
        return torch.tensor(rng.choice([0.5, math.nan]))  # a 0-d tensor where a number was
    return copy.deepcopy(VALUES[pick])


def _mutate_weights(sd: dict, rng: random.Random) -> None:
    name = rng.choice(sorted(sd))
    weight = sd[name]
    op = rng.randrange(7)
    if op == 0:
        sd[name] = weight.clone().fill_(rng.choice([math.nan, math.inf, -math.inf]))
    elif op == 1:
        sd[name] = torch.zeros([rng.randint(1, 4) for _ in range(rng.randint(0, 3))])  # wrong shape
    elif op == 2:
        sd[name] = weight.to(torch.int64)
    elif op == 3:
        sd[name] = _value(rng)
    elif op == 4:
        del sd[name]
    elif op == 5:
        sd[f"extra.{name}"] = weight.clone()
    elif weight.numel():
        flat = weight.clone().reshape(-1)
        flat[rng.randrange(flat.numel())] = math.nan  # one NaN among finite weights
        sd[name] = flat.reshape(weight.shape)


def _mutate_config(config: dict, rng: random.Random) -> None:
    section = rng.choice(sorted(config))
    if not isinstance(config[section], dict) or not config[section] or rng.random() < 0.15:
        config[section] = _value(rng)
        return
    key = rng.choice(sorted(config[section]))
    config[section][key] = _value(rng)


def _mutated_checkpoint(original: dict, rng: random.Random) -> dict:
    ckpt = copy.deepcopy(original)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and isinstance(ckpt.get("model"), dict) and ckpt["model"]:
            _mutate_weights(ckpt["model"], rng)
        elif op == 1 and isinstance(ckpt.get("config"), dict) and ckpt["config"]:
            _mutate_config(ckpt["config"], rng)
        elif op == 2 and ckpt:
            del ckpt[rng.choice(sorted(ckpt))]
        else:
            ckpt[rng.choice(TOP)] = _value(rng)
    return ckpt


def _clean_error(exc: PivadError, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg, msg


@pytest.mark.parametrize("kind", ["pivad", "urdmu"])
def test_checkpoint_reader(tmp_path: Path, kind: str) -> None:
    """Mutated checkpoints through ``TorchScorer.from_checkpoint`` (``load_inference_model``, as detect,
    evaluate and export load them): each loads and scores, or fails with one line naming the file."""
    original = torch.load(make_checkpoint(tmp_path / "real.pt", kind=kind), weights_only=True)
    rng = random.Random(f"ckpt-{kind}")
    path = tmp_path / "mutated.pt"
    feats = np.random.default_rng(0).standard_normal((1, 5, 1024)).astype(np.float32)  # (C, T, D)
    loaded = 0
    for _ in range(CASES):
        torch.save(_mutated_checkpoint(original, rng), path)
        try:
            scorer = TorchScorer.from_checkpoint(path)
        except PivadError as exc:
            _clean_error(exc, path)
            continue
        loaded += 1
        threshold, _ = default_threshold(scorer)
        assert isinstance(threshold, float) and 0.0 <= threshold <= 1.0
        json.dumps(json_safe(scorer.describe()), allow_nan=False)  # what detect writes into its JSON
        try:
            checked_scores(scorer(feats), 5, str(path), "features")
        except PivadError as exc:
            _clean_error(exc, path)
    assert 0 < loaded < CASES  # the mutations reach both outcomes


def _metadata_text() -> str:
    """The metadata ``pivad export`` writes (values of a real tiny export)."""
    return json.dumps({"checkpoint": "best.pt", "kind": "pivad", "source": "pivad", "step": 3, "phase": "second",
                       "threshold": 0.45, "num_crops": 10, "num_segments": 200, "feature_dim": 1024,
                       "input": "features [b, n, T, 1024] float32", "output": "scores [b, T]",
                       "pivad_version": "0.1.0", "features": {"source": "i3d", "num_crops": 10}})  # fmt: skip


JSON_VALUES = ['"abc"', "[0.4]", "{}", "null", "true", "-1", "0", "1", "0.5", "2", "1e309", "NaN", "Infinity",
               "-Infinity", '"0.5"', "10", "3.5"]  # fmt: skip


def test_onnx_metadata_reader(tmp_path: Path) -> None:
    """Mutated metadata text (bytes edits, and typed values swapped into its keys) through the reader
    ``OnnxScorer`` uses: each gives a checked dict or one line naming the file."""
    original = _metadata_text()
    keys = list(json.loads(original))
    rng = random.Random("onnx-meta")
    source = str(tmp_path / "model.onnx")
    parsed = 0
    for case in range(2 * CASES):
        if case % 2:
            text = mutate(original.encode(), rng).decode("utf-8", errors="replace")
        else:  # one entry's value swapped for raw JSON text (NaN and Infinity included)
            entries = json.loads(original)
            entries[rng.choice(keys)] = "@@"
            text = json.dumps(entries).replace('"@@"', rng.choice(JSON_VALUES))
        try:
            meta = onnx_metadata({"pivad": text}, source)
        except PivadError as exc:
            _clean_error(exc, Path(source))
            continue
        parsed += 1
        assert meta.get("threshold") is None or (isinstance(meta["threshold"], float)
                                                  and 0.0 <= meta["threshold"] <= 1.0)  # fmt: skip
        for key in ("num_crops", "num_segments"):
            assert meta.get(key) is None or (type(meta[key]) is int and meta[key] >= 1)
        json.dumps(meta, allow_nan=False)
    assert 0 < parsed < 2 * CASES


def test_onnx_metadata_through_the_scorer(tmp_path: Path) -> None:
    """A few mutated metadata texts in real ONNX files, opened and run as ``detect --onnx`` does."""
    pytest.importorskip("onnxruntime")
    rng = random.Random("onnx-file")
    original = _metadata_text()
    path = tmp_path / "model.onnx"
    for _ in range(12):
        onnx_scorer(path, meta=mutate(original.encode(), rng).decode("utf-8", errors="replace"))
        try:
            scorer = OnnxScorer(path)
        except PivadError as exc:
            _clean_error(exc, path)
            continue
        assert 0.0 <= default_threshold(scorer)[0] <= 1.0
        json.dumps(json_safe(scorer.describe()), allow_nan=False)
        assert scorer(np.zeros((2, 4, 1024), np.float32)).shape == (4,)
