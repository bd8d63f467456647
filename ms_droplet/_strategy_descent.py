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
"""The start of a DropletStrategy descent: its first incumbent, neighbours and ranking.

The incumbent is the best successfully measured record of the workload not descended from yet;
its neighbours are the traces one coordinate away (``_decisions.moves``), replayed and
postprocessed (``_candidates``); with ``rank_neighbours`` the task's cost model orders them; with
``combine_best`` two of the incumbent's best measured moves are applied together once its
neighbourhood is exhausted.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._candidates import measure_candidate
from ._cost_model import model_warming
from ._decisions import Change, apply_change, moves, retilings, trace_key
from ._descent import Descent
from ._proposals import DescentEvent, Neighbour
from ._records import is_failure, samples_of
from ._stats import noise_prior
from ._strategy_log import log_event

if TYPE_CHECKING:
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule import TuneContext

    from ._run_state import RunState

__all__ = ["beam_records", "cost_model_scores", "scores_learned", "start_descent"]

# Retilings listed per tile decision before the cost model keeps the best ``retile`` of them.
_RETILINGS_PER_DECISION = 64


def cost_model_scores(
    cost_model: Any, ctx: TuneContext, cands: list[Any], *, min_records: int | None
) -> list[float] | None:
    """The cost model's scores of ``cands``, or None where they would be random numbers.

    A model with TVM's ``XGBModel`` warm-up (``num_warmup_samples``, ``data_size`` and
    ``booster`` attributes) predicts uniform random scores, from numpy's global generator,
    until it holds ``num_warmup_samples`` records, though its booster is trained on every
    update. From ``min_records`` records on its booster scores them (the warm-up is lowered
    for this one call); below that, or with ``min_records`` None, no scores are returned while
    the model warms up. Any other cost model is asked as it is.
    """
    if not scores_learned(cost_model, min_records=min_records):
        return None
    if not model_warming(cost_model):
        return [float(x) for x in cost_model.predict(ctx, cands)]
    warmup = cost_model.num_warmup_samples
    cost_model.num_warmup_samples = min_records
    try:
        return [float(x) for x in cost_model.predict(ctx, cands)]
    finally:
        cost_model.num_warmup_samples = warmup


def scores_learned(cost_model: Any, *, min_records: int | None) -> bool:
    """Whether :func:`cost_model_scores` gives what ``cost_model`` learned (not None)."""
    if not model_warming(cost_model):
        return True
    return (
        min_records is not None
        and cost_model.data_size >= min_records
        and cost_model.booster is not None
    )


def beam_records(run: RunState, skip: set[str], count: int) -> list[Schedule]:
    """The ``count`` fastest measured records of the workload (replayed), keys not in ``skip``."""
    out: list[Schedule] = []
    keys = set(skip)
    for rec in run.database.get_top_k(run.workload, 64):
        if len(out) >= count:
            break
        recorded = trace_key(rec.trace)
        if is_failure(rec) or recorded in keys:
            continue
        keys.add(recorded)
        sch = run.cache.replay(rec.trace)
        if sch is None:
            continue
        replayed = trace_key(sch.trace)
        if replayed != recorded and replayed in keys:
            continue  # the replay re-resolved a decision into a trace already listed
        keys.add(replayed)
        out.append(sch)
    return out


def start_descent(run: RunState, ctx: TuneContext, settings: Any) -> Descent | None:
    """A new descent from the best record not descended from yet (None: no record left).

    ``settings`` is the strategy (its descent settings: ``pvalue``, ``max_step``, ...).
    """
    start = None
    for rec in run.database.get_top_k(run.workload, 64):
        if is_failure(rec):
            continue
        if trace_key(rec.trace) in run.descended:
            continue
        sch = run.cache.replay(rec.trace)
        if sch is not None:
            start = (rec, sch)
            break
    if start is None:
        run.logger.warning(
            "Droplet: no successfully measured record of this workload left to start a "
            "descent from; the task ends here"
        )
        return None
    rec, sch = start
    run.cache.claim(sch)
    key = trace_key(sch.trace)
    run.cache.seen.add(key)
    run.descended.add(key)
    # the record's own key too: where the replay re-resolved a decision, the record would
    # otherwise start every later descent again
    run.descended.add(trace_key(rec.trace))
    run.num_descents += 1
    if run.explored_trials is None:
        run.explored_trials = run.trials
    secs = samples_of(rec.run_secs) or [float("nan")]
    run.logger.info(
        "Droplet: descent %d starts after %d trial(s) from the best record not descended "
        "from yet (%.4f ms)",
        run.num_descents,
        run.trials,
        1e3 * sorted(secs)[len(secs) // 2],
    )
    max_par = int(ctx.num_threads) * 16  # MutateParallel's max_jobs_per_core default

    rank = None
    # a beam only where the cost model ranks with what it learned, not a warm-up's ties
    beam = settings.beam if settings.rank_neighbours and run.cost_model is not None else 0
    if beam and not scores_learned(run.cost_model, min_records=settings.rank_min_records):
        run.logger.info(
            "Droplet: no beam for descent %d: the cost model is still warming up (%d record(s))",
            run.num_descents,
            run.cost_model.data_size,
        )
        beam = 0
    if settings.rank_neighbours and run.cost_model is not None:
        cost_model = run.cost_model

        def rank(nbs: list[Neighbour]) -> list[float]:
            cands = [measure_candidate(nb.point) for nb in nbs]
            scores = cost_model_scores(
                cost_model, ctx, cands, min_records=settings.rank_min_records
            )
            return [0.0] * len(nbs) if scores is None else scores

    # (the incumbent's key, the neighbour's key) -> the coordinate change between them
    changes: dict[tuple[str, str], Change] = {}

    # the incumbent's key -> the valid compute locations of its trace (probed once per point)
    locations_of: dict[str, dict[int, list[int]]] = {}

    # the step-1 neighbours of the next fastest records, built once (with ``beam``)
    beam_of: dict[str, list[Neighbour]] = {}

    def beamed(owner: str) -> list[Neighbour]:
        """The step-1 neighbours of the ``beam - 1`` fastest records after the start.

        Records an earlier descent started from or moved to are skipped: their neighbourhoods
        were measured (a converged incumbent's up to ``max_step``).
        """
        if owner not in beam_of:
            beam_of[owner] = []
            others = beam_records(run, {owner, trace_key(rec.trace), *run.descended}, beam - 1)
            for other in others:
                other_key = trace_key(other.trace)
                locations = (
                    run.cache.compute_locations(other.trace) if settings.valid_locations else None
                )
                for mv in moves(other.trace, 1, max_parallel_extent=max_par, locations=locations):
                    built = run.cache.candidate(mv.trace)
                    if built is not None and built[0] != owner:
                        beam_of[owner].append(
                            Neighbour(
                                f"beam[{other_key[:6]}]:{mv.label}", built[1], built[0], jump=True
                            )
                        )
            run.logger.info(
                "Droplet: the neighbourhood of descent %d's start also holds %d step-1 "
                "neighbour(s) of the %d next fastest record(s) (beam=%d)",
                run.num_descents,
                len(beam_of[owner]),
                len(others),
                beam,
            )
        return beam_of[owner]

    def neighbours(point: Schedule, step: int) -> list[Neighbour]:
        out = []
        owner = trace_key(point.trace)
        locations = None
        if settings.valid_locations:
            if owner not in locations_of:
                locations_of[owner] = run.cache.compute_locations(point.trace)
            locations = locations_of[owner]
        far = settings.valid_locations and step == settings.max_step
        for mv in moves(
            point.trace, step, max_parallel_extent=max_par, locations=locations, far=far
        ):
            built = run.cache.candidate(mv.trace)
            if built is not None:
                changes[(owner, built[0])] = mv.change
                out.append(Neighbour(mv.label, built[1], built[0]))
        if step == 1 and beam >= 2 and owner == key:
            # listed after the start's own step-1 moves (the seeded order of the queue); a
            # point listed both ways is a step either way (Descent keeps the step)
            out.extend(beamed(owner))
        if step == settings.max_step and settings.retile > 0 and rank is not None:
            if owner not in retiled_of:
                retiled_of[owner] = retiled(point, owner, rank)
            out.extend(retiled_of[owner])
        return out

    # the incumbent's key -> its retilings kept (computed once per point, after its step moves)
    retiled_of: dict[str, list[Neighbour]] = {}

    def retiled(point: Schedule, owner: str, rank: Any) -> list[Neighbour]:
        """The ``settings.retile`` retilings of ``point`` the cost model ranks best."""
        built = []
        seed = run.cache.seed + int(owner[:8], 16)
        for mv in retilings(point.trace, limit=_RETILINGS_PER_DECISION, seed=seed):
            cand = run.cache.candidate(mv.trace, claim=False)
            if cand is not None and (owner, cand[0]) not in changes:  # not a step move
                built.append((Neighbour(mv.label, cand[1], cand[0]), mv.change))
        if not built:
            return []
        scores = rank([nb for nb, _ in built])
        order = sorted(range(len(built)), key=lambda i: -scores[i])  # stable: ties keep order
        out = []
        for i in order[: settings.retile]:
            nb, change = built[i]
            if run.cache.claim(nb.point):
                changes[(owner, nb.key)] = change
                out.append(nb)
        return out

    def combine(point: Schedule, best: list[Neighbour]) -> list[Neighbour]:
        owner = trace_key(point.trace)
        known = [(nb, changes[(owner, nb.key)]) for nb in best if (owner, nb.key) in changes]
        out = []
        for i, (a, change_a) in enumerate(known):
            for b, change_b in known[i + 1 :]:
                if change_a.index == change_b.index:
                    continue  # the same coordinate twice is a step, not a pair
                trace = apply_change(apply_change(point.trace, change_a), change_b)
                built = run.cache.candidate(trace)
                if built is not None:
                    out.append(Neighbour(f"{a.coordinate}+{b.coordinate}", built[1], built[0]))
        return out

    def on_event(ev: DescentEvent) -> None:
        log_event(run.logger, ev)

    # a small budget (see small_budget_batch): moves without confirmation, and a control at the
    # head and in the last slot of each batch, so each neighbour is compared with the incumbent
    # interpolated between them
    control_every = None if run.small else settings.control_every
    prior = noise_prior(run.slot_noise) if settings.pool_noise and control_every else None
    if prior is not None:
        run.logger.info(
            "Droplet: slot noise of the task's %d earlier descent batches: %.2f %% (a prior of "
            "%.1f degrees of freedom for this descent's tests)",
            len(run.slot_noise),
            100.0 * math.sqrt(prior.variance),
            prior.df,
        )
    return Descent(
        Neighbour("start", sch, key),
        neighbours=neighbours,
        pvalue=settings.pvalue,
        max_step=settings.max_step,
        confirm=settings.confirm and not run.small,
        seen=run.cache.seen,
        seed=run.cache.seed + run.num_descents - 1,
        max_control_failures=settings.max_control_failures,
        on_event=on_event,
        rank=rank,
        control_every=control_every,
        max_challengers=settings.max_challengers,
        speculate=settings.speculate,
        fill=settings.speculate,
        confirm_slots=2 if control_every is not None else 1,
        combine=combine if settings.combine_best >= 2 else None,
        combine_best=max(settings.combine_best, 2),
        correct_moves=settings.correct_moves,
        carry=settings.carry_moves,
        reconfirm=settings.reconfirm,
        pool_noise=settings.pool_noise,
        noise=run.slot_noise,
        slot_unit=True,  # a runner's repeats of one slot move together
        tail_control=run.small,
    )
