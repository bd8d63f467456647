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
"""The final pick: a task's best candidates re-measured in rotating rounds in one batch.

Every record of a descent is one runner slot, and slots of different batches are not comparable
on a noisy machine, so the lowest record of a workload (what stock TVM compiles) is often a
neighbour measured once at a quiet moment. At the end of a task the strategy measures its few
contenders (the descents' incumbents and the database's fastest records) in one batch, one slot
each per round, the order rotated by one every round so that every contender takes every
position equally often (a fixed order biases the comparison by the drift within the runner
call). Each round is a paired comparison; a contender's score is the median, over the rounds,
of its log latency relative to the round's mean, and the pick is the lowest score.

This module imports no TVM: it is tested on synthetic measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._stats import median

__all__ = ["FinalPick", "final_order", "final_pick", "final_size"]

#: The most contenders of one final batch.
MAX_CONTENDERS = 4
#: The fewest rounds a final batch measures.
MIN_ROUNDS = 4


def final_size(trials: int) -> tuple[int, int]:
    """How many contenders and rounds a final batch of at most ``trials`` slots holds.

    Returns ``(contenders, rounds)``; ``(0, 0)`` when ``trials`` is too small for two
    contenders in ``MIN_ROUNDS`` rounds.
    """
    contenders = min(MAX_CONTENDERS, trials // MIN_ROUNDS)
    if contenders < 2:
        return 0, 0
    return contenders, trials // contenders


def final_order(contenders: int, rounds: int) -> list[int]:
    """The contender of each slot: ``rounds`` rounds, each a rotation of the previous one."""
    if contenders < 1 or rounds < 1:
        raise ValueError(f"need contenders >= 1 and rounds >= 1, got {contenders}, {rounds}")
    return [(r + i) % contenders for r in range(rounds) for i in range(contenders)]


@dataclass(frozen=True)
class FinalPick:
    """What a final batch decided.

    Attributes
    ----------
    pick : int or None
        Index of the fastest contender; None when every contender failed in some round.
    ratios : list of float or None
        Each contender's latency relative to contender 0, from the statistic the pick uses
        (the exponential of the difference of their scores); None: it failed in a round, or
        contender 0 did.
    rounds : int
        Complete rounds of the batch (each contender once per round).
    """

    pick: int | None
    ratios: list[float | None]
    rounds: int


def final_pick(order: Sequence[int], samples: Sequence[Sequence[float] | None]) -> FinalPick:
    """Pick the fastest contender of a final batch laid out by :func:`final_order`.

    Parameters
    ----------
    order : sequence of int
        The contender of each slot.
    samples : sequence of (sequence of float or None)
        The run seconds of each slot; None (or empty) for a slot that failed. A contender that
        failed in any slot is never picked (a kernel that sometimes fails is no pick).
    """
    if len(order) != len(samples):
        raise ValueError(f"{len(samples)} slot results for {len(order)} slots")
    num = max(order) + 1 if order else 0
    rounds = len(order) // num if num else 0
    # log latency of each contender in each round; NaN where its slot failed
    per = [[math.nan] * rounds for _ in range(num)]
    for slot, (who, secs) in enumerate(zip(order, samples, strict=True)):
        ok = [float(x) for x in secs or [] if x is not None and math.isfinite(x) and x > 0]
        if ok and slot // num < rounds:
            per[who][slot // num] = math.log(median(ok))
    alive = [c for c in range(num) if rounds and not any(math.isnan(v) for v in per[c])]
    if not alive:
        return FinalPick(None, [None] * num, 0)
    means = [sum(per[a][r] for a in alive) / len(alive) for r in range(rounds)]
    score = {c: median([per[c][r] - means[r] for r in range(rounds)]) for c in alive}
    pick = min(alive, key=lambda c: (score[c], c))
    ratios: list[float | None] = [None] * num
    if 0 in alive:
        for c in alive:
            ratios[c] = math.exp(score[c] - score[0])
    return FinalPick(pick, ratios, rounds)
