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
"""Test runs register TVM's GPU and DSP tensor intrinsics lazily, in every process.

``import tvm.s_tir.tensor_intrin`` (done by every ``TuneContext`` and every builder worker)
registers the intrinsics of every backend; on a 2-core machine that takes 25 s here and about
50 s on a Zen 1, most of it in the CUDA module. The tests tune for the host CPU only, so the
CUDA, ROCm, Metal and Hexagon modules are imported as usual but their code runs (registering
their intrinsics) only when one of their names is first used. The x86, Arm and RISC-V
intrinsics a CPU schedule may tensorize with are registered at import, as in any TVM process.

``tests/conftest.py`` installs this in the pytest process and puts this folder first on
``PYTHONPATH``, so that the processes the tests start (builder workers, killed tunings, the
patched TVM of the upstream test) load it as their ``sitecustomize``.
``MS_DROPLET_TEST_EAGER_INTRINSICS=1`` turns it off.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import types

LAZY_MODULES = frozenset(
    f"tvm.s_tir.tensor_intrin.{name}" for name in ("cuda", "rocm", "metal", "hexagon")
)
EAGER_ENV = "MS_DROPLET_TEST_EAGER_INTRINSICS"
_RESOLVING: set[str] = set()  # names being resolved (imports hold the import lock)


class DeferredModule(types.ModuleType):
    """A module whose code runs when one of its own names is first looked up.

    Dunder lookups (``inspect.getmodule`` reads ``__file__`` of every module, import machinery
    reads ``__spec__`` and ``__path__``) do not run it; that is why this is not
    :class:`importlib.util.LazyLoader`, whose modules run on any attribute access.
    """

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        loader = self.__dict__.pop("_deferred_loader", None)
        if loader is None:
            raise AttributeError(name)
        self.__class__ = types.ModuleType
        loader.exec_module(self)
        return getattr(self, name)


class _DeferredLoader(importlib.abc.Loader):
    """Wraps a module's loader: creates the module now, runs its code on first use."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["_deferred_loader"] = self.loader
        module.__class__ = DeferredModule


class LazyModules(importlib.abc.MetaPathFinder):
    """Finds the modules named ``names`` as usual and defers running them."""

    defers_modules = True

    def __init__(self, names: frozenset[str] = LAZY_MODULES) -> None:
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names or fullname in _RESOLVING:
            return None  # (a finder asked below may ask the import system again)
        _RESOLVING.add(fullname)
        try:
            for finder in sys.meta_path:
                # skip every finder of this kind: a process may hold two copies of this
                # module (``sitecustomize`` and ``tests._site.sitecustomize``)
                if getattr(finder, "defers_modules", False) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _DeferredLoader(spec.loader)
                    return spec
            return None
        finally:
            _RESOLVING.discard(fullname)


def install() -> bool:
    """Put the lazy finder first on ``sys.meta_path`` (once); False when turned off."""
    if os.environ.get(EAGER_ENV) == "1":
        return False
    mine = [f for f in sys.meta_path if getattr(f, "defers_modules", False)]
    if not any(f.names == LAZY_MODULES for f in mine):
        sys.meta_path.insert(0, LazyModules())
    return True


def _chain_to_the_next_sitecustomize() -> None:
    """Run the ``sitecustomize`` this one shadows on ``sys.path``, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    me = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if me is not None:
            sys.modules["sitecustomize"] = me


if __name__ == "sitecustomize":
    install()
    _chain_to_the_next_sitecustomize()
