"""Intervals over seeds, and how many seeds a comparison needs: the statistics of every table.

    mean_ci([4.1, 4.3, 4.0])                          # (mean, half-width of the 95% t-interval)
    ratio_ci(base_times, technique_times)             # speed-up with a Welch interval on log times
    ratio_ci(base_times, technique_times, paired=True)   # paired t on log times (same seeds)
    r = Ratio.of(base_times, technique_times, paired=True)
    r.width          # ×/÷ factor: the interval is [ratio / w, ratio · w] on the log scale
    r.mde            # smallest effect (×/÷) this design detects with 80% power at α = 0.05
    r.seeds_for(1.15)   # seeds needed for an interval no wider than ×/÷1.15 at this spread
    r.verdict(1.15)     # "faster by [1.21, 1.33]", "slower by …", "no effect beyond ±6% here" or "undecided …"

Everything is on the log scale, where a speed-up of 2× and a slow-down of 2× are the same
distance from 1 and the interval stays positive. The ratio is the ratio of geometric means
(`exp(mean log b − mean log g)`); its interval is `scipy.stats.ttest_ind(log b, log g,
equal_var=False)` (Welch) for independent groups, or `scipy.stats.ttest_rel` when the two groups
share seeds (the same initial weights and data order): then the interval is over the per-seed
log ratios, and whatever the two runs of a seed have in common cancels.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
POWER = 0.80
DEFAULT_RESOLVE = 1.15  # the ×/÷ interval width a lesson's headline comparison is designed to resolve
MAX_SEEDS = 1000


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)


def mean_ci(values: Sequence[float | None], level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width of the `level` Student-t interval); half-width NaN with fewer than 2 values."""
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan
    half = float(stats.t.ppf(0.5 + level / 2.0, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, half


@dataclass(frozen=True)
class Ratio:
    """mean(base) / mean(group) on the log scale, with its interval and the design's power.

    ratio, lo, hi: the ratio of geometric means and its `level` interval (NaN when it has none).
    paired: the interval is over per-seed ratios. se, df: standard error and degrees of freedom of
    the log ratio. sd: the spread one more seed adds (per-pair sd of log ratios when paired, else
    the root mean of both groups' variances of log values), n: seeds (pairs when paired).
    """

    ratio: float
    lo: float
    hi: float
    paired: bool
    se: float
    df: float
    sd: float
    n: int
    level: float = LEVEL

    @classmethod
    def of(cls, base: Sequence[float], group: Sequence[float], *, paired: bool = False,
           level: float = LEVEL) -> "Ratio":
        b, g = np.asarray(base, dtype=float), np.asarray(group, dtype=float)
        if b.size == 0 or g.size == 0 or (b <= 0).any() or (g <= 0).any() \
                or not (np.isfinite(b).all() and np.isfinite(g).all()):
            return cls(math.nan, math.nan, math.nan, paired, math.nan, math.nan, math.nan, 0, level)
        lb, lg = np.log(b), np.log(g)
        ratio = math.exp(float(lb.mean() - lg.mean()))
        if paired:
            if b.size != g.size:
                raise ValueError(f"a paired ratio needs one value per seed in both groups; got {b.size} and {g.size}")
            n = int(b.size)
            if n < 2:
                return cls(ratio, math.nan, math.nan, True, math.nan, math.nan, math.nan, n, level)
            d = lb - lg
            sd = float(d.std(ddof=1))
            if sd <= 1e-12 * max(1.0, abs(float(d.mean()))):  # identical ratios (up to rounding): no spread
                return cls(ratio, ratio, ratio, True, 0.0, n - 1.0, 0.0, n, level)
            result = stats.ttest_rel(lb, lg)
            se, df = sd / math.sqrt(n), float(result.df)
        else:
            n = int(min(b.size, g.size))
            if b.size < 2 or g.size < 2:
                return cls(ratio, math.nan, math.nan, False, math.nan, math.nan, math.nan, n, level)
            vb, vg = float(lb.var(ddof=1)), float(lg.var(ddof=1))
            sd = math.sqrt((vb + vg) / 2.0)
            se = math.sqrt(vb / b.size + vg / g.size)
            if se == 0.0:
                return cls(ratio, ratio, ratio, False, 0.0, b.size + g.size - 2.0, 0.0, n, level)
            result = stats.ttest_ind(lb, lg, equal_var=False)
            df = float(result.df)
        ci = result.confidence_interval(level)
        return cls(ratio, math.exp(float(ci.low)), math.exp(float(ci.high)), paired, se, df, sd, n, level)

    @property
    def decided(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def decides(self, resolve: float = DEFAULT_RESOLVE) -> bool:
        """The interval lies above 1, below 1, or holds 1 within ×/÷`resolve`: the verdict is not "undecided"."""
        return self.decided and (self.lo > 1.0 or self.hi < 1.0 or self.width <= resolve)

    @property
    def width(self) -> float:
        """The interval as a ×/÷ factor around the ratio: √(hi / lo) (NaN without an interval)."""
        return math.sqrt(self.hi / self.lo) if self.decided and self.lo > 0 else math.nan

    @property
    def mde(self) -> float:
        """The smallest true speed-up or slow-down (×/÷) that this design (its seeds and spread)
        finds with probability `POWER` at two-sided α = 1 − level: exp((t_{1−α/2} + t_{power}) · se)."""
        if not (math.isfinite(self.se) and math.isfinite(self.df)) or self.df <= 0:
            return math.nan
        t_a = float(stats.t.ppf(0.5 + self.level / 2.0, self.df))
        t_b = float(stats.t.ppf(POWER, self.df))
        return math.exp((t_a + t_b) * self.se)

    def seeds_for(self, resolve: float = DEFAULT_RESOLVE) -> int | None:
        """Seeds (pairs when paired, per group otherwise) for an interval no wider than ×/÷`resolve`
        at this spread; None when the spread is unknown, more than MAX_SEEDS when out of reach."""
        if not math.isfinite(self.sd) or resolve <= 1.0:
            return None
        if self.sd == 0.0:
            return 2
        target = math.log(resolve)
        spread = self.sd if self.paired else self.sd * math.sqrt(2.0)  # two groups' variances add
        for n in range(2, MAX_SEEDS + 1):
            df = n - 1 if self.paired else 2 * n - 2
            if float(stats.t.ppf(0.5 + self.level / 2.0, df)) * spread / math.sqrt(n) <= target:
                return n
        return MAX_SEEDS + 1

    def verdict(self, resolve: float = DEFAULT_RESOLVE, what: str = "faster") -> str:
        """One of: "faster by [lo, hi]", "slower by [lo, hi]" (hi < 1), "no effect beyond ±X% here"
        (the interval holds 1 and is no wider than ×/÷`resolve`; X is its farther end), or
        "undecided: …" (it holds 1 and is wider than ×/÷`resolve`). `what` names the
        direction of a ratio above 1 (e.g. "cheaper" for a cost ratio)."""
        opposite = {"faster": "slower", "cheaper": "dearer", "better": "worse"}.get(what, f"not {what}")
        if not math.isfinite(self.ratio):
            return "no measurement"
        if not self.decided:
            return f"{self.ratio:.2f}×, no interval (fewer than 2 seeds)"
        if self.lo > 1.0:
            return f"{what} by [{self.lo:.2f}, {self.hi:.2f}]×"
        if self.hi < 1.0:
            return f"{opposite} by [{self.lo:.2f}, {self.hi:.2f}]×"
        if self.width <= resolve:
            bound = max(self.hi, 1.0 / self.lo)
            return f"no effect beyond ±{math.ceil((bound - 1.0) * 100 - 1e-9):.0f}% here"
        need = self.seeds_for(resolve)
        need_text = (f"~{need} {'pairs of seeds' if self.paired else 'seeds per group'} would resolve "
                     f"×/÷{resolve:g}" if need is not None and need <= MAX_SEEDS else
                     f"no affordable number of seeds resolves ×/÷{resolve:g} at this spread")
        return f"undecided: [{self.lo:.2f}, {self.hi:.2f}]× is wider than ×/÷{resolve:g} ({need_text})"


def ratio_ci(base: Sequence[float], group: Sequence[float], level: float = LEVEL,
             paired: bool = False) -> tuple[float, float, float]:
    """(ratio, lo, hi) of `Ratio.of(base, group)`: geometric mean of base ÷ that of group, with a
    Welch (or, paired, a paired) t-interval on the log scale; lo/hi NaN without an interval."""
    r = Ratio.of(base, group, paired=paired, level=level)
    return r.ratio, r.lo, r.hi


def difference_ci(base: Sequence[float], group: Sequence[float], level: float = LEVEL,
                  paired: bool = False) -> tuple[float, float, float]:
    """(mean(group) − mean(base), lo, hi): a paired t-interval over per-seed differences
    (`scipy.stats.ttest_rel`) or else Welch's (`ttest_ind(equal_var=False)`); lo/hi NaN without one."""
    b, g = _finite(base), _finite(group)
    if b.size == 0 or g.size == 0:
        return math.nan, math.nan, math.nan
    if paired and b.size != g.size:
        raise ValueError(f"a paired difference needs as many values on both sides (got {b.size} and {g.size})")
    diff = float(g.mean() - b.mean())
    if (paired and b.size < 2) or (not paired and (b.size < 2 or g.size < 2)):
        return diff, math.nan, math.nan
    if (float(np.std(g - b)) if paired else float(np.var(g)) + float(np.var(b))) == 0.0:
        return diff, diff, diff  # no spread: the difference is exact
    test = stats.ttest_rel(g, b) if paired else stats.ttest_ind(g, b, equal_var=False)
    ci = test.confidence_interval(confidence_level=level)
    return diff, float(ci.low), float(ci.high)


def difference_verdict(diff: float, lo: float, hi: float, resolve: float, what: str = "") -> str:
    """A difference's verdict: 'higher by [lo, hi]', 'lower by [lo, hi]', 'no effect beyond ±resolve
    here' (the interval lies within ±resolve) or 'undecided' (wider, and holding 0)."""
    if math.isnan(lo) or math.isnan(hi):
        return f"{diff:+.3f}, no interval (fewer than 2 seeds)"
    if lo > 0:
        return f"higher by [{lo:+.3f}, {hi:+.3f}]{what}"
    if hi < 0:
        return f"lower by [{lo:+.3f}, {hi:+.3f}]{what}"
    if -resolve <= lo and hi <= resolve:
        return f"no effect beyond ±{abs(max(-lo, hi)):.3f} here{what}"
    return f"undecided: [{lo:+.3f}, {hi:+.3f}] holds 0 and is wider than ±{resolve:g}{what}"


RECORD_ALPHA = 0.01  # a speedrun record must be beyond the last one at this one-sided level


@dataclass(frozen=True)
class RecordTest:
    """Is a candidate's speed-up beyond a record's? A one-sided t-test on per-run log speed-ups.

    p, statistic, df: the test's (`scipy.stats.ttest_1samp` against 1× when there is no record yet,
    else Welch's `ttest_ind(equal_var=False)`, both `alternative="greater"`). speedup, record_speedup:
    geometric means (1.0 for "no record": the baseline itself). runs_needed: the candidate's runs at
    which p would fall below `alpha` if its mean and spread stayed as measured (None when its mean is
    not above the record's, or no number up to `max_runs` does).
    """

    p: float
    statistic: float
    df: float
    test: str
    runs: int
    record_runs: int
    speedup: float
    record_speedup: float
    alpha: float
    runs_needed: int | None

    @property
    def beyond(self) -> bool:
        return self.p < self.alpha

    def verdict(self) -> str:
        """"record at p = …" or "not yet: p = …, need ≈ n runs" (or why no number of runs will do)."""
        if self.beyond:
            return f"record at p = {self.p:.2g} ({self.runs} runs, {self.test})"
        if self.speedup <= self.record_speedup:
            return f"not a record: p = {self.p:.2g}; {self.speedup:.2f}× is not above {self.record_speedup:.2f}×"
        if self.runs_needed is None:
            return (f"not a record: p = {self.p:.2g}; {self.speedup:.2f}× is not beyond {self.record_speedup:.2f}× "
                    "at this spread with any affordable number of runs (the record's own runs bound the test)")
        return f"not yet: p = {self.p:.2g}, need ≈ {self.runs_needed} runs at this spread (have {self.runs})"


def _one_sided_p(diff: float, sd_c: float, n_c: int, sd_r: float, n_r: int) -> tuple[float, float, float]:
    """(t, df, p) of a one-sided test that the candidate's mean log speed-up exceeds the record's."""
    if n_r == 0:
        se, df = sd_c / math.sqrt(n_c), n_c - 1.0
    else:
        vc, vr = sd_c ** 2 / n_c, sd_r ** 2 / n_r
        se = math.sqrt(vc + vr)
        df = (vc + vr) ** 2 / ((vc ** 2 / (n_c - 1) if n_c > 1 else 0.0) + (vr ** 2 / (n_r - 1) if n_r > 1 else 0.0)
                               or math.inf)
    if se == 0.0:
        return (math.inf if diff > 0 else -math.inf), df, (0.0 if diff > 0 else 1.0)
    t = diff / se
    return t, df, float(stats.t.sf(t, df))


def record_test(candidate: Sequence[float], record: Sequence[float] | None = None, alpha: float = RECORD_ALPHA,
                max_runs: int = 200) -> RecordTest:
    """Test per-run speed-ups of a candidate (baseline time ÷ candidate time, each run against the
    baseline of its own seed in the same sitting) against a record's (None: against the baseline, 1×).

    The test is on log speed-ups; at least 2 candidate runs, and 2 record runs when a record is given."""
    c = np.log(_finite(candidate))
    if c.size < 2:
        raise ValueError(f"a record test needs at least 2 candidate runs, got {c.size}")
    if record is None:
        r = np.zeros(0)
        test = "one-sided one-sample t-test of log speed-ups against 1×"
    else:
        r = np.log(_finite(record))
        if r.size < 2:
            raise ValueError(f"a record test needs at least 2 runs of the record, got {r.size}")
        test = "one-sided Welch t-test of log speed-ups against the record's"
    diff = float(c.mean() - (r.mean() if r.size else 0.0))
    sd_c, sd_r = float(c.std(ddof=1)), float(r.std(ddof=1)) if r.size else 0.0
    t, df, p = _one_sided_p(diff, sd_c, c.size, sd_r, r.size)
    if max(sd_c, sd_r) > 1e-9 * max(1.0, abs(diff)):  # scipy's own numbers whenever there is a spread
        with warnings.catch_warnings():  # one side without spread: scipy warns, and its numbers are right
            warnings.simplefilter("ignore", RuntimeWarning)
            result = (stats.ttest_1samp(c, 0.0, alternative="greater") if record is None
                      else stats.ttest_ind(c, r, equal_var=False, alternative="greater"))
        t, p, df = float(result.statistic), float(result.pvalue), float(getattr(result, "df", df))
    need = _runs_needed(diff, sd_c, sd_r, int(r.size), alpha, max_runs)
    return RecordTest(p=p, statistic=t, df=df, test=test, runs=int(c.size), record_runs=int(r.size),
                      speedup=math.exp(float(c.mean())), record_speedup=math.exp(float(r.mean())) if r.size else 1.0,
                      alpha=alpha, runs_needed=need)


def _runs_needed(diff: float, sd: float, record_sd: float, record_runs: int, alpha: float, max_runs: int) -> int | None:
    if diff <= 0:
        return None
    return next((n for n in range(2, max_runs + 1) if _one_sided_p(diff, sd, n, record_sd, record_runs)[2] < alpha),
                None)


def runs_for_record(improvement: float, sd: float, record_runs: int = 0, record_sd: float | None = None,
                    alpha: float = RECORD_ALPHA, max_runs: int = 200) -> int | None:
    """Runs a candidate needs for p < `alpha` if its speed-up is `improvement`× the record's (or the
    baseline's, `record_runs=0`) and per-run log speed-ups spread with `sd` (the record's with `record_sd`,
    default the same). None when `improvement` ≤ 1 or more than `max_runs` would be needed."""
    return _runs_needed(math.log(improvement), sd, sd if record_sd is None else record_sd, record_runs, alpha,
                        max_runs)
