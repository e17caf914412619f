"""Synthetic family 2 (issue 20): determinism, the real layout, sizes, imbalance, lengths, events."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pivad.data import synth_family2 as fam
from pivad.data.annotations import parse_annotations
from pivad.data.ground_truth import build_frame_gt
from pivad.data.lists import read_list
from pivad.data.synth import plans_of, synthesize, write_synthetic_dataset
from pivad.errors import ConfigError

SMALL = {"feature_dim": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("f2") / "tiny", seed=3, preset="tiny", family=2)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", seed=5, preset="tiny", family=2, **SMALL)
    b = write_synthetic_dataset(tmp_path / "b", seed=5, preset="tiny", family=2, **SMALL)
    c = write_synthetic_dataset(tmp_path / "c", seed=6, preset="tiny", family=2, **SMALL)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) == 19 * 2 + 19 * 5 + 5
    assert sum(da[k] != dc.get(k) for k in da) > len(da) // 2


def test_layout_is_read_by_pivad_loaders(tiny: Path) -> None:
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["family"] == 2 and meta["version"] == fam.VERSION and meta["classes"] == fam.CLASSES
    dims = {m["name"]: m["dim"] for m in meta["modalities"]}
    assert list(dims) == ["pose", "depth", "panoptic", "flow", "text"]
    for split, n_abn, n_nor in (("train", 8, 4), ("test", 4, 3)):
        items = read_list(tiny / "lists" / f"{split}.list", root=tiny)
        assert [it.label for it in items] == [1] * n_abn + [0] * n_nor
        for it in items:
            crops = [np.load(f) for f in it.files]
            assert len(crops) == 2 and crops[0].shape[1] == 1024 and crops[0].dtype == np.float32
            assert np.isfinite(crops[0]).all() and crops[0].min() >= 0 and not np.array_equal(crops[0], crops[1])
            for name, d in dims.items():
                m = np.load(tiny / "modalities" / name / f"{it.name}.npy")
                assert m.shape == (crops[0].shape[0], d) and m.dtype == np.float32 and np.isfinite(m).all()
    test = read_list(tiny / "lists" / "test.list", root=tiny)
    ann = parse_annotations(tiny / "annotations.txt", fmt="ucf")
    videos = [(it.name, np.load(it.files[0], mmap_mode="r").shape[0]) for it in test]
    assert np.array_equal(build_frame_gt(videos, ann), np.load(tiny / "gt.npy"))


def test_plan_sizes_imbalance_lengths_and_events() -> None:
    spec = fam.make_spec("demo")
    plans = fam.dataset_plan(spec, seed=0)
    assert len(plans) == 72 + 72 + 28 + 28
    lengths = [p.n_snippets for p in plans]
    assert 24 <= min(lengths) and max(lengths) <= 400 and np.median(lengths) < 200  # log-uniform: short-heavy
    train_counts = [sum(p.cls == c and p.split == "train" for p in plans) for c in fam.CLASSES]
    assert train_counts == fam.class_counts(72) and len(set(train_counts)) > 3
    assert max(train_counts) >= 3 * min(train_counts)  # imbalanced, like UCF-Crime
    n_events = {1: 0, 2: 0, 3: 0}
    for p in plans:
        if not p.label:
            assert p.events == []
            continue
        n_events[len(p.events)] += 1
        frames = p.n_snippets * 16
        for (s, e), nxt in zip(p.events, p.events[1:] + [None]):
            assert 0 <= s <= e < frames and 32 <= e - s + 1 <= 0.4 * frames
            assert nxt is None or e < nxt[0] - 1  # separate events, never touching
    assert all(n_events.values())
    assert sum(bool(p.distractors) for p in plans if not p.label) >= 0.3 * 100


def test_plans_of_reads_a_finished_dataset(tiny: Path) -> None:
    meta = json.loads((tiny / "meta.json").read_text())
    plans = plans_of(meta)
    listed = [it.name for it in read_list(tiny / "lists" / "test.list", root=tiny)]
    assert [p.name for p in plans if p.split == "test"] == listed


def test_families_replace_each_other_as_stale_caches(tmp_path: Path, capsys) -> None:
    out = write_synthetic_dataset(tmp_path / "d", seed=1, preset="tiny", **SMALL)
    assert "family" not in json.loads((out / "meta.json").read_text())  # version 6's record unchanged
    assert synthesize(out, seed=1, preset="tiny", family=2, **SMALL) == (out, True)
    assert "replacing it" in capsys.readouterr().err
    assert synthesize(out, seed=1, preset="tiny", family=2, **SMALL) == (out, False)
    assert synthesize(out, seed=1, preset="tiny", **SMALL) == (out, True)


def test_bad_options_and_cli(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="no_such_knob"):
        fam.make_spec("tiny", no_such_knob=1)
    with pytest.raises(ConfigError, match="t_min"):
        fam.make_spec("tiny", t_min=4)
    from pivad.cli import main

    assert main(["data", "synth", "--family", "2", "--out", str(tmp_path / "s"), "--preset", "tiny"]) == 0
    assert "(family 2, seed 0) written" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--family", "3", "--out", str(tmp_path / "s")])
    assert exc.value.code == 2


def test_a_checkpoints_provenance_names_the_family(tiny: Path) -> None:
    from pivad.engine.provenance import training_features

    source = training_features({"data": {"root": str(tiny)}})["source"]
    assert source == f"synthetic (pivad data synth, family 2 generator version {fam.VERSION})"
