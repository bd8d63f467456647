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
"""The final pick's layout and scoring (pure, synthetic measurements)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from ms_droplet._final import final_order, final_pick, final_size


def test_size_holds_two_to_four_contenders_in_at_least_four_rounds():
    assert final_size(7) == (0, 0)
    assert final_size(8) == (2, 4)
    assert final_size(12) == (3, 4)
    assert final_size(16) == (4, 4)
    assert final_size(32) == (4, 8)


def test_rotation_puts_every_contender_in_every_position_equally():
    order = final_order(4, 8)
    assert len(order) == 32
    rounds = [order[i : i + 4] for i in range(0, 32, 4)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds)
    positions = Counter((pos, c) for r in rounds for pos, c in enumerate(r))
    assert set(positions.values()) == {2}
    with pytest.raises(ValueError):
        final_order(0, 4)


def _measure(order, true_ms, *, drift=0.0, position_bias=0.0, noise=0.0, seed=0):
    """Slot samples: a ramp over the batch, a penalty for the first slot of a round, noise."""
    rng = random.Random(seed)
    num = max(order) + 1
    out = []
    for slot, c in enumerate(order):
        scale = 1.0 + drift * slot / len(order)
        if slot % num == 0:
            scale *= 1.0 + position_bias
        out.append([true_ms[c] * scale * (1.0 + noise * rng.gauss(0, 1)) for _ in range(3)])
    return out


def test_rotation_cancels_a_bias_a_fixed_order_would_report():
    true_ms = [1.00, 0.98, 1.00, 1.01]  # contender 1 is 2 % faster
    order = final_order(4, 4)
    picked = final_pick(order, _measure(order, true_ms, drift=0.2, position_bias=0.3))
    assert picked.pick == 1
    assert picked.rounds == 4
    assert picked.ratios[1] == pytest.approx(0.98, rel=0.05)
    # the same measurements in a fixed order (1 always first, so always penalized) pick another
    fixed = [1, 0, 2, 3] * 4
    assert final_pick(fixed, _measure(fixed, true_ms, position_bias=0.3)).pick != 1


def test_noise_rarely_hides_a_five_percent_faster_kernel():
    order = final_order(4, 4)
    wins = sum(
        final_pick(order, _measure(order, [1.0, 1.0, 0.95, 1.0], noise=0.02, seed=s)).pick == 2
        for s in range(50)
    )
    assert wins >= 45


def test_a_contender_that_failed_once_is_never_picked():
    order = final_order(2, 4)
    samples = _measure(order, [1.0, 0.5])
    samples[order.index(1, 3)] = None  # contender 1 (twice as fast) failed in one round
    picked = final_pick(order, samples)
    assert picked.pick == 0
    assert picked.ratios == [1.0, None]
    assert final_pick(order, [None] * len(order)).pick is None
    assert not math.isnan(picked.ratios[0])
    with pytest.raises(ValueError):
        final_pick(order, samples[:-1])


def test_the_reported_ratios_rank_the_contenders_as_the_pick_does():
    order = final_order(4, 4)
    for seed in range(30):
        picked = final_pick(order, _measure(order, [1.0, 1.01, 0.99, 1.0], noise=0.05, seed=seed))
        assert picked.ratios[picked.pick] == min(picked.ratios)
