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

import contextlib
import json
import logging
import math
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.analysis import estimate_tir_flops
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from .._candidates import samples_of
from .._database import check_database, repair_database
from .._evaluate import measure_interleaved, numpy_matmul_timer
from .._report import TrialLog, _schedule
from .._stats import median
from .._strategy import DropletStrategy
from .._version import __version__
from .._workloads import _MATMUL, load_workload
from ._layout import STRATEGIES, read_trials, remeasure_path, run_dir

__all__ = ["BenchConfig", "BenchError", "run_bench"]

logger = logging.getLogger(__name__)

# Settings that must not change when a benchmark folder is resumed or extended.
_FIXED = (
    "trials",
    "ratio",
    "num_evolutionary_trials",
    "num_trials_per_iter",
    "pvalue",
    "number",
    "repeat",
    "min_repeat_ms",
    "rounds",
)


class BenchError(ValueError):
    """A benchmark that cannot run as asked (bad settings, a folder of another benchmark)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run.

    Attributes
    ----------
    workloads : tuple[str, ...]
        Workload specs.
    seeds : tuple[int, ...]
        Tuning seeds; every strategy runs once per seed.
    trials : int
        ``B``: droplet's total budget per workload (and post_opt's).
    ratio : int
        ``K``: evolutionary search gets ``K * B`` trials.
    num_evolutionary_trials : int
        ``N``: trials explored by droplet (and post_opt) before the descent, ``N < B``.
    strategies : tuple[str, ...]
        A subset of ``("droplet", "evolutionary", "post_opt")``.
    num_trials_per_iter, pvalue, number, repeat, min_repeat_ms, rounds
        Task scheduler batch, droplet's significance level, runner settings (also used by the
        re-measurement) and the rounds of the interleaved re-measurement.
    """

    workloads: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    ratio: int = 5
    num_evolutionary_trials: int = 32
    strategies: tuple[str, ...] = STRATEGIES
    num_trials_per_iter: int = 32
    pvalue: float = 0.05
    number: int = 3
    repeat: int = 3
    min_repeat_ms: int = 100
    rounds: int = 10

    def __post_init__(self) -> None:
        if not self.workloads:
            raise BenchError("no workloads: give --suite or --workload")
        if not self.seeds:
            raise BenchError("no seeds: give --seeds, e.g. --seeds 0 1 2")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise BenchError(f"unknown strategies {unknown}: choose from {list(STRATEGIES)}")
        if self.trials < 1 or self.ratio < 1 or self.rounds < 1:
            raise BenchError("trials, ratio and rounds must be >= 1")
        if not 1 <= self.num_evolutionary_trials < self.trials:
            raise BenchError(
                f"num_evolutionary_trials ({self.num_evolutionary_trials}) must be >= 1 "
                f"and below the budget --trials ({self.trials}), or nothing is left for the "
                "descent"
            )

    def budget(self, strategy: str) -> int:
        """Total trials of a strategy on one workload."""
        return self.trials * self.ratio if strategy == "evolutionary" else self.trials


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
    lock = _lock(out)
    try:
        strategies = _write_bench_json(out, config, target, command)
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
        )
    finally:
        lock.close()


def _lock(out: str):
    """Hold ``out/.lock`` so that two benches never tune into the same folder at once."""
    import fcntl

    os.makedirs(out, exist_ok=True)
    f = open(os.path.join(out, ".lock"), "a", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise BenchError(
            f"another `ms-droplet bench` is running into {out}; wait for it or use another --out"
        ) from None
    return f


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
                )
    finally:
        bar.close()
    return counts


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="run", disable=not enabled, dynamic_ncols=True)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_bench_json(
    out: str, config: BenchConfig, target: tvm.target.Target, command: str
) -> None:
    path = os.path.join(out, "bench.json")
    os.makedirs(out, exist_ok=True)
    settings = asdict(config)
    target_json = str(target)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        changed = [k for k in _FIXED if stored.get(k) != settings[k]]
        if stored.get("target") != target_json:
            changed.append("target")
        if changed:
            diff = ", ".join(
                f"{k}: {stored.get(k)!r} there, {settings.get(k, target_json)!r} now"
                for k in changed
            )
            raise BenchError(
                f"{out} holds a benchmark with other settings ({diff}); resume it with the "
                "same settings or use another --out"
            )
        for key in ("workloads", "seeds", "strategies"):
            merged = list(stored.get(key, []))
            merged += [x for x in settings[key] if x not in merged]
            settings[key] = merged
        machines = list(stored.get("machines", []))
        commands = list(stored.get("commands", []))
        if command and (not commands or commands[-1] != command):
            commands.append(command)
        created = stored.get("created")
    else:
        commands, created = [command] if command else [], time.strftime("%Y-%m-%dT%H:%M:%S%z")
        machines = []
    machine = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "tvm_version": tvm.__version__,
        "ms_droplet_version": __version__,
    }
    if machine not in machines:
        machines.append(machine)
    data = {
        **settings,
        "target": target_json,
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "tvm_version": tvm.__version__,
        "ms_droplet_version": __version__,
        "python": platform.python_version(),
        "created": created,
        "commands": commands,
        "machines": machines,
    }
    _write_json(path, data)
    return list(settings["strategies"])


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _open_database(work_dir: str) -> ms.database.JSONDatabase:
    problems = check_database(work_dir)
    if problems:
        # A run killed mid-write leaves a truncated last line: drop it (a backup is kept).
        # Broken lines elsewhere make repair_database raise, and nothing is changed.
        for backup in repair_database(work_dir):
            logger.warning("dropped a truncated database line; the original is %s", backup)
    return ms.database.JSONDatabase(work_dir=work_dir)


def _best(db: ms.database.JSONDatabase, mod: tvm.IRModule, target: tvm.target.Target):
    """The fastest record of the workload that measured (failed records, 1e10 s, never count)."""
    mod = _normalize_mod(mod)
    if not db.has_workload(mod):
        return None
    for rec in db.get_top_k(db.commit_workload(mod), 1 << 30):
        if samples_of(rec.run_secs) is not None:
            return rec
    return None


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
    os.makedirs(work_dir, exist_ok=True)
    trials_path = os.path.join(work_dir, "trials.jsonl")
    prior = read_trials(trials_path)
    log = TrialLog(trials_path, wall_offset=float(prior[-1]["wall_s"]) if prior else 0.0)
    done = _num_records(_open_database(work_dir))
    explore_budget = (
        config.num_evolutionary_trials if strategy == "post_opt" else config.budget(strategy)
    )
    remaining = explore_budget - done
    if remaining > 0:
        if console_level is not None:
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(console_level)
        if strategy == "droplet":
            search: Any = DropletStrategy(
                num_evolutionary_trials=config.num_evolutionary_trials, pvalue=config.pvalue
            )
        else:
            search = "evolutionary"
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
            seed=seed,
        )
    error = None
    explored = _num_records(_open_database(work_dir)) if strategy == "post_opt" else None
    if explored is not None and explored <= config.num_evolutionary_trials:
        # (More records mean PostOpt appended its best one: it finished before a crash.)
        # A PostOpt interrupted earlier starts over: drop the trial lines it had logged.
        trials = read_trials(trials_path)
        if len(trials) > explored:
            with open(
                os.path.join(work_dir, "trials.interrupted.jsonl"), "a", encoding="utf-8"
            ) as f:
                f.write("".join(json.dumps(t) + "\n" for t in trials[explored:]))
            with open(f"{trials_path}.tmp", "w", encoding="utf-8") as f:
                f.write("".join(json.dumps(t) + "\n" for t in trials[:explored]))
            os.replace(f"{trials_path}.tmp", trials_path)
        error = _tvm_post_opt(
            work_dir,
            target,
            trials=config.trials - config.num_evolutionary_trials,
            seed=seed,
            log=log,
        )
    tuning_seconds = time.perf_counter() - log.start
    trials = read_trials(trials_path)
    db = _open_database(work_dir)
    best = _best(db, mod, target)
    secs = None if best is None else samples_of(best.run_secs)
    best_ms = None if secs is None else 1e3 * median(secs)
    _write_json(
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
        },
    )
    return True


def _tvm_post_opt(
    work_dir: str, target: tvm.target.Target, *, trials: int, seed: int, log: TrialLog
) -> str | None:
    """TVM's own file-based Droplet (``tune_tir(..., post_optimization=True)``) on the records.

    Its ``Space.run`` is wrapped to log every candidate it measures (it keeps them in a
    temporary file it deletes); its prints go to ``work_dir/post_opt.log``. Returns the error
    it raised, if any (the run then keeps the exploration's best kernel).
    """
    from tvm.s_tir.meta_schedule.post_optimization import PostOpt
    from tvm.s_tir.meta_schedule.post_optimization import space as post_opt_space

    original = post_opt_space.Space.run

    def logged_run(self, json_file_list, final_log, *args, **kwargs):
        results = original(self, json_file_list, final_log, *args, **kwargs)
        seconds = []
        for res in results:
            values = [float(x) for x in (res if isinstance(res, list | tuple) else [res])]
            mean = sum(values) / len(values) if values else math.inf
            # Space.run marks candidates that failed to apply with 10000, to run with 1e10.
            seconds.append(mean if mean < 1e3 else None)
        log.write(seconds, time.perf_counter() - log.start)
        return results

    post_opt_space.Space.run = logged_run
    error, state = None, None
    try:
        state = random.getstate()
        random.seed(seed)  # Space.run draws from the global generator
        with open(os.path.join(work_dir, "post_opt.log"), "a", encoding="utf-8") as f:
            with contextlib.redirect_stdout(f):
                PostOpt(work_dir, target, trials=trials).run()
    except Exception as err:  # the baseline's own failures are results, not crashes
        error = f"{type(err).__name__}: {err}"
        logger.warning("TVM post_optimization failed in %s: %s", work_dir, error)
    finally:
        post_opt_space.Space.run = original
        if state is not None:
            random.setstate(state)
    return error


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
) -> int:
    """Re-measure every strategy's best kernel of (workload, seed), interleaved; 1 if done now."""
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
        if set(stored.get("samples", {})) | set(stored.get("missing", {})) >= set(finished):
            return 0
        # A strategy finished since: compare all of them again, in one process.
        os.replace(path, f"{path}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
    names, kernels, missing = [], [], {}
    for strategy in finished:
        best = _best(_open_database(run_dir(out, workload, strategy, seed)), mod, target)
        if best is None:
            missing[strategy] = "no successful measurement in its database"
        else:
            names.append(strategy)
            kernels.append(_schedule(mod, best.trace))
    extra: Sequence[Callable[[], Sequence[float]]] = ()
    m = _MATMUL.match(workload)
    if m and open_session is None:
        M, N, K = (int(x) for x in m.groups())
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
    _write_json(
        path,
        {
            "workload": workload,
            "seed": seed,
            "flop": float(estimate_tir_flops(mod)),
            "rounds": config.rounds,
            "device": "rpc" if open_session is not None else "local",
            "samples": dict(zip([*names, *(["numpy"] if extra else [])], samples, strict=True)),
            "missing": missing,
        },
    )
    return 1
