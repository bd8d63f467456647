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
"""Synthetic landscapes and a seeded noisy runner for the descent tests (not tests themselves).

Shared by ``test_descent.py`` and ``test_descent_capabilities.py``: points are tuples of ints in a
box, the neighbours of a point at ``step`` change one coordinate by ``+-step``, and ``Runner``
returns ``repeat`` noisy run seconds per proposal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ms_droplet._descent import DescentEvent, Neighbour, Proposal

Point = tuple[int, ...]
Latency = Callable[[Point], float]
Results = list[list[float] | None]


def nb(point: Point, coordinate: str = "start") -> Neighbour:
    """A neighbour whose key is the point itself."""
    return Neighbour(coordinate=coordinate, point=point, key=point)


def box_neighbours(lo: int = 0, hi: int = 15) -> Callable[[Point, int], Iterator[Neighbour]]:
    """``neighbours(p, step)``: ``p`` with one coordinate moved by ``+-step``, inside the box."""

    def neighbours(p: Point, step: int) -> Iterator[Neighbour]:
        for d in range(len(p)):
            for sign in (1, -1):
                v = p[d] + sign * step
                if lo <= v <= hi:
                    q = (*p[:d], v, *p[d + 1 :])
                    yield nb(q, f"x{d}{'+' if sign > 0 else '-'}{step}")

    return neighbours


def bowl(opt: Point) -> Latency:
    """Separable convex landscape with its minimum (1.0) at ``opt``."""

    def f(p: Point) -> float:
        return 1.0 + 0.05 * sum((a - b) ** 2 for a, b in zip(p, opt, strict=True))

    return f


def flat(p: Point) -> float:
    return 1.0


class Runner:
    """Seeded noisy measurements: ``f(p) * exp(N(0, sigma))`` per repeat, times a batch drift."""

    def __init__(
        self,
        f: Latency,
        *,
        seed: int = 0,
        sigma: float = 0.01,
        sigma_batch: float = 0.0,
        repeat: int = 5,
        fails: Callable[[int, int, Proposal], bool] | None = None,
    ) -> None:
        self.f = f
        self.rng = np.random.default_rng(seed)
        self.sigma = sigma
        self.sigma_batch = sigma_batch
        self.repeat = repeat
        self.fails = fails  # fails(batch_index, index_in_batch, proposal) -> no result
        self.calls = 0
        self.log: list[tuple[list[Proposal], Results]] = []

    def __call__(self, props: Sequence[Proposal]) -> Results:
        common = math.exp(self.rng.normal(0.0, self.sigma_batch)) if self.sigma_batch else 1.0
        out: Results = []
        for i, prop in enumerate(props):
            if self.fails is not None and self.fails(self.calls, i, prop):
                out.append(None)
                continue
            base = self.f(prop.neighbour.point) * common
            noise = self.rng.normal(0.0, self.sigma, self.repeat)
            out.append([base * math.exp(float(z)) for z in noise])
        self.log.append((list(props), out))
        self.calls += 1
        return out


class Trace:
    """Records a driven descent (``drive`` of ``test_descent.py`` checks the batch invariants)."""

    def __init__(self) -> None:
        self.events: list[DescentEvent] = []
        self.batches: list[list[Proposal]] = []
        self.explored: list = []  # keys proposed with role "explore", in order

    def kinds(self, *kinds: str) -> list[DescentEvent]:
        return [e for e in self.events if e.kind in kinds]


def l1(a: Point, b: Point) -> int:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


#: The optimum of the 4-D ``bowl`` landscapes of the convergence tests.
OPT = (9, 4, 12, 6)
