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
"""Candidates: replay a trace on a fresh schedule, run the postprocs, remember what was seen.

A candidate is built exactly as MetaSchedule builds its own mutants: the trace (postprocs removed)
is replayed on a fresh ``Schedule`` of the task's module and passed through the task's postprocs.
A trace that fails is remembered as invalid and never measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm_ffi
from tvm import IRModule
from tvm.s_tir import Schedule
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.database import Database, TuningRecord, Workload
from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate
from tvm.s_tir.schedule import Trace

from ._decisions import Change, apply_change, trace_key
from ._records import workload_records

__all__ = ["CandidateCache", "measure_candidate"]

# The highest compute-location index probed: deeper than any loop nest MetaSchedule tiles.
_LOCATION_PROBE_TOP = 64


@dataclass
class CandidateCache:
    """What the strategy knows about traces of one workload.

    ``seen`` holds the trace keys measured or known to be invalid: the one set that says "do
    not measure this" (the descent adds to this very set); ``invalid`` is the invalid part of
    it; ``modules`` maps the structural hash of every postprocessed module built in this run
    to the key and trace of the trace that built it first (two traces that give the same
    schedule are one candidate; the same trace built again, e.g. a speculative neighbour of a
    challenger that becomes the incumbent, is the same candidate, not a duplicate).
    """

    mod: IRModule
    postprocs: list
    seed: int
    seen: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    modules: dict[int, tuple[str, Trace]] = field(default_factory=dict)

    def load(self, database: Database, workload: Workload) -> list[TuningRecord]:
        """Mark every record of ``workload`` in ``database`` as seen; return them."""
        records = workload_records(database, workload)
        for rec in records:
            self.seen.add(trace_key(rec.trace))
        return records

    def _reject(self, key: str) -> None:
        self.invalid.add(key)
        self.seen.add(key)

    def _apply(self, trace: Trace) -> Schedule | None:
        """``trace`` (postprocs removed) replayed on a fresh schedule; None where it fails."""
        sch = Schedule(self.mod, seed=self.seed, debug_mask=0, error_render_level="none")
        try:
            trace.apply_to_schedule(sch, remove_postproc=True)
        except (RuntimeError, ValueError, TypeError, IndexError):  # ScheduleError is a RuntimeError
            return None
        return sch

    def replay(self, trace: Trace) -> Schedule | None:
        """Replay ``trace`` (postprocs removed) and apply the postprocs; None if invalid."""
        sch = self._apply(trace)
        if sch is None:
            return None
        try:
            sch.enter_postproc()
            for postproc in self.postprocs:
                if not postproc.apply(sch):
                    return None
        except (RuntimeError, ValueError, TypeError, IndexError):  # ScheduleError is a RuntimeError
            return None
        return sch

    def compute_locations(self, trace: Trace) -> dict[int, list[int]]:
        """The valid decisions of each ``SampleComputeLocation`` of ``trace``, ascending.

        Keyed by instruction index: -2 (inline) where the block can be inlined, -1 (root), and
        the indices of the loops where compute-at is valid, which are sparse (e.g. -2, -1, 3,
        5, 6, 7, 10, 15, 16, 17). Found by replay: given an index that is not a valid location,
        the replay takes the nearest valid one below it, so walking down from the top takes
        one replay per valid location (more where a replay fails). An instruction whose
        current decision is not found gets no entry (its moves step the index, as before).
        """
        out: dict[int, list[int]] = {}
        for k, inst in enumerate(trace.insts):
            if inst.kind.name == "EnterPostproc":
                break
            decision = trace.get_decision(inst)
            if inst.kind.name != "SampleComputeLocation" or decision is None:
                continue
            valid: set[int] = set()
            probe = max(int(decision), _LOCATION_PROBE_TOP)
            while probe >= -2:
                taken = self._location_taken(trace, k, probe)
                if taken is None:
                    probe -= 1
                    continue
                valid.add(taken)
                probe = min(taken, probe) - 1
            if int(decision) in valid:
                out[k] = sorted(valid)
        return out

    def _location_taken(self, trace: Trace, index: int, location: int) -> int | None:
        """The decision the replay takes when instruction ``index`` asks for ``location``."""
        sch = self._apply(apply_change(trace, Change(index, location)))
        return None if sch is None else int(sch.trace.get_decision(sch.trace.insts[index]))

    def candidate(self, trace: Trace, *, claim: bool = True) -> tuple[str, Schedule] | None:
        """Build a new candidate from ``trace``: (its key, its schedule), or None.

        None means the trace is invalid, was measured already, gives the schedule of another
        trace measured already, or its replay changed another decision too (not a
        one-coordinate move). A trace built before and not measured yet is built again; a trace
        whose schedule another unmeasured trace built first gives that trace's candidate (one
        schedule, one candidate, its key the trace key of the schedule that is measured).
        ``claim=False`` builds without remembering the schedule (a candidate that may not be
        proposed, e.g. one of many ranked before a few are kept): :meth:`claim` it if kept.
        """
        requested = trace_key(trace)
        if requested in self.seen:
            return None
        sch = self.replay(trace)
        if sch is None:
            self._reject(requested)
            return None
        key = trace_key(sch.trace)  # the decisions the replay really took
        if key != requested:
            # Replay re-resolved another decision (e.g. a compute location that no longer
            # exists after a tile move): this is not a one-coordinate move, skip it.
            self._reject(requested)
            return None
        mhash = tvm_ffi.structural_hash(sch.mod)
        owner = self.modules.get(mhash)
        if owner is not None and owner[0] != key:
            first = None if owner[0] in self.seen else self.replay(owner[1])
            if first is None:
                self._reject(requested)  # a schedule measured already: nothing new to measure
                return None
            key, sch = owner[0], first  # another trace built this schedule first: that one
        if claim:
            self.modules.setdefault(mhash, (key, sch.trace))
        return key, sch

    def measured_module(self, sch: Schedule) -> bool:
        """Whether a trace measured (or found invalid) before built the module of ``sch``."""
        owner = self.modules.get(tvm_ffi.structural_hash(sch.mod))
        return owner is not None and owner[0] in self.seen

    def claim(self, sch: Schedule) -> bool:
        """Remember a schedule (a kept candidate, the incumbent) so that duplicates are skipped.

        False if another trace built the same schedule already: a kept candidate is then
        dropped.
        """
        key = trace_key(sch.trace)
        entry = self.modules.setdefault(tvm_ffi.structural_hash(sch.mod), (key, sch.trace))
        return entry[0] == key


def measure_candidate(sch: Schedule) -> MeasureCandidate:
    """Wrap a postprocessed schedule as MetaSchedule does (preprocessing args removed)."""
    return MeasureCandidate(sch, ArgInfo.from_entry_func(sch.mod, remove_preproc=True))
