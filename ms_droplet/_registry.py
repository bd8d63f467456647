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
"""Make ``"droplet"`` a kind of ``SearchStrategy.create`` (and of the module alias ``create``)."""

from __future__ import annotations

from typing import Any

from tvm.s_tir.meta_schedule import search_strategy as _ss_pkg
from tvm.s_tir.meta_schedule.search_strategy import search_strategy as _ss_mod

__all__ = ["KIND", "is_registered", "register", "unregister"]

KIND = "droplet"
_BUILTIN_KINDS = ("evolutionary", "replay-trace", "replay-func")

_original_create = None  # TVM's create, kept while ours is installed


def _droplet_aware_create(kind: Any = "evolutionary", *args: Any, **kwargs: Any):
    """``SearchStrategy.create`` that also knows ``"droplet"``."""
    if kind == KIND:
        from ._strategy import DropletStrategy

        return DropletStrategy(*args, **kwargs)
    if kind not in _BUILTIN_KINDS:
        valid = ", ".join(repr(k) for k in (*_BUILTIN_KINDS, KIND))
        raise ValueError(f"Unknown SearchStrategy: {kind!r}; valid kinds are {valid}")
    assert _original_create is not None
    return _original_create(kind, *args, **kwargs)


def is_registered() -> bool:
    """Whether ``"droplet"`` is currently a ``SearchStrategy.create`` kind."""
    return _original_create is not None


def register() -> None:
    """Register ``"droplet"``. Idempotent; other kinds behave exactly as before."""
    global _original_create
    if _original_create is not None:
        return
    _original_create = _ss_mod.SearchStrategy.__dict__["create"].__func__
    _ss_mod.SearchStrategy.create = staticmethod(_droplet_aware_create)
    _ss_mod.create = _droplet_aware_create
    _ss_pkg.create = _droplet_aware_create


def unregister() -> None:
    """Undo :func:`register`, restoring TVM's own ``create``. Idempotent."""
    global _original_create
    if _original_create is None:
        return
    original = _original_create
    _original_create = None
    _ss_mod.SearchStrategy.create = staticmethod(original)
    _ss_mod.create = original
    _ss_pkg.create = original
