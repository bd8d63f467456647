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

from ._onnx_tuning import (
    ModelTuneReport,
    OnnxModelError,
    OutputMismatchError,
    TuneModelError,
    tune_onnx,
)
from ._relax_compile import TaskSummary, compile_relax, format_summary, summarize_tuning
from ._relax_prepare import extract_tasks, legalize_and_fuse, legalize_and_fuse_pass
from ._relax_tune import DropletTuneIRMod, tune_relax

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
