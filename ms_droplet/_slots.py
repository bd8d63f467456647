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
"""Comparing one slot of a descent batch with the incumbent's controls around it (pure, no TVM).

A descent batch carries the incumbent as controls spread through it; a candidate's slot is
compared with the controls nearest to it in time, scaled to its slot (a drift over the runner
call cancels out), or with the straight line fitted to all usable controls (slot-level test).
"""

from __future__ import annotations

import math

from ._stats import (
    Comparison,
    SlotNoise,
    compare_slot_samples,
    compare_slots,
    control_line_noise,
    median,
    pooled_repeat_noise,
)

__all__ = [
    "batch_noise",
    "control_samples",
    "fallback_comparison",
    "ran",
    "slot_comparison",
    "usable_controls",
]


def ran(res: list[list[float] | None], i: int) -> list[float]:
    """The samples of slot ``i``, which ran (callers only pass slots that did)."""
    samples = res[i]
    if samples is None:
        raise ValueError(f"slot {i} has no samples")
    return samples


def usable_controls(controls: list[int]) -> list[int]:
    """The head control warms the runner up: left out when at least two others ran."""
    usable = [c for c in controls if c != 0]
    return usable if len(usable) >= 2 else controls


def control_samples(i: int, controls: list[int], res: list[list[float] | None]) -> list[float]:
    """The control samples to compare slot ``i`` with, corrected for a drift over the batch.

    Of the usable controls, the nearest before and after slot ``i`` are pooled, each scaled to
    slot ``i`` by a geometric interpolation of their medians (a linear drift in log time
    cancels out).
    """
    weights = _control_weights(i, controls)
    if len(weights) == 1:
        return list(ran(res, next(iter(weights))))
    (a, wa), (b, wb) = weights.items()
    sa, sb = ran(res, a), ran(res, b)
    ma, mb = median(sa), median(sb)
    at_i = ma**wa * mb**wb
    return [x * at_i / ma for x in sa] + [x * at_i / mb for x in sb]


def _control_weights(i: int, controls: list[int]) -> dict[int, float]:
    """The usable controls nearest before and after slot ``i`` and their interpolation weights
    at it (the nearest one alone where there is none on one side)."""
    usable = usable_controls(controls)
    before = [c for c in usable if c < i]
    after = [c for c in usable if c > i]
    if before and after:
        a, b = before[-1], after[0]
        w = (i - a) / (b - a)
        return {a: 1.0 - w, b: w}
    return {before[-1] if before else after[0]: 1.0}


def slot_comparison(
    slots: list[int],
    controls: list[int],
    res: list[list[float] | None],
    *,
    prior: SlotNoise | None = None,
) -> Comparison | None:
    """Slot-level test of the candidate at ``slots`` (None: too few controls for it).

    It needs four usable controls; a ``prior`` slot noise from earlier batches (``noise_prior``)
    is pooled with theirs (with fewer controls, even with a prior, a test of copies of one
    kernel found differences too often on this project's A/A batches).
    """
    usable = usable_controls(controls)
    if len(usable) < 4:
        return None
    return compare_slots(
        [float(i) for i in slots],
        [math.log(median(ran(res, i))) for i in slots],
        [float(c) for c in usable],
        [math.log(median(ran(res, c))) for c in usable],
        prior=prior,
    )


def fallback_comparison(
    slots: list[int], controls: list[int], res: list[list[float] | None]
) -> Comparison:
    """The test of the candidate at ``slots`` where the slot-level test has too few controls.

    Each candidate slot is compared with the incumbent interpolated between its nearest
    controls (``control_samples``'s weights), every slot counted as one observation whose
    variance is the repeats' variance pooled over the batch's slots (``compare_slot_samples``,
    ``pooled_repeat_noise``): the runner's repeats of one slot move together, and counting
    each repeat found differences between copies of one kernel far too often
    (docs/benchmarks.md, "Calibration on A/A batches").
    """
    weights: dict[int, float] = {}
    for i in slots:
        for c, w in _control_weights(i, controls).items():
            weights[c] = weights.get(c, 0.0) + w / len(slots)
    return compare_slot_samples(
        [ran(res, i) for i in slots],
        [(w, ran(res, c)) for c, w in sorted(weights.items())],
        noise=pooled_repeat_noise([r for r in res if r]),
    )


def batch_noise(controls: list[int], res: list[list[float] | None]) -> SlotNoise:
    """The slot noise of one batch: its usable controls' scatter around their line."""
    usable = usable_controls(controls)
    return control_line_noise(
        [float(c) for c in usable], [math.log(median(ran(res, c))) for c in usable]
    )
