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
"""Tests of :class:`ms_droplet._builder.WarmBuilder` with real TVM builds and real workers.

A worker's start-up (importing ``tvm.s_tir.tensor_intrin``) takes 15-30 s here, so most tests
share one module-scoped builder, and the tests that run in order on it are written to leave it
usable for the next one.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import weakref
from pathlib import Path

import cloudpickle
import numpy as np
import psutil
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder.local_builder import default_build
from tvm.s_tir.meta_schedule.testing import te_workload

from ms_droplet._builder import WarmBuilder

# Build functions defined here travel to the workers by value, whatever pytest's import mode.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N = 64
BUILD_TIMEOUT = 8.0
REPO_ROOT = Path(__file__).resolve().parents[1]
LLVM = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def _marker_build(mod: tvm.IRModule, target: tvm.target.Target, params: dict | None):
    """``default_build``, except for modules whose function is named hang, crash or fail."""
    names = {gv.name_hint for gv in mod.get_global_vars()}
    if "hang" in names:
        ctypes.PyDLL(None).sleep(3600)  # hangs *holding the GIL*: only the parent can time it
    if "crash" in names:
        os._exit(7)
    if "fail" in names:
        raise RuntimeError("deliberate build failure")
    # `default_build` is a TVM FFI function, which does not pickle: look it up in the worker.
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    return default_build(mod, target, params)


def _matmul(tile: int | None = None, name: str = "main") -> tvm.IRModule:
    """An N x N x N float32 matmul, optionally tiled by `tile`, as function `name`."""
    sch = tvm.s_tir.Schedule(tvm.te.create_prim_func(te_workload.matmul(N, N, N)))
    if tile is not None:
        i, j, k = sch.get_loops(sch.get_sblock("C"))
        i_o, i_i = sch.split(i, [None, tile])
        j_o, j_i = sch.split(j, [None, tile])
        sch.reorder(i_o, j_o, k, i_i, j_i)
        sch.parallel(i_o)
    func = sch.mod["main"]
    return tvm.IRModule({name: func})


def _inputs(*mods: tvm.IRModule) -> list[ms.builder.BuilderInput]:
    return [ms.builder.BuilderInput(mod, LLVM) for mod in mods]


def _assert_runs_correctly(artifact_path: str) -> None:
    rt_mod = tvm.runtime.load_module(artifact_path)
    rng = np.random.default_rng(0)
    a = rng.random((N, N), dtype="float32")
    b = rng.random((N, N), dtype="float32")
    dev = tvm.cpu()
    a_t, b_t = tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev)
    c_t = tvm.runtime.tensor(np.zeros((N, N), "float32"), dev)
    rt_mod["main"](a_t, b_t, c_t)
    np.testing.assert_allclose(c_t.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_all_gone(pids, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    alive = {pid for pid in pids if _alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid for pid in alive if _alive(pid)}
    assert not alive, f"worker processes survived: {sorted(alive)}"


def _no_tensor_intrinsics() -> None:
    """Worker initializer: a stub for ``tvm.s_tir.tensor_intrin`` (30-50 s to import here).

    The workers of these tests build plain llvm matmuls, which need no tensor intrinsics, so
    their start-up takes seconds. The real warm-up (with the import) runs in every tuning test,
    through the session's warm builder (``tests/conftest.py``).
    """
    import types

    sys.modules.setdefault("tvm.s_tir.tensor_intrin", types.ModuleType("tvm.s_tir.tensor_intrin"))


@pytest.fixture(scope="module")
def builder():
    b = WarmBuilder(
        max_workers=2,
        timeout_sec=BUILD_TIMEOUT,
        f_build=_marker_build,
        initializer=_no_tensor_intrinsics,
    )
    yield b
    b.shutdown()


# ---- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"max_workers": 1.5}, TypeError, "max_workers"),
        ({"max_workers": True}, TypeError, "max_workers"),
        ({"timeout_sec": 0}, ValueError, "timeout_sec"),
        ({"timeout_sec": -1.0}, ValueError, "timeout_sec"),
        ({"timeout_sec": float("inf")}, ValueError, "timeout_sec"),
        ({"timeout_sec": "30"}, TypeError, "timeout_sec"),
        ({"max_uses_per_worker": 0}, ValueError, "max_uses_per_worker"),
        ({"max_uses_per_worker": 2.0}, TypeError, "max_uses_per_worker"),
        ({"startup_timeout_sec": 0.0}, ValueError, "startup_timeout_sec"),
        ({"initializer": 42}, TypeError, "initializer"),
        ({"f_build": 42}, TypeError, "f_build"),
        ({"f_build": ""}, ValueError, "f_build"),
        ({"f_export": 3.0}, TypeError, "f_export"),
        ({"f_build": default_build}, TypeError, "f_build"),  # an FFI function does not pickle
    ],
)
def test_bad_settings_are_rejected(kwargs, error, name):
    with pytest.raises(error, match=name):
        WarmBuilder(**kwargs)


def test_settings_are_keyword_only_and_read_only():
    with pytest.raises(TypeError):
        WarmBuilder(2)  # type: ignore[misc]
    with WarmBuilder(max_workers=3, timeout_sec=12, max_uses_per_worker=None) as b:
        assert isinstance(b, ms.builder.Builder)
        assert (b.max_workers, b.timeout_sec, b.max_uses_per_worker) == (3, 12.0, None)
        assert b.worker_pids == ()  # workers start lazily
        with pytest.raises(AttributeError):
            b.timeout_sec = 1.0
    assert b.closed
    with pytest.raises(Exception, match="shut down"):
        b.build(_inputs(_matmul()))


def test_garbage_collection_shuts_the_pool_down():
    b = WarmBuilder(max_workers=1)
    pool = b._pool
    inner = weakref.ref(b._inst)  # the Python object behind derived_object's wrapper
    del b
    gc.collect()
    assert inner() is None and pool.closed


def test_unregistered_f_build_fails_at_start_up():
    with WarmBuilder(max_workers=1, f_build="ms_droplet.test.no_such_function") as b:
        with pytest.raises(RuntimeError, match="not registered"):
            b.warm_up()
        assert b.worker_pids == ()


# ---- building with one shared builder --------------------------------------------------------


@pytest.mark.tuning
def test_builds_are_correct_and_workers_are_reused(builder):
    first = builder.build(_inputs(_matmul(), _matmul(8), _matmul(16), _matmul(32), _matmul(4)))
    assert [r.error_msg for r in first] == [None] * 5
    pids = builder.worker_pids
    assert len(pids) == 2
    second = builder.build(_inputs(_matmul(16), _matmul(2), _matmul()))
    assert [r.error_msg for r in second] == [None] * 3
    assert builder.worker_pids == pids
    assert builder.stats["started"] == 2
    paths = [r.artifact_path for r in first + second]
    assert len(set(paths)) == len(paths)
    for path in paths:
        assert path.endswith(".tar") and os.path.isfile(path)
        _assert_runs_correctly(path)
    # The artifacts are what TVM's LocalRunner expects.
    func = _matmul()["main"]
    runner = ms.runner.LocalRunner(timeout_sec=60)
    (future,) = runner.run(
        [
            ms.runner.RunnerInput(
                second[0].artifact_path, "cpu", ms.arg_info.ArgInfo.from_prim_func(func)
            )
        ]
    )
    result = future.result()
    assert result.error_msg is None, result.error_msg
    assert all(0 < t < 1 for t in result.run_secs)


@pytest.mark.tuning
def test_hanging_candidate_times_out_and_is_replaced(builder):
    builder.warm_up()  # pytest-xdist may have sent this test to a worker where it runs first
    before = set(builder.worker_pids)
    results = builder.build(_inputs(_matmul(8), _matmul(name="hang"), _matmul(16), _matmul(4)))
    errors = [r.error_msg for r in results]
    assert errors[0] is None and errors[2] is None and errors[3] is None, errors
    assert results[1].artifact_path is None
    assert "Timeout" in errors[1] and str(BUILD_TIMEOUT) in errors[1], errors[1]
    assert builder.stats["timeouts"] == 1
    survivors = set(builder.worker_pids)
    assert len(survivors) == 1 and survivors < before
    _assert_all_gone(before - survivors)
    # The next call starts a replacement and builds normally.
    again = builder.build(_inputs(_matmul(), _matmul(2)))
    assert [r.error_msg for r in again] == [None, None]
    assert len(builder.worker_pids) == 2 and survivors < set(builder.worker_pids)
    _assert_runs_correctly(again[1].artifact_path)


@pytest.mark.tuning
def test_crash_and_exception_fail_only_their_candidate(builder):
    builder.warm_up()
    before = set(builder.worker_pids)
    results = builder.build(
        _inputs(_matmul(name="crash"), _matmul(name="fail"), _matmul(8), _matmul(16))
    )
    crash, fail, ok1, ok2 = (r.error_msg for r in results)
    assert "Crash" in crash and "code 7" in crash, crash
    assert "An exception occurred" in fail and "deliberate build failure" in fail, fail
    assert ok1 is None and ok2 is None
    assert results[0].artifact_path is None and results[1].artifact_path is None
    assert builder.stats["crashes"] == 1
    after = set(builder.worker_pids)
    assert len(after) == 2 and len(after & before) == 1  # only the crashed one was replaced
    _assert_runs_correctly(results[3].artifact_path)


@pytest.mark.tuning
@pytest.mark.skipif(
    tvm.get_global_func("target.build.cuda", allow_missing=True) is None,
    reason="needs TVM's CUDA codegen",
)
def test_cuda_target_builds_without_gpu(builder):
    """A CUDA kernel builds and exports on a machine without a GPU.

    Without the CUDA driver (``libcuda.so``) TVM cannot load ``libtvm_runtime_cuda`` and its
    codegen emits a fallback device module holding the CUDA source, without running
    NVRTC/nvcc, so this checks the builder's plumbing for device targets, not nvcc.
    """
    sch = tvm.s_tir.Schedule(tvm.te.create_prim_func(te_workload.matmul(N, N, N)))
    i, j, _ = sch.get_loops(sch.get_sblock("C"))
    sch.bind(i, "blockIdx.x")
    sch.bind(j, "threadIdx.x")
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    (result,) = builder.build([ms.builder.BuilderInput(sch.mod, target)])
    assert result.error_msg is None, result.error_msg
    with tarfile.open(result.artifact_path) as tar:
        assert "devc.o" in tar.getnames()  # the embedded device module


@pytest.mark.tuning
def test_shutdown_kills_all_workers(builder):
    builder.warm_up()  # CI once ran it right after the CUDA test, which starts one worker
    pids = builder.worker_pids
    assert len(pids) == 2
    builder.shutdown()
    assert builder.worker_pids == ()
    _assert_all_gone(pids, timeout=0.5)  # shutdown() reaps them before returning
    builder.shutdown()  # idempotent
    with pytest.raises(Exception, match="shut down"):
        builder.build(_inputs(_matmul()))


# ---- no worker outlives its process ------------------------------------------------------------

_SCRIPT = """
import ctypes, json, signal, sys
# A process started in the background by a non-interactive shell inherits SIGINT as ignored,
# and Python then installs no KeyboardInterrupt handler: restore it, as in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
import psutil
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.testing import te_workload
from ms_droplet._builder import WarmBuilder

def no_tensor_intrinsics():
    # These workers build plain llvm matmuls: a stub spares them importing the intrinsics.
    import types
    sys.modules.setdefault("tvm.s_tir.tensor_intrin", types.ModuleType("tvm.s_tir.tensor_intrin"))

def register():
    no_tensor_intrinsics()
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    tvm.register_global_func("ms_droplet.test.build", default_build, override=True)

def hang_build(mod, target, params):
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    if "hang" in {gv.name_hint for gv in mod.get_global_vars()}:
        ctypes.PyDLL(None).sleep(3600)
    return default_build(mod, target, params)

def build(builder, name):
    func = tvm.te.create_prim_func(te_workload.matmul(16, 16, 16))
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    inputs = [ms.builder.BuilderInput(tvm.IRModule({name: func}), target)]
    (result,) = builder.build(inputs)
    assert result.error_msg is None, result.error_msg

def gone(pids):
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)

mode = sys.argv[1]
if mode == "exit":
    builder = WarmBuilder(
        max_workers=1,
        max_uses_per_worker=1,
        initializer=register,
        f_build="ms_droplet.test.build",
    )
    build(builder, "main")
    first = builder.worker_pids
    build(builder, "main")  # recycles the worker
    assert builder.stats["recycled"] == 1 and len(builder.worker_pids) == 1
    assert first != builder.worker_pids and gone(first), "the recycled worker survived"
    print(json.dumps(list(builder.worker_pids)), flush=True)
    sys.stdin.readline()  # exit, without shutdown(), when the test says so
else:
    builder = WarmBuilder(
        max_workers=1, timeout_sec=600, f_build=hang_build, initializer=no_tensor_intrinsics
    )
    build(builder, "main")
    print(json.dumps(list(builder.worker_pids)), flush=True)
    build(builder, "hang")
"""


@pytest.mark.tuning
def test_no_worker_survives_its_process(tmp_path):
    """Exit without shutdown() (after recycling a worker), Ctrl-C and SIGKILL during a hang.

    The three scripts run concurrently to share the cost of their workers' start-up.
    """
    script = tmp_path / "use_builder.py"
    script.write_text(_SCRIPT)
    python_path = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path))
    modes = ["exit", "sigint", "sigkill"]
    procs = {
        mode: subprocess.Popen(
            [sys.executable, str(script), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for mode in modes
    }
    try:
        pids = {}
        for mode, proc in procs.items():
            line = proc.stdout.readline()
            assert line, f"{mode}: {proc.communicate(timeout=180)[1]}"
            pids[mode] = json.loads(line)
            assert len(pids[mode]) == 1
        for mode in ("exit", "sigint", "sigkill"):
            assert _alive(pids[mode][0]), mode
        time.sleep(3.0)  # let the hanging candidates reach their workers (slow under load)
        procs["sigint"].send_signal(signal.SIGINT)
        procs["sigkill"].send_signal(signal.SIGKILL)
        procs["exit"].stdin.write("\n")
        procs["exit"].stdin.flush()
        for mode, proc in procs.items():
            _, stderr = proc.communicate(timeout=180)
            if mode == "exit":
                assert proc.returncode == 0, f"{mode}: {stderr}"
            else:
                assert proc.returncode != 0, mode
        for mode in modes:
            _assert_all_gone(pids[mode])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
