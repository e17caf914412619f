"""Training resampling (bit-exact with the official loader) and nearest-index alignment."""

from __future__ import annotations

import numpy as np
import pytest

from pivad.data.resample import align_rows, nearest_index, resample_snippets, segment_bounds


def _official_form(feat: np.ndarray, n: int) -> np.ndarray:
    """The rule as UR-DMU's loader writes it: a loop of per-bin ``np.mean`` (reference for the fast path)."""
    r = np.linspace(0, len(feat), n + 1).astype(int)
    out = np.zeros((n, feat.shape[1]), np.float32)
    for i in range(n):
        out[i] = feat[r[i] : r[i + 1]].mean(0) if r[i] != r[i + 1] else feat[r[i]]
    return out


@pytest.mark.golden
def test_matches_official_golden_exactly(shared_dir):
    golden = np.load(shared_dir / "golden" / "public" / "resample.npz")
    n = int(golden["num_segments"])
    for k, length in enumerate(golden["lengths"]):
        feat = golden[f"feat_{k}"]
        assert feat.shape[0] == length
        assert np.array_equal(resample_snippets(feat, n), golden[f"resampled_{k}"])


def test_hand_computed_cases():
    feat = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)  # rows [0,1], [2,3], ..., [8,9]
    # T=5, N=2: edges [0, 2, 5] -> mean(rows 0-1), mean(rows 2-4)
    np.testing.assert_array_equal(resample_snippets(feat, 2), [[1, 2], [6, 7]])
    # T=3, N=5: edges [0,0,1,1,2,3] -> empty bins repeat row r[i]: rows 0,0,1,1,2
    np.testing.assert_array_equal(resample_snippets(feat[:3], 5), feat[[0, 0, 1, 1, 2]])
    # T == N: identity
    np.testing.assert_array_equal(resample_snippets(feat, 5), feat)
    assert segment_bounds(450, 200)[:4].tolist() == [0, 2, 4, 6]


@pytest.mark.parametrize("length", [1, 2, 37, 199, 201, 450, 1999, 6749])
@pytest.mark.parametrize("n", [32, 200])
def test_equals_the_official_loop_bit_for_bit(length, n):
    feat = np.random.default_rng(length).random((length, 16), dtype=np.float32) * 2
    assert np.array_equal(resample_snippets(feat, n), _official_form(feat, n))


def test_input_is_cast_to_float32_first():
    feat = np.random.default_rng(1).random((9, 4))
    assert np.array_equal(resample_snippets(feat, 4), _official_form(feat.astype(np.float32), 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"expected \[T,D\]"):
        resample_snippets(np.zeros((3, 2, 2)), 4)
    with pytest.raises(ValueError):
        segment_bounds(0, 200)


def test_nearest_index_rule():
    assert nearest_index(7, 7).tolist() == list(range(7))  # identity when lengths agree
    assert nearest_index(10, 5).tolist() == [1, 3, 5, 7, 9]  # centre of snippet i: (i+1/2)*2
    assert nearest_index(5, 10).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert nearest_index(3, 4).tolist() == [0, 1, 1, 2]  # centres 3/8, 9/8, 15/8, 21/8
    feat = np.arange(6, dtype=np.float32)[:, None]
    assert align_rows(feat, 6) is feat
    assert align_rows(feat, 3)[:, 0].tolist() == [1, 3, 5]
