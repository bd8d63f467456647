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
"""The tune driver behind ``ms-droplet tune``: one tuning run, then the honest comparison.

:func:`run_tuning` tunes one workload with ``tune_tir`` (recording every trial with a
:class:`~ms_droplet._trial_log.TrialLog`), then re-measures the best kernel after the exploration
and the final best record interleaved in one process; :class:`TuneReport` is what it prints and
writes to ``work_dir/report.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.analysis import estimate_tir_flops

from ._decisions import trace_key
from ._evaluate import measure_interleaved
from ._factories import make_builder
from ._files import write_json
from ._intervals import paired_ratio
from ._picks import pick_of, write_picks
from ._records import best_record, find_workload, latency, scheduled_module
from ._stats import median
from ._trial_log import TrialLog

__all__ = ["TuneReport", "run_tuning"]


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
    same_kernel: bool = False  # the final kernel is the exploration's best one
    # final / after_exploration: median and 95 % CI of the per-round ratios (rotating order)
    paired: dict[str, Any] | None = None
    # the exploration best timed twice in the same rounds: the noise floor of ``paired``
    aa: dict[str, Any] | None = None
    curve: list[dict[str, float | None]] = field(default_factory=list)

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
        if self.same_kernel:
            lines.append(
                "  the final kernel is the exploration's best (same kernel: no speed-up to report)"
            )
        elif self.paired is not None:
            ratio, (lo, hi) = self.paired["ratio"], self.paired["ci95"]
            line = (
                f"  speed-up of the final kernel over the exploration best: {1 / ratio:.3f}x "
                f"(95 % CI {1 / hi:.3f}-{1 / lo:.3f}, paired per-round ratios over "
                f"{self.paired['rounds']} rounds)"
            )
            if lo <= 1.0 <= hi:
                line += "; the interval contains 1: no difference beyond the noise"
            lines.append(line)
            if self.aa is not None:
                r, (a_lo, a_hi) = self.aa["ratio"], self.aa["ci95"]
                lines.append(
                    f"  A/A control (the exploration best timed twice): {1 / r:.3f}x (95 % CI "
                    f"{1 / a_hi:.3f}-{1 / a_lo:.3f}); a speed-up inside its spread is noise, and "
                    "between processes kernels move by several % more: compare strategies "
                    "with ms-droplet bench"
                )
        return "\n".join(lines)


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
    ``explore_trials`` is the exploration's length whose best kernel is compared with the final
    one; a droplet strategy whose exploration stagnated earlier (its adaptive switch) shortens it
    to the trials measured before its first descent.
    ``open_session`` (e.g. ``RPCConfig.connect_server``) re-measures the kernels on a remote
    device instead of this machine.
    """
    log = TrialLog()
    built, owned = make_builder(builder, builder_timeout)
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
    # where droplet's exploration stagnated early, its descent began before explore_trials:
    # the exploration's best is the best of the trials before that switch
    summaries = [] if isinstance(strategy, str) else getattr(strategy, "summaries", [])
    if summaries and summaries[-1].get("explored_trials") is not None:
        explore_trials = min(explore_trials, summaries[-1]["explored_trials"])
    picks = list(getattr(strategy, "picks", []))
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
    workload = find_workload(db, mod)
    # this run's pick (its final batch's winner, or the incumbent) where it made one, else TVM's
    # lowest record; an earlier run's pick of the workload is replaced or dropped
    pick = None if workload is None else pick_of(picks, workload.mod)
    write_picks(work_dir, [pick] if pick else [], drop=[] if workload is None else [workload.mod])
    final_rec = pick or best_record(db, workload)
    kernels: dict[str, tvm.IRModule] = {}
    if explored is not None:
        report.explored_ms = (log.seconds[explored] or 0.0) * 1e3
        kernels["after_exploration"] = scheduled_module(mod, log.traces[explored])
    if final_rec is not None:
        report.final_ms = (latency(final_rec.run_secs) or 0.0) * 1e3
        kernels["final"] = scheduled_module(mod, final_rec.trace)
        if explored is not None and trace_key(log.traces[explored]) == trace_key(final_rec.trace):
            # one kernel: timing it twice would report noise (or an order bias) as a speed-up
            report.same_kernel = True
            del kernels["after_exploration"]
    timed = list(kernels.values())
    if len(kernels) == 2:  # the A/A control: the exploration best built and timed again
        timed.append(scheduled_module(mod, log.traces[explored]))
    if kernels:
        samples = measure_interleaved(
            timed,
            target,
            rounds=rounds,
            number=number,
            repeat=repeat,
            min_repeat_ms=min_repeat_ms,
            session=None if open_session is None else open_session(),
        )
        report.remeasured = dict(zip(kernels, samples[: len(kernels)], strict=True))
        if len(kernels) == 2:
            explored_secs = report.remeasured["after_exploration"]
            report.paired = paired_ratio(report.remeasured["final"], explored_secs, rounds)
            report.aa = paired_ratio(samples[2], explored_secs, rounds)
    # Strict JSON: a latency that is not a finite number is written as null, never Infinity.
    write_json(os.path.join(work_dir, "report.json"), asdict(report))
    return report
