"""experiments.stats: Student's t against its tables and closed forms, intervals computed by hand."""
import math

import pytest

from experiments import stats


@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157),
                                          (30, 2.042272), (1e7, 1.959964)])
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_t_quantile_matches_the_closed_forms_and_inverts_the_cdf():
    for p in (0.6, 0.9, 0.975, 0.999):
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)    # Cauchy
        assert stats.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    for df in (2.2, 7.5, 18.3):                                   # Welch's degrees of freedom are not whole
        assert stats.t_cdf(stats.t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-12)
    assert stats.t_cdf(0.0, 3) == 0.5
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)


def test_describe_by_hand():
    d = stats.describe([1.0, 2.0, 4.0])
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)       # sqrt(7/3)
    half = 4.302653 * sd / math.sqrt(3)                                                 # t(0.975, 2 df)
    assert (d["n"], d["min"], d["median"], d["max"]) == (3, 1.0, 2.0, 4.0)
    assert d["mean"] == pytest.approx(7 / 3) and d["sd"] == pytest.approx(sd)
    assert d["ci95"] == pytest.approx([7 / 3 - half, 7 / 3 + half], abs=1e-5)
    one = stats.describe([0.5])
    assert (one["sd"], one["ci95"]) == (0.0, None)


def test_welch_by_hand():
    w = stats.welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])      # equal variances 1, equal n: df = 2(n - 1) = 4
    assert (w["difference"], w["df"]) == (-3.0, pytest.approx(4.0))
    assert w["se"] == pytest.approx(math.sqrt(2 / 3))
    assert w["ci95"] == pytest.approx([-3 - 2.776445 * math.sqrt(2 / 3), -3 + 2.776445 * math.sqrt(2 / 3)], abs=1e-5)
    w = stats.welch([1.0, 3.0], [0.0, 0.0, 0.0, 3.0])      # variances 2 and 2.25: 1 + 0.5625 = 1.25 ** 2
    assert w["difference"] == 2 - 0.75 and w["se"] == pytest.approx(1.25)
    assert w["df"] == pytest.approx(1.5625 ** 2 / (1 / 1 + 0.5625 ** 2 / 3))
    assert stats.welch([1.0], [1.0, 2.0]) is None
    assert stats.welch([1.0, 1.0], [0.0, 0.0])["ci95"] == [1.0, 1.0]
