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
"""Compiling a relax program with a tuning database, and what the database holds per task."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tvm.runtime import Tensor
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule import relax_integration as ms_relax
from tvm.s_tir.meta_schedule.database import Database

from ._database import DATABASE_FILES
from ._picks import tuned_database
from ._records import best_record, find_workload, latency, workload_records
from ._relax_prepare import as_module, as_target, extract_tasks

if TYPE_CHECKING:
    from tvm import relax

    from ._relax_prepare import ModLike, TargetLike

__all__ = ["TaskSummary", "compile_relax", "format_summary", "open_database", "summarize_tuning"]


def open_database(
    work_dir: str | None, database: Database | None, module_equality: str
) -> Database:
    if database is not None:
        return database
    check_database_files(work_dir)
    return ms.database.JSONDatabase(work_dir=work_dir, module_equality=module_equality)


def check_database_files(work_dir: str | None) -> str:
    """``work_dir`` when it holds a MetaSchedule JSON database; a clear error otherwise."""
    if work_dir is None:
        raise ValueError("give a work_dir or a database")
    missing = [f for f in DATABASE_FILES if not os.path.isfile(os.path.join(work_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"no MetaSchedule JSON database in {work_dir!r} (missing {', '.join(missing)})"
        )
    return work_dir


def compile_relax(
    mod: ModLike,
    target: TargetLike,
    work_dir: str | None,
    params: dict[str, Tensor] | None = None,
    *,
    database: Database | None = None,
    module_equality: str = "structural",
    enable_warning: bool = False,
) -> relax.VMExecutable:
    """Build a relax program with the best schedules of a tuning database.

    A thin wrapper of TVM's ``relax_integration.compile_relax`` with the database of
    ``work_dir``: each task's pick of a droplet tuning (the kernel its final batch found
    fastest, kept in ``droplet_picks.json``) where there is one, else the record with the
    lowest mean (TVM's rule); TIR functions without a record are compiled unscheduled.

    Parameters
    ----------
    mod : Union[IRModule, relax.Function]
        The relax program, as given to :func:`tune_relax`.
    target : Union[str, dict, Target]
        The compilation target.
    work_dir : Optional[str]
        The tuning working directory holding ``database_workload.json`` and
        ``database_tuning_record.json``.
    params : Optional[dict[str, tvm.runtime.Tensor]]
        Weights of ``main`` bound as constants (then ``main`` takes only the inputs).
    database : Optional[Database]
        A database to use instead of the one in ``work_dir``.
    module_equality : str
        How workloads are compared; the value used for tuning.
    enable_warning : bool
        Warn about TIR functions without a record.

    Returns
    -------
    executable : relax.VMExecutable
        Load it with ``tvm.relax.VirtualMachine(executable, device)``.
    """
    if database is None:
        check_database_files(work_dir)
        db = tuned_database(work_dir, module_equality=module_equality)  # picks first
    else:
        db = database
    return ms_relax.compile_relax(
        db, as_module(mod), as_target(target), params, enable_warning=enable_warning
    )


@dataclass(frozen=True)
class TaskSummary:
    """What a database holds for one tuning task.

    Attributes
    ----------
    name : str
        The task name (the fused TIR function's name).
    weight : int
        How many times the model calls the function.
    trials : int
        Records of the task's workload in the database (failed measurements included).
    best_seconds : Optional[float]
        The latency (mean run seconds) of the best record, the one
        ``MetaScheduleApplyDatabase`` applies, or None when no record ran successfully.
    """

    name: str
    weight: int
    trials: int
    best_seconds: float | None


def summarize_tuning(
    mod: ModLike,
    target: TargetLike,
    work_dir: str | None,
    params: dict[str, Tensor] | None = None,
    *,
    database: Database | None = None,
    module_equality: str = "structural",
    prepare: bool = True,
) -> list[TaskSummary]:
    """Per task of ``mod``: its records in the database and the best latency among them.

    Parameters
    ----------
    mod : Union[IRModule, relax.Function]
        The relax program, as given to :func:`tune_relax`.
    target : Union[str, dict, Target]
        The compilation target.
    work_dir : Optional[str]
        The tuning working directory.
    params : Optional[dict[str, tvm.runtime.Tensor]]
        Weights of ``main``.
    database : Optional[Database]
        A database to use instead of the one in ``work_dir``.
    module_equality : str
        How workloads are compared; the value used for tuning.
    prepare : bool
        The ``prepare`` value used for tuning.

    Returns
    -------
    summaries : list[TaskSummary]
        One entry per extracted task, in extraction order.
    """
    db = open_database(work_dir, database, module_equality)
    tasks = extract_tasks(mod, target, params, module_equality, prepare=prepare)
    out = []
    for task in tasks:
        trials, best = 0, None
        workload = find_workload(db, task.dispatched[0])
        if workload is not None:
            trials = len(workload_records(db, workload))
            rec = best_record(db, workload)
            best = None if rec is None else latency(rec.run_secs)
        out.append(TaskSummary(str(task.task_name), int(task.weight), trials, best))
    return out


def format_summary(summaries: Sequence[TaskSummary]) -> str:
    """A plain-text table of :func:`summarize_tuning`'s result."""
    width = max([len("task"), *(len(s.name) for s in summaries)])
    lines = [f"{'task':<{width}}  {'weight':>6}  {'trials':>6}  {'best (us)':>12}"]
    for s in summaries:
        best = "-" if s.best_seconds is None else f"{s.best_seconds * 1e6:.2f}"
        lines.append(f"{s.name:<{width}}  {s.weight:>6}  {s.trials:>6}  {best:>12}")
    return "\n".join(lines)
