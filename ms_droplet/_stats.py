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

__all__ = ["Comparison", "compare", "compare_slots", "median"]


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing a challenger's samples with the in-batch control's.

    Attributes
    ----------
    ratio : float
        ``median(challenger) / median(control)``; below 1 means the challenger is faster.
    pvalue : float | None
        One-sided p-value of "the challenger is faster" (Welch's t-test on log run seconds),
        or None when either side has fewer than two samples.
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


def compare_slots(
    positions: Sequence[float],
    logs: Sequence[float],
    control_positions: Sequence[float],
    control_logs: Sequence[float],
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
    xbar = sum(control_positions) / m
    ybar = sum(control_logs) / m
    sxx = sum((x - xbar) ** 2 for x in control_positions)
    slope = (
        sum((x - xbar) * (y - ybar) for x, y in zip(control_positions, control_logs, strict=True))
        / sxx
        if sxx > 0
        else 0.0
    )
    resid = [
        y - (ybar + slope * (x - xbar))
        for x, y in zip(control_positions, control_logs, strict=True)
    ]
    var = max(sum(r * r for r in resid) / (m - 2), 1e-8)  # identical controls: still a test
    n = len(logs)
    diffs = [y - (ybar + slope * (x - xbar)) for x, y in zip(positions, logs, strict=True)]
    mean = sum(diffs) / n
    # Var(mean) = var * (1/n + Var of the line's mean prediction at the candidate's positions)
    pbar = sum(positions) / n
    lever = 1.0 / m + ((pbar - xbar) ** 2 / sxx if sxx > 0 else 0.0)
    se = math.sqrt(var * (1.0 / n + lever))
    pvalue = float(stats.t.cdf(mean / se, df=m - 2))
    return Comparison(ratio=math.exp(mean), pvalue=pvalue)
