"""Modality store: layout, width check, strict and resampled T alignment, missing files."""

from __future__ import annotations

import numpy as np
import pytest

from pivad.config import ModalityConfig
from pivad.data.modality_store import ModalityStore
from pivad.errors import ConfigError, DataError

MODS = [ModalityConfig("pose", 3), ModalityConfig("depth", 5)]


def _write(root, modality, video, array):
    (root / modality).mkdir(parents=True, exist_ok=True)
    np.save(root / modality / f"{video}.npy", array)


def _store(tmp_path, t=6, t_align="strict"):
    rng = np.random.default_rng(0)
    arrays = {"pose": rng.random((t, 3), dtype=np.float32), "depth": rng.random((t, 5)).astype(np.float64)}
    for name, a in arrays.items():
        _write(tmp_path, name, "vid1", a)
    return ModalityStore(tmp_path, MODS, t_align), arrays


def test_load_returns_float32_per_modality(tmp_path):
    store, arrays = _store(tmp_path)
    out = store.load("vid1", 6)
    assert list(out) == ["pose", "depth"] and store.names == ["pose", "depth"]
    assert out["depth"].dtype == np.float32 and out["depth"].shape == (6, 5)
    np.testing.assert_array_equal(out["pose"], arrays["pose"])
    assert store.missing(["vid1", "vid2"]) == [tmp_path / "pose" / "vid2.npy", tmp_path / "depth" / "vid2.npy"]
    assert ModalityStore(tmp_path, [("pose", 3)]).load("vid1", 6)["pose"].shape == (6, 3)


def test_strict_t_mismatch_names_file_and_both_lengths(tmp_path):
    store, _ = _store(tmp_path)
    with pytest.raises(DataError) as info:
        store.load("vid1", 7)
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "pose" / "vid1.npy"))
    assert "T=6" in msg and "T=7" in msg and "\n" not in msg


def test_resample_mode_uses_nearest_index(tmp_path):
    store, arrays = _store(tmp_path, t=4, t_align="resample")
    out = store.load("vid1", 8)  # each modality row covers two RGB snippets
    np.testing.assert_array_equal(out["pose"], arrays["pose"][[0, 0, 1, 1, 2, 2, 3, 3]])
    out = store.load("vid1", 2)  # centres of the 2 snippets fall in rows 1 and 3
    np.testing.assert_array_equal(out["depth"], arrays["depth"][[1, 3]].astype(np.float32))


def test_width_missing_file_and_folder(tmp_path):
    store, _ = _store(tmp_path)
    _write(tmp_path, "pose", "vid2", np.zeros((6, 4), np.float32))
    with pytest.raises(DataError, match=r"pose/vid2.npy: expected shape \[T,3\], got \[6,4\]"):
        store.load("vid2", 6)
    with pytest.raises(DataError, match=r"depth/vid3.npy: modality file not found \(modality depth of video vid3\)"):
        _write(tmp_path, "pose", "vid3", np.zeros((6, 3), np.float32))
        store.load("vid3", 6)
    with pytest.raises(DataError, match=r"flow: modality folder not found"):
        ModalityStore(tmp_path, MODS + [ModalityConfig("flow", 2)])


def test_bad_configuration(tmp_path):
    _store(tmp_path)
    with pytest.raises(ConfigError, match="data.t_align: unknown mode 'loose'"):
        ModalityStore(tmp_path, MODS, "loose")
    with pytest.raises(ConfigError, match="listed twice"):
        ModalityStore(tmp_path, MODS + MODS)
    with pytest.raises(ConfigError, match="needs a name and a dim"):
        ModalityStore(tmp_path, [ModalityConfig("pose", 0)])
