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
"""Tune relax models with Droplet Search.

Two ways to tune a whole relax model, both writing ordinary MetaSchedule records (a
``JSONDatabase`` in ``work_dir``) that stock TVM applies without ``ms_droplet``:

* :func:`tune_relax`, TVM's ``s_tir.meta_schedule.relax_integration.tune_relax`` with
  ``strategy="droplet"`` as the default, followed by :func:`compile_relax` (or TVM's own
  ``relax_integration.compile_relax`` with a ``JSONDatabase``)::

      db = ms_droplet.relax.tune_relax(mod, params, target, work_dir, 2000, builder="warm")
      ex = ms_droplet.relax.compile_relax(mod, target, work_dir, params)
      vm = tvm.relax.VirtualMachine(ex, tvm.cpu())

* :func:`DropletTuneIRMod`, a module pass that takes the place of
  ``relax.transform.MetaScheduleTuneIRMod`` in a pipeline, after the module has been
  legalized and fused and before ``relax.transform.MetaScheduleApplyDatabase``::

      with target:
          mod = tvm.transform.Sequential([
              ms_droplet.relax.legalize_and_fuse_pass(),   # or relax.pipeline.zero_pipeline()
              ms_droplet.relax.DropletTuneIRMod(params, work_dir, 2000),
              relax.transform.MetaScheduleApplyDatabase(work_dir),
          ])(mod)
      ex = tvm.compile(mod, target)

Tasks and the module passed to :func:`tune_relax`
-------------------------------------------------
In TVM 0.27, ``relax_integration.extract_tasks`` collects the TIR functions that are
already in the module: on a model straight from the frontend (high-level relax operators)
it finds no task at all. ``relax_integration.compile_relax`` on the other hand legalizes and
fuses the module it is given (``LegalizeOps``, ``AnnotateTIROpPattern``, ``FoldConstant``,
``FuseOps``, ``FuseTIR``) before it looks the functions up in the database, and the database
matches workloads structurally, function attributes included (a second
``AnnotateTIROpPattern`` adds an ``op_pattern`` attribute to an already fused function, so
tasks extracted from a fused module do not match what ``compile_relax`` looks up).
:func:`tune_relax` therefore, by default (``prepare=True``), binds ``params`` and runs exactly
that preparation (:func:`legalize_and_fuse`) on ``mod`` before extracting the tasks, so that
tuning and compiling the *same* module agree. ``prepare=False`` gives TVM's behaviour (the
tasks are the TIR functions of ``mod`` as it is), which is what a pass in a pipeline needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tvm
from tvm.ir import IRModule
from tvm.ir.transform import PassContext
from tvm.runtime import Tensor
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule import relax_integration as _ms_relax
from tvm.s_tir.meta_schedule.builder import Builder
from tvm.s_tir.meta_schedule.cost_model import CostModel
from tvm.s_tir.meta_schedule.database import Database
from tvm.s_tir.meta_schedule.extracted_task import ExtractedTask
from tvm.s_tir.meta_schedule.measure_callback import MeasureCallback
from tvm.s_tir.meta_schedule.runner import Runner
from tvm.s_tir.meta_schedule.search_strategy import SearchStrategy
from tvm.s_tir.meta_schedule.space_generator import SpaceGenerator
from tvm.s_tir.meta_schedule.task_scheduler import TaskScheduler
from tvm.target import Target
from tvm.tirx import PrimFunc

from ._builder import WarmBuilder
from ._database import DATABASE_FILES
from ._lock import lock_work_dir
from ._onnx_tuning import (
    ModelTuneReport,
    OnnxModelError,
    OutputMismatchError,
    TuneModelError,
    tune_onnx,
)
from ._records import best_record, find_workload, latency, workload_records
from ._registry import KIND
from ._strategy import DropletStrategy

if TYPE_CHECKING:
    from typing import TypeAlias

    from tvm import relax

    TargetLike: TypeAlias = str | dict | Target
    ModLike: TypeAlias = IRModule | relax.Function
    #: ``builder`` argument: a TVM builder kind or object, or ``"warm"`` for a WarmBuilder.
    BuilderLike: TypeAlias = Builder.BuilderType | str

__all__ = [
    "DropletTuneIRMod",
    "ModelTuneReport",
    "OnnxModelError",
    "OutputMismatchError",
    "TaskSummary",
    "TuneModelError",
    "compile_relax",
    "extract_tasks",
    "format_summary",
    "legalize_and_fuse",
    "legalize_and_fuse_pass",
    "summarize_tuning",
    "tune_onnx",
    "tune_relax",
]

logger = logging.getLogger("ms_droplet.relax")


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _as_target(target: TargetLike) -> Target:
    return target if isinstance(target, Target) else Target(target)


def _as_module(mod: ModLike) -> IRModule:
    if isinstance(mod, IRModule):
        return mod
    from tvm.relax.expr import Function as RelaxFunction

    if isinstance(mod, RelaxFunction):
        return IRModule({"main": mod})
    raise TypeError(f"expected a relax IRModule or relax.Function, got {type(mod).__name__}")


def _num_prim_funcs(mod: IRModule) -> int:
    return sum(isinstance(func, PrimFunc) for func in mod.functions.values())


def _is_droplet(strategy: Any) -> bool:
    return isinstance(strategy, str) and strategy == KIND


def _is_warm(builder: Any) -> bool:
    return isinstance(builder, str) and builder == "warm"


def _legalize_and_fuse_passes(target: Target, enable_warning: bool) -> list[tvm.ir.transform.Pass]:
    """The passes ``relax_integration.compile_relax`` runs before ``MetaScheduleApplyDatabase``."""
    from tvm import relax
    from tvm.relax import pipeline as relax_pipeline

    try:
        dispatch = list(relax_pipeline.library_dispatch_passes(target))
    except (ValueError, AttributeError):
        dispatch = []
    return [
        *dispatch,
        relax.transform.LegalizeOps(enable_warning=enable_warning),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


# ------------------------------------------------------------------------------------------
# Preparation and task extraction
# ------------------------------------------------------------------------------------------


def legalize_and_fuse(
    mod: ModLike,
    target: TargetLike,
    params: dict[str, Tensor] | None = None,
    *,
    enable_warning: bool = False,
) -> IRModule:
    """Bind ``params`` and legalize and fuse ``mod`` as ``compile_relax`` does before it looks
    the TIR functions up in a database.

    Parameters
    ----------
    mod : Union[IRModule, relax.Function]
        The relax program (``"main"`` is the function ``params`` are bound to).
    target : Union[str, dict, Target]
        The compilation target (legalization may depend on it).
    params : Optional[dict[str, tvm.runtime.Tensor]]
        Weights to bind to ``main`` as constants, by parameter name.
    enable_warning : bool
        Let ``LegalizeOps`` warn about operators without a legalization.

    Returns
    -------
    mod : IRModule
        The module with fused TIR functions, whose functions are the tuning tasks.
    """
    from tvm.relax.transform import BindParams

    mod = _as_module(mod)
    target = _as_target(target)
    if params:
        mod = BindParams("main", params)(mod)
    with target, PassContext(opt_level=3):
        return tvm.transform.Sequential(_legalize_and_fuse_passes(target, enable_warning))(mod)


def legalize_and_fuse_pass(*, enable_warning: bool = False) -> tvm.ir.transform.Pass:
    """:func:`legalize_and_fuse` as a module pass (uses the current target), for pipelines.

    Parameters
    ----------
    enable_warning : bool
        Let ``LegalizeOps`` warn about operators without a legalization.

    Returns
    -------
    pass : tvm.ir.transform.Pass
        A module pass; run it under ``with target:``.
    """

    @tvm.transform.module_pass(opt_level=0, name="DropletLegalizeAndFuse")
    def _legalize_and_fuse(mod: IRModule, _ctx: PassContext) -> IRModule:
        target = Target.current(allow_none=True)
        if target is None:
            raise ValueError("legalize_and_fuse_pass needs a target: run it under `with target:`")
        return tvm.transform.Sequential(_legalize_and_fuse_passes(target, enable_warning))(mod)

    return _legalize_and_fuse


def extract_tasks(
    mod: ModLike,
    target: TargetLike,
    params: dict[str, Tensor] | None = None,
    module_equality: str = "structural",
    *,
    prepare: bool = True,
) -> list[ExtractedTask]:
    """The tuning tasks of a relax program, as :func:`tune_relax` tunes them.

    Parameters
    ----------
    mod : Union[IRModule, relax.Function]
        The relax program.
    target : Union[str, dict, Target]
        The compilation target.
    params : Optional[dict[str, tvm.runtime.Tensor]]
        Weights bound to ``main`` before extraction.
    module_equality : str
        How workloads are compared (``"structural"``, ``"ignore-tensor"``, ``"anchor-block"``).
    prepare : bool
        Run :func:`legalize_and_fuse` first (the default); False extracts the TIR functions of
        ``mod`` as it is, like TVM's ``extract_tasks``.

    Returns
    -------
    tasks : list[ExtractedTask]
        One task per distinct TIR function, with its weight (number of uses).
    """
    target = _as_target(target)
    if prepare:
        mod = legalize_and_fuse(mod, target, params)
        params = None
    return _ms_relax.extract_tasks(mod, target, params, module_equality=module_equality)


# ------------------------------------------------------------------------------------------
# Tuning
# ------------------------------------------------------------------------------------------


def tune_relax(
    mod: ModLike,
    params: dict[str, Tensor] | None,
    target: TargetLike,
    work_dir: str,
    max_trials_global: int,
    max_trials_per_task: int | None = None,
    op_names: list[str] | None = None,
    *,
    num_trials_per_iter: int = 64,
    builder: BuilderLike = "local",
    runner: Runner.RunnerType = "local",
    database: Database.DatabaseType = "json",
    cost_model: CostModel.CostModelType = "xgb",
    measure_callbacks: MeasureCallback.CallbackListType = "default",
    task_scheduler: TaskScheduler.TaskSchedulerType = "gradient",
    space: SpaceGenerator.SpaceGeneratorType = "post-order-apply",
    strategy: SearchStrategy.SearchStrategyType = KIND,
    seed: int | None = None,
    module_equality: str = "structural",
    prepare: bool = True,
    resume: bool = True,
) -> Database:
    """Tune a relax program with Droplet Search.

    TVM's ``relax_integration.tune_relax`` with the same arguments and defaults, except that

    * ``strategy`` defaults to ``"droplet"`` (a :class:`~ms_droplet.DropletStrategy` with its
      default settings; pass a ``DropletStrategy(...)`` to change them, or any other TVM
      strategy);
    * ``builder="warm"`` stands for a :class:`~ms_droplet.WarmBuilder` created for this call
      and shut down before it returns; any other builder is passed on unchanged;
    * with ``prepare=True`` (the default) ``mod`` is first bound to ``params``, legalized and
      fused exactly as ``compile_relax`` does (see :func:`legalize_and_fuse` and the module
      documentation); ``prepare=False`` tunes the TIR functions of ``mod`` as it is.

    Parameters
    ----------
    mod : Union[IRModule, relax.Function]
        The relax program to tune.
    params : Optional[dict[str, tvm.runtime.Tensor]]
        Weights of ``main`` by parameter name (bound as constants), or None.
    target : Union[str, dict, Target]
        The compilation target.
    work_dir : str
        The working directory: logs and (with ``database="json"``) the JSON database.
    max_trials_global : int
        The most trials of this call, over all tasks.
    max_trials_per_task : Optional[int]
        The most trials of this call per task.
    op_names : Optional[list[str]]
        Tune only the tasks whose name contains one of these strings; None tunes all.
    num_trials_per_iter : int
        Candidates measured per batch.
    builder : Union[str, Builder]
        ``"local"``, ``"warm"`` or a :class:`Builder`.
    runner : Union[str, Runner]
        The runner.
    database : Union[str, Database]
        The database (``"json"`` keeps it in ``work_dir``).
    cost_model : Union[str, CostModel]
        The cost model of the exploration phase.
    measure_callbacks : Union[str, list[MeasureCallback]]
        The measure callbacks.
    task_scheduler : Union[str, TaskScheduler]
        The task scheduler.
    space : Union[str, SpaceGenerator]
        The design-space generator.
    strategy : Union[str, SearchStrategy]
        The search strategy; ``"droplet"`` by default.
    seed : Optional[int]
        The random seed.
    module_equality : str
        How workloads are compared (``"structural"``, ``"ignore-tensor"``, ``"anchor-block"``).
    prepare : bool
        Legalize and fuse ``mod`` before extracting the tasks (see above).
    resume : bool
        Count the tuning records already in the database (``work_dir``'s JSON database by
        default) toward ``max_trials_global``, so that running the same tuning again continues
        where it stopped instead of spending the whole budget again; a run whose budget is spent
        measures nothing. ``False`` gives TVM's semantics (every call gets the whole budget).

    Returns
    -------
    database : Database
        The database holding the tuning records.

    Raises
    ------
    ms_droplet.WorkDirLocked
        When another process (another ``tune_relax``, ``ms-droplet tune`` or ``db repair``)
        holds ``work_dir``: two tunings in one work dir would mix their records.
    ValueError
        For a Droplet strategy with ``num_trials_per_iter < 2`` (its descent measures the
        incumbent beside at least one neighbour in every batch).
    """
    if _is_droplet(strategy):
        strategy = DropletStrategy()
    if isinstance(strategy, DropletStrategy) and num_trials_per_iter < 2:
        raise ValueError(
            f"num_trials_per_iter={num_trials_per_iter} leaves no room for Droplet's descent, "
            "which measures the incumbent beside at least one neighbour in every batch; use "
            "num_trials_per_iter >= 2"
        )
    with lock_work_dir(
        work_dir,
        owner="ms_droplet.relax.tune_relax",
        fix="two tunings in one work dir would mix their records; wait for it to finish, or "
        "give another work_dir",
    ):
        return _tune_relax_locked(
            mod,
            params,
            target,
            work_dir,
            max_trials_global,
            max_trials_per_task,
            op_names,
            num_trials_per_iter=num_trials_per_iter,
            builder=builder,
            runner=runner,
            database=database,
            cost_model=cost_model,
            measure_callbacks=measure_callbacks,
            task_scheduler=task_scheduler,
            space=space,
            strategy=strategy,
            seed=seed,
            module_equality=module_equality,
            prepare=prepare,
            resume=resume,
        )


def _tune_relax_locked(
    mod: ModLike,
    params: dict[str, Tensor] | None,
    target: TargetLike,
    work_dir: str,
    max_trials_global: int,
    max_trials_per_task: int | None,
    op_names: list[str] | None,
    *,
    num_trials_per_iter: int,
    builder: BuilderLike,
    runner: Runner.RunnerType,
    database: Database.DatabaseType,
    cost_model: CostModel.CostModelType,
    measure_callbacks: MeasureCallback.CallbackListType,
    task_scheduler: TaskScheduler.TaskSchedulerType,
    space: SpaceGenerator.SpaceGeneratorType,
    strategy: SearchStrategy.SearchStrategyType,
    seed: int | None,
    module_equality: str,
    prepare: bool,
    resume: bool,
) -> Database:
    """:func:`tune_relax` after its checks, holding ``work_dir``'s lock."""
    mod = _as_module(mod)
    target = _as_target(target)
    if prepare:
        mod = legalize_and_fuse(mod, target, params)
        params = None
    if _num_prim_funcs(mod) == 0:
        logger.warning(
            "tune_relax: the module has no TIR function, so there is nothing to tune; "
            "legalize and fuse it first (prepare=True does)"
        )
    if resume:
        existing = _existing_records(database, work_dir, module_equality)
        if existing:
            remaining = max_trials_global - existing
            logger.info(
                "tune_relax: %d record(s) already in the database count toward "
                "max_trials_global=%d; %d trial(s) left",
                existing,
                max_trials_global,
                max(remaining, 0),
            )
            if remaining <= 0:
                if isinstance(database, Database):
                    return database
                return ms.database.JSONDatabase(work_dir=work_dir, module_equality=module_equality)
            max_trials_global = remaining
    own_builder = WarmBuilder() if _is_warm(builder) else None
    if own_builder is not None:
        builder = own_builder
    logger.info(
        "tune_relax: %d TIR function(s), max_trials_global=%d, strategy=%s, work_dir=%s",
        _num_prim_funcs(mod),
        max_trials_global,
        type(strategy).__name__ if not isinstance(strategy, str) else strategy,
        work_dir,
    )
    try:
        return _ms_relax.tune_relax(
            mod,
            params or {},
            target,
            work_dir,
            max_trials_global,
            max_trials_per_task=max_trials_per_task,
            op_names=op_names,
            num_trials_per_iter=num_trials_per_iter,
            builder=builder,
            runner=runner,
            database=database,
            cost_model=cost_model,
            measure_callbacks=measure_callbacks,
            task_scheduler=task_scheduler,
            space=space,
            strategy=strategy,
            seed=seed,
            module_equality=module_equality,
        )
    finally:
        if own_builder is not None:
            own_builder.shutdown()


def DropletTuneIRMod(
    params: dict[str, Tensor] | None,
    work_dir: str,
    max_trials_global: int,
    max_trials_per_task: int | None = None,
    op_names: list[str] | None = None,
    *,
    num_evolutionary_trials: int = 300,
    pvalue: float = 0.05,
    strategy: SearchStrategy | None = None,
    target: TargetLike | None = None,
    num_trials_per_iter: int = 64,
    builder: BuilderLike = "local",
    runner: Runner.RunnerType = "local",
    database: Database.DatabaseType = "json",
    cost_model: CostModel.CostModelType = "xgb",
    measure_callbacks: MeasureCallback.CallbackListType = "default",
    task_scheduler: TaskScheduler.TaskSchedulerType = "gradient",
    space: SpaceGenerator.SpaceGeneratorType = "post-order-apply",
    seed: int | None = None,
    module_equality: str = "structural",
) -> tvm.ir.transform.Pass:
    """A module pass that tunes the TIR functions of the module with Droplet Search.

    The counterpart of ``relax.transform.MetaScheduleTuneIRMod``: it tunes and returns the
    module unchanged; follow it with ``relax.transform.MetaScheduleApplyDatabase(work_dir)``
    (created under the same target). The tasks are the TIR functions of the module as the
    pass receives it, so put the pass after legalization and fusion
    (:func:`legalize_and_fuse_pass` or ``relax.pipeline.zero_pipeline()``) and do not change
    the module between it and ``MetaScheduleApplyDatabase``.

    Parameters
    ----------
    params : Optional[dict[str, tvm.runtime.Tensor]]
        Weights of ``main`` by name (bound for task extraction only), or None / ``{}``.
    work_dir : str
        The working directory (logs and the JSON database).
    max_trials_global : int
        The most trials of one run of the pass, over all tasks.
    max_trials_per_task : Optional[int]
        The most trials per task.
    op_names : Optional[list[str]]
        Tune only the tasks whose name contains one of these strings; None tunes all.
    num_evolutionary_trials : int
        :class:`~ms_droplet.DropletStrategy` setting (used when ``strategy`` is None).
    pvalue : float
        :class:`~ms_droplet.DropletStrategy` setting (used when ``strategy`` is None).
    strategy : Optional[SearchStrategy]
        A search strategy to use instead of ``DropletStrategy(num_evolutionary_trials,
        pvalue)``.
    target : Optional[Union[str, dict, Target]]
        The target; by default the current target when the pass is created, else when it runs.
    num_trials_per_iter, builder, runner, database, cost_model, measure_callbacks,
    task_scheduler, space, seed, module_equality
        As for :func:`tune_relax` (``builder="warm"`` included).

    Returns
    -------
    pass : tvm.ir.transform.Pass
        The tuning pass (named ``"DropletTuneIRMod"``).
    """
    if strategy is None:
        strategy = DropletStrategy(num_evolutionary_trials=num_evolutionary_trials, pvalue=pvalue)
    elif _is_droplet(strategy):
        strategy = DropletStrategy(num_evolutionary_trials=num_evolutionary_trials, pvalue=pvalue)
    fixed_target = _as_target(target) if target is not None else Target.current(allow_none=True)
    max_trials_global = int(max_trials_global)
    max_trials_per_task = None if max_trials_per_task is None else int(max_trials_per_task)

    @tvm.transform.module_pass(opt_level=0, name="DropletTuneIRMod")
    def _droplet_tune_irmod(mod: IRModule, _ctx: PassContext) -> IRModule:
        tgt = fixed_target if fixed_target is not None else Target.current(allow_none=True)
        if tgt is None:
            raise ValueError(
                "DropletTuneIRMod needs a target: pass target=... or create/run it under "
                "`with target:`"
            )
        if _num_prim_funcs(mod) == 0:
            logger.warning(
                "DropletTuneIRMod: the module has no TIR function (is it legalized and fused?); "
                "nothing to tune"
            )
            return mod
        tune_relax(
            mod,
            params,
            tgt,
            work_dir,
            max_trials_global,
            max_trials_per_task,
            op_names,
            num_trials_per_iter=num_trials_per_iter,
            builder=builder,
            runner=runner,
            database=database,
            cost_model=cost_model,
            measure_callbacks=measure_callbacks,
            task_scheduler=task_scheduler,
            space=space,
            strategy=strategy,
            seed=seed,
            module_equality=module_equality,
            prepare=False,
        )
        return mod  # tuning only decides; MetaScheduleApplyDatabase applies

    return _droplet_tune_irmod


# ------------------------------------------------------------------------------------------
# Compilation and reporting
# ------------------------------------------------------------------------------------------


def _open_database(
    work_dir: str | None, database: Database | None, module_equality: str
) -> Database:
    if database is not None:
        return database
    if work_dir is None:
        raise ValueError("give a work_dir or a database")
    missing = [f for f in DATABASE_FILES if not os.path.isfile(os.path.join(work_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"no MetaSchedule JSON database in {work_dir!r} (missing {', '.join(missing)})"
        )
    return ms.database.JSONDatabase(work_dir=work_dir, module_equality=module_equality)


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

    A thin wrapper of TVM's ``relax_integration.compile_relax`` with a ``JSONDatabase`` of
    ``work_dir``; TIR functions without a record are compiled unscheduled.

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
    db = _open_database(work_dir, database, module_equality)
    return _ms_relax.compile_relax(
        db, _as_module(mod), _as_target(target), params, enable_warning=enable_warning
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
    db = _open_database(work_dir, database, module_equality)
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


def _existing_records(database: Any, work_dir: str, module_equality: str) -> int:
    """Records already in the tuning's database (0 when there is none yet)."""
    if isinstance(database, Database):
        return len(database.get_all_tuning_records())
    if database != "json":
        return 0
    path = os.path.join(work_dir, "database_tuning_record.json")
    if not os.path.exists(path):
        return 0
    db = ms.database.JSONDatabase(work_dir=work_dir, module_equality=module_equality)
    return len(db.get_all_tuning_records())
