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
"""A DropletStrategy task's end: its final batch and the record of its pick.

The contenders are the last descent's incumbent, the database's lowest record (what stock TVM
compiles), earlier descents' incumbents and the next lowest records, at most as many as
``_final.final_size`` allows; ``_final`` lays them out in rotating rounds and picks the fastest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from ._candidates import measure_candidate
from ._decisions import trace_key
from ._final import final_order, final_pick, final_size
from ._proposals import Neighbour
from ._records import is_failure, latency, samples_of, workload_records

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.runner import RunnerResult
    from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate
    from tvm.target import Target

    from ._run_state import RunState

__all__ = ["final_batch", "pick_record", "take_final"]


def _lowest_records(run: RunState) -> Iterator[Neighbour]:
    """The workload's successful records, lowest mean first, replayed (lazily)."""
    rank = 0
    for rec in run.database.get_top_k(run.workload, 64):
        if is_failure(rec):
            continue
        sch = run.cache.replay(rec.trace)
        if sch is not None:
            rank += 1
            label = "the lowest record" if rank == 1 else f"record {rank}"
            yield Neighbour(label, sch, trace_key(sch.trace))


def final_batch(run: RunState) -> list[MeasureCandidate] | None:
    """The final batch: the task's contenders in rotating rounds (None: fewer than two).

    Sets ``run.final`` to the contenders and the slot order; the kept trials are spent either way.
    """
    run.phase = "done"
    begin = time.perf_counter()
    most, rounds = final_size(min(run.reserve, run.max_trials - run.trials))
    run.reserve = 0
    contenders: list[Neighbour] = []

    def add(nb: Neighbour) -> None:
        if len(contenders) < most and nb.key not in {c.key for c in contenders}:
            contenders.append(nb)

    records = _lowest_records(run)
    if run.descent is not None:
        add(Neighbour("incumbent", run.descent.incumbent.point, run.descent.incumbent.key))
    lowest = next(records, None)
    if lowest is not None:
        add(lowest)  # what stock TVM compiles
    # past_incumbents[j] is where descent j + 1 converged (descents are numbered from 1)
    for j in reversed(range(len(run.past_incumbents))):
        nb = run.past_incumbents[j]
        add(Neighbour(f"incumbent of descent {j + 1}", nb.point, nb.key))
    while len(contenders) < most:
        nb = next(records, None)
        if nb is None:
            break
        add(nb)
    run.own_seconds += time.perf_counter() - begin
    if len(contenders) < 2:
        return None
    order = final_order(len(contenders), rounds * most // len(contenders))
    run.final = (contenders, order)
    run.phase = "final"
    run.logger.info(
        "Droplet: final batch: %d contender(s) (%s) in %d rotating rounds",
        len(contenders),
        ", ".join(nb.coordinate for nb in contenders),
        len(order) // len(contenders),
    )
    return [measure_candidate(contenders[i].point) for i in order]


def take_final(run: RunState, results: list[RunnerResult]) -> None:
    """Pick the fastest contender of the final batch in flight (``run.pick``, ``run.pick_secs``)."""
    assert run.final is not None
    (contenders, order), run.final = run.final, None
    run.phase = "done"
    samples = [samples_of(res.run_secs) if res.error_msg is None else None for res in results]
    result = final_pick(order, samples)
    if result.pick is None:
        run.logger.warning("Droplet: final batch: every contender failed in some round")
        return
    run.pick = contenders[result.pick]
    run.pick_secs = [
        x for i, s in zip(order, samples, strict=True) if i == result.pick for x in s or []
    ]
    ratios = ", ".join(
        f"{nb.coordinate} {'failed' if r is None else f'{r:.3f}'}"
        for nb, r in zip(contenders, result.ratios, strict=True)
    )
    run.logger.info(
        "Droplet: final pick: %s (latency relative to %s over %d rotating rounds: %s)",
        run.pick.coordinate,
        contenders[0].coordinate,
        result.rounds,
        ratios,
    )


def pick_record(
    run: RunState, target: Target, top: list[TuningRecord]
) -> tuple[TuningRecord | None, bool | None]:
    """The record of the task's pick and whether it is ``top``, the database's lowest record.

    The pick is the final batch's winner, or without one the last incumbent (of the last
    descent, else of the latest converged one). Its ``run_secs`` are its samples in the final
    batch, else those of its record with the median latency. ``(None, None)`` when there is no
    pick (no descent, no final batch) or no successful record of it.
    """
    from tvm.s_tir.meta_schedule.database import TuningRecord as _Record

    pick = run.pick
    if pick is None and run.descent is not None:
        pick = run.descent.incumbent
    if pick is None and run.past_incumbents:
        pick = run.past_incumbents[-1]
    if pick is None:
        return None, None
    run_secs = list(run.pick_secs or [])
    if run.pick is None or not run_secs:
        mine = _records_of(run, pick.key)
        if not mine:
            return None, None
        mine.sort(key=lambda r: latency(r.run_secs) or 0.0)
        run_secs = list(samples_of(mine[len(mine) // 2].run_secs) or [])
    lowest = bool(top) and trace_key(top[0].trace) == pick.key
    sch = pick.point
    args = ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
    return _Record(sch.trace, run.workload, run_secs, target, args), lowest


def _records_of(run: RunState, key: object) -> list[TuningRecord]:
    """The successful records of the candidate ``key`` (the top 256 first, else all)."""
    for records in (
        run.database.get_top_k(run.workload, 256),
        workload_records(run.database, run.workload),
    ):
        mine = [r for r in records if not is_failure(r) and trace_key(r.trace) == key]
        if mine:
            return mine
    return []
