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
"""The test run's lazily registered GPU/DSP intrinsics (``tests/_site``): deferred, not lost."""

from __future__ import annotations

import os
import sys

from ._site import sitecustomize as site


def test_a_deferred_module_runs_on_first_use_only(tmp_path, monkeypatch):
    pkg = tmp_path / "lazy_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import heavy\n", encoding="utf-8")
    (pkg / "heavy.py").write_text(
        "import builtins\nbuiltins.lazy_pkg_runs = getattr(builtins, 'lazy_pkg_runs', 0) + 1\n"
        "ANSWER = 42\n",
        encoding="utf-8",
    )
    import builtins

    monkeypatch.syspath_prepend(str(tmp_path))
    finder = site.LazyModules(frozenset({"lazy_pkg.heavy"}))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    try:
        import lazy_pkg

        heavy = sys.modules["lazy_pkg.heavy"]
        assert lazy_pkg.heavy is heavy
        # imported, but its code has not run; dunders (inspect, importlib) do not run it
        assert getattr(builtins, "lazy_pkg_runs", 0) == 0
        assert heavy.__file__.endswith("heavy.py") and heavy.__name__ == "lazy_pkg.heavy"
        assert not hasattr(heavy, "__path__")
        assert getattr(builtins, "lazy_pkg_runs", 0) == 0
        # the first own name runs it, once
        assert heavy.ANSWER == 42 and heavy.ANSWER == 42
        assert builtins.lazy_pkg_runs == 1
        from lazy_pkg.heavy import ANSWER

        assert ANSWER == 42 and builtins.lazy_pkg_runs == 1
    finally:
        for name in ("lazy_pkg", "lazy_pkg.heavy"):
            sys.modules.pop(name, None)
        if hasattr(builtins, "lazy_pkg_runs"):
            del builtins.lazy_pkg_runs


def test_the_test_run_defers_tvms_cuda_intrinsics_and_its_processes_too():
    if os.environ.get(site.EAGER_ENV) == "1":
        assert not site.install()
        return
    import tvm.s_tir.tensor_intrin  # noqa: F401
    from tvm.s_tir import TensorIntrin

    # the CPU intrinsics are registered at import, as in any TVM process
    assert TensorIntrin.get("dot_16x4_vnni", allow_missing=True) is not None
    # processes started by the tests load this folder as their sitecustomize
    here = os.path.dirname(os.path.abspath(site.__file__))
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == here
    cuda = sys.modules["tvm.s_tir.tensor_intrin.cuda"]
    # a process started with this folder on PYTHONPATH (a pytest-xdist worker) deferred it with
    # the class of its own `sitecustomize` module, another copy of the same file
    deferred = tuple(
        m.DeferredModule
        for m in (site, sys.modules.get("sitecustomize"))
        if m is not None and hasattr(m, "DeferredModule")
    )
    if isinstance(cuda, deferred):  # else an earlier test used one of its names
        assert TensorIntrin.get("wmma_sync_16x16x16_f16f16f32", allow_missing=True) is None
    else:
        assert TensorIntrin.get("wmma_sync_16x16x16_f16f16f32", allow_missing=True) is not None
