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
"""The Droplet coordinate-descent state machine (pure, no TVM).

The descent only sees opaque points, their neighbours and the run seconds measured for them, so
it can be tested on synthetic landscapes. The TVM side (``_decisions``) turns traces into points.

One round works like this:

* every batch starts with the incumbent as a *control*, so that challengers are compared only
  with samples taken in the same runner call (measurements drift a lot between calls);
* the rest of the batch are unvisited neighbours of the incumbent at the current step;
* a neighbour that is significantly faster than the in-batch control becomes the *challenger*;
  it is re-measured beside the control in the next batch (confirmation) and the incumbent moves
  only if it wins again (or, with ``confirm=False``, the move is immediate);
* when all neighbours of a step were measured without a move the step widens, up to
  ``max_step``; after a move the step resets to 1 around the new incumbent;
* when no unvisited neighbour is left at any step, the descent has converged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._stats import Comparison, compare

__all__ = ["Descent", "DescentEvent", "Neighbour", "Proposal"]

P = TypeVar("P")


@dataclass(frozen=True)
class Neighbour(Generic[P]):
    """A candidate point next to the incumbent.

    Attributes
    ----------
    coordinate : str
        Which coordinate was changed and how (for logs).
    point : P
        The candidate itself.
    key : Hashable
        Its fingerprint: two neighbours with the same key are the same candidate.
    """

    coordinate: str
    point: Any
    key: Hashable


@dataclass(frozen=True)
class Proposal:
    """One entry of a batch: the control, a challenger's confirmation, or a new neighbour."""

    role: str  # "control" | "confirm" | "explore"
    neighbour: Neighbour


@dataclass(frozen=True)
class DescentEvent:
    """Something the descent decided, reported through ``on_event`` for logging."""

    kind: str  # "challenger" | "move" | "reject" | "widen" | "converged" | "control-failed"
    step: int
    coordinate: str = ""
    ratio: float | None = None
    pvalue: float | None = None
    message: str = ""


@dataclass
class _Challenger:
    neighbour: Neighbour
    samples: list[float]
    control: list[float]
    first: Comparison


@dataclass
class _Batch:
    proposals: list[Proposal] = field(default_factory=list)


class Descent(Generic[P]):
    """Droplet Search coordinate descent over opaque points.

    Parameters
    ----------
    start : Neighbour
        The starting incumbent (its ``coordinate`` is ignored).
    neighbours : Callable[[P, int], Iterable[Neighbour]]
        ``neighbours(point, step)`` lists the valid neighbours of ``point`` at ``step``
        (one coordinate changed by ``step``). It may return already visited ones.
    pvalue : float
        Significance level of every acceptance test.
    max_step : int
        Largest step tried when no neighbour improves.
    confirm : bool
        Re-measure a winner beside the control before moving to it.
    seen : set, optional
        Keys already measured or known invalid; updated in place.
    seed : int
        Seed of the neighbour order (the only randomness of the descent).
    max_control_failures : int
        Consecutive batches whose control failed to run before the descent gives up.
    on_event : Callable[[DescentEvent], None], optional
        Observer of decisions (moves, widening, convergence), for logging.
    """

    def __init__(
        self,
        start: Neighbour,
        *,
        neighbours: Callable[[Any, int], Iterable[Neighbour]],
        pvalue: float = 0.05,
        max_step: int = 3,
        confirm: bool = True,
        seen: set | None = None,
        seed: int = 0,
        max_control_failures: int = 3,
        on_event: Callable[[DescentEvent], None] | None = None,
    ) -> None:
        if not 0.0 < pvalue <= 1.0:
            raise ValueError(f"pvalue must be in (0, 1], got {pvalue!r}")
        if max_step < 1:
            raise ValueError(f"max_step must be >= 1, got {max_step!r}")
        self._neighbours = neighbours
        self._pvalue = pvalue
        self._max_step = max_step
        self._confirm = confirm
        self._seen: set = seen if seen is not None else set()
        self._rng = random.Random(seed)
        self._max_control_failures = max_control_failures
        self._on_event = on_event
        self._incumbent = start
        self._seen.add(start.key)
        self._step = 1
        self._queue: list[Neighbour] = []
        self._challenger: _Challenger | None = None
        self._batch: _Batch | None = None
        self._control_failures = 0
        self._converged = False
        self.moves: list[DescentEvent] = []
        self._fill_queue(widen=False)

    # ------------------------------------------------------------------ properties
    @property
    def incumbent(self) -> Neighbour:
        """The current best point."""
        return self._incumbent

    @property
    def step(self) -> int:
        """The current step."""
        return self._step

    @property
    def converged(self) -> bool:
        """Whether no unvisited neighbour is left (or the incumbent cannot be measured)."""
        return self._converged

    # ------------------------------------------------------------------ protocol
    def propose(self, max_batch: int) -> list[Proposal] | None:
        """Return the next batch (control first), or None when the descent is over.

        Parameters
        ----------
        max_batch : int
            The most candidates the caller can measure now (the control counts).
        """
        if self._batch is not None:
            raise RuntimeError("propose() called twice without observe() of the first batch")
        if self._converged or max_batch < 2:
            return None
        batch = _Batch([Proposal("control", self._incumbent)])
        if self._challenger is not None:
            batch.proposals.append(Proposal("confirm", self._challenger.neighbour))
        while len(batch.proposals) < max_batch and self._queue:
            nb = self._queue.pop()
            if nb.key in self._seen:
                continue
            self._seen.add(nb.key)
            batch.proposals.append(Proposal("explore", nb))
        if len(batch.proposals) == 1:  # nothing to compare: only possible when all were seen
            self._fill_queue(widen=True)
            return self.propose(max_batch) if not self._converged else None
        self._batch = batch
        return list(batch.proposals)

    def forget_proposal(self, index: int) -> None:
        """Drop a proposal of the pending batch that turned out not to be measurable."""
        if self._batch is None:
            raise RuntimeError("forget_proposal() needs a pending batch")
        prop = self._batch.proposals[index]
        if prop.role == "control":
            raise ValueError("the control cannot be dropped from a batch")
        del self._batch.proposals[index]
        if prop.role == "confirm":
            self._challenger = None

    def observe(self, results: Sequence[Sequence[float] | None]) -> None:
        """Take the run seconds of the pending batch, in proposal order (None: failed)."""
        if self._batch is None:
            raise RuntimeError("observe() called without a pending batch from propose()")
        proposals = self._batch.proposals
        if len(results) != len(proposals):
            raise ValueError(f"expected {len(proposals)} results, got {len(results)}")
        self._batch = None
        control = results[0]
        if control is None or len(control) == 0:
            self._control_failures += 1
            self._emit("control-failed", message="the incumbent failed to run in this batch")
            if self._control_failures >= self._max_control_failures:
                self._finish("the incumbent failed to run in consecutive batches")
                return
            # Without a control nothing in this batch was compared: measure the neighbours that
            # ran again beside the next control (the only re-measurement besides controls).
            for prop, res in zip(proposals[1:], results[1:], strict=True):
                if prop.role == "explore" and res is not None and len(res) > 0:
                    self._seen.discard(prop.neighbour.key)
                    self._queue.append(prop.neighbour)
            return
        self._control_failures = 0
        control = list(control)
        moved = False
        best: tuple[Comparison, Neighbour, list[float]] | None = None
        for prop, res in zip(proposals[1:], results[1:], strict=True):
            if prop.role == "confirm":
                ok = res is not None and len(res) > 0
                moved = self._confirm_challenger(list(res) if ok else None, control)
                continue
            if res is None or len(res) == 0:
                continue
            cmp = compare(list(res), control)
            promising = cmp.significant(self._pvalue) or (not cmp.testable and cmp.ratio < 1.0)
            if promising and (best is None or cmp.ratio < best[0].ratio):
                best = (cmp, prop.neighbour, list(res))
        if not moved and best is not None and self._challenger is None:
            cmp, nb, res = best
            if self._confirm or not cmp.testable:
                self._challenger = _Challenger(nb, res, control, cmp)
                self._emit("challenger", nb.coordinate, cmp.ratio, cmp.pvalue)
            else:
                self._move(nb, cmp)
                moved = True
        if moved:
            self._step = 1
            self._queue = []
            self._fill_queue(widen=False)
        elif not self._queue and self._challenger is None:
            self._fill_queue(widen=True)

    # ------------------------------------------------------------------ internals
    def _confirm_challenger(self, res: list[float] | None, control: list[float]) -> bool:
        ch = self._challenger
        assert ch is not None
        self._challenger = None
        if not res:
            self._emit("reject", ch.neighbour.coordinate, message="failed when re-measured")
            return False
        cmp = compare(res, control)
        if not cmp.testable:  # too few repeats: pool both batches
            cmp = compare(ch.samples + res, ch.control + control)
        if cmp.significant(self._pvalue):
            self._move(ch.neighbour, cmp)
            return True
        self._emit("reject", ch.neighbour.coordinate, cmp.ratio, cmp.pvalue)
        return False

    def _move(self, nb: Neighbour, cmp: Comparison) -> None:
        old = self._incumbent
        self._incumbent = nb
        origin = old.coordinate or "start"
        ev = self._emit("move", nb.coordinate, cmp.ratio, cmp.pvalue, message=f"from {origin}")
        self.moves.append(ev)

    def _fill_queue(self, *, widen: bool) -> None:
        """Load the unvisited neighbours at the current step, widening while there are none."""
        if widen:
            self._step += 1
            if self._step <= self._max_step:
                self._emit("widen", message=f"no significant improvement; step -> {self._step}")
        while self._step <= self._max_step:
            fresh: dict[Hashable, Neighbour] = {}
            for nb in self._neighbours(self._incumbent.point, self._step):
                if nb.key not in self._seen and nb.key not in fresh:
                    fresh[nb.key] = nb
            if fresh:
                queue = list(fresh.values())
                self._rng.shuffle(queue)
                self._queue = queue
                return
            self._step += 1
            if self._step <= self._max_step:
                self._emit("widen", message=f"no unvisited neighbour; step -> {self._step}")
        self._finish(f"no unvisited neighbour up to step {self._max_step}")

    def _finish(self, why: str) -> None:
        self._converged = True
        self._queue = []
        self._emit("converged", message=why)

    def _emit(
        self,
        kind: str,
        coordinate: str = "",
        ratio: float | None = None,
        pvalue: float | None = None,
        *,
        message: str = "",
    ) -> DescentEvent:
        ev = DescentEvent(kind, self._step, coordinate, ratio, pvalue, message)
        if self._on_event is not None:
            self._on_event(ev)
        return ev
