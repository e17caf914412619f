"""load_features: accepted dtypes, and a one-line DataError naming the file for each bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pivad.data.features import feature_shape, load_features, load_video_features
from pivad.errors import DataError

D = 8


def _save(tmp_path, array, name="f.npy"):
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtypes_become_float32(tmp_path, dtype):
    values = np.arange(3 * D, dtype=np.float64).reshape(3, D) / 4  # exact in float16
    out = load_features(_save(tmp_path, values.astype(dtype)), dim=D)
    assert out.dtype == np.float32 and out.shape == (3, D)
    np.testing.assert_array_equal(out, values.astype(np.float32))


def test_fortran_order_and_big_endian_files(tmp_path):
    values = np.arange(4 * D, dtype=np.float32).reshape(4, D)
    np.testing.assert_array_equal(load_features(_save(tmp_path, np.asfortranarray(values)), dim=D), values)
    np.testing.assert_array_equal(load_features(_save(tmp_path, values.astype(">f4"), "be.npy"), dim=D), values)
    out = load_features(_save(tmp_path, np.asfortranarray(values), "m.npy"), dim=D, mmap=True)
    np.testing.assert_array_equal(out, values)


def test_mmap_returns_a_map_for_float32(tmp_path):
    path = _save(tmp_path, np.ones((4, D), np.float32))
    out = load_features(path, dim=D, mmap=True)
    assert isinstance(out, np.memmap) and out.shape == (4, D)
    assert feature_shape(path, D) == (4, D)


def test_per_video_files_come_back_crop_first(tmp_path):
    feat = np.random.default_rng(0).random((5, 3, D), dtype=np.float32)  # (T, C, D)
    out = load_video_features(_save(tmp_path, feat), dim=D)
    assert out.shape == (3, 5, D) and out.flags.c_contiguous
    np.testing.assert_array_equal(out[2], feat[:, 2])
    assert load_video_features(_save(tmp_path, feat[:, 0], "g.npy"), dim=D).shape == (1, 5, D)


def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_features(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((3, 5), np.float32), r"expected shape \[T,8\], got \[3,5\]"),
        (np.zeros(8, np.float32), r"expected shape \[T,8\], got \[8\]"),
        (np.zeros((3, 2, 8), np.float32), r"expected shape \[T,8\], got \[3,2,8\]"),
        (np.zeros((0, 8), np.float32), r"no snippets \(T=0\)"),
        (np.zeros((3, 8), np.int64), r"dtype int64 is not a float type"),
        (np.zeros((3, 8), bool), r"dtype bool is not a float type"),
        (np.zeros((3, 8), np.complex64), r"dtype complex64 is not a float type"),
        (np.array([[None] * 8] * 3, dtype=object), r"dtype object is not a float type"),
    ],
)
def test_bad_arrays(tmp_path, array, message):
    import re

    assert re.search(message, _error(_save(tmp_path, array), dim=D))


def test_nan_and_inf(tmp_path):
    a = np.zeros((6, D), np.float32)
    a[4, 1] = np.nan
    assert "contains 1 NaN value(s) (first at snippet 4)" in _error(_save(tmp_path, a), dim=D)
    a[2, 0] = np.inf
    a[5, 0] = -np.inf
    assert "contains 1 NaN and 2 Inf value(s) (first at snippet 2)" in _error(_save(tmp_path, a), dim=D)
    big = np.full((2, D), 1e300)  # finite in float64, Inf once converted to float32
    assert "Inf" in _error(_save(tmp_path, big, "big.npy"), dim=D)


def test_missing_and_unreadable_files(tmp_path):
    assert "file not found" in _error(tmp_path / "absent.npy", dim=D)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not numpy")
    assert "not a .npy file" in _error(garbage, dim=D)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert "not a .npy file" in _error(empty, dim=D)
    truncated = tmp_path / "cut.npy"
    np.save(truncated, np.ones((50, D), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:300])
    assert "file is truncated" in _error(truncated, dim=D)
    assert "file is truncated" in _error(truncated, dim=D, mmap=True)
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    assert "is a folder, not a file" in _error(folder, dim=D)
    archive = tmp_path / "a.npz"
    np.savez(archive, x=np.ones((2, D), np.float32))
    assert "not a .npy file" in _error(archive, dim=D)
