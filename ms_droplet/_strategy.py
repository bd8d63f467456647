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
"""DropletStrategy: TVM's evolutionary search first, then Droplet coordinate descent."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.search_strategy import (
    EvolutionarySearch,
    MeasureCandidate,
    PySearchStrategy,
    SearchStrategy,
)

from ._candidates import CandidateCache, measure_candidate
from ._cost_model import model_warming, python_side
from ._decisions import trace_key
from ._final import final_size
from ._logging import task_logger
from ._proposals import Neighbour
from ._records import best_of, is_failure, latency, samples_of
from ._run_state import RunState, WhenConverged
from ._settings import check_settings
from ._strategy_descent import cost_model_scores, start_descent
from ._strategy_final import final_batch, pick_record, take_final
from ._strategy_log import log_final_pick, warn_if_all_timed_out

if TYPE_CHECKING:
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule import TuneContext
    from tvm.s_tir.meta_schedule.cost_model import CostModel
    from tvm.s_tir.meta_schedule.database import Database, TuningRecord
    from tvm.s_tir.meta_schedule.runner import RunnerResult

__all__ = ["DropletStrategy", "stagnation_step"]

#: The most records of the database a resumed tuning trains the cost model on.
_PRETRAIN_RECORDS = 512
#: Records before a warming ``XGBModel``'s booster picks among ``explore_pool`` candidates
#: (without ``rank_min_records``).
_POOL_MIN_RECORDS = 16
#: Times the inner EvolutionarySearch is asked for one exploration batch whose candidates
#: were measured before (each ask marks its picks as measured, so the next brings others).
_EXPLORE_ATTEMPTS = 4


@derived_object
class DropletStrategy(PySearchStrategy):
    """Evolutionary exploration for the first trials of a task, then Droplet Search.

    Parameters
    ----------
    num_evolutionary_trials : int
        Trials of each task given to TVM's ``EvolutionarySearch`` before the descent starts
        (300 in the published work). Records of the workload already in the database count
        toward it, so a resumed tuning does not explore again.
    pvalue : float
        Significance level for accepting a faster neighbour, in (0, 1].
    max_step : int
        Largest step the descent widens to when no neighbour is better.
    confirm : bool
        Re-measure a winning neighbour beside the incumbent before moving to it.
    max_control_failures : int
        Consecutive batches in which the incumbent fails to run before the descent stops.
    evolutionary : dict, optional
        Keyword arguments for the inner ``EvolutionarySearch`` (``population_size``, ...).
    stagnation_trials : int, optional
        Switch to the descent before ``num_evolutionary_trials`` once the best explored latency
        has not improved by 1 % for this many trials (the switch and its reason are logged).
        None: always explore ``num_evolutionary_trials``.
    stagnation_after_warmup : bool
        Count the trials of ``stagnation_trials`` only once the task's cost model has left its
        warm-up. TVM's ``XGBModel`` predicts random scores until it holds
        ``num_warmup_samples`` (100) records, so until then ``EvolutionarySearch`` picks its
        candidates at random and a flat best says nothing about the model-guided evolution
        that follows. Off: every explored trial counts.
    rank_neighbours : bool
        Score the neighbourhood (every step up to ``max_step``) with the task's cost model and
        measure the most promising first; off, or without a cost model, neighbours are
        measured step by step in a seeded random order.
    rank_min_records : int, optional
        With ``rank_neighbours``: the records a cost model that is still warming up needs
        before it ranks. TVM's ``XGBModel`` trains on every update but predicts random scores
        until it holds ``num_warmup_samples`` (100) records, so at a small budget the ranking
        would be random (and drawn outside the tune context's seed); from this many records on
        the descent asks it for its booster's scores. Below it, or with None while the model
        warms up, the neighbours keep their seeded random order.
    control_every : int, optional
        Re-measure the incumbent in every ``control_every``-th slot of a descent batch (and
        the first two and the last), and test each candidate's slots against a line fitted to
        the batch's controls (with fewer than 4 usable controls: against the drift-corrected
        controls nearest to it); a challenger's confirmation then takes two slots, each after
        its own control. None: one control at the head of the batch, one confirmation slot.
        Where a test has fewer than 4 usable controls, each slot counts as one observation
        (the runner's repeats of one slot move together).
    max_challengers : int
        Challengers confirmed in one batch.
    speculate : bool
        Fill a confirmation batch with the top challenger's own neighbours too (and, without
        ranking, with the incumbent's next step): no round carries a confirmation alone.
    when_converged : {"explore", "stop"}
        What a task does when its descent converges with budget left: ``"explore"`` runs
        another slice of evolutionary search (seeded by the database, so by the best records)
        and descends again from the best record not yet descended from, until the budget is
        spent; ``"stop"`` ends the task, and in multi-task tuning its remaining budget goes to
        the other tasks.
    restart_trials : int, optional
        Trials of each exploration slice after a convergence (default: ``num_trials_per_iter``
        of the tuning).
    explore_share : float
        Share of every descent batch given to a running EvolutionarySearch, in [0, 1): its
        candidates are measured beside the incumbent's controls like neighbours, and one that
        is significantly faster is confirmed and jumped to. 0: descent batches hold only the
        incumbent's neighbourhood.
    explore_pool : int
        With ``explore_share``: the running EvolutionarySearch proposes this many candidates
        for each descent batch and the task's cost model keeps the share it scores best (while
        TVM's ``XGBModel`` warms up, its booster from ``rank_min_records`` records on, 16 if
        that is None: a booster trained on 32 records picks well among such diverse candidates,
        see docs/benchmarks.md); candidates it does not keep are not measured. 0 (or a pool
        no larger than the share, or no ``explore_share``): the EvolutionarySearch proposes
        just the share (its own pick).
    descent_batch : int, optional
        The most candidates of one descent batch (controls count), e.g. 12 to split a
        small budget's 24 descent trials into two batches, the second from the first's
        challenger (confirmed beside its own neighbours) or the incumbent's next neighbours.
        At least 4; a confirmation batch needs about ``2 * max_challengers + 2`` slots to
        carry neighbours beside its controls. None: ``num_trials_per_iter`` of the tuning.
    small_budget_batch : int, optional
        When a task's first descent starts with at most ``num_trials_per_iter`` trials left
        before its final batch (a small budget, e.g. 24 of 64 trials with 32 explored), its
        descents take more, smaller steps: batches of at most this many candidates (at least
        4), a control at the head and in the last slot of each, each neighbour tested against
        the incumbent interpolated between them, every slot counted as one observation, and a
        move to the fastest significantly faster neighbour at once (``confirm=False``: a
        confirmation batch would take a third of such a budget; the final batch re-measures
        the last incumbent beside the database's fastest records, the descent's start among
        them). The default 8 is what the small-budget benchmark measured (docs/benchmarks.md);
        a smaller ``descent_batch`` caps it further. None: ``descent_batch``,
        ``control_every`` and ``confirm`` apply as given at every budget; larger budgets
        always use them.
    correct_moves : bool
        Where the descent moves without a confirmation (``confirm=False``, or a small budget),
        the fastest of the batch's neighbours is picked among many tests, so each test is held
        to ``pvalue`` divided by the neighbours compared in the batch (Bonferroni). False:
        ``pvalue`` per test (more moves, more of them false; 2-3 % faster kernels on the
        small-budget pairs, inside the noise: docs/benchmarks.md).
    carry_moves : bool
        After a move, the new incumbent's neighbours are measured starting with the moves that
        were faster at the previous incumbent (the move itself repeated, then the others,
        fastest first), those that were slower there last: a pattern move, and the gains of
        other coordinates carried over. Only the order changes (with a trained cost model,
        the model re-orders them after the first batch). Experimental: measured in the
        small-budget benchmark before it becomes a default.
    reconfirm : bool
        A challenger whose confirmation is inconclusive (it measured faster than the
        incumbent's controls, but not significantly) is re-measured once more in the next
        batch instead of being rejected; each of its (at most) two confirmations is held to
        the level divided by 1.5, so a challenger that is not faster passes about as rarely as
        with one confirmation. Only where moves are confirmed (not at a small budget). In the
        plateau records 18 of 48 rejected confirmations had measured the challenger at least
        5 % faster (up to 21 %); on synthetic landscapes with drift it finds a 5-8 % gain about
        twice as often at the same false-move rate (docs/benchmarks.md). Not benchmarked on
        kernels yet. False: one confirmation decides (the behaviour before it).
    pool_noise : bool
        Where a batch has four or more usable controls (spread controls, batches of 32), test
        each candidate with the batch's slot noise (its controls' scatter around their line)
        moderated by the task's earlier descent batches' (an empirical-Bayes moderated t-test:
        the steadier the noise has been from batch to batch, the more the earlier batches
        count, at most 30 degrees of freedom): a batch of 32 alone gives three. On real A/A
        batches of this project's VMs it kept the tests calibrated and raised the power to
        see a 5 % gain at p < 0.05 from 0.91 to 0.98 (a 0.23 ms kernel) and from 0.43 to 0.50
        (a 60 us kernel), docs/benchmarks.md. False: each batch's controls alone.
    final_trials : int
        Trials kept for a final batch at the end of each task's budget (at most an eighth of
        the budget, counting the workload's records already in the database, half of the
        trials of this tuning and one batch): the last incumbent, earlier descents'
        incumbents and the database's fastest records (2 to 4 kernels, what stock TVM would
        compile among them) are re-measured in rotating rounds in one runner call, and the
        fastest on the paired per-round ratios is the task's pick (:attr:`picks`,
        :meth:`picked_database`).
        0: no final batch; the pick is the last descent's incumbent.
    combine_best : int
        When a descent has measured every neighbour of its incumbent up to ``max_step``
        without a move, it tries the pairs of the incumbent's ``combine_best`` best measured
        neighbours (two coordinates changed at once, e.g. two tile sizes that only pay
        together), ranked by the cost model, before it converges; once per incumbent (e.g. 8).
        0 (the default: no effect measured yet beyond the noise): no pairs; the descent
        converges there.
    retile : int
        With ``rank_neighbours`` and a cost model: the neighbourhood of every incumbent also
        gets the ``retile`` re-partitions of a whole tile decision (any perfect tiling of one
        loop, e.g. (1, 32, 16, 1) -> (4, 1, 64, 2), where a step moves one divisor) that the
        cost model ranks best among up to 64 per tile decision, so that a loop can jump to a
        distant tiling in one move (e.g. 16). 0 (the default): step moves only.
    beam : int
        With ``rank_neighbours`` and a cost model that scores what it learned (past TVM's
        ``XGBModel`` warm-up, or from ``rank_min_records`` records on): the neighbourhood of
        each descent's start also holds the step-1 neighbours of the ``beam - 1`` next fastest
        measured records (distinct traces, not descended from), and the cost model ranks
        them together with the start's own neighbours (up to ``max_step``): the batches
        measure whichever it scores best, and a significantly faster one is confirmed against
        the start's controls like any neighbour (a move then jumps to it: ``carry_moves``
        carries nothing after it, and ``combine_best`` pairs only the start's own steps).
        Evolution's later wins on the plateau lay 2-3 decisions from explored records ranked
        4th-10th rather than from the best (docs/benchmarks.md). While the model warms up
        (a small budget) the descent keeps the start's own neighbourhood and logs why.
        Records that were a descent's start or incumbent are skipped. 0 (the default): the
        start's own neighbourhood only.
    scout_last : bool
        With a final batch: the last descent batch before it holds no control (unless it
        confirms a challenger found earlier), only unmeasured neighbours, each measured once:
        a challenger found there could never be confirmed, and the final batch re-measures
        the fastest record beside the incumbent anyway. False: that batch is laid out like
        every other (controls spread through it).
    valid_locations : bool
        A compute location (``SampleComputeLocation``) moves along the locations the schedule
        allows, found by replay (inline, root and the loops where compute-at is valid, e.g.
        -2, -1, 3, 5, 7, 10): a step of ``s`` goes ``s`` places along that list, and at
        ``max_step`` every other valid location is a neighbour too (inline and a deep loop are
        one move apart). False: the decision index moves by the step; most indices are not
        valid locations, so from inline or root no loop is reached.
    """

    def __init__(
        self,
        *,
        num_evolutionary_trials: int = 300,
        pvalue: float = 0.05,
        max_step: int = 3,
        confirm: bool = True,
        max_control_failures: int = 3,
        evolutionary: dict[str, Any] | None = None,
        stagnation_trials: int | None = 64,
        stagnation_after_warmup: bool = False,
        rank_neighbours: bool = True,
        rank_min_records: int | None = None,
        control_every: int | None = 8,
        max_challengers: int = 2,
        speculate: bool = True,
        when_converged: WhenConverged = "explore",
        restart_trials: int | None = None,
        explore_share: float = 0.0,
        explore_pool: int = 0,
        descent_batch: int | None = None,
        small_budget_batch: int | None = 8,
        correct_moves: bool = True,
        carry_moves: bool = False,
        reconfirm: bool = True,
        pool_noise: bool = True,
        final_trials: int = 16,
        combine_best: int = 0,
        retile: int = 0,
        beam: int = 0,
        scout_last: bool = True,
        valid_locations: bool = True,
    ) -> None:
        check_settings(
            num_evolutionary_trials=num_evolutionary_trials,
            pvalue=pvalue,
            max_step=max_step,
            max_control_failures=max_control_failures,
            stagnation_trials=stagnation_trials,
            rank_min_records=rank_min_records,
            control_every=control_every,
            max_challengers=max_challengers,
            restart_trials=restart_trials,
            final_trials=final_trials,
            combine_best=combine_best,
            retile=retile,
            beam=beam,
            explore_share=explore_share,
            explore_pool=explore_pool,
            descent_batch=descent_batch,
            small_budget_batch=small_budget_batch,
            when_converged=when_converged,
            evolutionary=evolutionary,
            flags={
                "confirm": confirm,
                "stagnation_after_warmup": stagnation_after_warmup,
                "rank_neighbours": rank_neighbours,
                "speculate": speculate,
                "scout_last": scout_last,
                "correct_moves": correct_moves,
                "carry_moves": carry_moves,
                "reconfirm": reconfirm,
                "pool_noise": pool_noise,
                "valid_locations": valid_locations,
            },
        )
        evolutionary = dict(evolutionary or {})
        self.num_evolutionary_trials = num_evolutionary_trials
        self.pvalue = float(pvalue)
        self.max_step = max_step
        self.confirm = confirm
        self.max_control_failures = max_control_failures
        self.evolutionary = evolutionary
        self.stagnation_trials = stagnation_trials
        self.stagnation_after_warmup = stagnation_after_warmup
        self.rank_neighbours = rank_neighbours
        self.rank_min_records = rank_min_records
        self.control_every = control_every
        self.max_challengers = max_challengers
        self.speculate = speculate
        self.when_converged: WhenConverged = when_converged
        self.restart_trials = restart_trials
        self.explore_share = float(explore_share)
        self.explore_pool = explore_pool
        self.descent_batch = descent_batch
        self.small_budget_batch = small_budget_batch
        self.correct_moves = correct_moves
        self.carry_moves = carry_moves
        self.reconfirm = reconfirm
        self.pool_noise = pool_noise
        self.final_trials = final_trials
        self.combine_best = combine_best
        self.retile = retile
        self.beam = beam
        self.scout_last = scout_last
        self.valid_locations = valid_locations
        self._context: TuneContext | None = None
        self._evo: EvolutionarySearch | None = None
        self._run: RunState | None = None
        # Shared with every clone (tune_tir and tune_tasks tune a clone of the strategy).
        self._summaries: list[dict[str, Any]] = []
        self._picks: dict[str, TuningRecord] = {}

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """What each finished task did, in the order the tasks finished.

        Filled by this strategy and by every clone of it (MetaSchedule tunes clones), one dict
        per ``post_tuning``: ``task``, ``trials``, ``descents``, ``explored_trials`` (the
        task's trials measured before its first descent started, the adaptive switch's point;
        None without a descent), ``moves``,
        ``strategy_seconds`` (the strategy's own time: neighbours, replay, cost-model
        ranking), ``side_trials`` (exploration candidates measured in descent batches, with
        ``explore_share``), ``final_pick_is_incumbent`` (whether the record stock TVM
        compiles, the lowest mean, is the last descent's incumbent; None without a descent),
        ``pick_is_lowest`` (whether the task's pick is that record; None without a pick) and
        ``final_batch`` (whether a final batch chose the pick).
        """
        return list(self._summaries)

    @property
    def picks(self) -> list[TuningRecord]:
        """The record of each task's pick, the kernel this strategy believes fastest.

        One per workload (the latest tuning of it), filled by this strategy and every clone in
        ``post_tuning``: the winner of the task's final batch, or without one the last descent's
        incumbent. Its ``run_secs`` are the pick's samples in the final batch (else those of its
        record with the median latency). Stock TVM compiles the record with the lowest mean
        instead, which is often a neighbour measured once: compile with :meth:`picked_database`.
        """
        return list(self._picks.values())

    def picked_database(self, database: Database) -> Database:
        """``database`` with this strategy's picks in front, for ``compile_tir`` and relax.

        Returns an ``OrderedUnionDatabase`` that answers a query with the pick of the workload
        when there is one, else with ``database``'s best record (TVM's rule, the lowest mean).
        """
        from tvm.s_tir.meta_schedule.database import MemoryDatabase, OrderedUnionDatabase
        from tvm.s_tir.meta_schedule.database import TuningRecord as _Record

        picks = MemoryDatabase()
        for rec in self._picks.values():
            workload = picks.commit_workload(rec.workload.mod)
            picks.commit_tuning_record(
                _Record(rec.trace, workload, rec.run_secs, rec.target, rec.args_info)
            )
        return OrderedUnionDatabase(picks, database)

    # ------------------------------------------------------------------ settings
    def _settings(self) -> dict[str, Any]:
        return {
            "num_evolutionary_trials": self.num_evolutionary_trials,
            "pvalue": self.pvalue,
            "max_step": self.max_step,
            "confirm": self.confirm,
            "max_control_failures": self.max_control_failures,
            "evolutionary": dict(self.evolutionary),
            "stagnation_trials": self.stagnation_trials,
            "stagnation_after_warmup": self.stagnation_after_warmup,
            "rank_neighbours": self.rank_neighbours,
            "rank_min_records": self.rank_min_records,
            "control_every": self.control_every,
            "max_challengers": self.max_challengers,
            "speculate": self.speculate,
            "when_converged": self.when_converged,
            "restart_trials": self.restart_trials,
            "explore_share": self.explore_share,
            "explore_pool": self.explore_pool,
            "descent_batch": self.descent_batch,
            "small_budget_batch": self.small_budget_batch,
            "correct_moves": self.correct_moves,
            "carry_moves": self.carry_moves,
            "reconfirm": self.reconfirm,
            "pool_noise": self.pool_noise,
            "final_trials": self.final_trials,
            "combine_best": self.combine_best,
            "retile": self.retile,
            "beam": self.beam,
            "scout_last": self.scout_last,
            "valid_locations": self.valid_locations,
        }

    def clone(self) -> SearchStrategy:
        """A new strategy with the same settings and no run state (summaries are shared)."""
        twin = DropletStrategy(**self._settings())
        twin._summaries = self._summaries
        twin._picks = self._picks
        return twin

    # ------------------------------------------------------------------ lifecycle
    def _initialize_with_tune_context(self, context: TuneContext) -> None:
        self._context = context
        self._evo = EvolutionarySearch(**self.evolutionary)
        self._evo._initialize_with_tune_context(context)

    def pre_tuning(
        self,
        max_trials: int,
        num_trials_per_iter: int,
        design_spaces: list[Schedule],
        database: Database | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        """Prepare a tuning run: count what the database already has, start exploring."""
        if self._context is None or self._evo is None:
            raise RuntimeError(
                "DropletStrategy is not initialized with a TuneContext: pass it as the "
                "search_strategy of a TuneContext (or to tune_tir / tune_tasks)"
            )
        if self._run is not None:
            raise RuntimeError("pre_tuning is already invoked without corresponding post_tuning")
        if database is None:
            raise ValueError(
                "DropletStrategy needs a Database (it remembers measured candidates there); "
                "please use MemoryDatabase if you do not want files"
            )
        ctx = self._context
        logger = task_logger(str(ctx.task_name))
        seed = int(ctx.rand_state) if int(ctx.rand_state) > 0 else 1
        cache = CandidateCache(ctx.mod, list(ctx.space_generator.postprocs), seed)
        workload = database.commit_workload(ctx.mod)
        records = cache.load(database, workload)
        explored = len(records)
        # the final batch: at most an eighth of the task's budget (records already in the
        # database count: a resumed tuning's budget is what it had), half of this call's
        contenders, rounds = final_size(
            min(
                self.final_trials,
                (explored + max_trials) // 8,
                max_trials // 2,
                num_trials_per_iter,
            )
        )
        reserve = contenders * rounds
        evo_trials = min(max(self.num_evolutionary_trials - explored, 0), max_trials - reserve)
        run = RunState(
            max_trials=max_trials,
            num_trials_per_iter=num_trials_per_iter,
            database=database,
            workload=workload,
            logger=logger,
            cache=cache,
            design_spaces=list(design_spaces),
            # its Python object, so that its warm-up can be read (see _cost_model)
            cost_model=python_side(cost_model),
            reserve=reserve,
        )
        if explored:
            logger.info(
                "Droplet: %d record(s) of this workload already in the database count toward "
                "the %d exploration trials",
                explored,
                self.num_evolutionary_trials,
            )
        # a resumed exploration counts its stagnation from the database's best, not its own
        best = best_of(records)
        if best is not None:
            run.best_secs = latency(best.run_secs)
        self._run = run
        if explored and cost_model is not None:
            self._train_on_records(run, records)
        if evo_trials > 0:
            self._start_exploring(run, evo_trials, adaptive=True)

    def _train_on_records(self, run: RunState, records: list) -> None:
        """Train the task's cost model on records already in the database (a resumed tuning).

        MetaSchedule trains the model only on the batches it measures, so a tuning that starts
        from a filled database would rank its first neighbours with an untrained model. Up to
        ``_PRETRAIN_RECORDS`` successful records are replayed and given to it.
        """
        from tvm.s_tir.meta_schedule.runner import RunnerResult

        assert self._context is not None and run.cost_model is not None
        begin = time.perf_counter()
        cands, results = [], []
        for rec in [r for r in records if not is_failure(r)][:_PRETRAIN_RECORDS]:
            sch = run.cache.replay(rec.trace)
            if sch is not None:
                cands.append(measure_candidate(sch))
                results.append(RunnerResult(run_secs=rec.run_secs, error_msg=None))
        if cands:
            run.cost_model.update(self._context, cands, results)
            warmup = getattr(run.cost_model, "num_warmup_samples", None)
            state = ""
            if model_warming(run.cost_model):
                state = f"; it scores at random until it holds {warmup} records (its warm-up)"
            elif warmup is not None:
                state = f"; past its warm-up ({warmup} records), it scores with what it learned"
            run.logger.info(
                "Droplet: the cost model is trained on %d record(s) of the database%s",
                len(cands),
                state,
            )
        run.own_seconds += time.perf_counter() - begin

    def post_tuning(self) -> None:
        """Finish the run: end the inner EvolutionarySearch, drop the run state."""
        run = self._require_run("post_tuning")
        pick_is_incumbent = pick_is_lowest = None
        try:
            self._stop_exploring(run)
            self._stop_side_exploration(run)
            lowest = run.database.get_top_k(run.workload, 1)  # what stock compile_tir takes
            # the last descent's incumbent (one that converged before an exploration slice
            # that the budget ended is among the past incumbents)
            last = run.descent.incumbent if run.descent is not None else None
            if last is None and run.past_incumbents:
                last = run.past_incumbents[-1]
            if last is not None:
                pick_is_incumbent = log_final_pick(run, last.key, lowest)
            assert self._context is not None
            record, pick_is_lowest = pick_record(run, self._context.target, lowest)
            if record is not None:
                self._picks[str(tvm_ffi.structural_hash(run.workload.mod))] = record
        except Exception:  # a log line or a pick must never fail a tuning
            run.logger.exception("Droplet: could not record the task's pick")
        finally:
            self._run = None
        self._summaries.append(
            {
                "task": str(self._context.task_name) if self._context is not None else "",
                "trials": run.trials,
                "descents": run.num_descents,
                "explored_trials": run.explored_trials,
                "moves": run.num_moves,
                "strategy_seconds": run.own_seconds,
                "side_trials": run.side_trials,
                "final_pick_is_incumbent": pick_is_incumbent,
                "pick_is_lowest": pick_is_lowest,
                "final_batch": run.pick is not None,
            }
        )
        if run.num_descents:
            run.logger.info(
                "Droplet: finished after %d trial(s): %d descent(s), %d move(s); the strategy's "
                "own time (neighbours, replay, ranking) %.1f s",
                run.trials,
                run.num_descents,
                run.num_moves,
                run.own_seconds,
            )

    def _require_run(self, method: str) -> RunState:
        if self._run is None:
            raise RuntimeError(f"{method} is invoked before pre_tuning (or after post_tuning)")
        return self._run

    # ------------------------------------------------------------------ search
    def generate_measure_candidates(self) -> list[MeasureCandidate] | None:
        """The next batch: evolutionary candidates first, then the descent's; None when done."""
        run = self._require_run("generate_measure_candidates")
        if run.pending is not None:
            raise RuntimeError(
                "generate_measure_candidates is invoked twice without notify_runner_results"
            )
        try:
            return self._generate(run)
        except Exception:  # an error of this task must not stop the others: end the task
            run.logger.exception(
                "Droplet: internal error while generating candidates; this task stops here "
                "(its records so far are kept). Please report this with the log."
            )
            run.phase = "done"
            run.pending = None
            return None

    def _generate(self, run: RunState) -> list[MeasureCandidate] | None:
        while run.phase != "done":
            remaining = run.max_trials - run.trials
            if remaining <= 0:
                return None
            if run.phase == "final":
                return final_batch(run)
            spend = remaining - run.reserve  # trials before the final batch
            if run.phase == "explore":
                cands = self._explore(run)
                if cands is not None:
                    return cands
                if spend < 2:
                    self._to_final(run)
                    continue
                run.phase = "descent"
                if run.small is None:
                    self._choose_descent_mode(run, spend)
                if not self._start_descent(run):
                    self._to_final(run)
                    continue
            assert run.descent is not None
            batch_cap = min(run.num_trials_per_iter, self._descent_cap(run) or spend, spend)
            if spend - batch_cap == 1 and batch_cap > 2:
                batch_cap -= 1  # leave two trials, not one: a batch needs a control beside it
            if batch_cap < 2:
                self._to_final(run)
                continue
            self._offer_exploration(run)
            start = time.perf_counter()
            # the last descent batch before a final batch: its challengers could never be
            # confirmed (nor, with immediate moves, descended from), so with scout_last it holds
            # neighbours only (the final batch decides)
            last = self.scout_last and run.reserve > 0 and spend - batch_cap < 2
            proposals = run.descent.propose(batch_cap, last=last)
            run.own_seconds += time.perf_counter() - start
            if proposals is not None:
                run.pending = proposals
                return [measure_candidate(p.neighbour.point) for p in proposals]
            self._stop_side_exploration(run)
            if self.when_converged == "stop":
                self._to_final(run)
                continue
            # Converged with budget left: explore a slice, then descend again.
            slice_trials = min(self.restart_trials or run.num_trials_per_iter, spend)
            run.logger.info(
                "Droplet: descent converged with %d trial(s) left; exploring %d more with "
                "EvolutionarySearch, then descending from the best record not descended from "
                "while trials are left before the final batch",
                remaining,
                slice_trials,
            )
            self._start_exploring(run, slice_trials, adaptive=False)
        return None

    def _choose_descent_mode(self, run: RunState, spend: int) -> None:
        """Decide once per task, at its first descent, whether its budget is a small one."""
        run.small = self.small_budget_batch is not None and spend <= run.num_trials_per_iter
        if run.small:
            run.logger.info(
                "Droplet: a small budget (%d trial(s) to descend, at most one batch of %d): "
                "descending in batches of %d, each with controls at the head and the last slot, "
                "moving without a "
                "confirmation batch (small_budget_batch)",
                spend,
                run.num_trials_per_iter,
                self.small_budget_batch,
            )

    def _descent_cap(self, run: RunState) -> int | None:
        """The most candidates of one descent batch (None: no cap beyond the tuning's)."""
        if run.small and self.small_budget_batch is not None:
            return min(self.small_budget_batch, self.descent_batch or self.small_budget_batch)
        return self.descent_batch

    def _to_final(self, run: RunState) -> None:
        """End the search; the final batch comes next when trials are kept for it."""
        self._stop_exploring(run)
        self._stop_side_exploration(run)
        run.phase = "final" if run.reserve > 0 else "done"

    def _offer_exploration(self, run: RunState) -> None:
        """With ``explore_share``, hand the side EvolutionarySearch's next batch to the descent."""
        run.offered = {}
        if not run.side_evo or self._evo is None or run.descent is None:
            return
        cands = self._evo.generate_measure_candidates()
        if cands is None or len(cands) == 0:
            self._stop_side_exploration(run)
            return
        cands = self._keep_best_offered(run, list(cands))
        run.offered = {trace_key(cand.sch.trace): cand for cand in cands}
        for cand in run.offered.values():
            run.cache.claim(cand.sch)
        run.descent.offer(
            Neighbour("evolutionary", cand.sch, key) for key, cand in run.offered.items()
        )

    def _keep_best_offered(self, run: RunState, cands: list[MeasureCandidate]) -> list:
        """With ``explore_pool``: the share of ``cands`` the cost model scores best."""
        share = self._side_share(run)
        if len(cands) <= share:
            return cands
        assert self._context is not None
        begin = time.perf_counter()
        min_records = self.rank_min_records or _POOL_MIN_RECORDS
        scores = cost_model_scores(run.cost_model, self._context, cands, min_records=min_records)
        run.own_seconds += time.perf_counter() - begin
        if scores is None:  # random numbers while warming up: keep EvolutionarySearch's order
            return cands[:share]
        order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
        run.logger.info(
            "Droplet: the cost model keeps %d of %d exploration candidate(s) for the batch",
            share,
            len(cands),
        )
        return [cands[i] for i in order[:share]]

    def _side_share(self, run: RunState) -> int:
        """Slots of each descent batch that go to the side exploration."""
        slots = min(run.num_trials_per_iter, self._descent_cap(run) or run.num_trials_per_iter)
        return round(self.explore_share * slots)

    def _start_side_exploration(self, run: RunState) -> None:
        share = self._side_share(run)
        if share < 1 or self._evo is None:
            return
        proposed = max(share, self.explore_pool)
        self._evo.pre_tuning(
            run.max_trials, proposed, run.design_spaces, run.database, run.cost_model
        )
        run.side_evo = True

    def _stop_side_exploration(self, run: RunState) -> None:
        run.offered = {}
        if run.side_evo and self._evo is not None:
            run.side_evo = False
            self._evo.post_tuning()

    def _explore(self, run: RunState) -> list[MeasureCandidate] | None:
        """The inner EvolutionarySearch's next batch, or None when exploration is over."""
        if not run.evo_running:
            return None
        assert self._evo is not None
        if run.evo_trials >= run.evo_budget:
            self._stop_exploring(run)
            return None
        if (
            run.adaptive
            and self.stagnation_trials is not None
            and run.since_best >= self.stagnation_trials
        ):
            run.logger.info(
                "Droplet: evolution stagnated (best %.4f ms, no 1%% gain in the last %d "
                "trials); switching to the descent after %d of %d exploration trial(s)",
                1e3 * run.best_secs,
                run.since_best,
                run.evo_trials,
                run.evo_budget,
            )
            self._stop_exploring(run)
            return None
        cands = self._unmeasured_exploration(run)
        if not cands:
            self._stop_exploring(run)
            return None
        return cands

    def _unmeasured_exploration(self, run: RunState) -> list[MeasureCandidate]:
        """The inner EvolutionarySearch's next candidates, without kernels measured before.

        Each ``pre_tuning`` of TVM's EvolutionarySearch starts with an empty set of measured
        modules, though it seeds its population with the database's best records; so an
        exploration slice after a converged descent (or a resumed tuning) proposes some of
        those records again (up to 56 % of a slice's trials on the plateau bench). They are
        dropped here, and the search is asked again (it has marked its picks as measured)
        until the batch is full, it has nothing new, or ``_EXPLORE_ATTEMPTS`` asks.
        """
        assert self._evo is not None
        want = min(run.num_trials_per_iter, run.evo_budget - run.evo_trials)
        out: list[MeasureCandidate] = []
        keys: set[str] = set()
        dropped = 0
        for _ in range(_EXPLORE_ATTEMPTS):
            cands = self._evo.generate_measure_candidates()
            if cands is None or len(cands) == 0:
                break
            again = 0
            for cand in cands:
                key = trace_key(cand.sch.trace)
                if key in run.cache.seen or key in keys or run.cache.measured_module(cand.sch):
                    again += 1
                    continue
                keys.add(key)
                out.append(cand)
            dropped += again
            if not again or len(out) >= want:
                break
        if dropped:
            run.logger.info(
                "Droplet: EvolutionarySearch proposed %d kernel(s) measured before; %d new "
                "one(s) go to this batch",
                dropped,
                min(len(out), want),
            )
        return out[:want]

    def _start_exploring(self, run: RunState, trials: int, *, adaptive: bool) -> None:
        assert self._evo is not None
        self._evo.pre_tuning(
            trials, run.num_trials_per_iter, run.design_spaces, run.database, run.cost_model
        )
        run.evo_running = True
        run.evo_budget = trials
        run.evo_trials = 0
        run.adaptive = adaptive
        run.since_best = 0
        run.phase = "explore"
        if run.descent is not None:
            run.past_incumbents.append(run.descent.incumbent)
            run.slot_noise = run.descent.noise
        run.descent = None
        if adaptive:
            run.logger.info("Droplet: exploring with EvolutionarySearch for %d trial(s)", trials)

    def _stop_exploring(self, run: RunState) -> None:
        if run.evo_running and self._evo is not None:
            run.evo_running = False
            self._evo.post_tuning()

    def notify_runner_results(
        self, measure_candidates: list[MeasureCandidate], results: list[RunnerResult]
    ) -> None:
        """Take the measurements of the last batch (before MetaSchedule commits them)."""
        run = self._require_run("notify_runner_results")
        if len(measure_candidates) != len(results):
            raise ValueError(f"got {len(results)} results for {len(measure_candidates)} candidates")
        run.trials += len(measure_candidates)
        warn_if_all_timed_out(run.logger, results)
        try:
            self._notify(run, measure_candidates, results)
        except Exception:  # never lose the batch TVM is about to commit, never stop other tasks
            run.logger.exception(
                "Droplet: internal error while reading a batch's results; this task stops "
                "here (the batch is still saved to the database). Please report this with the log."
            )
            run.phase = "done"
            run.pending = None

    def _notify(
        self, run: RunState, measure_candidates: list[MeasureCandidate], results: list[RunnerResult]
    ) -> None:
        if run.final is not None:
            take_final(run, results)
            return
        if run.pending is None:
            if run.evo_running and self._evo is not None:
                self._evo.notify_runner_results(measure_candidates, results)
                run.evo_trials += len(measure_candidates)
            for cand in measure_candidates:
                run.cache.seen.add(trace_key(cand.sch.trace))
                run.cache.claim(cand.sch)  # its module: a descent never measures it again
            self._track_best(run, results)
            if self.stagnation_after_warmup and model_warming(run.cost_model):
                run.since_best = 0  # random picks so far: nothing to call stagnation yet
            return
        proposals, run.pending = run.pending, None
        if len(proposals) != len(results):
            raise ValueError(
                f"the descent proposed {len(proposals)} candidates but got {len(results)} results"
            )
        samples = []
        for prop, res in zip(proposals, results, strict=True):
            run.cache.seen.add(prop.neighbour.key)
            ok = samples_of(res.run_secs) if res.error_msg is None else None
            samples.append(ok)
        if run.offered and self._evo is not None:
            # The side EvolutionarySearch only counts its results: give it those of its own
            # candidates that the descent measured.
            mine = [
                (run.offered[p.neighbour.key], res)
                for p, res in zip(proposals, results, strict=True)
                if p.role == "explore" and p.neighbour.key in run.offered
            ]
            run.offered = {}
            if mine:
                self._evo.notify_runner_results([c for c, _ in mine], [r for _, r in mine])
                run.side_trials += len(mine)
        assert run.descent is not None
        start = time.perf_counter()
        moves_before = len(run.descent.moves)
        run.descent.observe(samples)
        run.own_seconds += time.perf_counter() - start
        run.num_moves += len(run.descent.moves) - moves_before
        run.descended.add(str(run.descent.incumbent.key))

    @staticmethod
    def _track_best(run: RunState, results: list[RunnerResult]) -> None:
        """Count explored trials since the best mean latency last improved by 1 %."""
        for res in results:
            secs = samples_of(res.run_secs) if res.error_msg is None else None
            mean = sum(secs) / len(secs) if secs else math.inf
            run.best_secs, run.since_best = stagnation_step(run.best_secs, run.since_best, mean)

    # ------------------------------------------------------------------ descent
    def _start_descent(self, run: RunState) -> bool:
        """Start a descent from the best measured record not descended from yet."""
        assert self._context is not None
        begin = time.perf_counter()
        run.descent = start_descent(run, self._context, self)
        run.own_seconds += time.perf_counter() - begin
        if run.descent is None:
            return False
        if self.explore_share > 0.0:
            self._start_side_exploration(run)
        return True


def stagnation_step(best: float, since: int, mean: float) -> tuple[float, int]:
    """The adaptive switch's count after one more explored trial of mean latency ``mean``.

    Returns the new best mean latency and the trials since it last improved by 1 % (a failed
    trial is ``math.inf`` and counts as no improvement). The exploration switches to the descent
    before a batch once that count reaches ``stagnation_trials``.
    """
    if mean < 0.99 * best:
        return mean, 0
    return min(best, mean), since + 1
