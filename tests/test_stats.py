"""Seeded-study summaries: mean ± std and the paired difference with its intervals."""

from __future__ import annotations

import math

import pytest

from pivad.stats import mean_std, paired_difference


def test_mean_std_skips_missing_values():
    assert mean_std([1.0, 3.0, None, math.nan]) == (2.0, math.sqrt(2.0))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_paired_difference_by_hand():
    base = [60.0, 70.0, 65.0, 55.0]
    variant = [62.0, 73.0, 64.0, 59.0]  # differences 2, 3, -1, 4: mean 2, sample std sqrt(14/3)
    d = paired_difference(variant, base)
    assert d.n == 4 and d.mean == pytest.approx(2.0) and d.std == pytest.approx(math.sqrt(14 / 3))
    half = 3.182446305284263 * math.sqrt(14 / 3) / 2  # t(0.975, 3) · s / √n
    assert (d.t_low, d.t_high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert -1.0 <= d.boot_low <= 2.0 <= d.boot_high <= 4.0 and d.wins == 3
    # pairing matters: the same values unpaired would hide the shift behind the spread between pairs
    assert paired_difference([v + 10 for v in base], base).t_low == pytest.approx(10.0)


def test_paired_difference_edge_cases():
    one = paired_difference([3.0], [1.0])
    assert one.n == 1 and one.mean == 2.0 and math.isnan(one.t_low)
    with pytest.raises(ValueError, match="baseline"):
        paired_difference([1.0], [1.0, 2.0])
