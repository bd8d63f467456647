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
"""The descent's pairs of moves (``combine``) on synthetic 2-D landscapes.

Points are ``(x, y)``; a neighbour changes one coordinate by ``+-step``; ``combine`` applies two
neighbours' changes at once. Latencies are seeded and noisy (a few percent per sample).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from ms_droplet import DropletStrategy
from ms_droplet._descent import Descent, DescentEvent, Neighbour, Proposal

Point = tuple[int, int]


def _nb(p: Point, label: str = "start") -> Neighbour:
    return Neighbour(label, p, p)


def _neighbours(p: Point, step: int) -> Iterator[Neighbour]:
    for d in range(2):
        for sign in (1, -1):
            q = list(p)
            q[d] += sign * step
            if 0 <= q[d] <= 15:
                yield _nb((q[0], q[1]), f"x{d}{sign * step:+d}")


class _Combine:
    """Apply two neighbours' changes to ``p``; remember what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[Point, list[Point]]] = []

    def __call__(self, p: Point, best: Sequence[Neighbour]) -> Iterator[Neighbour]:
        self.calls.append((p, [nb.point for nb in best]))
        for i, a in enumerate(best):
            for b in best[i + 1 :]:
                da = [k for k in range(2) if a.point[k] != p[k]]
                db = [k for k in range(2) if b.point[k] != p[k]]
                if da == db:
                    continue
                q = list(p)
                q[da[0]] = a.point[da[0]]
                q[db[0]] = b.point[db[0]]
                yield _nb((q[0], q[1]), f"{a.coordinate}+{b.coordinate}")


def _ridge(p: Point) -> float:
    """A diagonal valley: from (5, 5) every one-coordinate move is 20 % slower, (6, 6) is 30 %
    faster; elsewhere the latency grows with the distance from the diagonal."""
    x, y = p
    if (x, y) == (6, 6):
        return 0.7
    if x == y:
        return 1.0 + 0.02 * abs(x - 5)
    return 1.2 + 0.05 * abs(x - y)


def _samples(latency: float, rng: np.random.Generator) -> list[float]:
    return [latency * math.exp(rng.normal(0, 0.02)) for _ in range(5)]


def _run(f, descent: Descent, *, seed: int, max_batch: int = 8) -> list[list[Proposal]]:
    rng = np.random.default_rng(seed)
    batches = []
    explored: set = set()
    for _ in range(200):
        props = descent.propose(max_batch)
        if props is None:
            return batches
        for p in props:
            if p.role == "explore":
                assert p.neighbour.key not in explored, "a point explored twice"
                explored.add(p.neighbour.key)
        batches.append(props)
        descent.observe([_samples(f(p.neighbour.point), rng) for p in props])
    pytest.fail("the descent did not end")


def _descent(events: list[DescentEvent], **kwargs) -> Descent:
    return Descent(
        _nb((5, 5)),
        neighbours=_neighbours,
        max_step=1,
        on_event=events.append,
        seed=3,
        **kwargs,
    )


@pytest.mark.parametrize("rank", [False, True])
def test_a_pair_finds_what_single_moves_cannot(rank: bool) -> None:
    scores = (lambda nbs: [-_ridge(nb.point) for nb in nbs]) if rank else None
    events: list[DescentEvent] = []
    alone = _descent(events, rank=scores)
    _run(_ridge, alone, seed=1)
    assert alone.converged and alone.incumbent.key == (5, 5)
    assert not alone.moves

    events = []
    combine = _Combine()
    paired = _descent(events, rank=scores, combine=combine, combine_best=4)
    batches = _run(_ridge, paired, seed=1)
    assert paired.converged
    assert paired.incumbent.key == (6, 6)
    assert [m.coordinate for m in paired.moves] in (["x0+1+x1+1"], ["x1+1+x0+1"])
    # pairs are tried once per incumbent, after its neighbourhood: (5, 5) and then (6, 6)
    assert [p for p, _ in combine.calls] == [(5, 5), (6, 6)]
    assert sum("pair(s)" in e.message for e in events) == 2
    explored = [p.neighbour.key for b in batches for p in b if p.role == "explore"]
    assert len(explored) == len(set(explored))


def test_pairs_combine_the_best_measured_moves_first() -> None:
    # one-coordinate moves from (5, 5), all slower, by how much depends on the move
    cost = {(6, 5): 1.05, (4, 5): 1.4, (5, 6): 1.1, (5, 4): 1.6}

    def f(p: Point) -> float:
        return 1.0 if p == (5, 5) else cost.get(p, 2.0)

    events: list[DescentEvent] = []
    combine = _Combine()
    d = _descent(events, combine=combine, combine_best=3)
    _run(f, d, seed=2)
    assert not d.moves and d.converged
    ((point, best),) = combine.calls
    assert point == (5, 5)
    assert best == [(6, 5), (5, 6), (4, 5)]  # fastest first, at most combine_best


def test_pairs_on_a_flat_landscape_end_without_moving() -> None:
    events: list[DescentEvent] = []
    combine = _Combine()
    d = _descent(events, combine=combine, pvalue=1e-6)
    batches = _run(lambda p: 1.0, d, seed=4)
    assert d.converged and not d.moves
    explored = {p.neighbour.key for b in batches for p in b if p.role == "explore"}
    assert explored == {(4, 5), (6, 5), (5, 4), (5, 6), (4, 4), (4, 6), (6, 4), (6, 6)}


@pytest.mark.parametrize("bad", [1, 0, -3])
def test_combine_best_below_two_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="combine_best"):
        _descent([], combine=_Combine(), combine_best=bad)


@pytest.mark.parametrize("bad", [1, -1, 2.5, True])
def test_strategy_refuses_a_bad_combine_best(bad) -> None:
    with pytest.raises(ValueError, match="combine_best"):
        DropletStrategy(combine_best=bad)
    assert DropletStrategy(combine_best=0).combine_best == 0


def test_pairs_leave_out_neighbours_marked_as_jumps() -> None:
    # (9, 9) is listed around (5, 5) as a jump (e.g. a beam record's neighbour): the fastest
    # measured neighbour, still slower than (5, 5), and no coordinate change of (5, 5) to pair
    cost = {(6, 5): 1.05, (4, 5): 1.4, (5, 6): 1.1, (5, 4): 1.6, (9, 9): 1.02}

    def f(p: Point) -> float:
        return 1.0 if p == (5, 5) else cost.get(p, 2.0)

    def neighbours(p: Point, step: int) -> Iterator[Neighbour]:
        yield from _neighbours(p, step)
        if p == (5, 5):
            yield Neighbour("beam:x0+4", (9, 9), (9, 9), jump=True)

    events: list[DescentEvent] = []
    combine = _Combine()
    d = Descent(
        _nb((5, 5)),
        neighbours=neighbours,
        max_step=1,
        on_event=events.append,
        seed=3,
        combine=combine,
        combine_best=3,
    )
    batches = _run(f, d, seed=2)
    assert not d.moves and d.converged
    measured = {p.neighbour.key for b in batches for p in b if p.role == "explore"}
    assert (9, 9) in measured
    ((point, best),) = combine.calls
    assert point == (5, 5)
    assert best == [(6, 5), (5, 6), (4, 5)]  # the jump, though fastest, takes no slot


def test_a_point_listed_as_a_jump_and_as_a_step_is_a_step() -> None:
    # (7, 5) is listed at step 1 as a jump and at step 2 as the start's own move x0+2; ranked,
    # both steps load at once: the descent must keep it as a step, so the pairs take it
    cost = {(6, 5): 1.3, (4, 5): 1.4, (5, 6): 1.1, (5, 4): 1.6, (7, 5): 1.02}

    def f(p: Point) -> float:
        return 1.0 if p == (5, 5) else cost.get(p, 2.0)

    def neighbours(p: Point, step: int) -> Iterator[Neighbour]:
        if p == (5, 5) and step == 1:
            yield Neighbour("beam:x0+1", (7, 5), (7, 5), jump=True)
        yield from _neighbours(p, step)

    combine = _Combine()
    d = Descent(
        _nb((5, 5)),
        neighbours=neighbours,
        max_step=2,
        seed=3,
        rank=lambda nbs: [0.0] * len(nbs),
        combine=combine,
        combine_best=2,
    )
    _run(f, d, seed=2, max_batch=12)
    assert not d.moves and d.converged
    ((point, best),) = combine.calls
    assert point == (5, 5)
    assert best == [(7, 5), (5, 6)]  # the fastest, a step of (5, 5) too, takes its place
