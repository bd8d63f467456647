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

* every batch carries the incumbent as a *control*: at its head and, with ``control_every``, in
  every ``control_every``-th slot and the last one, so that each candidate is compared with the
  controls measured closest to it in time (latencies drift between runner calls and within one);
* the rest of the batch are unmeasured neighbours of the incumbent: step by step in a seeded random
  order, or, with a ``rank`` function (the task's cost model), every step up to ``max_step`` at
  once, the most promising first;
* a neighbour significantly faster than its nearest controls becomes a *challenger* (up to
  ``max_challengers`` at once); it is re-measured beside a control in the next batch
  (confirmation, an independent test at ``pvalue`` divided by the number of confirmations in the
  batch) and the incumbent moves only if it wins again (with ``reconfirm``, an inconclusive
  confirmation gets a second one, each at the level over 1.5); with ``confirm=False`` the move is
  immediate, to the fastest neighbour whose test passes at ``pvalue`` divided by the number of
  neighbours compared in the batch (Bonferroni: the fastest of many is picked; ``pvalue`` per
  test with ``correct_moves=False``);
* a confirmation travels with new candidates: the incumbent's remaining neighbours and, with
  ``speculate``, the challenger's own neighbours (compared with the challenger if it is confirmed);
* without ranking, when all neighbours of a step were measured without a move the step widens up
  to ``max_step``; after a move the step resets to 1 around the new incumbent;
* with ``combine``, when no unmeasured neighbour is left, pairs of the incumbent's best measured
  moves (two coordinates changed at once) are tried, once per incumbent;
* with ``pool_noise``, the slot noise (the controls' scatter around their line) of the earlier
  batches is a prior for each test beside its own batch's (an empirical-Bayes moderated t-test):
  with five usable controls in a batch of 32 a test alone has three degrees of freedom;
* when no unmeasured neighbour (or pair) is left, the descent has converged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable, MutableSet, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._proposals import DescentEvent, EventKind, Neighbour, Proposal, Role
from ._slots import (
    batch_noise,
    control_samples,
    fallback_comparison,
    ran,
    slot_comparison,
    usable_controls,
)
from ._stats import Comparison, SlotNoise, compare, noise_prior

__all__ = ["Descent", "DescentEvent", "EventKind", "Neighbour", "Proposal", "Role"]

P = TypeVar("P")

#: With ``reconfirm``: each of a challenger's (at most) two confirmations is held to the level
#: divided by this (the expected number of looks of a challenger that is not faster).
_RECONFIRM_SPLIT = 1.5
#: With ``pool_noise``: how many of the latest batches the slot noise prior is estimated from.
_NOISE_BATCHES = 40


def _usable(roles: list[bool]) -> list[int]:
    """The usable control slots of a layout (``usable_controls``)."""
    return usable_controls([i for i, is_control in enumerate(roles) if is_control])


def _control_spacing(every: int | None, limit: int) -> int | None:
    """The spacing of controls in a batch of at most ``limit`` slots (``control_every``).

    The slot-level test needs four usable controls (slot 1, every k-th slot, the last). Where
    ``every`` leaves fewer (a batch of 16 with every 8th: slots 1, 8 and 15), batches of 12 or
    more space them evenly instead (16: slots 1, 5, 10, 15); with three, the per-sample
    fallback found a difference between copies of one kernel in 20-26 % of the tests at
    p < 0.05 on a 2-core VM, with four the slot-level test 1-6 % (docs/benchmarks.md,
    "Calibration on A/A batches").
    """
    if every is None or limit < 12:
        return every
    usable = 2 + len(range(every, limit - 1, every))  # slot 1, multiples of every, the last
    return every if usable >= 4 else -(-(limit - 1) // 3)


@dataclass
class _Challenger:
    neighbour: Neighbour
    samples: list[float]
    control: list[float]
    first: Comparison
    step: int
    looks: int = 0  # confirmations it has failed (with ``reconfirm``, a second comes after one)


@dataclass
class _Queue:
    """Unmeasured neighbours of one point, the next to measure last (``pop()``)."""

    items: list[Neighbour] = field(default_factory=list)
    steps: dict[Hashable, int] = field(default_factory=dict)


class Descent(Generic[P]):
    """Droplet Search coordinate descent over opaque points.

    Parameters
    ----------
    start : Neighbour
        The starting incumbent (its ``coordinate`` is ignored).
    neighbours : Callable[[P, int], Iterable[Neighbour]]
        ``neighbours(point, step)`` lists the valid neighbours of ``point`` at ``step``
        (one coordinate changed by ``step``). It may return already measured ones.
    pvalue : float
        Significance level of every acceptance test.
    max_step : int
        Largest step tried (widened to when no neighbour improves, or ranked at once).
    confirm : bool
        Re-measure a winner beside the control before moving to it. False: move at once to the
        fastest significantly faster neighbour (see ``correct_moves``).
    seen : MutableSet, optional
        Keys already measured or known invalid. The descent adds every key it proposes to this
        very set (it is not copied), so its owner sees what was proposed.
    seed : int
        Seed of the neighbour order (the only randomness of the descent).
    max_control_failures : int
        Consecutive batches whose controls all failed to run before the descent gives up.
    on_event : Callable[[DescentEvent], None], optional
        Observer of decisions (moves, widening, convergence), for logging.
    rank : Callable[[Sequence[Neighbour]], Sequence[float]], optional
        Scores of neighbours, higher is more promising (e.g. the task's cost model). With it the
        neighbourhood of every step up to ``max_step`` is loaded at once and measured best
        first, and re-scored before every batch (the model learns from each batch: it is updated
        after :meth:`observe`, so the queues are ranked anew at the next :meth:`propose`).
    control_every : int, optional
        Put a control in every ``control_every``-th slot and in the last slot of a batch, and
        compare each candidate with its nearest controls. None: one control, at the head (and
        the last slot with ``tail_control``).
    max_challengers : int
        Challengers confirmed at once.
    speculate : bool
        Fill the slots left beside confirmations with the top challenger's own neighbours.
    confirm_slots : int
        Slots of a batch given to each confirmation (each after its own control): more
        samples for the one test that decides a move.
    fill : bool
        Without ranking, when a confirmation would travel with free slots and the step's
        neighbours are all measured, measure the next step's neighbours meanwhile.
    combine : Callable[[P, Sequence[Neighbour]], Iterable[Neighbour]], optional
        ``combine(point, moves)`` lists the points that apply two of ``moves`` (neighbours of
        ``point``, best first) at once. With it, a descent whose neighbourhood is exhausted
        tries such pairs of the incumbent's ``combine_best`` best measured neighbours (ranked
        like neighbours; neighbours marked ``jump`` are left out) before it converges:
        interactions one-coordinate moves cannot see.
    combine_best : int
        How many of the incumbent's best measured neighbours ``combine`` pairs up (>= 2).
    correct_moves : bool
        With ``confirm=False``: hold each test of a batch to ``pvalue`` divided by the
        neighbours compared in it (Bonferroni). False: ``pvalue`` per test.
    reconfirm : bool
        A challenger whose confirmation is inconclusive (faster than its controls, but not
        significantly) is re-measured once more, in the next batch, instead of being
        rejected; each of its two confirmations is then held to the level divided by 1.5, so
        that a challenger that is not faster passes either with about the same probability
        as one confirmation at the full level (group-sequential, two looks). False: one
        confirmation decides.
    carry : bool
        After a move, measure first the moves (neighbour ``coordinate`` labels, which name a
        change relative to the point) that were faster at the previous incumbent: the move
        itself repeated, then the others, fastest first; those that were slower go last. A
        pattern move and the other coordinates' gains, applied to the new incumbent, at every
        step loaded around it; only the order of its neighbours changes (with ``rank``, the
        model re-orders them after the first batch). Nothing is carried after a jump to a
        point that is not a neighbour (an offered point, a remembered challenger, a pair, a
        neighbour marked ``jump``).
    pool_noise : bool
        Test each candidate with its batch's slot noise moderated by the earlier batches'
        (their controls' scatter around their lines, from three batches on; ``noise_prior``:
        the steadier the noise has been from batch to batch, the more degrees of freedom the
        prior counts for, at most 30), so a test has more degrees of freedom
        than its batch's controls give (three in a batch of 32). False: each batch's controls
        alone.
    noise : Sequence[SlotNoise], optional
        The slot noise of batches measured before this descent (an earlier descent's
        :attr:`noise`).
    slot_unit : bool
        The runner's repeats of one slot move together (as on real machines): where a test
        has fewer than four usable controls, each slot counts as one observation
        (``compare_slot_samples``), and a short batch carries controls at its end, up to the
        four that the slot-level test needs. False: the repeats are independent samples (the
        per-sample Welch test; synthetic runners).
    tail_control : bool
        With ``control_every=None``: a control in the last slot of a batch too, so that each
        candidate is compared with the incumbent interpolated between the head and the last
        slot (a drift over the batch cancels out).
    """

    def __init__(
        self,
        start: Neighbour,
        *,
        neighbours: Callable[[Any, int], Iterable[Neighbour]],
        pvalue: float = 0.05,
        max_step: int = 3,
        confirm: bool = True,
        seen: MutableSet | None = None,
        seed: int = 0,
        max_control_failures: int = 3,
        on_event: Callable[[DescentEvent], None] | None = None,
        rank: Callable[[Sequence[Neighbour]], Sequence[float]] | None = None,
        control_every: int | None = None,
        max_challengers: int = 1,
        speculate: bool = False,
        fill: bool = False,
        confirm_slots: int = 1,
        combine: Callable[[Any, Sequence[Neighbour]], Iterable[Neighbour]] | None = None,
        combine_best: int = 8,
        correct_moves: bool = True,
        carry: bool = False,
        reconfirm: bool = False,
        pool_noise: bool = False,
        noise: Sequence[SlotNoise] = (),
        slot_unit: bool = False,
        tail_control: bool = False,
    ) -> None:
        if not 0.0 < pvalue <= 1.0:
            raise ValueError(f"pvalue must be in (0, 1], got {pvalue!r}")
        if max_step < 1:
            raise ValueError(f"max_step must be >= 1, got {max_step!r}")
        if control_every is not None and control_every < 2:
            raise ValueError(f"control_every must be >= 2 or None, got {control_every!r}")
        if max_challengers < 1:
            raise ValueError(f"max_challengers must be >= 1, got {max_challengers!r}")
        self._neighbours = neighbours
        self._pvalue = pvalue
        self._max_step = max_step
        self._confirm = confirm
        self._correct_moves = correct_moves
        self._carry = carry
        self._reconfirm = reconfirm
        self._pool_noise = pool_noise
        self._slot_unit = slot_unit
        self._tail_control = tail_control
        self._noise: list[SlotNoise] = list(noise)[-_NOISE_BATCHES:]
        self._carried: list[str] = []  # labels faster at the previous incumbent, best first
        self._slower: set[str] = set()  # ... and those slower there
        self._seen: MutableSet = seen if seen is not None else set()
        self._rng = random.Random(seed)
        self._max_control_failures = max_control_failures
        self._on_event = on_event
        self._rank = rank
        self._control_every = control_every
        self._max_challengers = max_challengers
        self._speculate = speculate
        self._fill = fill
        if confirm_slots < 1:
            raise ValueError(f"confirm_slots must be >= 1, got {confirm_slots!r}")
        self._confirm_slots = confirm_slots
        if combine_best < 2:
            raise ValueError(f"combine_best must be >= 2, got {combine_best!r}")
        self._combine = combine
        self._combine_best = combine_best
        self._combined: set[Hashable] = set()  # incumbents whose pairs were loaded
        # the incumbent's one-coordinate neighbours loaded so far (no jumps): what a move
        # carries from and what pairs combine
        self._around: dict[Hashable, Neighbour] = {}
        self._spec_around: dict[Hashable, Neighbour] = {}  # ... around the top challenger
        self._incumbent = start
        self._seen.add(start.key)
        self._step = 1
        self._queue = _Queue()
        self._spec = _Queue()  # neighbours of the top challenger (speculation)
        self._spec_of: Hashable | None = None
        self._offered = _Queue()  # points from outside the neighbourhood (an exploration's)
        self._challengers: list[_Challenger] = []
        self._batch: list[Proposal] | None = None
        self._scores: dict[Hashable, float] = {}
        # the queues whose scores predate the last observed batch: the caller's cost model
        # learns from a batch only after observe() returns (MetaSchedule updates it after the
        # strategy reads the results), so they are ranked again at the next propose(); a queue
        # loaded during observe() was ranked at its load (and may carry an order to keep)
        self._stale: list[_Queue] = []
        # log latency of every measured point relative to the start, chained through the
        # in-batch comparisons: what lets a point measured beside an earlier incumbent come back
        # as a challenger of a later one (it is confirmed, never trusted, before a move).
        self._estimates: dict[Hashable, float] = {start.key: 0.0}
        self._remembered: list[tuple[float, Neighbour, int]] = []
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
    def noise(self) -> tuple[SlotNoise, ...]:
        """The slot noise of the latest batches observed (``noise`` given included)."""
        return tuple(self._noise)

    @property
    def step(self) -> int:
        """The current step (without ranking; with it, the widest step loaded)."""
        return self._step

    @property
    def converged(self) -> bool:
        """Whether no unmeasured neighbour is left (or the incumbent cannot be measured)."""
        return self._converged

    @property
    def seen(self) -> MutableSet:
        """The set of keys measured or invalid (the one given at construction)."""
        return self._seen

    # ------------------------------------------------------------------ protocol
    def offer(self, points: Iterable[Neighbour]) -> None:
        """Measure these points in the next batch, before any neighbour.

        Points from outside the neighbourhood (e.g. an exploration's candidates) are compared
        with the controls like neighbours: a significantly faster one becomes a challenger and,
        once confirmed, the new incumbent (a jump). Points already seen are skipped; offered
        points not measured by the next batch are dropped.
        """
        self._offered = _Queue(list(reversed(list(points))))

    def propose(self, max_batch: int, *, last: bool = False) -> list[Proposal] | None:
        """Return the next batch (a control first, but for a scout batch), or None when over.

        Parameters
        ----------
        max_batch : int
            The most candidates the caller can measure now (controls count).
        last : bool
            No batch of this descent follows (the caller decides what to keep from it, e.g. in
            a final re-measurement). Without a pending confirmation such a batch holds no
            control: a challenger found in it could never be confirmed, so every slot goes to
            an unmeasured neighbour (a *scout* batch: :meth:`observe` records no comparison).
        """
        if self._batch is not None:
            raise RuntimeError("propose() called twice without observe() of the first batch")
        for queue in self._stale:
            if queue is self._queue or queue is self._spec:
                self._rerank(queue)
        self._stale = []
        if last and not self._challengers and not self._converged and max_batch >= 1:
            items: list[Proposal] = []
            self._take(items, max_batch)
            if items:
                self._offered = _Queue()
                self._batch = items
                return list(items)
        while True:
            if self._converged or max_batch < 2:
                return None
            items = [
                Proposal("confirm", ch.neighbour)
                for _ in range(self._confirm_slots)
                for ch in self._challengers
            ]
            capacity = self._capacity(max_batch)
            items = items[: max(capacity, 1)]
            self._take(items, capacity)
            if items:
                break
            # Nothing to compare: every queued neighbour was seen meanwhile.
            self._fill_queue(widen=self._rank is None)
        self._offered = _Queue()
        batch = self._layout(items, max_batch)
        self._batch = batch
        return list(batch)

    def observe(self, results: Sequence[Sequence[float] | None]) -> None:
        """Take the run seconds of the pending batch, in proposal order (None: failed)."""
        if self._batch is None:
            raise RuntimeError("observe() called without a pending batch from propose()")
        proposals = self._batch
        if len(results) != len(proposals):
            raise ValueError(f"expected {len(proposals)} results, got {len(results)}")
        self._batch = None
        self._stale = [self._queue, self._spec] if self._rank is not None else []
        res = [list(r) if r is not None and len(r) > 0 else None for r in results]
        if all(p.role != "control" for p in proposals):  # a scout batch (every other has one)
            ok = sum(r is not None for r in res)
            self._emit(
                "scouted", message=f"{ok} of {len(res)} neighbour(s) measured once, no control"
            )
            return
        controls = [i for i, p in enumerate(proposals) if p.role == "control" and res[i]]
        if not controls:
            self._control_failures += 1
            self._emit("control-failed", message="the incumbent failed to run in this batch")
            if self._control_failures >= self._max_control_failures:
                self._finish("the incumbent failed to run in consecutive batches")
                return
            # Without a control nothing in this batch was compared: measure the neighbours that
            # ran again beside the next control (the only re-measurement besides controls).
            for prop, r in zip(proposals, res, strict=True):
                if prop.role == "explore" and r is not None:
                    self._seen.discard(prop.neighbour.key)
                    target = self._spec if prop.speculative else self._queue
                    target.items.append(prop.neighbour)
            return
        self._control_failures = 0

        def nearest_control(i: int) -> list[float]:
            return control_samples(i, controls, res)

        prior = noise_prior(self._noise) if self._pool_noise else None
        moved = self._observe_confirmations(proposals, res, controls, nearest_control, prior)
        promising: list[tuple[Comparison, Neighbour, list[float], list[float]]] = []
        here = self._estimates.get(self._incumbent.key, 0.0)
        compared = [
            i
            for i, (prop, r) in enumerate(zip(proposals, res, strict=True))
            if prop.role == "explore" and r is not None and not prop.speculative
        ]
        # A confirmation re-tests a challenger on its own; an immediate move takes the fastest
        # of many tests, so each is held to the level divided by their number (Bonferroni).
        alpha = self._pvalue
        if not self._confirm and self._correct_moves:
            alpha /= max(1, len(compared))
        for i in compared:
            prop, r = proposals[i], res[i]
            assert r is not None
            control = nearest_control(i)
            cmp = slot_comparison([i], controls, res, prior=prior) or self._fallback(
                [i], controls, res, r, control
            )
            self._estimates[prop.neighbour.key] = here + math.log(cmp.ratio)
            if cmp.significant(alpha) or (not cmp.testable and cmp.ratio < 1.0):
                promising.append((cmp, prop.neighbour, r, control))
        promising.sort(key=lambda t: t[0].ratio)
        self._noise = [*self._noise, batch_noise(controls, res)][-_NOISE_BATCHES:]
        if moved is not None:
            self._after_move(moved, proposals, res)
            return
        pending = {ch.neighbour.key for ch in self._challengers}
        for cmp, nb, r, control in promising:
            if len(self._challengers) >= self._max_challengers:
                break
            if nb.key in pending:
                continue
            if self._confirm or not cmp.testable:
                step = self._queue.steps.get(nb.key, self._step)
                self._challengers.append(_Challenger(nb, r, control, cmp, step))
                self._emit("challenger", nb.coordinate, cmp.ratio, cmp.pvalue)
            else:
                self._move(nb, cmp, self._queue.steps.get(nb.key, self._step))
                self._estimates[nb.key] = here + math.log(cmp.ratio)
                self._around = {}
                self._recentre([])
                return
        self._prepare_speculation()
        if not self._queue.items and not self._challengers:
            self._fill_queue(widen=True)

    # ------------------------------------------------------------------ batches
    def _capacity(self, max_batch: int) -> int:
        """How many non-control items fit in a batch of at most ``max_batch`` slots."""
        fits = [
            items
            for items in range(max_batch - 1, 0, -1)
            if len(self._layout_roles(items, max_batch)) <= max_batch
        ]
        closed = [n for n in fits if self._layout_roles(n, max_batch)[-1]]  # ends on a control
        return (closed or fits or [0])[0]

    def _layout_roles(self, items: int, limit: int) -> list[bool]:
        """True for a control slot: the head, every ``control_every``-th slot, and the last
        (when it fits in ``limit`` slots)."""
        out = [True]
        k = _control_spacing(self._control_every, limit)
        if k is not None and limit >= items + 3:
            out.append(True)  # the head warms the runner up; the first item gets a real control
        n = 0
        while n < items:
            if k is not None and len(out) % k == 0:
                out.append(True)
                continue
            out.append(False)
            n += 1
        if (k is not None or self._tail_control) and not out[-1] and len(out) < limit:
            out.append(True)
        # A short batch (a confirmation with few or no neighbours left) has room: more controls
        # at its end, up to the four usable ones the slot-level test needs
        while self._slot_unit and k is not None and len(out) < limit and len(_usable(out)) < 4:
            out.append(True)
        return out

    def _layout(self, items: list[Proposal], limit: int) -> list[Proposal]:
        """Interleave controls with ``items``; each confirmation right after a control.

        With spread controls, confirmations follow the second and later controls: the head
        control warms the runner up, and a confirmation is best bracketed by two controls.
        """
        roles = self._layout_roles(len(items), limit)
        confirms = [p for p in items if p.role == "confirm"]
        others = [p for p in items if p.role != "confirm"]
        control = Proposal("control", self._incumbent)
        batch: list[Proposal] = []
        after_control = False
        seen_controls = 0
        skip_head = len(roles) > 1 and roles[1]
        for is_control in roles:
            if is_control:
                batch.append(control)
                seen_controls += 1
                after_control = not (skip_head and seen_controls == 1)
                continue
            if confirms and (after_control or not others):
                batch.append(confirms.pop(0))
            else:
                batch.append(others.pop(0))
            after_control = False
        return batch

    def _take(self, items: list[Proposal], capacity: int) -> None:
        """Append unseen explores to ``items`` up to ``capacity``, best first."""
        while self._offered.items and len(items) < capacity:
            nb = self._offered.items.pop()
            if nb.key not in self._seen:
                self._seen.add(nb.key)
                items.append(Proposal("explore", nb))
        sources = [(self._queue, False)]
        if self._speculate and self._spec.items:
            sources.append((self._spec, True))
        while len(items) < capacity:
            candidates = [(q, s) for q, s in sources if q.items]
            if not candidates and self._fill and self._rank is None and self._step < self._max_step:
                # a confirmation would travel alone: measure the next step meanwhile
                self._step += 1
                self._emit("widen", message=f"filling the batch; step -> {self._step}")
                self._queue = self._load(self._incumbent.point, (self._step,))
                continue
            if not candidates:
                return
            if len(candidates) == 2 and self._rank is None:
                q, spec = candidates[0]  # without scores, the incumbent's own first
            elif len(candidates) == 2:
                q, spec = max(candidates, key=lambda c: self._scores.get(c[0].items[-1].key, 0.0))
            else:
                q, spec = candidates[0]
            nb = q.items.pop()
            if nb.key in self._seen:
                continue
            self._seen.add(nb.key)
            items.append(Proposal("explore", nb, speculative=spec))

    # ------------------------------------------------------------------ decisions
    def _observe_confirmations(
        self,
        proposals: list[Proposal],
        res: list[list[float] | None],
        controls: list[int],
        nearest_control: Callable[[int], list[float]],
        prior: SlotNoise | None,
    ) -> tuple[_Challenger, Comparison, list[float]] | None:
        """Test every confirmation; return the best confirmed challenger, if any."""
        index: dict[Hashable, list[int]] = {}
        for i, p in enumerate(proposals):
            if p.role == "confirm":
                index.setdefault(p.neighbour.key, []).append(i)
        pending, self._challengers = self._challengers, []
        if not index:
            self._challengers = pending  # none was in this batch (a failed control batch)
            return None
        alpha = self._pvalue / len(index)  # Bonferroni over the confirmations of this batch
        if self._reconfirm:
            # two looks at most: under the null the second comes after a first look that failed
            # with the ratio below 1 (about half of them), so 1.5 looks on average
            alpha /= _RECONFIRM_SPLIT
        best: tuple[_Challenger, Comparison, list[float]] | None = None
        again: list[_Challenger] = []
        for ch in pending:
            slots = [i for i in index.get(ch.neighbour.key, []) if res[i]]
            if ch.neighbour.key not in index:
                continue
            if not slots:
                self._emit("reject", ch.neighbour.coordinate, message="failed when re-measured")
                continue
            # every slot of the challenger, each against its own nearest controls
            r = [x for i in slots for x in ran(res, i)]
            control = [x for i in slots for x in nearest_control(i)]
            cmp = slot_comparison(slots, controls, res, prior=prior) or self._fallback(
                slots, controls, res, r, control
            )
            if not cmp.testable:  # too few repeats: pool both batches
                cmp = compare(ch.samples + r, ch.control + control)
            if not cmp.significant(alpha):
                ch.looks += 1
                if self._reconfirm and ch.looks < 2 and cmp.testable and cmp.ratio < 1.0:
                    again.append(ch)
                    self._emit(
                        "inconclusive",
                        ch.neighbour.coordinate,
                        cmp.ratio,
                        cmp.pvalue,
                        message=f"(needed p < {alpha:.3g})",
                    )
                    continue
                self._emit(
                    "reject",
                    ch.neighbour.coordinate,
                    cmp.ratio,
                    cmp.pvalue,
                    message=f"(needed p < {alpha:.3g})",
                )
                continue
            loser = None
            if best is None or cmp.ratio < best[1].ratio:
                loser, best = best, (ch, cmp, r)
            else:
                loser = (ch, cmp, r)
            if loser is not None:
                self._emit(
                    "reject",
                    loser[0].neighbour.coordinate,
                    loser[1].ratio,
                    loser[1].pvalue,
                    message="(confirmed, but another challenger was faster)",
                )
        if best is None:
            self._challengers = again  # re-measured in the next batch (dropped after a move)
        return best

    def _fallback(
        self,
        slots: list[int],
        controls: list[int],
        res: list[list[float] | None],
        samples: list[float],
        control: list[float],
    ) -> Comparison:
        """The test of the candidate at ``slots`` with too few controls for the slot-level one.

        ``samples`` and ``control`` are the candidate's samples and its nearest controls'
        (``control_samples``), pooled over its slots: the per-sample test's, without
        ``slot_unit``.
        """
        if self._slot_unit:
            return fallback_comparison(slots, controls, res)
        return compare(samples, control)

    def _after_move(
        self,
        moved: tuple[_Challenger, Comparison, list[float]],
        proposals: list[Proposal],
        res: list[list[float] | None],
    ) -> None:
        ch, cmp, samples = moved
        was_spec_of = self._spec_of
        before = self._estimates.get(self._incumbent.key, 0.0)
        self._move(ch.neighbour, cmp, ch.step)
        here = self._estimates[ch.neighbour.key] = before + math.log(cmp.ratio)
        spec_steps = dict(self._spec.steps) if was_spec_of == ch.neighbour.key else {}
        spec_around = self._spec_around if was_spec_of == ch.neighbour.key else {}
        # Speculative neighbours of the new incumbent were measured in this batch: compare them
        # with its confirmation samples, the only samples of it in this batch.
        found = []
        for prop, r in zip(proposals, res, strict=True):
            if prop.role == "explore" and prop.speculative and r is not None and spec_steps:
                c = compare(r, samples)
                self._estimates[prop.neighbour.key] = here + math.log(c.ratio)
                if c.significant(self._pvalue) or (not c.testable and c.ratio < 1.0):
                    found.append((c, prop.neighbour, r))
        found.sort(key=lambda t: t[0].ratio)
        self._around = dict(spec_around)  # _recentre adds the incumbent's unmeasured ones
        pending = []
        for c, nb, r in found[: self._max_challengers]:
            pending.append(_Challenger(nb, r, samples, c, spec_steps.get(nb.key, 1)))
            self._emit("challenger", nb.coordinate, c.ratio, c.pvalue)
        self._recentre(pending)

    def _move(self, nb: Neighbour, cmp: Comparison, step: int) -> None:
        old = self._incumbent
        if self._carry:
            self._remember_directions(old, nb)
        self._incumbent = nb
        self._step = step
        origin = old.coordinate or "start"
        ev = self._emit("move", nb.coordinate, cmp.ratio, cmp.pvalue, message=f"from {origin}")
        self.moves.append(ev)

    def _recentre(self, pending: list[_Challenger]) -> None:
        """Load the new incumbent's neighbourhood; bring back remembered faster points."""
        self._step = 1
        self._challengers = pending
        self._spec = _Queue()
        self._spec_of = None
        self._spec_around = {}
        self._queue = _Queue()
        self._fill_queue(widen=False)
        # Points measured beside an earlier incumbent that the chained estimates put below the
        # new one: re-measure them as challengers (the confirmation decides, as for any other).
        here = self._estimates.get(self._incumbent.key, 0.0)
        keys = {ch.neighbour.key for ch in self._challengers}
        for est, nb, step in sorted(self._remembered, key=lambda t: t[0]):
            if len(self._challengers) >= self._max_challengers or est >= here:
                break
            if nb.key in keys:
                continue
            ratio = math.exp(est - here)
            self._challengers.append(_Challenger(nb, [], [], Comparison(ratio, None), step))
            self._emit("challenger", nb.coordinate, ratio, None, message="remembered")
        if not self._queue.items and not self._challengers and not self._converged:
            self._fill_queue(widen=True)

    # ------------------------------------------------------------------ neighbourhoods
    def _load(self, point: Any, steps: Iterable[int]) -> _Queue:
        """The unseen neighbours of ``point`` at ``steps``, in measuring order (pop = next)."""
        fresh: dict[Hashable, Neighbour] = {}
        step_of: dict[Hashable, int] = {}
        remembered: dict[Hashable, tuple[float, Neighbour, int]] = {}
        for step in steps:
            for nb in self._neighbours(point, step):
                if nb.key in self._seen:
                    est = self._estimates.get(nb.key)
                    if est is not None and nb.key != self._incumbent.key:
                        remembered.setdefault(nb.key, (est, nb, step))
                elif nb.key not in fresh or (fresh[nb.key].jump and not nb.jump):
                    # a point listed both as a jump and as a step of ``point`` is the step
                    fresh[nb.key] = nb
                    step_of[nb.key] = step
        if point is self._incumbent.point:
            self._remembered = list(remembered.values())
            self._around.update((k, nb) for k, nb in fresh.items() if not nb.jump)
        queue = _Queue(list(fresh.values()), step_of)
        self._rng.shuffle(queue.items)
        if self._rank is not None:
            self._rerank(queue)
        if self._carry and point is self._incumbent.point:
            self._carry_directions(queue)
        return queue

    def _remember_directions(self, old: Neighbour, new: Neighbour) -> None:
        """Before moving from ``old`` to ``new``: which moves were faster or slower at ``old``.

        Only a move to a neighbour of ``old`` has a label that names the step from one to the
        other; after a jump (an offered point, a remembered challenger, a pair, a neighbour
        marked ``jump``) nothing is carried.
        """
        if new.key not in self._around:
            self._carried, self._slower = [], set()
            return
        base = self._estimates.get(old.key, 0.0)
        measured = sorted(
            (self._estimates[k], n.coordinate)
            for k, n in self._around.items()
            if k in self._estimates and k != new.key
        )
        faster = [c for est, c in measured if est < base and c != new.coordinate]
        self._carried = [new.coordinate, *dict.fromkeys(faster)]
        self._slower = {c for est, c in measured if est >= base} - set(self._carried)

    def _carry_directions(self, queue: _Queue) -> None:
        """Put the moves faster at the previous incumbent first in ``queue``, slower ones last."""
        if not queue.items or not (self._carried or self._slower):
            return
        position = {c: i for i, c in enumerate(self._carried)}
        order = list(reversed(queue.items))  # measuring order
        first = sorted(
            (nb for nb in order if nb.coordinate in position),
            key=lambda n: position[n.coordinate],
        )
        last = [nb for nb in order if nb.coordinate in self._slower]  # disjoint from position
        middle = [
            nb
            for nb in order
            if nb.coordinate not in position and nb.coordinate not in self._slower
        ]
        queue.items = list(reversed(first + middle + last))
        if first:
            self._emit(
                "carried",
                message=f"measuring {len(first)} move(s) faster at the previous incumbent first: "
                + ", ".join(nb.coordinate for nb in first[:4])
                + (", ..." if len(first) > 4 else ""),
            )

    def _rerank(self, queue: _Queue) -> None:
        if self._rank is None or not queue.items:
            return
        scores = [float(s) for s in self._rank(queue.items)]
        if len(scores) != len(queue.items):
            raise ValueError(f"rank() returned {len(scores)} scores for {len(queue.items)} points")
        for nb, s in zip(queue.items, scores, strict=True):
            self._scores[nb.key] = s
        # Stable sort of the shuffled list: ties keep the seeded random order; best last.
        queue.items.sort(key=lambda nb: self._scores[nb.key])

    def _prepare_speculation(self) -> None:
        if not self._speculate or not self._challengers:
            return
        top = self._challengers[0].neighbour
        if self._spec_of == top.key:
            return  # ranked again at the next propose()
        self._spec_of = top.key
        steps = range(1, self._max_step + 1) if self._rank is not None else (1,)
        self._spec = self._load(top.point, steps)
        self._spec_around = {nb.key: nb for nb in self._spec.items}

    def _fill_queue(self, *, widen: bool) -> None:
        """Load the unmeasured neighbours, widening (without ranking) while there are none."""
        if self._rank is not None:
            if not widen:
                self._step = 1
                self._queue = self._load(self._incumbent.point, range(1, self._max_step + 1))
                if self._queue.items:
                    return
            if not self._challengers:
                self._exhausted(f"no unmeasured neighbour up to step {self._max_step}")
            return
        if widen:
            self._step += 1
            if self._step <= self._max_step:
                self._emit("widen", message=f"no significant improvement; step -> {self._step}")
        while self._step <= self._max_step:
            queue = self._load(self._incumbent.point, (self._step,))
            if queue.items:
                self._queue = queue
                return
            self._step += 1
            if self._step <= self._max_step:
                self._emit("widen", message=f"no unvisited neighbour; step -> {self._step}")
        self._step = min(self._step, self._max_step)
        if not self._challengers:
            self._exhausted(f"no unvisited neighbour up to step {self._max_step}")

    def _exhausted(self, why: str) -> None:
        """No unmeasured neighbour is left: load pairs of the best moves once, else finish."""
        if self._combine is not None and self._incumbent.key not in self._combined:
            self._combined.add(self._incumbent.key)
            best = self._best_measured()
            fresh: dict[Hashable, Neighbour] = {}
            if len(best) >= 2:
                for pair in self._combine(self._incumbent.point, best):
                    if pair.key not in self._seen and pair.key not in fresh:
                        fresh[pair.key] = pair
            if fresh:
                self._queue = _Queue(list(fresh.values()), dict.fromkeys(fresh, 1))
                self._rng.shuffle(self._queue.items)
                self._rerank(self._queue)
                self._emit(
                    "widen",
                    message=f"{why}; trying {len(fresh)} pair(s) of the {len(best)} best moves",
                )
                return
        self._finish(why)

    def _best_measured(self) -> list[Neighbour]:
        """The incumbent's measured one-coordinate neighbours (no jumps), best first."""
        here = self._incumbent.key
        measured = [
            (self._estimates[k], nb)
            for k, nb in self._around.items()
            if k in self._estimates and k != here
        ]
        measured.sort(key=lambda t: t[0])  # stable: ties keep the loading order
        return [nb for _, nb in measured[: self._combine_best]]

    def _finish(self, why: str) -> None:
        self._converged = True
        self._queue = _Queue()
        self._spec = _Queue()
        self._challengers = []
        self._emit("converged", message=why)

    def _emit(
        self,
        kind: EventKind,
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
