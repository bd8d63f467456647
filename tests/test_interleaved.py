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
"""The rotating order of interleaved re-measurement (no TVM build)."""

from __future__ import annotations

import itertools

import pytest

from ms_droplet._evaluate import interleaved_order, time_interleaved


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_every_timer_takes_every_position_equally_often(n):
    counts = [[0] * n for _ in range(n)]  # counts[timer][position]
    for r in range(2 * n):
        order = interleaved_order(n, r)
        assert sorted(order) == list(range(n))
        for pos, i in enumerate(order):
            counts[i][pos] += 1
    # over 2n rounds, first and last are shared equally; with n <= 2 every position is
    assert all(row[0] == counts[0][0] for row in counts)
    assert all(row[-1] == counts[0][-1] for row in counts)
    if n <= 3:
        assert all(c == 2 for row in counts for c in row)


def test_direction_alternates():
    assert interleaved_order(3, 0) == [0, 1, 2]
    assert interleaved_order(3, 1) == [2, 1, 0]
    assert interleaved_order(3, 2) == [1, 2, 0]


def test_time_interleaved_groups_by_round_and_follows_the_order():
    calls: list[int] = []
    counter = itertools.count()

    def timer(i):
        def f():
            calls.append(i)
            return [float(next(counter) + 1)]

        return f

    out = time_interleaved([timer(0), timer(1)], rounds=4)
    assert calls == [0, 1, 1, 0, 1, 0, 0, 1]
    assert [len(groups) for groups in out] == [4, 4]
    # timer 0 ran at call positions 0, 3, 5, 6 -> values 1, 4, 6, 7
    assert out[0] == [[1.0], [4.0], [6.0], [7.0]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved([lambda: [1.0]], rounds=0)
    with pytest.raises(ValueError, match="num_timers"):
        interleaved_order(0, 0)
