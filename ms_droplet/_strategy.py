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

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.search_strategy import (
    EvolutionarySearch,
    MeasureCandidate,
    PySearchStrategy,
    SearchStrategy,
)

from ._candidates import CandidateCache, measure_candidate
from ._decisions import moves, trace_key
from ._descent import Descent, DescentEvent, Neighbour, Proposal
from ._logging import task_logger
from ._records import is_failure, samples_of

if TYPE_CHECKING:
    from tvm.s_tir import Schedule
    from tvm.s_tir.meta_schedule import TuneContext
    from tvm.s_tir.meta_schedule.cost_model import CostModel
    from tvm.s_tir.meta_schedule.database import Database, Workload
    from tvm.s_tir.meta_schedule.runner import RunnerResult

__all__ = ["DropletStrategy"]

_EVOLUTIONARY_KEYS = (
    "population_size",
    "init_measured_ratio",
    "init_min_unmeasured",
    "max_fail_count",
    "genetic_num_iters",
    "genetic_mutate_prob",
    "genetic_max_fail_count",
    "eps_greedy",
)


@dataclass
class _Run:
    """Per-tuning state: created in pre_tuning, dropped in post_tuning."""

    max_trials: int
    num_trials_per_iter: int
    database: Database
    workload: Workload
    logger: logging.Logger
    cache: CandidateCache
    evo_active: bool
    trials: int = 0
    descent: Descent | None = None
    pending: list[Proposal] | None = None
    phase: str = "explore"


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
    ) -> None:
        if isinstance(num_evolutionary_trials, bool) or not isinstance(
            num_evolutionary_trials, int
        ):
            raise TypeError(
                f"num_evolutionary_trials must be an int, got {num_evolutionary_trials!r}"
            )
        if num_evolutionary_trials < 0:
            raise ValueError(
                f"num_evolutionary_trials must be >= 0, got {num_evolutionary_trials} "
                "(0 starts the descent from the best record already in the database)"
            )
        if isinstance(pvalue, bool) or not isinstance(pvalue, int | float):
            raise TypeError(f"pvalue must be a number, got {pvalue!r}")
        if not 0.0 < pvalue <= 1.0:
            raise ValueError(f"pvalue must satisfy 0 < pvalue <= 1, got {pvalue}")
        if isinstance(max_step, bool) or not isinstance(max_step, int) or max_step < 1:
            raise ValueError(f"max_step must be an int >= 1, got {max_step!r}")
        if not isinstance(max_control_failures, int) or max_control_failures < 1:
            raise ValueError(
                f"max_control_failures must be an int >= 1, got {max_control_failures!r}"
            )
        evolutionary = dict(evolutionary or {})
        unknown = sorted(set(evolutionary) - set(_EVOLUTIONARY_KEYS))
        if unknown:
            raise TypeError(
                f"unknown EvolutionarySearch setting(s) {unknown}; "
                f"valid: {list(_EVOLUTIONARY_KEYS)}"
            )
        self.num_evolutionary_trials = num_evolutionary_trials
        self.pvalue = float(pvalue)
        self.max_step = max_step
        self.confirm = bool(confirm)
        self.max_control_failures = max_control_failures
        self.evolutionary = evolutionary
        self._context: TuneContext | None = None
        self._evo: EvolutionarySearch | None = None
        self._run: _Run | None = None

    # ------------------------------------------------------------------ settings
    def _settings(self) -> dict[str, Any]:
        return {
            "num_evolutionary_trials": self.num_evolutionary_trials,
            "pvalue": self.pvalue,
            "max_step": self.max_step,
            "confirm": self.confirm,
            "max_control_failures": self.max_control_failures,
            "evolutionary": dict(self.evolutionary),
        }

    def clone(self) -> SearchStrategy:
        """A new strategy with the same settings and no run state."""
        return DropletStrategy(**self._settings())

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
        evo_trials = min(max(self.num_evolutionary_trials - explored, 0), max_trials)
        run = _Run(
            max_trials=max_trials,
            num_trials_per_iter=num_trials_per_iter,
            database=database,
            workload=workload,
            logger=logger,
            cache=cache,
            evo_active=evo_trials > 0,
        )
        if explored:
            logger.info(
                "Droplet: %d record(s) of this workload already in the database count toward "
                "the %d exploration trials",
                explored,
                self.num_evolutionary_trials,
            )
        if run.evo_active:
            self._evo.pre_tuning(
                evo_trials, num_trials_per_iter, design_spaces, database, cost_model
            )
            logger.info("Droplet: exploring with EvolutionarySearch for %d trial(s)", evo_trials)
        self._run = run

    def post_tuning(self) -> None:
        """Finish the run: end the inner EvolutionarySearch, drop the run state."""
        run = self._require_run("post_tuning")
        if run.evo_active and self._evo is not None:
            self._evo.post_tuning()
        if run.descent is not None:
            run.logger.info(
                "Droplet: descent finished after %d trial(s) with %d move(s)",
                run.trials,
                len(run.descent.moves),
            )
        self._run = None

    def _require_run(self, method: str) -> _Run:
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
        remaining = run.max_trials - run.trials
        if remaining <= 0:
            return None
        if run.phase == "explore":
            if run.evo_active:
                assert self._evo is not None
                cands = self._evo.generate_measure_candidates()
                if cands is not None and len(cands) > 0:
                    return cands
            run.phase = "descent"
            if not self._start_descent(run):
                return None
        assert run.descent is not None
        batch_cap = min(run.num_trials_per_iter, remaining)
        proposals = run.descent.propose(batch_cap)
        if proposals is None:
            return None
        run.pending = proposals
        return [measure_candidate(p.neighbour.point) for p in proposals]

    def notify_runner_results(
        self, measure_candidates: list[MeasureCandidate], results: list[RunnerResult]
    ) -> None:
        """Take the measurements of the last batch (before MetaSchedule commits them)."""
        run = self._require_run("notify_runner_results")
        if len(measure_candidates) != len(results):
            raise ValueError(f"got {len(results)} results for {len(measure_candidates)} candidates")
        run.trials += len(measure_candidates)
        if run.pending is None:
            if run.evo_active and self._evo is not None:
                self._evo.notify_runner_results(measure_candidates, results)
            for cand in measure_candidates:
                run.cache.measured.add(trace_key(cand.sch.trace))
            return
        proposals, run.pending = run.pending, None
        if len(proposals) != len(results):
            raise ValueError(
                f"the descent proposed {len(proposals)} candidates but got {len(results)} results"
            )
        samples = []
        for prop, res in zip(proposals, results, strict=True):
            run.cache.measured.add(prop.neighbour.key)
            ok = samples_of(res.run_secs) if res.error_msg is None else None
            samples.append(ok)
        assert run.descent is not None
        run.descent.observe(samples)

    # ------------------------------------------------------------------ descent
    def _start_descent(self, run: _Run) -> bool:
        """Start the descent from the best measured record of the workload."""
        ctx = self._context
        assert ctx is not None
        start = None
        for rec in run.database.get_top_k(run.workload, 16):
            if is_failure(rec):
                continue
            sch = run.cache.replay(rec.trace)
            if sch is not None:
                start = (rec, sch)
                break
        if start is None:
            run.logger.warning(
                "Droplet: no successfully measured record of this workload to start the descent "
                "from; the task ends here"
            )
            return False
        rec, sch = start
        run.cache.add_module(sch)
        key = trace_key(sch.trace)
        run.cache.measured.add(key)
        secs = samples_of(rec.run_secs) or [float("nan")]
        run.logger.info(
            "Droplet: exploration done after %d trial(s); descent starts from the best record "
            "(%.4f ms)",
            run.trials,
            1e3 * sorted(secs)[len(secs) // 2],
        )
        max_par = int(ctx.num_threads) * 16  # MutateParallel's max_jobs_per_core default

        def neighbours(point: Schedule, step: int) -> list[Neighbour]:
            out = []
            for mv in moves(point.trace, step, max_parallel_extent=max_par):
                built = run.cache.candidate(mv.trace)
                if built is not None:
                    out.append(Neighbour(mv.label, built[1], built[0]))
            return out

        def on_event(ev: DescentEvent) -> None:
            _log_event(run.logger, ev)

        run.descent = Descent(
            Neighbour("start", sch, key),
            neighbours=neighbours,
            pvalue=self.pvalue,
            max_step=self.max_step,
            confirm=self.confirm,
            seen=run.cache.measured | run.cache.invalid,
            seed=run.cache.seed,
            max_control_failures=self.max_control_failures,
            on_event=on_event,
        )
        return True


def _log_event(logger: logging.Logger, ev: DescentEvent) -> None:
    p = "n/a" if ev.pvalue is None else f"{ev.pvalue:.3g}"
    if ev.kind == "move":
        logger.info(
            "Droplet: move along %s: %.1f%% faster than the incumbent (p=%s, step %d)",
            ev.coordinate,
            100.0 * (1.0 - (ev.ratio or 1.0)),
            p,
            ev.step,
        )
    elif ev.kind == "challenger":
        logger.info(
            "Droplet: %s looks %.1f%% faster (p=%s); re-measuring it beside the incumbent",
            ev.coordinate,
            100.0 * (1.0 - (ev.ratio or 1.0)),
            p,
        )
    elif ev.kind == "reject":
        ratio = "n/a" if ev.ratio is None else f"{ev.ratio:.3f}"
        logger.info(
            "Droplet: %s not confirmed (ratio %s, p=%s) %s", ev.coordinate, ratio, p, ev.message
        )
    elif ev.kind == "control-failed":
        logger.warning("Droplet: %s", ev.message)
    else:  # widen, converged
        logger.info("Droplet: %s: %s", ev.kind, ev.message)
