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
"""One tuning run with a record of every trial, and the honest comparison at its end."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.analysis import estimate_tir_flops
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from ._candidates import samples_of
from ._evaluate import measure_interleaved
from ._stats import median

__all__ = ["TrialLog", "TuneReport", "run_tuning"]


@derived_object
class TrialLog(PyMeasureCallback):
    """A measure callback that keeps every trial in order: trace, median seconds, wall time.

    Parameters
    ----------
    path : str, optional
        Also append one JSON line per trial, ``{"ms": median ms or null, "wall_s": seconds}``,
        to this file as the trials arrive (what ``ms-droplet bench`` resumes and plots from).
    wall_offset : float
        Seconds added to every wall time (the time a resumed run had already spent).
    """

    def __init__(self, path: str | None = None, *, wall_offset: float = 0.0) -> None:
        super().__init__()
        self.path = path
        self.start = time.perf_counter() - wall_offset
        self.traces: list = []
        self.seconds: list[float | None] = []
        self.wall: list[float] = []
        self.build_errors = 0
        self.timeouts = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        now = time.perf_counter() - self.start
        for cand, built, res in zip(
            measure_candidates, builder_results, runner_results, strict=True
        ):
            self.traces.append(cand.sch.trace)
            secs = samples_of(res.run_secs) if res.error_msg is None else None
            self.seconds.append(None if secs is None else median(secs))
            self.wall.append(now)
            if built.error_msg is not None:
                self.build_errors += 1
                if "timeout" in str(built.error_msg).lower():
                    self.timeouts += 1
        if self.path is not None and measure_candidates:
            self.write(self.seconds[-len(measure_candidates) :], now)

    def write(self, seconds: list[float | None], wall: float) -> None:
        """Append trials to :attr:`path` (one JSON line each) and flush them to disk."""
        if self.path is None or not seconds:
            return
        lines = "".join(
            json.dumps({"ms": None if s is None else s * 1e3, "wall_s": wall}) + "\n"
            for s in seconds
        )
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def best_index(self, upto: int | None = None) -> int | None:
        """Index of the fastest recorded trial among the first ``upto``."""
        items = [(s, i) for i, s in enumerate(self.seconds[:upto]) if s is not None]
        return min(items)[1] if items else None

    def curve(self) -> list[dict[str, float]]:
        """Best-so-far latency by trial and by second."""
        out, best = [], float("inf")
        for i, (s, w) in enumerate(zip(self.seconds, self.wall, strict=True)):
            if s is not None:
                best = min(best, s)
            out.append({"trial": i + 1, "wall_s": w, "best_ms": best * 1e3})
        return out


@dataclass
class TuneReport:
    """What ``ms-droplet tune`` prints and writes to ``work_dir/report.json``."""

    workload: str
    target: str
    strategy: str
    trials: int
    build_errors: int
    build_timeouts: int
    tuning_seconds: float
    flop: float
    explore_trials: int
    explored_ms: float | None = None
    final_ms: float | None = None
    remeasured: dict[str, list[float]] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)

    def _row(self, name: str, ms_: float) -> str:
        gflops = self.flop / (ms_ * 1e-3) / 1e9
        return f"  {name:<32} {ms_:10.4f} ms   {gflops:9.2f} GFLOP/s"

    def format(self, *, wall_seconds: float) -> str:
        """Human-readable summary."""
        lines = [
            f"workload: {self.workload}   strategy: {self.strategy}   target: {self.target}",
            f"trials: {self.trials} ({self.build_errors} build errors, {self.build_timeouts} "
            f"timeouts)   tuning time: {self.tuning_seconds:.1f} s   wall time: "
            f"{wall_seconds:.1f} s",
            "best kernels re-measured interleaved (median of the rounds):",
        ]
        labels = {
            "after_exploration": f"after exploration ({self.explore_trials} trials)",
            "final": f"final ({self.trials} trials)",
        }
        for key, secs in self.remeasured.items():
            lines.append(self._row(labels.get(key, key), median(secs) * 1e3))
        if not self.remeasured:
            lines[-1] = "best kernels as recorded by the runner (not re-measured here):"
            for name, value in (
                (labels["after_exploration"], self.explored_ms),
                (labels["final"], self.final_ms),
            ):
                if value is not None:
                    lines.append(self._row(name, value))
        if len(self.remeasured) == 2:
            a, b = (median(v) for v in self.remeasured.values())
            lines.append(f"  speed-up of the final kernel over the exploration best: {a / b:.3f}x")
        return "\n".join(lines)


def _builder(kind: str | ms.builder.Builder, timeout: float):
    if not isinstance(kind, str):
        return kind, False
    if kind == "warm":
        from ._builder import WarmBuilder

        return WarmBuilder(timeout_sec=timeout), True
    if kind == "local":
        return ms.builder.LocalBuilder(timeout_sec=timeout), False
    raise ValueError(f"unknown builder {kind!r}: use 'warm' or 'local'")


def _schedule(mod: tvm.IRModule, trace) -> tvm.IRModule:
    sch = Schedule(mod)
    trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


def run_tuning(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    work_dir: str,
    *,
    trials: int,
    num_trials_per_iter: int,
    strategy: Any,
    runner: ms.runner.Runner,
    builder: Any = "warm",
    builder_timeout: float = 60.0,
    seed: int = 0,
    explore_trials: int,
    rounds: int = 10,
    number: int = 3,
    repeat: int = 3,
    min_repeat_ms: int = 100,
    workload_name: str = "",
    open_session: Callable[[], Any] | None = None,
) -> TuneReport:
    """Tune ``mod`` and re-measure the best kernel after exploration and at the end.

    Returns a :class:`TuneReport`, also written to ``work_dir/report.json``.
    ``open_session`` (e.g. ``RPCConfig.connect_server``) re-measures the kernels on a remote
    device instead of this machine.
    """
    log = TrialLog()
    built, owned = _builder(builder, builder_timeout)
    start = time.perf_counter()
    try:
        db = ms.tune_tir(
            mod,
            target,
            work_dir,
            max_trials_global=trials,
            num_trials_per_iter=num_trials_per_iter,
            strategy=strategy,
            builder=built,
            runner=runner,
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), log],
            seed=seed,
        )
    finally:
        if owned:
            built.shutdown()
    tuning_seconds = time.perf_counter() - start
    strategy_name = strategy if isinstance(strategy, str) else "droplet"
    report = TuneReport(
        workload=workload_name or str(mod.get_global_vars()[0].name_hint),
        target=str(target.attrs.get("mcpu", target.kind.name)),
        strategy=strategy_name,
        trials=len(log.traces),
        build_errors=log.build_errors,
        build_timeouts=log.timeouts,
        tuning_seconds=tuning_seconds,
        flop=float(estimate_tir_flops(mod)),
        explore_trials=min(explore_trials, len(log.traces)),
        curve=log.curve(),
    )
    explored = log.best_index(explore_trials)
    final_rec = db.query_tuning_record(_normalize_mod(mod), target, "main")
    kernels: dict[str, tvm.IRModule] = {}
    if explored is not None:
        report.explored_ms = (log.seconds[explored] or 0.0) * 1e3
        kernels["after_exploration"] = _schedule(mod, log.traces[explored])
    if final_rec is not None:
        secs = samples_of(final_rec.run_secs)
        report.final_ms = None if secs is None else median(secs) * 1e3
        kernels["final"] = _schedule(mod, final_rec.trace)
    if kernels:
        samples = measure_interleaved(
            list(kernels.values()),
            target,
            rounds=rounds,
            number=number,
            repeat=repeat,
            min_repeat_ms=min_repeat_ms,
            session=None if open_session is None else open_session(),
        )
        report.remeasured = dict(zip(kernels, samples, strict=True))
    with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(asdict(report), f, indent=1)
    return report
