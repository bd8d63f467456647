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
"""Unit tests of the run-second significance test (:func:`ms_droplet._stats.compare`).

``compare`` reports the median ratio and the one-sided Welch t-test p-value, on log run seconds,
that the challenger is faster than the control measured in the same batch.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from ms_droplet._stats import (
    Comparison,
    SlotNoise,
    compare,
    compare_slot_samples,
    pooled_repeat_noise,
)


def welch_less_on_logs(a: list[float], b: list[float]) -> float:
    """One-sided Welch p-value of mean(log a) < mean(log b), written out by hand."""
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    t = (statistics.fmean(la) - statistics.fmean(lb)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(la) - 1) + vb**2 / (len(lb) - 1))
    return float(stats.t.cdf(t, df))


def lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> list[float]:
    return [median * math.exp(float(z)) for z in rng.normal(0.0, sigma, n)]


# ---------------------------------------------------------------------------- ratio


@pytest.mark.parametrize(("na", "nb"), [(1, 1), (1, 4), (3, 5), (4, 6), (7, 2)])
def test_ratio_is_the_median_ratio(na: int, nb: int) -> None:
    rng = np.random.default_rng(na * 10 + nb)
    a = lognormal(rng, 2e-3, 0.3, na)
    b = lognormal(rng, 3e-3, 0.3, nb)
    cmp = compare(a, b)
    assert cmp.ratio == pytest.approx(statistics.median(a) / statistics.median(b), rel=1e-12)
    # A mean ratio would differ once an outlier is added; the median barely moves.
    out = compare([*a, 1e3, 1e3 * 1.0001], b)
    assert out.ratio == pytest.approx(
        statistics.median([*a, 1e3, 1e3 * 1.0001]) / statistics.median(b)
    )


def test_ratio_unaffected_by_order() -> None:
    a, b = [3.0, 1.0, 2.0, 10.0], [5.0, 4.0, 6.0]
    assert compare(a, b).ratio == pytest.approx(2.5 / 5.0)
    ref, srt = compare(a, b), compare(sorted(a), sorted(b))
    assert srt.ratio == ref.ratio and srt.pvalue == pytest.approx(ref.pvalue)


# ---------------------------------------------------------------------------- p-values


def test_pvalue_is_one_sided_welch_on_log_seconds() -> None:
    rng = np.random.default_rng(1)
    for n_a, n_b in [(2, 2), (3, 8), (10, 4), (20, 20)]:
        a = lognormal(rng, 1.0, 0.2, n_a)
        b = lognormal(rng, 1.1, 0.05, n_b)
        cmp = compare(a, b)
        assert cmp.testable
        assert cmp.pvalue == pytest.approx(welch_less_on_logs(a, b), rel=1e-9, abs=1e-12)


def test_clearly_separated_samples() -> None:
    rng = np.random.default_rng(2)
    fast = lognormal(rng, 0.8e-3, 0.02, 10)
    slow = lognormal(rng, 1.0e-3, 0.02, 10)
    cmp = compare(fast, slow)
    assert cmp.ratio < 0.9
    assert cmp.pvalue is not None and cmp.pvalue < 1e-6
    assert cmp.significant(0.05) and cmp.significant(1e-4)
    # The other way round: one-sided, so near 1 and not significant.
    rev = compare(slow, fast)
    assert rev.ratio > 1.1
    assert rev.pvalue is not None and rev.pvalue > 1 - 1e-6
    assert not rev.significant(0.05)


def test_identical_samples_are_not_significant() -> None:
    a = [1.0, 1.2, 0.9, 1.1, 1.05]
    cmp = compare(a, list(a))
    assert cmp.ratio == 1.0
    assert cmp.pvalue == pytest.approx(0.5)
    assert not cmp.significant(0.6)  # ratio 1 is never "faster"


def test_same_distribution_pvalues_are_calibrated() -> None:
    rng = np.random.default_rng(3)
    trials = 400
    pvalues = []
    for _ in range(trials):
        cmp = compare(lognormal(rng, 1.0, 0.1, 5), lognormal(rng, 1.0, 0.1, 5))
        assert cmp.pvalue is not None
        pvalues.append(cmp.pvalue)
    # Under the null the p-value is ~uniform: the count below 0.05 is ~Binomial(400, 0.05);
    # its 99.9% quantile (35) bounds it for a correct test. The mean p-value is 0.5 with a
    # standard error of 0.289 / sqrt(400) = 0.0144, so +-0.05 is ~3.5 standard errors.
    below = sum(p < 0.05 for p in pvalues)
    assert below <= stats.binom.ppf(0.999, trials, 0.05)
    assert below >= stats.binom.ppf(0.001, trials, 0.05)
    assert abs(statistics.fmean(pvalues) - 0.5) < 0.05


def test_scale_invariant() -> None:
    rng = np.random.default_rng(4)
    a, b = lognormal(rng, 1.0, 0.1, 6), lognormal(rng, 1.05, 0.1, 5)
    ref = compare(a, b)
    scaled = compare([x * 1e-4 for x in a], [x * 1e-4 for x in b])
    assert scaled.ratio == pytest.approx(ref.ratio)
    assert scaled.pvalue == pytest.approx(ref.pvalue)


# ---------------------------------------------------------------------------- untestable


@pytest.mark.parametrize(
    ("a", "b"), [([0.5], [1.0]), ([0.5], [1.0, 1.1, 0.9]), ([0.5, 0.6, 0.4], [1.0])]
)
def test_fewer_than_two_samples_is_not_testable(a: list[float], b: list[float]) -> None:
    cmp = compare(a, b)
    assert cmp.pvalue is None
    assert not cmp.testable
    assert cmp.ratio == pytest.approx(statistics.median(a) / statistics.median(b))
    assert cmp.ratio < 1.0
    assert not cmp.significant(1.0)  # faster, but not a significant result


# ---------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(("a", "b"), [([], [1.0]), ([1.0], []), ([], [])])
def test_empty_side_raises(a: list[float], b: list[float]) -> None:
    with pytest.raises(ValueError):
        compare(a, b)


@pytest.mark.parametrize("bad", [0.0, -1.0, -0.0, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("side", ["challenger", "control"])
def test_non_positive_or_non_finite_raises(bad: float, side: str) -> None:
    good = [1.0, 1.1, 0.9]
    with_bad = [1.0, bad, 0.9]
    with pytest.raises(ValueError):
        if side == "challenger":
            compare(with_bad, good)
        else:
            compare(good, with_bad)
    with pytest.raises(ValueError):  # even where the test would not run
        compare([bad], [1.0]) if side == "challenger" else compare([1.0], [bad])


# ---------------------------------------------------------------------------- zero variance


def test_zero_variance_both_sides() -> None:
    faster = compare([1.0, 1.0, 1.0], [2.0, 2.0])
    assert faster.ratio == 0.5 and faster.pvalue == 0.0 and faster.significant(1e-9)
    slower = compare([2.0, 2.0], [1.0, 1.0, 1.0])
    assert slower.pvalue == 1.0 and not slower.significant(0.05)
    equal = compare([1.0, 1.0], [1.0, 1.0])
    assert equal.ratio == 1.0 and equal.pvalue == 1.0 and not equal.significant(0.05)


# scipy warns about catastrophic cancellation on the constant side; the result is still right.
@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_zero_variance_one_side() -> None:
    varied = [1.0, 1.1, 0.95, 1.05]
    const = [0.5, 0.5, 0.5]
    for a, b in [(const, varied), (varied, const), ([1.0, 1.0], varied)]:
        cmp = compare(a, b)
        assert cmp.pvalue is not None and math.isfinite(cmp.pvalue) and 0.0 <= cmp.pvalue <= 1.0
        assert cmp.pvalue == pytest.approx(welch_less_on_logs(a, b), rel=1e-9, abs=1e-12)
    assert compare(const, varied).significant(0.01)
    assert not compare(varied, const).significant(0.5)


# ---------------------------------------------------------------------------- Comparison


@pytest.mark.parametrize(
    ("ratio", "pvalue", "alpha", "expected"),
    [
        (0.9, 0.01, 0.05, True),
        (0.9, 0.05, 0.05, False),  # strict
        (1.0, 0.0, 0.05, False),  # not faster
        (1.2, 0.001, 0.05, False),
        (0.5, None, 1.0, False),  # untestable
    ],
)
def test_comparison_significant(
    ratio: float, pvalue: float | None, alpha: float, expected: bool
) -> None:
    cmp = Comparison(ratio=ratio, pvalue=pvalue)
    assert cmp.significant(alpha) is expected
    assert cmp.testable is (pvalue is not None)


def test_compare_slots_false_positive_rate_and_power_with_slot_noise_and_drift() -> None:
    from ms_droplet._stats import compare_slots

    rng = np.random.default_rng(0)
    controls = [1.0, 8.0, 16.0, 24.0, 31.0]

    def batch(effect: float):
        # a linear drift of 10 % over the batch plus 2 % slot noise; the candidate in slot 12
        slot = lambda pos: 0.1 * pos / 31 + rng.normal(0.0, 0.02)  # noqa: E731
        return compare_slots([12.0], [effect + slot(12)], controls, [slot(c) for c in controls])

    null = [batch(0.0).pvalue for _ in range(2000)]
    rate = sum(p < 0.05 for p in null) / len(null)
    assert 0.03 <= rate <= 0.07, rate  # calibrated: the drift is the trend, not a difference
    power = sum(batch(math.log(0.85)).significant(0.05) for _ in range(500)) / 500
    assert power > 0.8, power


def test_compare_slots_bad_input() -> None:
    from ms_droplet._stats import compare_slots

    with pytest.raises(ValueError, match="four control"):
        compare_slots([1.0], [0.0], [0.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="one position"):
        compare_slots([1.0, 2.0], [0.0], [0.0, 2.0, 3.0, 4.0], [0.0] * 4)


def _batches(sigmas: list[float], rng) -> list:
    """The slot noise of batches of 32 with spread controls, slot noise ``sigma`` each."""
    from ms_droplet._stats import control_line_noise

    controls = [1.0, 8.0, 16.0, 24.0, 31.0]
    return [
        control_line_noise(controls, [0.1 * c / 31 + rng.normal(0.0, s) for c in controls])
        for s in sigmas
    ]


def test_noise_prior_counts_steady_noise_for_many_degrees_of_freedom() -> None:
    from ms_droplet._stats import noise_prior

    rng = np.random.default_rng(1)
    steady = noise_prior(_batches([0.01] * 20, rng), max_df=30)
    assert steady is not None
    assert steady.df >= 15, steady  # the variances scatter as their 3 df each explain
    assert 0.6 < math.sqrt(steady.variance) / 0.01 < 1.4, steady
    # quiet and bursty batches: the prior counts for little, each batch's controls weigh more
    mixed = noise_prior(_batches([0.01, 0.06] * 10, rng), max_df=30)
    assert mixed is not None
    assert mixed.df < 4, mixed
    assert noise_prior(_batches([0.01, 0.01], rng), max_df=30) is None  # too few batches
    capped = noise_prior(_batches([0.01] * 20, rng), max_df=5)
    assert capped is not None and capped.df <= 5


def test_compare_slots_with_a_prior_is_calibrated_and_more_powerful() -> None:
    from ms_droplet._stats import compare_slots, noise_prior

    rng = np.random.default_rng(2)
    controls = [1.0, 8.0, 16.0, 24.0, 31.0]
    prior = noise_prior(_batches([0.02] * 12, rng), max_df=30)
    assert prior is not None

    def batch(effect: float, with_prior: bool):
        slot = lambda pos: 0.1 * pos / 31 + rng.normal(0.0, 0.02)  # noqa: E731
        return compare_slots(
            [12.0],
            [effect + slot(12)],
            controls,
            [slot(c) for c in controls],
            prior=prior if with_prior else None,
        )

    null = [batch(0.0, True).pvalue for _ in range(2000)]
    rate = sum(p < 0.05 for p in null) / len(null)
    assert 0.03 <= rate <= 0.07, rate
    gain = math.log(0.95)  # 5 % faster under 2 % slot noise
    alone = sum(batch(gain, False).significant(0.05) for _ in range(1000)) / 1000
    pooled = sum(batch(gain, True).significant(0.05) for _ in range(1000)) / 1000
    assert pooled > alone + 0.1, (pooled, alone)


def test_digamma_and_trigamma_match_scipy() -> None:
    # _stats is carried into TVM's tree by the upstream patch, where scipy is optional
    from scipy import special

    from ms_droplet._stats import _digamma, _trigamma, _trigamma_inverse

    for x in (0.05, 0.5, 1.0, 1.5, 3.0, 6.0, 40.0):
        assert _digamma(x) == pytest.approx(float(special.digamma(x)), abs=1e-9)
        assert _trigamma(x) == pytest.approx(float(special.polygamma(1, x)), rel=1e-9)
        assert _trigamma_inverse(_trigamma(x)) == pytest.approx(x, rel=1e-9)


# ---------------------------------------------------------------------------- slots as units


def test_slot_samples_count_each_slot_as_one_observation() -> None:
    rng = np.random.default_rng(11)
    a, b = lognormal(rng, 0.95, 0.02, 3), lognormal(rng, 1.0, 0.02, 3)
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    # one slot a side: Welch's test with each side's standard error that of one observation
    ref = stats.ttest_ind_from_stats(
        statistics.fmean(la),
        statistics.stdev(la) * math.sqrt(3),
        3,
        statistics.fmean(lb),
        statistics.stdev(lb) * math.sqrt(3),
        3,
        equal_var=False,
        alternative="less",
    )
    out = compare_slot_samples([a], [(1.0, b)])
    assert out.pvalue == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert out.ratio == pytest.approx(math.exp(statistics.fmean(la) - statistics.fmean(lb)))
    assert out.pvalue > compare(a, b).pvalue  # wider: the repeats of a slot move together
    # two control slots around the candidate, weighted 3:1: the incumbent interpolated there
    b2 = lognormal(rng, 1.1, 0.02, 3)
    lb2 = [math.log(x) for x in b2]
    two = compare_slot_samples([a], [(0.75, b), (0.25, b2)])
    diff = statistics.fmean(la) - 0.75 * statistics.fmean(lb) - 0.25 * statistics.fmean(lb2)
    parts = [
        statistics.variance(la),
        0.75**2 * statistics.variance(lb),
        0.25**2 * statistics.variance(lb2),
    ]
    df = sum(parts) ** 2 / sum(v * v / 2 for v in parts)
    assert two.ratio == pytest.approx(math.exp(diff))
    assert two.pvalue == pytest.approx(float(stats.t.cdf(diff / math.sqrt(sum(parts)), df)))


def test_slot_samples_with_the_batchs_pooled_repeat_noise() -> None:
    rng = np.random.default_rng(12)
    slots = [lognormal(rng, 1.0, 0.02, 3) for _ in range(8)]
    noise = pooled_repeat_noise([*slots, [1.0]])  # a one-sample slot tells nothing: left out
    assert noise.df == 16
    logs = [[math.log(x) for x in s] for s in slots]
    assert noise.variance == pytest.approx(statistics.fmean(statistics.variance(x) for x in logs))
    a, b, c = slots[3], slots[0], slots[7]
    out = compare_slot_samples([a], [(4 / 7, b), (3 / 7, c)], noise=noise)
    diff = statistics.fmean(logs[3]) - 4 / 7 * statistics.fmean(logs[0])
    diff -= 3 / 7 * statistics.fmean(logs[7])
    # every slot mean: the pooled repeat variance times (1 + 1/3), a slot shift as large as
    # the repeats' scatter plus their mean's own variance
    se = math.sqrt(noise.variance * (4 / 3) * (1 + (4 / 7) ** 2 + (3 / 7) ** 2))
    assert out.pvalue == pytest.approx(float(stats.t.cdf(diff / se, 16)))
    assert out.ratio == pytest.approx(math.exp(diff))
    # no pooled degrees of freedom: each slot's own repeats
    alone = compare_slot_samples([a], [(4 / 7, b), (3 / 7, c)])
    assert (
        alone.pvalue
        == compare_slot_samples([a], [(4 / 7, b), (3 / 7, c)], noise=SlotNoise(0.0, 0)).pvalue
    )
    assert pooled_repeat_noise([[1.0], [2.0]]) == SlotNoise(0.0, 0)


def test_slot_samples_edge_cases() -> None:
    assert compare_slot_samples([[1.0]], [(1.0, [2.0, 2.1])]).pvalue is None
    assert compare_slot_samples([[1.0, 1.0]], [(1.0, [2.0, 2.0])]).pvalue == 0.0
    assert compare_slot_samples([[2.0, 2.0]], [(1.0, [1.0, 1.0])]).pvalue == 1.0
    with pytest.raises(ValueError, match="positive and finite"):
        compare_slot_samples([[1.0, -1.0]], [(1.0, [2.0, 2.0])])
    with pytest.raises(ValueError, match="every"):
        compare_slot_samples([[]], [(1.0, [2.0, 2.0])])


def test_slot_samples_hold_their_level_where_the_repeats_of_a_slot_move_together() -> None:
    # A/A: one kernel in both slots, each slot shifted by its own noise (as large as the
    # repeats' spread, as on this project's A/A batches): counting every repeat finds a
    # difference far more often than its level, counting every slot once about at it
    rng = np.random.default_rng(5)

    def slot() -> list[float]:
        shift = float(rng.normal(0.0, 0.02))
        return [math.exp(shift + float(z)) for z in rng.normal(0.0, 0.02, 3)]

    pairs = [(slot(), slot()) for _ in range(3000)]
    per_sample = sum(compare(a, b).significant(0.05) for a, b in pairs) / len(pairs)
    per_slot = sum(compare_slot_samples([a], [(1.0, b)]).significant(0.05) for a, b in pairs) / len(
        pairs
    )
    assert per_sample > 0.15, per_sample
    assert per_slot < 0.09, per_slot


def test_fallback_weights_interpolate_and_add_up_over_a_candidates_slots() -> None:
    from ms_droplet._slots import fallback_comparison

    rng = np.random.default_rng(13)
    res = [lognormal(rng, 1.0, 0.02, 3) for _ in range(7)]
    # controls at 0, 3 and 6: the head warms up (left out with two others); candidate slot 2
    # has only control 3 after it (weight 1), slot 4 lies a third of the way from 3 to 6
    out = fallback_comparison([2, 4], [0, 3, 6], res)
    ref = compare_slot_samples(
        [res[2], res[4]],
        [(5 / 6, res[3]), (1 / 6, res[6])],
        noise=pooled_repeat_noise(res),
    )
    assert out == ref
