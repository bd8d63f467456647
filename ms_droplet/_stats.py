# Licensed to the Apache Software Foundation (ASF) under one
# or more contributor license agreements.  See the NOTICE file
# distributed with this work for additional information
# regarding copyright ownership.  The ASF licenses this file
# to you under the Apache License, Version 2.0 (the
# "License"); you may not use this file except in compliance
# with the License.  You may obtain a copy of the License at
#
#   http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing,
# software distributed under the License is distributed on an
# "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
# KIND, either express or implied.  See the License for the
# specific language governing permissions and limitations
# under the License.
"""Significance test on run-second samples (pure, no TVM)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "Comparison",
    "SlotNoise",
    "compare",
    "compare_slot_samples",
    "compare_slots",
    "control_line_noise",
    "median",
    "noise_prior",
    "pooled_repeat_noise",
]


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing a challenger's samples with the in-batch control's.

    Attributes
    ----------
    ratio : float
        The challenger's latency over the control's, below 1 when the challenger is faster:
        ``median(challenger) / median(control)`` from ``compare``, the exponential of the
        mean log ratio from ``compare_slots`` and ``compare_slot_samples``.
    pvalue : float | None
        One-sided p-value of "the challenger is faster", or None when there were too few
        samples for the test.
    """

    ratio: float
    pvalue: float | None

    def significant(self, alpha: float) -> bool:
        """Whether the challenger is faster at significance level ``alpha``."""
        return self.ratio < 1.0 and self.pvalue is not None and self.pvalue < alpha

    @property
    def testable(self) -> bool:
        """Whether both sides had enough samples for a test."""
        return self.pvalue is not None


def median(xs: Sequence[float]) -> float:
    """Median of samples."""
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


def compare(challenger: Sequence[float], control: Sequence[float]) -> Comparison:
    """Compare two lists of run seconds measured close in time.

    Parameters
    ----------
    challenger : Sequence[float]
        Run seconds of the candidate (the runner's repeats).
    control : Sequence[float]
        Run seconds of the incumbent measured in the same batch.

    Returns
    -------
    comparison : Comparison
        The median ratio and the one-sided p-value that the challenger is faster.
    """
    if not challenger or not control:
        raise ValueError("compare() needs at least one sample on each side")
    if any(not (x > 0 and math.isfinite(x)) for x in (*challenger, *control)):
        raise ValueError("run seconds must be positive and finite")
    ratio = median(challenger) / median(control)
    if len(challenger) < 2 or len(control) < 2:
        return Comparison(ratio=ratio, pvalue=None)
    log_a = [math.log(x) for x in challenger]
    log_b = [math.log(x) for x in control]
    if max(log_a) == min(log_a) and max(log_b) == min(log_b):
        # Zero variance on both sides: the t statistic is undefined; the ordering is certain.
        return Comparison(ratio=ratio, pvalue=0.0 if log_a[0] < log_b[0] else 1.0)
    res = stats.ttest_ind(log_a, log_b, equal_var=False, alternative="less")
    pvalue = float(res.pvalue)
    if math.isnan(pvalue):
        pvalue = 1.0
    return Comparison(ratio=ratio, pvalue=pvalue)


def compare_slot_samples(
    challenger: Sequence[Sequence[float]],
    control: Sequence[tuple[float, Sequence[float]]],
    *,
    noise: SlotNoise | None = None,
) -> Comparison:
    """Compare run seconds grouped by slot, each slot counted as one observation.

    The runner's repeats of one slot are taken back to back and move together: on this
    project's A/A batches (one kernel in every slot) the slots' mean log run seconds scattered
    2-9 times (medians 3.6 and 3.0) as much as their repeats' spread divided by their number
    implies, so a test that counts every repeat (``compare``) found a difference between copies
    of one kernel in about 20 % of its tests at p < 0.05. Here every slot's mean log run
    seconds is one observation whose variance is its repeats' variance, not divided by their
    number (with ``noise``: pooled over the batch, see there). The candidate's slots are
    averaged, the incumbent's latency at them is a weighted mean of control slots (an
    interpolation between the controls around each candidate slot), and the test is a
    one-sided t-test.

    Parameters
    ----------
    challenger : Sequence[Sequence[float]]
        The candidate's run seconds, one inner sequence per slot.
    control : Sequence[tuple[float, Sequence[float]]]
        ``(weight, run seconds)`` of each control slot; the weights sum to 1.
    noise : SlotNoise, optional
        The repeats' variance pooled over a batch's slots, with its degrees of freedom
        (``pooled_repeat_noise``). Every slot's mean then has the variance
        ``noise.variance * (1 + 1 / n)`` for its ``n`` repeats: a slot's own shift about as
        large as its repeats' scatter plus the repeats' mean (on the A/A batches a slot's mean
        varied by 1.2 and 1.0 times one repeat's variance, medians on two kernels, below the
        1 + 1/3 this assumes with three repeats). On those batches this held the Bonferroni
        level of a small batch and saw a 5 % gain as often as the per-sample test did
        (docs/benchmarks.md). None: each slot's variance is its own repeats' variance (two
        degrees of freedom with three repeats, Welch-Satterthwaite over the slots).

    Returns
    -------
    comparison : Comparison
        ``exp`` of the difference of mean logs and the one-sided p-value that the challenger
        is faster; no p-value when a slot has fewer than two samples.
    """
    if not challenger or not control or any(not slot for slot in challenger):
        raise ValueError("compare_slot_samples() needs samples in every slot on each side")
    if any(not slot for _, slot in control):
        raise ValueError("compare_slot_samples() needs samples in every control slot")
    values = [x for slot in challenger for x in slot] + [x for _, slot in control for x in slot]
    if any(not (x > 0 and math.isfinite(x)) for x in values):
        raise ValueError("run seconds must be positive and finite")
    k = len(challenger)
    # (weight, log run seconds) of every slot; the difference is sum(weight * mean log):
    # challenger weights 1/k, control weights negative
    parts = [(1.0 / k, [math.log(x) for x in slot]) for slot in challenger]
    parts += [(-w, [math.log(x) for x in slot]) for w, slot in control if w != 0.0]
    diff = sum(w * sum(logs) / len(logs) for w, logs in parts)
    if noise is not None and noise.df > 0:
        se2 = noise.variance * sum(w * w * (1.0 + 1.0 / len(logs)) for w, logs in parts)
        if se2 <= 0.0:
            return Comparison(ratio=math.exp(diff), pvalue=0.0 if diff < 0 else 1.0)
        return Comparison(ratio=math.exp(diff), pvalue=_t_cdf(diff / math.sqrt(se2), noise.df))
    if any(len(logs) < 2 for _, logs in parts):
        return Comparison(ratio=math.exp(diff), pvalue=None)
    terms = [(w * w * _variance(logs), len(logs) - 1) for w, logs in parts]
    se2 = sum(v for v, _ in terms)
    if se2 <= 0.0:  # identical repeats everywhere: the ordering is certain
        return Comparison(ratio=math.exp(diff), pvalue=0.0 if diff < 0 else 1.0)
    df = se2 * se2 / sum(v * v / d for v, d in terms if v > 0.0)
    return Comparison(ratio=math.exp(diff), pvalue=_t_cdf(diff / math.sqrt(se2), df))


def pooled_repeat_noise(slots: Sequence[Sequence[float]]) -> SlotNoise:
    """The variance of the log run seconds of one slot's repeats, pooled over ``slots``.

    Slots with fewer than two samples are left out; none left: ``SlotNoise(0.0, 0)``.
    """
    logs = [[math.log(x) for x in slot] for slot in slots if len(slot) >= 2]
    df = sum(len(x) - 1 for x in logs)
    if df == 0:
        return SlotNoise(0.0, 0)
    return SlotNoise(sum((len(x) - 1) * _variance(x) for x in logs) / df, df)


def _variance(xs: Sequence[float]) -> float:
    """Sample variance (n - 1 in the denominator) of at least two values."""
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def _t_cdf(t: float, df: float) -> float:
    """Student's t CDF (the one call the upstream patch replaces where scipy is missing)."""
    return float(stats.t.cdf(t, df=df))


def compare_slots(
    positions: Sequence[float],
    logs: Sequence[float],
    control_positions: Sequence[float],
    control_logs: Sequence[float],
    *,
    prior: SlotNoise | None = None,
) -> Comparison:
    """Compare a candidate with the incumbent slot by slot, against the batch's control trend.

    Samples of one slot are taken back to back and move together; what varies is the slot. So
    each slot gives one observation (its log median), and the incumbent's latency along the batch
    is a straight line fitted to the control slots' log medians (a drift over the runner call is
    the trend, the scatter around it the slot noise). The candidate's slots are compared with the
    line's prediction at their positions: a one-sided t-test of the mean log ratio with the
    prediction variance of the fit and ``len(control_logs) - 2`` degrees of freedom.

    Parameters
    ----------
    positions, logs : Sequence[float]
        Slot positions and log medians of the candidate (one or more slots).
    control_positions, control_logs : Sequence[float]
        The same for the control slots (at least four, for two degrees of freedom).
    prior : SlotNoise, optional
        The slot noise of earlier batches (``noise_prior``): pooled with this batch's (a
        moderated t-test: the variance is the degrees-of-freedom-weighted mean of both, and the
        test has their summed degrees of freedom), so that three degrees of freedom in one
        batch of 32 do not make every test need a t of 3 to 4. None: this batch's alone.

    Returns
    -------
    comparison : Comparison
        ``exp(mean log ratio)`` and the one-sided p-value that the candidate is faster.
    """
    if not logs or len(logs) != len(positions):
        raise ValueError("compare_slots() needs one position per candidate slot")
    m = len(control_logs)
    if m < 4 or len(control_positions) != m:
        raise ValueError("compare_slots() needs at least four control slots")
    line = _Line.fit(control_positions, control_logs)
    var = max(line.ss / (m - 2), 1e-8)  # identical controls: still a test
    df: float = m - 2
    if prior is not None and prior.df > 0:
        var = (prior.df * prior.variance + df * var) / (prior.df + df)
        df += prior.df
    n = len(logs)
    mean = sum(y - line.at(x) for x, y in zip(positions, logs, strict=True)) / n
    # Var(mean) = var * (1/n + Var of the line's mean prediction at the candidate's positions)
    se = math.sqrt(var * (1.0 / n + line.lever(sum(positions) / n)))
    return Comparison(ratio=math.exp(mean), pvalue=_t_cdf(mean / se, df))


@dataclass(frozen=True)
class _Line:
    """A least-squares straight line through control slots (position, log median)."""

    m: int
    xbar: float
    ybar: float
    sxx: float
    slope: float
    ss: float  # sum of squared residuals

    @staticmethod
    def fit(xs: Sequence[float], ys: Sequence[float]) -> _Line:
        m = len(ys)
        xbar, ybar = sum(xs) / m, sum(ys) / m
        sxx = sum((x - xbar) ** 2 for x in xs)
        sxy = sum((x - xbar) * (y - ybar) for x, y in zip(xs, ys, strict=True))
        slope = sxy / sxx if sxx > 0 else 0.0
        ss = sum((y - (ybar + slope * (x - xbar))) ** 2 for x, y in zip(xs, ys, strict=True))
        return _Line(m, xbar, ybar, sxx, slope, ss)

    def at(self, x: float) -> float:
        return self.ybar + self.slope * (x - self.xbar)

    def lever(self, x: float) -> float:
        """Variance of the line's prediction at ``x``, in units of the slot variance."""
        return 1.0 / self.m + ((x - self.xbar) ** 2 / self.sxx if self.sxx > 0 else 0.0)


@dataclass(frozen=True)
class SlotNoise:
    """The scatter of control slots around their batch's line: a variance of log medians.

    Attributes
    ----------
    variance : float
        Mean squared residual of the control slots' log medians around their fitted line.
    df : float
        Its degrees of freedom (control slots minus two; a prior's may be fractional).
    """

    variance: float
    df: float


def noise_prior(batches: Sequence[SlotNoise], *, max_df: float = 30.0) -> SlotNoise | None:
    """The slot noise of earlier batches as a prior for the next batch's tests (empirical Bayes).

    The batches' variances are taken as draws from a scaled inverse chi-square prior (Smyth's
    moment estimator, as in limma's moderated t-test): where they scatter no more than their
    own degrees of freedom explain, the noise is steady and the prior counts for many degrees
    of freedom (at most ``max_df``); where they scatter more (quiet and bursty stretches of the
    machine), the prior counts for few and each batch's own controls weigh more.

    Returns None with fewer than three batches that have degrees of freedom.
    """
    usable = [b for b in batches if b.df > 0]
    if len(usable) < 3:
        return None
    e = [math.log(max(b.variance, 1e-12)) - _digamma(b.df / 2) + math.log(b.df / 2) for b in usable]
    mean = sum(e) / len(e)
    excess = sum((x - mean) ** 2 for x in e) / (len(e) - 1) - sum(
        _trigamma(b.df / 2) for b in usable
    ) / len(usable)
    if excess <= 0.0:
        return SlotNoise(math.exp(mean), max_df)
    df0 = min(2.0 * _trigamma_inverse(excess), max_df)
    return SlotNoise(math.exp(mean + _digamma(df0 / 2) - math.log(df0 / 2)), df0)


def _digamma(x: float) -> float:
    """The digamma function for x > 0 (recurrence up to 10, then its asymptotic series)."""
    out = 0.0
    while x < 10.0:
        out -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))
    return out + math.log(x) - 0.5 / x - series


def _trigamma(x: float) -> float:
    """The trigamma function for x > 0 (recurrence up to 10, then its asymptotic series)."""
    out = 0.0
    while x < 10.0:
        out += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    series = (1 + f * (1 / 6 - f * (1 / 30 - f * (1 / 42 - f / 30)))) / x
    return out + 0.5 * f + series


def _trigamma_inverse(y: float) -> float:
    """The x > 0 with trigamma(x) == y (y > 0)."""
    lo, hi = -30.0, 30.0  # log x; trigamma falls from ~e^30 to ~e^-30 over this range
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _trigamma(math.exp(mid)) > y:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def control_line_noise(
    control_positions: Sequence[float], control_logs: Sequence[float]
) -> SlotNoise:
    """The scatter of one batch's control slots around their straight line (``compare_slots``).

    Fewer than three controls leave no degree of freedom: ``SlotNoise(0.0, 0)``.
    """
    m = len(control_logs)
    if m < 3 or len(control_positions) != m:
        return SlotNoise(0.0, 0)
    return SlotNoise(_Line.fit(control_positions, control_logs).ss / (m - 2), m - 2)
