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
"""A tuning's picks on disk: per workload, the kernel the search believes fastest.

Stock TVM compiles the record of a workload with the lowest mean run seconds. After a droplet
tuning that is often a neighbour measured once at a quiet moment; the strategy's pick (the
winner of its final batch, or the confirmed incumbent) is in ``DropletStrategy.picks``.
:func:`write_picks` keeps them in ``work_dir/droplet_picks.json`` (one file, replaced
atomically, the latest pick of each workload) and :func:`tuned_database` gives a database that
answers with the pick where there is one and with the tuning database otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import tvm_ffi

from ._files import write_json

if TYPE_CHECKING:
    from tvm.ir import IRModule
    from tvm.s_tir.meta_schedule.database import Database, TuningRecord

__all__ = [
    "PICKS_FILE",
    "pick_of",
    "picked_record",
    "read_picks",
    "remove_picks",
    "tuned_database",
    "write_picks",
]

#: The picks of a work dir, beside MetaSchedule's database files.
PICKS_FILE = "droplet_picks.json"


def read_picks(work_dir: str) -> list[TuningRecord]:
    """The picks kept in ``work_dir`` (none when the file is absent)."""
    from tvm.s_tir.meta_schedule.database import TuningRecord as _Record
    from tvm.s_tir.meta_schedule.database import Workload

    path = os.path.join(work_dir, PICKS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out = []
    for item in data["picks"]:
        workload = Workload.from_json(item["workload"])
        out.append(_Record.from_json(item["record"], workload))
    return out


def write_picks(
    work_dir: str, records: Sequence[TuningRecord], *, drop: Sequence[IRModule] = ()
) -> None:
    """Keep ``records`` as the picks of their workloads in ``work_dir``.

    The earlier picks of those workloads, and of the workloads ``drop`` (tuned again without a
    pick, e.g. by another strategy), are dropped; the others stay.
    """
    mods = [r.workload.mod for r in records] + list(drop)
    old = read_picks(work_dir)
    if not records and not old:
        return
    kept = [p for p in old if not any(tvm_ffi.structural_equal(p.workload.mod, m) for m in mods)]
    write_json(
        os.path.join(work_dir, PICKS_FILE),
        {
            "picks": [
                {"workload": r.workload.as_json(), "record": r.as_json()} for r in [*kept, *records]
            ]
        },
    )


def picked_record(work_dir: str, mod: IRModule) -> TuningRecord | None:
    """The pick of ``mod``'s workload kept in ``work_dir``, or None."""
    return pick_of(read_picks(work_dir), mod)


def pick_of(records: Sequence[TuningRecord], mod: IRModule) -> TuningRecord | None:
    """The record of ``mod``'s workload among ``records`` (picks), or None."""
    for rec in records:
        if tvm_ffi.structural_equal(rec.workload.mod, mod):
            return rec
    return None


def remove_picks(work_dir: str) -> None:
    """Forget every pick of ``work_dir`` (another strategy tuned it since)."""
    path = os.path.join(work_dir, PICKS_FILE)
    if os.path.exists(path):
        os.remove(path)


def tuned_database(work_dir: str, *, module_equality: str = "structural") -> Database:
    """The database of a tuning in ``work_dir``, answering with its picks first.

    Returns the ``JSONDatabase`` of ``work_dir`` when it holds no picks, else an
    ``OrderedUnionDatabase`` of the picks and it: give it to ``compile_tir`` or relax's
    ``MetaScheduleApplyDatabase`` to compile the kernels the search believes fastest.
    """
    from tvm.s_tir.meta_schedule.database import (
        JSONDatabase,
        MemoryDatabase,
        OrderedUnionDatabase,
    )
    from tvm.s_tir.meta_schedule.database import TuningRecord as _Record

    main = JSONDatabase(work_dir=work_dir, module_equality=module_equality)
    picks = read_picks(work_dir)
    if not picks:
        return main
    memory = MemoryDatabase(module_equality=module_equality)
    for rec in picks:
        workload = memory.commit_workload(rec.workload.mod)
        memory.commit_tuning_record(
            _Record(rec.trace, workload, rec.run_secs, rec.target, rec.args_info)
        )
    return OrderedUnionDatabase(memory, main)
