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
"""The benchmark driver: every (workload, strategy, seed) run, resumable, then one re-measurement.

The protocol is the one of DESIGN.md: the strategies run on the same workload, target, builder,
runner settings and seeds; droplet gets the budget ``B`` (``N`` explored, then the descent),
plain evolutionary search ``K * B``, and TVM's own ``post_optimization`` the same ``N``
explored trials followed by its file-based Droplet for the remaining ``B - N``. When every
strategy has finished a (workload, seed), their best kernels are re-measured interleaved in one
process, with identical evaluator settings: those samples are what ``report`` compares.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import psutil
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.analysis import estimate_tir_flops

from .._database import DATABASE_FILES
from .._evaluate import measure_interleaved, numpy_matmul_timer
from .._factories import machine_info
from .._lock import WorkDirLocked, lock_work_dir
from .._picks import picked_record, write_picks
from .._records import (
    best_of,
    best_record,
    find_workload,
    first_records,
    latency,
    scheduled_module,
)
from .._strategy import DropletStrategy
from .._trial_log import TrialLog
from .._workloads import load_workload, parse_matmul
from ._config import AA_CONTROL, EVOLUTIONARY_AT_B, VARIANT_PREFIX, BenchConfig, BenchError
from ._exploration_copy import copy_exploration, exploration_to_copy
from ._layout import (
    lock_folder,
    open_run_database,
    read_trials,
    remeasure_path,
    run_dir,
    write_bench_json,
    write_json,
)
from ._post_opt import restart_trials, run_post_opt

__all__ = ["cost_model_with_warmup", "run_bench"]

logger = logging.getLogger(__name__)


def run_bench(
    out: str,
    config: BenchConfig,
    *,
    target: tvm.target.Target,
    builder: ms.builder.Builder,
    make_runner: Callable[[], ms.runner.Runner],
    open_session: Callable[[], Any] | None = None,
    command: str = "",
    progress: bool = True,
    console_level: int | None = None,
    remeasure_again: bool = False,
) -> dict[str, int]:
    """Run (or resume) a benchmark into ``out``.

    Parameters
    ----------
    out : str
        The benchmark folder (see :mod:`ms_droplet.bench._layout`).
    config : BenchConfig
        Workloads, seeds, budgets and measurement settings.
    target : Target
        The target every strategy tunes for.
    builder : Builder
        Shared by all runs (a :class:`~ms_droplet.WarmBuilder` keeps its workers across runs).
    make_runner : Callable[[], Runner]
        Makes the runner of one run.
    open_session : Callable[[], RPCSession], optional
        Opens a session on the measuring device for the re-measurement (RPC); None measures on
        this machine.
    command : str
        The command line, stamped into ``bench.json``.
    progress : bool
        Show a progress bar over the runs (on stderr).
    console_level : int, optional
        The level of MetaSchedule's console log, set before every run (MetaSchedule takes it
        from its logger's level, which its first run resets to DEBUG). None leaves it alone.
    remeasure_again : bool
        Re-measure every (workload, seed) whose runs are finished, also where a re-measurement
        of all of them exists (kept as ``seed<S>.json.bak-*``): the numbers of a new process.

    Returns
    -------
    counts : dict[str, int]
        ``{"ran": ..., "skipped": ..., "remeasured": ...}``: runs tuned (or resumed) now, runs
        found finished, and (workload, seed) pairs re-measured now.
    """
    mods = {}
    for workload in config.workloads:
        try:
            mods[workload] = load_workload(workload)
        except (ValueError, FileNotFoundError) as err:
            raise BenchError(str(err)) from None
    lock = lock_folder(out)
    try:
        strategies = write_bench_json(
            out, asdict(config), target=str(target), command=command, machine=machine_info()
        )
        return _run_jobs(
            out,
            config,
            mods,
            strategies,
            target=target,
            builder=builder,
            make_runner=make_runner,
            open_session=open_session,
            progress=progress,
            console_level=console_level,
            remeasure_again=remeasure_again,
        )
    finally:
        lock.release()


def _run_jobs(
    out: str,
    config: BenchConfig,
    mods: dict[str, tvm.IRModule],
    strategies: list[str],
    *,
    target: tvm.target.Target,
    builder: ms.builder.Builder,
    make_runner: Callable[[], ms.runner.Runner],
    open_session: Callable[[], Any] | None,
    progress: bool,
    console_level: int | None,
    remeasure_again: bool,
) -> dict[str, int]:
    """Tune every (workload, seed, strategy) of ``config`` in turn, re-measuring as they finish."""
    # Pay the one-time costs (TuneContext imports the tensor intrinsics, ~30 s here; the
    # builder starts its workers) before the first run, so no strategy's time includes them.
    import tvm.s_tir.tensor_intrin  # noqa: F401

    warm_up = getattr(builder, "warm_up", None)
    if callable(warm_up):
        warm_up()
    jobs = [
        (w, s, strategy)
        for w in config.workloads
        for s in config.seeds
        for strategy in config.strategies
    ]
    counts = {"ran": 0, "skipped": 0, "remeasured": 0}
    bar = _progress(len(jobs), progress)
    try:
        for workload, seed, strategy in jobs:
            bar.set_description(f"{workload} {strategy} seed {seed}")
            ran = _tune_run(
                out,
                workload,
                strategy,
                seed,
                config,
                mod=mods[workload],
                target=target,
                builder=builder,
                runner=make_runner(),
                console_level=console_level,
            )
            counts["ran" if ran else "skipped"] += 1
            bar.update(1)
            if strategy == config.strategies[-1]:
                bar.set_description(f"{workload} seed {seed}: re-measuring")
                counts["remeasured"] += _remeasure(
                    out,
                    workload,
                    seed,
                    config,
                    mod=mods[workload],
                    target=target,
                    open_session=open_session,
                    strategies=strategies,
                    again=remeasure_again,
                )
    finally:
        bar.close()
    return counts


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="run", disable=not enabled, dynamic_ncols=True)


def _num_records(db: ms.database.JSONDatabase) -> int:
    return len(db.get_all_tuning_records())


def _tune_run(
    out: str,
    workload: str,
    strategy: str,
    seed: int,
    config: BenchConfig,
    *,
    mod: tvm.IRModule,
    target: tvm.target.Target,
    builder: ms.builder.Builder,
    runner: ms.runner.Runner,
    console_level: int | None = None,
) -> bool:
    """Run or resume one (workload, strategy, seed); False when it had finished before."""
    work_dir = run_dir(out, workload, strategy, seed)
    result_path = os.path.join(work_dir, "result.json")
    if os.path.exists(result_path):
        return False
    # The run dir's own lock keeps `ms-droplet tune` and `db repair` out of it meanwhile.
    try:
        lock = lock_work_dir(
            work_dir,
            owner="ms-droplet bench",
            fix=f"a bench is tuning into {work_dir}; wait for it before using it",
        )
    except WorkDirLocked as err:
        raise BenchError(str(err)) from None
    with lock:
        return _tune_locked_run(
            work_dir,
            run_dir(out, workload, config.start_from(strategy) or "droplet", seed),
            workload,
            strategy,
            seed,
            config,
            mod=mod,
            target=target,
            builder=builder,
            runner=runner,
            console_level=console_level,
        )


def _tune_locked_run(
    work_dir: str,
    source_dir: str,
    workload: str,
    strategy: str,
    seed: int,
    config: BenchConfig,
    *,
    mod: tvm.IRModule,
    target: tvm.target.Target,
    builder: ms.builder.Builder,
    runner: ms.runner.Runner,
    console_level: int | None = None,
) -> bool:
    result_path = os.path.join(work_dir, "result.json")
    trials_path = os.path.join(work_dir, "trials.jsonl")
    is_droplet = strategy == "droplet" or strategy.startswith(VARIANT_PREFIX)
    settings = config.droplet_settings(strategy) if is_droplet else {}
    if strategy.startswith(VARIANT_PREFIX):
        explored = exploration_to_copy(source_dir, config, strategy, mod=mod)
        if explored is not None:
            records, trials, explore_on = explored
            if not os.path.exists(os.path.join(work_dir, DATABASE_FILES[1])):
                copy_exploration(work_dir, records, trials, mod=mod)
            if not explore_on:
                settings["num_evolutionary_trials"] = len(records)  # the descent starts at once
    prior = read_trials(trials_path)
    log = TrialLog(trials_path, wall_offset=float(prior[-1]["wall_s"]) if prior else 0.0)
    done = _num_records(open_run_database(work_dir, locked=True))
    explore_budget = (
        config.num_evolutionary_trials if strategy == "post_opt" else config.budget(strategy)
    )
    remaining = explore_budget - done
    search: Any = None
    if remaining > 0:
        if console_level is not None:
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(console_level)
        if is_droplet:
            search = DropletStrategy(**settings)
        else:
            search = "evolutionary"
        warmup = config.cost_model_warmup(strategy)
        ms.tune_tir(
            mod,
            target,
            work_dir,
            max_trials_global=remaining,
            num_trials_per_iter=config.num_trials_per_iter,
            strategy=search,
            builder=builder,
            runner=runner,
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), log],
            cost_model="xgb" if warmup is None else cost_model_with_warmup(warmup),
            seed=seed,
        )
    error = None
    explored = (
        _num_records(open_run_database(work_dir, locked=True)) if strategy == "post_opt" else None
    )
    if explored is not None and explored <= config.num_evolutionary_trials:
        # (More records mean PostOpt appended its best one: it finished before a crash.)
        # A PostOpt interrupted earlier starts over: drop the trial lines it had logged.
        restart_trials(work_dir, explored)
        error = run_post_opt(
            work_dir,
            target,
            trials=config.trials - config.num_evolutionary_trials,
            seed=seed,
            log=log,
            builder=builder,
        )
    tuning_seconds = time.perf_counter() - log.start
    summaries = [] if search is None or isinstance(search, str) else search.summaries
    if summaries:
        write_picks(work_dir, search.picks)
    trials = read_trials(trials_path)
    db = open_run_database(work_dir, locked=True)
    best = _kernel_record(work_dir, db, find_workload(db, mod))
    best_ms = None if best is None else 1e3 * (latency(best.run_secs) or 0.0)
    write_json(
        result_path,
        {
            "workload": workload,
            "strategy": strategy,
            "seed": seed,
            "budget": config.budget(strategy),
            "trials": len(trials),
            "failed_trials": sum(1 for t in trials if t.get("ms") is None),
            "database_records": _num_records(db),
            "tuning_seconds": tuning_seconds,
            "best_ms_recorded": best_ms,
            "error": error,
            # droplet's own time (neighbours, replay, ranking) and descent counts, of this
            # invocation (a resumed run reports its last part)
            **(
                {
                    "strategy_seconds": sum(x["strategy_seconds"] for x in summaries),
                    "descents": sum(x["descents"] for x in summaries),
                    "moves": sum(x["moves"] for x in summaries),
                    "final_pick_is_incumbent": summaries[-1]["final_pick_is_incumbent"],
                    "pick_is_lowest": summaries[-1]["pick_is_lowest"],
                    "final_batch": summaries[-1]["final_batch"],
                    "resumed": bool(prior),
                }
                if summaries
                else {}
            ),
        },
    )
    return True


def cost_model_with_warmup(warmup: int) -> ms.cost_model.XGBModel:
    """TVM's default cost model (as ``tune_tir`` makes it) with ``num_warmup_samples=warmup``."""
    cores = psutil.cpu_count(logical=False) or 1  # tune_tir's num_tuning_cores="physical"
    return ms.cost_model.XGBModel(
        num_warmup_samples=warmup, num_tuning_cores=cores, tree_method="auto"
    )


def _kernel_record(work_dir: str, db: ms.database.Database, wl: Any) -> Any:
    """The record of a run's kernel: droplet's pick where it made one, else the lowest record."""
    if wl is None:
        return None
    return picked_record(work_dir, wl.mod) or best_record(db, wl)


def _remeasure(
    out: str,
    workload: str,
    seed: int,
    config: BenchConfig,
    *,
    mod: tvm.IRModule,
    target: tvm.target.Target,
    open_session: Callable[[], Any] | None,
    strategies: Sequence[str],
    again: bool = False,
) -> int:
    """Re-measure every strategy's best kernel of (workload, seed), interleaved; 1 if done now.

    A stored re-measurement that covers every finished strategy is kept, unless ``again``.
    """
    path = remeasure_path(out, workload, seed)
    # Every strategy of the folder (earlier invocations may have run others) with a finished run.
    finished = [
        s
        for s in strategies
        if os.path.exists(os.path.join(run_dir(out, workload, s, seed), "result.json"))
    ]
    if any(s not in finished for s in config.strategies):
        return 0
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        covered = set(stored.get("samples", {})) | set(stored.get("missing", {}))
        if covered >= set(finished) and not again:
            return 0
        # A strategy finished since (or again): compare all of them again, in one process.
        os.replace(path, f"{path}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
    names, kernels, missing = [], [], {}
    for strategy in finished:
        db = open_run_database(run_dir(out, workload, strategy, seed))
        wl = find_workload(db, mod)
        best = _kernel_record(run_dir(out, workload, strategy, seed), db, wl)
        if best is None:
            missing[strategy] = "no successful measurement in its database"
        else:
            names.append(strategy)
            kernels.append(scheduled_module(mod, best.trace))
        if strategy == "evolutionary" and wl is not None:
            # evolutionary at droplet's budget: the best of its first B trials, in trial order
            early = best_of(
                first_records(run_dir(out, workload, strategy, seed), wl, config.trials)
            )
            if early is not None:
                names.append(EVOLUTIONARY_AT_B)
                kernels.append(scheduled_module(mod, early.trace))
        if strategy == "droplet" and best is not None:
            # the A/A control: droplet's kernel timed a second time, to show the noise floor
            names.append(AA_CONTROL)
            kernels.append(scheduled_module(mod, best.trace))
    extra: Sequence[Callable[[], Sequence[float]]] = ()
    sizes = parse_matmul(workload)
    if sizes is not None and open_session is None:
        M, N, K = sizes
        extra = [
            numpy_matmul_timer(
                M,
                N,
                K,
                number=config.number,
                repeat=config.repeat,
                min_repeat_ms=config.min_repeat_ms,
            )
        ]
    samples = measure_interleaved(
        kernels,
        target,
        rounds=config.rounds,
        number=config.number,
        repeat=config.repeat,
        min_repeat_ms=config.min_repeat_ms,
        extra_timers=extra,
        session=open_session() if open_session is not None else None,
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(
        path,
        {
            "workload": workload,
            "seed": seed,
            "flop": float(estimate_tir_flops(mod)),
            "rounds": config.rounds,
            "device": "rpc" if open_session is not None else "local",
            "samples": dict(zip([*names, *(["numpy"] if extra else [])], samples, strict=True)),
            "order": "rotating (A B C, C B A, B C A, ...)",
            "missing": missing,
        },
    )
    return 1
