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
"""Intervals for re-measurements: the median's confidence interval and paired per-round ratios.

Used by ``ms-droplet tune``, ONNX tuning and the bench, to compare kernels timed in interleaved
rounds (``_evaluate``): each round times every kernel once, in a rotating order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats

from ._stats import median

__all__ = ["geomean_interval", "median_ci", "paired_ratio", "per_round"]


def median_ci(xs: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (binomial order statistics).

    With fewer samples than the confidence needs (e.g. under 6 at 95 %), the interval is the
    sample range, which then covers the median with less than ``confidence``.
    """
    if not xs:
        raise ValueError("median_ci() needs at least one sample")
    s = sorted(xs)
    n = len(s)
    alpha = 1.0 - confidence
    # Largest k with P(Binomial(n, 1/2) < k) <= alpha / 2: the interval is [s[k-1], s[n-k]].
    k = int(stats.binom.ppf(alpha / 2, n, 0.5))
    if k >= 1 and stats.binom.cdf(k - 1, n, 0.5) > alpha / 2:
        k -= 1
    k = max(k, 1)
    return s[k - 1], s[n - k]


def paired_ratio(a: Sequence[float], b: Sequence[float], rounds: int) -> dict[str, Any]:
    """Median and 95 % CI of the per-round ratios ``median(a_r) / median(b_r)``.

    Both kernels were timed in every round, next to each other (rotating order), so the ratio of
    one round cancels the drift between rounds; the rounds are the paired samples.
    """
    per_a, per_b = per_round(a, rounds), per_round(b, rounds)
    if len(per_a) != len(per_b):
        raise ValueError("paired_ratio() needs the same number of rounds on both sides")
    ratios = [x / y for x, y in zip(per_a, per_b, strict=True)]
    lo, hi = median_ci(ratios)
    return {"ratio": median(ratios), "ci95": [lo, hi], "rounds": len(ratios)}


def per_round(samples: Sequence[float], rounds: int) -> list[float]:
    """The median of each round of ``samples`` (taken round by round, equally many per round).

    Samples of one round are back to back and correlated; the per-round medians are close to
    independent. Samples that do not split evenly into ``rounds`` are taken one by one.
    """
    per = len(samples) // rounds if rounds and len(samples) % rounds == 0 else 1
    return [median(samples[i : i + per]) for i in range(0, len(samples), per)]


def geomean_interval(ratios: Sequence[float], *, confidence: float = 0.95) -> dict[str, Any]:
    """Geometric mean of ratios over independent pairs, with a Student-t interval over the logs.

    Each ratio is one (workload, seed) pair's paired per-round ratio; the pairs are the
    independent samples. Returns ``geomean``, ``ci`` (None below two pairs), ``p`` (two-sided
    t-test of the mean log against 0, i.e. geometric mean 1; None below two pairs or when all
    ratios are equal), ``pairs`` and ``below_one`` (how many ratios are below 1).
    """
    if not ratios or min(ratios) <= 0.0:
        raise ValueError("geomean_interval() needs at least one positive ratio")
    logs = [math.log(x) for x in ratios]
    n = len(logs)
    mean = sum(logs) / n
    out: dict[str, Any] = {
        "geomean": math.exp(mean),
        "ci": None,
        "p": None,
        "pairs": n,
        "below_one": sum(x < 1.0 for x in ratios),
    }
    if n < 2:
        return out
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    out["ci"] = [math.exp(mean - half), math.exp(mean + half)]
    if sd > 0.0:
        out["p"] = float(2.0 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return out
