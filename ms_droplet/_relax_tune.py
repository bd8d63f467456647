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
"""Tuning a relax program: :func:`tune_relax` and the :func:`DropletTuneIRMod` pass."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import tvm
from tvm.ir import IRModule
from tvm.ir.transform import PassContext
from tvm.runtime import Tensor
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule import relax_integration as ms_relax
from tvm.s_tir.meta_schedule.builder import Builder
from tvm.s_tir.meta_schedule.cost_model import CostModel
from tvm.s_tir.meta_schedule.database import Database
from tvm.s_tir.meta_schedule.measure_callback import MeasureCallback
from tvm.s_tir.meta_schedule.runner import Runner
from tvm.s_tir.meta_schedule.search_strategy import SearchStrategy
from tvm.s_tir.meta_schedule.space_generator import SpaceGenerator
from tvm.s_tir.meta_schedule.task_scheduler import TaskScheduler
from tvm.target import Target

from ._builder import WarmBuilder
from ._database import count_records
from ._lock import lock_work_dir
from ._picks import remove_picks, write_picks
from ._registry import KIND
from ._relax_prepare import as_module, as_target, legalize_and_fuse, num_prim_funcs
from ._strategy import DropletStrategy

if TYPE_CHECKING:
    from typing import TypeAlias

    from ._relax_prepare import ModLike, TargetLike

    #: ``builder`` argument: a TVM builder kind or object, or ``"warm"`` for a WarmBuilder.
    BuilderLike: TypeAlias = Builder.BuilderType | str

__all__ = ["DropletTuneIRMod", "tune_relax"]

logger = logging.getLogger("ms_droplet.relax")


def _is_droplet(strategy: Any) -> bool:
    return isinstance(strategy, str) and strategy == KIND


def _is_warm(builder: Any) -> bool:
    return isinstance(builder, str) and builder == "warm"


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
    mod = as_module(mod)
    target = as_target(target)
    if prepare:
        mod = legalize_and_fuse(mod, target, params)
        params = None
    if num_prim_funcs(mod) == 0:
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
        num_prim_funcs(mod),
        max_trials_global,
        type(strategy).__name__ if not isinstance(strategy, str) else strategy,
        work_dir,
    )
    droplet = isinstance(strategy, DropletStrategy)
    if not droplet:
        remove_picks(work_dir)  # picks of an earlier droplet tuning are not this tuning's
    try:
        return ms_relax.tune_relax(
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
        if droplet:  # also the picks of the tasks that finished before an interruption
            write_picks(work_dir, strategy.picks)


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
    fixed_target = as_target(target) if target is not None else Target.current(allow_none=True)
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
        if num_prim_funcs(mod) == 0:
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


def _existing_records(database: Any, work_dir: str, module_equality: str) -> int:
    """Records already in the tuning's database (0 when there is none yet)."""
    if isinstance(database, Database):
        return len(database.get_all_tuning_records())
    if database != "json":
        return 0
    return count_records(work_dir, module_equality)
