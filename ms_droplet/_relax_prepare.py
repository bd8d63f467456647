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
"""Preparing a relax program for tuning: legalize and fuse it, extract its tasks.

The module documentation of :mod:`ms_droplet.relax` says why :func:`legalize_and_fuse` runs the
passes TVM's ``relax_integration.compile_relax`` runs before it looks functions up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tvm
from tvm.ir import IRModule
from tvm.ir.transform import PassContext
from tvm.runtime import Tensor
from tvm.s_tir.meta_schedule import relax_integration as ms_relax
from tvm.s_tir.meta_schedule.extracted_task import ExtractedTask
from tvm.target import Target
from tvm.tirx import PrimFunc

if TYPE_CHECKING:
    from typing import TypeAlias

    from tvm import relax

    TargetLike: TypeAlias = str | dict | Target
    ModLike: TypeAlias = IRModule | relax.Function

__all__ = [
    "as_module",
    "as_target",
    "extract_tasks",
    "legalize_and_fuse",
    "legalize_and_fuse_pass",
    "num_prim_funcs",
]


def as_target(target: TargetLike) -> Target:
    return target if isinstance(target, Target) else Target(target)


def as_module(mod: ModLike) -> IRModule:
    if isinstance(mod, IRModule):
        return mod
    from tvm.relax.expr import Function as RelaxFunction

    if isinstance(mod, RelaxFunction):
        return IRModule({"main": mod})
    raise TypeError(f"expected a relax IRModule or relax.Function, got {type(mod).__name__}")


def num_prim_funcs(mod: IRModule) -> int:
    return sum(isinstance(func, PrimFunc) for func in mod.functions.values())


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

    mod = as_module(mod)
    target = as_target(target)
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
    target = as_target(target)
    if prepare:
        mod = legalize_and_fuse(mod, target, params)
        params = None
    return ms_relax.extract_tasks(mod, target, params, module_equality=module_equality)
