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
"""The apache/tvm source tree the patch applies to, and what the patch holds.

Paths of the v0.27 layout, the package modules carried upstream (:data:`MODULES`), what the
tree's ``__init__`` files export (:class:`TvmLayout`, to make imports relative), one file of the
patch (:class:`PatchFile`) and the error of a patch that cannot be generated.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LINE_LENGTH",
    "MODULES",
    "MS_DIR",
    "MS_PKG",
    "ROOT_MODULE",
    "SS_DIR",
    "SS_PKG",
    "TEST_PATH",
    "PatchFile",
    "TvmLayout",
    "UpstreamError",
    "exports",
]

MS_DIR = "python/tvm/s_tir/meta_schedule"
SS_DIR = f"{MS_DIR}/search_strategy"
TEST_PATH = "tests/python/s_tir/meta_schedule/test_meta_schedule_search_strategy_droplet.py"
LINE_LENGTH = 100  # TVM's ruff line-length

MS_PKG = "tvm.s_tir.meta_schedule"
SS_PKG = f"{MS_PKG}.search_strategy"
#: The module the patch starts from; the modules it imports (transitively) come along.
ROOT_MODULE = "_strategy"

#: ms_droplet module -> module of tvm.s_tir.meta_schedule.search_strategy in the patch.
MODULES = {
    "_strategy": "droplet",
    "_descent": "_droplet_descent",
    "_stats": "_droplet_stats",
    "_decisions": "_droplet_decisions",
    "_candidates": "_droplet_candidates",
    "_logging": "_droplet_logging",
    "_records": "_droplet_records",
    "_final": "_droplet_final",
    "_proposals": "_droplet_proposals",
    "_slots": "_droplet_slots",
    "_run_state": "_droplet_run_state",
    "_settings": "_droplet_settings",
    "_strategy_descent": "_droplet_start",
    "_strategy_final": "_droplet_end",
    "_strategy_log": "_droplet_log",
    "_cost_model": "_droplet_cost_model",
}


class UpstreamError(RuntimeError):
    """The patch cannot be generated (an unexpected TVM checkout or package source)."""


@dataclass(frozen=True)
class PatchFile:
    """One file of the patch: its path in the TVM checkout, old text (None: new) and new text."""

    path: str
    old: str | None
    new: str


def exports(init_file: Path) -> dict[str, str]:
    """Names an ``__init__.py`` imports from its submodules: name -> submodule (``from .x``)."""
    try:
        tree = ast.parse(init_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as err:
        raise UpstreamError(f"cannot read {init_file}: {err}") from None
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


@dataclass(frozen=True)
class TvmLayout:
    """What the TVM checkout's ``__init__`` files export (to make imports relative)."""

    ms_exports: dict[str, str]  # tvm.s_tir.meta_schedule
    ss_exports: dict[str, str]  # tvm.s_tir.meta_schedule.search_strategy

    @classmethod
    def read(cls, root: Path) -> TvmLayout:
        for rel in (
            f"{MS_DIR}/__init__.py",
            f"{SS_DIR}/__init__.py",
            f"{SS_DIR}/search_strategy.py",
        ):
            if not (root / rel).is_file():
                raise UpstreamError(
                    f"{root} is not an apache/tvm checkout with the v0.27 layout: {rel} is missing"
                )
        return cls(exports(root / MS_DIR / "__init__.py"), exports(root / SS_DIR / "__init__.py"))

    def resolve(self, package: str, name: str) -> tuple[int, str]:
        """Where ``from <package> import <name>`` comes from, relative to search_strategy/."""
        if package == SS_PKG:
            sub = self.ss_exports.get(name)
            if sub is None:
                raise UpstreamError(f"{SS_PKG} of the TVM checkout does not export {name}")
            return 1, sub
        sub = self.ms_exports.get(name)
        if sub is None:
            raise UpstreamError(f"{MS_PKG} of the TVM checkout does not export {name}")
        if sub == "search_strategy":
            return self.resolve(SS_PKG, name)
        return 2, sub
