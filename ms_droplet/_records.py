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
"""Tuning records: which are failures, their latency, the records and the best record of a workload.

One rule for the strategy and every tool around it (the tune report, the benchmark, the relax
helpers, the builder benchmark):

* a record (or a runner result) *failed* when it has no run seconds or any of them is not a
  positive number below ``FAILED_SECS`` (MetaSchedule stores failed builds and runs as
  ``run_secs`` ``[1e10]``); failures are never read as latencies;
* the *latency* of a successful record is the **mean** of its run seconds, the statistic
  MetaSchedule's database sorts records by (``get_top_k``);
* the *best record* of a workload is its first successful record in that order, which is also the
  record ``compile_tir`` and ``MetaScheduleApplyDatabase`` apply.
"""

from __future__ import annotations

import tvm_ffi
from tvm.ir import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.database import Database, TuningRecord, Workload
from tvm.s_tir.schedule import Trace
from tvm.tirx import PrimFunc

__all__ = [
    "FAILED_SECS",
    "best_of",
    "best_record",
    "find_workload",
    "first_records",
    "is_failure",
    "latency",
    "samples_of",
    "scheduled_module",
    "workload_module",
    "workload_records",
]

#: Run seconds at or above this mark a failed measurement (stored as 1e10, logged as 1e9 ms).
FAILED_SECS = 1e9


def samples_of(run_secs) -> list[float] | None:
    """Run seconds as floats, or None for a failed / missing measurement (never a sentinel)."""
    if run_secs is None:
        return None
    out = [float(x) for x in run_secs]
    if not out or any(not (0.0 < x < FAILED_SECS) for x in out):
        return None
    return out


def is_failure(record: TuningRecord) -> bool:
    """Whether a database record is a failed measurement."""
    return samples_of(record.run_secs) is None


def latency(run_secs) -> float | None:
    """The latency of a measurement in seconds: the mean of its run seconds; None if it failed."""
    samples = samples_of(run_secs)
    return None if samples is None else sum(samples) / len(samples)


def workload_module(mod: IRModule | PrimFunc) -> IRModule:
    """``mod`` as MetaSchedule stores it as a workload: an IRModule whose one function is "main".

    A PrimFunc gets the ``global_symbol`` "main" and the ``tirx.noalias`` attribute, as
    ``tune_tir`` gives it before committing the workload.
    """
    if isinstance(mod, PrimFunc):
        if not (mod.attrs and "global_symbol" in mod.attrs):
            mod = mod.with_attr("global_symbol", "main")
        mod = IRModule({"main": mod.with_attr("tirx.noalias", True)})
    if not isinstance(mod, IRModule):
        raise TypeError(f"expected an IRModule or PrimFunc, got {type(mod).__name__}")
    funcs = mod.get_global_vars()
    if len(funcs) == 1 and funcs[0].name_hint != "main":
        mod = IRModule({"main": mod[funcs[0]]})
    return mod


def find_workload(database: Database, mod: IRModule | PrimFunc) -> Workload | None:
    """The workload of ``mod`` in ``database``, or None if it has none (nothing is written)."""
    mod = workload_module(mod)
    if not database.has_workload(mod):
        return None
    return database.commit_workload(mod)  # an existing workload: a lookup


def workload_records(database: Database, workload: Workload) -> list[TuningRecord]:
    """Every record of ``workload`` in ``database``, failed ones included."""
    return [
        rec
        for rec in database.get_all_tuning_records()
        if rec.workload.same_as(workload)
        or tvm_ffi.structural_equal(rec.workload.mod, workload.mod)
    ]


def best_record(database: Database, workload: Workload | None) -> TuningRecord | None:
    """The fastest successful record of ``workload`` (lowest :func:`latency`), or None."""
    if workload is None:
        return None
    k = 16
    while True:
        top = database.get_top_k(workload, k)
        for rec in top:
            if not is_failure(rec):
                return rec
        if len(top) < k:
            return None
        k *= 4


def first_records(work_dir: str, workload: Workload, count: int) -> list[TuningRecord]:
    """The first ``count`` records of a JSON database, in the order they were measured.

    ``JSONDatabase`` appends each batch as it is committed, so the file order is the trial
    order; the database's own API returns records sorted by latency instead. Every record is
    read as one of ``workload`` (a benchmark work dir holds one workload).
    """
    import json
    import os

    from tvm.s_tir.meta_schedule.database import TuningRecord as _TuningRecord

    path = os.path.join(work_dir, "database_tuning_record.json")
    out: list[TuningRecord] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(out) >= count:
                break
            if line.strip():
                out.append(_TuningRecord.from_json(json.loads(line)[1], workload))
    return out


def best_of(records: list[TuningRecord]) -> TuningRecord | None:
    """The successful record with the lowest :func:`latency` among ``records``, or None."""
    ok = [(latency(r.run_secs), i) for i, r in enumerate(records) if not is_failure(r)]
    return records[min(ok)[1]] if ok else None


def scheduled_module(mod: IRModule, trace: Trace) -> IRModule:
    """The kernel a record stands for: ``trace`` (postprocs included) applied to ``mod``."""
    sch = Schedule(mod)
    trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod
