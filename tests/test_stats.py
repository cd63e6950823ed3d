"""flwr_semcom.stats against hand-computed values (worked in the comments) and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from flwr_semcom.stats import (
    PairedTest,
    Summary,
    bits_to_target,
    ci95,
    paired_test,
    sample_std,
    summarize,
    t_quantile,
)


def test_t_quantile_table_values() -> None:
    # Printed t tables: t_{0.975, 4} = 2.776445, t_{0.975, 1} = 12.706205, t_{0.975, 9} = 2.262157
    assert t_quantile(5) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(2) == pytest.approx(12.706205, abs=1e-6)
    assert t_quantile(10) == pytest.approx(2.262157, abs=1e-6)
    # 90 % two-sided, 4 dof: t_{0.95, 4} = 2.131847
    assert t_quantile(5, level=0.90) == pytest.approx(2.131847, abs=1e-6)


def test_summary_of_one_to_five_by_hand() -> None:
    # x = 1..5: mean 3; squared deviations 4+1+0+1+4 = 10; s^2 = 10/4 = 2.5; s = 1.5811388;
    # s / sqrt(5) = sqrt(0.5) = 0.70710678; half width = 2.776445 * 0.70710678 = 1.963243
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert isinstance(s, Summary) and (s.mean, s.n) == (3.0, 5)
    assert s.std == pytest.approx(1.5811388, abs=1e-7)
    assert s.ci95_low == pytest.approx(3.0 - 1.963243, abs=1e-6)
    assert s.ci95_high == pytest.approx(3.0 + 1.963243, abs=1e-6)
    assert s.as_dict()["n"] == 5


def test_two_values_by_hand() -> None:
    # x = (0, 2): mean 1, s = sqrt(2), s / sqrt(2) = 1, half width = t_{0.975,1} = 12.706205
    low, high = ci95([0.0, 2.0]) or (math.nan, math.nan)
    assert (low, high) == pytest.approx((1.0 - 12.706205, 1.0 + 12.706205), abs=1e-6)
    assert sample_std([0.0, 2.0]) == pytest.approx(math.sqrt(2.0))


def test_ci95_matches_scipy_interval() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        x = rng.normal(0.8, 0.05, size=n)
        ref = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
        assert ci95(x) == pytest.approx(ref, rel=1e-12)


def test_single_seed_has_no_interval_and_constant_has_zero_width() -> None:
    s = summarize([0.7])
    assert (s.mean, s.std, s.ci95_low, s.ci95_high, s.n) == (0.7, None, None, None, 1)
    assert ci95([0.7]) is None
    assert ci95([0.5, 0.5, 0.5]) == (0.5, 0.5)


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf, 1.0], [[1.0, 2.0]]])
def test_bad_values_raise(bad: list) -> None:
    with pytest.raises(ValueError, match="values"):
        summarize(bad)


def test_paired_t_by_hand_three_pairs() -> None:
    # d = a - b = (1, 2, 3): mean 2, s_d = 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3 = 3.4641016.
    # With 2 dof the t cdf is 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided p-value is
    # 1 - t / sqrt(2 + t^2) = 1 - 3.4641016 / sqrt(14) = 1 - 0.9258201 = 0.0741799.
    # Mean difference interval: 2 ± t_{0.975,2} / sqrt 3 = 2 ± 4.302653 / 1.7320508 = 2 ± 2.484138
    r = paired_test([1.5, 3.0, 4.0], [0.5, 1.0, 1.0])
    assert isinstance(r, PairedTest) and r.test == "paired-t" and r.n == 3
    assert r.statistic == pytest.approx(3.4641016, abs=1e-7)
    assert r.p_value == pytest.approx(0.0741799, abs=1e-7)
    assert r.mean_diff == pytest.approx(2.0)
    assert (r.ci95_low, r.ci95_high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    # swapping the methods flips the sign, keeps the p-value
    s = paired_test([0.5, 1.0, 1.0], [1.5, 3.0, 4.0])
    assert s.statistic == pytest.approx(-r.statistic) and s.p_value == pytest.approx(r.p_value)


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.9, 0.02, size=6)
    b = a - rng.normal(0.01, 0.02, size=6)
    ref = sps.ttest_rel(a, b)
    r = paired_test(a, b)
    assert r.statistic == pytest.approx(float(ref.statistic), rel=1e-10)
    assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-10)


def test_paired_t_without_spread() -> None:
    same = paired_test([0.9, 0.8], [0.9, 0.8])
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    shifted = paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert shifted.statistic == math.inf and shifted.p_value == 0.0
    assert (shifted.ci95_low, shifted.ci95_high) == (1.0, 1.0)


def test_wilcoxon_exact_by_hand() -> None:
    # d = (1, 2, 3, 4, 5): every sign positive, W- = 0; under H0 each of the 2^5 = 32 sign
    # patterns is equally likely and only "all +" / "all -" are as extreme: p = 2/32 = 0.0625.
    r = paired_test([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5, test="wilcoxon")
    assert (r.test, r.statistic, r.n) == ("wilcoxon", 0.0, 5)
    assert r.p_value == pytest.approx(0.0625)
    # d = (1, -2, 3, 4, 5): W- = 2. Sign patterns with negative-rank sum <= 2: {}, {1}, {2},
    # so p = 2 * 3 / 32 = 0.1875.
    r = paired_test([1.0, -2.0, 3.0, 4.0, 5.0], [0.0] * 5, test="wilcoxon")
    assert r.statistic == 2.0 and r.p_value == pytest.approx(0.1875)
    assert r.mean_diff == pytest.approx(2.2)
    zero = paired_test([1.0, 2.0], [1.0, 2.0], test="wilcoxon")
    assert (zero.statistic, zero.p_value) == (0.0, 1.0)


def test_paired_test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_test([1.0], [0.0])
    with pytest.raises(ValueError, match="test"):
        paired_test([1.0, 2.0], [0.0, 0.0], test="sign")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="b"):
        paired_test([1.0, 2.0], [0.0, math.nan])


def test_bits_to_target_interpolates_between_points() -> None:
    bits = [100.0, 200.0, 300.0]
    acc = [0.5, 0.7, 0.9]
    # first point >= 0.8 is (300, 0.9); previous (200, 0.7): 200 + (0.8-0.7)/(0.9-0.7)*100 = 250
    assert bits_to_target(bits, acc, 0.8) == pytest.approx(250.0)
    # exactly on an evaluation point: that point's bits
    assert bits_to_target(bits, acc, 0.7) == pytest.approx(200.0)
    # already reached at the first point: its bits (nothing earlier to interpolate from)
    assert bits_to_target(bits, acc, 0.4) == 100.0
    assert bits_to_target([0.0, *bits], [0.1, *acc], 0.3) == pytest.approx(50.0)  # 0 + .2/.4*100
    assert bits_to_target(bits, acc, 0.95) is None


def test_bits_to_target_first_crossing_and_continuity() -> None:
    # reaches 0.8 between 100 and 200, dips, comes back: the first crossing counts.
    # 100 + (0.8 - 0.5) / (0.85 - 0.5) * 100 = 100 + 85.714286 = 185.714286
    got = bits_to_target([100, 200, 300, 400], [0.5, 0.85, 0.6, 0.9], 0.8)
    assert got == pytest.approx(185.714286, abs=1e-6)
    # unlike "bits of the first round at target", a small change of one accuracy moves the
    # result a little, not by a whole round
    a = bits_to_target([1, 2, 3], [0.5, 0.7999, 0.9], 0.8)
    b = bits_to_target([1, 2, 3], [0.5, 0.8001, 0.9], 0.8)
    assert a is not None and b is not None and abs(a - b) < 0.01
    # rounds-to-target with the round index as x
    assert bits_to_target([1, 2, 3, 4], [0.2, 0.4, 0.6, 0.8], 0.5) == pytest.approx(2.5)


def test_bits_to_target_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        bits_to_target([2.0, 1.0], [0.1, 0.2], 0.15)
    with pytest.raises(ValueError, match="equal lengths"):
        bits_to_target([1.0, 2.0], [0.1], 0.15)
    with pytest.raises(ValueError, match="accuracy"):
        bits_to_target([1.0, 2.0], [0.1, math.nan], 0.15)
    with pytest.raises(ValueError, match="target"):
        bits_to_target([1.0, 2.0], [0.1, 0.2], math.nan)
