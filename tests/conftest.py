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
"""Shared fixtures: small workloads, the host CPU target and one warm builder per test run.

Every fresh TVM process (and every builder worker) pays for importing ``tvm.s_tir.tensor_intrin``:
25-50 s on a small machine, 3-6 s with the CUDA, ROCm, Metal and Hexagon intrinsics registered
lazily, which this conftest arranges for the whole test run. Tests also share what they can: one
``WarmBuilder`` for the whole run (``warm_builder``; also handed to the command line by
``cli_warm_builder``), and processes are spawned only where the process itself is what a test
checks.
"""

from __future__ import annotations

import os

from ._site import sitecustomize as _site

# Before anything imports TVM's tensor intrinsics: register the GPU/DSP ones lazily here and in
# every process the tests start (see tests/_site/sitecustomize.py).
if _site.install():
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.abspath(_site.__file__)), os.environ.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)

import pytest
import tvm
from tvm import te
from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch
from tvm.s_tir.meta_schedule.testing import te_workload

# The tests check what the tuning does, not how good its kernels are: every EvolutionarySearch of
# the test run (TVM's "evolutionary", droplet's exploration, the bench's, the relax and ONNX
# tunings) evolves a population of 64 for 2 generations, not TVM's 512 for 4, unless a test
# says otherwise.
EvolutionarySearch.__init__.__kwdefaults__.update(population_size=64, genetic_num_iters=2)


def host_target(num_cores: int = 2) -> tvm.target.Target:
    """The host CPU as MetaSchedule wants it (a dict with num-cores)."""
    return tvm.target.Target(
        {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": num_cores}
    )


@pytest.fixture(scope="session")
def target() -> tvm.target.Target:
    return host_target()


@pytest.fixture(scope="session")
def warm_builder():
    """One WarmBuilder (2 workers, started once) for every test that tunes with one."""
    from ms_droplet import WarmBuilder

    builder = WarmBuilder(max_workers=2, timeout_sec=120)
    yield builder
    builder.shutdown()


@pytest.fixture
def cli_warm_builder(monkeypatch, warm_builder):
    """Make ``--builder warm`` of ``ms-droplet tune/bench`` use the session's warm builder.

    ``--builder local`` and builder objects are unchanged.
    """
    from ._helpers import use_builder_for_warm

    use_builder_for_warm(monkeypatch, warm_builder)
    return warm_builder


@pytest.fixture(scope="session")
def explored_matmul128(tmp_path_factory, target, warm_builder):
    """A work dir holding 16 explored trials of a 128^3 matmul (tuned once per test run).

    Tests copy it (``shutil.copytree``) and continue from it, so they need not pay for an
    exploration of their own.
    """
    from tvm.s_tir import meta_schedule as ms

    import ms_droplet

    work_dir = tmp_path_factory.mktemp("explored_matmul128")
    ms.tune_tir(
        te.create_prim_func(te_workload.matmul(128, 128, 128)),  # as test_tuning passes it
        target,
        str(work_dir),
        max_trials_global=16,
        num_trials_per_iter=16,
        strategy=ms_droplet.DropletStrategy(
            num_evolutionary_trials=16,
            evolutionary={"population_size": 64, "genetic_num_iters": 2},
        ),
        builder=warm_builder,
        runner=ms.runner.LocalRunner(
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=10),
        ),
        seed=11,
    )
    return work_dir


@pytest.fixture(scope="session")
def matmul64() -> tvm.IRModule:
    return tvm.IRModule({"main": te.create_prim_func(te_workload.matmul(64, 64, 64))})
