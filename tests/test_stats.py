"""effitrain.stats and the power columns of compare: paired intervals, widths, seeds needed, verdicts."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from effitrain.lab.compare import WideIntervalWarning, compare, pairing
from effitrain.stats import Ratio, mean_ci, ratio_ci

from test_lab import fake_run

BASE = [10.0, 12.5, 9.0, 11.0, 14.0]        # seconds to target of five baseline seeds
TECH = [8.1, 10.6, 7.2, 9.3, 11.2]          # the same five seeds with a technique on


def test_mean_ci_is_the_student_t_interval():
    mean, half = mean_ci([4.1, 4.3, 4.0, None, float("nan")])
    assert mean == pytest.approx(4.1333333)
    assert half == pytest.approx(sps.t.ppf(0.975, 2) * np.std([4.1, 4.3, 4.0], ddof=1) / math.sqrt(3))
    assert math.isnan(mean_ci([1.0])[1]) and math.isnan(mean_ci([])[0])


def test_paired_interval_equals_scipy_paired_t_on_log_times():
    r = Ratio.of(BASE, TECH, paired=True)
    expected = sps.ttest_rel(np.log(BASE), np.log(TECH)).confidence_interval(0.95)
    assert r.paired and r.n == 5 and r.df == 4
    assert r.ratio == pytest.approx(math.exp(np.mean(np.log(BASE) - np.log(TECH))))
    assert (r.lo, r.hi) == pytest.approx((math.exp(expected.low), math.exp(expected.high)))
    # unpaired, the same numbers are Welch's t on the logs, and far wider: the seeds' spread stays in
    w = Ratio.of(BASE, TECH)
    welch = sps.ttest_ind(np.log(BASE), np.log(TECH), equal_var=False).confidence_interval(0.95)
    assert (w.lo, w.hi) == pytest.approx((math.exp(welch.low), math.exp(welch.high)))
    assert w.width > 1.15 > r.width
    assert ratio_ci(BASE, TECH, paired=True) == (r.ratio, r.lo, r.hi)


def test_compare_pairs_runs_by_seed():
    def run(t, techniques, seed):  # reaches val loss 6 at t seconds
        return fake_run([(0, 8.0), (t, 6.0), (2 * t, 5.0)], techniques=techniques, seed=seed)

    base = [run(t, (), s) for s, t in enumerate(BASE)]
    tech = [run(t, ("fast",), s) for s, t in reversed(list(enumerate(TECH)))]  # order does not matter
    df = compare(base + tech, target_val_loss=6.0)
    row = df.loc["fast"]
    expected = Ratio.of(BASE, TECH, paired=True)
    assert row["paired"] and row["speedup"] == pytest.approx(expected.ratio)
    assert (row["speedup_lo"], row["speedup_hi"]) == pytest.approx((expected.lo, expected.hi))
    assert row["verdict"].startswith("faster by [") and row["width"] < 1.15
    assert not df.attrs["wide"]
    # different seeds cannot be paired: Welch, and paired=True refuses in one line
    other = [run(t, ("fast",), s + 10) for s, t in enumerate(TECH)]
    assert pairing(base, other) is None
    assert not compare(base + other, target_val_loss=6.0).loc["fast", "paired"]
    with pytest.raises(ValueError, match="do not hold the same seeds"):
        compare(base + other, target_val_loss=6.0, paired=True)


def test_too_wide_warning_fires_only_when_the_interval_decides_nothing():
    def run(t, techniques, seed):
        return fake_run([(0, 8.0), (t, 6.0)], techniques=techniques, seed=seed)

    noisy = [run(t, ("noisy",), s + 100) for s, t in enumerate([6.0, 16.0, 9.0])]   # unpaired, spread ×/÷1.6
    base = [run(t, (), s) for s, t in enumerate([10.0, 12.5, 9.0])]
    with pytest.warns(WideIntervalWarning, match="noisy"):
        df = compare(base + noisy, target_val_loss=6.0)
    assert df.attrs["wide"] == ["noisy"] and df.attrs["notes"][0].startswith("⚠ too wide")
    assert df.loc["noisy", "verdict"].startswith("undecided") and df.loc["noisy", "seeds_needed"] > 3
    tight = [run(t * 1.01, ("tight",), s) for s, t in enumerate([10.0, 12.5, 9.0])]   # paired, 1% slower each
    with warnings.catch_warnings():
        warnings.simplefilter("error", WideIntervalWarning)
        df = compare(base + tight, target_val_loss=6.0)
    assert df.loc["tight", "verdict"].startswith("slower by [0.99, 0.99]")
    # a clear speed-up with a wide interval is still decided: no warning
    fast = [run(t, ("fast",), s + 100) for s, t in enumerate([2.0, 4.0, 3.0])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", WideIntervalWarning)
        assert compare(base + fast, target_val_loss=6.0).loc["fast", "verdict"].startswith("faster by")
    with pytest.raises(ValueError, match="resolve must be"):
        compare(base, resolve=0.9)


def test_verdicts_power_and_seeds_needed():
    none = Ratio.of([10.0, 10.2, 9.9, 10.1], [10.05, 10.1, 10.0, 10.0], paired=True)
    assert none.verdict().startswith("no effect beyond ±") and none.verdict().endswith("% here")
    assert Ratio.of([10.0], [5.0]).verdict() == "2.00×, no interval (fewer than 2 seeds)"
    spread = Ratio.of([10.0, 13.0, 9.0], [9.0, 12.0, 10.5])
    need = spread.seeds_for(1.15)
    assert need is not None and need > 3
    # the seeds it names do give an interval that narrow, at the same spread
    sd = spread.sd * math.sqrt(2)
    assert sps.t.ppf(0.975, 2 * need - 2) * sd / math.sqrt(need) <= math.log(1.15)
    assert sps.t.ppf(0.975, 2 * need - 4) * sd / math.sqrt(need - 1) > math.log(1.15)
    assert spread.mde > spread.width  # 80% power asks for more than the interval's half-width
    assert Ratio.of([1.0, -1.0], [1.0, 1.0]).verdict() == "no measurement"
    with pytest.raises(ValueError, match="one value per seed"):
        Ratio.of([1.0, 2.0], [1.0], paired=True)


def test_difference_intervals_are_scipys_paired_and_welch_and_worded():
    from scipy import stats as st
    from effitrain.stats import difference_ci, difference_verdict

    base, group = [0.50, 0.53, 0.51, 0.49], [0.58, 0.60, 0.61, 0.55]
    d, lo, hi = difference_ci(base, group, paired=True)
    ci = st.ttest_rel(group, base).confidence_interval()
    assert d == pytest.approx(0.0775) and (lo, hi) == pytest.approx((ci.low, ci.high))
    d, lo, hi = difference_ci(base, group)
    ci = st.ttest_ind(group, base, equal_var=False).confidence_interval()
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert difference_verdict(0.08, 0.05, 0.11, 0.03).startswith("higher by [+0.050, +0.110]")
    assert difference_verdict(-0.08, -0.11, -0.05, 0.03).startswith("lower by")
    assert difference_verdict(0.0, -0.02, 0.01, 0.03) == "no effect beyond ±0.020 here"
    assert difference_verdict(0.0, -0.05, 0.04, 0.03).startswith("undecided")
    with pytest.raises(ValueError, match="paired"):
        difference_ci([1, 2], [1, 2, 3], paired=True)
